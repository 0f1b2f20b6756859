# shellcheck shell=dash
# Helpers for the scenarios (run by dash, Debian's /bin/sh, in the test dom0: POSIX sh
# with `local`).
CONSOLE=/host/out/console
XLCFG=/host/xl-configs
# The shipped image (for run.sh --ab's bench-base.sh, the one compared with it), and the
# test image: the same kernel with its test hooks (the options in
# bulkhead_config::TEST_OPTIONS, which the shipped one refuses).
IMAGE=/host/${AB_SIDE:-bulkhead}.elf
TEST_IMAGE=/host/bulkhead-test.elf
# image_for CMDLINE: the image a driver domain with CMDLINE runs: the test image when it
# asks for a test hook, else the shipped one.
image_for() {
    case " $1 " in
    *" test-"* | *" selftest "* | *" selftest="* | *" calibrate "*) echo "$TEST_IMAGE" ;;
    *) echo "$IMAGE" ;;
    esac
}
# dd_uses IMAGE: the driver domain about to start runs IMAGE; its symbols (dd_map) and
# flight recorder's address follow.
dd_uses() { basename "$1" .elf >/tmp/dd-image; }
dd_map() { echo "/host/$(cat /tmp/dd-image 2>/dev/null || echo bulkhead).map"; }
# xen_tool NAME: the path of a Xen tool that is not on PATH (Debian keeps them in the
# versioned /usr/lib/xen-X.Y/bin).
xen_tool() {
    # shellcheck disable=SC2012 # the first match of a glob of plain names
    ls -d /usr/lib/xen-*/bin/"$1" 2>/dev/null | head -1 | grep . || echo "$1"
}
# linux_file NAME: the path of the guests' /host/linux/NAME (run.sh: Debian's kernel as the ELF
# image inside its bzImage, the initramfs images) copied once per boot to dom0's tmpfs. libxl's
# domain builder reads a PV kernel and ramdisk in small pieces, and over 9p (no page cache)
# each piece is a round trip through the nested QEMU: `xl create` of a Linux guest took
# 8-10 s from /host, 1-1.5 s from tmpfs. If the copy fails (tmpfs full), the /host path.
linux_file() {
    if [ -f "/tmp/linux/$1" ] || { mkdir -p /tmp/linux && cp "/host/linux/$1" "/tmp/linux/$1.part" \
        && mv "/tmp/linux/$1.part" "/tmp/linux/$1"; }; then
        echo "/tmp/linux/$1"
    else
        rm -f "/tmp/linux/$1.part"
        echo "/host/linux/$1"
    fi
}

# Give consoles a moment to drain before dom0-run destroys the domains.
fail() {
    echo "FAIL: $*"
    xl list 2>/dev/null
    xl dmesg 2>/dev/null | grep -iE "triple fault|crash" | tail -5
    sleep 5
    exit 1
}
note() {
    echo "--- $*"
    step "$*"
    mark "--- $*"
}

# step TEXT: how far the scenario got, for dom0-run's report if it runs out of time.
step() { echo "$*" >/tmp/scenario-step; }

# mark TEXT: a line of this scenario's timeline (/host/out/NAME.timeline, dom0-run sets
# TIMELINE and SCENARIO_T0): seconds since the scenario started, then TEXT. Notes, waits
# and xl commands that took 2 s or more go there, so a slow run shows where its time went.
mark() {
    [ -n "${TIMELINE:-}" ] && printf '%5d s  %s\n' $(($(date +%s) - ${SCENARIO_T0:-0})) "$*" >>"$TIMELINE"
    return 0
}
# took SINCE WHAT: mark "WHAT took N s" if N >= 2.
took() {
    local n=$(($(date +%s) - $1))
    [ $n -ge 2 ] && mark "$2 took $n s"
    return 0
}
# xl as the scenarios call it, timed (create, destroy, attach and detach take seconds).
xl() {
    local t rc
    t=$(date +%s)
    command xl "$@"
    rc=$?
    took "$t" "xl $*"
    return $rc
}

# scaled SECONDS: a time limit written for the development machine, stretched by this
# run's calibration (dom0-run.sh measures SLOW100 = 100 x how much slower this machine is,
# at least 100, before every scenario). Every wait below goes through it.
scaled() { echo $(($1 * ${SLOW100:-100} / 100)); }

# poll SECONDS CMD...: run CMD every half second (POLL_S seconds when set: the
# benchmark's start-up figures look every 0.1 s) until it succeeds; status 1 if it has
# not within SECONDS (scaled). Wall-clock seconds, as in wait_for. poll_live's loop
# with no driver domain to watch (its DD_ID empty here only: `local` scopes it).
poll() {
    local DD_ID=
    poll_live "$@"
}

# poll_live SECONDS CMD...: poll, but give up as soon as this scenario's driver domain is
# gone (a wait for its answer cannot succeed then; a triple-faulted attempt would
# otherwise wait out the whole limit before its retry).
poll_live() {
    local n=0 t0 end
    t0=$(date +%s)
    end=$((t0 + $(scaled "$1")))
    shift
    until "$@"; do
        n=$((n + 1))
        [ "$(date +%s)" -gt $end ] && { took "$t0" "(gave up) wait for $*"; return 1; }
        if [ $((n % 10)) -eq 0 ] && dd_gone; then
            # A driver domain that powered off on its own (a self-test's end) may have its
            # last console lines still on their way through xenconsoled: seen on a fast
            # machine, where hvm-nvme's whole run (firmware, test, power-off) took less
            # than the first 10 s of this wait and its log had none of it by then. Up to
            # 10 s more (marked in the timeline when it was needed).
            local late=0
            while [ $late -lt 10 ]; do
                sleep 1
                late=$((late + 1))
                if "$@"; then
                    took "$t0" "(driver domain gone, its output came $late s after) wait for $*"
                    mark "the driver domain's output came $late s after it was gone"
                    return 0
                fi
            done
            echo "--- the driver domain (id $DD_ID) is gone"
            took "$t0" "(driver domain gone) wait for $*"
            return 1
        fi
        sleep "${POLL_S:-0.5}"
    done
    took "$t0" "wait for $*"
}

# Options every test driver domain gets on top of the shipped config. tsc_mode: under
# nested TCG, HVM guests whose RDTSC Xen emulates triple-fault now and then right after
# an RDTSC exit (seen in Bulkhead and in Linux PVH guests alike); native TSC avoids the
# exit. on_reboot: a driver domain that resets must fail the test at once, not come back
# under a new domain id that the scenario does not follow; it is kept (not running) so
# dd_postmortem can read its flight recorder.
# The quotes are xl's own syntax: each word reaches xl with them.
# shellcheck disable=SC2089
HVM_TEST_OPTS='tsc_mode="native" on_reboot="preserve"'
# The driver domain's id once started (start_hvm_dd): waits give up when it is gone.
DD_ID=

no_domain() { ! xl domid "$1" >/dev/null 2>&1; }

# xs_is PATH VALUE: the xenstore node holds VALUE.
xs_is() { [ "$(xenstore-read "$1" 2>/dev/null)" = "$2" ]; }


# crashed NAME: xl shows the domain crashed.
crashed() { xl list "$1" 2>/dev/null | awk 'NR == 2 { exit !($5 ~ /c/) }'; }

# dd_running: xl shows the domain `bulkhead` running, blocked or runnable (not shut down
# or crashed); also true when there is no such domain (callers check that first).
dd_running() { xl list bulkhead 2>/dev/null | awk 'NR == 2 { exit !($5 ~ /^[-rb]+$/) }'; }

# dd_gone: the driver domain started by this scenario is no longer running (destroyed,
# or shut down and kept: a triple fault under on_reboot="preserve", a crash).
dd_gone() {
    [ -n "$DD_ID" ] || return 1
    [ "$(xl domid bulkhead 2>/dev/null)" != "$DD_ID" ] && return 0
    ! dd_running
}

# dd_ready SECONDS: the shared driver domain (NVMe and e1000e, started by this scenario,
# $log its console) found the guests' partitions, brought up its NIC and watches its
# backend directories: it can serve.
dd_ready() {
    expect_event "$log" "$1" "Bulkhead did not find the guest partitions" partition part=nvme0n1p5 label=epsilon
    expect_event "$log" 60 "Bulkhead did not bring up the e1000e" nic-up dev=net0 driver=e1000e
    expect_event "$log" 60 "xenbus watcher not started" backend-watch "home=/local/domain/$DD_ID"
}

# wait_for FILE PATTERN SECONDS: until a line of FILE matches PATTERN (grep -E), at most
# SECONDS (scaled), giving up when the driver domain is gone (poll_live); prints the line.
wait_for() {
    poll_live "$3" grep -qsE "$2" "$1" || return 1
    grep -E "$2" "$1" | head -1
}

# expect FILE PATTERN SECONDS WHAT: wait_for or fail with WHAT and the file's tail.
expect() {
    step "waiting up to $(scaled "$3") s for: $4 (not yet)"
    if ! wait_for "$1" "$2" "$3"; then
        echo "--- last lines of $1:"; tail -20 "$1" 2>/dev/null
        fail "$4"
    fi
}

# Structured lines (fields.awk): the kernel's `event: name=... key=value` lines and the
# `result: name=... pass=1|0` lines of tests and guests. The scenarios read these, never
# log sentences, so a reworded message cannot break or fake a check. Each SPEC is
# key=value (equal), key~ERE (matches) or key (present); names and keys are listed in
# docs/operating.md.
FIELDS_AWK=${FIELDS_AWK:-./fields.awk}
# events FILE NAME [SPEC...]: print FILE's event lines NAME that meet every SPEC; status
# 1 if none does. results: the same for result lines.
# A NAME starting with ~ is an ERE (~victim$: victim and linux-victim).
events() { tagged "event: " "$@"; }
results() { tagged "result: " "$@"; }
tagged() {
    local tag=$1 f=$2 n=$3
    shift 3
    case $n in "~"*) n="name$n" ;; *) n="name=$n" ;; esac
    awk -v tag="$tag" -v want="$n $*" -f "$FIELDS_AWK" "$f" 2>/dev/null
}
# field KEY: KEY's value in the structured line on stdin (the first that has a name).
# field_each KEY: its value in every such line.
field() { field_each "$1" | head -1; }
field_each() { awk -v get="$1" -f "$FIELDS_AWK"; }
# count_events FILE NAME [SPEC...]: how many event lines match.
count_events() { events "$@" | wc -l; }
# at_least_events N FILE NAME [SPEC...]: at least N event lines match.
at_least_events() {
    local n=$1
    shift
    [ "$(count_events "$@")" -ge "$n" ]
}
# expect_event FILE SECONDS WHAT NAME [SPEC...]: wait (poll_live, SECONDS scaled) for
# such an event line and print the first, or fail with WHAT and the file's tail.
# expect_result: the same for a result line.
expect_event() { expect_tagged events "$@"; }
expect_result() { expect_tagged results "$@"; }
expect_tagged() {
    local how=$1 f=$2 s=$3 what=$4
    shift 4
    step "waiting up to $(scaled "$s") s for: $what (not yet)"
    if ! poll_live "$s" quietly "$how" "$f" "$@"; then
        echo "--- last lines of $f:"
        tail -20 "$f" 2>/dev/null
        fail "$what"
    fi
    "$how" "$f" "$@" | head -1
}
quietly() { "$@" >/dev/null; }
# reached FILE NAME STEP: FILE has NAME's result line step=STEP, or its verdict pass=0
# (a guest that failed on the way: the caller shows why).
reached() { results "$1" "$2" "step=$3" >/dev/null || results "$1" "$2" pass=0 >/dev/null; }

# no_errors FILE: fail if Bulkhead logged an error (the log line's level) or panicked
# (the panic line, or its `panic` event). no_panic: only the latter.
no_errors() {
    grep -aE "\] ERROR " "$1" && fail "errors on the console"
    no_panic "$1"
}
no_panic() {
    { grep -a "PANIC" "$1" || events "$1" panic; } && fail "Bulkhead panicked"
    return 0
}

# no_failed_results FILE TEST: fail if any structured result line of FILE (`result:
# name=... pass=0`, printed by the kernel's tests) says it failed; they are shown.
no_failed_results() {
    awk -v tag="result: " -v want="pass=0" -f "$FIELDS_AWK" "$1" && fail "a $2 result failed (above)"
    return 0
}

# The driver domain's console log (xenconsoled, PV console ring).
console_of() { echo "$CONSOLE/guest-$1.log"; }

# state_dump SECONDS: ask the driver domain ($DD_ID) for a state dump (control/dump)
# and wait until its console has the dump's event line (`dump`, with the resources in
# use); status 1 if none came within SECONDS (scaled).
state_dump() {
    local log n lines
    log=$(console_of bulkhead)
    n=$(count_events "$log" dump)
    lines=$(wc -l <"$log" 2>/dev/null || echo 0)
    xenstore-write "/local/domain/$DD_ID/control/dump" 1 || return 1
    poll_live "$1" at_least_events $((n + 1)) "$log" dump && return 0
    # A dump is a burst of long lines; when xenconsoled drains the console ring slower,
    # Bulkhead drops what does not fit and says so on a line of its own. If that cut
    # the answer's event line, ask once more (the cause is on the console, not lost).
    tail -n +$((lines + 1)) "$log" | grep -q "bytes lost: xenconsoled fell behind" || return 1
    echo "state dump: its answer was cut by a full console ring (marker in the log); asking again"
    n=$(count_events "$log" dump)
    xenstore-write "/local/domain/$DD_ID/control/dump" 1 || return 1
    poll_live "$1" at_least_events $((n + 1)) "$log" dump
}

# dd_dump: ask the driver domain for a state dump (control/dump) and print it: the switch,
# the status lines, every backend queue's rings and event channels. For failure paths.
dd_dump() {
    [ -n "$DD_ID" ] || return 0
    dd_postmortem && return 0
    local before
    before=$(wc -l <"$(console_of bulkhead)" 2>/dev/null)
    # Its lines come as the console ring has room, the event line last.
    state_dump 15 || true
    echo "--- driver domain state:"
    tail -n +$((${before:-0} + 1)) "$(console_of bulkhead)" >/tmp/dump-answer
    grep "dump: \|: state: " /tmp/dump-answer
    if ! events /tmp/dump-answer dump; then
        # It did not answer: what it did last, from its flight recorder (a halt that no
        # interrupt ended shows as a last event `halt`, with the timer it armed before).
        echo "--- no answer to the dump request; its flight recorder:"
        show_recorder "$DD_ID" 24
    fi
    dd_samples
}

# read_recorder DOMID: the page of the driver domain's flight recorder (kernel/src/machine/trace.rs)
# on standard output; run.sh wrote the recorder's address (identity-mapped: its frame).
read_recorder() { /host/dd-peek "$1" $((0x$(cat "/host/$(cat /tmp/dd-image 2>/dev/null || echo bulkhead).recorder") >> 12)); }

# show_recorder DOMID LINES [dump-core]: the last LINES events of its flight recorder,
# decoded; with dump-core, a whole `xl dump-core` when dd-peek cannot read the page.
show_recorder() {
    if read_recorder "$1" >/tmp/dd.recorder \
        || { [ "${3:-}" = dump-core ] && xl dump-core "$1" /tmp/dd.recorder >/dev/null 2>&1; }; then
        python3 /host/trace.py /tmp/dd.recorder "$(dd_map)" | tail -"$2"
    else
        echo "--- the driver domain's memory could not be read (dd-peek${3:+, xl dump-core})"
    fi
    rm -f /tmp/dd.recorder
}

# dd_postmortem: a driver domain that Xen stopped behind its back (a triple fault is a
# "reboot" to Xen; on_reboot="preserve" keeps the domain) could not log why. Its flight
# recorder (kernel/src/machine/trace.rs) says what it did last: its one page is read with dd-peek
# (a whole `xl dump-core` is the fallback: it took minutes under nested TCG). Once per
# domain: a failing scenario and dom0-run both ask. Status 1 if the driver domain is not
# in that state.
dd_postmortem() {
    xl list bulkhead 2>/dev/null | awk 'NR == 2 { exit !($5 ~ /s/ && $5 !~ /c/) }' || return 1
    local id
    id=$(xl domid bulkhead)
    if [ -e "/tmp/postmortem-$id" ]; then
        echo "--- the driver domain (id $id) was shut down by Xen: its post-mortem is above"
        return 0
    fi
    echo "--- the driver domain (id $id) was shut down by Xen: $(xl dmesg | grep -E "d${id}v[0-9]+ Triple fault" | tail -1)"
    xl dmesg | grep -A30 -E "d${id}v[0-9]+ Triple fault" | head -40
    show_recorder "$id" 48 dump-core
    dd_samples
    # Marked done only now: one cut short (the scenario's time ran out) is taken again.
    : >"/tmp/postmortem-$id"
    return 0
}

# dd_samples: where the driver domain's CPU is, three times a second apart (xenctx reads
# the registers and the stack from outside, so this works even when the driver domain
# no longer answers the dump request).
dd_samples() {
    [ -n "$DD_ID" ] || return 0
    local i
    for i in 1 2 3; do
        echo "--- driver domain CPU, sample $i:"
        "$(xen_tool xenctx)" -s "$(dd_map)" -S "$DD_ID" 0 2>&1 | head -40
        sleep 1
    done
}

# idle_guest_cfg FILE NAME: a PVH guest (a second Bulkhead that idles, no blkfront) whose
# disk names the `bulkhead` driver domain as its backend.
idle_guest_cfg() {
    cat >"$1" <<CFG
name = "$2"
type = "pvh"
kernel = "$IMAGE"
cmdline = "heartbeat=60"
memory = 32
disk = [ 'vdev=xvda,format=raw,access=rw,backend=bulkhead,target=nvme0n1p1' ]
CFG
}

# dd_install CMDLINE: the image for CMDLINE (image_for) where xl-configs/driverdomain.cfg
# finds it (the README's one dom0 step besides binding the devices to pciback).
dd_install() {
    local img
    img=$(image_for "$1")
    mkdir -p /usr/lib/bulkhead
    cmp -s "$img" /usr/lib/bulkhead/bulkhead.elf || cp "$img" /usr/lib/bulkhead/bulkhead.elf \
        || fail "cannot install the image in /usr/lib/bulkhead"
    dd_uses "$img"
}

# fw_cfg_opt CMDLINE: the xl option that hands CMDLINE to a driverdomain.cfg instance
# (through QEMU's fw_cfg: a comma is written twice in QEMU's option syntax, a quote or
# backslash escaped for xl's string). QEMU refuses an empty string: an empty CMDLINE
# gives the shipped config's own options.
fw_cfg_opt() {
    printf 'device_model_args_hvm=[ "-fw_cfg", "name=opt/bulkhead/cmdline,string=%s" ]' \
        "$(printf '%s' "${1:-loglevel=info}" | sed -e 's/,/,,/g' -e 's/[\\"]/\\&/g')"
}

# start_hvm_dd "BDF..." CMDLINE [XL-OPTIONS]: Bulkhead as the HVM driver domain
# (xl-configs/driverdomain.cfg as shipped: no firmware, dom0 prepared as README says)
# owning BDF, bound to pciback first, with CMDLINE and XL-OPTIONS (key=value, as xl
# create takes them); $log is its console, $DD_COM1 its emulated COM1 (the boot log's
# first lines); DD_T0 (ns) is when its xl create started, DD_CREATED_MS how long that took.
start_hvm_dd() {
    dd_install "$2"
    log=$(console_of bulkhead)
    DD_COM1=/host/out/console/bulkhead-com1.log
    rm -f "$log" "$DD_COM1"
    modprobe xen-pciback 2>/dev/null
    # A driver domain that just shut down lingers while the toolstack tears it down (its
    # PCI devices wait for the device model): the name is free, and the devices back on
    # the assignable list, once it is gone.
    poll 90 no_domain bulkhead || fail "the previous driver domain is still there after $(scaled 90) s"
    dd_devices "$1"
    DD_T0=$(date +%s%N)
    # shellcheck disable=SC2086,SC2090 # one xl option per word, quotes and all
    xl create "$XLCFG/driverdomain.cfg" "pci=[ $DD_PCI ]" "$(fw_cfg_opt "$2")" "serial=\"file:$DD_COM1\"" $HVM_TEST_OPTS ${3:-} \
        || fail "xl create of the driver domain failed"
    DD_CREATED_MS=$(( ($(date +%s%N) - DD_T0) / 1000000 ))
    DD_ID=$(xl domid bulkhead)
}

# dd_devices "BDF...": bind each to pciback (if not yet) and set DD_PCI to the list for
# an xl `pci=[ ... ]`.
dd_devices() {
    local bdf
    DD_PCI=""
    for bdf in $1; do
        xl pci-assignable-list | grep -q "$bdf" || xl pci-assignable-add "$bdf" || fail "pci-assignable-add $bdf failed"
        DD_PCI="$DD_PCI${DD_PCI:+, }\"$bdf\""
    done
}

# start_multiboot_dd "BDF..." CMDLINE [XL-OPTIONS]: as start_hvm_dd, by the fallback
# (xl-configs/driverdomain-multiboot.cfg: hvmloader, SeaBIOS and QEMU's multiboot option
# ROM, dom0 prepared as that config says); its COM1 is $DD_COM1.
start_multiboot_dd() {
    case " $1 " in *" $NIC_BDF "*) settle_nic ;; esac
    mkdir -p /usr/lib/bulkhead/qemu-roms
    cp /usr/share/qemu/multiboot.bin /usr/lib/bulkhead/qemu-roms/multiboot_dma.bin || fail "no multiboot.bin in dom0"
    dd_install "$2"
    log=$(console_of bulkhead)
    DD_COM1=/host/out/console/bulkhead-multiboot-com1.log
    rm -f "$log" "$DD_COM1"
    modprobe xen-pciback 2>/dev/null
    poll 90 no_domain bulkhead || fail "the previous driver domain is still there after $(scaled 90) s"
    dd_devices "$1"
    DD_T0=$(date +%s%N)
    # shellcheck disable=SC2086,SC2090 # one xl option per word, quotes and all
    xl create "$XLCFG/driverdomain-multiboot.cfg" "pci=[ $DD_PCI ]" "cmdline=\"$2\"" "serial=\"file:$DD_COM1\"" \
        $HVM_TEST_OPTS ${3:-} || fail "xl create driverdomain-multiboot.cfg failed"
    # shellcheck disable=SC2034 # for the caller
    DD_CREATED_MS=$(( ($(date +%s%N) - DD_T0) / 1000000 ))
    DD_ID=$(xl domid bulkhead)
}

# settle_nic: a driver domain that died without running its own stop (a triple fault, xl
# destroy) leaves the e1000e signalling an interrupt nobody clears, and the next instance
# started through firmware (driverdomain-multiboot.cfg) then crawls with the whole nested
# machine: banner after 140-153 s instead of 17 s (docs/triple-fault-2026-12-02.md, "The
# crawl, reproduced"). On real hardware pciback's function-level reset clears the NIC;
# QEMU 7.2's e1000e has none, and dom0 cannot tell such a NIC from a quiet one (after a
# destroy pciback's reset leaves its PCI status without Interrupt Status). So every
# firmware-path start with the NIC comes after a direct-boot instance (which copes:
# Bulkhead silences the NIC in its own bring-up) brought the NIC up and stopped the
# operator's way, which leaves it quiet: 30-35 s, and each such start finds the NIC alike.
settle_nic() {
    note "a direct-boot instance brings up the e1000e and stops, so the firmware-path one finds it quiet"
    start_nic_dd "the instance that quiets the NIC did not bring it up"
    DD_ID=
    timeout "$(scaled 60)" xl shutdown -w bulkhead >/dev/null 2>&1 || fail "the instance that quiets the NIC did not shut down"
}
# start_nic_dd WHAT: a direct-boot Bulkhead (driverdomain.cfg, memory=32) with the NVMe and
# the e1000e, waited for until its NIC is up (fail with WHAT if it does not come up).
start_nic_dd() {
    start_hvm_dd "$SHARED_DEVS" "loglevel=info" "memory=32"
    expect_event "$log" 300 "$1" nic-up >/dev/null
}

# The shared driver domain: the scenarios that test serving (blkback, blkback-cycles,
# netback, netback-cycles), not a driver domain's start or end, share one instance that
# owns the NVMe and the e1000e: one HVM boot (firmware and all) instead of four. The first
# starts it; each passes it on with offer_dd when it has passed; dom0-run.sh shuts it
# down before any other scenario, and after a failure (the next one then starts afresh).
# The passed-through e1000e (the outer QEMU's; dom0 sees it at this address).
NIC_BDF=00:04.0
SHARED_DEVS="00:03.0 $NIC_BDF"
# vif-rx-stall: the hostile scenario's vif without receive buffers loses its carrier in
# 15 s rather than Linux's 60.
SHARED_CMDLINE="mgmt=dhcp vif-rx-stall=15"
# DD_REUSED=1 when start_shared_dd took over a running instance.
DD_REUSED=0
start_shared_dd() {
    local offer
    offer=$(cat /tmp/dd-offer 2>/dev/null)
    rm -f /tmp/dd-offer
    if [ -n "$offer" ] && [ "$offer" = "$(xl domid bulkhead 2>/dev/null)" ]; then
        DD_ID=$offer
        # shellcheck disable=SC2034 # for the caller
        DD_REUSED=1
        log=$(console_of bulkhead)
        note "the shared driver domain (id $DD_ID) from the previous scenario serves this one"
        return 0
    fi
    start_hvm_dd "$SHARED_DEVS" "$SHARED_CMDLINE"
    dd_ready 240
}

# offer_dd: this scenario is done with the shared driver domain; the next may take it.
offer_dd() { echo "$DD_ID" >/tmp/dd-offer; }

# stop_dd: destroy the driver domain on purpose (waits stop watching it).
stop_dd() {
    DD_ID=
    xl destroy bulkhead
}

# blk_guest_cfg NAME TARGET VCPUS [EXTRA]: a Debian PV guest (/tmp/NAME.cfg) running the
# `blk` checks of tests/xen/linux-init.sh on its xvda, served by Bulkhead from TARGET; EXTRA
# goes on its kernel command line. PV: Linux PVH guests triple-fault now and then under
# nested TCG.
blk_guest_cfg() {
    # A retried scenario (dom0-run sets ATTEMPT) finds its partitions as the failed
    # attempt left them: the guest is told, and does not expect an empty disk.
    local reused=
    [ "${ATTEMPT:-1}" -gt 1 ] && reused=" bulkhead.reused"
    cat >"/tmp/$1.cfg" <<CFG
name = "$1"
type = "pv"
kernel = "$(linux_file vmlinux)"
ramdisk = "$(linux_file linux-initrd.img)"
extra = "console=hvc0 rdinit=/bulkhead-linux-init bulkhead.role=blk bulkhead.name=$1 $4$reused"
memory = 256
vcpus = $3
on_crash = "preserve"
disk = [ 'format=raw,vdev=xvda,access=rw,backend=bulkhead,target=$2' ]
CFG
}

# guest_step SECONDS DOMAIN ROLE STEP N WHY: wait (SECONDS, scaled) until the guest
# DOMAIN's console has `result: name=linux-ROLE step=STEP n=N`; else fail with WHY and the
# end of that console.
guest_step() {
    local con
    con=$(console_of "$2")
    poll_live "$1" quietly results "$con" "linux-$3" "step=$4" "n=$5" \
        || fail "$6; its console ends: $(tail -3 "$con")"
}

# same_after_cycles LOG DEV HEAP_SLACK: same_after over the first and the last
# device-released events in LOG whose dev field is DEV (a test as `events` takes).
same_after_cycles() {
    local all
    all=$(events "$1" device-released "$2")
    same_after "$(echo "$all" | head -1)" "$(echo "$all" | tail -1)" "$3"
}

# same_after FIRST LAST HEAP_SLACK: two of Bulkhead's event lines with map_slots,
# persistent_slots, ports and heap_b (a device's `device-released`, or a state dump's
# `dump`; say after the first and the last cycle): ring mappings and event channels must
# be equal, the heap may grow by less than HEAP_SLACK bytes (allocator blocks, xenstore
# buffers; a leak of per-device state would be kilobytes per cycle).
same_after() {
    note "first: $(echo "$1" | sed 's/.*name=[a-z-]* //')"
    note "last:  $(echo "$2" | sed 's/.*name=[a-z-]* //')"
    local a b
    # Ring mappings (in use, less the persistent grants other devices keep while they
    # work) and event channels must be equal.
    a=$(($(echo "$1" | field map_slots) - $(echo "$1" | field persistent_slots)))
    b=$(($(echo "$2" | field map_slots) - $(echo "$2" | field persistent_slots)))
    [ "$a" = "$b" ] || fail "ring mappings grew over the cycles: $a -> $b"
    a=$(echo "$1" | field ports)
    b=$(echo "$2" | field ports)
    [ "$a" = "$b" ] || fail "ports open grew over the cycles: $a -> $b"
    a=$(echo "$1" | field heap_b)
    b=$(echo "$2" | field heap_b)
    [ $((b - a)) -lt "$3" ] || fail "heap grew over the cycles: $a -> $b B"
}

# all_released KIND BACKEND-PATTERN: after the guests went, every KIND device (vbd, vif)
# Bulkhead took on was released (within 60 s, scaled), the last release left no grant
# mapped, and no backend directory of KIND matching BACKEND-PATTERN (grep) is left.
all_released() {
    poll_live 60 released_every "$1" \
        || fail "Bulkhead did not release every $1: $(devices_of "$1" device-new | tr '\n' ' ')/ $(devices_of "$1" device-released | tr '\n' ' ')"
    events "$log" device-released | tail -1 | field map_slots | grep -qx 0 \
        || fail "grant mappings left behind: $(events "$log" device-released | tail -1)"
    xenstore-ls "/local/domain/$DD_ID/backend/$1" 2>/dev/null | grep -q "$2" && fail "backend directories left behind"
    return 0
}
devices_of() { events "$log" "$2" "dev~^$1-" | field_each dev | sort -u; }
released_every() { [ "$(devices_of "$1" device-new)" = "$(devices_of "$1" device-released)" ]; }

# dom0_test_nic: the name of dom0's NIC on the outer test network (tests/xen/run.sh gives
# it MAC 52:54:00:00:d0:00).
dom0_test_nic() {
    modprobe virtio_net 2>/dev/null
    local i=0
    while [ $i -lt 20 ]; do
        for n in /sys/class/net/*; do
            [ "$(cat "$n/address" 2>/dev/null)" = "52:54:00:00:d0:00" ] && { basename "$n"; return 0; }
        done
        i=$((i + 1))
        sleep 0.5
    done
    return 1
}

# net_guest_cfg NAME MAC PART VCPUS [EXTRA]: a Debian PV guest (/tmp/NAME.cfg) with one vif
# served by Bulkhead, running the `net` role of tests/xen/linux-init.sh as PART (recv or
# send); EXTRA goes on its kernel command line.
net_guest_cfg() {
    cat >"/tmp/$1.cfg" <<CFG
name = "$1"
type = "pv"
kernel = "$(linux_file vmlinux)"
ramdisk = "$(linux_file linux-initrd.img)"
extra = "console=hvc0 rdinit=/bulkhead-linux-init bulkhead.role=net bulkhead.name=$1 bulkhead.net=$3 $5"
memory = 320
vcpus = $4
on_crash = "preserve"
vif = [ 'backend=bulkhead,mac=$2' ]
CFG
}

dom0_healthy() {
    xl list >/dev/null 2>&1 || fail "xl list fails in dom0"
    xenstore-read /local/domain/0/name >/dev/null 2>&1 || fail "xenstore unusable in dom0"
    { echo ok >/tmp/dom0-write-test && rm /tmp/dom0-write-test; } || fail "dom0 cannot write files"
}

# start_linux_dd [PCI] [EXTRA] [RAMDISK]: the Linux driver domain Bulkhead is compared with
# (PV, Debian kernel, xen-pcifront + nvme + xen-blkback + `xl devd`), owning the NVMe
# (00:03.0) or the PCI devices PCI lists, with EXTRA on its kernel command line and the
# guests' ramdisk RAMDISK (linux-initrd.img); waits until it serves. Sets LDD_ID, LDD_T0
# (ns, before its xl create), LDD_CREATED_MS (until xl create returned), LDD_FIRST_MS
# (from LDD_T0 to its first console output),
# LDD_READY_MS (to its `ready`) and dlog (its console).
start_linux_dd() {
    local pcis=${1:-00:03.0} pci="" bdf
    dlog=$(console_of linux-dd)
    rm -f "$dlog"
    modprobe xen-pciback 2>/dev/null
    poll 90 no_domain linux-dd || fail "the previous Linux driver domain is still there after $(scaled 90) s"
    for bdf in $pcis; do
        xl pci-assignable-list | grep -q "$bdf" || xl pci-assignable-add "$bdf" || fail "pci-assignable-add $bdf failed"
        pci="$pci${pci:+, }\"$bdf\""
    done
    cat >/tmp/linux-dd.cfg <<CFG
name = "linux-dd"
type = "pv"
kernel = "$(linux_file vmlinux)"
ramdisk = "$(linux_file "${3:-linux-initrd.img}")"
extra = "console=hvc0 rdinit=/bulkhead-linux-init bulkhead.role=dd iommu=soft quiet ${2:-}"
memory = 512
vcpus = 1
pci = [ $pci ]
driver_domain = 1
CFG
    LDD_T0=$(date +%s%N)
    xl create /tmp/linux-dd.cfg || fail "xl create of the Linux driver domain failed"
    # shellcheck disable=SC2034 # for the caller
    LDD_CREATED_MS=$(( ($(date +%s%N) - LDD_T0) / 1000000 ))
    # shellcheck disable=SC2034 # for the caller
    LDD_ID=$(xl domid linux-dd)
    POLL_S=0.1 poll 240 test -s "$dlog" || fail "the Linux driver domain printed nothing"
    # shellcheck disable=SC2034 # for the caller
    LDD_FIRST_MS=$(( ($(date +%s%N) - LDD_T0) / 1000000 ))
    POLL_S=0.1 expect_result "$dlog" 240 "Linux driver domain did not come up" linux-dd step=ready >/dev/null
    # shellcheck disable=SC2034 # for the caller
    LDD_READY_MS=$(( ($(date +%s%N) - LDD_T0) / 1000000 ))
    grep "linux-dd:" "$dlog"
}
