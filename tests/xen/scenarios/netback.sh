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
    for g in net1 net2; do grep -a "linux-net:\|result: " "$(console_of $g)" | tail -6 | sed "s/^/$g: /"; done
    xl destroy net1 2>/dev/null
    xl destroy net2 2>/dev/null
    sleep 5
    { events "$log" vif-closed; grep -a "switch" "$log"; } | tail -12
    fail "$*"
}
start_shared_dd
net_guest_cfg net1 "00:16:3e:b0:00:01,rate=10Mb/s" recv 1
net_guest_cfg net2 00:16:3e:b0:00:02 send 2 xen_netfront.max_queues=2
rm -f "$(console_of net1)" "$(console_of net2)"
xl create /tmp/net1.cfg || fail "xl create net1 failed"
xl create /tmp/net2.cfg || fail "xl create net2 failed"
g1=$(xl domid net1)
g2=$(xl domid net2)
expect_event "$log" 240 "net1's vif never Connected" device-state "dev=vif-$g1-0" backend=Connected
expect_event "$log" 240 "net2's vif never Connected" device-state "dev=vif-$g2-0" backend=Connected
events "$log" vif-connected "dev~^vif-($g1|$g2)-0$"
events "$log" vif-connected "dev=vif-$g2-0" queues=2 >/dev/null \
    || fail "net2 (2 vCPUs, max_queues=2) did not get two queues"
events "$log" vif-connected "dev=vif-$g1-0" "rate_bytes~^[1-9][0-9]*$" "rate_period_us~^[1-9][0-9]*$" >/dev/null \
    || fail "net1's rate= did not reach Bulkhead"
# step_or_fail GUEST STEP: GUEST's console has result STEP, or its failure.
step_or_fail() { reached "$(console_of "$1")" linux-net "$2"; }
poll_live 300 step_or_fail net1 listening || fail "net1 did not get going"
results "$(console_of net1)" linux-net pass=0 >/dev/null && fail "net1: $(results "$(console_of net1)" linux-net pass=0 | field why)"
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
print(f"result: name=sink bytes={n} ms={int((time.monotonic() - t0) * 1000)} sha256={h.hexdigest()}")
PY
sink=$!
xenstore-write "/local/domain/$g2/data/sink" fd00::200 || fail "cannot tell net2 the sink"
# The receiver's address, as it published it, goes to the sender.
ip1=$(xenstore-read "/local/domain/$g1/data/ip") || fail "net1 published no address"
xenstore-write "/local/domain/$g2/data/peer" "$ip1" || fail "cannot tell net2 its peer"
poll_live 240 step_or_fail net2 sent || net_fail "net2 did not finish sending"
poll_live 120 step_or_fail net1 received || net_fail "net1 did not finish receiving"
for g in net1 net2; do
    grep -a "linux-net:\|result: " "$(console_of $g)" | sed "s/^/$g: /"
done
for g in net1 net2; do
    results "$(console_of $g)" linux-net pass=0 >/dev/null && fail "$g: $(results "$(console_of $g)" linux-net pass=0 | field why)"
done
for g in net1 net2; do
    results "$(console_of $g)" linux-net step=lease "addr~^10[.]0[.]2[.][0-9]+$" netmask=255.255.255.0 gateway=10.0.2.2 >/dev/null \
        || fail "$g got no lease from QEMU's user network"
    results "$(console_of $g)" linux-net step=ping to=10.0.2.2 received=3 >/dev/null || fail "$g could not ping the gateway"
done
results "$(console_of net2)" linux-net step=ping "to=$ip1" received=5 >/dev/null || fail "net2 could not ping net1"
sent=$(results "$(console_of net2)" linux-net step=sending bytes=16777216 | field sha256)
got="$(results "$(console_of net1)" linux-net step=received | field bytes) $(results "$(console_of net1)" linux-net step=received | field sha256)"
{ [ -n "$sent" ] && [ "$got" = "16777216 $sent" ]; } || fail "16 MiB transfer: sent sha256 $sent, received $got"
ms=$(results "$(console_of net2)" linux-net step=sent | field ms)
echo "figure: netback: guest to guest TCP through Bulkhead's switch: 16 MiB in $ms ms, $(awk -v ms="$ms" 'BEGIN { if (ms > 0) printf "%.0f", 16777216 * 8 / ms / 1000; else print "n/a" }') Mbit/s"
poll_live 240 step_or_fail net2 sent-outside || net_fail "net2 did not send to the outside"
results "$(console_of net2)" linux-net pass=0 >/dev/null && { grep -a "linux-net:\|result: " "$(console_of net2)" | tail -4; net_fail "net2: $(results "$(console_of net2)" linux-net pass=0 | field why)"; }
wait $sink
cat /tmp/sink.out
want=$(results "$(console_of net2)" linux-net step=sending-outside to=fd00::200 bytes=16777216 | field sha256)
got="$(results /tmp/sink.out sink | field bytes) $(results /tmp/sink.out sink | field sha256)"
{ [ -n "$want" ] && [ "$got" = "16777216 $want" ]; } || fail "16 MiB to the outside: sent sha256 $want, received $got"
ms=$(results /tmp/sink.out sink | field ms)
echo "figure: netback: guest to outside (TCP over IPv6 through Bulkhead's switch and the e1000e to dom0): 16 MiB in $ms ms, $(awk -v ms="$ms" 'BEGIN { if (ms > 0) printf "%.0f", 16777216 * 8 / ms / 1000; else print "n/a" }') Mbit/s"

for g in net1 net2; do
    out=$(xl destroy $g 2>&1) || fail "xl destroy $g failed: $out"
    echo "$out" | grep -q "timed out" && fail "xl destroy $g: $out"
done
all_released vif .
events "$log" vif-closed
# Large sends reached Bulkhead as GSO packets from the sender.
events "$log" vif-closed "queue~^vif${g2}[.]0/q[01]$" "tx_gso~^[1-9]" >/dev/null || fail "no GSO packets from net2"
# And net2's large sends to net1 went straight from its pages into net1's buffers (one
# copy), at least while net1 had nothing else waiting.
straight=$(events "$log" vif-closed "queue~^vif${g1}[.]0(/q[0-9])?$" | field_each rx_direct | awk '{n += $1} END {print n + 0}')
echo "figure: netback: packets copied straight from net2's pages into net1's buffers: $straight"
[ "$straight" -gt 0 ] || fail "no packet went straight from one guest to the other"
no_panic "$log"
dom0_healthy
offer_dd
echo "netback: ok"
