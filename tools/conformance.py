#!/usr/bin/env python
"""Count onnx backend node test cases this engine passes, compared as onnx's runner does.

    python tools/conformance.py                 # all cases, summary
    python tools/conformance.py --ops Conv,Add -v   # cases whose graph uses these ops, details
    python tools/conformance.py --name test_lstm -v # cases whose name contains a substring
    python tools/conformance.py --failures out.txt  # write failing case names + reasons

Each case: compile its model with deepsparse_cy, run every data set, compare with
onnx.backend.test.runner.Runner.assert_similar_outputs(ref, out, case.rtol, case.atol).
"""
import argparse
import collections
import signal
import sys
import time
import warnings

import numpy as np


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default="", help="comma list of op types (any node in the case)")
    ap.add_argument("--name", default="", help="substring of the case name")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--failures", default="", help="write failing cases to this file")
    ap.add_argument("--timeout", type=int, default=20, help="seconds per case")
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    from onnx.backend.test.case.node import collect_testcases
    from onnx.backend.test.runner import Runner

    import deepsparse_cy
    from deepsparse_cy.backend import DeepSparseCyBackend, proto_to_value

    cases = collect_testcases(None)
    ops = {o for o in args.ops.split(",") if o}
    if ops:
        cases = [c for c in cases if ops & {n.op_type for n in c.model.graph.node}]
    if args.name:
        cases = [c for c in cases if args.name in c.name]
    signal.signal(signal.SIGALRM, _alarm)
    passed = 0
    fails = []
    by_kind = collections.Counter()
    t0 = time.time()
    for c in cases:
        reason = None
        try:
            signal.alarm(args.timeout)
            rep = DeepSparseCyBackend.prepare(c.model.SerializeToString())
            for inputs, ref in c.data_sets:
                out = rep.run([proto_to_value(x) for x in inputs])
                ref = [proto_to_value(x) for x in ref]
                Runner.assert_similar_outputs(ref, list(out), rtol=c.rtol, atol=c.atol)
        except _Timeout:
            reason = "timeout"
        except deepsparse_cy.UnsupportedOperatorError as e:
            reason = "unsupported: " + ", ".join(sorted({t for _, t, _, _ in e.missing}))
        except AssertionError as e:
            reason = "mismatch: " + " ".join(str(e).split())[:300]
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: " + " ".join(str(e).split())[:300]
        finally:
            signal.alarm(0)
        if reason is None:
            passed += 1
            if args.verbose:
                print(f"PASS {c.name}")
        else:
            fails.append((c.name, reason))
            by_kind[reason.split(":")[0]] += 1
            if args.verbose:
                print(f"FAIL {c.name}: {reason}")
    dt = time.time() - t0
    if args.failures:
        with open(args.failures, "w") as fh:
            for n, r in fails:
                fh.write(f"{n}\t{r}\n")
    print(f"failure kinds: {dict(by_kind)}")
    print(f"conformance: {passed} passed, {len(fails)} failed of {len(cases)} onnx node test cases "
          f"({dt:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
