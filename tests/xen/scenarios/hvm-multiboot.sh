# shellcheck shell=dash
# The fallback for toolstacks that refuse `firmware=`: Bulkhead as an HVM driver domain
# entered through hvmloader, SeaBIOS and QEMU's multiboot option ROM
# (xl-configs/driverdomain-multiboot.cfg), dom0 prepared as that config says; it owns
# the NVMe and serves its disks (firmware gave the BARs their addresses; Bulkhead must
# leave them be).
. ./lib.sh
start_multiboot_dd "00:03.0" "loglevel=info"
# Early boot goes to the emulated COM1; from the PV console ring on, everything (with the
# early part replayed) is in xenconsoled's log. HVM firmware takes a while.
expect "$DD_COM1" "boot: mode hvm \(entered via multiboot\)" 240 "no HVM boot banner on COM1"
t1=$(date +%s%N)
expect "$log" "command line: \"loglevel=info\"" 120 "the command line did not arrive by multiboot"
expect "$log" "storage: nvme0n1p5 \"epsilon\"" 120 "the NVMe's partitions were not found"
expect "$log" "watching /local/domain/$DD_ID/backend" 60 "xenbus watcher not started"
t2=$(date +%s%N)
grep -q "result: name=pci-bar" "$log" && fail "Bulkhead reassigned BARs that firmware had set"
grep -q "result: name=mtrr" "$log" && fail "Bulkhead set MTRRs that firmware had set"
grep -E "ERROR|PANIC" "$log" && fail "errors on the console"
echo "hvm-multiboot: xl create -> first console line $(( (t1 - DD_T0) / 1000000 )) ms, -> backend watcher $(( (t2 - DD_T0) / 1000000 )) ms (multiboot path)"
DD_ID=
xl destroy bulkhead || fail "xl destroy failed"
dom0_healthy
echo "hvm-multiboot: ok"
