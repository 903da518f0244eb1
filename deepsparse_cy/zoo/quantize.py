"""Static INT8 quantization of a float model into a standard QDQ ONNX model, by way of
onnxruntime.quantization.quantize_static: u8 asymmetric activations, s8 symmetric per-channel
weights, MinMax calibration on seeded random inputs (or the caller's own feeds).

onnxruntime is a test/benchmark dependency only, so it is imported inside quantize_model; without
it the function raises a DeepSparseCyError saying what to install. By default only weight-bearing
MatMul/Gemm/Conv nodes are quantized: activation x activation MatMuls (attention) and elementwise
ops stay float, because a quantized Add of BERT's finfo.min attention mask would spend the whole
8-bit range on the mask and flatten the attention scores.

Speed (BERT-base, 110M weights): the float model goes to onnxruntime as external data in
/dev/shm, and when no quantized node has a bias the per-channel weights are computed vectorised
after a per-tensor quantize_static run, reproducing its per-channel output exactly (tested).
"""
import logging
import os
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import DeepSparseCyError
from .prune import prunable_layers


_EXTERNAL_BYTES = 64 << 20


def _save_external(model, path):
    """Save with every large initializer in one side file, without mutating `model`."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(path) + ".data", size_threshold=1024)


def quantize_model(model, calibration=None, num_samples=4, seed=0, batch=1, seq=128,
                   per_channel=True, op_types=("MatMul", "Gemm", "Conv"),
                   quantize_activation_matmuls=False, reduce_range=False, fast_per_channel=True):
    """Return a QDQ-quantized copy of `model` (onnx.ModelProto).

    calibration: iterable of feed dicts {input name: array}; default num_samples seeded random
    feeds from deepsparse_cy.zoo.example_inputs(model, batch, seq, seed + i).
    """
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                              QuantFormat, QuantType, quantize_static)
    except ImportError as e:   # pragma: no cover - depends on the environment
        raise DeepSparseCyError(
            "INT8 quantization uses onnxruntime.quantization, which is not installed; "
            "install it with `pip install onnxruntime` (it is part of the test extras)") from e
    from . import example_inputs

    if calibration is None:
        calibration = [example_inputs(model, batch=batch, seq=seq, seed=seed + i)
                       for i in range(num_samples)]
    feeds = list(calibration)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

        def rewind(self):
            self._it = iter(feeds)

    layers = {layer.node: layer for layer in prunable_layers(model)}
    nodes = [n for n in model.graph.node if n.op_type in op_types
             and (quantize_activation_matmuls or n.name in layers)]
    to_quantize = [n.name for n in nodes]
    # ORT's per-channel weight quantization loops over channels in Python (~25 s for BERT-base).
    # Without biases it is a pure function of each weight, so quantize per tensor (same
    # calibration, same graph) and redo the weights per channel vectorised afterwards; biased
    # Conv/Gemm keep ORT's own path (their int32 bias scales follow the weight scales).
    fast = fast_per_channel and per_channel and not reduce_range and not any(
        len(n.input) > 2 and n.input[2] for n in nodes)
    with tempfile.TemporaryDirectory(prefix="dscy_quant_", dir=_scratch_dir(model)) as tmp:
        src = os.path.join(tmp, "float.onnx")
        dst = os.path.join(tmp, "quant.onnx")
        # weights as external data: ORT runs onnx shape inference on the file, which then
        # parses a small graph proto instead of all the weights (15 s saved on BERT-base)
        big = _weight_bytes(model) > _EXTERNAL_BYTES
        if big:
            _save_external(model, src)
        else:
            onnx.save_model(model, src)
        # quantize_static logs a "consider pre-processing" warning on the root logger per call
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.ERROR))
        try:
            quantize_static(src, dst, _Reader(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(op_types), nodes_to_quantize=to_quantize,
                            per_channel=per_channel and not fast, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            use_external_data_format=big,
                            extra_options={"ActivationSymmetric": False,
                                           "WeightSymmetric": True})
        finally:
            root.setLevel(level)
        q = onnx.load_model(dst)
    if fast:
        _weights_per_channel(model, q, [layers[n.name] for n in nodes if n.name in layers])
    return q


def _scratch_dir(model):
    """RAM-backed /dev/shm for the temporary model files when it has room (the float model is
    written once and read back several times by onnxruntime), else the default temp dir."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 3 * _weight_bytes(model) + (256 << 20):
            return "/dev/shm"
    except (OSError, AttributeError):
        pass
    return None


def _weight_bytes(model):
    return sum(4 * int(np.prod(t.dims)) for t in model.graph.initializer)


def _weights_per_channel(fmodel, qmodel, layers):
    """Replace per-tensor symmetric s8 weights by per-channel ones, computed the way
    onnxruntime.quantization does (scale = float64(2 * absmax) / 254 stored as float32, zero
    point 0, round half to even of w / scale) on the output-channel axis it uses."""
    finits = {t.name: t for t in fmodel.graph.initializer}
    qinits = {t.name: t for t in qmodel.graph.initializer}
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    qnodes = {n.name: n for n in qmodel.graph.node}
    for layer in layers:
        node = qnodes.get(layer.node)
        dq = producer.get(node.input[1]) if node is not None else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        w = numpy_helper.to_array(finits[layer.weight]).astype(np.float32)
        axis = 1 - layer.in_axis if layer.op_type != "Conv" else 0
        wm = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        absmax = np.maximum(-np.minimum(wm.min(1), 0), np.maximum(wm.max(1), 0))
        scale64 = absmax.astype(np.float64) * 2.0 / 254.0
        scale = scale64.astype(np.float32)
        scale[scale64 < np.finfo(np.float32).tiny] = 1.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -128, 127).astype(np.int8)
        qname, sname, zname = dq.input[0], dq.input[1], dq.input[2]
        qinits[qname].CopyFrom(numpy_helper.from_array(q, qname))
        qinits[sname].CopyFrom(numpy_helper.from_array(scale, sname))
        qinits[zname].CopyFrom(numpy_helper.from_array(np.zeros(len(scale), np.int8), zname))
        for a in list(dq.attribute):
            if a.name == "axis":
                dq.attribute.remove(a)
        dq.attribute.append(onnx.helper.make_attribute("axis", axis))
