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
expect "$serial" "boot: mode hvm \(entered via pvh\)" 120 "no HVM boot banner on COM1"
t1=$(date +%s%N)
expect "$log" "boot: mode hvm \(entered via pvh\)" 120 "boot log not replayed into the PV console"
expect "$log" "command line: \"test-xen-peer=0 loglevel=info\" \(from fw_cfg opt/bulkhead/cmdline\)" 30 \
    "the command line did not arrive through fw_cfg"
# hvmloader's layout: write-back default with fixed ranges on (0xc06), the MMIO hole
# from 0xf0000000 to 4 GiB uncached in one variable range, each MSR read back equal.
expect "$log" "result: name=mtrr def_type=0xc06 fixed=true variable=1 uncached=0xf0000000-0x100000000 readback=equal" 30 \
    "MTRRs not set as hvmloader sets them, or not read back equal: $(grep -E 'mtrr' "$log" | tail -3)"
expect "$log" "xen: domid $dd, xenstore home /local/domain/$dd" 120 "xenstore home not reported"
t2=$(date +%s%N)
/host/xen-peer "$dd" || fail "dom0 side of the round trip failed"
# The peer test's verdicts (result lines, kernel/src/xen/peertest.rs).
expect "$log" "result: name=peer-test step=event-channel peer=0 masked-held=1 pass=1" 60 "event channel round trip not seen"
expect "$log" "result: name=peer-test step=grant-copy peer=0 .*pass=1" 60 "grant copy not seen"
expect "$log" "result: name=peer-test pass=[01]" 60 "peer test did not finish"
no_failed_results "$log" peer-test
grep -E "ERROR|PANIC" "$log" && fail "errors on the console"
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
