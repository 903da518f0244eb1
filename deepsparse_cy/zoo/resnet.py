"""ResNet-50 v1.5 (torchvision layout, NCHW 224x224, dynamic batch) as torch.onnx exports it with
BatchNormalization kept: Conv -> BatchNormalization -> Relu, bottlenecks with 1x1/3x3/1x1 convs and a
strided 1x1 projection shortcut, MaxPool stem, GlobalAveragePool -> Flatten -> Gemm(1000).

The last BN of each bottleneck starts with a small gamma (as in "zero-init residual" training) so
the residual stream grows slowly over 16 blocks instead of doubling per block.
"""
from onnx import TensorProto

from ._builder import GraphBuilder, classifier_head, conv_bn

STAGES_50 = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))   # (width, blocks, stride)


def build_resnet(depth_blocks=STAGES_50, image=224, classes=1000, width=64, opset=17, seed=0,
                 name="resnet50"):
    b = GraphBuilder(name, opset=opset, seed=seed)
    x = b.input("input", TensorProto.FLOAT, ["batch", 3, image, image])
    x = conv_bn(b, x, 3, width, 7, stride=2, prefix="conv1")
    # torchvision's stem conv is 7x7 pad 3: conv_bn pads k//2 = 3
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = width
    for si, (w, n, stride) in enumerate(depth_blocks):
        w = w * width // 64
        c_out = w * 4
        for bi in range(n):
            p = f"layer{si + 1}.{bi}"
            s = stride if bi == 0 else 1
            y = conv_bn(b, x, c_in, w, 1, prefix=p + ".conv1")
            y = conv_bn(b, y, w, w, 3, stride=s, prefix=p + ".conv2")
            y = conv_bn(b, y, w, c_out, 1, act=None, prefix=p + ".conv3", bn_gamma=0.3)
            if bi == 0:
                x = conv_bn(b, x, c_in, c_out, 1, stride=s, act=None, prefix=p + ".downsample")
            x = b.node("Relu", [b.node("Add", [y, x], name=p + "/Add")], name=p + "/Relu")
            c_in = c_out
    y = classifier_head(b, x, c_in, classes)
    b.identity_to(y, "output")
    b.output("output", TensorProto.FLOAT, ["batch", classes])
    return b.build(doc=f"ResNet-50-style classifier image={image} classes={classes}")
