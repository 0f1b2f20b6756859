# shellcheck shell=dash
# Bulkhead as a PVH driver domain (xl-configs/driverdomain-pvh.cfg): boots, logs on the Xen
# console, finds its xenstore home, and does an event-channel and grant round trip with
# dom0 (xen-peer). Then `xl destroy` leaves dom0 healthy.
. ./lib.sh
log=$(console_of bulkhead)
rm -f "$log"
dd_uses "$TEST_IMAGE"
xl create "$XLCFG/driverdomain-pvh.cfg" "kernel=\"$TEST_IMAGE\"" 'cmdline="loglevel=debug test-xen-peer=0"' \
    || fail "xl create driverdomain-pvh.cfg failed"
dd=$(xl domid bulkhead) || fail "no domain named bulkhead"
note "driver domain id $dd"
expect_event "$log" 60 "no PVH boot banner on the Xen console" boot mode=pvh entry=pvh
expect_event "$log" 30 "Xen console ring not attached" console "sinks~xen-ring"
expect_event "$log" 60 "xenstore home not reported" xen
events "$log" xen "domid=$dd" "home=/local/domain/$dd" >/dev/null || { xl list; fail "reported domain id differs from xl's ($dd)"; }
/host/xen-peer "$dd" || fail "dom0 side of the round trip failed"
# The peer test's verdicts (result lines, kernel/src/xen/peertest.rs).
expect_result "$log" 30 "event channel round trip not seen" peer-test step=event-channel peer=0 masked-held=1 pass=1
expect_result "$log" 30 "the peer's write to our grant not seen" peer-test step=peer-wrote-our-grant peer=0 pass=1
expect_result "$log" 30 "grant map/unmap round trip not seen" peer-test step=grant-map-unmap peer=0 pass=1
expect_result "$log" 30 "grant copy not seen" peer-test step=grant-copy peer=0 pass=1
expect_result "$log" 30 "grant not revoked" peer-test step=revoke "gref~^[0-9]+$" pass=1
expect_result "$log" 30 "peer test did not finish" peer-test "pass~^[01]$"
no_failed_results "$log" peer-test
no_errors "$log"
xl destroy bulkhead || fail "xl destroy failed"
xl list | grep -q bulkhead && fail "bulkhead still listed after destroy"
dom0_healthy
echo "pvh-core: ok"
