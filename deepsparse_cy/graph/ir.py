"""In-memory graph: Node, Value and Graph, decoded once from ONNX protobuf.

Attributes are decoded to plain Python/numpy values (ints, floats, str, ndarray, Graph, lists of
those) so operator implementations never touch protobuf.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelLoadError
from ..limits import check_shape


@dataclass
class ValueInfo:
    """Static type facts about a value: kind, element dtype and shape (dims may be str or None)."""
    name: str
    kind: str = "tensor"            # tensor | sequence | optional | map | unknown
    dtype: Any = None                # numpy dtype of the (innermost) tensor element, or None
    shape: tuple | None = None       # tuple of int | str | None; None = rank unknown
    elem_type: int = 0              # ONNX TensorProto data type enum (0 = unknown)


@dataclass
class Node:
    op_type: str
    domain: str
    inputs: list               # value names; '' = omitted optional input
    outputs: list              # value names; '' = unused optional output
    attrs: dict = field(default_factory=dict)
    name: str = ""
    index: int = 0             # position in the original node list (for deterministic order)
    implicit_inputs: list = field(default_factory=list)  # outer-scope names used by subgraphs

    def describe(self):
        return f"node {self.name!r} ({self.op_type})" if self.name else f"node #{self.index} ({self.op_type})"


@dataclass
class Graph:
    name: str
    nodes: list
    inputs: list               # list[ValueInfo] of real (non-initializer) graph inputs
    outputs: list              # list[ValueInfo]
    initializers: dict         # name -> ndarray (or sparse converted to dense)
    value_info: dict           # name -> ValueInfo for every value with known type
    opsets: dict               # domain -> version
    outer_names: set = field(default_factory=set)  # names this (sub)graph reads from enclosing scopes

    @property
    def input_names(self):
        return [v.name for v in self.inputs]

    @property
    def output_names(self):
        return [v.name for v in self.outputs]


def elem_dtype(elem_type):
    """numpy dtype for an ONNX TensorProto data type (object for STRING)."""
    if elem_type == onnx.TensorProto.STRING:
        return np.dtype(object)
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # noqa: BLE001 - unknown / undefined type
        return None


def value_info_from_type(name, tp):
    which = tp.WhichOneof("value") if tp is not None else None
    if which == "tensor_type" or which == "sparse_tensor_type":
        tt = getattr(tp, which)
        shape = None
        if tt.HasField("shape"):
            dims = []
            for d in tt.shape.dim:
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param"):
                    dims.append(d.dim_param)
                else:
                    dims.append(None)
            shape = tuple(dims)
        return ValueInfo(name, "tensor", elem_dtype(tt.elem_type), shape, tt.elem_type)
    if which == "sequence_type":
        inner = value_info_from_type(name, tp.sequence_type.elem_type)
        return ValueInfo(name, "sequence", inner.dtype, None, inner.elem_type)
    if which == "optional_type":
        inner = value_info_from_type(name, tp.optional_type.elem_type)
        return ValueInfo(name, "optional", inner.dtype, inner.shape, inner.elem_type)
    if which == "map_type":
        return ValueInfo(name, "map")
    return ValueInfo(name, "unknown")


def tensor_to_array(t, base_dir=None):
    """Decode a TensorProto. External data must already be loaded (see loader).

    A tensor still marked external here (one the loader's walk did not reach, e.g. the values
    of a sparse tensor) is refused rather than handed to onnx, which would open any path."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        raise ModelLoadError(f"tensor {t.name!r}: external data {loc!r} in a place the loader "
                             "does not resolve (only initializers and attribute tensors may use "
                             "external data); refused")
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"tensor {t.name!r}: cannot decode ({e})") from e
    return arr


def decode_attr(a, opsets, base_dir=None):
    T = onnx.AttributeProto
    if a.type == T.FLOAT:
        return float(a.f)
    if a.type == T.INT:
        return int(a.i)
    if a.type == T.STRING:
        return a.s.decode("utf-8", errors="replace")
    if a.type == T.TENSOR:
        return tensor_to_array(a.t, base_dir)
    if a.type == T.GRAPH:
        return graph_from_proto(a.g, opsets, base_dir, subgraph=True)
    if a.type == T.SPARSE_TENSOR:
        return sparse_to_dense(a.sparse_tensor, base_dir)
    if a.type == T.TYPE_PROTO:
        return a.tp
    if a.type == T.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == T.INTS:
        return [int(x) for x in a.ints]
    if a.type == T.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if a.type == T.TENSORS:
        return [tensor_to_array(t, base_dir) for t in a.tensors]
    if a.type == T.GRAPHS:
        return [graph_from_proto(g, opsets, base_dir, subgraph=True) for g in a.graphs]
    if a.type == T.TYPE_PROTOS:
        return list(a.type_protos)
    if a.ref_attr_name:
        raise ModelLoadError(f"attribute {a.name!r} references a function attribute outside a function")
    raise ModelLoadError(f"attribute {a.name!r} has unknown or missing type {a.type}")


def sparse_to_dense(sp, base_dir=None):
    values = tensor_to_array(sp.values, base_dir)
    idx = tensor_to_array(sp.indices, base_dir).astype(np.int64)
    dims = tuple(int(d) for d in sp.dims)
    what = f"sparse tensor {sp.values.name!r}"
    try:
        check_shape(dims, values.dtype.itemsize, what)
    except Exception as e:  # noqa: BLE001 - ResourceError / ShapeError: a model problem here
        raise ModelLoadError(str(e)) from e
    dense = np.zeros(dims, dtype=values.dtype)
    flat = dense.reshape(-1)
    try:
        if idx.ndim == 1:
            if idx.size and (idx.min() < 0 or idx.max() >= flat.size):
                raise IndexError("index out of range")
            flat[idx] = values.reshape(-1)
        else:
            flat[np.ravel_multi_index(tuple(idx.T), dims)] = values.reshape(-1)
    except (IndexError, ValueError) as e:
        raise ModelLoadError(f"{what}: indices {list(idx.shape)} and values {list(values.shape)} "
                             f"do not fit dims {list(dims)} ({e})") from e
    return dense


def graph_from_proto(g, opsets, base_dir=None, subgraph=False):
    """Build a Graph from a GraphProto. `opsets` is shared with subgraphs."""
    inits = {}
    for t in g.initializer:
        inits[t.name] = tensor_to_array(t, base_dir)
    for sp in g.sparse_initializer:
        inits[sp.values.name] = sparse_to_dense(sp, base_dir)
    vinfo = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vinfo[vi.name] = value_info_from_type(vi.name, vi.type)
    inputs = [vinfo[vi.name] for vi in g.input if vi.name not in inits]
    outputs = [vinfo[vi.name] for vi in g.output]
    nodes = []
    for i, n in enumerate(g.node):
        check_node_schema(n, opsets)
        attrs = {}
        for a in n.attribute:
            attrs[a.name] = decode_attr(a, opsets, base_dir)
        nodes.append(Node(n.op_type, n.domain if n.domain != "ai.onnx" else "", list(n.input),
                          list(n.output), attrs, n.name, i))
    graph = Graph(g.name, nodes, inputs, outputs, inits, vinfo, opsets)
    # Free variables: names read by nodes (or nested subgraphs) that nothing in this graph defines.
    defined = set(inits) | {v.name for v in g.input}
    for n in nodes:
        defined.update(o for o in n.outputs if o)
    used = set()
    for n in nodes:
        used.update(x for x in n.inputs if x)
        for sub in _subgraphs(n):
            used.update(sub.outer_names)
    graph.outer_names = used - defined
    if not subgraph:
        # Only subgraphs read enclosing scopes; at the top an unknown name is a broken model.
        undefined = sorted(graph.outer_names, key=repr)   # names may be bytes (bad UTF-8)
        missing_out = [o for o in graph.output_names if o not in defined]
        if undefined or missing_out:
            readers = [nd.describe() for nd in nodes if set(nd.inputs) & graph.outer_names]
            msg = []
            if undefined:
                msg.append(f"values {undefined} are read (by {', '.join(readers[:5]) or 'a subgraph'}) "
                           "but no node, input or initializer defines them")
            if missing_out:
                msg.append(f"graph outputs {missing_out} are not produced by any node, input or "
                           "initializer")
            raise ModelLoadError("; ".join(msg))
    # Each node that owns subgraphs reads their free variables implicitly.
    for n in nodes:
        own = set(x for x in n.inputs if x)
        imp = []
        for sub in _subgraphs(n):
            for nm in sorted(sub.outer_names, key=repr):
                if nm not in own and nm not in imp:
                    imp.append(nm)
        n.implicit_inputs = imp
    return graph


_ATTR_NAMES = {int(v): k for k, v in onnx.AttributeProto.AttributeType.items()}


def check_node_schema(n, opsets):
    """Attribute types, required attributes and input/output counts against the op's ONNX
    schema, for ops onnx defines (others are checked by their implementation).

    onnx.checker stops at its first complaint, and the loader tolerates some (unknown ops, an
    output without shape), so it cannot be relied on to have seen every node."""
    domain = n.domain if n.domain != "ai.onnx" else ""
    if domain not in opsets:
        return
    try:
        schema = onnx.defs.get_schema(n.op_type, int(opsets[domain]), domain)
    except Exception:  # noqa: BLE001 - SchemaError: not an onnx op (reported elsewhere if missing)
        return
    where = f"node {n.name!r} ({n.op_type})" if n.name else f"node ({n.op_type})"
    for a in n.attribute:
        spec = schema.attributes.get(a.name)
        if spec is None or a.ref_attr_name:
            continue
        want = int(spec.type)
        if want and a.type != want:
            raise ModelLoadError(f"{where}: attribute {a.name!r} must be {_ATTR_NAMES.get(want, want)}, "
                                 f"got {_ATTR_NAMES.get(a.type, a.type)}")
    have = {a.name for a in n.attribute}
    req = sorted(k for k, spec in schema.attributes.items() if spec.required and k not in have)
    if req:
        raise ModelLoadError(f"{where}: required attribute(s) {req} missing")
    if not schema.min_input <= len(n.input) <= schema.max_input:
        raise ModelLoadError(f"{where}: {len(n.input)} inputs, the op takes "
                             f"{schema.min_input}..{schema.max_input}")
    if not schema.min_output <= len(n.output) <= schema.max_output:
        raise ModelLoadError(f"{where}: {len(n.output)} outputs, the op gives "
                             f"{schema.min_output}..{schema.max_output}")


def _subgraphs(node):
    for v in node.attrs.values():
        if isinstance(v, Graph):
            yield v
        elif isinstance(v, list):
            for x in v:
                if isinstance(x, Graph):
                    yield x


subgraphs = _subgraphs
