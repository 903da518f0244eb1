"""MobileNetV2 (torchvision layout, NCHW 224x224, dynamic batch): Conv -> BatchNormalization ->
Clip(0, 6) (ReLU6 as torch.onnx writes it), inverted residuals (1x1 expand, 3x3 depthwise, 1x1
linear projection), residual Add when stride 1 and widths match, 1x1 conv to 1280,
GlobalAveragePool -> Flatten -> Gemm(1000)."""
from onnx import TensorProto

from ._builder import GraphBuilder, classifier_head, conv_bn

# (expansion t, channels c, repeats n, stride s) from the MobileNetV2 paper, Table 2
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def _div8(v):
    # torchvision's _make_divisible(v, 8)
    nv = max(8, int(v + 4) // 8 * 8)
    return nv + 8 if nv < 0.9 * v else nv


def build_mobilenetv2(image=224, classes=1000, width_mult=1.0, opset=17, seed=0,
                      name="mobilenetv2"):
    b = GraphBuilder(name, opset=opset, seed=seed)
    x = b.input("input", TensorProto.FLOAT, ["batch", 3, image, image])
    c_in = _div8(32 * width_mult)
    last = _div8(1280 * max(1.0, width_mult))
    x = conv_bn(b, x, 3, c_in, 3, stride=2, act="relu6", prefix="features.0")
    idx = 1
    for t, c, n, s in SETTINGS:
        c_out = _div8(c * width_mult)
        for i in range(n):
            p = f"features.{idx}"
            stride = s if i == 0 else 1
            hidden = c_in * t
            y = x
            if t != 1:
                y = conv_bn(b, y, c_in, hidden, 1, act="relu6", prefix=p + ".expand")
            y = conv_bn(b, y, hidden, hidden, 3, stride=stride, group=hidden, act="relu6",
                        prefix=p + ".dw")
            residual = stride == 1 and c_in == c_out
            y = conv_bn(b, y, hidden, c_out, 1, act=None, prefix=p + ".project",
                        bn_gamma=0.5 if residual else 1.0)
            x = b.node("Add", [x, y], name=p + "/Add") if residual else y
            c_in = c_out
            idx += 1
    x = conv_bn(b, x, c_in, last, 1, act="relu6", prefix=f"features.{idx}")
    y = classifier_head(b, x, last, classes, prefix="classifier.1")
    b.identity_to(y, "output")
    b.output("output", TensorProto.FLOAT, ["batch", classes])
    return b.build(doc=f"MobileNetV2 image={image} classes={classes} width={width_mult}")
