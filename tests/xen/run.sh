#!/bin/bash
# The Xen-in-QEMU tier: Xen + a Debian dom0 in QEMU (TCG), Bulkhead started by xl as the
# driver domain, scenarios from tests/xen/scenarios run inside dom0.
#
#   tests/xen/run.sh [scenario...]      (default: the test scenarios, SCENARIOS below)
#   tests/xen/run.sh --bench            the benchmark (make bench): BENCH_RUNS (3) runs of
#                                       each side, BENCH_SECS (8) seconds per workload;
#                                       table, build/bench/results.json and ratios.png;
#                                       BENCH_PARTS ("storage network") the workloads,
#                                       BENCH_PROBE=1 vCPU seconds and a driver-domain
#                                       state dump around each probed workload, 2 also
#                                       xenctx samples (for finding where it goes); a
#                                       run that failed after a triple fault's retry
#                                       runs again in a fresh boot
#   tests/xen/run.sh --ab BASE.elf      the benchmark's Bulkhead side only, this tree's
#                                       image against BASE.elf (another commit's
#                                       build/bulkhead.elf), BENCH_RUNS runs each in one
#                                       boot in the order A B B A A B ..., so that a
#                                       machine whose speed drifts (it does, two- to
#                                       threefold within minutes) slows both alike;
#                                       prints each metric's medians, their ratio and
#                                       each pair's ratio (build/bench/ab.md)
#   tests/xen/run.sh --demo             interactive: demo.sh, then a dom0 shell (make run)
#
# The dom0 image is built once by build-dom0.sh and cached outside the repository, keyed
# by that script's contents: $BULKHEAD_CACHE (default ~/.cache/bulkhead). Console output
# of Xen, dom0 and every domU lands in build/test-logs/xen/.
set -euo pipefail
# The whole script is one function, read before it runs: editing this file while a run
# is under way must not change what that run executes (bash reads scripts as it goes).
main() {
start0=$(date +%s)
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/tests/xen"
# blkback expects part:delta and nvme0n1p5 empty; blkback-cycles writes the first and
# dd-lifecycle the second, so both run after it; demo (what `make run` shows) makes a file
# system on nvme0n1p5 after them. The benchmark (bench-linux, bench-bulkhead)
# is not a test: `make bench` runs it.
# blkback, blkback-cycles, hvm-net, demo, netback, netback-cycles, hostile-blk, hostile-blk-floods and hostile-net share
# one driver domain (lib.sh, start_shared_dd): blkback starts it, so it comes first of them;
# hostile-net shuts it down (the last check of the hostile-guest scenarios).
SCENARIOS=(pvh-core vbd-initwait crash hvm-core hvm-nvme hvm-multiboot blkback blkback-cycles hvm-net demo netback netback-cycles
    hostile-blk hostile-blk-floods hostile-net dd-lifecycle)
demo=0
bench=0
if [ "${1:-}" = --demo ]; then demo=1; shift; fi
if [ "${1:-}" = --bench ]; then
    bench=1
    shift
    # The two sides take turns, run by run: a machine that slows down as the hours go
    # by slows both alike.
    SCENARIOS=()
    for k in $(seq 1 "${BENCH_RUNS:-3}"); do SCENARIOS+=("bench-linux@$k" "bench-bulkhead@$k"); done
fi
ab=
if [ "${1:-}" = --ab ]; then
    bench=1
    ab=$(realpath "${2:?--ab needs the image to compare with}")
    [ -f "$ab" ] || { echo "xen tier: $ab: no such image"; exit 1; }
    shift 2
    SCENARIOS=()
    for k in $(seq 1 "${BENCH_RUNS:-3}"); do
        if [ $((k % 2)) = 1 ]; then
            SCENARIOS+=("bench-base@$k" "bench-bulkhead@$k")
        else
            SCENARIOS+=("bench-bulkhead@$k" "bench-base@$k")
        fi
    done
fi
[ $# -gt 0 ] && SCENARIOS=("$@")
QEMU=${QEMU:-qemu-system-x86_64}
cache_root=${BULKHEAD_CACHE:-$HOME/.cache/bulkhead}
key=$(sha256sum <"$here/build-dom0.sh" | cut -c1-16)
img="$cache_root/xen-dom0-$key"
logs="$root/build/test-logs/xen"
share="$root/build/xen-share"

if [ ! -f "$img/rootfs.img" ]; then
    echo "xen tier: building the dom0 image (cached in $img; takes a few minutes once)"
    rm -rf "$img.tmp"
    "$here/build-dom0.sh" "$img.tmp"
    mv "$img.tmp" "$img"
fi

# The shipped image, and the test image (the same kernel with its test hooks, for the
# scenarios that pass test options: lib.sh, image_for); the demo needs only the first.
images="bulkhead"
[ $demo -eq 1 ] || images="bulkhead bulkhead-test"
rm -rf "$share" "$logs"
mkdir -p "$share/out/console" "$logs"
# (--ab: the image compared with this tree's as base.elf.)
[ -z "$ab" ] || images="$images base"
for name in $images; do
    elf="$root/build/$name.elf"
    [ "$name" != base ] || elf=$ab
    [ -f "$elf" ] || { echo "xen tier: build/$name.elf missing (run make image test-image)"; exit 1; }
    cp "$elf" "$share/$name.elf"
    # Text symbols for xenctx (a stuck driver domain is sampled with it on failures).
    # xenctx symbolizes stack words only between _stext and _etext.
    nm -n -C --defined-only "$elf" | awk '$2 ~ /^[tT]$/' >"$share/text.map"
    {
        echo "$(head -1 "$share/text.map" | cut -d' ' -f1) T _stext"
        cat "$share/text.map"
        printf '%016x T _etext\n' $((0x$(tail -1 "$share/text.map" | cut -d' ' -f1) + 4096))
    } >"$share/$name.map"
    rm "$share/text.map"
    # The flight recorder's page (kernel/src/machine/trace.rs): identity-mapped, so its address is
    # its guest frame; a post-mortem reads that one page (dd-peek) instead of a whole core
    # dump.
    nm -C --defined-only "$elf" | awk '$3 == "bulkhead::machine::trace::RECORDER" { print $1 }' >"$share/$name.recorder"
    [ -s "$share/$name.recorder" ] || { echo "xen tier: no bulkhead::machine::trace::RECORDER symbol in $name.elf"; exit 1; }
done
mkdir -p "$share/linux"
# The guests boot the Debian kernel's own ELF image (the bzImage's payload: the setup
# header gives its offset), not the bzImage: xl would decompress its 8 MB of xz in dom0
# for every guest it creates, seconds each under nested TCG.
sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$img/vmlinuz" | tr -d ' ')
payload=$(od -An -tu4 -j $((0x248)) -N4 "$img/vmlinuz" | tr -d ' ')
tail -c +$(((sects + 1) * 512 + payload + 1)) "$img/vmlinuz" >"$share/linux/payload.xz"
{ xz -dc --single-stream "$share/linux/payload.xz" >"$share/linux/vmlinux" \
    && [ "$(head -c 4 "$share/linux/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; } \
    || { echo "xen tier: cannot take the ELF image out of $img/vmlinuz"; exit 1; }
rm "$share/linux/payload.xz"
cp -r "$root/xl-configs" "$share/"
cp -r "$here/scenarios" "$share/"
install -m 755 "$here/dom0-init.sh" "$here/dom0-run.sh" "$here/trace.py" "$share/"
gcc -static -O2 -Wall -o "$share/xen-peer" "$here/xen-peer.c"
gcc -static -O2 -Wall -o "$share/dd-peek" "$here/dd-peek.c"
gcc -static -O2 -Wall -o "$root/build/bulkhead-prng" "$here/prng.c"
# The NVMe the driver domain gets by passthrough: a pattern and a GPT, checked afterwards.
runner="$root/target/release/bulkhead-testrun"
[ -x "$runner" ] || (cd "$root" && cargo build -q --release -p bulkhead-testrun)
nvme_img="$root/build/xen-nvme.img"
"$runner" make-disk "$nvme_img"
# The hostile frontend and the victim's probe (tests/hostile), linked statically for the
# guests' initramfs (its own target directory: other flags than the host tools).
hostile="$root/target/guest/release/bulkhead-hostile"
(cd "$root" && CARGO_TARGET_DIR="$root/target/guest" RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release -p bulkhead-hostile) \
    || { echo "xen tier: cannot build tests/hostile"; exit 1; }
"$runner" initramfs-overlay "$share/linux/linux-initrd.img" "$img/linux-initrd.img" "bulkhead-linux-init=$here/linux-init.sh" "bulkhead-prng=$root/build/bulkhead-prng" "bulkhead-hostile=$hostile"
# Benchmark guests also get fio (tests/xen/build-dom0.sh explains why it is separate).
"$runner" initramfs-overlay "$share/linux/linux-initrd-fio.img" "$img/linux-initrd.img" "bulkhead-linux-init=$here/linux-init.sh" "bulkhead-prng=$root/build/bulkhead-prng" "opt/fio=$img/fio-root"
printf '%s\n' "${SCENARIOS[@]}" >"$share/scenarios.list"
echo "${BENCH_SECS:-8}" >"$share/bench.secs"
echo "${BENCH_PARTS:-storage network}" >"$share/bench.parts"
echo "${BENCH_PROBE:-0}" >"$share/bench.probe"
# How fast QEMU runs on this machine (tests/runner/src/calibrate.rs), two loops at once
# as this QEMU runs two vCPU threads: the outer limit below follows it; dom0 measures
# again before every scenario for the scenarios' limits.
# (The demo has no outer limit: it skips this.)
if [ $demo -eq 0 ]; then
    cal=$("$runner" calibrate "$root/build/bulkhead-test.elf" 2) || { echo "xen tier: calibration failed: $cal"; exit 1; }
    echo "xen tier: $(echo "$cal" | head -1)"
    slow100=$(echo "$cal" | sed -n 's/^factor=\([0-9]*\)\.\([0-9]*\) .*/\1\2/p')
else
    slow100=100
fi
# limits N: QEMU's limit for a boot that runs N scenarios, and dom0's share of it (what
# is left is boot and shutdown: dom0 must finish and report well inside QEMU's limit).
# The benchmark: about 10 minutes a run of each side on the development machine.
# BULKHEAD_DEADLINE (epoch seconds; .ci/run sets it from CI's own limit) is when the
# whole run must be over: the boot then gets all the time up to it, less the minutes the
# checks after QEMU take. A machine that is slower than the calibration says, or that
# slows down as the run goes on (a CI run took 3744 s for what took 2057 s on a machine
# that calibrated slower), then still runs what fits and reports what did not, instead
# of being killed from outside with nothing said.
limits() {
    local base=2400
    [ $bench -eq 1 ] && base=$((600 + 1200 * $1 / 2))
    tier_timeout=${XEN_TIER_TIMEOUT:-$((base * slow100 / 100))}
    if [ -n "${BULKHEAD_DEADLINE:-}" ] && [ -z "${XEN_TIER_TIMEOUT:-}" ]; then
        tier_timeout=$((BULKHEAD_DEADLINE - $(date +%s) - 120))
        # Too little left to boot and run anything: say so rather than overrun it.
        if [ $tier_timeout -lt $((400 * slow100 / 100)) ]; then
            echo "xen tier: BULKHEAD_DEADLINE leaves ${tier_timeout} s, too little to boot (x$slow100/100): not run"
            printf 'FAIL %s: not run, BULKHEAD_DEADLINE came first\n' "${SCENARIOS[@]}"
            exit 1
        fi
    fi
    dom0_share=$((tier_timeout - 200 * slow100 / 100))
}
limits ${#SCENARIOS[@]}
# XEN_TCG_THREAD=single runs both emulated CPUs on one host thread (see docs/testing.md, "The
# nested triple fault").
tcg_thread=${XEN_TCG_THREAD:-multi}
# Fixed PCI addresses: 00:03.0 is the NVMe that dom0 hands to the driver domain.
# iommu=no-sharept: QEMU's TCG answers the VMX EPT capability MSR with zeros on this SVM
# CPU, so Xen would share its NPT tables with the emulated VT-d IOMMU, a pairing no real
# machine has, and then no IOTLB invalidation reaches the IOMMU when a page leaves a
# domain's p2m: a device kept writing a grant Bulkhead had unmapped
# (docs/grant-dma-2026-12-04.md). Separate IOMMU tables are flushed on every unmap.
# shellcheck disable=SC2054 # the commas are QEMU's option syntax
qemu_args=(-M q35 -cpu qemu64,+svm,+npt -smp 2 -m 4096 -accel "tcg,thread=$tcg_thread" -display none -no-reboot
    -device intel-iommu,intremap=on,caching-mode=on
    -kernel "$img/xen"
    -append "console=com1 com1=115200 dom0_mem=1G,max:1G loglvl=all guest_loglvl=all iommu=no-sharept"
    -initrd "$img/vmlinuz console=hvc0 root=/dev/vda rw init=/sbin/bulkhead-dom0-init quiet,$img/initrd.img"
    -drive "file=$nvme_img,if=none,id=nvm,format=raw" -device nvme,serial=bulkhead0,drive=nvm,addr=3
    -drive "file=$img/rootfs.img,if=none,id=root,format=raw,snapshot=on" -device virtio-blk-pci,drive=root,addr=6
    -fsdev "local,id=h,path=$share,security_model=none" -device virtio-9p-pci,fsdev=h,mount_tag=host,addr=5
    # QEMU's user network on a hub: an e1000e for the driver domain (00:04.0) and a NIC
    # for dom0 (00:07.0), so dom0 can reach Bulkhead's management address. restrict=on:
    # slirp must not answer pings meant for Bulkhead (it emulates echo to any address).
    # ipv6=off: it leaves IPv6 between guests and dom0 alone (netback's outside figure).
    -netdev user,id=slirp0,restrict=on,ipv6=off -netdev hubport,id=hub0,hubid=0,netdev=slirp0
    -netdev hubport,id=hub1,hubid=0 -device e1000e,netdev=hub1,addr=4,mac=52:54:00:12:34:56
    -netdev hubport,id=hub2,hubid=0 -device virtio-net-pci,netdev=hub2,addr=7,mac=52:54:00:00:d0:00)

if [ $demo -eq 1 ]; then
    install -m 755 "$here/demo.sh" "$share/dom0-run.sh"
    # When `make run` started (DEMO_T0, from the Makefile), for the demo's own figure.
    echo "${DEMO_T0:-$start0}" >"$share/demo.t0"
    echo "== Xen + dom0 booting in QEMU (about 30 s under TCG); Ctrl-A then X quits at any time =="
    exec "$QEMU" "${qemu_args[@]}" -serial mon:stdio
fi

# The commit the image was built from, for the benchmark's report (taken now: the tree
# may change while the run goes on).
commit="$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$root" && git diff --quiet HEAD 2>/dev/null || echo -dirty)"
# XEN_DEBUG=1: the serial line is also a socket (build/xen-serial.sock: Ctrl-A three times
# switches input to Xen, whose debug keys 'd' 'i' 'q' 'r' dump CPUs, IRQs, domains and
# run queues into serial.log) and the QEMU monitor listens on build/qemu-monitor.sock.
serial=(-serial stdio -monitor none)
if [ "${XEN_DEBUG:-0}" = 1 ]; then
    rm -f "$root/build/xen-serial.sock" "$root/build/qemu-monitor.sock"
    serial=(-chardev "socket,id=ser0,path=$root/build/xen-serial.sock,server=on,wait=off,logfile=$logs/serial.log,logappend=on"
        -serial chardev:ser0 -monitor "unix:$root/build/qemu-monitor.sock,server=on,wait=off")
fi
# boot: Xen + dom0 in QEMU, dom0 running the scenarios of $share/scenarios.list; their
# logs and results are copied into $logs.
# dom0_done is 0 when a boot's dom0 did not finish; secs sums the boots' QEMU seconds.
dom0_done=1
secs=0
boot() {
    local t0 off b ticker
    t0=$(date +%s)
    # The host's clock, for dom0: its budget is counted on it, not on dom0's own clock,
    # which has been seen to fall behind the host's under a slow emulator (every figure
    # measured inside looked faster while QEMU took twice as long). host-clock is
    # replaced once a second; dom0-run.sh stops starting scenarios, and stops a running
    # one, when it reaches host-deadline.
    echo $((t0 + dom0_share)) >"$share/host-deadline"
    # (It ends with run.sh, whichever way that goes: a background job of a script
    # ignores Ctrl-C.)
    (while kill -0 $$ 2>/dev/null; do
        if date +%s >"$share/host-clock.new"; then mv -f "$share/host-clock.new" "$share/host-clock" || :; fi
        sleep 1
    done) &
    ticker=$!
    # This boot's part of serial.log (a second boot appends to the first's).
    off=$(stat -c %s "$logs/serial.log" 2>/dev/null || echo 0)
    set +e
    timeout "$tier_timeout" "$QEMU" "${qemu_args[@]}" "${serial[@]}" \
        </dev/null >>"$logs/serial.log" 2>&1
    qrc=$?
    set -e
    kill $ticker 2>/dev/null || true
    wait $ticker 2>/dev/null || true
    b=$(( $(date +%s) - t0 ))
    secs=$((secs + b))
    cp -r "$share/out/." "$logs/" 2>/dev/null || true
    echo "xen tier: QEMU ran ${b}s (exit $qrc, limit ${tier_timeout}s); logs in $logs"
    # QEMU's own last words (a device model's failed assertion aborts the whole run).
    if [ $qrc -ne 0 ]; then
        tail -c +$((off + 1)) "$logs/serial.log" | grep -a -E "^qemu-system|Assertion" | tail -5 | sed 's/^/xen tier: qemu said: /' || true
    fi
    if ! tail -c +$((off + 1)) "$logs/serial.log" | grep -q "BULKHEAD-DOM0-DONE"; then
        echo "xen tier: dom0 never finished; last serial lines:"
        tail -30 "$logs/serial.log" | sed 's/^/     | /'
        dom0_done=0
    fi
}
echo "xen tier: booting Xen + dom0 in QEMU for: ${SCENARIOS[*]}"
boot
# The benchmark only: a run that still failed after dom0-run.sh retried it for a triple
# fault runs once more, in a fresh boot. After such a fault the retry in the same boot
# has been seen to crawl (the next driver domain took minutes to its first line:
# docs/triple-fault-2026-12-02.md), and a benchmark run is worth a boot; the tests keep
# one boot (their retries passed), and every retry is reported below either way.
if [ $bench -eq 1 ]; then
    again=()
    for s in "${SCENARIOS[@]}"; do
        grep -q "^PASS $s " "$logs/results" 2>/dev/null && continue
        grep -q "^dom0-run: $s: attempt" "$logs/retries" 2>/dev/null && again+=("$s")
    done
    if [ ${#again[@]} -gt 0 ]; then
        echo "xen tier: failed after a triple fault, again in a fresh boot: ${again[*]}"
        # The first boot's results and retries are kept, and each such run's log as
        # NAME.first-boot.txt (not .log: the report reads bench-*.log, and a first
        # boot's partial figures would count as one more run).
        mv "$logs/results" "$logs/results.first-boot"
        mv "$logs/retries" "$logs/retries.first-boot"
        for s in "${again[@]}"; do cp "$logs/$s.log" "$logs/$s.first-boot.txt" 2>/dev/null || true; done
        rm -rf "$share/out"
        mkdir -p "$share/out/console"
        printf '%s\n' "${again[@]}" >"$share/scenarios.list"
        limits ${#again[@]}
        boot
        # Every other scenario's first result; a rerun's second one, or its first when
        # the second boot gave none.
        touch "$logs/results"
        printf '%s\n' "${again[@]}" | awk 'NR == FNR { again[$1] = 1; next }
            FILENAME ~ /first-boot$/ { if (!again[$2] || !($2 in second)) print; next }
            { second[$2] = 1; print }' - "$logs/results" "$logs/results.first-boot" >"$logs/results.all"
        mv "$logs/results.all" "$logs/results"
        cat "$logs/retries.first-boot" "$logs/retries" 2>/dev/null >"$logs/retries.all" || true
        mv "$logs/retries.all" "$logs/retries"
        rm -f "$logs/results.first-boot" "$logs/retries.first-boot"
    fi
fi
grep -h "^figure:" "$logs"/*.log 2>/dev/null | sed 's/^/xen tier: /' || true
# The benchmark's figures (tests/xen/scenarios/bench-lib.sh): medians, ratios, the chart.
if [ $bench -eq 1 ]; then
    mkdir -p "$root/build/bench"
    cat "$logs"/bench-*.log 2>/dev/null | grep -a "^bench: " >"$root/build/bench/raw.txt" || true
fi
if [ -n "$ab" ]; then
    base_commit=$(git -C "$(dirname "$ab")" rev-parse --short HEAD 2>/dev/null || echo "$ab")
    "$runner" bench-ab "$root/build/bench/raw.txt" "$base_commit" "$commit" | tee "$root/build/bench/ab.md" \
        || echo "xen tier: the A/B report failed"
elif [ $bench -eq 1 ]; then
    "$runner" bench-report "$root/build/bench/raw.txt" "$root/build/bench" \
        "$commit" \
        || echo "xen tier: the benchmark report failed"
fi
# Scenarios dom0-run.sh retried after a triple fault (see there): reported, not hidden.
if [ -s "$logs/retries" ]; then
    sed 's/^dom0-run: /xen tier: retried: /' "$logs/retries"
fi
failed=0
for s in "${SCENARIOS[@]}"; do
    line=$(grep -E "^(PASS|FAIL) $s " "$logs/results" 2>/dev/null | head -1 || true)
    if [ -z "$line" ]; then
        echo "FAIL $s: no result (dom0 did not run it; see serial.log)"
        failed=1
    else
        echo "$line"
        case "$line" in FAIL*) failed=1 ;; esac
    fi
    if ! grep -q "^PASS $s " "$logs/results" 2>/dev/null; then
        echo "     ---- $s.log ----"
        tail -25 "$logs/$s.log" 2>/dev/null | sed 's/^/     | /'
    fi
done
# The NVMe image as the driver domain left it: hvm-nvme wrote and flushed through it;
# hostile-blk and hostile-blk-floods had alpha read-only and discarded gamma whole (nothing
# around it may change).
ran() { printf '%s\n' "${SCENARIOS[@]}" | grep -qx "$1"; }
passed() { grep -q "^PASS $1 " "$logs/results" 2>/dev/null; }
if { ran hvm-nvme || ran hostile-blk || ran hostile-blk-floods; } && { ! ran hvm-nvme || passed hvm-nvme; } \
    && { ! ran hostile-blk || passed hostile-blk; } && { ! ran hostile-blk-floods || passed hostile-blk-floods; }; then
    flag=--no-storage-test
    ran hvm-nvme && flag=
    if ! "$runner" verify-disk "$nvme_img" $flag; then
        echo "FAIL $(ran hvm-nvme && echo hvm-nvme || echo hostile-blk): the NVMe image does not hold what the driver domain wrote, or more changed"
        failed=1
    fi
fi
# dd-lifecycle's acknowledged writes (blocks 1-3 of its guest, 4 MiB each at 4 MiB * k of
# part:epsilon, which starts at sector 212992: tests/runner/src/disk.rs P5) must be on
# the host's image after the clean shutdown and everything that followed.
if printf '%s\n' "${SCENARIOS[@]}" | grep -qx dd-lifecycle && grep -q "^PASS dd-lifecycle " "$logs/results" 2>/dev/null; then
    for k in 1 2 3; do
        want=$("$root/build/bulkhead-prng" "life-$k" 4194304 | sha256sum | cut -c1-16)
        got=$(dd if="$nvme_img" bs=1M skip=$((212992 * 512 / 1048576 + 4 * k)) count=4 2>/dev/null | sha256sum | cut -c1-16)
        if [ "$want" != "$got" ]; then
            echo "FAIL dd-lifecycle: block $k of the guest is not on the host's NVMe image ($got, want $want)"
            failed=1
        fi
    done
    [ $failed -eq 0 ] && echo "xen tier: dd-lifecycle's acknowledged writes are on the host's NVMe image"
fi
[ $dom0_done -eq 1 ] || failed=1
sed 's/^/xen tier: /' "$logs/calibration" 2>/dev/null || true
# How far dom0's clock got against the host's (dom0-run.sh). Far apart, they explain a
# run whose figures look fast while it took long.
if [ -s "$logs/clocks" ]; then
    sed 's/^dom0-run: /xen tier: /' "$logs/clocks"
else
    grep -a "^dom0-run: === " "$logs/serial.log" 2>/dev/null | tail -1 | sed 's/^/xen tier: the last scenario dom0 started: /' || true
fi
echo "xen tier: wall time $(( $(date +%s) - start0 )) s (QEMU ${secs} s; ${#SCENARIOS[@]} scenarios)"
[ $failed -eq 0 ] && echo "xen tier: all scenarios passed" || echo "xen tier: FAILED"
return $failed
}
# One line: bash has read all of it before main runs, whatever happens to the file.
main "$@"; exit $?
