#!/usr/bin/env python3
"""The kernel crate's layering, checked from its source (make test-host).

1. No import cycle between its modules: a module's dependencies are the modules its
   `crate::`, `super::` and `use` paths name (a path is resolved to the longest module it
   starts with; the root's `use machine::{...}` re-exports count as the machine's
   modules). Comments are left out; run-time registrations (a handler, the logger) are
   not paths and do not count, as docs/design.md says.
2. `unsafe` only inside kernel/src/machine/ (the crate root denies it everywhere else,
   this names the file at once).

Prints one line per finding and exits 1, or prints the module and edge counts.
Usage: tests/layers.py [KERNEL_SRC]   (default kernel/src)
"""
import collections
import os
import re
import sys


def modules(src):
    """Module path ('machine::arch::apic', '' for the root) -> file."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                rel = os.path.relpath(os.path.join(root, f), src)[:-3]
                if rel.endswith("/mod"):
                    rel = rel[:-4]
                mods["" if rel == "main" else rel.replace("/", "::")] = os.path.join(root, f)
    return mods


def paths(text, module):
    """Every module path the text names, absolute (without `crate::`)."""
    parent = "::".join(module.split("::")[:-1])

    def absolute(base, rest):
        if base == "crate":
            return rest
        return f"{parent}::{rest}" if parent else rest

    found = []
    for base, rest in re.findall(r"\b(crate|super)::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
        found.append(absolute(base, rest))
    # Grouped imports: crate::a::{b, c::d} and super::{b, c}.
    for base, prefix, group in re.findall(r"\b(crate|super)::((?:[a-z_][a-z0-9_]*::)*)\{([^}]*)\}", text):
        for item in group.split(","):
            item = item.strip().split(" ")[0]
            if item and item[0].islower() and item != "self":
                found.append(absolute(base, prefix + item))
    return found


def graph(mods):
    def resolve(path):
        parts = path.split("::")
        if parts[0] not in mods and "machine::" + parts[0] in mods:
            parts = ["machine"] + parts  # the root's `use machine::{...}`
        for i in range(len(parts), 0, -1):
            name = "::".join(parts[:i])
            if name in mods:
                return name
        return None

    edges = collections.defaultdict(set)
    for m, f in mods.items():
        with open(f, encoding="utf-8") as fh:
            text = re.sub(r"//[^\n]*", "", fh.read())
        for p in paths(text, m):
            r = resolve(p)
            # A module's own descendants and ancestors are its tree, not an import.
            if r and r != m and not m.startswith(r + "::") and not r.startswith(m + "::"):
                edges[m].add(r)
    return edges


def cycles(nodes, edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "kernel/src"
    mods = modules(src)
    edges = graph(mods)
    bad = 0
    for comp in cycles(list(mods), edges):
        bad += 1
        links = [f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp]
        print(f"layers: import cycle among {', '.join(comp)}: {'; '.join(links)}")
    for m, f in sorted(mods.items()):
        if m == "machine" or m.startswith("machine::"):
            continue
        with open(f, encoding="utf-8") as fh:
            text = re.sub(r"//[^\n]*", "", fh.read())
        if re.search(r"\bunsafe\b", text):
            bad += 1
            print(f"layers: unsafe outside kernel/src/machine: {f}")
    if bad:
        sys.exit(1)
    print(f"layers: {len(mods)} modules, {sum(len(v) for v in edges.values())} imports, no cycle; unsafe only in machine/")


if __name__ == "__main__":
    main()
