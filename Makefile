# Bulkhead's stable interface. `make` builds the image; `make test` runs every test tier
# present; `make run` is the demo. See README.md.

CARGO      ?= cargo
QEMU       ?= qemu-system-x86_64
BUILD      := build
IMAGE      := $(BUILD)/bulkhead.elf
PVH_IMAGE  := $(BUILD)/bulkhead-pvh.elf
# The same kernel with its test hooks (feature test-hooks: self-test, storage test, Xen
# peer test, calibration loop, test triggers), for the test tiers only.
TEST_IMAGE     := $(BUILD)/bulkhead-test.elf
TEST_PVH_IMAGE := $(BUILD)/bulkhead-test-pvh.elf
TEST_TARGET    := target/test-image
TEST_KERNEL_OUT := $(TEST_TARGET)/x86_64-unknown-linux-gnu/release/bulkhead
KERNEL_OUT := target/x86_64-unknown-linux-gnu/release/bulkhead
RUNNER     := target/release/bulkhead-testrun
IMAGETOOL  := target/release/bulkhead-image

.PHONY: all image test-image imagetool runner test test-host test-qemu test-xen bench fuzz run run-bare deps clean

all: image

# The kernel is built from kernel/ so that kernel/.cargo/config.toml (bare-metal flags,
# explicit target) applies; a root-level build would not see it.
# The image needs only its own small tool (boot/image: the boot-protocol checks, the PVH
# variant), not the test runner.
image: imagetool
	cd kernel && $(CARGO) build --release
	@mkdir -p $(BUILD)
	cp $(KERNEL_OUT) $(IMAGE)
	$(IMAGETOOL) check $(IMAGE)
	$(IMAGETOOL) make-pvh $(IMAGE) $(PVH_IMAGE)

imagetool:
	$(CARGO) build --release -p bulkhead-image

# Its own target directory: the shipped image and this one differ only in a feature,
# and each keeps its build.
test-image: imagetool
	cd kernel && CARGO_TARGET_DIR=../$(TEST_TARGET) $(CARGO) build --release --features test-hooks
	@mkdir -p $(BUILD)
	cp $(TEST_KERNEL_OUT) $(TEST_IMAGE)
	$(IMAGETOOL) check $(TEST_IMAGE)
	$(IMAGETOOL) make-pvh $(TEST_IMAGE) $(TEST_PVH_IMAGE)

$(IMAGE) $(PVH_IMAGE): image

runner:
	$(CARGO) build --release -p bulkhead-testrun

test: test-host test-qemu test-xen

# Host tier: formatting, clippy over the whole workspace (the kernel included; warnings
# are errors), shellcheck over every script at every severity (.shellcheckrc), the
# kernel's layering (tests/layers.py: no import cycle, unsafe only in machine/), the
# logic crates' tests (plain `cargo test` at the root never builds the kernel), then
# time-bounded fuzzing of the parsers of guest-controlled data.
FUZZ_SECONDS ?= 20
test-host: runner
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p bulkhead --features test-hooks -- -D warnings
	shellcheck -S style .ci/run $$(find tests -name '*.sh' -not -path '*/target/*')
	tests/layers.py kernel/src
	$(CARGO) test
	tests/xen/scenarios/fields.test.sh
	tests/xen/scenarios/victim-verdict.test.sh
	$(RUNNER) fuzz blkif $(FUZZ_SECONDS)
	$(RUNNER) fuzz switch $(FUZZ_SECONDS)
	$(RUNNER) fuzz netif $(FUZZ_SECONDS)
	tests/fuzz/run.sh $(FUZZ_SMOKE_SECONDS)

# Coverage-guided fuzzing (libFuzzer, tests/fuzz): a smoke of each target in `make test`,
# a long campaign here (not CI), corpora kept in tests/fuzz/target/corpus between runs.
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_CAMPAIGN_SECONDS ?= 3600
fuzz:
	tests/fuzz/run.sh $(FUZZ_CAMPAIGN_SECONDS)

# Bare-QEMU tier: boots the test image (and, where no test hook is needed, the shipped
# one) with -kernel and checks the console and exit status.
test-qemu: image test-image runner
	QEMU=$(QEMU) $(RUNNER) qemu $(TEST_IMAGE) $(TEST_PVH_IMAGE) $(IMAGE)

# Xen-in-QEMU tier: Xen + Debian dom0 in QEMU, Bulkhead as driver domain (tests/xen).
# The first run builds and caches the dom0 image (~/.cache/bulkhead).
# SCENARIOS="netback hostile-net" runs only those (default: the whole tier).
test-xen: image test-image runner
	QEMU=$(QEMU) tests/xen/run.sh $(SCENARIOS)

# The benchmark, never part of `make test` (figures, no verdict on speed): Bulkhead and a
# Linux driver domain take turns on the same emulated NVMe and e1000e, the same guests
# and workloads, BENCH_RUNS times each (tests/xen/scenarios/bench-lib.sh); prints the
# table of medians and ratios, writes build/bench/results.json and build/bench/ratios.png.
BENCH_RUNS ?= 3
BENCH_SECS ?= 8
bench: image test-image runner
	QEMU=$(QEMU) BENCH_RUNS=$(BENCH_RUNS) BENCH_SECS=$(BENCH_SECS) tests/xen/run.sh --bench

# Install what the build and tests need on Debian (idempotent).
deps:
	tests/install-deps.sh

# The demo: Xen in QEMU with Bulkhead as driver domain, ending at a dom0 shell.
# Quit with Ctrl-A then X.
# DEMO_T0: when `make run` started (the demo says how long it took to get there).
run: export DEMO_T0 := $(shell date +%s)
run: deps image runner
	QEMU=$(QEMU) tests/xen/run.sh --demo

# Bulkhead alone in bare QEMU, its event loop printing a heartbeat. Ctrl-A then X quits.
run-bare: deps image
	@echo "== Bulkhead in QEMU: Ctrl-A then X quits =="
	$(QEMU) -kernel $(IMAGE) -append "heartbeat=5" -m 32 -display none -serial mon:stdio \
		-no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 || test $$? -eq 1

clean:
	rm -rf $(BUILD)
	$(CARGO) clean
