"""Static INT8 quantization of a float model into a standard QDQ ONNX model, by way of
onnxruntime.quantization.quantize_static: u8 asymmetric activations, s8 symmetric per-channel
weights, MinMax calibration on seeded random inputs (or the caller's own feeds).

onnxruntime is a test/benchmark dependency only, so it is imported inside quantize_model; without
it the function raises a DeepSparseCyError saying what to install. By default only weight-bearing
MatMul/Gemm/Conv nodes are quantized: activation x activation MatMuls (attention) and elementwise
ops stay float, because a quantized Add of BERT's finfo.min attention mask would spend the whole
8-bit range on the mask and flatten the attention scores.
"""
import logging
import os
import tempfile

import onnx

from ..errors import DeepSparseCyError
from .prune import prunable_layers


def quantize_model(model, calibration=None, num_samples=4, seed=0, batch=1, seq=128,
                   per_channel=True, op_types=("MatMul", "Gemm", "Conv"),
                   quantize_activation_matmuls=False, reduce_range=False):
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

    weight_nodes = {layer.node for layer in prunable_layers(model)}
    to_quantize = [n.name for n in model.graph.node if n.op_type in op_types
                   and (quantize_activation_matmuls or n.name in weight_nodes)]
    with tempfile.TemporaryDirectory(prefix="dscy_quant_") as tmp:
        src = os.path.join(tmp, "float.onnx")
        dst = os.path.join(tmp, "quant.onnx")
        onnx.save_model(model, src)
        # quantize_static logs a "consider pre-processing" warning on the root logger per call
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.ERROR))
        try:
            quantize_static(src, dst, _Reader(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(op_types), nodes_to_quantize=to_quantize,
                            per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": False,
                                           "WeightSymmetric": True})
        finally:
            root.setLevel(level)
        return onnx.load_model(dst)
