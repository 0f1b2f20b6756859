#!/usr/bin/env python3
"""The kernel crate's layering, checked from its source (make test-host).

1. No import cycle between its modules (parents and children included). A module
   depends on every module a path in it names: `crate::`, `super::`, `self::` paths,
   paths through a name it imported (`use ...::hv;` then `hv::...`, `use super::arch::{self}`
   then `arch::cpu::...`), through a name its parent or the crate root imported or
   re-exported (`super::hv` where the parent says `use crate::machine::hv`), and the
   modules an exported macro's expansion names, wherever the macro is used (`event!`
   reaches `console::logger`). A path is resolved to the longest module it names.
   Comments are left out; run-time registrations (a handler, the logger) are not paths
   and do not count, as docs/design.md says.
2. `unsafe` only inside kernel/src/machine/ (the crate root denies it everywhere else;
   this names the file at once).

Prints one line per finding and exits 1, or prints the module and edge counts.
Usage: tests/layers.py [KERNEL_SRC]   (default kernel/src)
"""
import collections
import os
import re
import sys

PATH = re.compile(r"(?<![\w:$])((?:\$?[a-z_][a-z0-9_]*::)+[A-Za-z_][A-Za-z0-9_]*)")


def modules(src):
    """Module path ('machine::arch::apic', '' for the root) -> its text, comments out."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                rel = os.path.relpath(os.path.join(root, f), src)[:-3]
                if rel.endswith("/mod"):
                    rel = rel[:-4]
                with open(os.path.join(root, f), encoding="utf-8") as fh:
                    text = re.sub(r"//[^\n]*", "", fh.read())
                mods["" if rel == "main" else rel.replace("/", "::")] = (os.path.join(root, f), text)
    return mods


def macro_bodies(text):
    """(name, body) of each macro_rules! in the text, and the text without them."""
    found, rest, at = [], [], 0
    for m in re.finditer(r"macro_rules!\s*(\w+)\s*\{", text):
        if m.start() < at:
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        found.append((m.group(1), text[m.end():i]))
        rest.append(text[at:m.start()])
        at = i
    rest.append(text[at:])
    return found, "".join(rest)


def use_trees(tree):
    """A `use` tree flattened: [(path, alias or None)]."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        m = re.match(r"^(.*?)(?:\s+as\s+(\w+))?$", tree, re.S)
        return [(m.group(1).strip(), m.group(2))]
    prefix, body = tree[:brace], tree[brace + 1:tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for part in filter(None, (p.strip() for p in parts)):
        for path, alias in use_trees(part):
            out.append((prefix.rstrip(":") if path == "self" else prefix + path, alias))
    return out


class Crate:
    def __init__(self, src):
        self.mods = modules(src)
        self.tops = {m for m in self.mods if m and "::" not in m}
        self.macros = {}  # exported macro -> the modules its expansion names
        self.texts = {}
        bodies = {}
        for m, (_, text) in self.mods.items():
            found, rest = macro_bodies(text)
            self.texts[m] = rest
            for name, body in found:
                bodies[name] = (m, body)
        self.aliases = collections.defaultdict(dict)
        for m, text in self.texts.items():
            for tree in re.findall(r"\buse\s+([^;]+);", text):
                for path, alias in use_trees(tree):
                    segs = self.absolute(m, path)
                    if segs is not None and (alias or segs[-1]) not in ("self", "*"):
                        self.aliases[m][alias or segs[-1]] = segs
        for name, (m, body) in bodies.items():
            self.macros[name] = {self.canon(s) for s in self.paths(m, body)}

    def absolute(self, m, path):
        """`path` as seen from module `m`, from the crate root; None: not ours."""
        segs = [s for s in path.split("::") if s]
        me = m.split("::") if m else []
        if not segs:
            return None
        if segs[0] in ("crate", "$crate"):
            return segs[1:]
        if segs[0] == "self":
            return me + segs[1:]
        if segs[0] == "super":
            base = me[:-1]
            segs = segs[1:]
            while segs and segs[0] == "super":
                base, segs = base[:-1], segs[1:]
            return base + segs
        if segs[0] in self.aliases.get(m, {}):
            return self.aliases[m][segs[0]] + segs[1:]
        if segs[0] in self.tops:
            return segs
        return None

    def canon(self, segs, depth=0):
        """The longest module the absolute path names, through imports and re-exports."""
        cur = []
        for i, s in enumerate(segs):
            if "::".join(cur + [s]) in self.mods:
                cur.append(s)
                continue
            target = self.aliases.get("::".join(cur), {}).get(s)
            if target and depth < 16:
                return self.canon(target + segs[i + 1:], depth + 1)
            break
        return "::".join(cur)

    def paths(self, m, text):
        for p in PATH.findall(text):
            segs = self.absolute(m, p)
            if segs is not None:
                yield segs

    def edges(self):
        edges = collections.defaultdict(set)
        for m, text in self.texts.items():
            targets = {self.canon(s) for s in self.paths(m, text)}
            targets |= {self.canon(s) for s in self.aliases[m].values()}
            for name in re.findall(r"\b(\w+)!\s*[(\[{]", text):
                targets |= self.macros.get(name, set())
            edges[m] = {t for t in targets if t != m and t != ""}
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
    crate = Crate(src)
    edges = crate.edges()
    bad = 0
    for comp in cycles(list(crate.mods), edges):
        bad += 1
        links = [f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp]
        print(f"layers: import cycle among {', '.join(comp)}: {'; '.join(links)}")
    for m, (f, text) in sorted(crate.mods.items()):
        if m != "machine" and not m.startswith("machine::") and re.search(r"\bunsafe\b", text):
            bad += 1
            print(f"layers: unsafe outside kernel/src/machine: {f}")
    if bad:
        sys.exit(1)
    count = sum(len(e) for e in edges.values())
    print(f"layers: {len(crate.mods)} modules, {count} imports, no cycle; unsafe only in machine/")


if __name__ == "__main__":
    main()
