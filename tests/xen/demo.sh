#!/bin/sh
# shellcheck shell=dash
# `make run`: what dom0 runs instead of the test scenarios (run.sh --demo installs it as
# /host/dom0-run.sh). The demo itself is the Xen tier's `demo` scenario
# (scenarios/demo.sh: Bulkhead owning the NVMe and the e1000e, a guest writing a file
# system through it, a DHCP lease and pings through its switch); then a dom0 shell.
cd /host/scenarios || exit 1
# Waits end when what they wait for happens; their limits only bound how long a failure
# takes to show. Generous ones here (the tier measures the machine first: dom0-run.sh).
SLOW100=300
export SLOW100
# Xen's console ring starts empty, so a triple fault found after the demo is its own.
xl dmesg -c >/dev/null 2>&1
ok=0
sh ./demo.sh && ok=1
# HVM domains triple-fault now and then under nested TCG (QEMU's software CPU running
# Xen running them), at Xen's own code, not the domain's: the emulator's fault, as the
# Xen tier's retries (dom0-run.sh) and docs/triple-fault-2026-12-02.md show. The demo
# says so and runs once more from a clean slate, as the tier does.
fault=$(xl dmesg 2>/dev/null | grep "Triple fault" | head -1)
if [ $ok = 0 ] && [ -n "$fault" ]; then
    printf '\n\033[1m== %s: the emulator'"'"'s nested triple fault (docs/triple-fault-2026-12-02.md), not an error of the domain; the demo once more:\033[0m\n' "$fault"
    for d in $(xl list | awk 'NR > 2 { print $1 }'); do timeout 120 xl destroy "$d" 2>/dev/null; done
    xl dmesg -c >/dev/null 2>&1
    sh ./demo.sh && ok=1
fi
if [ $ok = 1 ]; then
    done="the guest's file system and network went through Bulkhead"
else
    done="the demo FAILED (above); consoles in build/xen-share/out/console"
fi
now=$(date +%s)
t0=$(cat /host/demo.t0 2>/dev/null || echo "$now")
printf '\n\033[1m== %s, %d s after make run started.\033[0m\n' "$done" $((now - t0))
printf '\033[1m== You are in dom0. Try: xl list; xl console demo (the guest'"'"'s shell; Ctrl-] leaves); xl console bulkhead; xl destroy demo. Ctrl-A then X quits.\033[0m\n'
exec setsid -c sh -i </dev/hvc0 >/dev/hvc0 2>&1
