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
expect "$log" "watching /local/domain/$dd/backend" 60 "xenbus watcher not started"
# The guest is a second Bulkhead (PVH) that just idles: it has no blkfront, so the frontend
# stays Initialising and the backend must sit in InitWait.
idle_guest_cfg /tmp/guest.cfg guest1
xl create /tmp/guest.cfg || fail "xl create of a guest with backend=bulkhead failed"
g=$(xl domid guest1)
be=/local/domain/$dd/backend/vbd/$g/51712
expect "$log" "vbd-$g-51712: new backend device" 60 "Bulkhead did not see the new vbd"
expect "$log" "vbd-$g-51712: backend InitWait" 30 "backend did not reach InitWait"
state=$(xenstore-read "$be/state") || fail "no backend state node"
[ "$state" = 2 ] || fail "backend state is $state, expected 2 (InitWait)"
note "backend $be state=$state"
xl destroy guest1 || fail "xl destroy guest1 failed"
expect "$log" "vbd-$g-51712: released" 60 "Bulkhead did not release the removed device"
grep -E "ERROR|PANIC" "$log" && fail "errors on the console"
xl destroy bulkhead
dom0_healthy
echo "vbd-initwait: ok"
