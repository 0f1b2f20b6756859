# shellcheck shell=dash
# Bulkhead serving disks: the NVMe passed through to Bulkhead (HVM), two stock Debian
# Linux guests whose disks name Bulkhead as backend, each on its own GPT partition (one by
# name, one by number), running at the same time. They are PV: Linux PVH guests
# triple-fault now and then under nested TCG (seen here, with either driver domain). The
# second has two vCPUs and asks for 4-page rings: two queues of 4 pages. Each guest
# checks the negotiated features, 64 MiB of random data through O_DIRECT, ext4 across a
# remount and fstrim. Then both guests go away: Bulkhead must have released every ring
# and grant. Bulkhead is the shared driver domain (lib.sh), which it starts (it runs first).
. ./lib.sh
t0=$(date +%s%N)
start_shared_dd
blk_guest_cfg blk1 part:delta 1
blk_guest_cfg blk2 nvme0n1p5 2 xen_blkfront.max_ring_page_order=2
rm -f "$(console_of blk1)" "$(console_of blk2)"
xl create /tmp/blk1.cfg || fail "xl create blk1 failed"
xl create /tmp/blk2.cfg || fail "xl create blk2 failed"
g1=$(xl domid blk1)
expect_event "$log" 240 "blk1's disk never Connected" device-state "dev=vbd-$g1-51712" backend=Connected
t1=$(date +%s%N)
[ $DD_REUSED = 0 ] && echo "figure: Bulkhead driver domain: xl create to first backend Connected: $(( (t1 - t0) / 1000000 )) ms (includes starting the guest)"
for g in blk1 blk2; do
    expect_result "$(console_of $g)" 900 "$g did not finish its disk checks" linux-blk "pass~^[01]$" >/dev/null
done
for g in blk1 blk2; do
    grep -a "linux-blk:\|result: " "$(console_of $g)" | sed "s/^/$g: /"
done
events "$log" vbd-serving
for g in blk1 blk2; do
    results "$(console_of $g)" linux-blk pass=1 >/dev/null || fail "$g: $(results "$(console_of $g)" linux-blk pass=0 | field why)"
done
# What blkfront negotiated: indirect descriptors (more than blkif's 11 segments a
# request), flush (a write-back cache), persistent grants (Bulkhead's view of both ends).
segs=$(results "$(console_of blk1)" linux-blk step=xvda | field max_segments)
[ "${segs:-0}" -gt 11 ] \
    || fail "blkfront did not negotiate indirect descriptors: $(results "$(console_of blk1)" linux-blk step=xvda)"
results "$(console_of blk1)" linux-blk step=xvda write_cache=back >/dev/null \
    || fail "blkfront did not negotiate flush: $(results "$(console_of blk1)" linux-blk step=xvda)"
events "$log" vbd-serving "dev=vbd-$g1-51712" persistent=1 >/dev/null \
    || fail "blkfront did not negotiate persistent grants"
events "$log" vbd-serving target=nvme0n1p5 queues=2 ring_pages=4 >/dev/null \
    || fail "blk2 (2 vCPUs, max_ring_page_order=2) did not get two queues of 4-page rings"

for g in blk1 blk2; do
    out=$(xl destroy $g 2>&1) || fail "xl destroy $g failed: $out"
    # libxl waits for the driver domain to remove the backend directory.
    echo "$out" | grep -q "timed out" && fail "xl destroy $g: $out"
done
# Every device Bulkhead took on must be released, and the grant mappings back at zero
# once the last one is.
all_released vbd 51712
events "$log" vbd-closed "ring~-51712"
no_panic "$log"
dom0_healthy
offer_dd
echo "blkback: ok"
