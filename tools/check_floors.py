#!/usr/bin/env python
"""Compare benchmark ratios measured in one run against the floors stored in the repository.

    python tools/check_floors.py --run                 # short CI pass (about 2-3 minutes), then check
    python tools/check_floors.py results.json          # check a pytest-benchmark --benchmark-json file
    python tools/check_floors.py results.json --suggest  # print floors at 60% of what was measured

Ratios come from benchmarks that store extra_info["ratios"] = {name: value} (higher is better):
sparse INT8 over dense FP32, deepsparse_cy over onnxruntime, sparse over dense kernels. Each was
timed side by side in the same run, so a slow or busy CI machine moves both sides of a ratio and
the check stays meaningful where absolute times would not. A ratio below its floor fails (exit 1);
a floor whose ratio was not measured fails too, unless the floor belongs to the full set
(`"set": "full"`) or needs a package that is missing (`"requires": "onnxruntime"`).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOORS = os.path.join(ROOT, "benchmarks", "floors.json")
SHORT_PASS = ["benchmarks/bench_models.py", "-k", "test_ratios or test_kernel_ratio_guard"]


def run_short_pass(json_path, extra=()):
    cmd = [sys.executable, "-m", "pytest", *SHORT_PASS, "-q", "-s", "-p", "no:cacheprovider",
           "--benchmark-only", f"--benchmark-json={json_path}", *extra]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def measured_ratios(results):
    out = {}
    for b in results.get("benchmarks", []):
        for k, v in (b.get("extra_info") or {}).get("ratios", {}).items():
            out[k] = float(v)
    return out


def check(ratios, floors, full=False):
    """[(name, measured | None, floor, status)], status in ok | FAIL | missing | skipped."""
    rows = []
    for name, f in sorted(floors.items()):
        floor = float(f["floor"])
        got = ratios.get(name)
        if got is None:
            req = f.get("requires")
            if req and importlib.util.find_spec(req) is None:
                rows.append((name, None, floor, "skipped", f"{req} not installed"))
            elif f.get("set") == "full" and not full:
                rows.append((name, None, floor, "skipped", "full set only"))
            else:
                rows.append((name, None, floor, "missing", "not measured"))
            continue
        rows.append((name, got, floor, "ok" if got >= floor else "FAIL", f.get("note", "")))
    for name in sorted(set(ratios) - set(floors)):
        rows.append((name, ratios[name], None, "no floor", ""))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", help="pytest-benchmark JSON (--benchmark-json output)")
    ap.add_argument("--run", action="store_true", help="run the short benchmark pass first")
    ap.add_argument("--floors", default=FLOORS, help="floors file (default benchmarks/floors.json)")
    ap.add_argument("--full", action="store_true",
                    help="the results come from a DSCY_BENCH_FULL=1 run: full-set floors count")
    ap.add_argument("--suggest", action="store_true",
                    help="print a floors table at --margin of the measured ratios")
    ap.add_argument("--margin", type=float, default=0.6)
    args = ap.parse_args(argv)
    if not args.run and not args.results:
        ap.error("give a results JSON or --run")
    try:
        with open(args.floors) as fh:
            floors = json.load(fh)["floors"]
    except (OSError, ValueError, KeyError) as e:
        print(f"check_floors: cannot read floors {args.floors}: {e}", file=sys.stderr)
        return 2
    path = args.results
    if args.run:
        path = path or os.path.join(tempfile.mkdtemp(prefix="dscy_bench_"), "short.json")
        rc = run_short_pass(path)
        if rc != 0:
            print(f"check_floors: the benchmark pass failed (pytest exit {rc})", file=sys.stderr)
            return 1
    try:
        with open(path) as fh:
            ratios = measured_ratios(json.load(fh))
    except (OSError, ValueError) as e:
        print(f"check_floors: cannot read results {path}: {e}", file=sys.stderr)
        return 2
    if args.suggest:
        sugg = {k: {"floor": round(v * args.margin, 3), "measured": round(v, 3)}
                for k, v in sorted(ratios.items())}
        print(json.dumps(sugg, indent=2))
        return 0
    rows = check(ratios, floors, full=args.full)
    w = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{'ratio':<{w}}  {'measured':>9}  {'floor':>7}  status")
    for name, got, floor, status, note in rows:
        g = f"{got:9.3f}" if got is not None else "        -"
        fl = f"{floor:7.3f}" if floor is not None else "      -"
        print(f"{name:<{w}}  {g}  {fl}  {status}{'  (' + note + ')' if note else ''}")
    bad = [r for r in rows if r[3] in ("FAIL", "missing")]
    if bad:
        print(f"\n{len(bad)} ratio(s) below their floor or not measured", file=sys.stderr)
        return 1
    print("\nall ratios at or above their floors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
