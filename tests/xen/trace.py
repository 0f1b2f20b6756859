#!/usr/bin/env python3
"""Decode Bulkhead's flight recorder (kernel/src/machine/trace.rs) from its domain's memory.

    trace.py CORE [MAP]

CORE holds the memory of a driver domain Xen stopped behind its back (a triple fault):
the recorder's page (tests/xen/dd-peek.c) or an `xl dump-core` of the whole domain;
MAP is `nm`-style text symbols (run.sh writes bulkhead.map) to name the RIPs. Prints the
recorded events oldest first, with TSC deltas, so the last lines say what Bulkhead was
doing when it went down.
"""
import bisect
import struct
import sys

MAGIC = b"BULKHEAD-TRACE-1"
ENTRIES = 128
KINDS = {1: "vector", 2: "halt", 3: "wake", 4: "timer-arm", 5: "hypercall", 6: "hypercall-done"}
VECTORS = {0x20: "apic-timer", 0xF3: "xen-callback", 0xFF: "spurious", 8: "#DF", 13: "#GP", 14: "#PF"}


def symbols(path):
    addrs, names = [], []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split(None, 2)
                if len(parts) == 3:
                    addrs.append(int(parts[0], 16))
                    names.append(parts[2].strip())
    except OSError:
        pass
    return addrs, names


def name_of(addr, syms):
    addrs, names = syms
    i = bisect.bisect_right(addrs, addr) - 1
    if i < 0 or not addr:
        return ""
    return f" {names[i]}+{addr - addrs[i]:#x}"


def main():
    core = open(sys.argv[1], "rb").read()
    syms = symbols(sys.argv[2]) if len(sys.argv) > 2 else ([], [])
    at = core.find(MAGIC)
    if at < 0:
        print("trace: no flight recorder in the core dump")
        return 1
    if core.find(MAGIC, at + 1) >= 0:
        print("trace: note: the magic appears more than once; using the first")
    (count,) = struct.unpack_from("<Q", core, at + 16)
    base = at + 24
    first = max(0, count - ENTRIES)
    print(f"trace: {count} events recorded; the last {count - first}, oldest first:")
    prev = None
    for n in range(first, count):
        tsc, word, where = struct.unpack_from("<QQQ", core, base + (n % ENTRIES) * 24)
        kind, arg = word >> 32, word & 0xFFFFFFFF
        what = KINDS.get(kind, f"kind {kind}")
        if kind == 1:
            detail = f"{arg:#04x} {VECTORS.get(arg, '')} at {where:#x}{name_of(where, syms)}"
        elif kind in (5, 6):
            detail = f"nr {arg} {'arg1' if kind == 5 else 'ret'} {where:#x}"
        else:
            detail = f"{arg}"
        delta = "" if prev is None else f"+{tsc - prev}"
        prev = tsc
        print(f"trace: #{n} tsc {tsc} {delta:>12} {what} {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
