# shellcheck shell=dash
# A guest whose disk names Bulkhead as backend: Bulkhead sees the device appear in its
# xenstore backend directory, checks it, and moves it to InitWait; destroying the guest
# removes the device and Bulkhead releases it.
. ./lib.sh
log=$(console_of bulkhead)
rm -f "$log"
dd_uses "$IMAGE"
xl create "$XLCFG/driverdomain-pvh.cfg" "kernel=\"$IMAGE\"" 'cmdline="loglevel=info"' || fail "xl create driver domain failed"
dd=$(xl domid bulkhead)
expect_event "$log" 60 "xenbus watcher not started" backend-watch "home=/local/domain/$dd"
# The guest is a second Bulkhead (PVH) that just idles: it has no blkfront, so the frontend
# stays Initialising and the backend must sit in InitWait.
idle_guest_cfg /tmp/guest.cfg guest1
xl create /tmp/guest.cfg || fail "xl create of a guest with backend=bulkhead failed"
g=$(xl domid guest1)
be=/local/domain/$dd/backend/vbd/$g/51712
expect_event "$log" 60 "Bulkhead did not see the new vbd" device-new "dev=vbd-$g-51712"
expect_event "$log" 30 "backend did not reach InitWait" device-state "dev=vbd-$g-51712" backend=InitWait
state=$(xenstore-read "$be/state") || fail "no backend state node"
[ "$state" = 2 ] || fail "backend state is $state, expected 2 (InitWait)"
note "backend $be state=$state"
xl destroy guest1 || fail "xl destroy guest1 failed"
expect_event "$log" 60 "Bulkhead did not release the removed device" device-released "dev=vbd-$g-51712"
no_errors "$log"
xl destroy bulkhead
dom0_healthy
echo "vbd-initwait: ok"
