# shellcheck shell=dash
# The NVMe controller (00:03.0) bound to xen-pciback in dom0 and passed through to
# Bulkhead as an HVM driver domain (`pci=` in driverdomain.cfg, no firmware): Bulkhead
# gives the devices' BARs addresses itself (each must lie in the MMIO hole
# 0xf0000000-0xfc000000 or the I/O ports from 0xc000, aligned, none overlapping), routes
# the NVMe's INTx pin to the I/O APIC without hvmloader (`nvme-irq=intx`: the storage
# test fails if no device interrupt arrives), drives the controller natively and runs
# the storage checks (GPT, read/verify, write, flush, errors). The host checks the image
# after QEMU exits.
. ./lib.sh
start_hvm_dd "00:03.0" "test-storage nvme-irq=intx"
expect_event "$log" 120 "driver domain did not boot" boot mode=hvm entry=pvh
expect_event "$log" 120 "NVMe controller not brought up in the driver domain" nvme-up dev=nvme0 bdf=00:03.0
python3 - "$log" <<'PY' || fail "the BARs Bulkhead assigned are not where they must be (above)"
import re, sys
bars = []
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"result: name=pci-bar bdf=(\S+) bar=(\d) base=(0x[0-9a-f]+) size=(0x[0-9a-f]+) space=(\w+)", line)
    if m:
        bars.append((m.group(1), int(m.group(2)), int(m.group(3), 16), int(m.group(4), 16), m.group(5)))
ok = True
def bad(why):
    global ok
    ok = False
    print("hvm-nvme: " + why)
if not any(b[0] == "00:03.0" and b[1] == 0 and b[4] == "mem64" for b in bars):
    bad("no 64-bit BAR0 of the NVMe (00:03.0) among the assignments: %r" % bars)
for b in bars:
    lo, hi = (0xC000, 0x10000) if b[4] == "io" else (0xF0000000, 0xFC000000)
    if not (lo <= b[2] and b[2] + b[3] <= hi):
        bad("%s BAR%d at %#x+%#x is outside %#x-%#x" % (b[0], b[1], b[2], b[3], lo, hi))
    if b[2] % b[3]:
        bad("%s BAR%d at %#x is not aligned to its size %#x" % (b[0], b[1], b[2], b[3]))
    for c in bars:
        if c is not b and (c[4] == "io") == (b[4] == "io") and b[2] < c[2] + c[3] and c[2] < b[2] + b[3]:
            bad("%s BAR%d overlaps %s BAR%d" % (b[0], b[1], c[0], c[1]))
print("hvm-nvme: %d BARs assigned, all inside the window, aligned, none overlapping" % len(bars))
sys.exit(0 if ok and bars else 1)
PY
expect_result "$log" 10 "the NVMe's INTx line was not set to Xen's GSI for slot 3, INTA" pci-intx bdf=00:03.0 gsi=28
expect_event "$log" 10 "the NVMe is not on INTx through I/O APIC pin 28" nvme-up dev=nvme0 irq=intx pin=28
# The storage test's verdicts (result lines, kernel/src/nvme/test.rs).
expect_result "$log" 120 "pattern not verified" storage-test step=pattern-read part=nvme0n1p1 kib=1024 pass=1
expect_result "$log" 120 "write/flush/read-back failed" storage-test step=write-flush-read part=nvme0n1p2 block=4096 kib=256 pass=1
expect_result "$log" 60 "out-of-range read not handled" storage-test step=past-end-controller sct=0x0 sc=0x80 pass=1
expect_result "$log" 60 "storage test did not finish" storage-test "pass~^[01]$"
no_failed_results "$log" storage-test
no_panic "$log"
events "$log" nvme-up
results "$log" storage-test step=completions
dom0_healthy
echo "hvm-nvme: ok"
