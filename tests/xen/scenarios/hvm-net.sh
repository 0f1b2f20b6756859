# shellcheck shell=dash
# The outer QEMU's e1000e (00:04.0, on QEMU's user network through a hub that also holds
# a NIC of dom0's) is passed through to Bulkhead (HVM, mgmt=dhcp): Bulkhead drives it,
# gets a DHCP lease from QEMU's user network, and dom0 reaches it over that network:
# ARP (answered from Bulkhead's MAC) and ping. Bulkhead is the shared driver domain
# (lib.sh), which also owns the NVMe.
. ./lib.sh
start_shared_dd
expect_event "$log" 120 "no DHCP lease from QEMU's user network" mgmt-address source=dhcp "addr~^10[.]0[.]2[.][0-9]+/24$"
addr=$(events "$log" mgmt-address source=dhcp | field addr)
addr=${addr%/*}
events "$log" nic-up
dev=$(dom0_test_nic) || fail "dom0 has no NIC on the test network"
# An address outside QEMU's DHCP pool (.15-.30): later scenarios' guests get leases from
# it, and a dom0 that kept one of those would answer their ARP (dd-lifecycle once sent
# its iperf3 to dom0 that way). Removed again at the end.
{ ip addr replace 10.0.2.200/24 dev "$dev" && ip link set "$dev" up; } || fail "cannot configure $dev"
out=$(busybox arping -c 3 -w 10 -I "$dev" "$addr" 2>&1) || fail "no ARP reply from $addr: $out"
echo "$out" | grep -qi "52:54:00:12:34:56" || fail "ARP reply for $addr not from Bulkhead's NIC: $out"
echo "$out" | tail -2
out=$(busybox ping -c 5 -W 5 "$addr" 2>&1) || fail "dom0 cannot ping Bulkhead at $addr: $out"
echo "$out" | grep -q "5 packets received" || fail "ping: $out"
echo "$out" | grep -q duplicates && fail "ping answered twice (by someone besides Bulkhead): $out"
echo "$out" | grep "packets transmitted"
# The status page is fetched in the bare-QEMU tier: here QEMU's user network sits on the
# same hub and answers TCP to any address itself (refusing it), so a TCP check from dom0
# would race slirp's RST.
echo "$out" | grep -q "5 packets received" && echo "hvm-net: ARP and ping answered by Bulkhead at $addr"
ip addr del 10.0.2.200/24 dev "$dev"
dom0_healthy
offer_dd
echo "hvm-net: ok"
