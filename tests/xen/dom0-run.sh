#!/bin/sh
# Runs inside the test dom0 (called by dom0-init.sh): every scenario listed in
# /host/scenarios.list, each with a time limit, recording "PASS name" or "FAIL name: why"
# in /host/out/results. Scenario output goes to /host/out/<name>.log.
cd /host/scenarios || exit 1
: >/host/out/results
for name in $(cat /host/scenarios.list); do
    echo "dom0-run: === $name ==="
    start=$(date +%s)
    timeout "${SCENARIO_TIMEOUT:-420}" sh "./$name.sh" >"/host/out/$name.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
        echo "PASS $name (${secs}s)" | tee -a /host/out/results
    else
        why=$(grep '^FAIL:' "/host/out/$name.log" | head -1 | cut -c7-)
        [ $rc -eq 124 ] && why="timed out after ${SCENARIO_TIMEOUT:-420}s; ${why}"
        echo "FAIL $name (${secs}s): ${why:-exit status $rc}" | tee -a /host/out/results
    fi
    # Keep this scenario's domain consoles (the next scenario reuses the names).
    mkdir -p "/host/out/$name.console" && cp /host/out/console/*.log "/host/out/$name.console/" 2>/dev/null
    # Leave nothing behind for the next scenario.
    for d in $(xl list | awk 'NR>2 {print $1}'); do xl destroy "$d" 2>/dev/null; done
done
echo "dom0-run: done"
