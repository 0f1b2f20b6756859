# Bulkhead as an HVM driver domain (xl-configs/driverdomain.cfg, multiboot entry through
# hvmloader, SeaBIOS and QEMU's option ROM), prepared as README.md tells a Xen host:
# same checks as pvh-core.
. ./lib.sh
mkdir -p /usr/lib/bulkhead/qemu-roms
cp /usr/share/qemu/multiboot.bin /usr/lib/bulkhead/qemu-roms/multiboot_dma.bin || fail "no multiboot.bin in dom0"
serial=/host/out/console/bulkhead-hvm-com1.log
log=$(console_of bulkhead)
rm -f "$log"
xl create "$XLCFG/driverdomain.cfg" "kernel=\"$IMAGE\"" $HVM_TEST_OPTS 'cmdline="test-xen-peer=0"' \
    "serial=\"file:$serial\"" || fail "xl create driverdomain.cfg failed"
dd=$(xl domid bulkhead)
DD_ID=$dd
# Early boot goes to the emulated COM1; from the PV console ring on, everything (with the
# early part replayed) is in xenconsoled's log. HVM firmware takes a while.
expect "$serial" "boot: mode hvm \(entered via multiboot\)" 240 "no HVM boot banner on COM1"
expect "$log" "boot: mode hvm \(entered via multiboot\)" 120 "boot log not replayed into the PV console"
expect "$log" "xen: domid $dd, xenstore home /local/domain/$dd" 120 "xenstore home not reported"
/host/xen-peer "$dd" || fail "dom0 side of the round trip failed"
expect "$log" "peer-test: event channel round trip" 60 "event channel round trip not seen"
expect "$log" "peer-test: grant copy of domain 0" 60 "grant copy not seen"
expect "$log" "peer-test: PASS" 60 "peer test did not pass"
grep -E "ERROR|PANIC" "$log" && fail "errors on the console"
# The post-mortem path (lib.sh, dd_postmortem) reads the flight recorder's page from
# outside; here on a live driver domain, so a run that needs it is not the first to try.
read_recorder "$dd" >/tmp/recorder || fail "dd-peek could not read the flight recorder's page"
python3 /host/trace.py /tmp/recorder /host/bulkhead.map >/tmp/trace || fail "trace.py could not decode the flight recorder: $(head -2 /tmp/trace)"
grep -qE "^trace: [1-9][0-9]* events recorded" /tmp/trace || fail "the flight recorder holds no events: $(head -2 /tmp/trace)"
grep -qE "^trace: #[0-9]+ .* vector 0x(20|f3) " /tmp/trace || fail "the flight recorder names no interrupt taken: $(tail -3 /tmp/trace)"
echo "hvm-core: flight recorder read from outside: $(head -1 /tmp/trace)"
DD_ID=
xl destroy bulkhead || fail "xl destroy failed"
dom0_healthy
echo "hvm-core: ok"
