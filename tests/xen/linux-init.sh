#!/bin/sh
# PID 1 of the Linux domUs the Xen tier uses for comparison and as test guests
# (rdinit=/bulkhead-linux-init in their kernel command line), from the initramfs that
# build-dom0.sh makes. `bulkhead.role=` picks what it does:
#   dd     a Linux driver domain: pcifront, nvme, blkback and `xl devd` (the baseline
#          Bulkhead is measured against)
#   guest  a guest: waits for its xvda and runs a write/read-back check on it
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmpfs /run
mkdir -p /var/run/xen /var/lib/xen /var/log/xen
mount -t tmpfs tmpfs /tmp
role=$(sed -n 's/.*bulkhead\.role=\([a-z]*\).*/\1/p' /proc/cmdline)
say() { echo "linux-$role: $*"; }
t0=$(cut -d' ' -f1 /proc/uptime)

case "$role" in
dd)
    mount -t xenfs xenfs /proc/xen
    for m in xen-privcmd xen-evtchn xen-gntdev xen-gntalloc xen-pcifront nvme xen-blkback; do modprobe $m; done
    i=0
    until [ -b /dev/nvme0n1 ]; do i=$((i + 1)); [ $i -gt 120 ] && { say "no /dev/nvme0n1"; break; }; sleep 0.5; done
    say "nvme: $(cat /sys/block/nvme0n1/size 2>/dev/null) sectors, partitions: $(ls /sys/block/nvme0n1 | grep -c nvme0n1p)"
    for t in stat xenstore-read xenstore-write xl; do command -v $t >/dev/null || say "missing tool: $t"; done
    # devd's messages go to the console so the test log shows hotplug problems.
    (xl devd -F 2>&1 | sed 's/^/linux-dd devd: /' >/dev/console) &
    say "ready after $(cut -d' ' -f1 /proc/uptime) s of uptime (init started at $t0 s)"
    ;;
guest)
    modprobe xen-blkfront
    i=0
    until [ -b /dev/xvda ]; do i=$((i + 1)); [ $i -gt 120 ] && { say "FAIL: no /dev/xvda"; break; }; sleep 1; done
    if [ -b /dev/xvda ]; then
        say "xvda: $(cat /sys/block/xvda/size) sectors"
        # A cheap pattern (reading /dev/urandom under nested TCG has crashed guests).
        seq 1 40000 >/tmp/pattern
        dd if=/tmp/pattern of=/dev/xvda bs=4096 oflag=direct conv=fsync 2>/dev/null
        sz=$(wc -c </tmp/pattern)
        dd if=/dev/xvda bs=4096 iflag=direct count=$(( (sz + 4095) / 4096 )) 2>/dev/null | head -c "$sz" >/tmp/back
        if cmp -s /tmp/pattern /tmp/back; then say "disk ok: $sz bytes written with O_DIRECT and read back equal"; else say "FAIL: read back differs"; fi
    fi
    ;;
*)
    say "unknown role"
    ;;
esac
exec sleep 100000
