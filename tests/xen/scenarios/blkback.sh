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
dd=$DD_ID
blk_guest_cfg blk1 part:delta 1
blk_guest_cfg blk2 nvme0n1p5 2 xen_blkfront.max_ring_page_order=2
rm -f "$(console_of blk1)" "$(console_of blk2)"
xl create /tmp/blk1.cfg || fail "xl create blk1 failed"
xl create /tmp/blk2.cfg || fail "xl create blk2 failed"
g1=$(xl domid blk1)
expect "$log" "vbd-$g1-51712: backend Connected" 240 "blk1's disk never Connected"
t1=$(date +%s%N)
[ $DD_REUSED = 0 ] && echo "figure: Bulkhead driver domain: xl create to first backend Connected: $(( (t1 - t0) / 1000000 )) ms (includes starting the guest)"
for g in blk1 blk2; do
    expect "$(console_of $g)" "linux-blk: (PASS|FAIL)" 900 "$g did not finish its disk checks"
done
for g in blk1 blk2; do
    grep "linux-blk:" "$(console_of $g)" | sed "s/^/$g: /"
done
grep -E "vbd-.*: serving" "$log"
for g in blk1 blk2; do
    grep -q "linux-blk: PASS" "$(console_of $g)" || fail "$g: $(grep 'linux-blk: FAIL' "$(console_of $g)")"
done
grep "blkfront: xvda:" "$(console_of blk1)" | grep -q "indirect descriptors: enabled" \
    || fail "blkfront did not negotiate indirect descriptors"
grep "blkfront: xvda:" "$(console_of blk1)" | grep -q "flush diskcache: enabled" \
    || fail "blkfront did not negotiate flush"
grep "blkfront: xvda:" "$(console_of blk1)" | grep -q "persistent grants: enabled" \
    || fail "blkfront did not negotiate persistent grants"
grep -qE "serving nvme0n1p5 .* 2 queue\(s\) of 4 ring page\(s\)" "$log" \
    || fail "blk2 (2 vCPUs, max_ring_page_order=2) did not get two queues of 4-page rings"

for g in blk1 blk2; do
    out=$(xl destroy $g 2>&1) || fail "xl destroy $g failed: $out"
    # libxl waits for the driver domain to remove the backend directory.
    echo "$out" | grep -q "timed out" && fail "xl destroy $g: $out"
done
# Every device Bulkhead took on must be released, and the grant mappings back at zero
# once the last one is.
devices() { grep -o "vbd-[0-9]*-[0-9]*: $1" "$log" | cut -d: -f1 | sort -u; }
all_released() { [ "$(devices "new backend device")" = "$(devices released)" ]; }
poll_live 60 all_released || fail "Bulkhead did not release every device: $(devices 'new backend device' | tr '\n' ' ')/ $(devices released | tr '\n' ' ')"
grep "ring closed" "$log" | grep 51712
grep "released" "$log" | tail -1 | grep -q "map slots in use 0," || fail "grant mappings left behind: $(grep released "$log" | tail -1)"
xenstore-ls "/local/domain/$dd/backend/vbd" 2>/dev/null | grep -q 51712 && fail "backend directories left behind"
grep -E "PANIC|panicked" "$log" && fail "Bulkhead panicked"
dom0_healthy
offer_dd
echo "blkback: ok"
