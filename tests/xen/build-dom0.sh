#!/bin/bash
# Build what the Xen-in-QEMU tier boots: the Xen hypervisor, a Debian dom0 kernel +
# initramfs, and a dom0 root filesystem image with the xl toolstack and qemu-system-xen.
#
#   tests/xen/build-dom0.sh OUTDIR
#
# OUTDIR gets xen (ELF32 multiboot image), vmlinuz, initrd.img, rootfs.img (ext4), fio-root
# (fio and its libraries, for benchmark guests), and
# linux-initrd.img: a small initramfs for the Linux domUs of the tier (a Linux driver
# domain as the baseline, test guests); run.sh appends tests/xen/linux-init.sh to it.
# Needs root (debootstrap), network access to the Debian archive, ~1.5 GB of disk.
set -euo pipefail
out=$(realpath -m "$1")
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d /var/tmp/bulkhead-dom0.XXXXXX)
trap 'umount -R "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT

for tool in debootstrap mkfs.ext4; do
    command -v $tool >/dev/null || { echo "build-dom0: $tool missing (tests/install-deps.sh --xen)" >&2; exit 1; }
done

mkdir -p "$out" "$work/root"
echo "build-dom0: debootstrap into $work/root"
packages=(
    xen-utils-4.17 qemu-system-xen linux-image-amd64 initramfs-tools kmod
    iproute2 procps busybox util-linux e2fsprogs fio iperf3
)
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
    bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -30 "$work/debootstrap.log"; exit 1; }

# Modules the initramfs needs to find the root disk; dom0 loads the rest itself.
cat >>"$work/root/etc/initramfs-tools/modules" <<'MODS'
virtio_pci
virtio_blk
ext4
9p
9pnet_virtio
MODS
# shellcheck disable=SC2012 # kernel version directories: plain names
kver=$(ls "$work/root/lib/modules" | head -1)
mount -t proc proc "$work/root/proc"
chroot "$work/root" update-initramfs -c -k "$kver" >/dev/null
umount "$work/root/proc"

cp "$work/root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$work/root/boot/initrd.img-$kver" "$out/initrd.img"

# The Linux domU initramfs: busybox, the xl toolstack (for `xl devd`), xenstore tools, mkfs.ext4, the
# modules a driver domain and a guest need, and a minimal block hotplug script. The init
# (tests/xen/linux-init.sh) is appended by run.sh at each run, so it can change freely.
dd="$work/root/etc/bulkhead-linux"
mkdir -p "$dd/hooks" "$dd/scripts"
cat >"$dd/initramfs.conf" <<'CONF'
MODULES=list
BUSYBOX=y
COMPRESS=gzip
CONF
printf '%s\n' xen-privcmd xen-evtchn xen-gntdev xen-gntalloc xen-pcifront nvme xen-blkback xen-blkfront xen-netback xen-netfront e1000e bridge ext4 >"$dd/modules"
cat >"$work/root/usr/local/sbin/bulkhead-block-hotplug" <<'HOTPLUG'
#!/bin/sh
# Minimal block hotplug for a Linux driver domain (Debian's bash script is too slow for
# libxl's timeout under TCG): publish the device's major:minor for blkback.
dev=$(xenstore-read "$XENBUS_PATH/params")
case "$1" in
add)
    mm=$(stat -L -c '%t:%T' "$dev") || exit 1
    xenstore-write "$XENBUS_PATH/physical-device" "$mm"
    xenstore-write "$XENBUS_PATH/hotplug-status" connected ;;
remove) ;;
esac
HOTPLUG
chmod 755 "$work/root/usr/local/sbin/bulkhead-block-hotplug"
cat >"$dd/hooks/bulkhead" <<'HOOK'
#!/bin/sh
case "$1" in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
# xl lives in the versioned tools directory (/usr/lib/xen-4.17 on Debian 12).
copy_exec "$(ls -d /usr/lib/xen-*/bin/xl | head -1)" /usr/sbin/xl
for t in xenstore-read xenstore-write xenstore-ls xenstore-rm; do
    p=$(command -v $t) && copy_exec "$(readlink -f "$p")" "/usr/bin/$t"
done
copy_exec /usr/local/sbin/bulkhead-block-hotplug /etc/xen/scripts/bulkhead-block
# Guests of blkback make and check an ext4 filesystem (busybox's mke2fs is ext2 only).
copy_exec /sbin/mke2fs /sbin/mkfs.ext4
# Network guests measure with iperf3 (a few MiB with its libraries, unlike fio).
copy_exec /usr/bin/iperf3 /usr/bin/iperf3
cp /etc/mke2fs.conf "$DESTDIR/etc/"
mkdir -p "$DESTDIR/etc/xen" "$DESTDIR/var/lib/xen"
[ -f /etc/xen/xl.conf ] && cp /etc/xen/xl.conf "$DESTDIR/etc/xen/"
exit 0
HOOK
chmod 755 "$dd/hooks/bulkhead"
mount -t proc proc "$work/root/proc"
chroot "$work/root" mkinitramfs -d /etc/bulkhead-linux -o /boot/linux-initrd.img "$kver" >/dev/null
umount "$work/root/proc"
cp "$work/root/boot/linux-initrd.img" "$out/linux-initrd.img"

# fio for the benchmark guests, kept out of the initramfs (with its libraries it is about
# 80 MiB): run.sh prepends this tree, at /opt/fio, to the ramdisk of guests that measure.
fr="$out/fio-root"
mkdir -p "$fr/lib"
cp -L "$work/root/usr/bin/fio" "$fr/fio"
chroot "$work/root" ldd /usr/bin/fio | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
    cp -L "$work/root$lib" "$fr/lib/"
done

# The hypervisor comes from the same archive, unpacked rather than installed, of the
# version of the tools in the image (their directory, /usr/lib/xen-X.Y, names it).
# shellcheck disable=SC2012 # xen-X.Y directories: plain names
xv=$(basename "$(ls -d "$work"/root/usr/lib/xen-[0-9]* | head -1)")
xv=${xv#xen-}
[ -n "$xv" ] || { echo "build-dom0: no /usr/lib/xen-X.Y in the image" >&2; exit 1; }
( cd "$work" && apt-get download "xen-hypervisor-$xv-amd64" >/dev/null 2>&1 )
dpkg-deb -x "$work/xen-hypervisor-$xv-amd64_"*.deb "$work/xenpkg"
gunzip -c "$work/xenpkg/boot/xen-$xv-amd64.gz" >"$out/xen"

# PID 1 is a stub: mount the host share and hand over to tests/xen/dom0-init.sh there,
# so the dom0 boot logic can change without rebuilding this image.
cat >"$work/root/sbin/bulkhead-dom0-init" <<'STUB'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
modprobe 9pnet_virtio; modprobe 9p
mkdir -p /host
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host /host && [ -x /host/dom0-init.sh ]; then
    exec /host/dom0-init.sh
fi
echo "bulkhead-dom0-init: no host share with dom0-init.sh; starting a shell"
exec /bin/sh
STUB
chmod 755 "$work/root/sbin/bulkhead-dom0-init"
mkdir -p "$work/root/host" "$work/root/var/log/xen/console"
echo dom0 >"$work/root/etc/hostname"
# Keep the image small: no docs, no apt caches.
rm -rf "$work/root/var/cache/apt/archives"/*.deb "$work/root/usr/share/doc" "$work/root/usr/share/man"

size_mb=$(( $(du -sm "$work/root" | cut -f1) + 400 ))
rm -f "$out/rootfs.img"
mkfs.ext4 -q -L dom0root -d "$work/root" "$out/rootfs.img" "${size_mb}M"
# shellcheck disable=SC2012 # a listing for the eye, not parsed
echo "build-dom0: done: $(ls -sh "$out" | tr '\n' ' ')"
