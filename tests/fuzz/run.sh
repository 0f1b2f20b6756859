#!/bin/bash
# Coverage-guided fuzzing of every parser of guest data (libFuzzer on stable Rust, no
# sanitizer: the code under test forbids unsafe, so the findings are panics, overflows,
# hangs and broken invariants). Usage: tests/fuzz/run.sh SECONDS [TARGET...]
# Each target starts from its committed seed corpus (tests/fuzz/seeds/TARGET) and prints
# its executions; any crash fails the run and leaves the input in tests/fuzz/artifacts/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(blkif netif_tx netif_ctrl xenstore_wire xenbus wire_rx)
# What cargo-fuzz passes for `--sanitizer none`: coverage counters, comparison tracing,
# the `fuzzing` cfg; debug assertions and overflow checks on (Cargo.toml's profile).
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares"
export CARGO_TARGET_DIR="$here/target"
# An explicit --target keeps those flags off build scripts (they run on the host, without
# libFuzzer's runtime).
triple=x86_64-unknown-linux-gnu
(cd "$here" && cargo build -q --release --bins --target $triple)
bin="$CARGO_TARGET_DIR/$triple/release"
failed=0
for t in "${targets[@]}"; do
    corpus="$here/target/corpus/$t"
    mkdir -p "$corpus" "$here/artifacts/$t"
    log="$here/target/$t.log"
    if "$bin/$t" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$here/artifacts/$t/" "$corpus" "$here/seeds/$t" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
        echo "fuzz $t: ${runs:-?} executions in $secs s, $cov, 0 crashes"
    else
        echo "fuzz $t: FAILED, see $log; input in $here/artifacts/$t/"
        grep -E "panicked|ERROR|SUMMARY" "$log" | head -5
        failed=1
    fi
done
exit $failed
