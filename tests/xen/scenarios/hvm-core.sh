# shellcheck shell=dash
# Bulkhead as an HVM driver domain as xl-configs/driverdomain.cfg ships it: no firmware
# (Xen's domain builder enters the image at its PVH note), the command line through
# QEMU's fw_cfg, dom0 prepared with nothing but the image. Bulkhead must know it is HVM,
# take its options, set the MTRRs (read back as written) and do the checks of pvh-core.
. ./lib.sh
cmdline="test-xen-peer=0 loglevel=info"
dd_install "$cmdline"
serial=/host/out/console/bulkhead-hvm-com1.log
log=$(console_of bulkhead)
rm -f "$log"
t0=$(date +%s%N)
# shellcheck disable=SC2086,SC2090 # one xl option per word, quotes and all
xl create "$XLCFG/driverdomain.cfg" $HVM_TEST_OPTS "$(fw_cfg_opt "$cmdline")" \
    "serial=\"file:$serial\"" || fail "xl create driverdomain.cfg failed"
dd=$(xl domid bulkhead)
DD_ID=$dd
# Early boot goes to the emulated COM1; from the PV console ring on, everything (with the
# early part replayed) is in xenconsoled's log.
expect_event "$serial" 120 "no HVM boot banner on COM1" boot mode=hvm entry=pvh
t1=$(date +%s%N)
expect_event "$log" 120 "boot log not replayed into the PV console" boot mode=hvm entry=pvh
expect_event "$log" 30 "the command line did not arrive through fw_cfg" \
    cmdline source=fw_cfg file=opt/bulkhead/cmdline "value~^test-xen-peer=0.loglevel=info$"
# hvmloader's layout: write-back default with fixed ranges on (0xc06), the MMIO hole
# from 0xf0000000 to 4 GiB uncached in one variable range, each MSR read back equal.
expect_result "$log" 30 "MTRRs not set as hvmloader sets them, or not read back equal: $(grep -E 'mtrr' "$log" | tail -3)" \
    mtrr def_type=0xc06 fixed=true variable=1 uncached=0xf0000000-0x100000000 readback=equal
expect_event "$log" 120 "xenstore home not reported" xen "domid=$dd" "home=/local/domain/$dd"
t2=$(date +%s%N)
/host/xen-peer "$dd" || fail "dom0 side of the round trip failed"
# The peer test's verdicts (result lines, kernel/src/xen/peertest.rs).
expect_result "$log" 60 "event channel round trip not seen" peer-test step=event-channel peer=0 masked-held=1 pass=1
expect_result "$log" 60 "grant copy not seen" peer-test step=grant-copy peer=0 pass=1
expect_result "$log" 60 "peer test did not finish" peer-test "pass~^[01]$"
no_failed_results "$log" peer-test
no_errors "$log"
echo "hvm-core: xl create -> first console line $(( (t1 - t0) / 1000000 )) ms, -> xenstore up $(( (t2 - t0) / 1000000 )) ms (no firmware)"
# The post-mortem path (lib.sh, dd_postmortem) reads the flight recorder's page from
# outside; here on a live driver domain, so a run that needs it is not the first to try.
read_recorder "$dd" >/tmp/recorder || fail "dd-peek could not read the flight recorder's page"
python3 /host/trace.py /tmp/recorder "$(dd_map)" >/tmp/trace || fail "trace.py could not decode the flight recorder: $(head -2 /tmp/trace)"
grep -qE "^trace: [1-9][0-9]* events recorded" /tmp/trace || fail "the flight recorder holds no events: $(head -2 /tmp/trace)"
grep -qE "^trace: #[0-9]+ .* vector 0x(20|f3) " /tmp/trace || fail "the flight recorder names no interrupt taken: $(tail -3 /tmp/trace)"
echo "hvm-core: flight recorder read from outside: $(head -1 /tmp/trace)"
DD_ID=
xl destroy bulkhead || fail "xl destroy failed"
dom0_healthy
echo "hvm-core: ok"
