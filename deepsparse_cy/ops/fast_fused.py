"""FP32 fused ops (domain com.deepsparse_cy) written by graph/fusion.py; never in model files.

    Gelu(x)                               0.5 x (1 + erf(x / sqrt 2)), torch's exact GELU
    FusedMatMul(x, W[K,N], bias?)         x @ W as ONE GEMM over all leading rows into the output
        activation, activation_params     buffer, bias + activation in its epilogue (constant W:
                                          kernels/f32conv.f32_gemm, W packed at compile time;
                                          else BLAS + one bias/activation pass)
    LayerNorm(x, skip?, gamma, beta?)     LayerNorm over the last axis of (x + skip), one kernel
        epsilon
    FusedAttention(q, k, v, mask?)        softmax(scale * q' k' + mask) v' per (batch, head) with
        scale                             q' = q.T(0,2,1,3), k' = k.T(0,2,3,1), v' = v.T(0,2,1,3),
                                          output transposed back (0,2,1,3): the compiled kernel
                                          csrc/f32_attn.c on the strided views (no transposed
                                          copies), else strided BLAS views
    FusedConv(x, W, B?, Z?)               Conv (+ Z) + activation applied in place on the output
        activation, activation_params
    FusedConvTranspose(x, W, B?)          ConvTranspose + activation (in the GEMM epilogue on the
        activation, activation_params     compiled stride == kernel path, else in place after)
    SqueezeExcite(x, W1, B1?, W2, B2?)    x * act2(W2 act1(W1 mean(x) + B1) + B2) per image, the
        activation(_params),              mean over every axis after the channels, W1 [R, C, 1..],
        gate_activation(_params)          W2 [C, R, 1..]: GlobalAveragePool -> 1x1 Conv -> act ->
                                          1x1 Conv -> act -> Mul as one kernel call

Activations: Relu, Clip(min, max), Gelu, HardSwish, SiLU (x * sigmoid x), HardSigmoid(alpha,
beta), LeakyRelu(alpha), Sigmoid — kernels/_f32_fused.pyx. Every op falls back to numpy for
non-float32 or unexpected layouts, so a fused graph computes what the unfused graph does.
With the compiled GEMM, attention and conv kernels a transformer or CNN makes no BLAS call:
OpenBLAS's worker threads busy-wait after every call and, on a 2-core machine, share cores in
scheduler time slices with the OpenMP threads of the next op (measured 3-8x slower layers).
"""
from __future__ import annotations

import functools
import os
import warnings

import numpy as np

from .. import kernels
from ..errors import ShapeError
from ..kernels import _f32_fused as _k
from ..kernels import _f32_ops
from ..kernels.f32conv import PackedGemmF32, f32_gemm, gemm_xpack_size
from . import conv as _conv
from . import elementwise as _ew
from ._spatial import scratch
from .registry import Op, register

DOMAIN = "com.deepsparse_cy"
_k.set_avx2(kernels.kernel_isa() != "generic")
if kernels.kernel_isa() in ("avx512_vnni", "amx"):   # levels that need AVX-512 F/BW/VL/DQ
    _k.set_avx512(True)                              # LayerNorm + quantize's AVX-512 quantizer
# FusedMatMul with a constant weight runs the compiled GEMM where its SIMD build is dispatched;
# the generic level keeps BLAS (tests run both)
_FAST_GEMM = kernels.kernel_builds().get("f32_conv") in ("avx2", "avx512_vnni")
# ... and FusedAttention its compiled per-(batch, head) kernel (kernels/csrc/f32_attn.c)
_ATTN = kernels.load("f32_conv") if _FAST_GEMM else None
# ... and, asked for with DEEPSPARSE_CY_BF16_ATTENTION=1, an attention whose output is quantized
# (the QDQ transformer's, followed by its QuantizeLinear) the amx build's bf16 products on AMX-BF16
# tiles (kernels/f32_attn.pyx): faster, not the file's float32 arithmetic. The family to load
# where that build runs (None elsewhere); loaded only when a model asks for it.
_ATTN_BF16 = "f32_attn" if _ATTN is not None \
    and kernels.kernel_builds().get("f32_attn") == "amx" else None
_F32 = np.dtype(np.float32)


def _threads(ctx):
    return int(ctx.num_threads or 1)


def _act(node, attr="activation"):
    a = node.attrs.get(attr, "") or ""
    if isinstance(a, bytes):
        a = a.decode()
    if a not in _k.ACTIVATIONS:
        raise ShapeError(f"unsupported fused activation {a!r}")
    p = [float(v) for v in (node.attrs.get(attr + "_params") or [])]
    if a == "Clip":
        p = [p[0] if len(p) > 0 else -np.inf, p[1] if len(p) > 1 else np.inf]
    elif a == "HardSigmoid":
        p = [p[0] if len(p) > 0 else 0.2, p[1] if len(p) > 1 else 0.5]
    elif a == "LeakyRelu":
        p = [p[0] if p else 0.01]
    p = (p + [0.0, 0.0])[:2]
    return _k.ACTIVATIONS[a], a, p


def _row_len(y):
    """The row length the activation kernels take a C-contiguous array in: its last axis when
    that has 256+ values, else ~4K-value chunks (a divisor of its size)."""
    n = y.shape[-1] if y.ndim else 1
    if y.ndim < 2 or n < 256:
        n = y.size
        for c in (4096, 2048, 1024, 512, 256):
            if y.size % c == 0:
                return c
    return n


def _act_inplace(y, code, p, nt):
    """act on a C-contiguous float32 array in place, in rows of _row_len."""
    if code == 0 or y.size == 0:
        return y
    n = _row_len(y)
    _k.bias_act_inplace(y.reshape(-1, n), None, code, p[0], p[1], nt)
    return y


def _act_rows(x, y, code, p, nt):
    """y = act(x) for C-contiguous float32 x / y of one shape (y may be x), in rows of
    _row_len: each row copied and activated while in cache."""
    if y.size == 0:
        return y
    n = _row_len(y)
    _k.act_rows(x.reshape(-1, n), y.reshape(-1, n), code, p[0], p[1], nt)
    return y


def _out(shape, out):
    if out is not None and out.dtype == _F32 and out.shape == tuple(shape) \
            and out.flags.c_contiguous:
        return out
    return np.empty(shape, np.float32)


def _act_f32(x, y, code, nt):
    """y = act(x) for float32 x into y of its shape, as the activation ops run it: one pass of
    _act_rows where x is C-contiguous and does not overlap y (or is y), else a copy and the
    in-place pass."""
    if x.flags.c_contiguous and (y is x or not np.may_share_memory(x, y)):
        return _act_rows(x, y, code, (0.0, 0.0), nt)
    np.copyto(y, x)
    return _act_inplace(y, code, (0.0, 0.0), nt)


class _UnaryAct(Op):
    """An activation alone on float32 through the fused-activation kernel (copy + one in-place
    pass); other dtypes take `_fallback`."""

    kernel_name = "f32_bias_act"
    act = ""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)

    def _fallback(self, x, out):
        raise NotImplementedError

    def run(self, inputs, outs):
        x = inputs[0]
        out = outs[0] if outs else None
        if x.dtype != _F32:
            return [self._fallback(x, out)]
        return [_act_f32(x, _out(x.shape, out), _k.ACTIVATIONS[self.act], self.nt)]

    def bind(self, inputs, outs):
        """The bound call on float32 C-contiguous x into its own output slot (a detector
        head's Sigmoid over its class scores ran through run() on every call)."""
        x = inputs[0]
        y = outs[0] if outs else None
        if y is None or not isinstance(x, np.ndarray) or x.dtype != _F32 or y.dtype != _F32 \
                or y.shape != x.shape or not x.flags.c_contiguous or not y.flags.c_contiguous \
                or x.size == 0 or (y is not x and np.may_share_memory(x, y)):
            return None
        return _act_rows, (x, y, _k.ACTIVATIONS[self.act], (0.0, 0.0), self.nt)


@register("Gelu", since=1, domain=DOMAIN)
class Gelu(_UnaryAct):
    act = "Gelu"

    def _fallback(self, x, out):
        # the fusion matched float32 constants, so this is a safety net
        return (0.5 * x * (1 + _ew.Erf(x / np.sqrt(2).astype(x.dtype)))).astype(x.dtype)


class _SigmoidFast(_UnaryAct):
    """Sigmoid on float32 through the fused-activation kernel (one pass; numpy takes four)."""

    act = "Sigmoid"

    def _fallback(self, x, out):
        return _ew.Sigmoid(x, out=out) if out is not None else _ew.Sigmoid(x)


for _since in (6, 13):
    register("Sigmoid", since=_since)(
        type(f"Sigmoid_{_since}", (_SigmoidFast,), {"since": _since}))


def _row_scale_operands(a, b):
    """(x [rows, n], s [rows]) where a Mul of a and b is x's rows each times one value: one
    operand float32 C-contiguous, the other float32 C-contiguous with x's leading axes and 1 on
    every trailing one (an SE block's [N, C, H, W] x [N, C, 1, 1]); else None."""
    for x, t in ((a, b), (b, a)):
        if not (isinstance(x, np.ndarray) and isinstance(t, np.ndarray) and x.dtype == _F32
                and t.dtype == _F32 and x.ndim >= 2 and t.ndim <= x.ndim
                and x.flags.c_contiguous and t.flags.c_contiguous and x.size and t.size > 1):
            continue
        ts = (1,) * (x.ndim - t.ndim) + t.shape
        k = x.ndim
        while k > 0 and ts[k - 1] == 1:
            k -= 1
        if k == 0 or k == x.ndim or ts[:k] != x.shape[:k]:
            continue
        rows = int(np.prod(x.shape[:k]))
        return x.reshape(rows, -1), t.reshape(rows)
    return None


def _mul_bind(inputs, out, num_threads=1):
    """The Mul op's bound call (ops/registry.FunctionOp.bind): compiled row scales
    (_f32_fused.scale_rows, the same float32 products as numpy's broadcast) where
    _row_scale_operands applies and out has the big operand's shape (x itself or not
    overlapping either operand); numpy's multiply into out otherwise, as before."""
    a, b = inputs[0], inputs[1]
    rs = _row_scale_operands(a, b)
    if rs is not None and isinstance(out, np.ndarray) and out.dtype == _F32 \
            and out.flags.c_contiguous and out.size == rs[0].size \
            and out.shape == (a.shape if a.size >= b.size else b.shape) \
            and not np.may_share_memory(out, rs[1]) \
            and (not np.may_share_memory(out, rs[0]) or _root_same(out, rs[0])):
        return _k.scale_rows, (rs[0], rs[1], out.reshape(rs[0].shape), int(num_threads))
    return functools.partial(np.multiply, a, b, out=out), ()


def _root_same(o, x):
    """o and x are the same memory (an in-place multiply)"""
    return o.__array_interface__["data"][0] == x.__array_interface__["data"][0] \
        and o.size == x.size


class _HardSwishFast(Op):
    """HardSwish on float32 through one compiled pass (_f32_fused.hardswish: the numpy op's
    float32 steps bit for bit, where numpy makes four passes); other dtypes, and arrays not
    contiguous, through the numpy op. A quantized MobileNetV3's SE blocks run it on their
    depthwise convs' float outputs (OCR 48 x 320: five of them, ~23 us each in numpy)."""

    kernel_name = "f32_hardswish"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)

    @staticmethod
    def _fits(x, y):
        return isinstance(x, np.ndarray) and x.dtype == _F32 and x.flags.c_contiguous \
            and y is not None and y.dtype == _F32 and y.shape == x.shape \
            and y.flags.c_contiguous and (y is x or not np.may_share_memory(x, y))

    def run(self, inputs, outs):
        x = inputs[0]
        out = outs[0] if outs else None
        if isinstance(x, np.ndarray) and x.dtype == _F32 and x.flags.c_contiguous:
            y = out if self._fits(x, out) else np.empty(x.shape, _F32)
            _k.hardswish(x.reshape(-1), y.reshape(-1), self.nt)
            return [y]
        return [_ew.HardSwish(x, out=out) if out is not None and out.dtype == x.dtype
                and out.shape == x.shape else _ew.HardSwish(x)]

    def bind(self, inputs, outs):
        x = inputs[0]
        y = outs[0] if outs else None
        if not self._fits(x, y) or x.size == 0:
            return None
        return _k.hardswish, (x.reshape(-1), y.reshape(-1), self.nt)


register("HardSwish", since=14)(_HardSwishFast)


@register("DFL", since=1, domain=DOMAIN)
class DFL(Op):
    """YOLOv8's DFL box decoding (graph/fusion_dfl.py): x [N, S, R, A] float32, w [R] ->
    [N, 1, S, A] = 1x1 Conv(Softmax(Transpose(x, [0, 2, 1, 3]), axis=1), w) + bias; with
    `quant` = (scale, zero_point, qmin, qmax, bias_i, out_scale[, mid lo, hi, scale, bias])
    the softmax is quantized between (QuantizeLinear) and w holds the QConv's integer weights
    (its float epilogue, with its mid step: _f32_fused.dfl_decode).
    One pass of kernels/_f32_fused.dfl_decode over x, no transposed copy."""

    kernel_name = "f32_dfl"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)
        w = ctx.const(1)
        if w is None or w.ndim != 1 or not 1 <= w.size <= _k.DFL_MAX_BINS:
            raise ShapeError("DFL needs a constant weight of 1 to "
                             f"{_k.DFL_MAX_BINS} bins")
        self.w = np.ascontiguousarray(w, np.float32)
        self.bias = float(node.attrs.get("bias", 0.0))
        q = node.attrs.get("quant")
        if q is not None and len(q) not in (6, 10):
            raise ShapeError(f"DFL: quant takes 6 or 10 values, got {len(q)}")
        self.quant = None if q is None else tuple(int(v) if i == 4 else float(v)
                                                  for i, v in enumerate(q))

    def _shapes(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[2] != self.w.size:
            raise ShapeError(f"DFL: input must be [N, S, {self.w.size}, A], got "
                             f"{list(getattr(x, 'shape', []))}")
        n, s, r, a = x.shape
        return (n * s, r, a), (n, 1, s, a)

    def run(self, inputs, outs):
        x = inputs[0]
        x3, oshape = self._shapes(x)
        if x.dtype != _F32:
            raise ShapeError(f"DFL: input must be float32, got {x.dtype}")
        y = _out(oshape, outs[0] if outs else None)
        x = np.ascontiguousarray(x)
        if np.may_share_memory(x, y):
            y = np.empty(oshape, np.float32)
        _k.dfl_decode(x.reshape(x3), y.reshape(x3[0], x3[2]), self.w, self.bias, self.quant,
                      self.nt)
        return [y]

    def bind(self, inputs, outs):
        x = inputs[0]
        y = outs[0] if outs else None
        if y is None or not isinstance(x, np.ndarray) or x.dtype != _F32 or x.ndim != 4 \
                or x.shape[2] != self.w.size or not x.flags.c_contiguous:
            return None
        x3, oshape = self._shapes(x)
        if y.shape != oshape or y.dtype != _F32 or not y.flags.c_contiguous \
                or np.may_share_memory(x, y):
            return None
        return _k.dfl_decode, (x.reshape(x3), y.reshape(x3[0], x3[2]), self.w, self.bias,
                               self.quant, self.nt)


@register("BoxDecode", since=1, domain=DOMAIN)
class BoxDecode(Op):
    """YOLOv8's dist2bbox and output Concat (graph/fusion_dfl.py): d [N, 4, A] (the left-top
    and right-bottom distances), anchors, strides, k and cls [N, C, A] -> [N, 4 + C, A] =
    Concat(Concat((x1y1 + x2y2) / k, x2y2 - x1y1) * strides, Sigmoid(cls)) (half 'Mul':
    * k), x1y1 = anchors - d[:, :2], x2y2 = anchors + d[:, 2:]: the graph's numpy operations
    in its order on the box rows, the Sigmoid written into the output's rows by the
    activation kernel of the Sigmoid op (same rows, same values)."""

    kernel_name = "f32_bias_act"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)
        half = node.attrs.get("half", "Div")
        self.half = half.decode() if isinstance(half, bytes) else half
        if self.half not in ("Div", "Mul"):
            raise ShapeError(f"BoxDecode: half must be Div or Mul, got {self.half!r}")

    def _box(self, d, anchors, strides, k):
        if not isinstance(d, np.ndarray) or d.ndim < 2 or d.shape[1] != 4:
            raise ShapeError("BoxDecode: the distances must be [N, 4, ...], got "
                             f"{list(getattr(d, 'shape', []))}")
        x1y1 = np.subtract(anchors, d[:, 0:2])
        x2y2 = np.add(anchors, d[:, 2:4])
        s = np.add(x1y1, x2y2)
        c = np.divide(s, k) if self.half == "Div" else np.multiply(s, k)
        return np.multiply(np.concatenate([c, np.subtract(x2y2, x1y1)], axis=1), strides)

    def _fits(self, box, cls, y, fresh=False):
        """Whether box and cls concatenate along axis 1 into y (float32, C-contiguous) with
        the Sigmoid kernel on cls's rows as the Sigmoid op runs it (fresh: y was just
        allocated, so it shares no memory with cls)."""
        return (isinstance(cls, np.ndarray) and box.dtype == _F32 and cls.dtype == _F32
                and cls.ndim == box.ndim >= 2 and cls.shape[0] == box.shape[0]
                and cls.shape[2:] == box.shape[2:] and cls.flags.c_contiguous
                and y.shape == box.shape[:1] + (4 + cls.shape[1],) + box.shape[2:]
                and y.dtype == _F32 and y.flags.c_contiguous and cls.size
                and (fresh or not np.may_share_memory(cls, y))
                # rows of one image: the Sigmoid op's rows when the last axis has 256+ values
                # (_row_len) or there is one image
                and (cls.shape[0] == 1 or (cls.ndim >= 3 and cls.shape[-1] >= 256)))

    def _boxes_into(self, d, anchors, strides, k, y):
        """The box rows straight into y by the compiled loop (_f32_fused.yolo_boxes, the same
        float32 operations) where the operands have the export's shapes; else False."""
        if not (isinstance(d, np.ndarray) and isinstance(anchors, np.ndarray)
                and isinstance(strides, np.ndarray) and isinstance(k, np.ndarray)
                and d.dtype == anchors.dtype == strides.dtype == k.dtype == _F32
                and d.ndim == 3 and d.shape[1] == 4 and k.size == 1
                and anchors.shape in ((1, 2, d.shape[2]), (2, d.shape[2]))
                and strides.shape in ((1, d.shape[2]), (d.shape[2],), (1, 1, d.shape[2]))
                and d.flags.c_contiguous and anchors.flags.c_contiguous
                and strides.flags.c_contiguous and y.shape[0] == d.shape[0]
                and y.shape[2:] == d.shape[2:]):
            return False
        _k.yolo_boxes(d, anchors.reshape(2, -1), strides.reshape(-1), float(k.reshape(())),
                      self.half == "Div", y)
        return True

    def _fill(self, box, cls, y):
        if box is not None:
            y[:, 0:4] = box
        code = _k.ACTIVATIONS["Sigmoid"]
        if cls.shape[0] == 1:
            _act_rows(cls, y[:, 4:], code, (0.0, 0.0), self.nt)
        else:
            for i in range(cls.shape[0]):
                _act_rows(cls[i], y[i, 4:], code, (0.0, 0.0), self.nt)
        return y

    def _into(self, d, anchors, strides, k, cls, y):
        if self._boxes_into(d, anchors, strides, k, y):
            return self._fill(None, cls, y)
        return self._fill(self._box(d, anchors, strides, k), cls, y)

    def run(self, inputs, outs):
        d, anchors, strides, k, cls = inputs
        out = outs[0] if outs else None

        def target(like):
            """(output array, fresh) for the box rows of `like` followed by cls's rows."""
            shape = like.shape[:1] + (4 + cls.shape[1],) + like.shape[2:]
            if out is not None and out.shape == shape and out.dtype == _F32 \
                    and out.flags.c_contiguous:
                return out, False
            return np.empty(shape, _F32), True

        if isinstance(d, np.ndarray) and d.ndim == 3 and d.shape[1] == 4 \
                and isinstance(cls, np.ndarray) and cls.ndim == 3:
            # the export's shapes: the box rows by the compiled loop, no box array
            y, fresh = target(d)
            if self._fits(d, cls, y, fresh) and self._boxes_into(d, anchors, strides, k, y):
                return [self._fill(None, cls, y)]
        box = self._box(d, anchors, strides, k)
        if isinstance(cls, np.ndarray) and box.ndim == cls.ndim >= 2:
            y, fresh = target(box)
            if self._fits(box, cls, y, fresh):
                return [self._fill(box, cls, y)]
        # the two steps as they ran unfused: the Sigmoid op's kernel, then Concat
        from .tensor import Concat
        if isinstance(cls, np.ndarray) and cls.dtype == _F32:
            sig = _act_f32(cls, np.empty(cls.shape, _F32), _k.ACTIVATIONS["Sigmoid"], self.nt)
        else:
            sig = _ew.Sigmoid(cls)
        return [Concat(box, sig, axis=1)]

    def bind(self, inputs, outs):
        d, anchors, strides, k, cls = inputs
        y = outs[0] if outs else None
        if y is None or not all(isinstance(t, np.ndarray) for t in inputs):
            return None
        try:
            box = self._box(d, anchors, strides, k)
        except Exception:  # noqa: BLE001 - run() reports it
            return None
        if not self._fits(box, cls, y):
            return None
        return self._into, (d, anchors, strides, k, cls, y)


@register("FusedMatMul", since=1, domain=DOMAIN)
class FusedMatMul(Op):
    """x[..., K] @ W[K, N] (+ bias[N]) (+ activation). W constant (checked by the fusion)."""

    kernel_name = "blas+f32_bias_act"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)
        self.code, self.act, self.p = _act(node)
        self.w = ctx.const(1)
        self.bias = ctx.const(2) if len(node.inputs) > 2 and node.inputs[2] else None
        if self.w is not None:
            self.w = np.ascontiguousarray(self.w, np.float32)
        if self.bias is not None:
            self.bias = np.ascontiguousarray(self.bias, np.float32).reshape(-1)
        # constant 2-D weight: packed once for the compiled GEMM (kernels/f32conv.py), which
        # fuses bias + activation and keeps OpenBLAS's spinning workers out of the model
        self.packed = PackedGemmF32(self.w) \
            if _FAST_GEMM and self.w is not None and self.w.ndim == 2 else None
        if self.packed is not None:
            self.kernel_name = "f32_gemm+bias_act"

    def run(self, inputs, outs):
        x = inputs[0]
        w = self.w if self.w is not None else np.ascontiguousarray(inputs[1], np.float32)
        b = self.bias
        if b is None and len(inputs) > 2 and inputs[2] is not None:
            b = np.ascontiguousarray(inputs[2], np.float32).reshape(-1)
        if x.ndim < 1 or x.shape[-1] != w.shape[0]:
            raise ShapeError(f"MatMul: shapes {x.shape} and {w.shape} are not aligned")
        K, N = w.shape
        shape = x.shape[:-1] + (N,)
        y = _out(shape, outs[0] if outs else None)
        if self.packed is not None and x.dtype == _F32 and w is self.w:
            x2 = x.reshape(-1, K)
            T = x2.shape[0]
            xp = scratch(("f32gemm_xp", T, K), (gemm_xpack_size(T, K),), _F32)
            f32_gemm(x2, self.packed, b, self.code, self.p, y.reshape(-1, N), self.nt, xp)
            return [y]
        # one GEMM over all leading rows (numpy's stacked matmul would call BLAS per batch)
        x2 = x.reshape(-1, K) if x.ndim != 2 else x
        np.matmul(x2, w, out=y.reshape(-1, N))
        if b is not None or self.code:
            _k.bias_act_inplace(y.reshape(-1, N), b, self.code, self.p[0], self.p[1], self.nt)
        return [y]

    def bind(self, inputs, outs):
        """engine._run_plan's bound call for the packed GEMM with a constant bias: the kernel
        on views of the same x / out objects; its x-panel scratch is looked up per call (it
        is per thread)."""
        x = inputs[0]
        y = outs[0] if outs else None
        pk = self.packed
        if pk is None or y is None or not isinstance(x, np.ndarray) or x.dtype != _F32 \
                or x.ndim < 1 or x.shape[-1] != pk.K or not x.flags.c_contiguous \
                or y.dtype != _F32 or not y.flags.c_contiguous \
                or y.shape != x.shape[:-1] + (pk.N,) or np.may_share_memory(x, y) \
                or (self.bias is None and len(inputs) > 2 and inputs[2] is not None):
            return None
        x2, y2 = x.reshape(-1, pk.K), y.reshape(-1, pk.N)
        T = x2.shape[0]
        if T == 0 or pk.N == 0:
            return None
        mod = kernels.load("f32_conv", pk.isa)
        need = gemm_xpack_size(T, pk.K)
        key, b, code, p0, p1, nt = (("f32gemm_xp", T, pk.K), self.bias, int(self.code),
                                    float(self.p[0]), float(self.p[1]), int(self.nt or 0))
        gemm, wp, N = mod.gemm, pk.wp, pk.N

        def call():
            gemm(x2, wp, N, b, code, p0, p1, y2, scratch(key, (need,), _F32), nt)
        return call, ()


@register("LayerNorm", since=1, domain=DOMAIN)
class LayerNorm(Op):
    """LayerNorm over the last axis of x (+ skip): one kernel pass per row.

    attr x_deq (graph/fusion.py _layernorm_8bit_input): x is the 8-bit output of a QGemm whose
    float values (x - zero point) * scale + bias[n] (float32 steps) it stands for, as
    (scale, zero point, bias [n] or None); the kernel dequantizes each row as it starts it.
    attr skip_deq (graph/fusion.py _layernorm_8bit_skip): the skip is the 8-bit output of
    another quantized LayerNorm, standing for its DequantizeLinear (skip - zero point) * scale,
    as (scale, zero point); the kernel dequantizes it with x (numpy first where x is float)."""

    kernel_name = "f32_layernorm"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)
        self.eps = float(node.attrs.get("epsilon", 1e-5))
        # quantized outputs (graph/fusion.py _fuse_layernorm_quant): (q, dequantized q or "")
        self.q = None
        if "q_scale" in node.attrs:
            self.q = (float(np.float32(node.attrs["q_scale"])), int(node.attrs["q_zero_point"]),
                      np.dtype(node.attrs["q_dtype"]))
            self.dq_out = len(node.outputs) > 1 and bool(node.outputs[1])
        self.xdeq = None
        if node.attrs.get("x_deq") is not None:
            d = node.attrs["x_deq"]
            self.xdeq = (float(np.float32(d[0])), float(int(d[1])),
                         None if d[2] is None else np.ascontiguousarray(d[2], _F32).reshape(-1))
        self.sdeq = None
        if node.attrs.get("skip_deq") is not None:
            d = node.attrs["skip_deq"]
            self.sdeq = (float(np.float32(d[0])), float(int(d[1])), None)

    def _x8(self, inputs):
        """(x 8-bit [rows, n] or None, inputs): the 8-bit x the kernel dequantizes itself (same
        shape as the skip, float32 or, skip_deq, 8-bit; contiguous; its bias the row's length),
        else None and the inputs with x and an 8-bit skip dequantized here (numpy, the kernels'
        float32 steps)."""
        x, skip = inputs[0], inputs[1]
        s8 = self.sdeq is not None and skip is not None and skip.dtype != _F32
        if s8 and skip.dtype not in (np.uint8, np.int8):
            raise ShapeError(f"LayerNorm: the skip should be the 8-bit values of a quantized "
                             f"LayerNorm, got {skip.dtype}")
        if self.xdeq is None or x.dtype == _F32:
            if s8:
                inputs = [x, _deq_f32(skip, self.sdeq)] + list(inputs[2:])
            return None, inputs
        if x.dtype not in (np.uint8, np.int8):
            raise ShapeError(f"LayerNorm: x should be the 8-bit values of its QGemm, got {x.dtype}")
        b = self.xdeq[2]
        if self.q is not None and x.ndim > 0 and x.size and x.flags.c_contiguous \
                and (b is None or b.shape[0] == x.shape[-1]) \
                and (skip is None or (skip.shape == x.shape and skip.flags.c_contiguous)):
            return x, inputs
        return None, [_deq_f32(x, self.xdeq), _deq_f32(skip, self.sdeq) if s8 else skip] \
            + list(inputs[2:])

    def _quant_x8(self, x8, skip, g, b, q, dq, keep=False):
        """(fn, args) of the quantized LayerNorm on 8-bit x (and a float32 or, skip_deq,
        8-bit skip of its shape) into q / dq (None without dq_out: the kernel's scratch rows;
        keep: those rows allocated here, for a bound call's every run)."""
        n = x8.shape[-1]
        scale, zp, dt = self.q
        xs, xz, xb = self.xdeq
        s8 = (None, False, 1.0, 0.0)
        if skip is not None and skip.dtype != _F32:
            s8 = (skip.reshape(-1, n).view(np.uint8), skip.dtype == np.int8) + self.sdeq[:2]
            skip = None
        return _k.layernorm_quant_x8, (
            x8.reshape(-1, n).view(np.uint8), x8.dtype == np.int8, xs, xz, xb,
            skip.reshape(-1, n) if skip is not None else None, g, b, self.eps,
            q.reshape(-1, n).view(np.uint8), dt == np.int8,
            dq.reshape(-1, n) if self.dq_out else None, scale, float(zp),
            self.dq_out, self.nt) + s8 \
            + ((np.empty((self.nt, 4 * n + 16), np.float32) if keep else None),)

    @staticmethod
    def _gamma_beta(inputs, n):
        """gamma and beta (or None) as contiguous float32 rows of the normalised length n."""
        g, b = inputs[2], inputs[3] if len(inputs) > 3 else None
        g = np.ascontiguousarray(np.broadcast_to(np.asarray(g, _F32).reshape(-1), (n,)))
        if b is not None:
            b = np.ascontiguousarray(np.broadcast_to(np.asarray(b, _F32).reshape(-1), (n,)))
        return g, b

    @classmethod
    def _args(cls, inputs):
        """(x, skip, gamma, beta) with a broadcasting residual added first and gamma / beta as
        contiguous float32 rows of the normalised length."""
        x, skip = inputs[0], inputs[1]
        if skip is not None and skip.shape != x.shape:
            x, skip = np.add(x, skip), None            # broadcasting residual: add first
        return (x, skip) + cls._gamma_beta(inputs, x.shape[-1])

    def run(self, inputs, outs):
        x8, inputs = self._x8(inputs)
        if self.q is not None:
            return self._run_quant(inputs, outs, x8)
        x, skip, g, b = self._args(inputs)
        n = x.shape[-1]
        y = _out(x.shape, outs[0] if outs else None)
        if y is x or (skip is not None and y is skip) or np.shares_memory(y, x):
            y = np.empty(x.shape, np.float32)
        xc = np.ascontiguousarray(x, _F32).reshape(-1, n)
        sc = np.ascontiguousarray(skip, _F32).reshape(-1, n) if skip is not None else None
        _k.layernorm(xc, sc, g, b, self.eps, y.reshape(-1, n), self.nt)
        return [y]

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the kernel on the same x / skip / output objects,
        gamma and beta prepared once (same-shape skip, contiguous float32, outputs in their
        slots not overlapping the inputs)."""
        x, skip = inputs[0], inputs[1]
        if not isinstance(x, np.ndarray):
            return None
        x8, ins = self._x8(inputs)       # an 8-bit x the kernel reads (x_deq), or None
        if ins is not inputs:
            return None                  # numpy made floats of x: a new array on every run
        if not outs or outs[0] is None or (x.dtype != _F32 and x8 is None) \
                or not x.flags.c_contiguous or x.ndim == 0 or x.size == 0:
            return None
        if skip is not None and (skip.shape != x.shape or not skip.flags.c_contiguous
                                 or (skip.dtype != _F32 and x8 is None)):
            return None
        n = x.shape[-1]
        for p in inputs[2:4]:       # views, not copies: their values stay the inputs' own
            if p is not None and not (isinstance(p, np.ndarray) and p.dtype == _F32
                                      and p.size == n and p.flags.c_contiguous):
                return None
        g, b = self._gamma_beta(inputs, n)     # (skip has x's shape: nothing to add first)
        ins = [a for a in (x, skip) if a is not None]

        def ok(o, dt):
            return o is not None and o.dtype == dt and o.shape == x.shape \
                and o.flags.c_contiguous and not any(np.may_share_memory(o, a) for a in ins)
        x2 = x.reshape(-1, n)
        s2 = skip.reshape(-1, n) if skip is not None else None
        if self.q is None:
            if not ok(outs[0], _F32):
                return None
            return _k.layernorm, (x2, s2, g, b, self.eps, outs[0].reshape(-1, n), self.nt)
        scale, zp, dt = self.q
        if not ok(outs[0], dt):
            return None
        if self.dq_out:
            if len(outs) < 2 or not ok(outs[1], _F32):
                return None
            dq = outs[1]
        elif x8 is not None:
            dq = None                                # the kernel's scratch rows
        else:
            dq = np.empty(x.shape, np.float32)       # scratch for the normalised rows
        if x8 is not None:     # (a LayerNormQ8Call made once: calling it runs the rows)
            _, args = self._quant_x8(x8, skip, g, b, outs[0], dq, keep=True)
            return _k.layernorm_quant_x8_bound(*args), ()
        return _k.layernorm_quant, (x2, s2, g, b, self.eps, outs[0].reshape(-1, n).view(np.uint8),
                                    dt == np.int8, dq.reshape(-1, n), scale, float(zp),
                                    self.dq_out, self.nt)

    def _run_quant(self, inputs, outs, x8=None):
        if x8 is not None:
            x, skip = x8, inputs[1]
            g, b = self._gamma_beta(inputs, x.shape[-1])
        else:
            x, skip, g, b = self._args(inputs)
        n = x.shape[-1]
        scale, zp, dt = self.q
        oq = outs[0] if outs else None
        q = oq if (oq is not None and oq.dtype == dt and oq.shape == x.shape
                   and oq.flags.c_contiguous and not np.shares_memory(oq, x)) \
            else np.empty(x.shape, dt)
        od = outs[1] if outs is not None and len(outs) > 1 else None
        if not self.dq_out and x8 is not None:
            dq = None                                # the kernel's scratch rows
        else:
            dq = _out(x.shape, od) if self.dq_out else np.empty(x.shape, np.float32)
            if dq is x or (skip is not None and dq is skip) or np.shares_memory(dq, x) \
                    or (skip is not None and np.shares_memory(dq, skip)):
                dq = np.empty(x.shape, np.float32)
        if x8 is not None:
            fn, args = self._quant_x8(x8, skip, g, b, q, dq)
            fn(*args)
            return [q, dq] if self.dq_out else [q]
        xc = np.ascontiguousarray(x, _F32).reshape(-1, n)
        sc = np.ascontiguousarray(skip, _F32).reshape(-1, n) if skip is not None else None
        _k.layernorm_quant(xc, sc, g, b, self.eps, q.reshape(-1, n).view(np.uint8),
                           dt == np.int8, dq.reshape(-1, n), scale, float(zp), self.dq_out,
                           self.nt)
        return [q, dq] if self.dq_out else [q]


def _deq_f32(x, d):
    """x as floats: d None (x float32 already) or (scale, zero point, bias): (x - zero point)
    * scale [+ bias per channel, the channels the last axis of x's rows of bias.size values],
    each step rounded to float32 as the kernels round it."""
    if d is None:
        return x
    s, zp, b = d
    f = np.empty(x.shape, _F32)
    if x.size == 0:
        return f
    n = b.shape[0] if b is not None else x.size      # without a bias: one row of everything
    if x.size % n:
        raise ShapeError(f"input {list(x.shape)} is not rows of the {n} channels of its QGemm")
    # the DequantizeLinear op's compiled rows (dscy_dequant_row: numpy's float32 steps)
    _f32_ops.dequantize_rows(np.ascontiguousarray(x).reshape(-1, n), zp, s, b,
                             f.reshape(-1, n), 1)
    return f


@register("FusedAttention", since=1, domain=DOMAIN)
class FusedAttention(Op):
    """Scaled dot-product attention over q/k/v in [B, S, H, D] (the Reshape outputs the
    exporter transposes): scores per (batch, head) by strided BLAS on views, scale + mask +
    softmax rows in one kernel, the context written straight into the [B, S, H, D] output.

    attr in_deq (graph/fusion.py _attention_8bit_inputs): per q, k, v None, or (scale, zero
    point, bias [N] or None) when that input is the 8-bit output of a QGemm whose float values
    (x - zero point) * scale + bias[n] (n: the channel of the Reshape's [..., N] input, float32
    steps) it stands for; the compiled kernel dequantizes while packing, other paths first."""

    kernel_name = "blas+f32_softmax_mask"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)
        self.scale = float(node.attrs.get("scale", 1.0))
        if _ATTN is not None:
            self.kernel_name = "f32_attention"
        # a quantized output (graph/fusion.py _fuse_attention_quant): QuantizeLinear(scale, zp)
        # of the context rows, to q_dtype, as they are written
        self.q = None
        if "q_scale" in node.attrs:
            self.q = (float(np.float32(node.attrs["q_scale"])), int(node.attrs["q_zero_point"]),
                      np.dtype(node.attrs["q_dtype"]))
        self.out_dtype = self.q[2] if self.q is not None else _F32
        self.deq = None
        if node.attrs.get("in_deq") is not None:
            self.deq = [None if d is None else
                        (float(np.float32(d[0])), float(int(d[1])),
                         None if d[2] is None else np.ascontiguousarray(d[2], _F32).reshape(-1))
                        for d in node.attrs["in_deq"]]
            if len(self.deq) != 3 or not any(d is not None for d in self.deq):
                raise ShapeError("FusedAttention: in_deq needs one entry per q, k, v")
        self.attn = _ATTN
        if self.q is not None and os.environ.get("DEEPSPARSE_CY_BF16_ATTENTION", "") \
                in ("1", "true"):
            if _ATTN is not None and _ATTN_BF16 is not None:
                self.attn = kernels.load(_ATTN_BF16)
                self.kernel_name = "bf16_attention_amx"
            else:
                warnings.warn("DEEPSPARSE_CY_BF16_ATTENTION=1: no f32_attn amx build runs here "
                              "(it needs AMX-BF16, a compiler with -mamx-bf16 and the amx "
                              "level); the attention keeps float32 products", RuntimeWarning)

    def _qout(self, shape, outs):
        """The quantized output: the given one where it fits, else a new array."""
        o = outs[0] if outs else None
        if o is None or o.dtype != self.out_dtype or o.shape != shape or not o.flags.c_contiguous:
            o = np.empty(shape, self.out_dtype)
        return o

    def _quant_out(self, y, shape, outs):
        """The float context y quantized into the quantized output (the QuantizeLinear op's
        kernel)."""
        scale, zp, dt = self.q
        o = self._qout(shape, outs)
        y = np.ascontiguousarray(y, _F32)
        fn = _f32_ops.quantize_u8 if dt == np.uint8 else _f32_ops.quantize_s8
        fn(y.reshape(-1), o.reshape(-1), scale, zp, self.nt)
        return o

    def _deq_inputs(self, qkv):
        """(q, k, v, deq): the 8-bit inputs the kernel dequantizes as it packs (deq: their
        (scale, zero point, bias) as the kernel takes them; None when there are none), the
        others as float32 ([B, S, H, D] with its channels h * D + d contiguous is the kernel's
        layout; any other is dequantized here by numpy, in the kernel's float32 steps)."""
        if self.deq is None:
            return qkv + (None,)
        out, deq = [], []
        for x, d in zip(qkv, self.deq):
            if d is None:
                out.append(x)
                deq.append(None)
                continue
            s, zp, b = d
            if x.dtype not in (np.uint8, np.int8):
                raise ShapeError(f"FusedAttention: input {len(out)} should be the 8-bit values of "
                                 f"its QGemm, got {x.dtype}")
            n = x.shape[-1] * x.shape[-2] if x.ndim >= 2 else -1
            if _ATTN is not None and x.ndim == 4 and x.strides[3] == 1 \
                    and x.strides[2] == x.shape[3] and (b is None or b.shape[0] == n):
                out.append(x)
                deq.append(d)
                continue
            out.append(_deq_f32(x, d))
            deq.append(None)
        return tuple(out) + (deq if any(d is not None for d in deq) else None,)

    def run(self, inputs, outs):
        q, k, v, deq = self._deq_inputs((inputs[0], inputs[1], inputs[2]))
        mask = inputs[3] if len(inputs) > 3 else None
        if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
            raise ShapeError(f"attention inputs must be 4-D, got {q.shape}, {k.shape}, {v.shape}")
        qv = q.transpose(0, 2, 1, 3)                 # [B, H, S, D]
        kv = k.transpose(0, 2, 3, 1)                 # [B, H, D, T]
        vv = v.transpose(0, 2, 1, 3)                 # [B, H, T, Dv]
        bs = np.broadcast_shapes(qv.shape[:2], kv.shape[:2], vv.shape[:2])
        if qv.shape[3] != kv.shape[2] or kv.shape[3] != vv.shape[2]:
            raise ShapeError(f"attention shapes do not align: {q.shape}, {k.shape}, {v.shape}")
        B, H, S, T = bs[0], bs[1], qv.shape[2], kv.shape[3]
        if _ATTN is not None and min(B, H, S, T) > 0 \
                and q.shape[0] == k.shape[0] == v.shape[0] == B \
                and q.shape[2] == k.shape[2] == v.shape[2] == H \
                and all(a.dtype == _F32 or (deq is not None and deq[i] is not None)
                        for i, a in enumerate((q, k, v))) \
                and all(a.strides[3] == a.itemsize or a.shape[3] == 1 for a in (q, k, v)) \
                and all(st % a.itemsize == 0 for a in (q, k, v) for st in a.strides):
            # compiled per-(batch, head) kernel: no BLAS call per head, no score buffer
            mb = None
            if mask is not None:
                mb = np.broadcast_to(np.asarray(mask, _F32), (B, H, S, T))
                if (T > 1 and mb.strides[3] != 4) or any(st % 4 for st in mb.strides):
                    mb = np.ascontiguousarray(mb)
            oshape = (B, S, H, vv.shape[3])
            if self.q is not None:
                o = self._qout(oshape, outs)
                self.attn.attention(q, k, v, mb, self.scale, o, self.nt, self.q[:2], deq)
                return [o]
            y = _out(oshape, outs[0] if outs else None)
            _ATTN.attention(q, k, v, mb, self.scale, y, self.nt, None, deq)
            return [y]
        if deq is not None:      # the numpy path: float32 inputs
            q, k, v = (_deq_f32(a, d) for a, d in zip((q, k, v), deq))
            qv = q.transpose(0, 2, 1, 3)
            kv = k.transpose(0, 2, 3, 1)
            vv = v.transpose(0, 2, 1, 3)
        # one per-thread score buffer shared by every attention layer (they run one at a time)
        sc = scratch(("attn_scores", B, H, S, T), (B, H, S, T), _F32)
        np.matmul(qv, kv, out=sc)
        mb = None
        if mask is not None:
            mb = np.broadcast_to(np.asarray(mask, _F32), (B, H, S, T))
            if T > 1 and mb.strides[3] != 4:
                mb = np.ascontiguousarray(mb)
        _k.scale_mask_softmax(sc, mb, self.scale, self.nt)
        oshape = (B, S, H, vv.shape[3])
        y = _out(oshape, outs[0] if outs else None) if self.q is None else np.empty(oshape, _F32)
        np.matmul(sc, vv, out=y.transpose(0, 2, 1, 3))
        if self.q is not None:
            return [self._quant_out(y, oshape, outs)]
        return [y]


    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the compiled kernel on the same q / k / v / mask /
        output objects (views of arena slots), where run() takes that path without copying
        the mask."""
        q, k, v = inputs[0], inputs[1], inputs[2]
        mask = inputs[3] if len(inputs) > 3 else None
        y = outs[0] if outs else None
        if _ATTN is None or y is None or any(
                not isinstance(a, np.ndarray) or a.ndim != 4 for a in (q, k, v)):
            return None
        q, k, v, deq = self._deq_inputs((q, k, v))
        if any(a.dtype != _F32 and (deq is None or deq[i] is None)
               for i, a in enumerate((q, k, v))):
            return None
        if deq is not None and any(a is not b for a, b in zip((q, k, v), inputs[:3])):
            return None     # (numpy made floats of one: not a call on the inputs' objects)
        B, S, H = q.shape[0], q.shape[1], q.shape[2]
        T = k.shape[1]
        if min(B, H, S, T) <= 0 or k.shape[0] != B or v.shape[0] != B or k.shape[2] != H \
                or v.shape[2] != H or v.shape[1] != T or k.shape[3] != q.shape[3] \
                or any(a.strides[3] != a.itemsize and a.shape[3] != 1 for a in (q, k, v)) \
                or any(st % a.itemsize for a in (q, k, v) for st in a.strides) \
                or y.dtype != self.out_dtype or y.shape != (B, S, H, v.shape[3]) \
                or any(np.may_share_memory(y, a) for a in (q, k, v)):
            return None
        mb = None
        if mask is not None:
            if not isinstance(mask, np.ndarray) or mask.dtype != _F32:
                return None
            try:
                mb = np.broadcast_to(mask, (B, H, S, T))
            except ValueError:
                return None
            if (T > 1 and mb.strides[3] != 4) or any(st % 4 for st in mb.strides) \
                    or np.may_share_memory(y, mask):
                return None
        if self.q is not None:
            if y.strides[3] != 1:
                return None
            return self.attn.attention_bound(q, k, v, mb, self.scale, y, self.nt, self.q[:2],
                                             deq), ()
        return _ATTN.attention_bound(q, k, v, mb, self.scale, y, self.nt, None, deq), ()

@register("FusedConv", since=1, domain=DOMAIN)
class FusedConv(_conv.Conv):
    """Conv (ops/conv.py's ConvCore, bias folded in its GEMM) + optional sum input Z +
    activation, the last two in place on the conv output."""

    kernel_name = "conv+f32_bias_act"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)
        self.code, self.act, self.p = _act(node)
        if self.core is not None and self.core.fast is not None:
            self.kernel_name = "f32_conv+bias_act"
        elif self.core is not None and self.core.dw_fast is not None:
            self.kernel_name = "f32_dwconv+bias_act"

    def run(self, inputs, outs):
        z = inputs[3] if len(inputs) > 3 else None
        x, core = inputs[0], self.core
        if core is not None and core.fused_epilogue and x.dtype == _F32 \
                and (z is None or z.dtype == _F32):
            # bias, z and the activation in the kernel's epilogue
            out = outs[0] if outs else None
            return [core.run(x, out, z=z, act=self.code, params=self.p)]
        y = super().run(inputs[:3], outs)[0]
        if z is not None:
            np.add(y, z, out=y, casting="unsafe")
        if y.dtype == _F32 and y.flags.c_contiguous:
            _act_inplace(y, self.code, self.p, self.nt)
        elif self.code:
            raise ShapeError("FusedConv activation needs a float32 contiguous output")
        return [y]

    def bind(self, inputs, outs):
        core = self.core
        if core is None or not core.fused_epilogue or not outs:
            return None
        return core.bind(inputs[0], outs[0], inputs[3] if len(inputs) > 3 else None, self.code,
                         self.p)


@register("SqueezeExcite", since=1, domain=DOMAIN)
class SqueezeExcite(Op):
    """Squeeze-excitation block in one kernel call (kernels/_f32_fused.squeeze_excite): channel
    means, the two small FCs with their activations, the channel scaling. W1 / W2 constant."""

    kernel_name = "f32_squeeze_excite"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)
        self.c1, _, self.p1 = _act(node, "activation")
        self.c2, _, self.p2 = _act(node, "gate_activation")
        w1, w2 = ctx.const(1), ctx.const(3)
        if w1 is None or w2 is None:
            raise ShapeError("SqueezeExcite needs constant weights")
        self.R, self.C = int(w1.shape[0]), int(w2.shape[0])
        w1 = np.asarray(w1, np.float32).reshape(self.R, -1)
        w2 = np.asarray(w2, np.float32).reshape(self.C, -1)
        if w1.shape[1] != self.C or w2.shape[1] != self.R:
            raise ShapeError(f"SqueezeExcite weights {w1.shape} and {w2.shape} do not chain")
        # transposed: the kernel's products run along contiguous output columns
        self.w1t, self.w2t = np.ascontiguousarray(w1.T), np.ascontiguousarray(w2.T)

        def bias(i, n):
            b = ctx.const(i) if len(node.inputs) > i and node.inputs[i] else None
            if b is None:
                return None
            b = np.ascontiguousarray(np.asarray(b, np.float32).reshape(-1))
            if b.shape[0] != n:
                raise ShapeError(f"SqueezeExcite bias has {b.shape[0]} values, expected {n}")
            return b
        self.b1, self.b2 = bias(2, self.R), bias(4, self.C)

    def run(self, inputs, outs):
        x = inputs[0]
        if x.ndim < 3 or x.shape[1] != self.C:
            raise ShapeError(f"SqueezeExcite: input {x.shape} does not have {self.C} channels "
                             "and a spatial extent")
        if x.dtype != _F32:
            raise ShapeError(f"SqueezeExcite: input dtype {x.dtype}, expected float32")
        xc = np.ascontiguousarray(x)
        y = _out(x.shape, outs[0] if outs else None)
        if y is not xc and np.may_share_memory(y, xc):
            y = np.empty(x.shape, np.float32)
        _k.squeeze_excite(*self._args(xc, y))
        return [y]

    def _args(self, x, y):
        """squeeze_excite's arguments for contiguous float32 x and y of the input's shape."""
        N, C = x.shape[0], self.C
        return (x.reshape(N, C, -1), self.w1t, self.b1, self.c1, self.p1[0], self.p1[1],
                self.w2t, self.b2, self.c2, self.p2[0], self.p2[1], y.reshape(N, C, -1), self.nt)

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the kernel on views of the same x / out objects."""
        x = inputs[0]
        out = outs[0] if outs else None
        if out is None or x.dtype != _F32 or out.dtype != _F32 or out.shape != x.shape \
                or not x.flags.c_contiguous or not out.flags.c_contiguous or x.size == 0 \
                or (out is not x and np.may_share_memory(out, x)):
            return None
        return _k.squeeze_excite, self._args(x, out)


@register("FusedConvTranspose", since=1, domain=DOMAIN)
class FusedConvTranspose(_conv.ConvTranspose):
    """ConvTranspose + activation: on the stride == kernel path (2x upsampling heads) the
    activation runs in the 1x1 GEMM's epilogue, before the depth-to-space copy (an elementwise
    function commutes with it); elsewhere in place on the output."""

    kernel_name = "f32_convT+act"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)
        self.code, self.act, self.p = _act(node)
        self._act = (self.code, (self.p[0], self.p[1]))

    def run(self, inputs, outs):
        y, applied = self._run(inputs, outs, self.code, (self.p[0], self.p[1]))
        if not applied and self.code:
            if y.dtype == _F32 and y.flags.c_contiguous:
                _act_inplace(y, self.code, self.p, self.nt)
            else:
                y = _conv.apply_activation(y, self.act, self.p)
        return [y]


# Mul's bound steps take the compiled row scale where it applies (an SE block's channel scale:
# numpy broadcast the multiply in short inner loops, ~8 us for 57K values)
_ew.Mul.bind = _mul_bind
_ew.Mul.bind_threads = True
