"""onnx.backend.base.Backend over deepsparse_cy, so onnx's own BackendTest suite can run."""
from __future__ import annotations

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

from .engine import Engine


def proto_to_value(v):
    """Test data as onnx's runner reads it from .pb files: TensorProto -> array, SequenceProto ->
    list, OptionalProto -> value or None (recursively for lists); anything else unchanged."""
    from onnx import numpy_helper
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, onnx.SequenceProto):
        return numpy_helper.to_list(v)
    if isinstance(v, onnx.OptionalProto):
        return numpy_helper.to_optional(v)
    if isinstance(v, list):
        return [proto_to_value(x) for x in v]
    return v


class DeepSparseCyRep(BackendRep):
    def __init__(self, engine):
        self.engine = engine

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            outs = self.engine.mapped_run(inputs)
            outs = [outs[n] for n in self.engine.output_names]
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            outs = self.engine.run(list(inputs))
        names = [n if n.isidentifier() else f"output_{i}" for i, n in enumerate(self.engine.output_names)]
        return namedtupledict("Outputs", names)(*outs)


class DeepSparseCyBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        return device.upper() == "CPU"

    @classmethod
    def supports_device(cls, device):
        return device.upper() == "CPU"

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        super().prepare(model, device, **kwargs)
        if isinstance(model, onnx.ModelProto):
            model = model.SerializeToString()
        return DeepSparseCyRep(Engine(model, **kwargs))

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        # Build a one-node model whose input types come from the given arrays.
        vis = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(x.dtype),
                                                  x.shape)
               for name, x in zip(node.input, inputs) if name]
        outs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
        graph = onnx.helper.make_graph([node], "run_node", vis, outs)
        model = onnx.helper.make_model(graph)
        eng = Engine(model.SerializeToString(), **kwargs)
        return eng.run([x for name, x in zip(node.input, inputs) if name])


prepare = DeepSparseCyBackend.prepare
run_model = DeepSparseCyBackend.run_model
run_node = DeepSparseCyBackend.run_node
supports_device = DeepSparseCyBackend.supports_device
