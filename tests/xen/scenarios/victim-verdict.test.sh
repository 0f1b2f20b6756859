#!/bin/sh
# shellcheck shell=dash
# victim-verdict.awk against fixed inputs (make test-host): a gap that Bulkhead's wait
# for a CPU covers is explained; one it covers only in part fails, and so does one
# without a loop window, one in a window where Bulkhead mostly ran, one with a long poll
# of Bulkhead's inside it; disk errors always fail; ping gaps are judged as disk gaps.
set -eu
here=$(dirname "$0")
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
# The consoles' lines end in CR LF, as the guests print them.
crlf() { sed 's/$/\r/'; }
crlf >"$t/windows" <<'W'
[ 1.0] INFO  xen::control: loop window: mark=quiet length_ms=5400 running_ms=900 cpu_wait_ms=12 cpu_wait_end_ms=300 slowest_poll_ms=5 poll_task=a poll_end_ms=1
[ 2.0] INFO  xen::control: loop window: mark=net-gso_5 length_ms=11700 running_ms=1000 cpu_wait_ms=9000 cpu_wait_end_ms=9500 slowest_poll_ms=5 poll_task=a poll_end_ms=1
[ 3.0] INFO  xen::control: loop window: mark=net-ctrl_5 length_ms=7800 running_ms=1000 cpu_wait_ms=300 cpu_wait_end_ms=3000 slowest_poll_ms=5 poll_task=a poll_end_ms=1
[ 4.0] INFO  xen::control: loop window: mark=net-jumbo_5 length_ms=11000 running_ms=8000 cpu_wait_ms=9000 cpu_wait_end_ms=9500 slowest_poll_ms=5 poll_task=a poll_end_ms=1
[ 5.0] INFO  xen::control: loop window: mark=net-norx_20 length_ms=23000 running_ms=1000 cpu_wait_ms=9000 cpu_wait_end_ms=9500 slowest_poll_ms=900 poll_task=a poll_end_ms=5000
W
crlf >"$t/details" <<'D'
victim: phase quiet detail: disk gap from 1.3 s, ping gap from 1.3 s; this guest overslept at most 9 ms, 680 ms stolen from its vCPUs
victim: phase net-gso 5 detail: disk gap from 0.4 s, ping gap from 0.3 s; this guest overslept at most 9 ms, 680 ms stolen from its vCPUs
victim: phase net-ctrl 5 detail: disk gap from 2.5 s, ping gap from 2.5 s; this guest overslept at most 9 ms, 680 ms stolen from its vCPUs
victim: phase net-storm 5 detail: disk gap from 1.0 s, ping gap from 1.0 s; this guest overslept at most 9 ms, 680 ms stolen from its vCPUs
victim: phase net-jumbo 5 detail: disk gap from 0.4 s, ping gap from 0.3 s; this guest overslept at most 9 ms, 680 ms stolen from its vCPUs
victim: phase net-norx 20 detail: disk gap from 0.4 s, ping gap from 0.3 s; this guest overslept at most 9 ms, 680 ms stolen from its vCPUs
D
crlf >"$t/phases" <<'P'
victim: phase start: 1.1 s, disk 11453 KiB/s (190 ops, 0 errors, longest gap 69 ms), ping 10 of 10 answered (longest gap 121 ms)
victim: phase idle: 13.9 s, disk 9 KiB/s (2 ops, 0 errors, longest gap 13861 ms), ping 139 of 139 answered (longest gap 129 ms)
victim: phase quiet: 5.4 s, disk 12647 KiB/s (1058 ops, 0 errors, longest gap 21 ms), ping 54 of 54 answered (longest gap 112 ms)
victim: phase net-gso 5: 11.7 s, disk 2521 KiB/s (460 ops, 0 errors, longest gap 9162 ms), ping 84 of 117 answered (longest gap 9245 ms)
victim: phase net-ctrl 5: 7.8 s, disk 8011 KiB/s (980 ops, 0 errors, longest gap 2633 ms), ping 78 of 78 answered (longest gap 1730 ms)
victim: phase net-storm 5: 7.8 s, disk 8011 KiB/s (980 ops, 2 errors, longest gap 2500 ms), ping 78 of 78 answered (longest gap 100 ms)
victim: phase net-jumbo 5: 11.7 s, disk 2521 KiB/s (460 ops, 0 errors, longest gap 9162 ms), ping 84 of 117 answered (longest gap 100 ms)
victim: phase net-norx 20: 11.7 s, disk 2521 KiB/s (460 ops, 0 errors, longest gap 100 ms), ping 84 of 117 answered (longest gap 9245 ms)
P
out=$(awk -v max=2040 -f "$here/victim-verdict.awk" "$t/windows" "$t/details" "$t/phases")
want="explained: phase net-gso 5: disk gap 9162 ms from 0.4 s; Bulkhead's vCPU waited 9000 ms for a physical CPU, until 9500 ms into its window (it ran 1000 ms of 11700): Xen did not run it (662 ms of the gap left, limit 2040)
explained: phase net-gso 5: ping gap 9245 ms from 0.3 s; Bulkhead's vCPU waited 9000 ms for a physical CPU, until 9500 ms into its window (it ran 1000 ms of 11700): Xen did not run it (745 ms of the gap left, limit 2040)
disk gap victim: phase net-ctrl 5: 7.8 s, disk 8011 KiB/s (980 ops, 0 errors, longest gap 2633 ms), ping 78 of 78 answered (longest gap 1730 ms)
disk gap victim: phase net-storm 5: 7.8 s, disk 8011 KiB/s (980 ops, 2 errors, longest gap 2500 ms), ping 78 of 78 answered (longest gap 100 ms)
disk errors victim: phase net-storm 5: 7.8 s, disk 8011 KiB/s (980 ops, 2 errors, longest gap 2500 ms), ping 78 of 78 answered (longest gap 100 ms)
disk gap victim: phase net-jumbo 5: 11.7 s, disk 2521 KiB/s (460 ops, 0 errors, longest gap 9162 ms), ping 84 of 117 answered (longest gap 100 ms)
ping gap victim: phase net-norx 20: 11.7 s, disk 2521 KiB/s (460 ops, 0 errors, longest gap 100 ms), ping 84 of 117 answered (longest gap 9245 ms)"
if [ "$out" != "$want" ]; then
    echo "victim-verdict.awk: unexpected verdict:"
    echo "$out"
    exit 1
fi
echo "victim-verdict.awk: ok"
