"""deepsparse_cy: an open ONNX inference engine for x86 CPUs with sparse INT8 kernels.

    import deepsparse_cy as ds
    engine = ds.compile_model("model.onnx", batch_size=1)
    outputs = engine.run([x])
"""
from .engine import Engine, compile_model  # noqa: F401
from .errors import (DeepSparseCyError, InputError, ModelLoadError, NodeError,  # noqa: F401
                     ResourceError, ShapeError, UnsupportedOperatorError)
from .kernels import cpu_features, kernel_isa  # noqa: F401

__version__ = "0.1.0"
__all__ = ["Engine", "compile_model", "cpu_features", "kernel_isa", "DeepSparseCyError",
           "ModelLoadError", "UnsupportedOperatorError", "InputError", "ShapeError", "NodeError",
           "ResourceError"]
