# shellcheck shell=dash
# xl block-attach/block-detach at runtime, 10 cycles, the first read-only (alpha, whose
# content the host checks after the run): each attach must reach Connected and be seen by
# the guest, each detach released by Bulkhead and gone in the guest; grant mappings and
# heap must be the same after cycle 1 and cycle 10.
# (Ten, not the twenty they were: the equality checks need two, the heap check a few;
# each cycle is two xl commands of seconds each under nested TCG.)
#
# (An attach used to be lost now and then: a detach and the next attach of the same vdev
# fell between two listings of the backend directory; discovery now waits for the old
# device's task to end, see bulkhead_xenbus::Discovery.)
. ./lib.sh
start_shared_dd
dd=$DD_ID
# Only the attaches: blkback ran the disk checks (its partition, delta, is this guest's
# xvda again).
blk_guest_cfg blk1 part:delta 1 bulkhead.attach-only
rm -f "$(console_of blk1)"
xl create /tmp/blk1.cfg || fail "xl create blk1 failed"
expect "$(console_of blk1)" "linux-blk: (READY|FAIL)" 300 "blk1 did not start"
grep -q "linux-blk: FAIL" "$(console_of blk1)" && fail "blk1: $(grep 'linux-blk: FAIL' "$(console_of blk1)")"
# Runtime attach/detach: the first read-only (alpha, whose content the host checks after
# the run), the others read-write on gamma.
g1=$(xl domid blk1)
b1=/local/domain/$dd/backend/vbd/$g1/51728
for c in $(seq 1 10); do
    # target= must come last: xl takes the rest of the line as the target.
    if [ "$c" = 1 ]; then spec="access=ro,target=nvme0n1p1"; else spec="access=rw,target=part:gamma"; fi
    xl block-attach blk1 "format=raw,vdev=xvdb,backend=bulkhead,$spec" || fail "block-attach $c failed"
    poll_live 60 xs_is "$b1/state" 4 || fail "attach $c: backend never Connected"
    wait_for "$(console_of blk1)" "linux-blk: attach $c: " 60 >/dev/null \
        || fail "attach $c: the guest did not report xvdb; its console ends: $(tail -3 "$(console_of blk1)")"
    xl block-detach blk1 xvdb || fail "block-detach $c failed"
    poll_live 60 at_least "$c" "$log" "vbd-$g1-51728: released" || fail "detach $c: Bulkhead did not release the device"
    wait_for "$(console_of blk1)" "linux-blk: detached $c" 60 >/dev/null \
        || fail "detach $c: the guest still has the device; its console ends: $(tail -3 "$(console_of blk1)")"
    note "cycle $c: attached (Connected), the guest saw it, detached, released, gone in the guest"
done
first=$(grep "vbd-$g1-51728: released" "$log" | head -1)
last=$(grep "vbd-$g1-51728: released" "$log" | tail -1)
grep "linux-blk: attach" "$(console_of blk1)" | head -2
grep -q "linux-blk: attach 1: .*ro=1, read ok, write refused" "$(console_of blk1)" || fail "read-only attach: $(grep 'attach 1:' "$(console_of blk1)")"
grep -q "linux-blk: attach 10: .*ro=0, read ok, writable" "$(console_of blk1)" || fail "attach 10: $(grep 'attach 10:' "$(console_of blk1)")"
same_after "$first" "$last" 4096

xl destroy blk1 || fail "xl destroy blk1 failed"
grep -E "PANIC|panicked" "$log" && fail "Bulkhead panicked"
dom0_healthy
offer_dd
echo "blkback-cycles: ok"
