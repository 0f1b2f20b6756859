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
poll_live 300 reached "$(console_of blk1)" linux-blk ready || fail "blk1 did not start"
results "$(console_of blk1)" linux-blk pass=0 && fail "blk1 failed (above)"
# Runtime attach/detach: the first read-only (alpha, whose content the host checks after
# the run), the others read-write on gamma.
g1=$(xl domid blk1)
b1=/local/domain/$dd/backend/vbd/$g1/51728
for c in $(seq 1 10); do
    # target= must come last: xl takes the rest of the line as the target.
    if [ "$c" = 1 ]; then spec="access=ro,target=nvme0n1p1"; else spec="access=rw,target=part:gamma"; fi
    xl block-attach blk1 "format=raw,vdev=xvdb,backend=bulkhead,$spec" || fail "block-attach $c failed"
    poll_live 60 xs_is "$b1/state" 4 || fail "attach $c: backend never Connected"
    guest_step 60 blk1 blk attach "$c" "attach $c: the guest did not report xvdb"
    xl block-detach blk1 xvdb || fail "block-detach $c failed"
    poll_live 60 at_least_events "$c" "$log" device-released "dev=vbd-$g1-51728" || fail "detach $c: Bulkhead did not release the device"
    guest_step 60 blk1 blk detached "$c" "detach $c: the guest still has the device"
    note "cycle $c: attached (Connected), the guest saw it, detached, released, gone in the guest"
done
results "$(console_of blk1)" linux-blk step=attach | head -2
results "$(console_of blk1)" linux-blk step=attach n=1 ro=1 read=ok write=refused >/dev/null || fail "read-only attach: $(results "$(console_of blk1)" linux-blk step=attach n=1)"
results "$(console_of blk1)" linux-blk step=attach n=10 ro=0 read=ok write=writable >/dev/null || fail "attach 10: $(results "$(console_of blk1)" linux-blk step=attach n=10)"
same_after_cycles "$log" "dev=vbd-$g1-51728" 4096

xl destroy blk1 || fail "xl destroy blk1 failed"
no_panic "$log"
dom0_healthy
offer_dd
echo "blkback-cycles: ok"
