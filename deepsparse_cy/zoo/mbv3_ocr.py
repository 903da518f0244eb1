"""MobileNetV3 OCR-style text detector (DBNet layout of PaddleOCR's mobile det model, exported
the way paddle2onnx / torch.onnx write it), dynamic batch, height and width.

Backbone: MobileNetV3-large at scale 0.5 — Conv -> BatchNormalization -> HardSwish stem,
inverted residuals (1x1 expand, k x k depthwise, optional squeeze-excitation, 1x1 linear
projection, residual Add), SE as GlobalAveragePool -> Conv -> Relu -> Conv -> HardSigmoid(0.2,
0.5) -> Mul. Neck (DBFPN): 1x1 laterals, top-down Resize to the lateral's runtime size
(Shape -> Slice -> Concat -> Resize sizes, F.interpolate(size=...) style, so any input size
works), 3x3 smoothing convs, all levels resized to stride 4 and concatenated. Head (DB
probability map): Conv 3x3 -> BN -> Relu -> ConvTranspose 2x2/2 -> BN -> Relu -> ConvTranspose
2x2/2 -> Sigmoid: output "maps" [batch, 1, 4 * ceil(H / 4), 4 * ceil(W / 4)].

HardSwish form (hswish=): "op" (HardSwish, opset >= 14), "hardsigmoid" (x * HardSigmoid(1/6,
0.5), torch.onnx before opset 14), "clip" (x * Clip(x + 3, 0, 6) / 6, paddle2onnx's older
form) or "auto" (op from opset 14, else hardsigmoid).
"""
import math

import numpy as np
from onnx import TensorProto

from ._builder import GraphBuilder
from .yolov8 import _resize_like

# kernel, expansion, out channels, SE, activation, stride (MobileNetV3-large)
LARGE = ((3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2),
         (3, 72, 24, False, "relu", 1), (5, 72, 40, True, "relu", 2),
         (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
         (3, 240, 80, False, "hswish", 2), (3, 200, 80, False, "hswish", 1),
         (3, 184, 80, False, "hswish", 1), (3, 184, 80, False, "hswish", 1),
         (3, 480, 112, True, "hswish", 1), (3, 672, 112, True, "hswish", 1),
         (5, 672, 160, True, "hswish", 2), (5, 960, 160, True, "hswish", 1),
         (5, 960, 160, True, "hswish", 1))
# E[act(z)^2] for z ~ N(0, 1): the gain sqrt(1 / that) keeps activations near unit scale
_ACT_GAIN = {"relu": math.sqrt(2.0), "hswish": 1.8, None: 1.0}


def _make_divisible(v, divisor=8, min_value=None):
    min_value = min_value or divisor
    nv = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return nv + divisor if nv < 0.9 * v else nv


def build_mbv3_ocr(scale=0.5, neck=96, opset=17, seed=0, name="mbv3-ocr", hswish="auto",
                   se_gate="paddle", dynamic=True, image=(640, 640)):
    """se_gate: "paddle" HardSigmoid(alpha=0.2, beta=0.5), "torch" HardSigmoid(1/6, 0.5).
    image only matters with dynamic=False (fixed [H, W])."""
    if hswish == "auto":
        hswish = "op" if opset >= 14 else "hardsigmoid"
    if hswish == "op" and opset < 14:
        raise ValueError("HardSwish needs opset >= 14")
    b = GraphBuilder(name, opset=opset, seed=seed)
    gate_alpha = 0.2 if se_gate == "paddle" else 1.0 / 6.0

    def act(x, kind, prefix):
        if kind == "relu":
            return b.node("Relu", [x], name=prefix + "/Relu")
        if kind != "hswish":
            return x
        if hswish == "op":
            return b.node("HardSwish", [x], name=prefix + "/HardSwish")
        if hswish == "hardsigmoid":
            g = b.node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5, name=prefix + "/HardSigmoid")
            return b.node("Mul", [x, g], name=prefix + "/Mul")
        g = b.clip(b.node("Add", [x, b.const(3.0, np.float32)]), 0.0, 6.0)
        return b.node("Div", [b.node("Mul", [x, g]), b.const(6.0, np.float32)])

    def conv_bn(x, c_in, c_out, k, stride=1, group=1, kind=None, prefix="conv", gamma=1.0):
        fan_in = (c_in // group) * k * k
        w = b.weight(prefix + ".conv.weight", (c_out, c_in // group, k, k), fan_in,
                     _ACT_GAIN[kind])
        y = b.node("Conv", [x, w], name=prefix + "/Conv", kernel_shape=[k, k],
                   strides=[stride, stride], pads=[k // 2] * 4, group=group, dilations=[1, 1])
        c = (c_out,)
        y = b.node("BatchNormalization", [
            y, b.uniform(prefix + ".bn.weight", c, 0.8 * gamma, 1.2 * gamma),
            b.normal(prefix + ".bn.bias", c, 0.05),
            b.normal(prefix + ".bn.running_mean", c, 0.05),
            b.uniform(prefix + ".bn.running_var", c, 0.8, 1.2)],
            name=prefix + "/BatchNormalization", epsilon=1e-5, momentum=0.9)
        return act(y, kind, prefix)

    def se(x, c, prefix):
        r = _make_divisible(c // 4)
        s = b.node("GlobalAveragePool", [x], name=prefix + "/GlobalAveragePool")
        s = b.node("Conv", [s, b.weight(prefix + ".conv1.weight", (r, c, 1, 1), c, math.sqrt(2)),
                            b.normal(prefix + ".conv1.bias", (r,), 0.02)],
                   name=prefix + "/conv1/Conv", kernel_shape=[1, 1])
        s = b.node("Relu", [s])
        s = b.node("Conv", [s, b.weight(prefix + ".conv2.weight", (c, r, 1, 1), r),
                            b.normal(prefix + ".conv2.bias", (c,), 0.5)],
                   name=prefix + "/conv2/Conv", kernel_shape=[1, 1])
        g = b.node("HardSigmoid", [s], alpha=gate_alpha, beta=0.5, name=prefix + "/HardSigmoid")
        return b.node("Mul", [x, g], name=prefix + "/Mul")

    hw = ["height", "width"] if dynamic else list(image)
    x = b.input("x", TensorProto.FLOAT, ["batch", 3] + hw)
    c_in = _make_divisible(16 * scale)
    x = conv_bn(x, 3, c_in, 3, 2, kind="hswish", prefix="backbone.conv")
    feats = []
    for i, (k, exp, c, use_se, kind, s) in enumerate(LARGE):
        p = f"backbone.stage.{i}"
        mid, c_out = _make_divisible(scale * exp), _make_divisible(scale * c)
        if s == 2 and i > 1:
            feats.append((x, c_in))         # stride 4, 8, 16 outputs (before downsampling)
        y = conv_bn(x, c_in, mid, 1, kind=kind, prefix=p + ".expand") if mid != c_in else x
        y = conv_bn(y, mid, mid, k, s, group=mid, kind=kind, prefix=p + ".dw")
        if use_se:
            y = se(y, mid, p + ".se")
        residual = s == 1 and c_in == c_out
        y = conv_bn(y, mid, c_out, 1, kind=None, prefix=p + ".linear",
                    gamma=0.5 if residual else 1.0)
        x = b.node("Add", [x, y], name=p + "/Add") if residual else y
        c_in = c_out
    last = _make_divisible(scale * 960)
    feats.append((conv_bn(x, c_in, last, 1, kind="hswish", prefix="backbone.last"), last))

    # ---- DBFPN ------------------------------------------------------------------------------
    def conv(x, c1, c2, k, prefix, gain=1.0):
        w = b.weight(prefix + ".weight", (c2, c1, k, k), c1 * k * k, gain)
        return b.node("Conv", [x, w], name=prefix + "/Conv", kernel_shape=[k, k],
                      pads=[k // 2] * 4, strides=[1, 1])

    ins = [conv(f, c, neck, 1, f"neck.in{j + 2}_conv") for j, (f, c) in enumerate(feats)]
    outs = [ins[3]]
    for j in (2, 1, 0):
        up = _resize_like(b, outs[-1], ins[j])
        outs.append(b.node("Add", [ins[j], up], name=f"neck/Add_{j}"))
    outs = outs[::-1]                                        # in2-level first
    ps = [conv(o, neck, neck // 4, 3, f"neck.p{j + 2}_conv", gain=0.7) for j, o in enumerate(outs)]
    ps = [ps[0]] + [_resize_like(b, p, ps[0]) for p in ps[1:]]
    fuse = b.node("Concat", ps[::-1], axis=1, name="neck/Concat")

    # ---- DB head (probability map) ----------------------------------------------------------
    c = neck // 4
    h = conv_bn(fuse, neck, c, 3, kind="relu", prefix="head.binarize.conv1")

    def deconv(x, c1, c2, prefix, bias_mean=0.0):
        w = b.weight(prefix + ".weight", (c1, c2, 2, 2), c1, math.sqrt(2.0))
        bias = b.normal(prefix + ".bias", (c2,), 0.02, mean=bias_mean)
        return b.node("ConvTranspose", [x, w, bias], name=prefix + "/ConvTranspose",
                      kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], group=1,
                      dilations=[1, 1])

    h = deconv(h, c, c, "head.binarize.conv2")
    cc = (c,)
    h = b.node("BatchNormalization", [
        h, b.uniform("head.binarize.conv_bn2.weight", cc, 0.8, 1.2),
        b.normal("head.binarize.conv_bn2.bias", cc, 0.05),
        b.normal("head.binarize.conv_bn2.running_mean", cc, 0.05),
        b.uniform("head.binarize.conv_bn2.running_var", cc, 0.8, 1.2)],
        name="head.binarize.conv_bn2/BatchNormalization", epsilon=1e-5, momentum=0.9)
    h = b.node("Relu", [h])
    h = deconv(h, c, 1, "head.binarize.conv3", bias_mean=-1.0)
    y = b.node("Sigmoid", [h])
    b.identity_to(y, "maps")
    b.output("maps", TensorProto.FLOAT, ["batch", 1] + (["out_height", "out_width"] if dynamic
                                                        else [4 * -(-d // 4) for d in image]))
    return b.build(doc=f"MobileNetV3 OCR (DB) text detector scale={scale} neck={neck} "
                       f"opset={opset} hswish={hswish} se_gate={se_gate}")
