# Benchmark only (`make bench`, never `make test`).
# Storage figures (printed, never asserted): Bulkhead's local NVMe ceiling in the driver
# domain (bench-storage=), then fio in a Linux guest whose disk Bulkhead serves. The
# linux-dd-baseline scenario prints the same fio figures through a Linux driver domain on
# the same emulated hardware; run.sh prints the ratios.
. ./lib.sh
start_hvm_dd 00:03.0 "bench-storage=5"
expect "$log" "^figure: local NVMe" 240 "no local NVMe figure" >/dev/null
grep -a "^figure: local NVMe" "$log" | sed 's/^figure: /figure: blkbench: /'
expect "$log" "watching /local/domain/" 60 "xenbus watcher not started"
bench_guest_cfg /tmp/bench.cfg bench1 bulkhead part:delta
xl create /tmp/bench.cfg || fail "xl create of the benchmark guest failed"
expect "$(console_of bench1)" "linux-bench: (bench|FAIL)" 300 "the benchmark guest did not finish"
grep -q "linux-bench: FAIL" "$(console_of bench1)" && fail "$(grep 'linux-bench: FAIL' "$(console_of bench1)")"
echo "figure: blkbench: guest fio through Bulkhead: $(grep -a 'linux-bench: bench:' "$(console_of bench1)" | sed 's/.*bench: //')"
xl destroy bench1
stop_dd
dom0_healthy
echo "blkbench: ok"
