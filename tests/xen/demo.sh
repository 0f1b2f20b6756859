#!/bin/sh
# `make run`: the demo script dom0 runs instead of the test scenarios. It starts Bulkhead
# as a PVH driver domain, shows it working with dom0 (event channel + grants), attaches a
# guest disk to it, and leaves you at a dom0 shell.
. /host/scenarios/lib.sh
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say "Starting Bulkhead as a driver domain: xl create xl-configs/driverdomain-pvh.cfg"
xl create /host/xl-configs/driverdomain-pvh.cfg 'kernel="/host/bulkhead.elf"' 'cmdline="test-xen-peer=0"'
dd=$(xl domid bulkhead)
sleep 3
say "Its console (xl console bulkhead) so far:"
cat /host/out/console/guest-bulkhead.log
say "Event channel and grant round trip with dom0 (tests/xen/xen-peer.c):"
/host/xen-peer "$dd"
sleep 1
grep peer-test /host/out/console/guest-bulkhead.log
say "A guest whose disk says backend=bulkhead:"
idle_guest_cfg /tmp/guest.cfg guest1
cat /tmp/guest.cfg
xl create /tmp/guest.cfg
sleep 3
g=$(xl domid guest1)
xenstore-ls -f /local/domain/$dd/backend | head -20
grep xenbus /host/out/console/guest-bulkhead.log
say "xl list"
xl list
say "You are in dom0. Try: xl list; xl console bulkhead (Ctrl-] leaves); xl destroy guest1; busybox poweroff -f (or Ctrl-A X) to quit"
exec setsid -c sh -i </dev/hvc0 >/dev/hvc0 2>&1
