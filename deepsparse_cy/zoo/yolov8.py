"""YOLOv8n-style detector as Ultralytics' `export(format="onnx", dynamic=True)` writes it.

Graph: BN folded into Conv (with bias), SiLU as Sigmoid -> Mul, C2f blocks (Conv -> Split into
two halves -> Bottlenecks on the last half -> Concat of all parts -> Conv), SPPF with three
chained 5x5 MaxPools, nearest Resize (scales [1, 1, 2, 2]) upsampling, and the anchor-free
Detect head: per level Concat(box branch [b, 64, h, w], class branch [b, nc, h, w]) -> Reshape
[b, 144, h*w] -> Concat over levels -> Split(64, nc) -> DFL (Reshape [b, 4, 16, A] -> Transpose
-> Softmax over the 16 bins -> 1x1 Conv with arange(16) weights -> Reshape [b, 4, A]) ->
dist2bbox against anchors -> Concat(boxes * strides, Sigmoid(classes)) = output0 [b, 4 + nc, A].

The anchors are built inside the graph from the feature maps' runtime shapes, as make_anchors
exports with dynamic=True: Shape -> Gather(h, w) -> Cast -> Range -> Add(0.5) -> Reshape ->
Expand (meshgrid) -> Unsqueeze -> Concat (stack) -> Reshape [-1, 2], and ConstantOfShape for the
stride column. Input "images" [batch, 3, height, width] float in [0, 1]; height and width are
symbolic (any multiple of 32 runs).

Weights come from the same BN-folding emulation as yolo.py (per-channel statistics propagated
analytically, so every SiLU sees pre-activations ~N(beta, gamma^2)).
"""
import math

import numpy as np
from onnx import TensorProto

from ._builder import GraphBuilder
from .yolo import _silu_max_moments, _silu_moments, _window_count

STRIDES = (8, 16, 32)
REG_MAX = 16


def build_yolov8(image=640, classes=80, width=0.25, depth=0.33, max_channels=1024, opset=17,
                 seed=0, name="yolov8n", dynamic=True):
    """image only sets the nominal size the weight statistics assume (SPPF windows) and, with
    dynamic=False, the fixed input size. opset 11..21 (Split/Unsqueeze/Softmax/Resize forms
    follow the opset as torch.onnx writes them)."""
    if opset < 11:
        raise ValueError("the dynamic anchors need Range (opset >= 11)")
    b = GraphBuilder(name, opset=opset, seed=seed)
    rng = b.rng
    ch = lambda c: int(math.ceil(min(c, max_channels) * width / 8)) * 8    # noqa: E731
    nrep = lambda n: max(round(n * depth), 1)                                # noqa: E731
    idx = [0]
    stats = {}   # tensor -> (per-channel mean, per-channel variance[, beta, gamma])

    def conv(x, c1, c2, k=1, s=1, prefix=None):
        p = prefix or f"model.{idx[0]}"
        idx[0] += 1
        mu, var = stats[x][:2]
        w = rng.standard_normal((c2, c1, k, k), dtype=np.float32) / np.float32(math.sqrt(c1 * k * k))
        w64 = w.astype(np.float64)
        pre_mu = w64.sum((2, 3)) @ mu
        pre_var = (w64 * w64).sum((2, 3)) @ var
        gamma = rng.uniform(0.8, 1.2, c2)
        beta = rng.normal(0.0, 0.2, c2)
        scale = gamma / np.sqrt(pre_var + 1e-3)
        wf = (w64 * scale[:, None, None, None]).astype(np.float32)
        bf = (beta - pre_mu * scale).astype(np.float32)
        y = b.node("Conv", [x, b.init(p + ".conv.weight", wf), b.init(p + ".conv.bias", bf)],
                   name=p + "/conv/Conv", kernel_shape=[k, k], strides=[s, s],
                   pads=[k // 2] * 4, dilations=[1, 1], group=1)
        y = b.node("Mul", [y, b.node("Sigmoid", [y], name=p + "/act/Sigmoid")],
                   name=p + "/act/Mul")
        stats[y] = _silu_moments(beta, gamma) + (beta, gamma)
        return y

    def add(a, c):
        y = b.node("Add", [a, c])
        stats[y] = (stats[a][0] + stats[c][0], stats[a][1] + stats[c][1])
        return y

    def concat(xs):
        y = b.node("Concat", xs, axis=1)
        stats[y] = tuple(np.concatenate([stats[x][j] for x in xs]) for j in range(2))
        return y

    def split(x, sizes, axis=1):
        outs = _split(b, x, sizes, axis)
        start = 0
        for o, n in zip(outs, sizes):
            stats[o] = tuple(s[start:start + n] for s in stats[x][:2])
            start += n
        return outs

    def c2f(x, c1, c2, n, shortcut):
        c = c2 // 2
        p = f"model.{idx[0]}"
        idx[0] += 1
        y = list(split(conv(x, c1, 2 * c, prefix=p + ".cv1"), [c, c]))
        for j in range(n):
            h = conv(conv(y[-1], c, c, 3, prefix=f"{p}.m.{j}.cv1"), c, c, 3,
                     prefix=f"{p}.m.{j}.cv2")
            y.append(add(y[-1], h) if shortcut else h)
        return conv(concat(y), (2 + n) * c, c2, prefix=p + ".cv2")

    def sppf(x, c1, c2):
        c_ = c1 // 2
        p = f"model.{idx[0]}"
        idx[0] += 1
        x = conv(x, c1, c_, prefix=p + ".cv1")
        beta, gamma = stats[x][2:]
        pools = [x]
        for j in range(3):
            y = b.node("MaxPool", [pools[-1]], name=f"{p}/m_{j}/MaxPool", kernel_shape=[5, 5],
                       strides=[1, 1], pads=[2, 2, 2, 2], dilations=[1, 1], ceil_mode=0)
            stats[y] = _silu_max_moments(beta, gamma, _window_count(image // 32, 5 + 4 * j))
            pools.append(y)
        return conv(concat(pools), 4 * c_, c2, prefix=p + ".cv2")

    def upsample(x):
        idx[0] += 1
        y = _resize_scales(b, x, [1.0, 1.0, 2.0, 2.0])
        stats[y] = stats[x]
        return y

    hw = ["height", "width"] if dynamic else [image, image]
    x = b.input("images", TensorProto.FLOAT, ["batch", 3] + hw)
    stats[x] = (np.full(3, 0.5), np.full(3, 1.0 / 12.0))      # pixels uniform in [0, 1]
    # backbone
    x = conv(x, 3, ch(64), 3, 2)
    x = conv(x, ch(64), ch(128), 3, 2)
    x = c2f(x, ch(128), ch(128), nrep(3), True)
    x = conv(x, ch(128), ch(256), 3, 2)
    p3 = c2f(x, ch(256), ch(256), nrep(6), True)
    x = conv(p3, ch(256), ch(512), 3, 2)
    p4 = c2f(x, ch(512), ch(512), nrep(6), True)
    x = conv(p4, ch(512), ch(1024), 3, 2)
    x = c2f(x, ch(1024), ch(1024), nrep(3), True)
    p5 = sppf(x, ch(1024), ch(1024))
    # head (PAN)
    x = concat([upsample(p5), p4])
    idx[0] += 1
    h12 = c2f(x, ch(1024) + ch(512), ch(512), nrep(3), False)
    x = concat([upsample(h12), p3])
    idx[0] += 1
    out3 = c2f(x, ch(512) + ch(256), ch(256), nrep(3), False)
    x = conv(out3, ch(256), ch(256), 3, 2)
    idx[0] += 1
    out4 = c2f(concat([x, h12]), ch(256) + ch(512), ch(512), nrep(3), False)
    x = conv(out4, ch(512), ch(512), 3, 2)
    idx[0] += 1
    out5 = c2f(concat([x, p5]), ch(512) + ch(1024), ch(1024), nrep(3), False)

    # ---- Detect -------------------------------------------------------------------------------
    feats_ch = (ch(256), ch(512), ch(1024))
    c2 = max(16, feats_ch[0] // 4, REG_MAX * 4)
    c3 = max(feats_ch[0], min(classes, 100))
    no = 4 * REG_MAX + classes
    p = f"model.{idx[0]}"
    batch = b.unsqueeze(b.node("Gather", [b.node("Shape", [b.input_name(0)]), b.const(0)],
                               axis=0), [0])
    levels = []
    for i, (feat, c) in enumerate(zip((out3, out4, out5), feats_ch)):
        box = conv(conv(feat, c, c2, 3, prefix=f"{p}.cv2.{i}.0"), c2, c2, 3,
                   prefix=f"{p}.cv2.{i}.1")
        box = _head_conv(b, box, stats[box], c2, 4 * REG_MAX, np.full(4 * REG_MAX, 1.0),
                         f"{p}.cv2.{i}.2")
        cls = conv(conv(feat, c, c3, 3, prefix=f"{p}.cv3.{i}.0"), c3, c3, 3,
                   prefix=f"{p}.cv3.{i}.1")
        prior = math.log(5 / classes / (640 / STRIDES[i]) ** 2)
        cls = _head_conv(b, cls, stats[cls], c3, classes, np.full(classes, prior),
                         f"{p}.cv3.{i}.2")
        levels.append(b.node("Concat", [box, cls], axis=1, name=f"{p}/Concat_{i}"))

    # x_cat = cat([xi.view(b, no, -1) for xi in x], 2)
    flat_shape = b.node("Concat", [batch, b.const([no]), b.const([-1])], axis=0)
    x_cat = b.node("Concat", [b.node("Reshape", [xi, flat_shape]) for xi in levels], axis=2)
    anchors, strides = _make_anchors(b, levels)
    box, cls = _split(b, x_cat, [4 * REG_MAX, classes], axis=1)

    # DFL: softmax over the 16 bins, expectation by a fixed 1x1 conv with weights 0..15
    bs = b.node("Shape", [box])
    a = b.unsqueeze(b.node("Gather", [bs, b.const(2)], axis=0), [0])
    bb = b.unsqueeze(b.node("Gather", [bs, b.const(0)], axis=0), [0])
    d = b.node("Reshape", [box, b.node("Concat", [bb, b.const([4, REG_MAX]), a], axis=0)])
    d = b.node("Transpose", [d], perm=[0, 2, 1, 3])
    d = _softmax(b, d, axis=1, rank=4)
    dfl_w = b.init(f"{p}.dfl.conv.weight",
                   np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1))
    d = b.node("Conv", [d, dfl_w], name=f"{p}/dfl/conv/Conv", kernel_shape=[1, 1],
               strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1)
    d = b.node("Reshape", [d, b.node("Concat", [bb, b.const([4]), a], axis=0)])

    # dist2bbox(xywh=True, dim=1) * strides
    lt, rb = _split(b, d, [2, 2], axis=1)
    x1y1 = b.node("Sub", [anchors, lt])
    x2y2 = b.node("Add", [anchors, rb])
    c_xy = b.node("Div", [b.node("Add", [x1y1, x2y2]), b.const(2.0, np.float32)])
    wh = b.node("Sub", [x2y2, x1y1])
    dbox = b.node("Mul", [b.node("Concat", [c_xy, wh], axis=1), strides])
    y = b.node("Concat", [dbox, b.node("Sigmoid", [cls])], axis=1)
    b.identity_to(y, "output0")
    n_anchors = "anchors" if dynamic else sum((image // s) ** 2 for s in STRIDES)
    b.output("output0", TensorProto.FLOAT, ["batch", 4 + classes, n_anchors])
    return b.build(doc=f"YOLOv8-style detector classes={classes} width={width} depth={depth} "
                       f"dynamic={dynamic} opset={opset}")


def _head_conv(b, x, st, c1, c2, bias, prefix):
    """Final 1x1 Conv2d of a Detect branch (no BN, no activation): std 1/sqrt(sum E[x^2])
    keeps the logits near unit scale; Ultralytics' bias priors."""
    mu, var = st[:2]
    w = b.normal(prefix + ".weight", (c2, c1, 1, 1), 1.0 / math.sqrt(float(np.sum(var + mu * mu))))
    return b.node("Conv", [x, w, b.init(prefix + ".bias", np.asarray(bias, np.float32))],
                  name=prefix + "/Conv", kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0],
                  dilations=[1, 1], group=1)


def _make_anchors(b, feats, offset=0.5):
    """anchor_points [1, 2, A] and stride_tensor [1, A] from the feature maps' runtime shapes,
    node for node as make_anchors(...) followed by .transpose(0, 1) exports."""
    points, strides = [], []
    for feat, s in zip(feats, STRIDES):
        shp = b.node("Shape", [feat])
        h = b.node("Gather", [shp, b.const(2)], axis=0)           # 0-d int64
        w = b.node("Gather", [shp, b.const(3)], axis=0)
        zero, one = b.const(0.0, np.float32), b.const(1.0, np.float32)
        sx = b.node("Range", [zero, b.node("Cast", [w], to=TensorProto.FLOAT), one])
        sy = b.node("Range", [zero, b.node("Cast", [h], to=TensorProto.FLOAT), one])
        sx = b.node("Add", [sx, b.const(offset, np.float32)])
        sy = b.node("Add", [sy, b.const(offset, np.float32)])
        hw = b.node("Concat", [b.unsqueeze(h, [0]), b.unsqueeze(w, [0])], axis=0)
        # torch.meshgrid(sy, sx, indexing="ij")
        gy = b.node("Expand", [b.node("Reshape", [sy, b.const([-1, 1])]), hw])
        gx = b.node("Expand", [b.node("Reshape", [sx, b.const([1, -1])]), hw])
        st = b.node("Concat", [b.unsqueeze(gx, [-1]), b.unsqueeze(gy, [-1])], axis=-1)
        points.append(b.node("Reshape", [st, b.const([-1, 2])]))
        n = b.unsqueeze(b.node("Mul", [h, w]), [0])
        full_shape = b.node("Concat", [n, b.const([1])], axis=0)
        strides.append(b.node("ConstantOfShape", [full_shape],
                              value=_scalar_tensor(float(s))))
    anchors = b.node("Transpose", [b.node("Concat", points, axis=0)], perm=[1, 0])
    anchors = b.unsqueeze(anchors, [0])
    stride_t = b.node("Transpose", [b.node("Concat", strides, axis=0)], perm=[1, 0])
    return anchors, stride_t


def _scalar_tensor(v):
    from onnx import helper
    return helper.make_tensor("value", TensorProto.FLOAT, [1], [v])


# ---- opset-dependent forms (shared with mbv3_ocr) ------------------------------------------------
def _split(b, x, sizes, axis):
    """Split into `sizes` along axis: sizes as an input from opset 13, an attribute before."""
    if b.opset >= 13:
        return b.node("Split", [x, b.const(list(sizes))], n_out=len(sizes), axis=axis)
    return b.node("Split", [x], n_out=len(sizes), axis=axis, split=list(sizes))


def _softmax(b, x, axis, rank):
    """Softmax over one axis. Before opset 13 Softmax flattens the trailing dims from `axis`, so
    torch.onnx moves the axis last, applies Softmax there and moves it back."""
    axis %= rank
    if b.opset >= 13 or axis == rank - 1:
        return b.node("Softmax", [x], axis=axis if b.opset >= 13 else rank - 1)
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    y = b.node("Softmax", [b.node("Transpose", [x], perm=perm)], axis=rank - 1)
    return b.node("Transpose", [y], perm=perm)


def _resize_scales(b, x, scales, mode="nearest"):
    """nn.Upsample(scale_factor=...) as torch.onnx writes it: roi empty (an empty tensor at
    opset 11/12, where roi is not optional), scales a constant."""
    roi = "" if b.opset >= 13 else b.const(np.zeros(0, np.float32), np.float32)
    attrs = dict(mode=mode, coordinate_transformation_mode="asymmetric")
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    return b.node("Resize", [x, roi, b.const(scales, np.float32)], **attrs)


def _resize_like(b, x, ref, mode="nearest"):
    """F.interpolate(x, size=ref.shape[2:]): the target size taken from another tensor's
    runtime shape (Shape -> Slice -> Concat with x's N, C -> Resize sizes)."""
    roi = "" if b.opset >= 13 else b.const(np.zeros(0, np.float32), np.float32)
    scales = "" if b.opset >= 13 else b.const(np.zeros(0, np.float32), np.float32)
    hw = b.node("Slice", [b.node("Shape", [ref]), b.const([2]), b.const([4]), b.const([0])])
    nc = b.node("Slice", [b.node("Shape", [x]), b.const([0]), b.const([2]), b.const([0])])
    sizes = b.node("Concat", [nc, hw], axis=0)
    attrs = dict(mode=mode, coordinate_transformation_mode="asymmetric"
                 if mode == "nearest" else "pytorch_half_pixel")
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    return b.node("Resize", [x, roi, scales, sizes], **attrs)
