"""Graph passes run once at compile time, before scheduling.

identity removal (Identity, inference Dropout), BatchNormalization folded into the preceding
Conv or ConvTranspose, constant folding (via an evaluate callback so this module stays
op-agnostic) and dead-node removal. Each pass mutates the Graph in place and returns how many nodes it changed.
"""
from __future__ import annotations

import numpy as np

# Ops that must never be folded: their result differs from call to call.
NONDETERMINISTIC = {"RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike",
                    "Bernoulli", "Multinomial"}


def _consumers(graph):
    cons = {}
    for n in graph.nodes:
        for x in list(n.inputs) + list(n.implicit_inputs):
            if x:
                cons.setdefault(x, []).append(n)
    return cons


def _rename_uses(graph, old, new):
    for n in graph.nodes:
        n.inputs = [new if x == old else x for x in n.inputs]


def remove_identities(graph):
    outputs = set(graph.output_names)
    implicit = {x for n in graph.nodes for x in n.implicit_inputs} | graph.outer_names
    removed = 0
    keep = []
    for n in graph.nodes:
        src = None
        if n.op_type == "Identity" and n.domain == "" and len(n.inputs) == 1:
            src = n.inputs[0]
        elif n.op_type == "Dropout" and n.domain == "":
            mask_used = len(n.outputs) > 1 and n.outputs[1]
            training = len(n.inputs) > 2 and n.inputs[2]
            if not mask_used and not training and n.inputs[0]:
                src = n.inputs[0]
        if src is None or not n.outputs or not n.outputs[0]:
            keep.append(n)
            continue
        dst = n.outputs[0]
        if dst in outputs or dst in implicit:
            keep.append(n)
            continue
        _rename_uses(graph, dst, src)
        removed += 1
    graph.nodes = keep
    return removed


def remove_dead_nodes(graph):
    needed = set(graph.output_names)
    alive = []
    for n in reversed(graph.nodes):
        if any(o in needed for o in n.outputs if o):
            alive.append(n)
            needed.update(x for x in n.inputs if x)
            needed.update(n.implicit_inputs)
    alive.reverse()
    removed = len(graph.nodes) - len(alive)
    graph.nodes = alive
    for k in [k for k in graph.initializers if k not in needed]:
        del graph.initializers[k]
    return removed


def fold_batchnorm_into_conv(graph):
    """Conv(W, B) -> BatchNormalization(scale, bias, mean, var) becomes one Conv when the BN
    parameters and W are constant and the Conv output feeds only the BN; the same for
    ConvTranspose (its output channels are the weight's second axis, per group)."""
    init = graph.initializers
    cons = _consumers(graph)
    producer = {o: n for n in graph.nodes for o in n.outputs if o}
    outputs = set(graph.output_names)
    removed = set()
    for bn in graph.nodes:
        if bn.op_type != "BatchNormalization" or bn.domain != "" or bn.attrs.get("training_mode", 0):
            continue
        if len(bn.inputs) < 5 or any(x not in init for x in bn.inputs[1:5]):
            continue
        if len([o for o in bn.outputs if o]) != 1:
            continue
        conv = producer.get(bn.inputs[0])
        if conv is None or conv.op_type not in ("Conv", "ConvTranspose") or conv.domain != "" \
                or id(conv) in removed:
            continue
        y = conv.outputs[0]
        if y in outputs or len(cons.get(y, [])) != 1 or conv.inputs[1] not in init:
            continue
        if len(conv.inputs) > 2 and conv.inputs[2] and conv.inputs[2] not in init:
            continue
        w = init[conv.inputs[1]]
        if w.dtype.kind != "f":
            continue
        scale, bias, mean, var = (init[x].astype(np.float64) for x in bn.inputs[1:5])
        eps = bn.attrs.get("epsilon", 1e-5)
        k = scale / np.sqrt(var + eps)
        b0 = init[conv.inputs[2]].astype(np.float64) if len(conv.inputs) > 2 and conv.inputs[2] \
            else np.zeros_like(mean)
        if conv.op_type == "Conv":
            if w.shape[0] != k.shape[0]:
                continue
            kw = k.reshape((-1,) + (1,) * (w.ndim - 1))
        else:
            # ConvTranspose weight [C_in, M / group, k...]: output channel gi * M/g + m is
            # column m of input-channel group gi
            g = int(conv.attrs.get("group", 1) or 1)
            if w.ndim < 3 or w.shape[0] % g or w.shape[1] * g != k.shape[0]:
                continue
            kw = k.reshape((g, 1, w.shape[1]) + (1,) * (w.ndim - 2))
            w = w.reshape((g, w.shape[0] // g) + w.shape[1:])
        new_w = (w.astype(np.float64) * kw).astype(w.dtype).reshape(init[conv.inputs[1]].shape)
        new_b = ((b0 - mean) * k + bias).astype(w.dtype)
        wn, bname = conv.inputs[1] + "__bnfold", bn.outputs[0] + "__bnfold_bias"
        init[wn] = new_w
        init[bname] = new_b
        conv.inputs = [conv.inputs[0], wn, bname]
        conv.outputs = [bn.outputs[0]]
        removed.add(id(bn))
    graph.nodes = [n for n in graph.nodes if id(n) not in removed]
    return len(removed)


def fold_constants(graph, evaluate, max_bytes=64 << 20):
    """Evaluate nodes whose inputs are all initializers; results become initializers.

    evaluate(node, inputs) -> list of outputs, or None to leave the node in place.
    Results larger than max_bytes stay computed at run time (they would bloat the model)."""
    init = graph.initializers
    folded = 0
    keep = []
    graph_outputs = set(graph.output_names)
    for n in graph.nodes:
        ins = [x for x in n.inputs if x]
        if (n.op_type in NONDETERMINISTIC or n.implicit_inputs or any(x not in init for x in ins)
                or any(o in graph_outputs for o in n.outputs) or n.domain not in ("", "ai.onnx")
                or n.op_type in ("If", "Loop", "Scan", "SequenceMap")):
            keep.append(n)
            continue
        try:
            res = evaluate(n, [init[x] if x else None for x in n.inputs])
        except Exception:  # noqa: BLE001 - leave it to run time, where errors name the node
            res = None
        if res is None or not all(isinstance(r, np.ndarray) and r.dtype != object for r in res) \
                or sum(r.nbytes for r in res) > max_bytes:
            keep.append(n)
            continue
        for o, r in zip(n.outputs, res):
            if o:
                init[o] = r
        folded += 1
    graph.nodes = keep
    return folded
