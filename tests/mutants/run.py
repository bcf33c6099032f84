#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tests/mutants/run.py: the mutation check (scripts/test --mutants).

Each tests/mutants/*.mutant plants one small bug. The runner copies the
tracked tree to a scratch directory, configures and builds it once, then for
each mutant: applies it to the scratch copy, rebuilds (incrementally), runs
the suite until the first failing test (the mutant's `tests:` first, then
the rest), and puts the file back. A mutant is

  killed      a test failed (or timed out) against it;
  survived    the whole suite passed: a gap in the tests;
  equivalent  declared so in the file, with the reason (not run, not scored);
  stillborn   it does not build, or its text is not found: the mutant
              itself is broken (reported, not scored; fix it).

Score = killed / (killed + survived). --runs N: after the first run finds
the test that kills a mutant, that test (only the cmocka test inside it
that failed first, through HL_TEST_FILTER) is run N-1 more times; the kill
counts (deterministic) only if it fails every time, else it is "flaky".

Mutant file format (one field per line; `find`/`replace` may repeat for a
multi-line change, taken in order):

  bug: what the planted bug is, in one line
  area: apply | replay | recovery | dispatch | lag | cleanup | keeper | library | idle
  file: path/from/the/root.c
  find: a line of the file, compared with leading/trailing blanks stripped;
        it must occur exactly once
  replace: what replaces it (the original line's indentation is kept)
  tests: names of the CTest tests most likely to kill it (run first)
  equivalent: why no test can tell it from the original (optional)
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(path):
    m = {"path": path, "name": os.path.basename(path)[:-len(".mutant")], "edits": [],
         "tests": [], "equivalent": None, "bug": "", "area": "", "file": None}
    pending = None
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, _, val = line.partition(":")
            key = key.strip()
            val = val[1:] if val.startswith(" ") else val
            if key == "find":
                pending = val
            elif key == "replace":
                if pending is None:
                    raise SystemExit(f"{path}: replace without find")
                m["edits"].append((pending, val))
                pending = None
            elif key == "tests":
                m["tests"] = val.split()
            elif key in ("bug", "area", "file", "equivalent"):
                m[key] = val.strip()
            else:
                raise SystemExit(f"{path}: unknown field '{key}'")
    if not m["file"] or not m["edits"] or not m["bug"]:
        raise SystemExit(f"{path}: needs bug, file, find and replace")
    return m


def apply(src_root, m):
    """Returns the original text (to restore), or raises ValueError."""
    path = os.path.join(src_root, m["file"])
    with open(path) as f:
        orig = f.read()
    lines = orig.split("\n")
    for find, repl in m["edits"]:
        hits = [i for i, l in enumerate(lines) if l.strip() == find.strip()]
        if len(hits) != 1:
            raise ValueError(f"'{find.strip()}' occurs {len(hits)} times in {m['file']}")
        i = hits[0]
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        lines[i] = indent + repl.strip() if repl.strip() else ""
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return orig


def restore(src_root, m, orig):
    with open(os.path.join(src_root, m["file"]), "w") as f:
        f.write(orig)


def sh(cmd, cwd, timeout=None, env=None):
    try:
        p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=env, text=True, errors="replace")
        return p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        return -1, (e.stdout or "") if isinstance(e.stdout, str) else ""


def list_tests(bdir):
    rc, out = sh(["ctest", "-N"], bdir)
    names = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Test") and "#" in line and ":" in line:
            names.append(line.split(":", 1)[1].strip())
    return names


def run_suite(bdir, order, budget, per_test, only=None):
    """Run tests in ORDER until one fails. Returns (killer or None, seconds,
    the first cmocka test that failed in it or None). ONLY: a cmocka test
    name pattern (HL_TEST_FILTER, tests/harness.c)."""
    t0 = time.time()
    env = dict(os.environ)
    if only:
        env["HL_TEST_FILTER"] = only
    for name in order:
        left = budget - (time.time() - t0)
        if left <= 0:
            return "(time limit)", time.time() - t0, None
        rc, out = sh(["ctest", "-R", f"^{name}$", "--timeout", str(per_test),
                      "--output-on-failure"], bdir, timeout=min(left, per_test + 30), env=env)
        if rc != 0:
            sub = None
            for line in out.splitlines():
                if line.startswith("[  FAILED  ] test_"):
                    sub = line.split()[-1]
                    break
            return name, time.time() - t0, sub
    return None, time.time() - t0, None


def main():
    ap = argparse.ArgumentParser(description="Run the mutants of tests/mutants/.")
    ap.add_argument("--only", default="", help="only mutants whose name contains this")
    ap.add_argument("--runs", type=int, default=1, help="runs per mutant (determinism)")
    ap.add_argument("--scratch", default="/tmp/hl-mutants", help="scratch directory")
    ap.add_argument("--budget", type=int, default=900, help="seconds per mutant run")
    ap.add_argument("--per-test", type=int, default=300, help="seconds per test")
    ap.add_argument("--skip", default="fuzz_replay_config",
                    help="tests left out (space separated)")
    ap.add_argument("--check", action="store_true",
                    help="only check that every mutant applies to this tree (no build)")
    args = ap.parse_args()

    mutants = [parse(p) for p in sorted(glob.glob(os.path.join(ROOT, "tests/mutants/*.mutant")))]
    mutants = [m for m in mutants if args.only in m["name"]]
    if not mutants:
        raise SystemExit("no mutants")
    if args.check:
        bad = 0
        for m in mutants:
            path = os.path.join(ROOT, m["file"])
            lines = open(path).read().split("\n") if os.path.exists(path) else []
            for find, _ in m["edits"]:
                n = sum(1 for l in lines if l.strip() == find.strip())
                if n != 1:
                    print(f"{m['name']}: '{find.strip()}' occurs {n} times in {m['file']}")
                    bad += 1
        print(f"{len(mutants)} mutants, {bad} that do not apply")
        sys.exit(1 if bad else 0)

    src = os.path.join(args.scratch, "src")
    bdir = os.path.join(args.scratch, "build")
    if os.path.exists(src):
        shutil.rmtree(src)
    os.makedirs(src)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           stdout=subprocess.PIPE, text=True, check=True).stdout.split("\n")
    for rel in files:
        if not rel or not os.path.isfile(os.path.join(ROOT, rel)):
            continue
        dst = os.path.join(src, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), dst)
    print(f"== scratch copy in {src}; configuring and building {bdir}", flush=True)
    rc, out = sh(["cmake", "-S", src, "-B", bdir, "-DHL_BENCH=OFF", "-DHL_WERROR=OFF"], ROOT)
    if rc:
        print(out)
        raise SystemExit("configure failed")
    jobs = str(os.cpu_count() or 2)
    rc, out = sh(["cmake", "--build", bdir, "-j", jobs], ROOT)
    if rc:
        print(out[-3000:])
        raise SystemExit("the unmutated tree does not build")
    skip = set(args.skip.split())
    all_tests = [t for t in list_tests(bdir) if t not in skip]

    results = []
    for m in mutants:
        if m["equivalent"]:
            results.append((m, "equivalent", m["equivalent"], 0.0))
            print(f"-- {m['name']}: equivalent ({m['equivalent']})", flush=True)
            continue
        try:
            orig = apply(src, m)
        except ValueError as e:
            results.append((m, "stillborn", str(e), 0.0))
            print(f"-- {m['name']}: STILLBORN ({e})", flush=True)
            continue
        try:
            rc, out = sh(["cmake", "--build", bdir, "-j", jobs], ROOT)
            if rc:
                results.append((m, "stillborn", "does not build", 0.0))
                print(f"-- {m['name']}: STILLBORN (does not build)", flush=True)
                continue
            first = [t for t in m["tests"] if t in all_tests]
            order = first + [t for t in all_tests if t not in first]
            # The first run walks the suite until a test fails; the
            # others rerun that test alone: a deterministic kill is the
            # same test failing every time.
            killer, secs, sub = run_suite(bdir, order, args.budget, args.per_test)
            kills = 1 if killer else 0
            if killer and killer != "(time limit)":
                for _ in range(args.runs - 1):
                    k2, dt, _ = run_suite(bdir, [killer], args.budget, args.per_test, sub)
                    secs += dt
                    kills += 1 if k2 else 0
                if sub:
                    killer = f"{killer}/{sub}"
            elif killer:
                kills = args.runs
            if kills == args.runs:
                verdict, by = "killed", killer
            elif kills:
                verdict, by = "flaky", f"{kills}/{args.runs} by {killer}"
            else:
                verdict, by = "SURVIVED", ""
            results.append((m, verdict, by, secs))
            print(f"-- {m['name']}: {verdict} {by} ({secs:.0f} s)", flush=True)
        finally:
            restore(src, m, orig)
    # Put the scratch build back to the unmutated tree (next run starts clean).
    sh(["cmake", "--build", bdir, "-j", jobs], ROOT)

    print()
    print(f"{'mutant':<40} {'area':<10} {'result':<11} by / why")
    for m, verdict, by, _ in results:
        print(f"{m['name']:<40} {m['area']:<10} {verdict:<11} {by}")
        print(f"{'':<40} {'':<10} {'':<11} ({m['bug']})")
    killed = sum(1 for r in results if r[1] == "killed")
    scored = sum(1 for r in results if r[1] in ("killed", "survived", "SURVIVED", "flaky"))
    equiv = sum(1 for r in results if r[1] == "equivalent")
    still = sum(1 for r in results if r[1] == "stillborn")
    score = 100.0 * killed / scored if scored else 0.0
    print(f"\nmutation score: {killed}/{scored} = {score:.1f} % "
          f"({equiv} equivalent, {still} stillborn, {args.runs} run(s) each; "
          f"a kill counts only when every run killed it)")
    sys.exit(0 if still == 0 and score >= 95.0 else 1)


if __name__ == "__main__":
    main()
