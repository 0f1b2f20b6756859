#!/bin/sh
# Runs inside the test dom0 (called by dom0-init.sh): every scenario listed in
# /host/scenarios.list, each with a time limit, recording "PASS name" or "FAIL name: why"
# in /host/out/results. Scenario output goes to /host/out/<name>.log.
cd /host/scenarios || exit 1
: >/host/out/results
# The whole tier has a time budget (run.sh writes it): a scenario gets at most what is left
# of it, so one that hangs cannot use up the outer QEMU timeout and hide every result.
budget=$(cat /host/budget 2>/dev/null || echo 1300)
tier_start=$(date +%s)
for name in $(cat /host/scenarios.list); do
    echo "dom0-run: === $name ==="
    start=$(date +%s)
    limit=${SCENARIO_TIMEOUT:-420}
    left=$(( budget - (start - tier_start) ))
    [ $left -lt $limit ] && limit=$left
    if [ $limit -lt 60 ]; then
        echo "FAIL $name (0s): not run, the tier's ${budget}s budget is used up" | tee -a /host/out/results
        continue
    fi
    timeout "$limit" sh "./$name.sh" >"/host/out/$name.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
        echo "PASS $name (${secs}s)" | tee -a /host/out/results
    else
        why=$(grep '^FAIL:' "/host/out/$name.log" | head -1 | cut -c7-)
        [ $rc -eq 124 ] && why="timed out after ${limit}s; ${why}"
        echo "FAIL $name (${secs}s): ${why:-exit status $rc}" | tee -a /host/out/results
    fi
    # Keep this scenario's domain consoles (the next scenario reuses the names).
    mkdir -p "/host/out/$name.console" && cp /host/out/console/*.log "/host/out/$name.console/" 2>/dev/null
    # Leave nothing behind for the next scenario.
    for d in $(xl list | awk 'NR>2 {print $1}'); do timeout 60 xl destroy "$d" 2>/dev/null; done
done
echo "dom0-run: done"
