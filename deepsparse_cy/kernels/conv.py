"""Convolution helpers on top of qs8_matmul: NHWC activations are tokens-major matrices
[B*H*W, C], so a 1x1 convolution is the GEMM over pixels, and a k x k one runs on explicit
im2col columns [B*Ho*Wo, kh*kw*C] (kh, kw, C order, matching conv_weight_matrix).
group = 1 only; grouped / depthwise convolutions are not covered here."""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _f32_ops
from . import load
from .qs8 import (_OUT_CODES, _EpilogueArgs, _check_zero_point, _epilogue_reference, _out,
                  _res_args, qs8_matmul)


def conv_weight_matrix(w):
    """ONNX Conv weight [Cout, Cin, kh, kw] -> [Cout, kh*kw*Cin], the column order of im2col_nhwc."""
    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"conv weight must be [Cout, Cin, kh, kw], got {w.shape}")
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))


def conv_output_hw(h, w, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1)):
    kh, kw = kernel_shape
    ho = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    return ho, wo


def im2col_nhwc(x, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), pad_value=0,
                out=None, num_threads=1):
    """x [B, H, W, C] -> columns [B*Ho*Wo, kh*kw*C]. pads in ONNX order (top, left, bottom,
    right); pad_value should be the activation zero point so padding contributes zero.
    uint8 / int8 x runs the compiled copy (_f32_ops.im2col_nhwc_8), into out ([B*Ho*Wo,
    kh*kw*C] of x's dtype, C-contiguous) when given; other dtypes use numpy strides."""
    x = np.asarray(x)
    b, h, w, c = x.shape
    kh, kw = kernel_shape
    ho, wo = conv_output_hw(h, w, kernel_shape, strides, pads, dilations)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"convolution output would be empty: {ho}x{wo}")
    if x.dtype in (np.uint8, np.int8):
        shape = (b * ho * wo, kh * kw * c)
        if out is None or out.shape != shape or out.dtype != x.dtype \
                or not out.flags.c_contiguous:
            out = np.empty(shape, x.dtype)
        pv = int(np.array(pad_value).astype(x.dtype).view(np.uint8))
        args = (kh, kw, strides[0], strides[1], dilations[0], dilations[1], pads[0], pads[1], pv,
                out.view(np.uint8).reshape(b, ho, wo, kh * kw * c), int(num_threads or 1))
        planar = x.transpose(0, 3, 1, 2)
        if not x.flags.c_contiguous and planar.flags.c_contiguous:
            # an NHWC view of NCHW data (the graph's layout): a compiled transposed copy
            xc = np.empty(x.shape, np.uint8)
            _f32_ops.nchw_to_nhwc_8(planar.view(np.uint8), xc, int(num_threads or 1))
        else:
            xc = np.ascontiguousarray(x).view(np.uint8)
        _f32_ops.im2col_nhwc_8(xc, *args)
        return out
    if any(pads):
        xp = np.full((b, h + pads[0] + pads[2], w + pads[1] + pads[3], c), pad_value, x.dtype)
        xp[:, pads[0]:pads[0] + h, pads[1]:pads[1] + w] = x
    else:
        xp = np.ascontiguousarray(x)
    sb, sh, sw, sc = xp.strides
    win = as_strided(xp, (b, ho, wo, kh, kw, c),
                     (sb, sh * strides[0], sw * strides[1], sh * dilations[0], sw * dilations[1], sc),
                     writeable=False)
    return win.reshape(b * ho * wo, kh * kw * c)


def qs8_conv2d_nhwc(x, packed, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                    x_zero_point=0, **matmul_kwargs):
    """INT8 convolution: x [B, H, W, Cin] u8/s8, packed = pack_qs8(conv_weight_matrix(w)).
    Remaining keywords go to qs8_matmul (bias, scale, out_dtype, out_zero_point, activation, ...).
    Returns [B, Ho, Wo, Cout]."""
    x = np.asarray(x)
    b, h, w, c = x.shape
    kh, kw = kernel_shape
    if packed.k != kh * kw * c:
        raise ValueError(f"packed weight has K={packed.k}, expected kh*kw*Cin={kh * kw * c}")
    ho, wo = conv_output_hw(h, w, kernel_shape, strides, pads, dilations)
    if (kh, kw) == (1, 1) and tuple(strides) == (1, 1) and not any(pads):
        cols = x.reshape(b * h * w, c)          # 1x1: the GEMM over pixels, no copy
    else:
        cols = im2col_nhwc(x, kernel_shape, strides, pads, dilations, pad_value=x_zero_point)
    y = qs8_matmul(cols, packed, x_zero_point=x_zero_point, **matmul_kwargs)
    return y.reshape(b, ho, wo, packed.n)


DW_MAX_TAPS = 256       # csrc/qs8_dw.c: float32 sums stay exact up to 256 taps


class PreparedQDW(_EpilogueArgs):
    """Depthwise 2-D convolution (channel multiplier 1) of quantized NHWC activations with the
    INT8 kernels' fused epilogue (csrc/qs8_dw.c), prepared once per layer. w: int8 [C, kh, kw]
    (or [C, 1, kh, kw]), kh * kw <= 256; bias: int32 [C] without zero-point fold (taps outside
    the input are the zero point, so they add nothing); scale, out_dtype, out_zero_point,
    activation, clip, y_scale, mid (with its table): as prepare_qs8_matmul. The output is
    bit-identical to qs8_matmul on the layer's im2col columns.

    p(x [B, H, W, C] u8 / s8, strides, pads (top, left, bottom, right), dilations, out=None,
    num_threads=None, residual=None) -> out [B*Ho*Wo, C] (tokens-major, as the GEMMs')."""

    def __init__(self, w, bias=None, scale=None, out_dtype=np.float32, out_zero_point=0,
                 x_zero_point=0, activation=None, clip=None, isa=None, y_scale=1.0, mid=None):
        w = np.asarray(w)
        if w.ndim == 4 and w.shape[1] == 1:
            w = w[:, 0]
        if w.ndim != 3 or w.dtype != np.int8:
            raise ValueError(f"depthwise weight must be int8 [C, kh, kw], got {w.dtype} {w.shape}")
        c, kh, kw = w.shape
        if kh * kw > DW_MAX_TAPS:
            raise ValueError(f"depthwise kernel {kh}x{kw} has more than {DW_MAX_TAPS} taps")
        _EpilogueArgs.__init__(self, c, bias, scale, out_dtype, out_zero_point, 0, None,
                               activation, clip, y_scale, mid)
        self.c, self.kh, self.kw, self.zx = c, kh, kw, int(x_zero_point)
        self.wt = np.ascontiguousarray(w.reshape(c, kh * kw).T, np.float32)        # [taps, C]
        # zx times each kernel row's weight sum: exact in float32 (<= 255 * 128 * kw < 2**24)
        self.zxw = np.ascontiguousarray(
            (self.zx * w.astype(np.int64).sum(axis=2)).T.astype(np.float32))       # [kh, C]
        self.code = _OUT_CODES[self.out_dtype]
        self._fn = load("qs8_gemm", isa).dwconv

    def _geometry(self, x, strides, pads, dilations):
        b, h, w, c = x.shape
        if c != self.c:
            raise ValueError(f"depthwise conv: input has {c} channels, weight {self.c}")
        ho, wo = conv_output_hw(h, w, (self.kh, self.kw), strides, pads, dilations)
        if ho <= 0 or wo <= 0:
            raise ValueError(f"depthwise conv: output would be empty ({ho}x{wo})")
        return ho, wo

    def _args(self, x, strides, pads, dilations, ho, wo, out, res, num_threads):
        return (x, int(x.dtype == np.int8), float(self.zx), self.wt, self.zxw, self.kh, self.kw,
                int(strides[0]), int(strides[1]), int(dilations[0]), int(dilations[1]),
                int(pads[0]), int(pads[1]), ho, wo, self.b, self.s, self.code, self.act, self.lo,
                self.hi, self.ys, self.mid, res, self.zp, out, int(num_threads or 0))

    def _check_x(self, x):
        if not (type(x) is np.ndarray and x.ndim == 4 and x.dtype in (np.uint8, np.int8)):
            raise ValueError(f"depthwise conv: x must be uint8 / int8 [B, H, W, C], got "
                             f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
        _check_zero_point(self.zx, x.dtype, "x")
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)

    def __call__(self, x, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), out=None,
                 num_threads=None, residual=None):
        x = self._check_x(x)
        ho, wo = self._geometry(x, strides, pads, dilations)
        m = x.shape[0] * ho * wo
        out = _out(out, m, self.c, self.out_dtype)
        if m == 0 or self.c == 0:
            return out
        self._check_res(residual)
        res = _res_args(residual, m, self.c, out) if residual is not None else None
        self._fn(*self._args(x, strides, pads, dilations, ho, wo, out, res, num_threads))
        return out

    def bound(self, x, strides, pads, dilations, out, num_threads=None, residual=None):
        """(fn, args) running this call on exactly these arrays (engine._run_plan's bound
        step), or None where __call__ would convert or copy one of them."""
        if not (type(x) is np.ndarray and x.ndim == 4 and x.dtype in (np.uint8, np.int8)
                and x.flags.c_contiguous and x.shape[3] == self.c and x.size > 0):
            return None
        try:
            _check_zero_point(self.zx, x.dtype, "x")
            ho, wo = self._geometry(x, strides, pads, dilations)
        except ValueError:
            return None
        m = x.shape[0] * ho * wo
        if not (type(out) is np.ndarray and out.shape == (m, self.c)
                and out.dtype == self.out_dtype and out.strides[1] == out.itemsize
                and out.strides[0] % out.itemsize == 0):
            return None
        res = self._bound_res(residual, m, self.c, out)
        if res is False:
            return None
        return self._fn, self._args(x, strides, pads, dilations, ho, wo, out, res, num_threads)


def prepare_qs8_dwconv(w, bias=None, scale=None, out_dtype=np.float32, out_zero_point=0,
                       x_zero_point=0, activation=None, clip=None, isa=None, y_scale=1.0,
                       mid=None):
    """A PreparedQDW (depthwise INT8 conv with the fused epilogue) for repeated calls."""
    return PreparedQDW(w, bias, scale, out_dtype, out_zero_point, x_zero_point, activation, clip,
                       isa, y_scale, mid)


def qs8_dwconv_reference(x, w, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), bias=None,
                         scale=None, out_dtype=np.float32, out_zero_point=0, x_zero_point=0,
                         activation=None, clip=None, y_scale=1.0, mid=None, residual=None):
    """Plain numpy PreparedQDW: integer sums over the taps of x padded with its zero point,
    then the kernels' epilogue (qs8_matmul_reference's). Returns [B*Ho*Wo, C]."""
    x, w = np.asarray(x), np.asarray(w)
    if w.ndim == 4:
        w = w[:, 0]
    c, kh, kw = w.shape
    b, h, wd, _ = x.shape
    ho, wo = conv_output_hw(h, wd, (kh, kw), strides, pads, dilations)
    xp = np.full((b, h + pads[0] + pads[2], wd + pads[1] + pads[3], c), int(x_zero_point),
                 np.int64)
    xp[:, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = x
    xp -= int(x_zero_point)
    acc = np.zeros((b, ho, wo, c), np.int64)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dilations[0], j * dilations[1]
            acc += xp[:, y0:y0 + (ho - 1) * strides[0] + 1:strides[0],
                      x0:x0 + (wo - 1) * strides[1] + 1:strides[1]] * w[:, i, j].astype(np.int64)
    res = _epilogue_reference(acc.reshape(-1, c), bias, scale, out_dtype, out_zero_point,
                              activation, clip, y_scale, mid, residual)
    return np.asarray(res).astype(out_dtype)
