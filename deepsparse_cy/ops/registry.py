"""Operator registry: ONNX (domain, op_type, opset) -> implementation.

Two ways to write an operator:

* a plain function, for the long tail::

      @register("Add", since=7)
      def Add(a, b, *, out=None):
          return np.add(a, b, out=out)

  Inputs arrive positionally (None for an omitted optional input; variadic ops take ``*xs``).
  ONNX attributes arrive as keyword arguments under their ONNX names (a Python keyword gets a
  trailing underscore); an attribute absent from the node takes the function's default.
  Return one array, or a tuple/list for several outputs. If the function has an ``out``
  parameter and the node has one output, the engine may pass a preallocated buffer of exactly the
  output's shape and dtype (an arena slot); write into it and return it. Never write into inputs.

* a subclass of :class:`Op`, when work should be done once at compile time (weight packing,
  subgraphs, state)::

      @register("Conv", since=11)
      class Conv(Op):
          def __init__(self, node, ctx): ...           # ctx.const(i) is input i if it is constant
          def run(self, inputs, outs): ...              # -> list of outputs

The registry picks, for a model's opset, the registration with the highest ``since`` not above it.
A later registration of the same (domain, op_type, since) replaces the earlier one, so a fast
kernel overrides a reference by registering after it.
"""
from __future__ import annotations

import functools
import inspect
import keyword

import numpy as np

_REGISTRY: dict = {}   # (domain, op_type) -> {since: factory}


class Op:
    """One node's implementation, built once per compiled model and run once per call."""

    #: set True on ops whose output shapes may depend on input *values* (NonZero, NMS, ...).
    data_dependent_shape = False

    def __init__(self, node, ctx):
        self.node = node
        self.ctx = ctx

    def run(self, inputs, outs):
        """inputs: list of arrays (None for omitted); outs: list of preallocated buffers or None."""
        raise NotImplementedError


class OpContext:
    """What an Op sees at compile time."""

    def __init__(self, node, opset, consts, subgraph_compiler=None, num_threads=None):
        self.node = node
        self.opset = opset              # version of the node's domain in this model
        self._consts = consts           # dict input index -> ndarray (inputs known at compile time)
        self._subgraph_compiler = subgraph_compiler
        self.num_threads = num_threads

    def const(self, i):
        """Input i's value if it is known at compile time (initializer or folded), else None."""
        return self._consts.get(i)

    def compile_subgraph(self, graph):
        """Compile an attribute Graph; returns f(feeds: dict name->value) -> list of outputs.

        feeds must hold the subgraph's formal inputs and every outer-scope name it reads
        (graph.outer_names); the enclosing node receives those as implicit inputs after its
        declared ones."""
        return self._subgraph_compiler(graph)


def _py_name(name):
    return name + "_" if keyword.iskeyword(name) else name


class FunctionOp(Op):
    """Adapts a plain function to the Op interface."""

    fn = None
    takes_out = False
    params = frozenset()
    var_kw = False

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        kw = {}
        for k, v in node.attrs.items():
            pk = _py_name(k)
            if pk in self.params or self.var_kw:
                kw[pk] = v
        self.kwargs = kw
        self.n_declared = len(node.inputs)
        self.single = len(node.outputs) == 1

    def run(self, inputs, outs):
        inputs = inputs[: self.n_declared]
        if self.takes_out and self.single and outs is not None and outs[0] is not None:
            r = type(self).fn(*inputs, out=outs[0], **self.kwargs)
        else:
            r = type(self).fn(*inputs, **self.kwargs)
        if self.single_output_is_list:
            return [r]
        if isinstance(r, (tuple, list)):
            return list(r)
        return [r]

    single_output_is_list = False

    def bind(self, inputs, outs):
        """engine._run_plan's bound call, for functions marked `bind_out` (they always write
        into `out`, whatever the values: the elementwise arithmetic ufuncs)."""
        fn = type(self).fn
        if not self.single or not outs or outs[0] is None:
            return None
        custom = getattr(fn, "bind", None)       # fn.bind(inputs, out, **attrs) -> call or None
        if custom is not None:
            extra = {"num_threads": int(self.ctx.num_threads or 1)} \
                if getattr(fn, "bind_threads", False) else {}
            return custom(inputs[: self.n_declared], outs[0], **self.kwargs, **extra)
        if not getattr(fn, "bind_out", False) or self.kwargs:
            return None
        return functools.partial(fn, *inputs[: self.n_declared], out=outs[0]), ()


def _wrap_function(fn, seq_output=False):
    sig = inspect.signature(fn)
    params = frozenset(sig.parameters)
    var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    return type(fn.__name__, (FunctionOp,), {
        "fn": staticmethod(fn), "takes_out": "out" in params, "params": params, "var_kw": var_kw,
        "single_output_is_list": seq_output, "__doc__": fn.__doc__,
        "data_dependent_shape": getattr(fn, "data_dependent_shape", False),
    })


def register(op_type, since=1, domain="", seq_output=False, data_dependent_shape=False):
    """Decorator registering a function or Op subclass for (domain, op_type) from opset `since`.

    seq_output=True: the function returns a Python list that is ONE output (an ONNX sequence).
    data_dependent_shape=True: output shapes depend on input values (NonZero, Unique, ...)."""
    if domain == "ai.onnx":
        domain = ""

    def deco(obj):
        if isinstance(obj, type) and issubclass(obj, Op):
            factory = obj
            if data_dependent_shape:
                factory.data_dependent_shape = True
        else:
            if data_dependent_shape:
                obj.data_dependent_shape = True
            factory = _wrap_function(obj, seq_output)
        _REGISTRY.setdefault((domain, op_type), {})[since] = factory
        return obj

    return deco


def resolve(op_type, domain, opset):
    """Factory for the op at this opset, or None."""
    if domain == "ai.onnx":
        domain = ""
    versions = _REGISTRY.get((domain, op_type))
    if not versions:
        return None
    ok = [v for v in versions if v <= opset]
    if not ok:
        return None
    return versions[max(ok)]


def registered_ops():
    """Sorted list of (domain, op_type, [since versions])."""
    return sorted((d, t, sorted(v)) for (d, t), v in _REGISTRY.items())


# --- helpers shared by op modules -------------------------------------------------------------

def store(result, out):
    """Write `result` into `out` if given (same shape), returning the array to use."""
    if out is None:
        return result
    np.copyto(out, result, casting="unsafe")
    return out
