"""The `deepsparse-cy` console script: benchmark | profile | sparsify | check-hardware.

Argument parsing and printing only; the work is in deepsparse_cy.tools. A user mistake or an
engine error prints one `deepsparse-cy: error: ...` line on stderr and exits with status 2 (usage)
or 1 (the model could not be compiled or run); DEEPSPARSE_CY_DEBUG=1 shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

PROG = "deepsparse-cy"


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, no usage dump: same shape as every other error
        raise _CLIUsage(message)


class _CLIUsage(Exception):
    pass


def _positive_int(name):
    def conv(v):
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {v!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {n}")
        return n
    return conv


def _seconds(name):
    def conv(v):
        try:
            x = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number of seconds, got {v!r}") \
                from None
        if x < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {x}")
        return x
    return conv


def _sparsity(v):
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sparsity must be a number, got {v!r}") from None
    if not 0.0 <= x < 1.0:
        raise argparse.ArgumentTypeError(f"--sparsity must be in [0, 1), got {x}")
    return x


def _add_model_args(p, model_help):
    p.add_argument("model", nargs="?" if model_help.startswith("[") else None, metavar="MODEL",
                   help=model_help.strip("[]"))
    p.add_argument("-b", "--batch-size", type=_positive_int("--batch-size"), default=None,
                   help="batch size (overrides the first dimension of every input)")
    p.add_argument("-i", "--input-shapes", default=None,
                   help="input shapes, e.g. '[1,128],[1,128],[1,128]' (one shape applies to all "
                        "inputs); symbolic dims default to batch 1 and 128")
    p.add_argument("-ncores", "--num-cores", type=_positive_int("--num-cores"), default=None,
                   help="cores (threads) the engine may use (default: all)")


def build_parser():
    ap = _Parser(prog=PROG, description="deepsparse_cy: sparse INT8 ONNX inference on x86 CPUs")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    b = sub.add_parser("benchmark", help="throughput and latency of a model",
                       description="Benchmark a model. With no MODEL: "
                                   "zoo:bert-base-block4-pruned90-quant against its dense FP32 twin.")
    _add_model_args(b, "[ONNX file or zoo:NAME (built locally, no download)]")
    b.add_argument("-s", "--scenario", choices=("sync", "async"), default="sync",
                   help="sync: one stream; async: several concurrent streams sharing one engine")
    b.add_argument("-nstreams", "--num-streams", type=_positive_int("--num-streams"), default=None,
                   help="concurrent streams for --scenario async (default: max(2, cores))")
    b.add_argument("-t", "--time", type=_seconds("--time"), default=10.0,
                   help="measured seconds per contender (default 10)")
    b.add_argument("-w", "--warmup-time", type=_seconds("--warmup-time"), default=2.0,
                   help="warm-up seconds per contender (default 2)")
    b.add_argument("-x", "--export-json", default=None, metavar="PATH",
                   help="write the results as JSON")
    b.add_argument("--compare", action="append", default=[], metavar="WHAT",
                   help="also measure 'onnxruntime' on the same model, or 'dense' (the dense FP32 "
                        "twin of a zoo model), in alternating blocks of the same run; repeatable "
                        "or comma separated")
    b.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    b.add_argument("-q", "--quiet", action="store_true", help="no status lines or progress bar")

    p = sub.add_parser("profile", help="per-node time, kernel, sparsity and dense-vs-sparse speedup")
    _add_model_args(p, "ONNX file or zoo:NAME")
    p.add_argument("-n", "--iterations", type=_positive_int("--iterations"), default=5,
                   help="timed runs (median per node; default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--no-dense", action="store_true",
                   help="skip timing the dense kernel on each sparse layer")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="print the profile as JSON (to PATH, or stdout instead of the table)")
    p.add_argument("--plot", default=None, metavar="PATH.png",
                   help="bar chart of per-layer time dense vs sparse (needs matplotlib)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no status lines")

    s = sub.add_parser("sparsify", help="one-shot pruning (+ INT8 QDQ quantization)")
    s.add_argument("input", metavar="IN", help="ONNX file or zoo:NAME")
    s.add_argument("output", metavar="OUT", help="where to write the sparsified ONNX model")
    s.add_argument("--sparsity", type=_sparsity, default=0.9, help="target per layer (default 0.9)")
    s.add_argument("--pattern", choices=("unstructured", "block4"), default="unstructured",
                   help="unstructured (single weights) or block4 (1x4 blocks along the input dim)")
    s.add_argument("--override", action="append", default=[], metavar="NAME=SPARSITY",
                   help="per-layer sparsity by node or weight name (0 keeps it dense); repeatable")
    s.add_argument("--skip", action="append", default=[], metavar="NAME",
                   help="leave this layer (node or weight name) dense; repeatable")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--skip-first-last", dest="skip_first_last", action="store_true", default=True,
                   help="leave the first and last prunable layers dense (default)")
    g.add_argument("--no-skip-first-last", dest="skip_first_last", action="store_false",
                   help="prune the first and last layers too")
    s.add_argument("--quantize", choices=("none", "int8"), default="none",
                   help="int8: static QDQ quantization (u8 activations, s8 per-channel weights)")
    s.add_argument("--calibration-data", default=None, metavar="FILE.npz",
                   help="calibration inputs (one array per input name; a leading axis stacks "
                        "samples); default: seeded random inputs")
    s.add_argument("--num-calibration-samples", type=_positive_int("--num-calibration-samples"),
                   default=4, help="random calibration samples when no file is given (default 4)")
    s.add_argument("-b", "--batch-size", type=_positive_int("--batch-size"), default=None)
    s.add_argument("-i", "--input-shapes", default=None,
                   help="input shapes for calibration and the comparison, e.g. '[1,128]'")
    s.add_argument("--no-compare", action="store_true",
                   help="skip running both models to report the output difference")
    s.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-q", "--quiet", action="store_true")

    h = sub.add_parser("check-hardware", help="CPU, feature flags, kernel ISA, INT8 mode")
    h.add_argument("--json", action="store_true", help="print JSON instead of text")
    return ap


def _run(args):
    from . import tools
    if args.command == "benchmark":
        compare = [c.strip() for item in args.compare for c in item.split(",") if c.strip()]
        r = tools.benchmark_model(args.model, batch_size=args.batch_size,
                                  input_shapes=args.input_shapes, num_cores=args.num_cores,
                                  scenario=args.scenario, num_streams=args.num_streams,
                                  time_s=args.time, warmup_s=args.warmup_time, compare=compare,
                                  export_json=args.export_json, seed=args.seed,
                                  progress=False if args.quiet else None, quiet=args.quiet)
        print(tools.format_result(r))
    elif args.command == "profile":
        p = tools.profile_model(args.model, batch_size=args.batch_size,
                                input_shapes=args.input_shapes, num_cores=args.num_cores,
                                iterations=args.iterations, warmup=args.warmup,
                                dense_baseline=not args.no_dense, seed=args.seed,
                                quiet=args.quiet)
        if args.plot:
            tools.plot_profile(p, args.plot)
        if args.json == "-":
            print(tools.profile.to_json(p))
        else:
            if args.json:
                _write(args.json, tools.profile.to_json(p))
            print(tools.format_profile(p))
            if args.plot:
                print(f"Plot written to {args.plot}")
    elif args.command == "sparsify":
        r = tools.sparsify_model(args.input, args.output, sparsity=args.sparsity,
                                 pattern=args.pattern, overrides=args.override, skip=args.skip,
                                 skip_first_last=args.skip_first_last,
                                 quantize=None if args.quantize == "none" else args.quantize,
                                 calibration_data=args.calibration_data,
                                 num_calibration_samples=args.num_calibration_samples,
                                 input_shapes=args.input_shapes, batch_size=args.batch_size,
                                 seed=args.seed, compare=not args.no_compare, quiet=args.quiet)
        if args.json:
            _write(args.json, json.dumps(r, indent=2))
        print(tools.format_sparsify(r))
    elif args.command == "check-hardware":
        h = tools.check_hardware()
        print(json.dumps(h, indent=2) if args.json else tools.format_hardware(h))
    return 0


def _write(path, text):
    from .tools import UsageError
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None


def _fail(msg, code):
    lines = str(msg).strip().splitlines() or [""]
    # engine errors may list several nodes; the first line says what happened, the rest is detail
    print(f"{PROG}: error: {lines[0]}", file=sys.stderr)
    for extra in lines[1:]:
        print(f"  {extra.strip()}", file=sys.stderr)
    return code


def main(argv=None):
    debug = os.environ.get("DEEPSPARSE_CY_DEBUG", "") not in ("", "0")
    try:
        args = build_parser().parse_args(argv)
    except _CLIUsage as e:
        return _fail(e, 2)
    if not args.command:
        build_parser().print_help(sys.stderr)
        return 2
    from .errors import DeepSparseCyError
    from .tools import UsageError
    try:
        return _run(args)
    except UsageError as e:
        if debug:
            raise
        return _fail(e, 2)
    except DeepSparseCyError as e:
        if debug:
            raise
        return _fail(f"{type(e).__name__}: {e}", 1)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
