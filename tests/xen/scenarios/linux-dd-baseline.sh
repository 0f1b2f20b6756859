# The setup Bulkhead is compared with works (the benchmark's fio runs are `make bench`,
# scenario linux-dd-bench): a Linux driver domain (PV, Debian kernel, xen-pcifront + nvme
# + xen-blkback + `xl devd`) on the same emulated NVMe serves a Linux guest's disk, which
# writes with O_DIRECT and reads back equal. Prints the boot figure (xl create of the
# driver domain to the guest's backend Connected) next to Bulkhead's (blkback).
. ./lib.sh
glog=$(console_of linux-guest)
rm -f "$glog"
start_linux_dd
dd=$LDD_ID
cat >/tmp/linux-guest.cfg <<CFG
name = "linux-guest"
type = "pv"
kernel = "$(linux_file vmlinux)"
ramdisk = "$(linux_file linux-initrd.img)"
extra = "console=hvc0 rdinit=/bulkhead-linux-init bulkhead.role=guest"
memory = 256
on_crash = "preserve"
disk = [ 'format=raw,vdev=xvda,access=rw,backend=linux-dd,script=bulkhead-block,target=/dev/nvme0n1p3' ]
CFG
xl create /tmp/linux-guest.cfg || fail "xl create of the guest failed"
g=$(xl domid linux-guest)
poll 240 xs_is "/local/domain/$dd/backend/vbd/$g/51712/state" 4 || {
    xl list; xl dmesg | tail -20; tail -20 "$glog"
    fail "Linux backend never Connected"
}
t1=$(date +%s%N)
echo "figure: Linux driver domain: xl create to first backend Connected: $(( (t1 - LDD_T0) / 1000000 )) ms"
expect "$glog" "linux-guest: (disk ok|FAIL)" 240 "guest disk I/O through the Linux driver domain did not finish"
grep "linux-guest:" "$glog"
grep -q "linux-guest: disk ok" "$glog" || fail "guest disk I/O through the Linux driver domain failed"
xl destroy linux-guest
xl destroy linux-dd
dom0_healthy
echo "linux-dd-baseline: ok"
