#!/bin/sh
# Run a command on a deliberately slow machine: every process it starts (QEMU included)
# shares PERCENT of one CPU, through a cgroup CPU quota (v2, or v1's cpu controller).
# For checking that the tests' time limits follow the calibration (docs/testing.md):
#
#   tests/throttle.sh 100 make test-xen      # 2 cores' worth of QEMU squeezed into 1
#
# Needs root (cgroups). The cgroup is removed afterwards.
set -eu
[ $# -ge 2 ] || { echo "usage: tests/throttle.sh PERCENT COMMAND..." >&2; exit 2; }
pct=$1
shift
period=100000
quota=$((period * pct / 100))
name="bulkhead-throttle-$$"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg=/sys/fs/cgroup/$name
    mkdir "$cg"
    echo "$quota $period" >"$cg/cpu.max"
    procs=$cg/cgroup.procs
elif [ -d /sys/fs/cgroup/cpu ]; then
    cg=/sys/fs/cgroup/cpu/$name
    mkdir "$cg"
    echo $period >"$cg/cpu.cfs_period_us"
    echo "$quota" >"$cg/cpu.cfs_quota_us"
    procs=$cg/cgroup.procs
else
    echo "throttle: no cgroup CPU controller found" >&2
    exit 1
fi
echo "throttle: running '$*' on ${pct}% of one CPU ($cg)"
set +e
sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$procs" "$@"
rc=$?
rmdir "$cg" 2>/dev/null || true
exit $rc
