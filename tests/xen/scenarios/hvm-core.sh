# Bulkhead as an HVM driver domain (xl-configs/driverdomain.cfg, multiboot entry through
# hvmloader, SeaBIOS and QEMU's option ROM), prepared as README.md tells a Xen host:
# same checks as pvh-core.
. ./lib.sh
mkdir -p /usr/lib/bulkhead/qemu-roms
cp /usr/share/qemu/multiboot.bin /usr/lib/bulkhead/qemu-roms/multiboot_dma.bin || fail "no multiboot.bin in dom0"
serial=/host/out/console/bulkhead-hvm-com1.log
log=$(console_of bulkhead)
rm -f "$log"
xl create "$XLCFG/driverdomain.cfg" "kernel=\"$IMAGE\"" 'cmdline="loglevel=debug test-xen-peer=0"' \
    "serial=\"file:$serial\"" || fail "xl create driverdomain.cfg failed"
dd=$(xl domid bulkhead)
# The log reaches COM1 (emulated) and the PV console ring; HVM firmware takes a while.
expect "$serial" "boot: mode hvm \(entered via multiboot\)" 240 "no HVM boot banner on COM1"
expect "$serial" "xen: domid $dd, xenstore home /local/domain/$dd" 60 "xenstore home not reported"
/host/xen-peer "$dd" || fail "dom0 side of the round trip failed"
expect "$serial" "peer-test: PASS" 60 "peer test did not pass"
grep -E "ERROR|PANIC" "$serial" && fail "errors on the console"
[ -s "$log" ] && note "PV console log also written ($(wc -l <"$log") lines)"
xl destroy bulkhead || fail "xl destroy failed"
dom0_healthy
echo "hvm-core: ok"
