# shellcheck shell=dash
# A panic in Bulkhead shuts the domain down as crashed, so xl's on_crash applies
# (driverdomain-pvh.cfg: preserve), and dom0 is unaffected.
. ./lib.sh
log=$(console_of bulkhead)
rm -f "$log"
dd_uses "$TEST_IMAGE"
xl create "$XLCFG/driverdomain-pvh.cfg" "kernel=\"$TEST_IMAGE\"" 'cmdline="test-panic"' || fail "xl create failed"
expect_event "$log" 60 "no panic on the console" panic "message~^test-panic.requested"
poll 30 crashed bulkhead || { xl list; fail "domain not reported crashed"; }
xl list bulkhead
xl destroy bulkhead || fail "xl destroy of the crashed domain failed"
dom0_healthy
echo "crash: ok"
