"""Engine: compile an ONNX model once, run it many times out of a planned memory arena.

compile:  load -> IR -> identity removal -> schedule -> BN folding -> constant folding -> dead-node
          removal -> one Op instance per node (weights packed once).
run:      inputs are checked against the model's declared dtypes and shapes; a Plan is looked up
          by the input shapes (built by the first call with those shapes) and the schedule runs
          with every intermediate tensor of statically known shape in one preallocated arena.
          Shape arithmetic that depends only on input shapes is folded into the plan.
"""
from __future__ import annotations

import itertools
import os
import threading

import numpy as np

from . import limits
from . import ops as _ops
from .errors import (DeepSparseCyError, InputError, ModelLoadError, NodeError, ResourceError,
                     ShapeError, UnsupportedOperatorError)
from .graph import arena as _arena
from .graph import fusion, ir, loader, passes
from .graph.schedule import node_reads, topological_order
from .kernels import _f32_ops
from .ops.registry import OpContext
from .ops.tensor import _nothing as _tensor_nothing

# Inputs whose VALUES decide an op's output shape: the output shape is fixed by input shapes
# only when these inputs are known when the plan is built.
SHAPE_INPUTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3),
    "Range": (0, 1, 2), "ConstantOfShape": (0,), "OneHot": (1,), "TopK": (1,),
    "Resize": (1, 2, 3), "Upsample": (1,), "Split": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
    "CenterCropPad": (1, 2), "Col2Im": (1, 2), "DFT": (1, 2), "STFT": (1, 2, 3),
    "HannWindow": (0,), "HammingWindow": (0,), "BlackmanWindow": (0,),
    "MelWeightMatrix": (0, 1, 2, 3, 4), "MaxUnpool": (2,), "AffineGrid": (1,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
    "ReduceProd": (1,), "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,), "Attention": (), "TfIdfVectorizer": (),
}
# Ops whose outputs never get a planned shape (values, sequences or branches decide it).
DYNAMIC_OPS = {"If", "Loop", "Scan", "SequenceMap", "NonZero", "Unique", "Compress",
               "NonMaxSuppression", "StringSplit", "ImageDecoder", "SplitToSequence",
               "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase",
               "SequenceAt", "ConcatFromSequence", "Optional", "OptionalGetElement"}


def _default_budget():
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(pages * 0.8)
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def _root(a):
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


def _wrap_node_error(node, e):
    if isinstance(e, DeepSparseCyError):
        cls = type(e)
        msg = str(e)
        if node.describe() in msg:
            return e
        if isinstance(e, ResourceError):   # MemoryError's __new__ refuses the copy below
            return ResourceError(f"{node.describe()}: {msg}")
        try:
            new = cls.__new__(cls)
            Exception.__init__(new, f"{node.describe()}: {msg}")
            return new
        except Exception:  # noqa: BLE001
            return NodeError(f"{node.describe()}: {msg}")
    if isinstance(e, MemoryError):
        return ResourceError(f"{node.describe()}: out of memory ({e})")
    return NodeError(f"{node.describe()} failed: {type(e).__name__}: {e}")


#: graph outputs up to this many bytes get an arena slot (see Engine._build_plan)
GRAPH_OUTPUT_SLOT_MAX = 256 * 1024
#: feeds up to this many bytes are copied into an arena slot of their own at the start of a
#: run (see Engine._build_plan)
FEED_SLOT_MAX = 64 * 1024

_NO_SLOTS = itertools.repeat(None)  # zip() partner for steps without planned slots
# ops whose output is a view of their first input whenever numpy can make one
_VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def _piece_offsets(pieces, shapes, whole, dt, fits):
    """Byte offsets of values `pieces` laid one after another in a value of shape `whole` and
    dtype dt (an in-place Concat's inputs, an in-place Split's outputs), or None unless every
    piece fits (fits(name)) and together they fill it exactly."""
    off, offs = 0, []
    for x in pieces:
        if not fits(x):
            return None
        offs.append(off)
        off += int(np.prod(shapes[x][0], dtype=np.int64)) * dt.itemsize
    return offs if off == int(np.prod(whole, dtype=np.int64)) * dt.itemsize else None


def _no_call():
    """A planned view's bound step: its output view object is reused as it is."""


def _detach(v, buf):
    if isinstance(v, np.ndarray):
        return v.copy() if _root(v) is buf else v
    if isinstance(v, np.generic):
        return np.asarray(v)
    if isinstance(v, list):
        return [_detach(x, buf) for x in v]
    return v


def _copy_into(dst, src):
    if src.flags.c_contiguous and dst.flags.c_contiguous and src.dtype == dst.dtype \
            and src.dtype != object and src.nbytes and not np.may_share_memory(dst, src):
        # vector moves: glibc's memmove is pathologically slow between page-aligned buffers on
        # some AMD CPUs (kernels/csrc/dscy_pool.h)
        _f32_ops.copy_strided_blocks(src, dst, 1, 0, src.nbytes)
    else:
        np.copyto(dst, src)


class _Replan(Exception):
    def __init__(self, name):
        super().__init__(name)
        self.name = name


class _BlasLimit:
    """Process-wide BLAS thread cap shared by concurrent runs: the first run entering sets it
    (to the smallest num_cores among the engines running), the last one leaving restores it.
    threadpoolctl's own context manager would restore out of order under threads."""
    _lock = threading.Lock()
    _active = []          # num_cores of runs in flight
    _saved = None

    def __init__(self, n):
        self.n = n

    _blas = None    # threadpoolctl's BLAS library controllers, found once: threadpool_limits
                    # scans the loaded libraries on each call (~1.7 ms a run); its limit()
                    # re-reads each library's configuration (~65 us)

    class _Saved:
        def __init__(self, libs):
            self.saved = [(lib, lib.num_threads) for lib in libs]

        def restore_original_limits(self):
            for lib, n in self.saved:
                lib.set_num_threads(n)

    @classmethod
    def _limit(cls, n):
        if cls._blas is None:
            from threadpoolctl import ThreadpoolController
            cls._blas = [lib for lib in ThreadpoolController().lib_controllers
                         if lib.user_api == "blas"]
        saved = cls._Saved(cls._blas)
        for lib in cls._blas:
            lib.set_num_threads(n)
        return saved

    def __enter__(self):
        with self._lock:
            cls = type(self)
            if not cls._active:
                cls._saved = cls._limit(self.n)
            elif self.n < min(cls._active):
                cls._limit(self.n)
            cls._active.append(self.n)
        return self

    def __exit__(self, *exc):
        with self._lock:
            cls = type(self)
            cls._active.remove(self.n)
            if not cls._active and cls._saved is not None:
                cls._saved.restore_original_limits()
                cls._saved = None
        return False


class Program:
    """A graph compiled to Op instances in schedule order; runs without an arena (heap mode).

    Used directly for subgraphs (If/Loop/Scan bodies); the Engine adds plans and the arena."""

    def __init__(self, graph, opsets, num_threads=None, outer=(), optimize=False):
        self.graph = graph
        self.opsets = opsets
        self.num_threads = num_threads
        available = set(graph.initializers) | set(graph.input_names) | set(outer) | graph.outer_names
        missing = []
        collect_unsupported(graph, opsets, missing)
        if missing:
            raise UnsupportedOperatorError(missing)
        if optimize:
            passes.remove_identities(graph)
        graph.nodes = topological_order(graph.nodes, available)
        if optimize:
            passes.fold_batchnorm_into_conv(graph)
            self._refused = []
            passes.fold_constants(graph, self._evaluate)
            if self._refused:   # a constant over the memory budget: refuse the model now
                raise self._refused[0]
            passes.remove_dead_nodes(graph)
            if os.environ.get("DEEPSPARSE_CY_NO_FUSION", "") not in ("1", "true"):
                if fusion.fuse(graph, opsets):
                    available = (set(graph.initializers) | set(graph.input_names) | set(outer)
                                 | graph.outer_names)
                    graph.nodes = topological_order(graph.nodes, available)
                passes.remove_dead_nodes(graph)
        self.consts = dict(graph.initializers)
        self.steps = [self._instantiate(n) for n in graph.nodes]
        self.input_names = graph.input_names
        self.output_names = graph.output_names
        # last step reading each value (for freeing heap values early)
        self.last_use = {}
        for i, (n, _) in enumerate(self.steps):
            for x in node_reads(n):
                self.last_use[x] = i

    # -- compile helpers ----------------------------------------------------------------------
    def _ctx(self, node, consts):
        opset = self.opsets.get(node.domain, 1)
        return OpContext(node, opset, consts, self._compile_subgraph, self.num_threads)

    def _factory(self, node):
        return _ops.resolve(node.op_type, node.domain, self.opsets.get(node.domain, 0))

    def _instantiate(self, node):
        consts = {i: self.graph.initializers[x] for i, x in enumerate(node.inputs)
                  if x and x in self.graph.initializers}
        try:
            op = self._factory(node)(node, self._ctx(node, consts))
        except DeepSparseCyError as e:
            raise _wrap_node_error(node, e) from e
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{node.describe()}: cannot compile: {type(e).__name__}: {e}") from e
        return node, op

    def _evaluate(self, node, inputs):
        consts = {i: v for i, v in enumerate(inputs) if v is not None}
        op = self._factory(node)(node, self._ctx(node, consts))
        try:
            res = op.run(list(inputs), None)
        except ResourceError as e:
            # fold_constants leaves failing nodes to run time; over-budget ones fail compile
            getattr(self, "_refused", []).append(_wrap_node_error(node, e))
            return None
        return list(res)[: len(node.outputs)]

    def _compile_subgraph(self, sub):
        prog = Program(sub, self.opsets, self.num_threads)

        def run(feeds):
            return prog.run_heap(feeds)
        run.program = prog
        return run

    # -- heap-mode execution --------------------------------------------------------------------
    def run_heap(self, feeds, record=None):
        env = dict(self.consts)
        env.update(feeds)
        outputs = set(self.output_names)
        for i, (node, op) in enumerate(self.steps):
            ins = [env[x] if x else None for x in node.inputs] + [env[x] for x in node.implicit_inputs]
            try:
                res = op.run(ins, None)
            except Exception as e:  # noqa: BLE001
                raise _wrap_node_error(node, e) from e
            _bind_outputs(node, res, env)
            if record is not None:
                record(i, node, env)
            for x in node_reads(node):
                if self.last_use.get(x) == i and x not in outputs and x not in self.consts \
                        and x not in feeds:
                    env.pop(x, None)
        try:
            return [env[o] for o in self.output_names]
        except KeyError as e:
            raise NodeError(f"graph output {e.args[0]!r} was not produced") from None


def _bind_outputs(node, res, env):
    if len(res) < len([o for o in node.outputs if o]) and any(
            o for o in node.outputs[len(res):]):
        raise NodeError(f"{node.describe()} produced {len(res)} outputs, the node names "
                        f"{len(node.outputs)}")
    for name, r in zip(node.outputs, res):
        if name:
            # numpy indexing can hand back scalars; ONNX values are always arrays
            env[name] = np.asarray(r) if isinstance(r, np.generic) else r


def collect_unsupported(graph, opsets, missing):
    for n in graph.nodes:
        if n.domain not in opsets:
            missing.append((n.name, n.op_type, n.domain, None))
        elif _ops.resolve(n.op_type, n.domain, opsets[n.domain]) is None:
            missing.append((n.name, n.op_type, n.domain, opsets[n.domain]))
        for sub in ir.subgraphs(n):
            collect_unsupported(sub, opsets, missing)


def _fast_program(plan, inst, graph_outputs):
    """The segments of an arena instance's fast runs (Engine._run_fast), once every step is
    bound (inst.bound: a call tuple) or known not to bind (False). A bound step joins a run
    of plain calls when each input it checks is fixed: a constant, or an output of an
    earlier step that always sits in the same object, i.e. a step in such a run (its outputs
    are its slots or its planned view) or a slot output of a step run by _run_step (pinned:
    copied into its slot when the op computes it elsewhere, as such a step relies on). Its
    checks then hold on every run, so they are not repeated. Other steps run through
    _run_step, checks included. Each segment: (calls, nodes, outputs to record for later
    steps) for a run of calls, or (None, step index, its pinned outputs). Steps that call
    nothing (planned views, in-place Splits) are left out of the calls, their outputs
    recorded."""
    fixed = dict(inst.feed_views)  # (the feeds copied into their slots by every run)
    by_step = {}                   # a slot output of a step run through _run_step: its step
    pinned = {}
    needed = set(graph_outputs)
    kinds = []
    for i, (st, b) in enumerate(zip(plan.steps, inst.bound)):
        node = st[0]
        if b and all(fixed.get(name) is obj for name, obj in b[2]):
            kinds.append(True)
            fixed.update(b[3])
            for name, _ in b[2]:
                if name in by_step:
                    pinned.setdefault(by_step[name], set()).add(name)
            continue
        kinds.append(False)
        needed.update(x for x in st[2] if x)
        outs = inst.step_outs[i]
        is_view = node.op_type in _VIEW_OPS and node.outputs and node.outputs[0] in plan.aliases
        for name in node.outputs:
            fixed.pop(name, None)
            by_step.pop(name, None)
        if outs is not None and not is_view:
            for name, slot in zip(node.outputs, outs):
                if name and slot is not None:
                    fixed[name] = slot
                    by_step[name] = i
    segs = []
    for fast, grp in itertools.groupby(range(len(kinds)), key=lambda i: kinds[i]):
        grp = list(grp)
        if not fast:
            segs.extend((None, i, frozenset(pinned.get(i, ()))) for i in grp)
            continue
        calls, nodes, sets = [], [], []
        for i in grp:
            b = inst.bound[i]
            if b[0] is not _no_call and b[0] is not _tensor_nothing:
                calls.append((b[0], b[1]))
                nodes.append(plan.steps[i][0])
            sets.extend((name, r) for name, r in b[3] if name in needed)
        segs.append((calls, nodes, sets))
    return segs


class Plan:
    """Everything that depends on the input shapes: folded values, steps, arena layout."""

    def __init__(self, program, steps, consts, slots, arena_bytes, report):
        self.aliases = set()            # outputs kept as views of their input's slot
        self.split_views = frozenset()  # Split outputs kept as pieces of their input's slot
        self.feed_slots = ()            # feeds copied into a slot (their key) by each run
        self.program = program
        self.steps = steps              # list of (node, op, reads, slot_keys, frees)
        self.consts = consts            # name -> value known for these shapes
        self.slots = slots              # key -> (offset, shape, dtype)
        self.arena_bytes = arena_bytes
        self.report = report
        self._pool = []

    def acquire(self):
        try:
            return self._pool.pop()
        except IndexError:
            return _ArenaInstance(self)

    def release(self, inst):
        self._pool.append(inst)


class _ArenaInstance:
    def __init__(self, plan):
        # the slots sit at 64-byte aligned offsets from a 64-byte aligned start (numpy aligns
        # to 16 bytes only: a kernel's zmm loads of a slot would straddle cache lines); buf is
        # the root array of every slot view (_root)
        self.buf = np.empty(max(plan.arena_bytes, 64) + 64, dtype=np.uint8)
        base = (-self.buf.ctypes.data) % 64
        views = {}
        for key, (off, shape, dtype) in plan.slots.items():
            n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            views[key] = self.buf[base + off: base + off + n].view(dtype).reshape(shape)
        self.feed_views = tuple((name, views[name]) for name in plan.feed_slots)
        self.step_outs = [[views.get(k) if k is not None else None for k in st[3]]
                          if any(k is not None for k in st[3]) else None for st in plan.steps]
        # per step: None (not tried yet), False (no bound call), or (function, args, checks,
        # outputs) from the op's bind(): the step's kernel with its arguments prepared, valid
        # while the step reads the same input objects (checks: (name, object) pairs)
        # (planned views: tried too, they bind to no call; see Engine._bind)
        # the instance's fast runs (_fast_program), once no step is None here
        self.fast = None
        self.bound = [None if (getattr(st[1], "bind", None) is not None and outs is not None)
                      or (st[0].op_type in _VIEW_OPS and st[0].outputs
                          and st[0].outputs[0] in plan.aliases)
                      else False for st, outs in zip(plan.steps, self.step_outs)]


class Engine:
    """A compiled model. See compile_model for the arguments."""

    def __init__(self, model, batch_size=None, num_cores=None, input_shapes=None, *,
                 memory_planner=None, memory_budget=None):
        proto, base_dir = loader.load_model(model)
        opsets = loader.opset_map(proto)
        graph = ir.graph_from_proto(proto.graph, opsets, base_dir)
        if not graph.outputs:
            raise ModelLoadError("model graph has no outputs")
        self.memory_budget = int(memory_budget) if memory_budget else _default_budget()
        if memory_planner is None:
            memory_planner = os.environ.get("DEEPSPARSE_CY_NO_ARENA", "") not in ("1", "true")
        self.memory_planner = bool(memory_planner)
        ncpu = os.cpu_count() or 1
        if num_cores is not None and (not isinstance(num_cores, int) or num_cores < 1):
            raise InputError(f"num_cores must be a positive int, got {num_cores!r}")
        self.num_cores = min(num_cores, ncpu) if num_cores else ncpu
        self._ncpu = ncpu      # os.cpu_count() costs ~10 us a call (it reads sysfs)
        self._apply_shapes(graph, batch_size, input_shapes)
        with limits.memory_budget(self.memory_budget):
            self._program = Program(graph, opsets, self.num_cores, optimize=True)
        # the constants' buffers, fixed once compiled: outputs sharing them are copied out
        self._const_roots = frozenset(id(_root(v)) for v in self._program.consts.values())
        self.graph = graph
        self.opsets = opsets
        self._plans = {}
        self._dynamic = set()
        self._lock = threading.Lock()

    # -- public description -------------------------------------------------------------------
    @property
    def input_names(self):
        return [v.name for v in self.graph.inputs]

    @property
    def output_names(self):
        return [v.name for v in self.graph.outputs]

    @property
    def input_shapes(self):
        return [list(v.shape) if v.shape is not None else None for v in self.graph.inputs]

    @property
    def output_shapes(self):
        return [list(v.shape) if v.shape is not None else None for v in self.graph.outputs]

    @property
    def input_dtypes(self):
        return [v.dtype for v in self.graph.inputs]

    def __repr__(self):
        return (f"deepsparse_cy.Engine(inputs={self.input_names}, outputs={self.output_names}, "
                f"num_cores={self.num_cores}, nodes={len(self._program.steps)})")

    # -- shapes ---------------------------------------------------------------------------------
    def _apply_shapes(self, graph, batch_size, input_shapes):
        if input_shapes is not None:
            shapes = input_shapes
            if isinstance(shapes, dict):
                unknown = set(shapes) - set(graph.input_names)
                if unknown:
                    raise InputError(f"input_shapes names unknown inputs {sorted(unknown)}; "
                                     f"inputs are {graph.input_names}")
                shapes = [shapes.get(n) for n in graph.input_names]
            elif shapes and not isinstance(shapes[0], (list, tuple)) and shapes[0] is not None:
                shapes = [shapes]
            if len(shapes) != len(graph.inputs):
                raise InputError(f"input_shapes gives {len(shapes)} shapes; the model has "
                                 f"{len(graph.inputs)} inputs {graph.input_names}")
            for v, s in zip(graph.inputs, shapes):
                if s is None:
                    continue
                s = tuple(int(d) for d in s)
                if v.shape is not None:
                    if len(s) != len(v.shape):
                        raise InputError(f"input_shapes for {v.name!r}: rank {len(s)}, model "
                                         f"declares {list(v.shape)}")
                    for a, b in zip(s, v.shape):
                        if isinstance(b, int) and b != a:
                            raise InputError(f"input_shapes for {v.name!r}: {list(s)} conflicts "
                                             f"with the model's fixed shape {list(v.shape)}")
                v.shape = s
        if batch_size is not None:
            if not isinstance(batch_size, int) or batch_size < 1:
                raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
            for v in graph.inputs:
                if v.shape:
                    v.shape = (batch_size,) + tuple(v.shape[1:])

    def _check_inputs(self, inputs):
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if not isinstance(inputs, (list, tuple)):
            raise InputError(f"inputs must be a list of numpy arrays in the order "
                             f"{self.input_names}, got {type(inputs).__name__}")
        if len(inputs) != len(self.graph.inputs):
            raise InputError(f"expected {len(self.graph.inputs)} inputs {self.input_names}, "
                             f"got {len(inputs)}")
        out = []
        dims = {}
        for v, x in zip(self.graph.inputs, inputs):
            if v.kind != "tensor":
                out.append(x)
                continue
            if not isinstance(x, np.ndarray):
                try:
                    x = np.asarray(x, dtype=v.dtype) if v.dtype is not None else np.asarray(x)
                except (TypeError, ValueError) as e:
                    raise InputError(f"input {v.name!r}: cannot convert to an array of "
                                     f"{v.dtype}: {e}") from e
            if v.dtype is not None and x.dtype != v.dtype:
                raise InputError(f"input {v.name!r}: expected dtype {v.dtype}, got {x.dtype}")
            if v.shape is not None:
                if x.ndim != len(v.shape):
                    raise InputError(f"input {v.name!r}: expected rank {len(v.shape)} "
                                     f"{_fmt_shape(v.shape)}, got shape {list(x.shape)}")
                for ax, (d, want) in enumerate(zip(x.shape, v.shape)):
                    if isinstance(want, int) and d != want:
                        raise InputError(f"input {v.name!r}: expected shape {_fmt_shape(v.shape)}, "
                                         f"got {list(x.shape)} (axis {ax})")
                    if isinstance(want, str):
                        if dims.setdefault(want, (d, v.name))[0] != d:
                            raise InputError(f"input {v.name!r}: dimension {want!r} is {d} here "
                                             f"but {dims[want][0]} in input {dims[want][1]!r}")
            out.append(x)
        return out

    # -- running --------------------------------------------------------------------------------
    def run(self, inputs):
        """Run on a list of arrays in input order; returns a list of arrays in output order."""
        xs = self._check_inputs(inputs)
        with limits.memory_budget(self.memory_budget):
            if self.num_cores < self._ncpu:
                with _BlasLimit(self.num_cores):
                    return self._run(xs)
            return self._run(xs)

    __call__ = run

    def mapped_run(self, feeds):
        """Run on a dict name -> array; returns a dict output name -> array."""
        if not isinstance(feeds, dict):
            raise InputError("mapped_run takes a dict of input name -> array")
        unknown = set(feeds) - set(self.input_names)
        missing = [n for n in self.input_names if n not in feeds]
        if unknown or missing:
            raise InputError(f"mapped_run: unknown inputs {sorted(unknown)}, missing {missing}; "
                             f"the model's inputs are {self.input_names}")
        outs = self.run([feeds[n] for n in self.input_names])
        return dict(zip(self.output_names, outs))

    def _key(self, xs):
        return tuple((x.shape, x.dtype.str) if isinstance(x, np.ndarray) else None for x in xs)

    def _run(self, xs):
        key = self._key(xs)
        plan = self._plans.get(key)
        feeds = dict(zip(self.input_names, xs))
        if plan is None:
            with self._lock:
                plan = self._plans.get(key)
                if plan is None:
                    outs, plan = self._build_plan(feeds)
                    self._store_plan(key, plan)
                    return outs
        try:
            return self._run_plan(plan, feeds)
        except _Replan as r:
            with self._lock:
                self._dynamic.add(r.name)
                outs, plan = self._build_plan(feeds)
                self._store_plan(key, plan)
            return outs

    #: plans kept per engine (one per distinct input shape); the oldest is dropped beyond this,
    #: so a service fed ever-new sequence lengths does not grow without bound.
    max_plans = int(os.environ.get("DEEPSPARSE_CY_MAX_PLANS", "64"))

    def _store_plan(self, key, plan):
        self._plans[key] = plan
        while len(self._plans) > max(self.max_plans, 1):
            self._plans.pop(next(iter(self._plans)))

    def _run_plan(self, plan, feeds):
        inst = plan.acquire()
        try:
            env = dict(plan.consts)
            env.update(feeds)
            for name, slot in inst.feed_views:
                np.copyto(slot, feeds[name])
                env[name] = slot
            fast = inst.fast
            if fast is not None:
                return self._run_fast(plan, inst, fast, env, feeds)
            buf = inst.buf
            bound = inst.bound
            for i in range(len(plan.steps)):
                self._run_step(plan, inst, i, env, buf, ())
            if not any(b is None for b in bound):
                inst.fast = _fast_program(plan, inst, self.output_names)
            return self._collect_outputs(env, feeds, buf)
        finally:
            plan.release(inst)

    def _run_fast(self, plan, inst, fast, env, feeds):
        """A run once every step of the instance is bound or known not to bind (see
        _fast_program): runs of bound steps as plain calls, the other steps as in _run_step."""
        buf = inst.buf
        for seg in fast:
            calls = seg[0]
            if calls is None:
                self._run_step(plan, inst, seg[1], env, buf, seg[2])
                continue
            k = 0
            try:
                for f, a in calls:
                    f(*a)
                    k += 1
            except _Replan:
                raise
            except Exception as e:  # noqa: BLE001
                raise _wrap_node_error(seg[1][k], e) from e
            for name, r in seg[2]:
                env[name] = r
        return self._collect_outputs(env, feeds, buf)

    def _run_step(self, plan, inst, i, env, buf, pinned):
        """Step i of a run: its bound call when it reads the objects it was bound with, else the
        op's run(), binding the step after its first run. pinned: outputs copied into their
        slots even when the op computed them outside the arena (a fast run's plain calls read
        those slots: _fast_program)."""
        node, op, reads, _, frees = plan.steps[i]
        bound = inst.bound
        b = bound[i]
        if b:
            # the bound kernel call: same input objects as when it was bound (arena slots,
            # constants), outputs straight into the step's slots
            for name, obj in b[2]:
                if env[name] is not obj:
                    bound[i] = False       # inputs move (a feed): the op's own run
                    break
            else:
                try:
                    b[0](*b[1])
                except _Replan:
                    raise
                except Exception as e:  # noqa: BLE001
                    raise _wrap_node_error(node, e) from e
                for name, r in b[3]:
                    env[name] = r
                for x in frees:
                    env.pop(x, None)
                return
        outs = inst.step_outs[i]
        ins = [env[x] if x else None for x in reads]
        try:
            res = op.run(ins, outs)
        except Exception as e:  # noqa: BLE001
            raise _wrap_node_error(node, e) from e
        if b is None:
            bound[i] = self._bind(node, op, reads, ins, outs, res, buf, plan.consts,
                                  plan.aliases, plan.split_views)
        if outs is None:
            outs = _NO_SLOTS
        for name, r, slot in zip(node.outputs, res, outs):
            if not name:
                continue
            if slot is None:
                # A value outside the arena must not alias an arena slot that a later step
                # may reuse (views, pass-through ops, sequences of tensors), except the
                # planned views, whose source slot outlives them.
                if name not in plan.aliases:
                    r = _detach(r, buf)
            elif r is not slot:
                if not isinstance(r, np.ndarray) or r.shape != slot.shape \
                        or r.dtype != slot.dtype:
                    raise _Replan(name)
                if name in pinned or _root(r) is buf:
                    _copy_into(slot, r)
                    r = slot
            env[name] = r
        for x in frees:
            env.pop(x, None)

    @staticmethod
    def _bind(node, op, reads, ins, outs, res, buf, consts, aliases=(), split_views=()):
        """The step's bound call after its first run on an arena instance (see _run_plan), or
        False: only where every output went into its slot and every non-constant input is an
        arena array (a feed or a detached value is a new object on each run). A planned view
        (Reshape & co. on an arena array, its shape constant for the plan) binds to no call at
        all: its output is the same view object on every run, so the steps reading it can bind
        too."""
        checks = []
        for name, v in zip(reads, ins):
            if not name or not isinstance(v, np.ndarray) or consts.get(name) is v:
                continue              # constants: the same objects on every run of the plan
            if _root(v) is not buf:
                return False          # not an arena slot: may be a new object next run
            checks.append((name, v))
        if outs is None and node.outputs and node.outputs[0] in aliases and len(res) == 1 \
                and node.op_type in _VIEW_OPS:
            r = res[0]
            if len(checks) != 1 or checks[0][1] is not ins[0] or not isinstance(r, np.ndarray) \
                    or _root(r) is not buf or not np.may_share_memory(r, ins[0]):
                return False          # the data input only: a computed shape may change
            return (_no_call, (), tuple(checks), ((node.outputs[0], r),))
        if outs is not None and node.outputs and all(o in split_views for o in node.outputs) \
                and len(res) == len(outs) and all(r is o for r, o in zip(res, outs)) \
                and ins and isinstance(ins[0], np.ndarray) and _root(ins[0]) is buf \
                and all(np.may_share_memory(o, ins[0]) for o in outs):
            # an in-place Split (_plan_inplace_split): its outputs are views of its input's
            # slot, already holding their values once the input is written
            return (_no_call, (), tuple(checks), tuple(zip(node.outputs, outs)))
        if outs is None or len(res) != len(outs) or any(r is not o for r, o in zip(res, outs)) \
                or any(o is None for name, o in zip(node.outputs, outs) if name):
            return False
        try:
            call = op.bind(ins, outs)
        except Exception:  # noqa: BLE001 - binding is an optimisation; the op's run() stays
            call = None
        if call is None:
            return False
        return (call[0], call[1], tuple(checks),
                tuple((name, o) for name, o in zip(node.outputs, outs) if name))

    def _collect_outputs(self, env, feeds, buf=None):
        owned = {id(_root(v)) for v in feeds.values()}
        owned |= self._const_roots
        if buf is not None:
            owned.add(id(buf))
        res = []
        for name in self.output_names:
            v = env[name]
            if isinstance(v, np.ndarray) and (id(_root(v)) in owned or not v.flags.writeable):
                c = np.empty(v.shape, v.dtype)
                _copy_into(c, v)        # np.copyto where the vector copy does not apply
                v = c
            res.append(v)
        return res

    # -- planning -------------------------------------------------------------------------------
    def _build_plan(self, feeds):
        prog = self._program
        graph_outputs = set(self.output_names)
        known = set(prog.consts)
        static = set(prog.consts) | set(feeds)
        shapes = {}
        values_known = {}

        def record(i, node, env):
            op = prog.steps[i][1]
            reads = node_reads(node)
            dd = (node.op_type in DYNAMIC_OPS or getattr(op, "data_dependent_shape", False)
                  or node.op_type in passes.NONDETERMINISTIC and False)
            shape_known = all(node.inputs[j] in known for j in SHAPE_INPUTS.get(node.op_type, ())
                              if j < len(node.inputs) and node.inputs[j])
            is_static = not dd and shape_known and all(x in static for x in reads)
            foldable = (node.op_type in ("Shape", "Size") and node.inputs[0] in static) or (
                all(x in known for x in reads) and node.op_type not in passes.NONDETERMINISTIC
                and node.op_type not in DYNAMIC_OPS and not node.implicit_inputs)
            for o in node.outputs:
                if not o or o not in env:
                    continue
                v = env[o]
                tensor = isinstance(v, np.ndarray)
                if is_static and tensor and o not in self._dynamic:
                    static.add(o)
                    shapes[o] = (v.shape, v.dtype)
                if foldable and tensor and o not in graph_outputs:
                    known.add(o)
                    values_known[o] = v

        outs = prog.run_heap(feeds, record=record)
        # steps that still run per call
        steps = []
        for node, op in prog.steps:
            if all(o in known for o in node.outputs if o) and any(o for o in node.outputs):
                continue
            steps.append((node, op))
        # steps whose results nothing reads once this shape's folds are done: a quantized
        # YOLO's DequantizeLinear of its input fed only Shape (folded here), and ran per call
        needed, live = set(graph_outputs), []
        for node, op in reversed(steps):
            if any(o in needed for o in node.outputs if o):
                live.append((node, op))
                needed.update(node_reads(node))
        steps = live[::-1]
        last = {}
        first = {}
        for i, (node, _) in enumerate(steps):
            for x in node_reads(node):
                last[x] = i
            for o in node.outputs:
                if o:
                    first.setdefault(o, i)
        # Outputs of view ops (Reshape & co. return a view of their input when they can) get no
        # slot of their own: they stay views of their input's slot, whose lifetime is extended
        # to cover theirs, instead of being copied into a slot on every call. Not for graph
        # outputs (those are copied out at the end anyway).
        aliases, alias_root = set(), {}
        for i, (node, _) in enumerate(steps):
            if node.op_type in _VIEW_OPS and node.domain in ("", "ai.onnx") and node.inputs \
                    and node.inputs[0] and node.outputs and node.outputs[0] \
                    and node.outputs[0] not in graph_outputs:
                o, src = node.outputs[0], node.inputs[0]
                alias_root[o] = alias_root.get(src, src)
                aliases.add(o)
        for o, root in alias_root.items():
            end = max(last.get(o, first.get(o, 0)), first.get(o, 0))
            if root in first:
                last[root] = max(last.get(root, first[root]), end)
            elif root in feeds:
                last[root] = max(last.get(root, 0), end)
        placed_in = self._plan_inplace_concat(steps, shapes, first, last, graph_outputs, feeds,
                                              values_known, aliases)
        split_views = self._plan_inplace_split(steps, shapes, first, graph_outputs, feeds,
                                               values_known, aliases, placed_in)
        placed_in.update(split_views)
        children = {}
        for x, (root, _) in placed_in.items():
            children.setdefault(root, []).append(x)
        items = []
        total_intermediate = 0
        # A small feed gets a slot too, live from the start of the run, which copies the feed
        # into it: the steps reading it then bind like the others (a feed is a new object on
        # every run, so they ran op by op: a transformer's embedding Gathers and mask steps,
        # 0.3 ms of BERT-base's run with their Python and its cold caches).
        feed_slots = []
        for o, x in feeds.items():
            if o in last and isinstance(x, np.ndarray) and x.dtype != object \
                    and 0 < x.nbytes <= FEED_SLOT_MAX:
                items.append((o, int(x.nbytes), 0, last[o]))
                shapes.setdefault(o, (x.shape, x.dtype))
                feed_slots.append(o)
        for o, i in first.items():
            if o not in shapes or o in aliases or o in placed_in:
                continue
            shape, dtype = shapes[o]
            if dtype == object:
                continue
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if o in graph_outputs:
                # A small graph output gets a slot too, live to the end of the run, so its step
                # binds like the others (engine._run_plan); _collect_outputs copies it out of
                # the arena. Large ones stay outside: their copy would cost more than binding
                # saves (tens of microseconds of Python per step).
                if nbytes > GRAPH_OUTPUT_SLOT_MAX:
                    continue
                items.append((o, nbytes, i, len(steps)))
                continue
            total_intermediate += nbytes
            f, l = i, max(last.get(o, i), i)
            for x in children.get(o, ()):      # the inputs written in place: their lifetimes
                f = min(f, first[x])
                l = max(l, last.get(x, first[x]))
            items.append((o, nbytes, f, l))
        offsets, total = _arena.plan_offsets(items, reuse=self.memory_planner)
        if total > self.memory_budget:
            raise ResourceError(f"memory plan needs {total} bytes, over the budget of "
                                f"{self.memory_budget} bytes")
        slots = {o: (offsets[o], shapes[o][0], shapes[o][1]) for o in offsets}
        for x, (root, off) in placed_in.items():
            slots[x] = (offsets[root] + off, shapes[x][0], shapes[x][1])
        plan_steps = []
        for i, (node, op) in enumerate(steps):
            reads = list(node.inputs) + list(node.implicit_inputs)
            keys = [o if o in slots else None for o in node.outputs]
            frees = [x for x in set(node_reads(node)) if last.get(x) == i and x not in graph_outputs
                     and x not in feeds and x not in values_known and x not in prog.consts]
            plan_steps.append((node, op, reads, keys, frees))
        consts = dict(prog.consts)
        consts.update(values_known)
        report = {"arena_bytes": int(total), "intermediate_bytes": int(total_intermediate),
                  "peak_live_bytes": int(_arena.peak_live(items)), "planned_values": len(items),
                  "steps": len(plan_steps), "folded_nodes": len(prog.steps) - len(steps),
                  "memory_planner": self.memory_planner}
        plan = Plan(prog, plan_steps, consts, slots, int(total), report)
        plan.aliases = aliases
        plan.split_views = frozenset(split_views)
        plan.feed_slots = tuple(feed_slots)
        return self._collect_outputs(dict(zip(self.output_names, outs)), feeds), plan

    def _plan_inplace_concat(self, steps, shapes, first, last, graph_outputs, feeds,
                             values_known, aliases):
        """{input value: (Concat output, byte offset)} for Concat inputs that can be produced
        straight into their place in the Concat's output slot, so the Concat copies nothing
        (YOLO's C2f blocks concatenate 3-5 freshly computed maps): along an axis with only
        size-1 axes before it (batch 1 channel concat), each input a planned value of the
        output's dtype, read once by this Concat and by no other in-place Concat, not a graph
        output, feed, folded value, view or Concat output placed itself. The output's slot then
        lives from its first input's production to its last use (or its inputs' last)."""
        if not self.memory_planner or os.environ.get("DEEPSPARSE_CY_NO_INPLACE_CONCAT", "") \
                in ("1", "true"):
            return {}
        placed, roots = {}, set()
        for node, _ in steps:
            if node.op_type != "Concat" or node.domain not in ("", "ai.onnx") \
                    or not node.outputs or not node.outputs[0]:
                continue
            o = node.outputs[0]
            if o in graph_outputs or o in aliases or o in placed or o not in shapes \
                    or o not in first:
                continue
            oshape, odt = shapes[o]
            rank = len(oshape)
            if odt == object or rank == 0:
                continue
            axis = int(node.attrs.get("axis", 1))
            axis = axis + rank if axis < 0 else axis
            ins = list(node.inputs)
            if not 0 <= axis < rank or int(np.prod(oshape[:axis], dtype=np.int64)) != 1 \
                    or len(ins) < 2 or not all(ins) or len(set(ins)) != len(ins):
                continue
            offs = _piece_offsets(ins, shapes, oshape, odt, lambda x: not (
                x not in shapes or x not in first or x in graph_outputs or x in feeds
                or x in values_known or x in aliases or x in placed or x in roots
                or shapes[x][1] != odt or first[x] >= first[o]))
            if offs is None:
                continue
            for x, b in zip(ins, offs):
                placed[x] = (o, b)
            roots.add(o)
        return placed

    def _plan_inplace_split(self, steps, shapes, first, graph_outputs, feeds, values_known,
                            aliases, placed):
        """{output: (Split input, byte offset)} for Splits whose outputs are contiguous pieces
        of their input (only size-1 axes before the split axis: a batch-1 channel split, a
        detector head's box / class split), kept as views of the input's slot: the Split then
        copies nothing (its step binds to no call, engine._run_plan) and the input's slot lives
        as long as its pieces are read. Only for planned values: the input not a graph output,
        feed, folded value, view or a value placed in (or holding values placed by) an in-place
        Concat; the outputs not graph outputs nor placed themselves."""
        if not self.memory_planner or os.environ.get("DEEPSPARSE_CY_NO_INPLACE_SPLIT", "") \
                in ("1", "true"):
            return {}
        roots = {root for root, _ in placed.values()}
        views = {}
        for node, _ in steps:
            if node.op_type != "Split" or node.domain not in ("", "ai.onnx") or not node.inputs:
                continue
            x, outs = node.inputs[0], list(node.outputs)
            if not x or x not in shapes or x not in first or x in graph_outputs or x in feeds \
                    or x in values_known or x in aliases or x in placed or x in roots \
                    or x in views:
                continue
            xshape, xdt = shapes[x]
            rank = len(xshape)
            if xdt == object or rank == 0 or not outs or not all(outs) \
                    or len(set(outs)) != len(outs):
                continue
            axis = int(node.attrs.get("axis", 0))
            axis = axis + rank if axis < 0 else axis
            if not 0 <= axis < rank or int(np.prod(xshape[:axis], dtype=np.int64)) != 1:
                continue
            offs = _piece_offsets(outs, shapes, xshape, xdt, lambda o: not (
                o not in shapes or o in graph_outputs or o in placed or o in aliases
                or o in roots or o in views or shapes[o][1] != xdt or len(shapes[o][0]) != rank))
            if offs is None:
                continue
            for o, b in zip(outs, offs):
                views[o] = (x, b)
        return views

    def profile(self, inputs, iterations=5, warmup=1, dense_baseline=True):
        """Per-node timing on `inputs`: list of dicts in execution order.

        Each record: index, name, op_type, kernel, isa, weight_shape, weight_sparsity,
        block4_occupancy, time_ms (median over iterations; a step a run makes as a bound kernel
        call is timed as that call, bound True), and, for ops that can run a dense twin of
        themselves (``op.run_dense``), dense_ms and speedup measured through op.run."""
        import time as _time

        from .kernels import kernel_isa
        xs = self._check_inputs(inputs)
        feeds = dict(zip(self.input_names, xs))
        key = self._key(xs)
        if key not in self._plans:
            # the first run of a shape builds its plan without binding any step; the warm-up
            # runs then bind them, so the steps are timed as the kernel calls a run makes (a
            # fresh engine's profile timed every step through op.run: 3x a run's time on a
            # quantized YOLOv8n, in-place Concats copying, none of them bound)
            self._run(xs)
        for _ in range(max(warmup, 1)):
            self._run(xs)
        plan = self._plans[key]
        times = [[] for _ in plan.steps]
        dense = [[] for _ in plan.steps]
        out_shapes = {}
        bound_steps = [False] * len(plan.steps)
        via_run = [[] for _ in plan.steps]
        for _ in range(iterations):
            inst = plan.acquire()
            try:
                env = dict(plan.consts)
                env.update(feeds)
                for i, (st, outs) in enumerate(zip(plan.steps, inst.step_outs)):
                    node, op, reads, _, frees = st
                    ins = [env[x] if x else None for x in reads]
                    b = inst.bound[i]
                    if b and all(env[name] is obj for name, obj in b[2]):
                        # the call a normal run makes (_run_plan's bound step), so the times
                        # are the ones a run spends, without op.run's argument checks
                        t0 = _time.perf_counter()
                        b[0](*b[1])
                        times[i].append(_time.perf_counter() - t0)
                        bound_steps[i] = True
                        res = [r for _, r in b[3]]
                        for name, r in b[3]:
                            env[name] = r
                    else:
                        t0 = _time.perf_counter()
                        res = op.run(ins, outs)
                        times[i].append(_time.perf_counter() - t0)
                        _bind_outputs(node, res, env)
                    if dense_baseline and hasattr(op, "run_dense"):
                        if not dense[i]:     # the first call packs the dense twin: untimed
                            op.run_dense(ins, None)
                        t0 = _time.perf_counter()
                        op.run_dense(ins, None)
                        dense[i].append(_time.perf_counter() - t0)
                        # the speedup compares like with like: the twin runs through op.run
                        # into new arrays, so the step is timed that way too (never into its
                        # slots: one that shares a slot with an input would read its own output)
                        t0 = _time.perf_counter()
                        op.run(ins, None)
                        via_run[i].append(_time.perf_counter() - t0)
                    if i not in out_shapes and res and isinstance(res[0], np.ndarray):
                        out_shapes[i] = list(res[0].shape)
            finally:
                plan.release(inst)
        records = []
        for i, (node, op, _, _, _) in enumerate(plan.steps):
            w = None
            for j in (1, 0):
                if j < len(node.inputs) and node.inputs[j] in self._program.consts:
                    c = self._program.consts[node.inputs[j]]
                    if isinstance(c, np.ndarray) and c.ndim >= 2:
                        w = c
                        break
            if node.op_type == "QGemmGroup" and w is not None:
                # its parts' weights side by side ([K, N] each): the shape and sparsity of all
                ws = [self._program.consts.get(x) for x in node.inputs[1:]]
                if all(isinstance(c, np.ndarray) and c.shape == w.shape for c in ws):
                    w = np.concatenate(ws, axis=1)
            rec = {"index": i, "name": node.name, "op_type": node.op_type,
                   "kernel": getattr(op, "kernel_name", "numpy"),
                   "isa": getattr(op, "kernel_isa", None) or ("numpy" if not hasattr(op, "kernel_name")
                                                              else kernel_isa()),
                   "weight_shape": list(w.shape) if w is not None else None,
                   "weight_sparsity": float(np.mean(w == 0)) if w is not None else None,
                   "block4_occupancy": _block4_occupancy(w) if w is not None else None,
                   "time_ms": float(np.median(times[i]) * 1e3),
                   "bound": bound_steps[i],
                   "output_shape": out_shapes.get(i),
                   "flops": _flops(node, op, w, out_shapes.get(i))}
            if dense[i]:
                rec["dense_ms"] = float(np.median(dense[i]) * 1e3)
                rec["speedup"] = rec["dense_ms"] / max(float(np.median(via_run[i]) * 1e3), 1e-9)
            records.append(rec)
        return records

    def memory_report(self, inputs=None):
        """Arena bytes, sum of all planned intermediates and peak live bytes for the plan of
        `inputs` (run once if needed), or for the most recent plan."""
        if inputs is not None:
            xs = self._check_inputs(inputs)
            key = self._key(xs)
            if key not in self._plans:
                self._run(xs)
            return dict(self._plans[key].report)
        if not self._plans:
            raise DeepSparseCyError("no plan yet: run the engine once or pass inputs")
        return dict(list(self._plans.values())[-1].report)


def _flops(node, op, w, out_shape):
    """Dense-equivalent FLOPs of a node (2 per multiply-add) where it is a weighted layer."""
    f = getattr(op, "flops", None)
    if f is not None:
        return f
    if w is None or out_shape is None:
        return None
    n_out = int(np.prod(out_shape))
    if node.op_type in ("Conv", "ConvTranspose", "FusedConv") and w.ndim >= 3:
        per_out = int(np.prod(w.shape[1:]))          # C_in/groups * kernel taps
        return 2 * n_out * per_out
    if node.op_type in ("MatMul", "Gemm", "FusedMatMul") and w.ndim == 2:
        k = w.shape[0] if node.op_type == "MatMul" or not node.attrs.get("transB", 0) else w.shape[1]
        return 2 * n_out * int(k)
    return None


def _block4_occupancy(w):
    """Fraction of 1x4 blocks (4 consecutive input-dim weights of one output) with any nonzero.

    The input dimension is the last axis for Conv/Gemm-style [out, in...] weights flattened to
    2-D, and axis 0 for MatMul's [in, out] weights."""
    if w.ndim < 2:
        return None
    m = w.reshape(w.shape[0], -1) != 0 if w.ndim > 2 else (w != 0).T
    k = m.shape[1] // 4 * 4
    if k == 0:
        return None
    return float(m[:, :k].reshape(m.shape[0], -1, 4).any(axis=2).mean())


def _fmt_shape(shape):
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def compile_model(model, batch_size=None, num_cores=None, input_shapes=None, **kwargs):
    """Compile an ONNX model (path, bytes or onnx.ModelProto) into an Engine.

    batch_size=None keeps the model's shapes; an int overrides the first dimension of every
    input. input_shapes (list in input order, or dict name -> shape) fixes dynamic dimensions.
    num_cores bounds the threads this engine uses (default: all cores)."""
    return Engine(model, batch_size=batch_size, num_cores=num_cores, input_shapes=input_shapes,
                  **kwargs)
