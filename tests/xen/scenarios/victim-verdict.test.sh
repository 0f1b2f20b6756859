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
[ 1.0] event: name=loop-window mark=quiet length_ms=5400 running_ms=900 cpu_wait_ms=12 cpu_wait_end_ms=300 slowest_poll_ms=5 poll_task=a poll_end_ms=1
[ 1.0] event: name=loop-window mark=net-gso_5 length_ms=11700 running_ms=1000 cpu_wait_ms=9000 cpu_wait_end_ms=9500 slowest_poll_ms=5 poll_task=a poll_end_ms=1
[ 1.0] event: name=loop-window mark=net-ctrl_5 length_ms=7800 running_ms=1000 cpu_wait_ms=300 cpu_wait_end_ms=3000 slowest_poll_ms=5 poll_task=a poll_end_ms=1
[ 1.0] event: name=loop-window mark=net-jumbo_5 length_ms=11000 running_ms=8000 cpu_wait_ms=9000 cpu_wait_end_ms=9500 slowest_poll_ms=5 poll_task=a poll_end_ms=1
[ 1.0] event: name=loop-window mark=net-norx_20 length_ms=23000 running_ms=1000 cpu_wait_ms=9000 cpu_wait_end_ms=9500 slowest_poll_ms=900 poll_task=a poll_end_ms=5000
W
# The victim's console, with a line of other output among its results.
crlf >"$t/victim" <<'V'
result: name=victim phase=start secs=1.1 disk_kibs=11453 disk_ops=190 disk_errors=0 disk_gap_ms=69 disk_gap_from_s=0.2 pings=10 answered=10 ping_gap_ms=121 ping_gap_from_s=0.1 overslept_ms=9 stolen_ms=680
linux-victim: something else
result: name=victim phase=idle secs=13.9 disk_kibs=9 disk_ops=2 disk_errors=0 disk_gap_ms=13861 disk_gap_from_s=0.0 pings=139 answered=139 ping_gap_ms=129 ping_gap_from_s=0.5 overslept_ms=9 stolen_ms=680
result: name=victim phase=quiet secs=5.4 disk_kibs=12647 disk_ops=1058 disk_errors=0 disk_gap_ms=21 disk_gap_from_s=1.3 pings=54 answered=54 ping_gap_ms=112 ping_gap_from_s=1.3 overslept_ms=9 stolen_ms=680
result: name=victim phase=net-gso_5 secs=11.7 disk_kibs=2521 disk_ops=460 disk_errors=0 disk_gap_ms=9162 disk_gap_from_s=0.4 pings=117 answered=84 ping_gap_ms=9245 ping_gap_from_s=0.3 overslept_ms=9 stolen_ms=680
result: name=victim phase=net-ctrl_5 secs=7.8 disk_kibs=8011 disk_ops=980 disk_errors=0 disk_gap_ms=2633 disk_gap_from_s=2.5 pings=78 answered=78 ping_gap_ms=1730 ping_gap_from_s=2.5 overslept_ms=9 stolen_ms=680
result: name=victim phase=net-storm_5 secs=7.8 disk_kibs=8011 disk_ops=980 disk_errors=2 disk_gap_ms=2500 disk_gap_from_s=1.0 pings=78 answered=78 ping_gap_ms=100 ping_gap_from_s=1.0 overslept_ms=9 stolen_ms=680
result: name=victim phase=net-jumbo_5 secs=11.7 disk_kibs=2521 disk_ops=460 disk_errors=0 disk_gap_ms=9162 disk_gap_from_s=0.4 pings=117 answered=84 ping_gap_ms=100 ping_gap_from_s=0.3 overslept_ms=9 stolen_ms=680
result: name=victim phase=net-norx_20 secs=11.7 disk_kibs=2521 disk_ops=460 disk_errors=0 disk_gap_ms=100 disk_gap_from_s=0.4 pings=117 answered=84 ping_gap_ms=9245 ping_gap_from_s=0.3 overslept_ms=9 stolen_ms=680
V
out=$(awk -v lib=1 -v max=2040 -f "$here/fields.awk" -f "$here/victim-verdict.awk" "$t/windows" "$t/victim")
want="explained: phase net-gso_5: disk gap 9162 ms from 0.4 s; Bulkhead's vCPU waited 9000 ms for a physical CPU, until 9500 ms into its window (it ran 1000 ms of 11700): Xen did not run it (662 ms of the gap left, limit 2040)
explained: phase net-gso_5: ping gap 9245 ms from 0.3 s; Bulkhead's vCPU waited 9000 ms for a physical CPU, until 9500 ms into its window (it ran 1000 ms of 11700): Xen did not run it (745 ms of the gap left, limit 2040)
disk gap name=victim phase=net-ctrl_5 secs=7.8 disk_kibs=8011 disk_ops=980 disk_errors=0 disk_gap_ms=2633 disk_gap_from_s=2.5 pings=78 answered=78 ping_gap_ms=1730 ping_gap_from_s=2.5 overslept_ms=9 stolen_ms=680
disk gap name=victim phase=net-storm_5 secs=7.8 disk_kibs=8011 disk_ops=980 disk_errors=2 disk_gap_ms=2500 disk_gap_from_s=1.0 pings=78 answered=78 ping_gap_ms=100 ping_gap_from_s=1.0 overslept_ms=9 stolen_ms=680
disk errors name=victim phase=net-storm_5 secs=7.8 disk_kibs=8011 disk_ops=980 disk_errors=2 disk_gap_ms=2500 disk_gap_from_s=1.0 pings=78 answered=78 ping_gap_ms=100 ping_gap_from_s=1.0 overslept_ms=9 stolen_ms=680
disk gap name=victim phase=net-jumbo_5 secs=11.7 disk_kibs=2521 disk_ops=460 disk_errors=0 disk_gap_ms=9162 disk_gap_from_s=0.4 pings=117 answered=84 ping_gap_ms=100 ping_gap_from_s=0.3 overslept_ms=9 stolen_ms=680
ping gap name=victim phase=net-norx_20 secs=11.7 disk_kibs=2521 disk_ops=460 disk_errors=0 disk_gap_ms=100 disk_gap_from_s=0.4 pings=117 answered=84 ping_gap_ms=9245 ping_gap_from_s=0.3 overslept_ms=9 stolen_ms=680"
if [ "$out" != "$want" ]; then
    echo "victim-verdict.awk: unexpected verdict:"
    echo "$out"
    exit 1
fi
echo "victim-verdict.awk: ok"
