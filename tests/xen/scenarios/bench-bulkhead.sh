# timeout: 1500
# shellcheck shell=dash
# The benchmark's Bulkhead side (bench-lib.sh): Bulkhead as the HVM driver domain with
# `memory = 32` owns the NVMe and the e1000e; its `bench-storage` figure (the same driver
# straight on the namespace) is the storage ceiling. First a short boot by the multiboot
# fallback, for its start-up figures.
. ./bench-lib.sh
# bench-base.sh runs this with another image as side "base" (run.sh --ab).
SIDE=${AB_SIDE:-bulkhead}
DD_NAME=bulkhead

# startup_figures PREFIX [WHAT]: the start of the Bulkhead instance just created, as
# PREFIX_xl_create_ms (xl create's own time), PREFIX_first_line_ms (its first console
# line, the banner) and PREFIX_ready_ms (its backend-watch event: ready to serve), from
# xl create; WHAT names the instance in a failure.
startup_figures() {
    result "$1_xl_create_ms" "$DD_CREATED_MS"
    POLL_S=0.1 expect "$DD_COM1" "Bulkhead [0-9]" 240 "no banner on COM1${2:-}"
    result "$1_first_line_ms" "$(ms_since "$DD_T0")"
    POLL_S=0.1 expect_event "$log" 240 "xenbus watcher not started${2:-}" backend-watch "home=/local/domain/$DD_ID" >/dev/null
    result "$1_ready_ms" "$(ms_since "$DD_T0")"
}

# The start-up figures of the fallback path (xl-configs/driverdomain-multiboot.cfg:
# hvmloader, SeaBIOS and QEMU's multiboot option ROM before Bulkhead), the same devices,
# up to one guest's disk Connected; then that instance goes.
start_multiboot_dd "00:03.0 00:04.0" "loglevel=info" "memory=32"
startup_figures mb " (multiboot path)"
bench_guest bench1 bulkhead part:delta fd00::11
result mb_guest_disk_connected_ms "$GUEST_CONNECTED_MS"
xl destroy bench1
DD_ID=
timeout "$(scaled 60)" xl shutdown -w bulkhead >/dev/null 2>&1 || xl destroy bulkhead

# The measured instance: driverdomain.cfg as shipped (no firmware).
start_hvm_dd "00:03.0 00:04.0" "bench-storage=$SECS" "memory=32"
startup_figures dd
expect_event "$log" $((SECS * 3 + 120)) "no bench-storage figure" bench-storage >/dev/null
R=$(events "$log" bench-storage | head -1)
report raw_rr4k_qd1_iops=rr4k_qd1_iops raw_rr4k_qd32_iops=rr4k_qd32_iops raw_seqread_mibs=seqread_mibs
workloads part:delta part:epsilon
# Memory in use as Bulkhead counts it (image, tables, buffers, the heap's used part; not
# the map slots it gave back to Xen).
POLL_S=0.1 state_dump 30 || fail "no state dump"
result dd_mem_used_kib "$(events "$log" dump | tail -1 | field memory_kib)"
guests_down
DD_ID=
timeout "$(scaled 60)" xl shutdown -w bulkhead >/dev/null 2>&1 || xl destroy bulkhead
echo "bench-bulkhead: ok"
