# shellcheck shell=dash
# The benchmark's shared part (`make bench`; never `make test`, never a verdict on speed).
# bench-linux.sh and bench-bulkhead.sh start their side's driver domain on the same
# emulated NVMe and e1000e, then the same two Linux guests (tests/xen/linux-init.sh, role
# bench) run the same workloads through it. Every figure is one line of the scenario's log:
#     bench: side=SIDE run=K metric=NAME value=V      (or error=WHY instead of value=)
# run.sh gathers them; `bulkhead-testrun bench-report` takes medians over the runs, the
# ratios, build/bench/results.json and the chart.
. ./lib.sh
SECS=$(cat /host/bench.secs 2>/dev/null || echo 8)
RUN=${BENCH_RUN:-1}
PARTS=$(cat /host/bench.parts 2>/dev/null || echo "storage network")
PROBE=$(cat /host/bench.probe 2>/dev/null || echo 0)
# The guests: disk partitions delta and epsilon (tests/runner/src/disk.rs), one vif each,
# IPv6 addresses on dom0's outer network; dom0's iperf3 server is the outside.
OUTSIDE=fd00::200

result() { echo "bench: side=$SIDE run=$RUN metric=$1 value=$2"; }
result_error() { echo "bench: side=$SIDE run=$RUN metric=$1 error=$2"; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# send WHO COMMAND...: one command to a domain's benchmark loop (linux-init.sh,
# bench_commands); N is its number.
N=0
send() {
    local who=$1 id
    shift
    N=$((N + 1))
    id=$(xl domid "$who") || fail "no domain $who"
    xenstore-write "/local/domain/$id/data/cmd" "$N $*" || fail "cannot send $who a command"
}
# reply WHO N: waits for the answer to command N, a `result: name=linux-ROLE cmd=N ...`
# line; R is that line.
reply() {
    local f
    f=$(console_of "$1")
    poll_live $((SECS * 3 + 90)) quietly results "$f" "~^linux-" "cmd=$2" \
        || fail "$1 did not answer command $2 ($(grep -a "linux-" "$f" | tail -2 | tr '\n' ' '))"
    R=$(results "$f" "~^linux-" "cmd=$2" | head -1)
}
# ask WHO COMMAND...: send, then reply.
ask() {
    local who=$1
    send "$@"
    reply "$who" "$N"
}
# work WHO COMMAND...: a workload (SECS seconds at least): send, sleep through its
# nominal length, then reply. dom0's polling for the answer is short-lived processes
# (date, awk, sleep, xl) in a PV dom0 under nested TCG, and during a workload they would
# take CPU time from the guests being measured.
# On Bulkhead's sides each workload is a loop window of its own (control/mark): the
# driver domain's console gets a loop-window line per workload with the interrupts,
# halts and hypercalls it cost, counts that do not drift with the machine's speed.
work() {
    local who=$1
    dd_mark "$*"
    send "$@"
    sleep "$SECS"
    reply "$who" "$N"
    dd_mark between
}
# dd_mark TEXT: Bulkhead's (DD_ID's) next loop window, named TEXT as one word.
dd_mark() {
    [ "$DD_NAME" = bulkhead ] && [ -n "${DD_ID:-}" ] || return 0
    xenstore-write "/local/domain/$DD_ID/control/mark" \
        "$(echo "$1" | tr -c 'A-Za-z0-9\n' - | cut -c1-60)" 2>/dev/null || true
}
# key NAME: the value of NAME=... in R (a structured line).
key() { echo "$R" | field "$1"; }
# report METRIC=KEY...: one result line per pair from R, or its error for each.
report() {
    local m
    for m in "$@"; do
        if [ -n "$(key error)" ]; then
            result_error "${m%%=*}" "$(key error)"
        else
            result "${m%%=*}" "$(key "${m#*=}")"
        fi
    done
}

# A domain's vCPU seconds so far (xl list, one decimal); the driver domain's.
vcpu_s() { xl list "$1" | awk 'NR == 2 { print $6 }'; }
dd_cpu() { vcpu_s "$DD_NAME"; }
# cost METRIC CPU0 MIBS: vCPU seconds per GiB moved since CPU0 at MIBS for SECS.
cost() {
    result "$1" "$(awk -v c0="$2" -v c1="$(dd_cpu)" -v m="$3" -v s="$SECS" \
        'BEGIN { if (m > 0) printf "%.2f", (c1 - c0) / (m * s / 1024); else print 0 }')"
}

# bench_guest NAME BACKEND TARGET IP6 [DISK-OPTS] [VIF-OPTS]: start a benchmark guest
# (PV, 1 vCPU, fio on its ramdisk) on BACKEND's disk TARGET and switch, and wait until it
# is ready; GUEST_CONNECTED_MS is from its xl create to its disk's backend Connected.
bench_guest() {
    local n=${1#bench} f
    f=$(console_of "$1")
    rm -f "$f"
    cat >"/tmp/$1.cfg" <<CFG
name = "$1"
type = "pv"
kernel = "$(linux_file vmlinux)"
ramdisk = "$(linux_file linux-initrd-fio.img)"
extra = "console=hvc0 rdinit=/bulkhead-linux-init bulkhead.role=bench bulkhead.ip6=$4"
memory = 512
vcpus = 1
on_crash = "preserve"
disk = [ 'format=raw,vdev=xvda,access=rw,backend=$2,${5:-}target=$3' ]
vif = [ 'backend=$2,mac=00:16:3e:be:00:0$n${6:-}' ]
CFG
    local t0 g be
    be=$(xl domid "$2") || fail "no driver domain $2"
    t0=$(date +%s%N)
    xl create "/tmp/$1.cfg" || fail "xl create $1 failed"
    g=$(xl domid "$1")
    POLL_S=0.1 poll 240 xs_is "/local/domain/$be/backend/vbd/$g/51712/state" 4 || fail "$1's disk never Connected"
    GUEST_CONNECTED_MS=$(ms_since "$t0")
    poll_live 300 reached "$f" linux-bench ready || fail "$1 did not get ready"
    results "$f" linux-bench pass=0 >/dev/null && fail "$1: $(results "$f" linux-bench pass=0 | field why)"
    grep -a "linux-bench: ready" "$f"
}

# outside_up: dom0's NIC on the outer network with an iperf3 server (the guests' "outside").
outside_up() {
    local dev
    dev=$(dom0_test_nic) || fail "dom0 has no NIC on the test network"
    { ip link set "$dev" up && ip -6 addr replace "$OUTSIDE/64" dev "$dev" nodad; } || fail "cannot configure $dev"
    pkill -x iperf3 2>/dev/null
    iperf3 -s -D || fail "iperf3 -s failed in dom0"
}

# cpu_shares BUSY IDLE: the shares (%) of R's cpu_* fields that were busy (user, system,
# softirq) and idle, as those two metrics.
cpu_shares() {
    [ -z "$(key error)" ] || { result_error "$1" "$(key error)"; result_error "$2" "$(key error)"; return; }
    set -- "$1" "$2" "$(key cpu_user)" "$(key cpu_sys)" "$(key cpu_softirq)" "$(key cpu_idle)" "$(key cpu_steal)"
    [ -n "$7" ] || { result_error "$1" no-cpu-fields; result_error "$2" no-cpu-fields; return; }
    local all=$(($3 + $4 + $5 + $6 + $7))
    [ "$all" -gt 0 ] || { result_error "$1" no-cpu-time; result_error "$2" no-cpu-time; return; }
    result "$1" "$(awk -v b=$(($3 + $4 + $5)) -v a="$all" 'BEGIN { printf "%.0f", b * 100 / a }')"
    result "$2" "$(awk -v b="$6" -v a="$all" 'BEGIN { printf "%.0f", b * 100 / a }')"
}

# storage: the guests' disk figures (bench1 alone, then both at once).
storage() {
    work bench1 fio /dev/xvda randread 4k 1 "$SECS"
    report rr4k_qd1_iops=iops rr4k_qd1_p50_us=p50us rr4k_qd1_p99_us=p99us
    probed rr4k_qd32_iops=iops -- fio /dev/xvda randread 4k 32 "$SECS"
    # How the guest's own vCPU spent the command (its answer's cpu_* fields, from its
    # /proc/stat): busy running it, idle waiting for I/O, or stolen (waiting for a
    # physical CPU). A guest busy throughout is the limit, whatever its driver domain.
    cpu_shares guest_cpu_busy_rr4k_qd32_pct guest_cpu_idle_rr4k_qd32_pct
    probed rw4k_qd32_iops=iops -- fio /dev/xvda randwrite 4k 32 "$SECS"
    local c0
    c0=$(dd_cpu)
    work bench1 fio /dev/xvda read 1M 8 "$SECS"
    report seqread_mibs=mibs
    cost seqread_cpu_s_per_gib "$c0" "$(key mibs)"
    c0=$(dd_cpu)
    work bench1 fio /dev/xvda write 1M 8 "$SECS"
    report seqwrite_mibs=mibs
    cost seqwrite_cpu_s_per_gib "$c0" "$(key mibs)"
    both two_guests_rr4k_qd32_iops iops fio /dev/xvda randread 4k 32 "$SECS"
    both two_guests_seqread_mibs mibs fio /dev/xvda read 1M 8 "$SECS"
}
# both METRIC KEY COMMAND...: the command in both guests at once; METRIC is the sum.
both() {
    local m=$1 k=$2 n1 a b
    shift 2
    dd_mark "both $*"
    send bench1 "$@"
    n1=$N
    send bench2 "$@"
    sleep "$SECS"
    reply bench1 "$n1"
    a=$(key "$k")
    [ -n "$a" ] || { result_error "$m" "bench1:$(key error)"; return; }
    reply bench2 "$N"
    dd_mark between
    b=$(key "$k")
    [ -n "$b" ] || { result_error "$m" "bench2:$(key error)"; return; }
    result "$m" "$(awk -v a="$a" -v b="$b" 'BEGIN { print a + b }')"
}

# probe LABEL: with BENCH_PROBE=1 (or 2) the vCPU seconds of the driver domain and the
# guests so far, and on Bulkhead's side a state dump of the driver domain (switch ports,
# every queue's rings, counters) in its console log: the dumps around a workload say
# where its packets went and who was busy.
probe() {
    [ "$PROBE" != 0 ] || return 0
    # dom0's and every domain's vCPU seconds too: what the guests lose to stealing goes
    # somewhere (2 physical CPUs' time, less all domains', is Xen's and idle).
    # Of dom0's: its processes' own CPU seconds by name (those with 1 s or more; the
    # device model of an HVM driver domain is qemu-system-i386).
    echo "bench-probe: $1: at $(date +%s.%N | cut -c1-14) s, driver domain vCPU $(dd_cpu) s, guests $(vcpu_s bench1) s and $(vcpu_s bench2) s, dom0 $(vcpu_s Domain-0) s, all domains $(xl list | awk 'NR > 1 { t += $6 } END { printf "%.1f", t }') s; dom0 processes: $(ps -eo times=,comm= | awk '{ t[$2] += $1 } END { for (c in t) if (t[c] >= 1) printf "%s=%d ", c, t[c] }')"
    [ "$SIDE" != linux ] || return 0
    POLL_S=0.1 state_dump 30 || echo "bench-probe: no dump for $1"
}
# sample_start, sample_stop LABEL: with BENCH_PROBE=2 on Bulkhead's side, where the driver
# domain's CPU is meanwhile: xenctx reads its instruction pointer from outside, as often
# as it can; each sample is a `bench-sample: LABEL SYMBOL` line. xenctx pauses the
# domain for each sample: the figures of a sampled run are far lower.
# BENCH_PROBE=3, on both sides: the same of the two guests instead (their kernel is
# dom0's, a PV kernel at fixed addresses: dom0's /proc/kallsyms names their symbols),
# each sample `bench-sample: LABEL GUEST SYMBOL`.
sample_start() {
    local xenctx
    xenctx=$(xen_tool xenctx)
    if [ "$PROBE" = 3 ]; then
        local g1 g2
        g1=$(xl domid bench1)
        g2=$(xl domid bench2)
        # Raw addresses (xenctx reading a symbol map per sample manages 1 a second).
        (while :; do
            for g in "$g1" "$g2"; do
                echo "d$g $("$xenctx" "$g" 0 2>&1 | sed -n 's/^rip: *\([0-9a-f]*\).*/\1/p' | head -1)"
            done
        done) >/tmp/samples &
        SAMPLER=$!
        return 0
    fi
    [ "$PROBE" = 2 ] && [ "$SIDE" != linux ] || return 0
    (while :; do "$xenctx" -s "$(dd_map)" "$DD_ID" 0 2>/dev/null | sed -n 's/^rip: *[0-9a-f]* *//p'; done) >/tmp/samples &
    SAMPLER=$!
}
sample_stop() {
    [ -n "${SAMPLER:-}" ] || return 0
    kill "$SAMPLER" 2>/dev/null
    wait "$SAMPLER" 2>/dev/null
    SAMPLER=
    if [ "$PROBE" = 3 ]; then
        # Name each address by the nearest symbol below it (dom0's /proc/kallsyms).
        grep -v '\[' /proc/kallsyms | awk '{ print $1, $3 }' | sort >/tmp/kernel.syms
        awk -v label="$1" 'NR == FNR { a[NR] = "x" $1; n[NR] = $2; c = NR; next }
            { s = "?"; lo = 1; hi = c; x = "x" $2
              while (lo <= hi) { m = int((lo + hi) / 2); if (a[m] <= x) { s = n[m]; lo = m + 1 } else hi = m - 1 }
              print "bench-sample: " label " " $1 " " s }' /tmp/kernel.syms /tmp/samples
        return 0
    fi
    sed "s/^/bench-sample: $1 /" /tmp/samples
}
# probed METRIC=KEY... -- COMMAND...: one workload in bench1, probed before and after;
# R is its answer.
probed() {
    local m=
    while [ "$1" != -- ]; do
        m="$m $1"
        shift
    done
    shift
    local first=${m# }
    first=${first%%=*}
    probe "before $first"
    local c0 c1 c2
    if [ "$PROBE" != 0 ]; then
        ask bench1 counters
        c1=$R
        ask bench2 counters
        c2=$R
        # Linux's driver domain: what its vifs handed the guests (Bulkhead's state
        # dumps count the same per queue).
        if [ "$SIDE" = linux ]; then
            ask "$DD_NAME" counters
            c0=$R
        fi
    fi
    sample_start
    work bench1 "$@"
    sample_stop "$first"
    if [ "$PROBE" != 0 ]; then
        local answer=$R
        ask bench1 counters
        echo "bench-probe: $first: bench1 counters before: $c1; after: $R"
        ask bench2 counters
        echo "bench-probe: $first: bench2 counters before: $c2; after: $R"
        if [ "$SIDE" = linux ]; then
            ask "$DD_NAME" counters
            echo "bench-probe: $first: $DD_NAME counters before: $c0; after: $R"
        fi
        R=$answer
        echo "bench-probe: $first: $R"
    fi
    probe "after $first"
    # shellcheck disable=SC2086 # the metric pairs, one word each
    report $m
}

# udp_capacity PEER GOT SENT: the highest rate of 64-byte datagrams bench1 sends PEER
# that PEER's socket takes with under 1% lost (RFC 2544's throughput, with 1% for a
# noisy emulator). At no rate limit (GOT received of SENT sent) the receiving guest's
# one vCPU spends itself on datagrams its socket then drops, so that figure falls as a
# driver domain delivers more; this one is what a guest can rely on. A search between
# 0 and SENT from GOT, UDP_TRIALS rates in all, each SECS long.
UDP_TRIALS=5
udp_capacity() {
    local lo=0 hi=$3 rate=$2 best=0 i=0 m=udp64_g2g_under1pct_pps
    if [ "${hi:-0}" -le 0 ] || [ "${rate:-0}" -le 0 ]; then
        result_error "$m" no-figures-at-no-limit
        return
    fi
    [ "$rate" -le "$hi" ] || rate=$hi
    # Every trial's answer (and the one at no limit, R now) in the log, with the
    # sender's CPU split: what stopped the sender, and where the loss began.
    said() { echo "bench-udp: side=$SIDE run=$RUN rate=$1 $(echo "$R" | sed 's/.*cmd=[0-9]* //')"; }
    said none
    while [ $i -lt $UDP_TRIALS ]; do
        i=$((i + 1))
        work bench1 udp "$1" "$SECS" "$rate"
        [ -z "$(key error)" ] || { result_error "$m" "$(key error)"; return; }
        said "$rate"
        if awk -v l="$(key lost_pct)" 'BEGIN { exit !(l < 1) }'; then
            lo=$rate
            best=$(key pps)
        else
            hi=$rate
        fi
        rate=$(((lo + hi) / 2))
    done
    # No rate passed: the receiver lost 1% or more even at the lowest one tried, which
    # is a finding, not a figure of 0.
    if [ "$best" = 0 ]; then
        result_error "$m" "no-rate-under-1pct-down-to-$hi"
        return
    fi
    result "$m" "$best"
}

# network: guest to guest (bench1 → bench2), guest to outside and back, 1 and 3 TCP streams.
network() {
    local peer c0
    peer=$(xenstore-read "/local/domain/$(xl domid bench2)/data/ip") || fail "bench2 published no address"
    probed tcp_g2g_1_mbits=mbits -- tcp "$peer" 1 "$SECS"
    c0=$(dd_cpu)
    probed tcp_g2g_3_mbits=mbits -- tcp "$peer" 3 "$SECS"
    cost tcp_g2g_cpu_s_per_gib "$c0" "$(awk -v m="$(key mbits)" 'BEGIN { print m / 8 / 1.048576 }')"
    probed tcp_g2out_1_mbits=mbits -- tcp "$OUTSIDE" 1 "$SECS"
    probed tcp_g2out_3_mbits=mbits -- tcp "$OUTSIDE" 3 "$SECS"
    probed tcp_out2g_1_mbits=mbits -- tcp "$OUTSIDE" 1 "$SECS" -R
    probed tcp_out2g_3_mbits=mbits -- tcp "$OUTSIDE" 3 "$SECS" -R
    probed udp64_g2g_pps=pps udp64_g2g_sent_pps=sent_pps -- udp "$peer" "$SECS"
    udp_capacity "$peer" "$(key pps)" "$(key sent_pps)"
    # Probe runs only: the receiving side below saturation (both driver domains' guests
    # took 600 datagrams a second with little loss), its interrupts and CPU per datagram
    # in the counters around it (no table row).
    [ "$PROBE" = 0 ] || probed udp64_g2g_at600_pps=pps -- udp "$peer" "$SECS" 600
    probed ping_g2g_p50_ms=p50ms ping_g2g_p99_ms=p99ms -- ping "$peer" 100
}

# workloads: both guests (bench1 on the first partition, bench2 on the second), then every
# figure; DD_NAME, SIDE and the start-up figures are the caller's. Leaves the guests running.
workloads() {
    outside_up
    bench_guest bench1 "$DD_NAME" "$1" fd00::11 "${3:-}" "${4:-}"
    result guest_disk_connected_ms "$GUEST_CONNECTED_MS"
    bench_guest bench2 "$DD_NAME" "$2" fd00::12 "${3:-}" "${4:-}"
    case " $PARTS " in *" storage "*) storage ;; esac
    case " $PARTS " in *" network "*) network ;; esac
    result dd_mem_given_mib "$(xl list "$DD_NAME" | awk 'NR == 2 { print $3 }')"
}

# guests_down: the guests go first (their devices close), then the driver domain.
guests_down() {
    xl destroy bench1
    xl destroy bench2
}
