"""Convolution helpers on top of qs8_matmul: NHWC activations are tokens-major matrices
[B*H*W, C], so a 1x1 convolution is the GEMM over pixels, and a k x k one runs on explicit
im2col columns [B*Ho*Wo, kh*kw*C] (kh, kw, C order, matching conv_weight_matrix).
group = 1 only; grouped / depthwise convolutions are not covered here."""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _f32_ops
from .qs8 import qs8_matmul


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
