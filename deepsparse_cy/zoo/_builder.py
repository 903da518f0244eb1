"""Small onnx.helper wrapper shared by the zoo generators.

Owns: unique naming, seeded float32 initializers (fan-in scaled), constant helpers, and the final
ModelProto assembly with a matching IR version. Weights are drawn with float32 generators directly
(never float64 then cast) and written into the final proto once, so BERT-base's 110M parameters
take a few seconds. Also the Conv+BN+activation and classifier-head blocks the CNNs share.
"""
import math

import numpy as np
import onnx
from onnx import helper


class GraphBuilder:
    def __init__(self, name, opset=17, seed=0, weights=None):
        self.name = name
        # given parameters by initializer name (e.g. real weights); used instead of random ones
        self.weights = dict(weights or {})
        self.used_weights = set()
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []
        self.inputs = []
        self.outputs = []
        self._counts = {}
        self._consts = {}

    # -- naming -------------------------------------------------------------------------------
    def uname(self, base):
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    # -- initializers ---------------------------------------------------------------------------
    def init(self, name, array):
        name = self.uname(name)
        # kept as arrays until build(): protobuf copies of big messages are slow (upb copies
        # every byte on make_graph/make_model), so tensors are written into the final proto once
        self.inits.append((name, np.require(array, requirements="C")))
        return name

    def given(self, name, shape, transpose=False):
        """The caller-supplied array for `name` (transposed from torch's Linear [out, in] when
        asked), shape-checked; None when not supplied."""
        if name not in self.weights:
            return None
        w = np.asarray(self.weights[name], dtype=np.float32)
        if transpose:
            w = w.T
        if w.shape != tuple(shape):
            raise ValueError(f"weight {name!r}: expected shape {tuple(shape)}, got {w.shape}"
                             + (" after transposing" if transpose else ""))
        self.used_weights.add(name)
        return self.init(name, w)

    def normal(self, name, shape, std, mean=0.0):
        got = self.given(name, shape)
        if got is not None:
            return got
        w = self.rng.standard_normal(size=shape, dtype=np.float32)
        w *= np.float32(std)
        if mean:
            w += np.float32(mean)
        return self.init(name, w)

    def uniform(self, name, shape, low, high):
        got = self.given(name, shape)
        if got is not None:
            return got
        w = self.rng.random(size=shape, dtype=np.float32)
        w *= np.float32(high - low)
        w += np.float32(low)
        return self.init(name, w)

    def weight(self, name, shape, fan_in, gain=1.0):
        """Gaussian weight with std gain/sqrt(fan_in): keeps activation variance ~constant."""
        return self.normal(name, shape, gain / math.sqrt(fan_in))

    def const(self, value, dtype=np.int64, name=None):
        """Shared constant initializer (deduplicated by value)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(name or "const", arr)
        return self._consts[key]

    # -- nodes ----------------------------------------------------------------------------------
    def node(self, op, inputs, n_out=1, name=None, outputs=None, **attrs):
        base = self.uname(name or op)
        if outputs is None:
            outputs = [base + ("_output_0" if i == 0 else f"_output_{i}") for i in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outputs, name=base, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def input(self, name, elem_type, shape):
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def input_name(self, i):
        return self.inputs[i].name

    def output(self, name, elem_type, shape):
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def identity_to(self, src, dst):
        """Give a graph output its public name by renaming the producing node's output
        (exporters do not emit an Identity for this)."""
        for n in self.nodes:
            for i, o in enumerate(n.output):
                if o == src:
                    n.output[i] = dst
            for i, o in enumerate(n.input):
                if o == src:
                    n.input[i] = dst
        return dst

    # -- composite helpers used by more than one generator --------------------------------------
    def unsqueeze(self, x, axes):
        if self.opset >= 13:
            return self.node("Unsqueeze", [x, self.const(axes)])
        return self.node("Unsqueeze", [x], axes=list(axes))

    def reduce_mean(self, x, axes, keepdims=1):
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.const(axes)], keepdims=keepdims)
        return self.node("ReduceMean", [x], axes=list(axes), keepdims=keepdims)

    def clip(self, x, lo, hi):
        if self.opset >= 11:
            return self.node("Clip", [x, self.const(lo, np.float32), self.const(hi, np.float32)])
        return self.node("Clip", [x], min=float(lo), max=float(hi))

    def build(self, doc=""):
        opsets = [helper.make_opsetid("", self.opset)]
        model = onnx.ModelProto()
        model.ir_version = helper.find_min_ir_version_for(opsets)
        model.producer_name = "deepsparse_cy.zoo"
        model.doc_string = doc
        model.opset_import.extend(opsets)
        g = model.graph
        g.name = self.name
        g.node.extend(self.nodes)
        g.input.extend(self.inputs)
        g.output.extend(self.outputs)
        for name, arr in self.inits:
            t = g.initializer.add()
            t.name = name
            t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
            t.dims.extend(arr.shape)
            t.raw_data = arr.tobytes()
        self.inits = []
        return model


def count_params(model):
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def model_bytes(model):
    return model.ByteSize()




def conv_bn(b, x, c_in, c_out, k, stride=1, group=1, act="relu", prefix="conv", gain=None,
            bn_gamma=1.0, bias=False, pad=None):
    """Conv (+ BatchNormalization) (+ activation) as torchvision models export in eval mode with
    BN kept as its own node. He-style fan-in scaling; BN running stats near (0, 1) so the
    inference-time BN does not itself rescale much. bias=True means the BN is already folded into
    the conv, as Ultralytics exports. act: relu | relu6 | silu | None."""
    fan_in = (c_in // group) * k * k
    if gain is None:
        gain = math.sqrt(2.0) if act in ("relu", "relu6") else 1.0
    w = b.weight(prefix + ".weight", (c_out, c_in // group, k, k), fan_in, gain)
    ins = [x, w]
    if bias:
        ins.append(b.normal(prefix + ".bias", (c_out,), 0.02))
    pad = k // 2 if pad is None else pad
    y = b.node("Conv", ins, name=prefix + "/Conv", kernel_shape=[k, k], strides=[stride, stride],
               pads=[pad] * 4, group=group, dilations=[1, 1])
    if not bias:
        c = (c_out,)
        y = b.node("BatchNormalization", [
            y, b.uniform(prefix + ".bn.weight", c, 0.8 * bn_gamma, 1.2 * bn_gamma),
            b.normal(prefix + ".bn.bias", c, 0.05),
            b.normal(prefix + ".bn.running_mean", c, 0.05),
            b.uniform(prefix + ".bn.running_var", c, 0.8, 1.2)],
            name=prefix + "/BatchNormalization", epsilon=1e-5, momentum=0.9)
    if act == "relu":
        y = b.node("Relu", [y], name=prefix + "/Relu")
    elif act == "relu6":
        y = b.clip(y, 0.0, 6.0)
    elif act == "silu":
        y = b.node("Mul", [y, b.node("Sigmoid", [y], name=prefix + "/Sigmoid")],
                   name=prefix + "/Mul")
    return y


def classifier_head(b, x, c_in, classes, prefix="fc"):
    """GlobalAveragePool -> Flatten -> Gemm, torchvision's export of avgpool + flatten + Linear."""
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    w = b.weight(prefix + ".weight", (classes, c_in), c_in)
    bias = b.normal(prefix + ".bias", (classes,), 0.02)
    return b.node("Gemm", [x, w, bias], name=prefix + "/Gemm", alpha=1.0, beta=1.0, transB=1)
