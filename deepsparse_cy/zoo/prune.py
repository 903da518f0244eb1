"""One-shot magnitude pruning of an ONNX model's MatMul / Gemm / Conv weight initializers.

Patterns:
  unstructured  the smallest |w| of each layer are zeroed (exactly round(s * size) of them)
  block4        blocks of 4 consecutive input-dimension weights of one output row are scored by
                mean |w| and the lowest round(s * blocks) zeroed together, as SparseML's
                FourBlockMaskCreator does (conv weights: input channels of one (out, kh, kw) tap;
                a dimension not divisible by 4 is zero-padded for scoring).

The input dimension per op: MatMul W[K, N] -> axis 0; Gemm W[N, K] (transB=1) -> axis 1, W[K, N]
-> axis 0; Conv W[O, I/g, kh, kw] -> axis 1. Only initializer weights are touched (activation x
activation MatMuls, e.g. attention, never are). First and last prunable layers and depthwise convs
are skipped by default, as sparsification recipes do.
"""
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

PATTERNS = ("unstructured", "block4")


@dataclass
class Layer:
    node: str          # node name
    op_type: str
    weight: str        # initializer name
    shape: tuple
    in_axis: int       # axis of the weight that runs along the reduction (input) dimension
    depthwise: bool = False


def prunable_layers(model):
    """Weight-bearing MatMul/Gemm/Conv layers in graph order (each initializer once)."""
    inits = {t.name: t for t in model.graph.initializer}
    seen, layers = set(), []
    for i, n in enumerate(model.graph.node):
        if n.op_type not in ("MatMul", "Gemm", "Conv") or len(n.input) < 2:
            continue
        w = n.input[1]
        if w not in inits or w in seen:
            continue
        t = inits[w]
        if t.data_type != onnx.TensorProto.FLOAT:
            continue
        shape = tuple(t.dims)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        depthwise = False
        if n.op_type == "MatMul":
            if len(shape) != 2:
                continue
            in_axis = 0
        elif n.op_type == "Gemm":
            in_axis = 1 if attrs.get("transB", 0) else 0
        else:
            in_axis = 1
            group = attrs.get("group", 1)
            depthwise = group > 1 and shape[1] == 1 and group == shape[0]
        seen.add(w)
        layers.append(Layer(n.name or f"{n.op_type}_{i}", n.op_type, w, shape, in_axis, depthwise))
    return layers


def _rows_by_input(w, in_axis):
    """View w as [rows, in_dim] with the input dimension last (a copy when it must move)."""
    moved = np.moveaxis(w, in_axis, -1)
    return moved.reshape(-1, w.shape[in_axis])


def _from_rows(rows, shape, in_axis):
    moved_shape = tuple(d for i, d in enumerate(shape) if i != in_axis) + (shape[in_axis],)
    return np.moveaxis(rows.reshape(moved_shape), -1, in_axis)


def prune_array(w, sparsity, pattern="unstructured", in_axis=0):
    """Return a pruned copy of w. Exactly round(sparsity * units) units (elements or blocks)
    are zeroed; ties among equal scores are broken by position."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pruning pattern {pattern!r}; choose from {PATTERNS}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    w = np.array(w, dtype=np.float32, copy=True)
    if pattern == "unstructured":
        flat = w.reshape(-1)
        k = int(round(sparsity * flat.size))
        if k:
            flat[np.argpartition(np.abs(flat), k - 1)[:k]] = 0.0
        return w
    rows = _rows_by_input(w, in_axis)
    r, kdim = rows.shape
    pad = (-kdim) % 4
    padded = np.pad(rows, ((0, 0), (0, pad))) if pad else rows.copy()
    blocks = padded.reshape(r, -1, 4)
    scores = np.abs(blocks).mean(axis=2).reshape(-1)
    k = int(round(sparsity * scores.size))
    if k:
        mask = np.ones(scores.size, bool)
        mask[np.argpartition(scores, k - 1)[:k]] = False
        blocks *= mask.reshape(r, -1, 1)
    rows = blocks.reshape(r, -1)[:, :kdim]
    return np.ascontiguousarray(_from_rows(rows, w.shape, in_axis))


def prune_model(model, sparsity=0.9, pattern="unstructured", overrides=None, skip_first_last=True,
                skip=(), skip_depthwise=True, inplace=False):
    """Prune a ModelProto; returns (model, report).

    sparsity: default target per layer; overrides: {node or weight name: sparsity} (0 keeps a
    layer dense, and an override also un-skips a first/last layer); skip: names left dense.
    report: list of dicts {node, op_type, weight, shape, target, sparsity} for every prunable
    layer, with the achieved element sparsity.
    """
    if not inplace:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        model = m
    overrides = dict(overrides or {})
    skip = set(skip)
    layers = prunable_layers(model)
    inits = {t.name: t for t in model.graph.initializer}
    report = []
    for i, layer in enumerate(layers):
        target = sparsity
        if skip_first_last and i in (0, len(layers) - 1):
            target = 0.0
        if skip_depthwise and layer.depthwise:
            target = 0.0
        if layer.node in skip or layer.weight in skip:
            target = 0.0
        for key in (layer.weight, layer.node):
            if key in overrides:
                target = float(overrides[key])
        t = inits[layer.weight]
        w = numpy_helper.to_array(t)
        if target > 0:
            w = prune_array(w, target, pattern, layer.in_axis)
            t.CopyFrom(numpy_helper.from_array(w, layer.weight))
        report.append(dict(node=layer.node, op_type=layer.op_type, weight=layer.weight,
                           shape=layer.shape, target=target, pattern=pattern,
                           sparsity=float(np.count_nonzero(w == 0)) / w.size))
    return model, report


def block4_occupancy(w, in_axis=0):
    """Fraction of 4-blocks along the input dimension that hold any nonzero."""
    rows = _rows_by_input(np.asarray(w), in_axis)
    pad = (-rows.shape[1]) % 4
    if pad:
        rows = np.pad(rows, ((0, 0), (0, pad)))
    return float(np.any(rows.reshape(rows.shape[0], -1, 4) != 0, axis=2).mean())


def layer_sparsity(model):
    """[{node, op_type, weight, shape, sparsity, block4_occupancy}] for every prunable layer."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for layer in prunable_layers(model):
        w = numpy_helper.to_array(inits[layer.weight])
        out.append(dict(node=layer.node, op_type=layer.op_type, weight=layer.weight,
                        shape=layer.shape, sparsity=float(np.count_nonzero(w == 0)) / w.size,
                        block4_occupancy=block4_occupancy(w, layer.in_axis)))
    return out
