# timeout: 540
# shellcheck shell=dash
# Bulkhead serving networks: the e1000e passed through to Bulkhead (HVM) as its switch's
# uplink on QEMU's user network, and two stock Debian Linux guests whose vifs name Bulkhead
# as backend. Each gets a DHCP lease from QEMU's user network through Bulkhead's switch
# and pings the gateway; the sender (2 vCPUs, xen_netfront.max_queues=2: two queues) pings
# the receiver and sends it 16 MiB over TCP, checked by sha256 on both sides, with large
# sends (GSO) from its netfront, then the same out through the uplink to dom0. Then both
# guests go away: Bulkhead must release every queue, ring and grant. (Throughput is
# `make bench`'s: the figures printed here come from the checked copies.)
. ./lib.sh
# On failure, take the guests away first so Bulkhead logs each queue's counters.
net_fail() {
    dd_dump
    for g in net1 net2; do grep -a "linux-net:" "$(console_of $g)" | tail -6 | sed "s/^/$g: /"; done
    xl destroy net1 2>/dev/null
    xl destroy net2 2>/dev/null
    sleep 5
    grep -E "queue closed|switch" "$log" | tail -12
    fail "$*"
}
start_shared_dd
dd=$DD_ID
net_guest_cfg net1 "00:16:3e:b0:00:01,rate=10Mb/s" recv 1
net_guest_cfg net2 00:16:3e:b0:00:02 send 2 xen_netfront.max_queues=2
rm -f "$(console_of net1)" "$(console_of net2)"
xl create /tmp/net1.cfg || fail "xl create net1 failed"
xl create /tmp/net2.cfg || fail "xl create net2 failed"
g1=$(xl domid net1)
g2=$(xl domid net2)
expect "$log" "vif-$g1-0: backend Connected" 240 "net1's vif never Connected"
expect "$log" "vif-$g2-0: backend Connected" 240 "net2's vif never Connected"
grep -E "vif-($g1|$g2)-0: vif" "$log"
grep -qE "vif-$g2-0: vif$g2.0 connected: .* 2 queue\(s\)" "$log" \
    || fail "net2 (2 vCPUs, max_queues=2) did not get two queues"
grep -qE "vif-$g1-0: vif$g1.0 connected: .*, rate [0-9]+ bytes per [0-9]+ us" "$log" \
    || fail "net1's rate= did not reach Bulkhead"
expect "$(console_of net1)" "linux-net: (listening|FAIL)" 300 "net1 did not get going"
grep -q "linux-net: FAIL" "$(console_of net1)" && fail "net1: $(grep 'linux-net: FAIL' "$(console_of net1)")"
# dom0's own NIC on the outer network, with a TCP sink for the guest → outside figure. Over
# IPv6: QEMU's user network (IPv6 off) sits on the same hub and would answer an IPv4 TCP
# handshake to any address itself.
dev=$(dom0_test_nic) || fail "dom0 has no NIC on the test network"
{ ip link set "$dev" up && ip -6 addr replace fd00::200/64 dev "$dev" nodad; } || fail "cannot configure $dev"
python3 - >/tmp/sink.out 2>&1 <<'PY' &
import hashlib, socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("fd00::200", 5003))
s.listen(1)
s.settimeout(600)
c, _ = s.accept()
h, n, t0 = hashlib.sha256(), 0, time.monotonic()
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    h.update(d)
    n += len(d)
print(f"sink: {n} bytes in {int((time.monotonic() - t0) * 1000)} ms sha256 {h.hexdigest()}")
PY
sink=$!
xenstore-write "/local/domain/$g2/data/sink" fd00::200 || fail "cannot tell net2 the sink"
# The receiver's address, as it published it, goes to the sender.
ip1=$(xenstore-read "/local/domain/$g1/data/ip") || fail "net1 published no address"
xenstore-write "/local/domain/$g2/data/peer" "$ip1" || fail "cannot tell net2 its peer"
wait_for "$(console_of net2)" "linux-net: (sent in|FAIL)" 240 >/dev/null || net_fail "net2 did not finish sending"
wait_for "$(console_of net1)" "linux-net: (received|FAIL)" 120 >/dev/null || net_fail "net1 did not finish receiving"
for g in net1 net2; do
    grep "linux-net:" "$(console_of $g)" | sed "s/^/$g: /"
done
for g in net1 net2; do
    grep -q "linux-net: FAIL" "$(console_of $g)" && fail "$g: $(grep 'linux-net: FAIL' "$(console_of $g)")"
done
for g in net1 net2; do
    grep -q "linux-net: address 10\.0\.2\.[0-9]*/255.255.255.0 gateway 10.0.2.2" "$(console_of $g)" || fail "$g got no lease from QEMU's user network"
    grep "linux-net: gateway" "$(console_of $g)" | grep -q "3 packets received" || fail "$g could not ping the gateway"
done
grep "linux-net: peer" "$(console_of net2)" | grep -q "5 packets received" || fail "net2 could not ping net1"
sent=$(grep -o "sending 16777216 bytes sha256 [0-9a-f]*" "$(console_of net2)" | awk '{print $5}')
got=$(grep -o "received [0-9]* bytes sha256 [0-9a-f]*" "$(console_of net1)" | awk '{print $2, $5}')
{ [ -n "$sent" ] && [ "$got" = "16777216 $sent" ]; } || fail "16 MiB transfer: sent sha256 $sent, received $got"
ms=$(grep -o "sent in [0-9]* ms" "$(console_of net2)" | awk '{print $3}')
echo "figure: netback: guest to guest TCP through Bulkhead's switch: 16 MiB in $ms ms, $(awk -v ms="$ms" 'BEGIN { if (ms > 0) printf "%.0f", 16777216 * 8 / ms / 1000; else print "n/a" }') Mbit/s"
wait_for "$(console_of net2)" "linux-net: (sent to the outside|FAIL)" 240 >/dev/null || net_fail "net2 did not send to the outside"
grep -q "linux-net: FAIL" "$(console_of net2)" && { grep "linux-net:" "$(console_of net2)" | tail -4; net_fail "net2: $(grep 'linux-net: FAIL' "$(console_of net2)")"; }
wait $sink
cat /tmp/sink.out
want=$(grep -o "sending 16777216 bytes to fd00::200 sha256 [0-9a-f]*" "$(console_of net2)" | awk '{print $7}')
got=$(sed -n 's/^sink: \([0-9]*\) bytes in \([0-9]*\) ms sha256 \([0-9a-f]*\)/\1 \3/p' /tmp/sink.out)
{ [ -n "$want" ] && [ "$got" = "16777216 $want" ]; } || fail "16 MiB to the outside: sent sha256 $want, received $got"
ms=$(sed -n 's/^sink: [0-9]* bytes in \([0-9]*\) ms.*/\1/p' /tmp/sink.out)
echo "figure: netback: guest to outside (TCP over IPv6 through Bulkhead's switch and the e1000e to dom0): 16 MiB in $ms ms, $(awk -v ms="$ms" 'BEGIN { if (ms > 0) printf "%.0f", 16777216 * 8 / ms / 1000; else print "n/a" }') Mbit/s"

for g in net1 net2; do
    out=$(xl destroy $g 2>&1) || fail "xl destroy $g failed: $out"
    echo "$out" | grep -q "timed out" && fail "xl destroy $g: $out"
done
devices() { grep -o "vif-[0-9]*-[0-9]*: $1" "$log" | cut -d: -f1 | sort -u; }
all_released() { [ "$(devices "new backend device")" = "$(devices released)" ]; }
poll_live 60 all_released || fail "Bulkhead did not release every vif: $(devices 'new backend device' | tr '\n' ' ')/ $(devices released | tr '\n' ' ')"
grep "queue closed" "$log"
# Large sends reached Bulkhead as GSO packets from the sender.
grep "vif$g2.0/q[01]: queue closed" "$log" | grep -qE "\([1-9][0-9]* gso" || fail "no GSO packets from net2"
# And net2's large sends to net1 went straight from its pages into net1's buffers (one
# copy), at least while net1 had nothing else waiting.
straight=$(grep -E "vif$g1\.0(/q[0-9])?: queue closed" "$log" | sed -n 's/.*(\([0-9]*\) straight from another guest.*/\1/p' | awk '{n += $1} END {print n + 0}')
echo "figure: netback: packets copied straight from net2's pages into net1's buffers: $straight"
[ "$straight" -gt 0 ] || fail "no packet went straight from one guest to the other"
grep "released" "$log" | tail -1 | grep -q "map slots in use 0," || fail "grant mappings left behind: $(grep released "$log" | tail -1)"
xenstore-ls "/local/domain/$dd/backend/vif" 2>/dev/null | grep -q . && fail "backend directories left behind"
grep -E "PANIC|panicked" "$log" && fail "Bulkhead panicked"
dom0_healthy
offer_dd
echo "netback: ok"
