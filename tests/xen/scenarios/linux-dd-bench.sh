# Benchmark only (`make bench`, never `make test`): the fio figures blkbench prints for
# Bulkhead, from the same guest setup through the Linux driver domain; run.sh prints the
# ratios when both ran.
. ./lib.sh
start_linux_dd
bench_guest_cfg /tmp/bench.cfg bench2 linux-dd /dev/nvme0n1p4 "script=bulkhead-block,"
xl create /tmp/bench.cfg || fail "xl create of the benchmark guest failed"
expect "$(console_of bench2)" "linux-bench: (bench|FAIL)" 300 "the benchmark guest did not finish"
grep -q "linux-bench: FAIL" "$(console_of bench2)" && fail "$(grep 'linux-bench: FAIL' "$(console_of bench2)")"
echo "figure: linux-dd-bench: guest fio through a Linux driver domain: $(grep -a 'linux-bench: bench:' "$(console_of bench2)" | sed 's/.*bench: //')"
xl destroy bench2
xl destroy linux-dd
dom0_healthy
echo "linux-dd-bench: ok"
