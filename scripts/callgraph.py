#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""scripts/callgraph.py: the worker's modules must call in one direction.

Reads daemon/worker/*.c as text: a function is defined where its name
starts a line (clang-format puts every top-level definition's name at
column 0), and called wherever `hl_w_name(` appears elsewhere. Prints the
module graph and fails (exit 1) on any cycle between files except the
upward calls named in UPWARD (each also named in a comment at its call
site). Usage: scripts/callgraph.py [--print]
"""
import collections
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (caller module, callee module, function): the only calls allowed to go
# against the order. dispatch -> recovery: after a restart a shard thread
# repairs a key's observer list itself before it dispatches to it.
UPWARD = {("dispatch", "recovery", "hl_w_rec_key_ready")}

defn = re.compile(r"^(hl_w_\w+)\(", re.M)
# Comments and string literals name functions without calling them.
noise = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"', re.S)
call = re.compile(r"\b(hl_w_\w+)\s*\(")


def graph():
    owner, text = {}, {}
    for path in sorted(glob.glob(os.path.join(ROOT, "daemon/worker/*.c"))):
        mod = os.path.basename(path)[:-2]
        with open(path) as f:
            text[mod] = noise.sub(lambda m: " " * len(m.group(0)), f.read())
        for name in defn.findall(text[mod]):
            owner[name] = mod
    edges = collections.defaultdict(set)
    for mod, src in text.items():
        for m in call.finditer(src):
            name = m.group(1)
            line_start = src.rfind("\n", 0, m.start()) + 1
            if m.start() == line_start:  # a definition, not a call
                continue
            to = owner.get(name)
            if to and to != mod:
                edges[mod].add((to, name))
    return edges


def cycles(adj):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj.get(v, ()):
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
                out.append(comp)

    for v in list(adj):
        if v not in index:
            visit(v)
    return out


def main():
    edges = graph()
    if "--print" in sys.argv:
        for mod in sorted(edges):
            print(f"{mod:10} -> {', '.join(sorted({t for t, _ in edges[mod]}))}")
    adj = {m: {t for t, f in e if (m, t, f) not in UPWARD} for m, e in edges.items()}
    bad = cycles(adj)
    for comp in bad:
        print(f"callgraph: the worker's modules {', '.join(sorted(comp))} call each other:",
              file=sys.stderr)
        for a in sorted(comp):
            for b, f in sorted(edges[a]):
                if b in comp:
                    print(f"  {a}.c -> {b}.c ({f})", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
