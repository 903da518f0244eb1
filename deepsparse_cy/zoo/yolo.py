"""YOLOv5s-style detector (v6.0 layout, width 0.50, depth 0.33) as Ultralytics' export writes it:
BN folded into Conv (with bias), SiLU as Sigmoid -> Mul, C3 blocks, SPPF with three chained
MaxPools, nearest Resize (scales input) upsampling, Concat, and a Detect head per level:
Conv 1x1 -> Reshape [b, 3, 85, ny, nx] -> Transpose -> Sigmoid -> Split(xy, wh, conf) -> grid/anchor
decode -> Concat -> Reshape [b, 3*ny*nx, 85], all levels concatenated into output0 [b, N, 85].

Input NCHW float in [0, 1], 640x640 by default (any multiple of 32); the grid and anchor tensors
are constants sized for that image, as in a fixed-size export; the batch stays dynamic.
"""
import math

import numpy as np
from onnx import TensorProto

from ._builder import GraphBuilder

ANCHORS = (((10, 13), (16, 30), (33, 23)),
           ((30, 61), (62, 45), (59, 119)),
           ((116, 90), (156, 198), (373, 326)))
STRIDES = (8, 16, 32)
# Gauss-Hermite nodes (probabilists'): E[f(z)], z ~ N(0, 1) ~= sum(w * f(t))
_GH_T, _GH_W = np.polynomial.hermite_e.hermegauss(48)
_GH_W = (_GH_W / np.sqrt(2.0 * np.pi)).astype(np.float64)


def _silu_moments(mu, sd):
    """Per-channel mean and variance of SiLU(z) for z ~ N(mu, sd^2)."""
    z = mu[:, None] + sd[:, None] * _GH_T[None, :]
    f = z / (1.0 + np.exp(-z))
    m1 = f @ _GH_W
    m2 = (f * f) @ _GH_W
    return m1, np.maximum(m2 - m1 * m1, 1e-6)


def _silu_max_moments(beta, gamma, n):
    """Mean and variance of max over n iid SiLU(z), z ~ N(beta, gamma^2). SiLU is increasing
    over the upper tail where the max lives, so max SiLU(z_i) ~= SiLU(beta + gamma * M) with M the
    max of n standard normals (density n phi Phi^(n-1))."""
    t = np.linspace(-4.0, 7.0, 1101)
    phi = np.exp(-0.5 * t * t) / np.sqrt(2.0 * np.pi)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(t / math.sqrt(2.0)))
    dens = n * phi * cdf ** (n - 1)
    dens /= dens.sum()
    z = beta[:, None] + gamma[:, None] * t[None, :]
    f = z / (1.0 + np.exp(-z))
    m1 = f @ dens
    return m1, np.maximum((f * f) @ dens - m1 * m1, 1e-6)


def _window_count(size, k):
    """Average number of in-bounds elements of a same-padded k x k window on a size x size map."""
    r = k // 2
    i = np.arange(size)
    per_axis = (np.minimum(i + r, size - 1) - np.maximum(i - r, 0) + 1).mean()
    return per_axis * per_axis


def build_yolov5(image=640, classes=80, width=0.5, depth=0.33, opset=17, seed=0, name="yolov5s"):
    """Weights come from a BN-folding emulation: every Conv+SiLU gets the weights a trained
    Conv+BN would fold to, with the BN statistics computed analytically (per-channel mean and
    variance propagated through the graph under an independence assumption), so pre-activations
    are ~N(beta, gamma^2) per channel at every depth. A plain fan-in gain cannot do this for SiLU:
    it shrinks activations in SiLU's linear regime and grows them in its ReLU-like regime."""
    if image % 32:
        raise ValueError(f"image size {image} must be a multiple of 32")
    b = GraphBuilder(name, opset=opset, seed=seed)
    rng = b.rng
    ch = lambda c: max(8, int(math.ceil(c * width / 8)) * 8)       # noqa: E731
    nrep = lambda n: max(round(n * depth), 1)                        # noqa: E731
    idx = [0]
    stats = {}   # tensor name -> (per-channel mean, per-channel variance), float64

    def conv(x, c1, c2, k=1, s=1, pad=None):
        p = f"model.{idx[0]}"
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
        pad = k // 2 if pad is None else pad
        y = b.node("Conv", [x, b.init(p + ".conv.weight", wf), b.init(p + ".conv.bias", bf)],
                   name=p + "/Conv", kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4,
                   dilations=[1, 1], group=1)
        y = b.node("Mul", [y, b.node("Sigmoid", [y], name=p + "/Sigmoid")], name=p + "/Mul")
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

    def c3(x, c1, c2, n, shortcut=True):
        c_ = c2 // 2
        a = conv(x, c1, c_)
        for _ in range(n):
            y = conv(conv(a, c_, c_, 1), c_, c_, 3)
            a = add(a, y) if shortcut else y
        return conv(concat([a, conv(x, c1, c_)]), 2 * c_, c2)

    def sppf(x, c1, c2):
        c_ = c1 // 2
        x = conv(x, c1, c_)
        beta, gamma = stats[x][2:]
        pools = [x]
        for j in range(3):
            y = b.node("MaxPool", [pools[-1]], kernel_shape=[5, 5], strides=[1, 1],
                       pads=[2, 2, 2, 2])
            # chained 5x5 pools = 5x5, 9x9, 13x13 windows over the conv's SiLU output
            n = _window_count(image // 32, 5 + 4 * j)
            stats[y] = _silu_max_moments(beta, gamma, n)
            pools.append(y)
        return conv(concat(pools), 4 * c_, c2)

    def upsample(x):
        y = b.node("Resize", [x, "", b.const([1, 1, 2, 2], np.float32)], mode="nearest",
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        stats[y] = stats[x]
        return y

    x = b.input("images", TensorProto.FLOAT, ["batch", 3, image, image])
    stats[x] = (np.full(3, 0.5), np.full(3, 1.0 / 12.0))      # pixels uniform in [0, 1]
    # backbone
    x = conv(x, 3, ch(64), 6, 2, pad=2)
    x = conv(x, ch(64), ch(128), 3, 2)
    x = c3(x, ch(128), ch(128), nrep(3))
    x = conv(x, ch(128), ch(256), 3, 2)
    p3 = c3(x, ch(256), ch(256), nrep(6))
    x = conv(p3, ch(256), ch(512), 3, 2)
    p4 = c3(x, ch(512), ch(512), nrep(9))
    x = conv(p4, ch(512), ch(1024), 3, 2)
    x = c3(x, ch(1024), ch(1024), nrep(3))
    x = sppf(x, ch(1024), ch(1024))
    # head (PANet)
    h10 = conv(x, ch(1024), ch(512))
    x = c3(concat([upsample(h10), p4]), ch(1024), ch(512), nrep(3), False)
    h14 = conv(x, ch(512), ch(256))
    out3 = c3(concat([upsample(h14), p3]), ch(512), ch(256), nrep(3), False)
    x = conv(out3, ch(256), ch(256), 3, 2)
    out4 = c3(concat([x, h14]), ch(512), ch(512), nrep(3), False)
    x = conv(out4, ch(512), ch(512), 3, 2)
    out5 = c3(concat([x, h10]), ch(1024), ch(1024), nrep(3), False)

    # Detect
    na, no = 3, classes + 5
    batch = b.unsqueeze(b.node("Gather", [b.node("Shape", [b.input_name(0)]), b.const(0)],
                               axis=0), [0])
    outs = []
    for i, (feat, c) in enumerate(zip((out3, out4, out5), (ch(256), ch(512), ch(1024)))):
        s = STRIDES[i]
        ny = nx = image // s
        p = f"model.24.m.{i}"
        # std 1/sqrt(sum E[x^2]) keeps the pre-sigmoid logits near unit scale
        mu, var = stats[feat][:2]
        w = b.normal(p + ".weight", (na * no, c, 1, 1), 1.0 / math.sqrt(float(np.sum(var + mu * mu))))
        bias = np.zeros((na, no), np.float32)
        bias[:, 4] = math.log(8 / (640 / s) ** 2)           # Ultralytics' prior for objectness
        bias[:, 5:] = math.log(0.6 / (classes - 0.99))       # ... and for class scores
        y = b.node("Conv", [feat, w, b.init(p + ".bias", bias.reshape(-1))], name=p + "/Conv",
                   kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0])
        shp = b.node("Concat", [batch, b.const([na, no, ny, nx])], axis=0)
        y = b.node("Transpose", [b.node("Reshape", [y, shp])], perm=[0, 1, 3, 4, 2])
        y = b.node("Sigmoid", [y])
        xy, wh, conf = b.node("Split", [y, b.const([2, 2, no - 4])], n_out=3, axis=4)
        gy, gx = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32),
                             indexing="ij")
        grid = np.broadcast_to(np.stack((gx, gy), -1)[None, None] - 0.5, (1, na, ny, nx, 2))
        anchor = np.asarray(ANCHORS[i], np.float32).reshape(1, na, 1, 1, 2)
        agrid = np.broadcast_to(anchor, (1, na, ny, nx, 2))
        xy = b.node("Mul", [b.node("Add", [b.node("Mul", [xy, b.const(2.0, np.float32)]),
                                           b.init(f"grid.{i}", grid)]),
                            b.const(float(s), np.float32)])
        wh = b.node("Pow", [b.node("Mul", [wh, b.const(2.0, np.float32)]),
                            b.const(2.0, np.float32)])
        wh = b.node("Mul", [wh, b.init(f"anchor_grid.{i}", agrid)])
        y = b.node("Concat", [xy, wh, conf], axis=4)
        oshp = b.node("Concat", [batch, b.const([na * ny * nx, no])], axis=0)
        outs.append(b.node("Reshape", [y, oshp]))
    y = b.node("Concat", outs, axis=1)
    b.identity_to(y, "output0")
    n_boxes = na * sum((image // s) ** 2 for s in STRIDES)
    b.output("output0", TensorProto.FLOAT, ["batch", n_boxes, no])
    return b.build(doc=f"YOLOv5s-style detector image={image} classes={classes}")
