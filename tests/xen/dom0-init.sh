#!/bin/sh
# shellcheck shell=dash
# PID 1 of the test dom0 (exec'd from the image's stub init once the host share is
# mounted at /host): bring up the Xen toolstack without systemd, in the order xl needs
# (xenfs, xenstored, xen-init-dom0, xenconsoled), run /host/dom0-run.sh, power off.
# Living in the share rather than the image, it changes without rebuilding the image.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
log() { echo "dom0-init: $*"; }

mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
hostname dom0
ip link set lo up

mount -t xenfs xenfs /proc/xen || log "FATAL: cannot mount xenfs"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-pciback; do
    modprobe $m 2>/dev/null
done

log "starting xenstored"
/etc/xen/scripts/launch-xenstore >/dev/null 2>&1 || log "launch-xenstore failed"
log "xen-init-dom0"
# In the versioned tools directory (/usr/lib/xen-4.17 on Debian 12), not on PATH.
# shellcheck disable=SC2012 # the first match of a glob of plain names
init_dom0=$(ls -d /usr/lib/xen-*/bin/xen-init-dom0 2>/dev/null | head -1)
"${init_dom0:-xen-init-dom0}" >/dev/null 2>&1 || log "xen-init-dom0 failed"
mkdir -p /host/out/console /var/run/xen /var/lib/xen
log "starting xenconsoled"
xenconsoled --log=guest --log-dir=/host/out/console
log "ready"

if [ -x /host/dom0-run.sh ]; then
    /host/dom0-run.sh
    rc=$?
else
    log "no /host/dom0-run.sh: dropping to a shell"
    setsid sh -c 'exec sh </dev/hvc0 >/dev/hvc0 2>&1'
    rc=0
fi
log "scenarios finished rc=$rc"
echo "BULKHEAD-DOM0-DONE rc=$rc"
sync
# No init system to ask: power off through sysrq, then busybox as a fallback. Xen turns
# dom0's poweroff into a machine poweroff, which ends QEMU.
echo 1 >/proc/sys/kernel/sysrq
echo o >/proc/sysrq-trigger
sleep 5
busybox poweroff -f
