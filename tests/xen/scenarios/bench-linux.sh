# timeout: 1500
# shellcheck shell=dash
# The benchmark's Linux side (bench-lib.sh): a Linux driver domain (PV, Debian's kernel:
# pcifront, nvme, xen-blkback, xen-netback and a bridge over the e1000e, `xl devd`) owns
# the NVMe and the e1000e; its own fio on /dev/nvme0n1 is the storage ceiling.
. ./bench-lib.sh
SIDE=linux
DD_NAME=linux-dd
start_linux_dd "00:03.0 00:04.0" bulkhead.bridge linux-initrd-fio.img
result dd_xl_create_ms "$LDD_CREATED_MS"
result dd_first_line_ms "$LDD_FIRST_MS"
result dd_ready_ms "$LDD_READY_MS"
ask linux-dd fio /dev/nvme0n1 randread 4k 1 "$SECS"
report raw_rr4k_qd1_iops=iops
ask linux-dd fio /dev/nvme0n1 randread 4k 32 "$SECS"
report raw_rr4k_qd32_iops=iops
ask linux-dd fio /dev/nvme0n1 read 1M 8 "$SECS"
report raw_seqread_mibs=mibs
workloads /dev/nvme0n1p4 /dev/nvme0n1p5 "script=bulkhead-block," ",script=bulkhead-vif"
ask linux-dd mem
report dd_mem_used_kib=used_kib
guests_down
# Its NIC and NVMe stopped by their drivers before it goes: a destroy would leave them
# running for the next driver domain (dom0-run.sh, clean_up).
ask linux-dd quiesce
DD_ID=
xl destroy linux-dd
echo "bench-linux: ok"
