# The NVMe controller (00:03.0) bound to xen-pciback in dom0 and passed through to
# Bulkhead as an HVM driver domain (`pci=` in driverdomain.cfg): Bulkhead drives it
# natively and runs the storage checks (GPT, read/verify, write, flush, errors). The host
# checks the image after QEMU exits.
. ./lib.sh
mkdir -p /usr/lib/bulkhead/qemu-roms
cp /usr/share/qemu/multiboot.bin /usr/lib/bulkhead/qemu-roms/multiboot_dma.bin
log=$(console_of bulkhead)
rm -f "$log"
modprobe xen-pciback 2>/dev/null
xl pci-assignable-add 00:03.0 || fail "xl pci-assignable-add 00:03.0 failed"
xl pci-assignable-list | grep -q "00:03.0" || fail "NVMe not assignable"
xl create "$XLCFG/driverdomain.cfg" "kernel=\"$IMAGE\"" $HVM_TEST_OPTS 'cmdline="test-storage"' 'pci=[ "00:03.0" ]' \
    || fail "xl create with pci= failed"
DD_ID=$(xl domid bulkhead)
expect "$log" "boot: mode hvm" 240 "driver domain did not boot"
expect "$log" "nvme0 \(.*\): .*NVMe" 120 "NVMe controller not brought up in the driver domain"
expect "$log" "storage-test: read 1024 KiB of nvme0n1p1 and verified the pattern" 120 "pattern not verified"
expect "$log" "storage-test: wrote 256 KiB at nvme0n1p2 block 4096, flushed, read back equal" 120 "write/flush/read-back failed"
expect "$log" "storage-test: read past the end refused by the controller" 60 "out-of-range read not handled"
expect "$log" "storage-test: PASS" 60 "storage test did not pass"
grep -E "PANIC|FAIL" "$log" && fail "errors on the console"
grep -E "nvme0 \(|completions noticed" "$log"
dom0_healthy
echo "hvm-nvme: ok"
