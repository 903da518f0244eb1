"""Shared plumbing of the command-line tools: model specs (file | zoo:NAME), --input-shapes
parsing, concrete shapes and seeded inputs for a compiled engine, and a dependency-free progress
bar. Everything a user can get wrong raises UsageError with one readable line; the CLI prints it
and exits non-zero without a traceback.
"""
from __future__ import annotations

import os
import re
import sys
import time

import numpy as np
import onnx

from ..errors import DeepSparseCyError

DEFAULT_SEQUENCE = 128      # symbolic non-batch dims (BERT's "sequence") default to this


class UsageError(DeepSparseCyError):
    """A mistake in what the user asked for (missing file, bad zoo name, bad flag value)."""


# -- models -----------------------------------------------------------------------------------
def _zoo():
    try:
        from .. import zoo
    except ImportError as e:   # the zoo package is part of the project; an import failure is a bug
        raise UsageError(f"built-in models are not available: {e}") from e
    if not hasattr(zoo, "get_model"):
        raise UsageError("built-in models are not available: deepsparse_cy.zoo has no get_model")
    return zoo


def zoo_names():
    try:
        return list(_zoo().list_models())
    except (UsageError, AttributeError):
        return []


def is_zoo_spec(spec):
    return isinstance(spec, str) and spec.startswith("zoo:")


def load_spec(spec, progress=None):
    """(onnx.ModelProto, display name) for a file path or 'zoo:NAME'. Zoo models are generated
    locally (no download); ModelProto passes through."""
    if isinstance(spec, onnx.ModelProto):
        return spec, spec.graph.name or "<model>"
    if not isinstance(spec, (str, os.PathLike)):
        raise UsageError(f"MODEL must be a file path or zoo:NAME, got {type(spec).__name__}")
    spec = os.fspath(spec)
    if is_zoo_spec(spec):
        name = spec[4:]
        zoo = _zoo()
        try:
            zoo.parse_name(name)
        except KeyError:
            raise UsageError(f"unknown built-in model {name!r}; choose one of: "
                             f"{', '.join(zoo_names())} (or bert-tiny[-...] for quick tests)") \
                from None
        if progress:
            progress(f"loading zoo:{name} (generated locally on first use, then cached) ...")
        model = zoo.get_model(name)
        return model, spec
    if not os.path.exists(spec):
        raise UsageError(f"model file not found: {spec}")
    if os.path.isdir(spec):
        cand = os.path.join(spec, "model.onnx")
        if not os.path.isfile(cand):
            raise UsageError(f"{spec} is a folder without a model.onnx")
        spec = cand
    try:
        model = onnx.load_model(spec)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types on garbage
        raise UsageError(f"cannot read ONNX model {spec}: {type(e).__name__}: {e}") from None
    return model, spec


def dense_twin_name(name):
    """zoo name of the dense FP32 model a pruned/quantized zoo model derives from."""
    try:
        return _zoo().parse_name(name)[0]
    except KeyError:
        raise UsageError(f"unknown built-in model {name!r}; choose one of: "
                         f"{', '.join(zoo_names())}") from None


# -- shapes and inputs -------------------------------------------------------------------------
_SHAPE = r"\[\s*\d+(?:\s*,\s*\d+)*\s*\]"


def parse_input_shapes(text):
    """'[1,128],[1,128]' (DeepSparse's syntax) or '1,128' -> list of shapes."""
    if text is None:
        return None
    t = text.strip()
    if re.fullmatch(r"\d+(?:\s*,\s*\d+)*", t):
        t = f"[{t}]"
    if not re.fullmatch(rf"{_SHAPE}(?:\s*,\s*{_SHAPE})*", t):
        raise UsageError(f"bad --input-shapes {text!r}: expected e.g. '[1,128],[1,128]' "
                         "(one bracketed list of positive ints per input)")
    shapes = [[int(d) for d in s.strip("[] ").split(",")] for s in re.findall(_SHAPE, t)]
    if any(d < 1 for s in shapes for d in s):
        raise UsageError(f"bad --input-shapes {text!r}: dimensions must be positive")
    return shapes


def _declared_inputs(model):
    inits = {t.name for t in model.graph.initializer}
    out = []
    for v in model.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        dims = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                    for d in tt.shape.dim]
        out.append((v.name, tt.elem_type, dims))
    return out


def resolve_shapes(model, batch_size=None, input_shapes=None):
    """Concrete shapes for every graph input: --input-shapes first (one shape applies to every
    input), then the model's own static dims; a symbolic first dim is the batch (default 1), other
    symbolic dims are DEFAULT_SEQUENCE. batch_size overrides the first dim. Returns
    (names, shapes, batch)."""
    decl = _declared_inputs(model)
    names = [n for n, _, _ in decl]
    if input_shapes is not None:
        if len(input_shapes) == 1 and len(decl) > 1:
            input_shapes = input_shapes * len(decl)
        if len(input_shapes) != len(decl):
            raise UsageError(f"--input-shapes gives {len(input_shapes)} shapes; the model has "
                             f"{len(decl)} inputs {names}")
    shapes = []
    for i, (name, _, dims) in enumerate(decl):
        if input_shapes is not None:
            s = list(input_shapes[i])
            if dims is not None:
                if len(s) != len(dims):
                    raise UsageError(f"--input-shapes for {name!r} has rank {len(s)}; the model "
                                     f"declares {dims}")
                for j, (a, b) in enumerate(zip(s, dims)):
                    if isinstance(b, int) and b > 0 and a != b and not (j == 0 and batch_size):
                        raise UsageError(f"--input-shapes for {name!r}: {s} conflicts with the "
                                         f"model's fixed shape {dims}")
        elif dims is None:
            raise UsageError(f"input {name!r} has no declared shape; pass --input-shapes")
        else:
            s = [d if isinstance(d, int) and d > 0 else (1 if j == 0 else DEFAULT_SEQUENCE)
                 for j, d in enumerate(dims)]
        if batch_size is not None and s:
            s[0] = int(batch_size)
        shapes.append(s)
    batch = shapes[0][0] if shapes and shapes[0] else 1
    return names, shapes, batch


def compile_for(model, shapes, batch, num_cores=None):
    """Compile `model` for concrete `shapes`. A fixed first dim the model declares is kept in
    input_shapes and overridden through batch_size, so the engine's conflict check passes."""
    from ..engine import compile_model
    decl = _declared_inputs(model)
    eng_shapes = []
    for (_, _, dims), s in zip(decl, shapes):
        s = list(s)
        if dims and s and isinstance(dims[0], int) and dims[0] > 0:
            s[0] = dims[0]
        eng_shapes.append(s)
    return compile_model(model, batch_size=batch if decl and shapes[0] else None,
                         num_cores=num_cores, input_shapes=eng_shapes or None)


def _index_bounds(model):
    """Upper bound for integer inputs used as Gather indices into an initializer (vocabularies)."""
    inits = {t.name: t for t in model.graph.initializer}
    bounds = {}
    for n in model.graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[0] in inits:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            dims = inits[n.input[0]].dims
            if dims:
                hi = int(dims[axis])
                bounds[n.input[1]] = min(bounds.get(n.input[1], hi), hi)
    return bounds


def _zoo_inputs(model, shapes, seed):
    """zoo.example_inputs (realistic masks, token types, image ranges) when it yields exactly
    these shapes, else None."""
    try:
        from ..zoo import example_inputs
    except ImportError:
        return None
    if not shapes or not shapes[0]:
        return None
    seq = next((d for s in shapes for d in s[1:2]), DEFAULT_SEQUENCE)
    try:
        feeds = example_inputs(model, batch=shapes[0][0], seq=seq, seed=seed)
    except Exception:  # noqa: BLE001 - fall back to the generic generator
        return None
    xs = [feeds.get(n) for n, _, _ in _declared_inputs(model)]
    if any(x is None or list(x.shape) != list(s) for x, s in zip(xs, shapes)):
        return None
    return xs


def make_inputs(model, shapes, seed=0):
    """Seeded inputs for the given concrete shapes. Floats ~ N(0, 1); integer inputs read as
    indices into an embedding table stay inside it; masks are ones and other ints are 0/1."""
    feeds = _zoo_inputs(model, shapes, seed)
    if feeds is not None:
        return feeds
    rng = np.random.default_rng(seed)
    bounds = _index_bounds(model)
    out = []
    for (name, elem, _), shape in zip(_declared_inputs(model), shapes):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else np.dtype(np.float32)
        if np.issubdtype(dtype, np.floating):
            x = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            x = np.ones(shape, dtype=bool)
        elif np.issubdtype(dtype, np.integer):
            if "mask" in name.lower():
                x = np.ones(shape, dtype=dtype)
            elif name in bounds:
                x = rng.integers(0, bounds[name], size=shape).astype(dtype)
            else:
                x = np.zeros(shape, dtype=dtype)
        else:
            raise UsageError(f"input {name!r}: cannot generate data of type {dtype}")
        out.append(x)
    return out


# -- progress bar ------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total, label="", enabled=None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = (self.stream.isatty() if enabled is None else enabled)
        self.total = max(float(total), 1e-9)
        self.label = label
        self._last = 0.0

    def update(self, done, label=None, force=False):
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        if label is not None:
            self.label = label
        frac = min(max(done / self.total, 0.0), 1.0)
        width = 30
        filled = int(frac * width)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r[{bar}] {frac * 100:5.1f}% {self.label[:40]:<40}")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()


def note(msg, quiet=False):
    """Status line on stderr (keeps stdout clean for the results)."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)
