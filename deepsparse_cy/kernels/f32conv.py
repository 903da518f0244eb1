"""Dense FP32 2-D convolution kernel (csrc/f32_conv.c): NCHW, group 1, any kernel size, stride,
dilation and padding; implicit im2col (no column buffer) and the epilogue fused (bias, a residual
z added before the activation, f32_fused.h's activations). ops/conv.py routes float32 2-D convs
here and keeps its numpy im2col/BLAS path for everything else."""
import numpy as np

from . import load
from ._mem import aligned, aligned_empty


def uses_phase_split(packed, stride_w, out_pixels):
    """Whether f32_conv2d reads a phase-split copy of the input for this conv (out_pixels per
    image); the compiled module decides (csrc/f32_conv.c), so the scratch is sized only when
    it is read."""
    return load("f32_conv", packed.isa).uses_phase_split(packed.M, packed.KH, packed.KW,
                                                         int(stride_w), int(out_pixels))


def conv_pixel_tables(H, W, Ho, Wo, strides, pads_begin):
    """int32 ih0[P], iw0[P]: top-left input coordinate (before dilation taps) of each output
    pixel, P = Ho * Wo in row-major order."""
    sh, sw = strides
    oh = np.arange(Ho, dtype=np.int64) * sh - pads_begin[0]
    ow = np.arange(Wo, dtype=np.int64) * sw - pads_begin[1]
    ih0 = np.ascontiguousarray(np.repeat(oh, Wo), dtype=np.int32)
    iw0 = np.ascontiguousarray(np.tile(ow, Ho), dtype=np.int32)
    return ih0, iw0


class PackedConvF32:
    """Weights [M, C, KH, KW] float32 packed once for f32_conv2d."""

    def __init__(self, w, isa=None):
        w = np.asarray(w)
        if w.ndim != 4 or w.dtype != np.float32:
            raise ValueError(f"conv weight must be float32 [M, C, KH, KW], got {w.dtype} {w.shape}")
        self.M, self.C, self.KH, self.KW = (int(v) for v in w.shape)
        self.K = self.C * self.KH * self.KW
        if max(self.M, self.K) >= 2 ** 31 // 64:
            raise ValueError(f"conv weight {w.shape} too large for the packed kernel")
        self.isa = isa
        # 3x3 weights go in 4-D: the pack then appends their Winograd transform (AVX2 build)
        self.wp = aligned(load("f32_conv", isa).pack_w(np.ascontiguousarray(
            w if (self.KH, self.KW) == (3, 3) else w.reshape(self.M, self.K))))

    @property
    def nbytes(self):
        return int(self.wp.nbytes)


def _conv_call_args(x, C, M, KH, KW, strides, pads, dilations, bias, z, out):
    """Checked arguments of the compiled conv kernels: (x contiguous, (N, H, W), (sh, sw, dh, dw,
    pt, pl), (Ho, Wo), out, bias, z). x float32 [N, C, H, W] against C input channels, the
    output [N, M, Ho, Wo]; z and x copied when they overlap out (out is written while they are
    still read)."""
    if x.dtype != np.float32 or x.ndim != 4:
        raise ValueError(f"x must be float32 [N, C, H, W], got {x.dtype} {x.shape}")
    x = np.ascontiguousarray(x)
    N, Cx, H, W = x.shape
    if Cx != C:
        raise ValueError(f"x has {Cx} channels, weight expects {C}")
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilations)
    pt, pl, pb, pr = (int(v) for v in pads)
    if min(sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError("strides and dilations must be >= 1, pads >= 0")
    Ho = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    Wo = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    if Ho <= 0 or Wo <= 0:
        raise ValueError(f"conv output would be empty ({Ho} x {Wo})")
    if out is None:
        out = np.empty((N, M, Ho, Wo), np.float32)
    elif out.shape != (N, M, Ho, Wo) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be float32 C-contiguous {(N, M, Ho, Wo)}")
    b = None if bias is None else np.ascontiguousarray(bias, np.float32).reshape(-1)
    if b is not None and b.shape[0] != M:
        raise ValueError(f"bias must have {M} values, got {b.shape[0]}")
    if z is not None:
        if z.shape != out.shape or z.dtype != np.float32:
            raise ValueError(f"z must be float32 {out.shape}, got {z.dtype} {z.shape}")
        z = np.ascontiguousarray(z)
        if np.may_share_memory(z, out):
            z = z.copy()
    if np.may_share_memory(x, out):
        x = x.copy()
    return x, (N, H, W), (sh, sw, dh, dw, pt, pl), (Ho, Wo), out, b, z


def f32_conv2d(x, packed, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), bias=None, z=None,
               activation=0, params=(0.0, 0.0), out=None, num_threads=None, tables=None,
               xph=None):
    """out[N, M, Ho, Wo] = act(conv(x, W) + bias + z). x float32 [N, C, H, W]; pads ONNX order
    (top, left, bottom, right); activation an f32_fused ACTIVATIONS code; tables: cached
    conv_pixel_tables for this input shape (computed when None); xph: float32 scratch of at
    least xph_size(x.shape, stride_w) elements for a strided conv's phase-split input (a fresh
    one is allocated when None)."""
    M, C = packed.M, packed.C
    x, (N, H, W), (sh, sw, dh, dw, pt, pl), (Ho, Wo), out, b, z = _conv_call_args(
        x, C, M, packed.KH, packed.KW, strides, pads, dilations, bias, z, out)
    if tables is None:
        tables = conv_pixel_tables(H, W, Ho, Wo, (sh, sw), (pt, pl))
    ih0, iw0 = tables
    if N == 0 or M == 0:
        return out
    mod = load("f32_conv", packed.isa)
    if uses_phase_split(packed, sw, Ho * Wo):
        need = mod.xph_size(N, C, H, W, sw)
        if xph is None or xph.dtype != np.float32 or xph.size < need \
                or not xph.flags.c_contiguous:
            xph = aligned_empty(need, np.float32)
    else:
        xph = None
    mod.conv2d(x, packed.wp, M, packed.KH, packed.KW, sw, dh, dw, ih0, iw0, b, z,
               int(activation), float(params[0]), float(params[1]), out,
               0 if num_threads is None else int(num_threads), xph)
    return out


def f32_dwconv2d(x, w, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), bias=None, z=None,
                 activation=0, params=(0.0, 0.0), out=None, num_threads=None, isa=None):
    """Depthwise conv: out[N, C, Ho, Wo] = act(conv(x[n, c], w[c]) + bias + z), one filter per
    channel (group == C == M). x float32 [N, C, H, W]; w float32 [C, 1, KH, KW] (or [C, KH, KW]);
    pads ONNX order (top, left, bottom, right); activation an f32_fused ACTIVATIONS code."""
    w = np.asarray(w)
    if w.dtype != np.float32 or w.ndim not in (3, 4) or (w.ndim == 4 and w.shape[1] != 1) \
            or min(w.shape[-2:]) < 1:
        raise ValueError(f"depthwise weight must be float32 [C, 1, KH, KW], got {w.dtype} {w.shape}")
    C, KH, KW = w.shape[0], w.shape[-2], w.shape[-1]
    x, (N, H, W), (sh, sw, dh, dw, pt, pl), _, out, b, z = _conv_call_args(
        x, C, C, KH, KW, strides, pads, dilations, bias, z, out)
    if N == 0 or C == 0:
        return out
    load("f32_conv", isa).dwconv2d(x, np.ascontiguousarray(w.reshape(C, KH * KW)), KH, KW, sh, sw,
                                   dh, dw, pt, pl, b, z, int(activation), float(params[0]),
                                   float(params[1]), out,
                                   0 if num_threads is None else int(num_threads))
    return out


def xph_size(shape, stride_w, isa=None):
    """float32 elements of f32_conv2d's phase-split scratch for input shape [N, C, H, W]."""
    N, C, H, W = (int(v) for v in shape)
    return int(load("f32_conv", isa).xph_size(N, C, H, W, int(stride_w)))


class PackedGemmF32:
    """A constant float32 weight [K, N] packed once for f32_gemm (x[T, K] @ w)."""

    def __init__(self, w, isa=None):
        w = np.asarray(w)
        if w.ndim != 2 or w.dtype != np.float32:
            raise ValueError(f"gemm weight must be float32 [K, N], got {w.dtype} {w.shape}")
        self.K, self.N = (int(v) for v in w.shape)
        if max(self.K, self.N) >= 2 ** 31 // 64:
            raise ValueError(f"gemm weight {w.shape} too large for the packed kernel")
        self.isa = isa
        self.wp = aligned(load("f32_conv", isa).gemm_pack_w(np.ascontiguousarray(w)))

    @property
    def nbytes(self):
        return int(self.wp.nbytes)


def gemm_xpack_size(T, K, isa=None):
    return int(load("f32_conv", isa).gemm_xpack_size(int(T), int(K)))


def f32_gemm(x, packed, bias=None, activation=0, params=(0.0, 0.0), out=None, num_threads=None,
             xp=None):
    """out[T, N] = act(x[T, K] @ w + bias): the conv kernel's tiles with tokens as the 6-row
    panels and the packed weight as 16-wide strips; xp: float32 scratch of at least
    gemm_xpack_size(T, K) (allocated when None)."""
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != packed.K:
        raise ValueError(f"x must be float32 [T, {packed.K}], got {x.dtype} {x.shape}")
    if x.shape[1] > 1 and x.strides[1] != 4:
        x = np.ascontiguousarray(x)
    T, N = x.shape[0], packed.N
    if out is None:
        out = np.empty((T, N), np.float32)
    elif out.shape != (T, N) or out.dtype != np.float32 or (N > 1 and out.strides[1] != 4):
        raise ValueError(f"out must be float32 [{T}, {N}] with contiguous rows")
    if np.may_share_memory(x, out):
        x = x.copy()
    b = None if bias is None else np.ascontiguousarray(bias, np.float32).reshape(-1)
    if b is not None and b.shape[0] != N:
        raise ValueError(f"bias must have {N} values, got {b.shape[0]}")
    if T == 0 or N == 0:
        return out
    mod = load("f32_conv", packed.isa)
    need = mod.gemm_xpack_size(T, packed.K)
    if xp is None or xp.dtype != np.float32 or xp.size < need:
        xp = aligned_empty(max(need, 1), np.float32)
    mod.gemm(x, packed.wp, N, b, int(activation), float(params[0]), float(params[1]), out, xp,
             0 if num_threads is None else int(num_threads))
    return out
