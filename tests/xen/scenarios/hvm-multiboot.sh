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
expect_event "$DD_COM1" 240 "no HVM boot banner on COM1" boot mode=hvm entry=multiboot
t1=$(date +%s%N)
expect_event "$log" 120 "the command line did not arrive by multiboot" cmdline source=multiboot value=loglevel=info
expect_event "$log" 120 "the NVMe's partitions were not found" partition part=nvme0n1p5 label=epsilon
expect_event "$log" 60 "xenbus watcher not started" backend-watch "home=/local/domain/$DD_ID"
t2=$(date +%s%N)
results "$log" pci-bar && fail "Bulkhead reassigned BARs that firmware had set"
results "$log" mtrr && fail "Bulkhead set MTRRs that firmware had set"
no_errors "$log"
echo "hvm-multiboot: xl create -> first console line $(( (t1 - DD_T0) / 1000000 )) ms, -> backend watcher $(( (t2 - DD_T0) / 1000000 )) ms (multiboot path)"
DD_ID=
xl destroy bulkhead || fail "xl destroy failed"
dom0_healthy
echo "hvm-multiboot: ok"
