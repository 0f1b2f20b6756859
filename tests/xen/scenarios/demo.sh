# shellcheck shell=dash
# The demo `make run` shows (tests/xen/demo.sh runs this script, then gives a dom0 shell),
# and a scenario of the Xen tier so that the README's first command is checked too.
# Bulkhead is the HVM driver domain owning the NVMe (00:03.0) and the e1000e (00:04.0)
# (the shared driver domain of lib.sh: in the tier it is already running), and a stock
# Debian guest whose disk and vif name it as their backend makes an ext4 file system on
# its disk, reads it back after a remount, gets a DHCP lease and pings through Bulkhead's
# switch and NIC. Then what xl says of the driver domain and what Bulkhead itself counts.
. ./lib.sh
title() { printf '\n== %s\n' "$*"; }

title "dom0 hands the NVMe (00:03.0) and the e1000e (00:04.0) to Bulkhead: xl create xl-configs/driverdomain.cfg 'pci=[ \"00:03.0\", \"00:04.0\" ]'"
t=$(date +%s)
start_shared_dd
[ $DD_REUSED = 1 ] || echo "Bulkhead (domain $DD_ID) serving $(($(date +%s) - t)) s after the xl create began; more of its console:"
# (start_shared_dd printed the lines it waited for: the last partition, the NIC, the watch.)
{ events "$log" boot; events "$log" nvme-up; events "$log" mgmt-address; } | cut -c1-150

title "A stock Debian guest whose disk and vif say backend=bulkhead (xl create demo.cfg):"
cat >/tmp/demo.cfg <<CFG
name = "demo"
type = "pv"
kernel = "$(linux_file vmlinux)"
ramdisk = "$(linux_file linux-initrd.img)"
extra = "console=hvc0 rdinit=/bulkhead-linux-init bulkhead.role=demo quiet"
memory = 256
vcpus = 1
on_crash = "preserve"
disk = [ 'format=raw,vdev=xvda,access=rw,backend=bulkhead,target=part:epsilon' ]
vif = [ 'backend=bulkhead,mac=00:16:3e:de:00:01' ]
CFG
grep -E "^(disk|vif)" /tmp/demo.cfg
glog=$(console_of demo)
rm -f "$glog"
t=$(date +%s)
xl create /tmp/demo.cfg || fail "xl create demo failed"
g=$(xl domid demo)
echo "its console (xl console demo):"
# Its lines as they come, until it passes or fails.
shown=0
end=$(($(date +%s) + $(scaled 300)))
while :; do
    lines=$(grep -aE "^linux-demo: |result: name=linux-demo pass=" "$glog" 2>/dev/null)
    n=$(printf '%s' "$lines" | grep -c .)
    [ "$n" -gt "$shown" ] && printf '%s\n' "$lines" | tail -n +$((shown + 1)) | sed 's/^/  /'
    shown=$n
    results "$glog" linux-demo "pass~^[01]$" >/dev/null && break
    [ "$(date +%s)" -gt $end ] && fail "the guest did not finish within $(scaled 300) s (its console: $glog)"
    crashed demo && fail "the guest crashed"
    sleep 1
done
results "$glog" linux-demo pass=1 >/dev/null || fail "the guest's checks did not pass (its console: $glog)"
for c in disk lease ping; do
    results "$glog" linux-demo "step=$c" >/dev/null || fail "the guest printed no '$c' result"
done
echo "guest done $(($(date +%s) - t)) s after its xl create"
# What the guest's devices look like from the backend side (4 = Connected).
for d in vbd/$g/51712 vif/$g/0; do
    xs_is "/local/domain/$DD_ID/backend/$d/state" 4 || fail "backend/$d is not Connected"
done
echo "backend/vbd/$g/51712 and backend/vif/$g/0 under /local/domain/$DD_ID: state 4 (Connected)"

title "xl list: the driver domain next to dom0 and the guest"
command xl list
state_dump 30 || fail "Bulkhead answered no state dump (control/dump)"
line=$(events "$log" dump | tail -1)
used=$(echo "$line" | field memory_kib)
[ -n "$used" ] || fail "no memory figure in: $line"
echo "Bulkhead: $(command xl list bulkhead | awk 'NR == 2 { print $3 }') MiB given by xl, $used KiB in use by its own count (image, page tables, buffers, heap)"
offer_dd
echo "demo: ok"
