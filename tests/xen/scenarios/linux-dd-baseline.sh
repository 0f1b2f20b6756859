# The baseline Bulkhead is measured against: a Linux driver domain (PV, Debian kernel,
# xen-pcifront + nvme + xen-blkback + `xl devd`) on the same emulated NVMe, serving a
# Linux guest's disk. Prints the boot-time figure (xl create of the driver domain to the
# guest's backend Connected); asserts that the guest's disk I/O works through it.
. ./lib.sh
dlog=$(console_of linux-dd)
glog=$(console_of linux-guest)
rm -f "$dlog" "$glog"
modprobe xen-pciback 2>/dev/null
xl pci-assignable-list | grep -q "00:03.0" || xl pci-assignable-add 00:03.0 || fail "pci-assignable-add failed"
cat >/tmp/linux-dd.cfg <<CFG
name = "linux-dd"
type = "pv"
kernel = "/host/linux/vmlinuz"
ramdisk = "/host/linux/linux-initrd.img"
extra = "console=hvc0 rdinit=/bulkhead-linux-init bulkhead.role=dd iommu=soft quiet"
memory = 512
vcpus = 1
pci = [ "00:03.0" ]
driver_domain = 1
CFG
t0=$(date +%s%N)
xl create /tmp/linux-dd.cfg || fail "xl create of the Linux driver domain failed"
dd=$(xl domid linux-dd)
expect "$dlog" "linux-dd: ready" 240 "Linux driver domain did not come up"
grep "linux-dd:" "$dlog"
cat >/tmp/linux-guest.cfg <<CFG
name = "linux-guest"
type = "pv"
kernel = "/host/linux/vmlinuz"
ramdisk = "/host/linux/linux-initrd.img"
extra = "console=hvc0 rdinit=/bulkhead-linux-init bulkhead.role=guest"
memory = 256
on_crash = "preserve"
disk = [ 'format=raw,vdev=xvda,access=rw,backend=linux-dd,script=bulkhead-block,target=/dev/nvme0n1p3' ]
CFG
xl create /tmp/linux-guest.cfg || fail "xl create of the guest failed"
g=$(xl domid linux-guest)
first=$g
i=0
# Follow the guest by name: a Linux PVH guest under nested TCG sometimes triple-faults
# early, which Xen turns into a reboot under a new domain id (seen in `xl dmesg`).
until [ "$(xenstore-read /local/domain/$dd/backend/vbd/$g/51712/state 2>/dev/null)" = 4 ]; do
    g=$(xl domid linux-guest 2>/dev/null || echo "$g")
    if [ $i -gt 120 ]; then
        xl list; xl dmesg | tail -20; tail -20 "$glog"
        fail "Linux backend never Connected"
    fi
    i=$((i + 1))
    sleep 2
done
t1=$(date +%s%N)
[ "$g" != "$first" ] && note "guest restarted (domain $first -> $g): $(xl dmesg | grep -i 'triple fault' | tail -1)"
echo "figure: Linux driver domain: xl create to first backend Connected: $(( (t1 - t0) / 1000000 )) ms"
expect "$glog" "linux-guest: disk ok" 240 "guest disk I/O through the Linux driver domain failed"
grep "linux-guest:" "$glog"
xl destroy linux-guest
# The same fio figures blkbench prints for Bulkhead, through this Linux driver domain.
bench_guest_cfg /tmp/bench.cfg bench2 linux-dd /dev/nvme0n1p4 "script=bulkhead-block,"
xl create /tmp/bench.cfg || fail "xl create of the benchmark guest failed"
expect "$(console_of bench2)" "linux-bench: (bench|FAIL)" 300 "the benchmark guest did not finish"
grep -q "linux-bench: FAIL" "$(console_of bench2)" && fail "$(grep 'linux-bench: FAIL' "$(console_of bench2)")"
echo "figure: linux-dd-baseline: guest fio through a Linux driver domain: $(grep -a 'linux-bench: bench:' "$(console_of bench2)" | sed 's/.*bench: //')"
xl destroy bench2
xl destroy linux-dd
dom0_healthy
echo "linux-dd-baseline: ok"
