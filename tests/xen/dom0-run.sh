#!/bin/sh
# shellcheck shell=dash
# Runs inside the test dom0 (called by dom0-init.sh): every scenario listed in
# /host/scenarios.list, each with a time limit, recording "PASS name" or "FAIL name: why"
# in /host/out/results. Scenario output goes to /host/out/<name>.log.
cd /host/scenarios || exit 1
# shellcheck disable=SC1091 # the scenarios' lib.sh, beside this script in dom0
. ./lib.sh # dd_dump
: >/host/out/results
# The whole tier has a deadline on the host's clock (run.sh writes it, and keeps
# /host/host-clock current): a scenario gets at most what is left of it, so one that
# hangs cannot use up the outer QEMU timeout and hide every result. The host's clock,
# not dom0's: under a slow emulator dom0's clock has been seen to fall far behind the
# host's, and a budget counted on it outlived QEMU's limit (run.sh, limits).
host_now() {
    local t
    t=$(cat /host/host-clock 2>/dev/null)
    case "$t" in '' | *[!0-9]*) date +%s ;; *) echo "$t" ;; esac
}
tier_start=$(date +%s)
host_start=$(host_now)
deadline=$(cat /host/host-deadline 2>/dev/null || echo $((host_start + 1300)))
# clocks: how far each clock got since dom0-run started (both in the log, for run.sh).
clocks() { echo "dom0 clock $(($(date +%s) - tier_start)) s, host clock $(($(host_now) - host_start)) s"; }
# stop_at PID: stop PID (a `timeout` running a scenario: it passes the signal on to the
# scenario's processes) when the host's clock reaches the deadline; /tmp/deadline-hit
# tells the caller why it ended. Every 5 s (a look is a 9p round trip: rare enough not
# to weigh on a benchmark).
stop_at() {
    while kill -0 "$1" 2>/dev/null; do
        if [ "$(host_now)" -ge "$deadline" ]; then
            : >/tmp/deadline-hit
            kill -TERM "$1" 2>/dev/null
            return
        fi
        sleep 5
    done
}

# How fast this machine runs, measured here before every scenario (a run's speed changes
# as it goes: other load on the host, the emulator's caches): a fixed awk loop on each of
# dom0's two vCPUs at once (the outer QEMU needs a host CPU per vCPU; a host with less
# shows here), timed, against what it took on the development machine. SLOW100 = 100 x
# that ratio, never below 100; the scenario's limit and every wait in lib.sh are
# multiplied by it (docs/testing.md). The median of three runs: one run varies by half
# either way on an idle machine.
CAL_REF_MS=300
calibrate() {
    local t0 t1 ms=""
    spin() { awk 'BEGIN { for (i = 0; i < 200000; i++) s += (i * 7) % 13; print s }' >/dev/null; }
    for _ in 1 2 3; do
        t0=$(date +%s%N)
        spin &
        spin
        wait $!
        t1=$(date +%s%N)
        ms="$ms $(((t1 - t0) / 1000000))"
    done
    # The median of the three ($ms starts with a space: drop it, or its empty word sorts first).
    CAL_MS=$(echo "${ms# }" | tr ' ' '\n' | sort -n | sed -n 2p)
    SLOW100=$((CAL_MS * 100 / CAL_REF_MS))
    [ $SLOW100 -lt 100 ] && SLOW100=100
    export SLOW100
    CAL="calibration: dom0 loop ${CAL_MS} ms (runs:$ms), ${CAL_REF_MS} ms on the development machine: limits x$((SLOW100 / 100)).$(printf %02d $((SLOW100 % 100)))"
}

# Leave nothing behind for the next scenario (or the next attempt): guests first, then
# the driver domain the way an operator stops it (xl shutdown: it resets its devices),
# destroyed only if that does not finish. A destroy leaves the passed-through NIC running
# and unmasked, which the next instance then has to silence first (QEMU 7.2's e1000e
# aborts the whole VM on an interrupt-mode switch inside a throttle interval).
# clean_up keep: the same, but a driver domain offered to the next scenario (offer_dd in
# lib.sh) stays.
clean_up() {
    # A driver domain Xen stopped (a triple fault, a crash: read by now) goes first: the
    # guests' destroys would otherwise wait out libxl's timeout on each of their devices
    # for a backend that cannot answer (85 s per failed hostile attempt).
    if xl list bulkhead >/dev/null 2>&1 && ! dd_running; then
        timeout "$(scaled 60)" xl destroy bulkhead 2>/dev/null
    fi
    for d in $(xl list | awk 'NR>2 && $1 != "bulkhead" {print $1}'); do timeout "$(scaled 60)" xl destroy "$d" 2>/dev/null; done
    if [ "${1:-}" != keep ] || [ ! -s /tmp/dd-offer ] || [ "$(cat /tmp/dd-offer)" != "$(xl domid bulkhead 2>/dev/null)" ]; then
        rm -f /tmp/dd-offer
        if dd_running; then
            timeout "$(scaled 30)" xl shutdown -w bulkhead >/dev/null 2>&1
        fi
        for d in $(xl list | awk 'NR>2 {print $1}'); do timeout "$(scaled 60)" xl destroy "$d" 2>/dev/null; done
    fi
    # dom0's NIC on the test network keeps no address a scenario gave it (guests get
    # their leases on that network and must not find dom0 answering for them).
    nic=$(dom0_test_nic) && ip addr flush dev "$nic" scope global 2>/dev/null
}

# attempt NAME: run it once within what is left of the budget; sets rc, secs, limit.
# NAME@K runs NAME.sh with BENCH_RUN=K (the benchmark's runs; its log is NAME@K.log).
attempt() {
    local script=${1%@*}
    # Past the deadline: not started, and no clean-up for it either (it runs on dom0's
    # clock; the host's time left is for reporting).
    if [ $((deadline - $(host_now))) -lt 60 ]; then
        rc=125
        secs=0
        return
    fi
    export BENCH_RUN=1
    case "$1" in *@*) BENCH_RUN=${1#*@} ;; esac
    # Only a scenario that asks for the shared driver domain finds one running.
    grep -q "^start_shared_dd" "./$script.sh" || clean_up
    calibrate
    echo "dom0-run: $1: $CAL" | tee -a /host/out/calibration
    start=$(date +%s)
    # A scenario may ask for more time on its first line ("# timeout: SECONDS").
    written=$(sed -n '1s/^# timeout: \([0-9]*\)$/\1/p' "./$script.sh")
    written=${written:-${SCENARIO_TIMEOUT:-420}}
    limit=$(scaled "$written")
    left=$((deadline - $(host_now)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 60 ]; then
        rc=125
        secs=0
        return
    fi
    # The scenario's timeline (lib.sh, mark): where its time goes, for every attempt.
    export TIMELINE="/host/out/$1.timeline" SCENARIO_T0=$start
    [ "$ATTEMPT" = 1 ] && : >"$TIMELINE"
    mark "=== attempt $ATTEMPT ($CAL)"
    # Xen's console ring starts empty, so a triple fault found later is this attempt's.
    xl dmesg -c >/dev/null 2>&1
    echo "(not started)" >/tmp/scenario-step
    echo "dom0-run: $CAL; this scenario's limit ${limit} s ($(clocks))" >"/host/out/$1.log"
    rm -f /tmp/deadline-hit
    timeout "$limit" sh "./$script.sh" >>"/host/out/$1.log" 2>&1 &
    pid=$!
    stop_at $pid &
    watcher=$!
    wait $pid
    rc=$?
    kill $watcher 2>/dev/null
    wait $watcher 2>/dev/null
    # (A scenario that ended well as the deadline came keeps its result.)
    [ $rc -ne 0 ] && [ -e /tmp/deadline-hit ] && rc=126
    secs=$(($(date +%s) - start))
    # A scenario that passed its driver domain on (offer_dd) must leave it running: one
    # that stopped as the scenario ended (a crash, a triple fault) fails the scenario,
    # with the post-mortem below, rather than vanish in the next clean-up.
    if [ $rc -eq 0 ] && [ -s /tmp/dd-offer ] && [ "$(cat /tmp/dd-offer)" = "$(xl domid bulkhead 2>/dev/null)" ] \
        && ! dd_running; then
        echo "FAIL: the driver domain it passes on stopped: $(xl list bulkhead 2>/dev/null | tail -1)" >>"/host/out/$1.log"
        rc=1
    fi
    # A failed (or timed-out) scenario's driver domain logs its state before it goes.
    # Into the scenario's log: the state dump and where its CPU is (dd_dump).
    # shellcheck disable=SC2034 # dd_dump (lib.sh) reads DD_ID
    if [ $rc -ne 0 ] && [ $rc -ne 126 ] && DD_ID=$(xl domid bulkhead 2>/dev/null); then
        dd_dump >>"/host/out/$1.log" 2>&1
    fi
    # Keep this scenario's domain consoles (the next scenario reuses the names).
    mkdir -p "/host/out/$1.console" && cp /host/out/console/*.log "/host/out/$1.console/" 2>/dev/null
    t=$(date +%s)
    # After the run's last scenario, if it passed, dom0 powers off: nothing needs a clean
    # slate (a passed-through driver domain's destroy alone takes 10 s and more).
    # Nor after one stopped at the deadline: what is left of the host's time is for
    # reporting and powering off (its dump and clean-up run on dom0's clock, which is
    # the one that cannot be trusted then).
    if [ $rc -eq 126 ] || { [ $rc -eq 0 ] && [ "$1" = "$(tail -1 /host/scenarios.list)" ]; }; then
        :
    elif [ $rc -eq 0 ]; then clean_up keep; else clean_up; fi
    t=$(($(date +%s) - t))
    echo "dom0-run: $1: clean-up took $t s"
    mark "=== ended with status $rc; the clean-up after it took $t s"
    unset TIMELINE
}

# shellcheck disable=SC2013 # one scenario name per line, no spaces
for name in $(cat /host/scenarios.list); do
    echo "dom0-run: === $name === (at $(($(date +%s) - tier_start)) s; $(clocks))"
    # Scenarios see which attempt they are (a retry finds what the failed one wrote).
    export ATTEMPT=1
    attempt "$name"
    # HVM domains (Bulkhead and Linux alike) triple-fault now and then under nested TCG,
    # right after a VM exit, in code that runs thousands of times without fault on every
    # other path (docs/testing.md notes the evidence). A failure with such a fault is
    # retried, at most twice, and every retry is reported; any other failure fails at once.
    n=1
    while [ $rc -ne 0 ] && [ $rc -ne 125 ] && [ $rc -ne 126 ] && [ $n -le 2 ] && xl dmesg 2>/dev/null | grep -q "Triple fault"; do
        fault=$(xl dmesg | grep "Triple fault" | head -1)
        cp "/host/out/$name.log" "/host/out/$name.attempt-$n.txt"
        rm -rf "/host/out/$name.attempt-$n.console"
        cp -r "/host/out/$name.console" "/host/out/$name.attempt-$n.console" 2>/dev/null
        echo "dom0-run: $name: attempt $n hit a triple fault under nested TCG, retrying: $fault" | tee -a /host/out/retries
        n=$((n + 1))
        export ATTEMPT=$n
        attempt "$name"
    done
    if [ $rc -eq 0 ]; then
        echo "PASS $name (${secs}s)" | tee -a /host/out/results
    elif [ $rc -eq 125 ]; then
        echo "FAIL $name (0s): not run, the tier's time is used up ($(clocks))" | tee -a /host/out/results
    elif [ $rc -eq 126 ]; then
        echo "FAIL $name (${secs}s): stopped at the tier's deadline ($(clocks)); it got to: $(cat /tmp/scenario-step)" | tee -a /host/out/results
    else
        why=$(grep '^FAIL:' "/host/out/$name.log" | head -1 | cut -c7-)
        [ $rc -eq 124 ] && why="timed out after ${limit} s (${written} s written; $CAL); it got to: $(cat /tmp/scenario-step); ${why}"
        echo "FAIL $name (${secs}s): ${why:-exit status $rc}" | tee -a /host/out/results
    fi
done
echo "dom0-run: clocks: $(clocks)" | tee /host/out/clocks
echo "dom0-run: done"
