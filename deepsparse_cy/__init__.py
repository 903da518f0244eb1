"""deepsparse_cy: an open ONNX inference engine for x86 CPUs with sparse INT8 kernels.

    import deepsparse_cy as ds
    engine = ds.compile_model("model.onnx", batch_size=1)
    outputs = engine.run([x])
"""
import os as _os

# How long OpenMP workers spin between kernels before sleeping. A short spin (20000) was set
# here while FP32 models still called BLAS, whose threads the spinning workers delayed; with
# the FP32 paths on this package's kernels and per-step Python down to a few microseconds, a
# worker that sleeps through a gap costs the next kernel a futex wake-up instead: libgomp's
# default (300000) measured YOLOv8n 128x128 1.09 vs 1.33 x onnxruntime and MobileNetV3-OCR
# 48x320 1.28 vs 1.41 (three process pairs each, alternating), BERT INT8 unchanged. Set before
# the kernels load libgomp; the user's own setting (or OMP_WAIT_POLICY) wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "300000")

from .engine import Engine, compile_model  # noqa: E402,F401
from .errors import (DeepSparseCyError, InputError, ModelLoadError, NodeError,  # noqa: F401
                     ResourceError, ShapeError, UnsupportedOperatorError)
from .kernels import cpu_features, kernel_isa  # noqa: E402,F401

__version__ = "0.1.0"
__all__ = ["Engine", "compile_model", "cpu_features", "kernel_isa", "DeepSparseCyError",
           "ModelLoadError", "UnsupportedOperatorError", "InputError", "ShapeError", "NodeError",
           "ResourceError"]
