"""QConv (domain com.deepsparse_cy): one quantized 2-D convolution on the compiled qs8 kernels.

Made by graph/fusion_conv.py from QDQ Conv, QLinearConv and ConvInteger patterns; never written in
model files. Inputs: x_q (u8 / s8), the constant int8 weight [Cout, Cin/group, kh, kw] and an
optional residual (float, or u8 / s8 with res_scale / res_zero_point). Attributes:

    kernel_shape, strides, pads, dilations, group, auto_pad    as ONNX Conv
    x_scale, x_zero_point       activation quantization (per tensor)
    w_scale [Cout]              per-channel factor: weight scale times any folded BN factor
    bias [Cout]                 float bias (conv bias and folded BN shift)
    activation                  None | 'relu' | 'clip' (clip_min, clip_max, float domain)
    y_scale, y_zero_point, y_dtype   output quantization (mode requant)
    mode                        int32 (acc) | float (acc*sx*sw + bias [+ res] -> act) | requant
    x_layout, y_layout, res_layout   'NCHW' (default, the graph's) or 'NHWC' (between QConvs)
    mid_scale, mid_zero_point, mid_dtype, post_scale, post_bias   the kept Q -> DQ round trip of
                                the conv output and the per-channel affine (BN) after it
    table [Cout, 256]           uint8, with mid and requant: the output byte of each mid value
                                (graph/fusion_conv.py's elementwise tails)

How each conv runs (weights packed once, [Cout, kh*kw*Cin] in im2col_nhwc's column order, format
chosen per layer by pack_qs8's cost model):

* group 1: 1x1 stride 1 is the GEMM over pixels; other shapes run the dense or sparse kernel on
  the im2col rows it gathers from the NHWC input itself (kernels.PreparedQS8.conv; no column
  matrix), with the fused epilogue.
* grouped (Cin/group > 1): one packed weight per group, each group's GEMM writes its column slice
  (explicit im2col columns).
* depthwise (Cin/group == 1), channel multiplier 1 and up to 256 taps: the compiled kernel
  kernels.PreparedQDW (float32 sums of (x - zx) * w, exact integers below 2**24) with the GEMMs'
  epilogue; other depthwise layers sum with _f32_fused.dw_conv_nhwc_q8 (or numpy per tap for
  channel multipliers > 1) and finish in numpy.

On the first run each sparse layer is timed once against the dense kernel on its real columns
and the faster kept (DEEPSPARSE_CY_NO_TUNE=1 keeps pack_qs8's choice); outputs are bit-identical
either way.

The epilogue (bias, scale, mid step or table, residual, ReLU/Clip, round half even, saturate)
runs in the kernel unless the residual arrives in the graph's NCHW layout or the bias does not
fit int32, in which case the kernel writes float and numpy finishes (residual add, activation,
compiled QuantizeLinear).
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from .. import kernels
from ..errors import ShapeError
from ..kernels import _f32_ops
from ..kernels.conv import conv_output_hw, conv_weight_matrix, im2col_nhwc
from ..kernels import _f32_fused
from .pool import _Geom, pool_geometry_attrs
from .registry import Op, register
from .tensor import _nothing

# columns (M*K bytes) below which the first-run timing is not worth it. 64 KiB left the small
# maps of a 128x128 YOLOv8n (4x4 and 8x8, M = 16..64) on the sparse kernel, whose 32-token tile
# is half padding at M = 16, where the amx GEMM's 16-token tiles took 0.65-0.8x the time:
# at 4 KiB, YOLOv8n block4 INT8 at 128 ran 1.09-1.20x, MBv3 OCR at 48x320 1.07-1.10x, YOLOv8n
# at 320 1.00x (whole models, alternating rounds in two processes)
TUNE_MIN = 1 << 12
_KERNEL_NAMES = {"dense": "qs8_gemm", "block4": "qs8_spmm_block4",
                 "unstructured": "qs8_spmm_unstructured"}


_tls = threading.local()


def _thread_buffer(name, shape, dtype):
    """A scratch array in one growing buffer per thread and name, shared by every QConv layer
    (im2col columns, channels-last copies: they live only during their layer's call): a fresh
    multi-MB array per call would page-fault, and a buffer per layer shape would hold them all."""
    need = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = getattr(_tls, name, None)
    if buf is None or buf.size < need:
        buf = np.empty(need, np.uint8)
        setattr(_tls, name, buf)
    return buf[:need].view(dtype).reshape(shape)


def _resolve_pads(auto_pad, pads, h, w, k, s, d):
    if auto_pad in ("", "NOTSET", None):
        return tuple(pads) if pads is not None else (0, 0, 0, 0)
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    out = []
    for size, kk, ss, dd in ((h, k[0], s[0], d[0]), (w, k[1], s[1], d[1])):
        o = -(-size // ss)
        total = max(0, (o - 1) * ss + (kk - 1) * dd + 1 - size)
        small, big = total // 2, total - total // 2
        out.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    return (out[0][0], out[1][0], out[0][1], out[1][1])


@register("QConv", since=1, domain="com.deepsparse_cy")
class QConv(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        w = ctx.const(1)
        if w is None or w.dtype != np.int8 or w.ndim != 4:
            raise ShapeError("QConv needs a constant int8 [Cout, Cin/group, kh, kw] weight")
        self.w = w
        self.cout, self.cin_g, kh, kw = w.shape
        self.group = int(a.get("group", 1))
        if self.cout % self.group:
            raise ShapeError(f"QConv: {self.cout} output channels not divisible by group {self.group}")
        self.cout_g = self.cout // self.group
        self.kernel_shape = (kh, kw)
        self.strides = tuple(a.get("strides", (1, 1)))
        self.dilations = tuple(a.get("dilations", (1, 1)))
        self.pads = a.get("pads")
        self.auto_pad = a.get("auto_pad", "NOTSET")
        self.x_layout = a.get("x_layout", "NCHW")
        self.y_layout = a.get("y_layout", "NCHW")
        self.res_layout = a.get("res_layout", "NCHW")
        self.num_threads = int(ctx.num_threads or 0)
        self.zx = int(a.get("x_zero_point", 0))
        self.mode = a.get("mode", "float")
        self.activation = a.get("activation")
        self.clip = (float(a.get("clip_min", -np.inf)), float(a.get("clip_max", np.inf)))
        self.res_q = "res_scale" in a
        self.res_scale = float(a.get("res_scale", 1.0))
        self.res_zp = int(a.get("res_zero_point", 0))
        self.has_res = len(node.inputs) > 2 and bool(node.inputs[2])

        # weights: dense depthwise taps, or one packed matrix per group
        self.depthwise = self.group > 1 and self.cin_g == 1
        if self.depthwise:
            self.w_taps = np.ascontiguousarray(w.reshape(self.cout, kh * kw).T,
                                               dtype=np.float32)               # [taps, Cout]
            self.packs = None
            rowsum = w.reshape(self.cout, -1).sum(1, dtype=np.int64)
            self.kernel_name, self.kernel_isa = "numpy_depthwise_f32", "numpy"
        else:
            self.packs = [kernels.pack_qs8(conv_weight_matrix(w[g * self.cout_g:(g + 1) * self.cout_g]),
                                           "auto") for g in range(self.group)]
            rowsum = np.concatenate([p.rowsum for p in self.packs])
            fmt = self.packs[0].format
            self.kernel_name = _KERNEL_NAMES[fmt] + ("_grouped" if self.group > 1 else "")
            fam = "qs8_gemm" if fmt == "dense" else "qs8_spmm"
            self.kernel_isa = kernels.kernel_builds().get(fam, kernels.kernel_isa())
        self._dense = None
        self.flops = None
        self._prepared = {}
        self._tuned = [self.depthwise or os.environ.get("DEEPSPARSE_CY_NO_TUNE", "") in ("1", "true")
                       ] * self.group
        self._tune_lock = threading.Lock()
        self.tune_times = None

        # epilogue: f = float32(acc + bias_i32) * scale, as the kernels compute it
        n = self.cout
        sxsw = np.float64(a.get("x_scale", 1.0)) * np.broadcast_to(
            np.asarray(a.get("w_scale", 1.0), np.float64).reshape(-1), (n,))
        bias = np.zeros(n) if self.mode == "int32" else \
            np.broadcast_to(np.asarray(a.get("bias", 0.0), np.float64).reshape(-1), (n,)).copy()
        empty = ~w.reshape(n, -1).any(axis=1)
        if empty.any() and self.mode != "int32":
            # a pruned channel is its bias: a scale fine enough to carry it to float32 precision
            sxsw = sxsw.copy()
            sxsw[empty] = np.maximum(np.abs(bias[empty]), 1e-30) / 2.0**24
        self.bias_i32, self.float_bias = None, None
        if bias.any():
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                bi = np.rint(bias / sxsw)
            comp = bi - self.zx * rowsum
            if np.isfinite(bi).all() and np.abs(comp).max() < 2**31 - 1:
                self.bias_i32 = bi.astype(np.int64)
            else:
                self.float_bias = bias.astype(np.float32)
        if self.mode == "requant":
            self.y_scale = float(a["y_scale"])
            self.y_zp = int(a.get("y_zero_point", 0))
            self.y_dtype = np.dtype(a.get("y_dtype", "uint8"))
            self.out_dtype = self.y_dtype
        else:
            self.out_dtype = np.dtype(np.int32 if self.mode == "int32" else np.float32)
        # exact QDQ tail (fusion_conv): the kernel quantizes to (mid_scale, mid_zero_point),
        # then f = (q1 - z1) * (mid_scale * post_scale) + post_bias continues in float32
        self.mid = "mid_scale" in a
        if self.mid:
            self.mid_scale = float(a["mid_scale"])
            self.mid_zp = int(a.get("mid_zero_point", 0))
            self.mid_dtype = np.dtype(a.get("mid_dtype", "uint8"))
            self.post_a = (self.mid_scale * np.asarray(a.get("post_scale", 1.0), np.float64)
                           * np.ones(n)).astype(np.float32)
            self.post_b = (np.asarray(a.get("post_bias", 0.0), np.float64) * np.ones(n)).astype(
                np.float32)
        # table [Cout, 256] uint8 (fusion_conv's elementwise tails): the output byte of each
        # mid value, replacing the post affine, activation and output quantization
        self.table = None
        if a.get("table") is not None:
            t = np.asarray(a["table"], np.uint8)
            if not self.mid or self.mode != "requant" or t.shape not in ((256,), (n, 256)) \
                    or self.has_res:
                raise ShapeError("QConv: a table needs a mid step, requant mode, no residual "
                                 f"and shape [256] or [{n}, 256], got {list(t.shape)}")
            self.table = np.ascontiguousarray(np.broadcast_to(t, (n, 256)))
        if self.mid:
            self.post_b0 = (self.post_b.astype(np.float64)
                            - self.mid_zp * self.post_a.astype(np.float64)).astype(np.float32)
        # Relu / Clip before a u8/s8 QuantizeLinear whose saturation bounds lie inside the
        # activation's range is the saturation itself: rint(max(f, 0) / s) + z = sat(rint(f / s)
        # + z) when z is the type's minimum (exactly, rint is monotone). Saves a numpy pass.
        self.act_implied = False
        if self.mode == "requant" and self.activation in ("relu", "clip"):
            info = np.iinfo(self.y_dtype)
            ys, yz = float(a["y_scale"]), int(a.get("y_zero_point", 0))
            lo = 0.0 if self.activation == "relu" else self.clip[0]
            hi = np.inf if self.activation == "relu" else self.clip[1]
            self.act_implied = (lo == 0.0 and yz == info.min
                                and hi >= (info.max - yz + 0.5) * ys)
        # the kernel finishes the layer unless numpy has work after it (a mid step runs in the
        # int8 kernels' epilogue, not in the depthwise path's numpy one)
        # a residual is added in the epilogue too when it is tokens-major like the output (NHWC,
        # between QConvs) and the conv is one GEMM
        # a depthwise conv with channel multiplier 1 runs the compiled kernel with the same
        # fused epilogue (kernels.PreparedQDW) when its taps keep float32 sums exact
        self.qdw = (self.depthwise and self.cout == self.group and kh * kw <= kernels.DW_MAX_TAPS
                    and self.float_bias is None
                    and (self.bias_i32 is None or np.abs(self.bias_i32).max() < 2**31))
        self.res_in_kernel = self.has_res and self.res_layout == "NHWC" and (
            self.group == 1 or self.qdw)
        self.kernel_final = not ((self.has_res and not self.res_in_kernel)
                                 or self.float_bias is not None
                                 or (self.mid and self.depthwise and not self.qdw))
        self.mid_in_kernel = self.mid and self.kernel_final
        # the activation then sees real values and the kernel divides by y_scale itself
        self.real_epilogue = self.kernel_final and (self.mid or self.has_res)
        if self.mode == "requant" and self.kernel_final and not self.real_epilogue:
            self.scale = (sxsw / self.y_scale).astype(np.float32)
            self.k_clip = (self.clip[0] / self.y_scale, self.clip[1] / self.y_scale)
        else:
            self.scale = sxsw.astype(np.float32)
            self.k_clip = self.clip
        if self.mid:
            self.mid_scale_k = (sxsw / self.mid_scale).astype(np.float32)
        self._dw_tiles = {}
        self._dw_f32_exact = False
        if self.depthwise:
            bmax = 0 if self.bias_i32 is None else int(np.abs(self.bias_i32).max())
            self._dw_f32_exact = kh * kw * 255 * 128 + bmax < 2**24
            self.bias_f32 = None if self.bias_i32 is None else self.bias_i32.astype(np.float32)
            if self.qdw:
                self.kernel_name = "qs8_dwconv"
                self.kernel_isa = kernels.kernel_builds().get("qs8_gemm", kernels.kernel_isa())
            elif self._dw_f32_exact and self.cout == self.group:
                self.kernel_name = "f32_dw_nhwc_q8"
                self.kernel_isa = "avx2" if _f32_fused.avx2_enabled() else "generic"

    @property
    def weight_format(self):
        return "depthwise" if self.depthwise else self.packs[0].format

    # -- helpers --------------------------------------------------------------------------------
    def _nhwc(self, x):
        if x.ndim != 4:
            raise ShapeError(f"QConv: input must be 4-D, got {list(x.shape)}")
        return x if self.x_layout == "NHWC" else x.transpose(0, 2, 3, 1)

    def _kernel_args(self):
        """(out_dtype, scale, activation, clip, out_zero_point) for the kernel call."""
        if self.mode == "int32":
            return np.int32, None, None, None, 0
        if self.real_epilogue:
            odt = self.y_dtype if self.mode == "requant" else np.float32
            return (odt, self.mid_scale_k if self.mid else self.scale, self.activation, self.clip,
                    self.y_zp if self.mode == "requant" else 0)
        if self.mid and self.float_bias is None:
            return self.mid_dtype, self.mid_scale_k, None, None, self.mid_zp
        act = self.activation if self.kernel_final else None
        if self.mode == "requant" and self.kernel_final:
            return self.y_dtype, self.scale, act, self.k_clip, self.y_zp
        return np.float32, self.scale, act, self.k_clip, 0

    def _extra_args(self, sl):
        """The kernels' y_scale / mid keywords for output channels sl."""
        extra = {}
        if self.real_epilogue:
            # [quantize to the mid type, (q1 - z1) * post_a + post_b] [+ residual],
            # activation, then the output's QuantizeLinear (division by y_scale)
            extra["y_scale"] = self.y_scale if self.mode == "requant" else 1.0
        if self.mid_in_kernel:
            extra["mid"] = (self.mid_dtype, self.mid_zp, self.post_a[sl], self.post_b[sl]) + (
                () if self.table is None else (self.table[sl],))
        return extra

    def _qdw_prepared(self):
        """The compiled depthwise call with this layer's epilogue (made on first use)."""
        odt, scale, act, clip, zp = self._kernel_args()
        key = ("dw", odt, zp, act, None if clip is None else tuple(clip))
        prep = self._prepared.get(key)
        if prep is None:
            prep = self._prepared[key] = kernels.prepare_qs8_dwconv(
                self.w, bias=self.bias_i32, scale=scale, out_dtype=odt, out_zero_point=zp,
                x_zero_point=self.zx, activation=act, clip=clip,
                **self._extra_args(slice(None)))
        return prep

    def _is_1x1(self, pads):
        """A 1x1 stride-1 unpadded conv: the GEMM over the input's pixels, no columns."""
        return self.kernel_shape == (1, 1) and self.strides == (1, 1) and not any(pads)

    def _im2col(self, xs, pads):
        """The k x k columns of xs [B, H, W, Cin_g] in this thread's column buffer."""
        b, h, w_, c = xs.shape
        (kh, kw), (ho, wo) = self.kernel_shape, conv_output_hw(h, w_, self.kernel_shape,
                                                               self.strides, pads, self.dilations)
        return im2col_nhwc(xs, self.kernel_shape, self.strides, pads, self.dilations,
                           pad_value=self.zx, num_threads=self.num_threads or 1,
                           out=_thread_buffer("cols", (b * ho * wo, kh * kw * c), xs.dtype))

    def _nhwc_rows(self, xs):
        """xs [B, H, W, C] as a C-contiguous array: itself, or an NHWC view of planar data
        copied into this thread's buffer (the kernels gather the conv rows from it)."""
        if xs.flags.c_contiguous:
            return xs
        planar = xs.transpose(0, 3, 1, 2)
        if not planar.flags.c_contiguous:
            return np.ascontiguousarray(xs)
        out = _thread_buffer("nhwc", xs.shape, xs.dtype)
        _f32_ops.nchw_to_nhwc_8(planar.view(np.uint8), out.view(np.uint8),
                                self.num_threads or 1)
        return out

    def _gemm(self, packs, xn, pads, out2, residual=None):
        c = xn.shape[3]
        if c != self.cin_g * self.group:
            raise ShapeError(f"QConv: input has {c} channels, weight expects "
                             f"{self.cin_g * self.group}")
        odt, scale, act, clip, zp = self._kernel_args()
        nt = self.num_threads
        for g, p in enumerate(packs):
            xs = xn if self.group == 1 else xn[..., g * self.cin_g:(g + 1) * self.cin_g]
            if self._is_1x1(pads):
                cols = np.ascontiguousarray(xs).reshape(-1, self.cin_g)
            elif self.group > 1:
                cols = self._im2col(xs, pads)
            else:
                cols = None                       # the kernels gather the rows themselves
            sl = slice(g * self.cout_g, (g + 1) * self.cout_g)
            bias = None if self.bias_i32 is None else self.bias_i32[sl]
            extra = self._extra_args(sl)
            kw = dict(bias=bias, scale=None if scale is None else scale[sl], out_dtype=odt,
                      out_zero_point=zp, x_zero_point=self.zx, activation=act, clip=clip,
                      num_threads=nt, out=out2[:, sl] if self.group > 1 else out2)
            if packs is self.packs and not self._tuned[g]:
                # timed with the layer's whole epilogue (mid step, residual): with a residual
                # the sparse kernel's transposed flush costs more than the dense tile's
                p = self._tune(g, cols, dict(kw, residual=residual, **extra),
                               None if cols is not None else (self._nhwc_rows(xs), pads))
            # the epilogue (bias with the zero-point fold, scale, output type) prepared once
            # per packed weight and kernel arguments
            key = (id(p), g, odt, zp, act, None if clip is None else tuple(clip))
            prep = self._prepared.get(key)
            if prep is None:
                prep = self._prepared[key] = kernels.prepare_qs8_matmul(
                    p, bias=kw["bias"], scale=kw["scale"], out_dtype=odt, out_zero_point=zp,
                    x_zero_point=self.zx, activation=act, clip=clip, **extra)
            if cols is None:
                prep.conv(self._nhwc_rows(xs), self.kernel_shape, self.strides, pads,
                          self.dilations, out=kw["out"], num_threads=nt, residual=residual)
            else:
                prep(cols, out=kw["out"], num_threads=nt, residual=residual)
        return out2

    def _residual_args(self, res, shape_nhwc):
        """The residual input as the kernels' (r [M, N] tokens-major, zero point, scale)."""
        b, ho, wo, n = shape_nhwc
        r = np.broadcast_to(res, shape_nhwc)
        if self.res_q:
            if r.dtype not in (np.uint8, np.int8):
                raise ShapeError(f"QConv: quantized residual must be uint8 or int8, got {r.dtype}")
            zp, sc = self.res_zp, self.res_scale
        else:
            if r.dtype != np.float32:
                r = r.astype(np.float32)
            zp, sc = 0, 1.0
        if not r.flags.c_contiguous:
            r = np.ascontiguousarray(r)
        return (r.reshape(b * ho * wo, n), zp, sc)

    def _tune(self, g, cols, kw, conv=None):
        """First run: time the chosen sparse format against the dense kernel as the layer will
        run (on the real columns, or with conv = (NHWC rows, pads) the k x k conv path, where
        the amx build's dense conv reads no im2col rows at all) and keep the faster (the
        chooser's cost model counts weight work only; on conv shapes the per-call activation
        repack over M*K can dominate). Results are bit-identical whichever format runs."""
        with self._tune_lock:
            p = self.packs[g]
            if conv is not None:
                xr, pads = conv
                ho, wo = conv_output_hw(xr.shape[1], xr.shape[2], self.kernel_shape,
                                        self.strides, pads, self.dilations)
                mk = xr.shape[0] * ho * wo * p.k
            else:
                mk = cols.shape[0] * cols.shape[1]
            if self._tuned[g] or p.format == "dense" or mk < TUNE_MIN:
                self._tuned[g] = True
                return p
            d = kernels.pack_qs8(p.unpack(), "dense")
            # prepared once per format, as the layer then runs: qs8_matmul would prepare the
            # epilogue on every call (with a mid table, a numpy table build per call: the
            # sparse side then lost on most of ResNet-50's layers)
            call = {k: kw[k] for k in ("num_threads", "out", "residual") if k in kw}
            prep = {k: v for k, v in kw.items() if k not in call}
            runs = {name: kernels.prepare_qs8_matmul(pk, **prep) for name, pk in (("sparse", p), ("dense", d))}

            def timed(rounds):
                ts = {}
                for rnd in range(rounds):
                    for name in ("sparse", "dense"):
                        t0 = time.perf_counter()
                        if conv is None:
                            runs[name](cols, **call)
                        else:
                            runs[name].conv(conv[0], self.kernel_shape, self.strides, conv[1],
                                            self.dilations, **call)
                        if rnd:
                            ts[name] = min(ts.get(name, np.inf), time.perf_counter() - t0)
                return ts
            # one untimed call of each (first-call costs: thread buffers, cold weights), then
            # the minimum of three alternating calls: with two, one preempted call on a busy
            # machine kept a 90% block4 layer on the dense kernel (1.75 vs 0.38 ms). Dense must
            # then win a second set of three too: a profile run once kept a 90% block4 1x1
            # layer of ResNet-50 (sparse 0.5 ms) on the dense kernel (1.5 ms)
            ts = timed(4)
            if ts["dense"] < 0.9 * ts["sparse"]:
                ts = timed(4)
            if ts["dense"] < 0.9 * ts["sparse"]:
                self.packs[g] = p = d
                self.kernel_name = _KERNEL_NAMES["dense"] + ("_grouped" if self.group > 1 else "")
                self.kernel_isa = kernels.kernel_builds().get("qs8_gemm", kernels.kernel_isa())
            self.tune_times = {k: round(v * 1e3, 3) for k, v in ts.items()}
            self._tuned[g] = True
            return p

    def _depthwise(self, xn, pads, ho, wo, out2, residual=None):
        """Exact integer depthwise conv in float32 (see module docstring), then the epilogue.

        NHWC with the tap view's W and C axes merged into one contiguous run of wo*C values
        (stride 1 directly, strided convs on stride-phase copies), so every multiply-add is a
        long unit-stride loop against the tap weights tiled wo times; output rows in blocks
        that keep the accumulator in L2."""
        b, h, w_, c = xn.shape
        kh, kw = self.kernel_shape
        if c != self.group:
            raise ShapeError(f"QConv: input has {c} channels, depthwise weight expects {self.group}")
        if self.qdw:
            return self._qdw_prepared()(self._nhwc_rows(xn), self.strides, pads, self.dilations,
                                        out=out2, num_threads=self.num_threads,
                                        residual=residual)
        ft = np.float32 if kh * kw <= 513 else np.float64
        n = self.cout
        if self._dw_f32_exact and n == c:
            # compiled: NHWC rows straight from the int8 input, every product and partial sum
            # an integer below 2**24, so the float32 sums are the exact integer sums
            acc = np.empty((b, ho, wo, n), np.float32)
            xc = np.ascontiguousarray(xn)
            _f32_fused.dw_conv_nhwc_q8(xc.view(np.uint8), xc.dtype == np.int8, float(self.zx),
                                       self.w_taps, kh, kw, self.strides[0], self.strides[1],
                                       self.dilations[0], self.dilations[1], pads[0], pads[1],
                                       acc, self.num_threads or 1)
            return self._dw_epilogue(acc.reshape(b, ho, wo * n), ft, out2)
        xp = np.zeros((b, h + pads[0] + pads[2], w_ + pads[1] + pads[3], c), ft)
        np.subtract(xn, ft(self.zx), out=xp[:, pads[0]:pads[0] + h, pads[1]:pads[1] + w_], dtype=ft)
        if n != c:
            xp = np.repeat(xp, n // c, axis=3)
        sh, sw = self.strides
        dh, dw = self.dilations
        if (sh, sw) == (1, 1):
            phases = {(0, 0): xp}
        else:
            phases = {(a, bb): np.ascontiguousarray(xp[:, a::sh, bb::sw])
                      for a in range(sh) for bb in range(sw)}
        key = (wo, ft)
        wt = self._dw_tiles.get(key)
        if wt is None:
            wt = self._dw_tiles[key] = np.ascontiguousarray(
                np.tile(self.w_taps.astype(ft), (1, wo)))            # [taps, wo * n]
        acc = np.empty((b, ho, wo * n), ft)
        tmp = np.empty((b, ho, wo * n), ft)
        rb = max(1, (256 << 10) // (b * wo * n * acc.itemsize))
        for r0 in range(0, ho, rb):
            r1 = min(ho, r0 + rb)
            a_, t_ = acc[:, r0:r1], tmp[:, r0:r1]
            for i in range(kh):
                for j in range(kw):
                    y0, x0 = i * dh, j * dw
                    ph = phases[(y0 % sh, x0 % sw)]
                    y0, x0 = y0 // sh + r0, x0 // sw
                    v = ph[:, y0:y0 + r1 - r0, x0:x0 + wo].reshape(b, r1 - r0, wo * n)
                    if i == 0 and j == 0:
                        np.multiply(v, wt[0], out=a_)
                    else:
                        np.multiply(v, wt[i * kw + j], out=t_)
                        a_ += t_
        return self._dw_epilogue(acc, ft, out2)

    def _dw_epilogue(self, acc, ft, out2):
        """bias, scale, activation and output of the depthwise accumulators [b, ho, wo*n]."""
        n = self.cout
        acc = acc.reshape(-1, n)
        odt, scale, act, clip, zp = self._kernel_args()
        if odt != np.int32 and ft == np.float32 and self._dw_f32_exact:
            # |acc| + |bias| < 2**24: the float32 sum is the exact int32 sum, and its conversion
            # is the kernel's float32(acc + bias)
            f = acc
            if self.bias_i32 is not None:
                f += self.bias_f32
            f *= scale
        else:
            ai = acc.astype(np.int64)
            if self.bias_i32 is not None:
                ai += self.bias_i32
            ai = ai.astype(np.int32)
            if odt == np.int32:
                out2[...] = ai
                return out2
            f = ai.astype(np.float32)
            f *= scale
        if act == "relu":
            np.maximum(f, np.float32(0), out=f)
        elif act == "clip":
            np.minimum(np.maximum(f, np.float32(clip[0]), out=f), np.float32(clip[1]), out=f)
        if np.dtype(odt) == np.float32:
            out2[...] = f
        else:
            info = np.iinfo(odt)
            out2[...] = np.clip(np.rint(f) + zp, info.min, info.max)
        return out2

    def _finish(self, f, res, shape_nhwc, out2):
        """numpy tail after a float kernel result f [M, Cout]: float bias, residual, activation,
        quantize into out2."""
        if self.float_bias is not None:
            f += self.float_bias
        if self.mid:
            if self.float_bias is not None:       # the kernel wrote float: quantize to mid here
                info = np.iinfo(self.mid_dtype)
                f = np.clip(np.rint(f / np.float32(self.mid_scale)) + self.mid_zp,
                            info.min, info.max)
            if self.table is not None:
                q1 = f.astype(np.int64) - np.iinfo(self.mid_dtype).min
                t = self.table[np.arange(self.cout)[None, :], q1]
                out2[...] = t.view(np.int8) if self.y_dtype == np.int8 else t
                return out2
            # (q1 - z1) * a + b as q1 * a + (b - z1 * a): two passes, the cast fused in the first
            g = np.empty(f.shape, np.float32)
            np.multiply(f, self.post_a, out=g, dtype=np.float32)
            g += self.post_b0
            f = g
        if res is not None:
            b, ho, wo, n = shape_nhwc
            if self.res_layout == "NHWC":
                r = np.broadcast_to(res, shape_nhwc)
            else:
                r = np.broadcast_to(res, (b, n, ho, wo)).transpose(0, 2, 3, 1)
            f4 = f.reshape(shape_nhwc)
            if self.res_q:
                rf = np.multiply(r, np.float32(self.res_scale), dtype=np.float32)
                rf -= np.float32(self.res_zp * self.res_scale)
                f4 += rf
            else:
                f4 += r
        if self.act_implied:
            pass        # the final quantization's saturation is the activation
        elif self.activation == "relu":
            np.maximum(f, np.float32(0), out=f)
        elif self.activation == "clip":
            np.minimum(np.maximum(f, np.float32(self.clip[0]), out=f), np.float32(self.clip[1]),
                       out=f)
        if self.mode != "requant":
            if out2 is not f:
                out2[...] = f
            return out2
        ff = np.ascontiguousarray(f).reshape(-1)
        o = out2.reshape(-1)
        if self.y_dtype == np.uint8:
            _f32_ops.quantize_u8(ff, o, np.float32(self.y_scale), self.y_zp, self.num_threads or 1)
        else:
            _f32_ops.quantize_s8(ff, o, np.float32(self.y_scale), self.y_zp, self.num_threads or 1)
        return out2

    # -- run ------------------------------------------------------------------------------------
    def _run(self, packs, inputs, outs):
        x = inputs[0]
        if x.dtype not in (np.uint8, np.int8):
            raise ShapeError(f"QConv: input must be uint8 or int8, got {x.dtype}")
        xn = self._nhwc(x)
        b, h, w_, c = xn.shape
        pads = _resolve_pads(self.auto_pad, self.pads, h, w_, self.kernel_shape, self.strides,
                             self.dilations)
        ho, wo = conv_output_hw(h, w_, self.kernel_shape, self.strides, pads, self.dilations)
        if ho <= 0 or wo <= 0:
            raise ShapeError(f"QConv: output would be empty ({ho}x{wo}) for input {list(x.shape)}")
        n, m = self.cout, b * ho * wo
        self.flops = 2 * m * n * self.cin_g * self.kernel_shape[0] * self.kernel_shape[1]
        oshape = (b, ho, wo, n) if self.y_layout == "NHWC" else (b, n, ho, wo)
        o = outs[0] if outs is not None and outs[0] is not None else None
        if o is None or o.shape != oshape or o.dtype != self.out_dtype or not o.flags.c_contiguous:
            o = np.empty(oshape, self.out_dtype)
        direct = self.y_layout == "NHWC" and self.kernel_final
        kdt = self._kernel_args()[0]
        out2 = o.reshape(m, n) if direct else np.empty((m, n), kdt)
        residual = None
        if self.res_in_kernel and self.kernel_final and len(inputs) > 2 \
                and inputs[2] is not None:
            residual = self._residual_args(inputs[2], (b, ho, wo, n))
        if self.depthwise:
            self._depthwise(xn, pads, ho, wo, out2, residual)
        else:
            self._gemm(packs, xn, pads, out2, residual)
        if not self.kernel_final:
            res = inputs[2] if self.has_res and len(inputs) > 2 else None
            if self.y_layout == "NHWC":
                dst = o.reshape(m, n)
            elif self.mode != "requant" and out2.dtype == self.out_dtype:
                dst = out2
            else:
                dst = np.empty((m, n), self.out_dtype)
            out2 = self._finish(out2, res, (b, ho, wo, n), dst)
        if self.y_layout == "NCHW":
            np.copyto(o, out2.reshape(b, ho, wo, n).transpose(0, 3, 1, 2))
        return [o]

    def run(self, inputs, outs):
        return self._run(self.packs, inputs, outs)

    def bind(self, inputs, outs):
        """engine._run_plan's bound call for a conv the kernel finishes (group 1 after its
        first run -- tuned, epilogue prepared -- or a compiled depthwise one): the prepared
        kernel on the same input / residual / output objects; a k x k group-1 conv's kernel
        gathers its im2col rows from the NHWC input itself (PreparedQS8.conv). An NCHW input
        is copied to channels-last and an NCHW output is written back to planes, both through
        scratch arrays of this binding (a plan instance runs on one thread at a time)."""
        x = inputs[0]
        o = outs[0] if outs else None
        if not (self.qdw or (self.group == 1 and not self.depthwise and self._tuned[0])) \
                or o is None or not self.kernel_final \
                or not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.int8) \
                or x.ndim != 4 or not o.flags.c_contiguous or o.dtype != self.out_dtype \
                or np.may_share_memory(x, o):
            return None
        xn = self._nhwc(x)
        b, h, w_, c = xn.shape
        if c != self.cin_g * self.group:
            return None
        pads = _resolve_pads(self.auto_pad, self.pads, h, w_, self.kernel_shape, self.strides,
                             self.dilations)
        ho, wo = conv_output_hw(h, w_, self.kernel_shape, self.strides, pads, self.dilations)
        n, m = self.cout, b * ho * wo
        nhwc_out = self.y_layout == "NHWC"
        if ho <= 0 or wo <= 0 or o.shape != ((b, ho, wo, n) if nhwc_out else (b, n, ho, wo)):
            return None
        residual = None
        if self.res_in_kernel and len(inputs) > 2 and inputs[2] is not None:
            residual = self._residual_args(inputs[2], (b, ho, wo, n))
            if not np.may_share_memory(residual[0], inputs[2]):
                return None                    # a converted copy: its values would go stale
        nt = self.num_threads or 1
        kxk = not self.qdw and not self._is_1x1(pads)
        pre = post = None
        xplanar = None
        if not xn.flags.c_contiguous:
            if self.x_layout != "NCHW" or not x.flags.c_contiguous:
                return None
            if not kxk and not self.qdw:   # a 1x1 conv: the sparse kernel packs from the planes
                xplanar = x.reshape(b, c, h * w_)
            xs = np.empty((b, h, w_, c), x.dtype)
            pre = (_f32_ops.nchw_to_nhwc_8, (x.view(np.uint8), xs.view(np.uint8), nt))
            xn = xs
        planar = None
        if nhwc_out:
            out2 = o.reshape(m, n)
        else:
            # the sparse kernel writes the NCHW output's planes itself (PreparedQS8's planar
            # output); otherwise channels-last scratch and a transpose after the kernel
            planar = o.reshape(b, n, ho * wo)
            out2 = np.empty((m, n), self.out_dtype)
            v = np.uint8 if out2.itemsize == 1 else np.float32     # int32: its 4 bytes
            post = (_f32_ops.nhwc_to_nchw, (out2.view(v).reshape(b, ho * wo, n),
                                            o.view(v).reshape(b, n, ho * wo), nt))
        if self.qdw:
            first = self._qdw_prepared().bound(xn, self.strides, pads, self.dilations, out2,
                                               self.num_threads, residual)
        else:
            odt, scale, act, clip, zp = self._kernel_args()
            prep = self._prepared.get((id(self.packs[0]), 0, odt, zp, act,
                                       None if clip is None else tuple(clip)))
            if prep is None:
                return None
            def bind(src, dst):
                if kxk:      # the kernels gather the im2col rows from xn themselves
                    return prep.conv_bound(xn, self.kernel_shape, self.strides, pads,
                                           self.dilations, dst, self.num_threads, residual)
                return prep.bound(src, dst, self.num_threads, residual)
            # planes in / out where the kernel takes them (sparse formats), then the copies;
            # xn's rows are the 1x1 conv's input (a k x k conv gathers from xn itself)
            rows = xn if kxk else xn.reshape(m, c)
            first = None
            for src, dst in ((xplanar, planar), (xplanar, out2), (rows, planar), (rows, out2)):
                if src is None or dst is None:
                    continue
                first = bind(src, dst)
                if first is not None:
                    if src is xplanar:
                        pre = None
                    if dst is planar:
                        post = None
                    break
        if first is None:
            return None
        if not (pre or post):
            return first
        fn, args = first
        f0, a0 = pre if pre else (_nothing, ())
        f1, a1 = post if post else (_nothing, ())

        def call():
            f0(*a0)
            fn(*args)
            f1(*a1)
        return call, ()

    def run_dense(self, inputs, outs):
        """The same layer on the dense int8 GEMM (the profiler's baseline)."""
        if self.depthwise:
            return self.run(inputs, outs)
        if self._dense is None:
            self._dense = [p if p.format == "dense" else kernels.pack_qs8(p.unpack(), "dense")
                           for p in self.packs]
        return self._run(self._dense, inputs, outs)


@register("QMaxPool", since=1, domain="com.deepsparse_cy")
class QMaxPool(Op):
    """MaxPool on quantized (u8 / s8) activations, NCHW or NHWC in and out (x_layout /
    y_layout, as QConv). graph/fusion_conv.py makes it from QConv(float) -> MaxPool ->
    QuantizeLinear: quantization is monotone, so the max of the quantized values is the
    quantization of the max, bit for bit, and the QConv writes the int8 values directly.
    Attributes: MaxPool's kernel_shape, strides, pads, dilations, auto_pad, ceil_mode (2-D)."""

    kernel_name = "maxpool_nhwc_q8"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.kw = pool_geometry_attrs(a)
        self.x_layout = a.get("x_layout", "NCHW")
        self.y_layout = a.get("y_layout", "NCHW")
        self._geoms = {}
        self.num_threads = int(ctx.num_threads or 1)

    def _geom(self, b, h, w, c):
        """The pool's geometry (output size, padding) on an input of b images of h x w x c,
        worked out once per shape."""
        g = self._geoms.get((b, h, w, c))
        if g is None:
            g = self._geoms[(b, h, w, c)] = _Geom(np.empty((b, c, h, w), np.uint8), **self.kw)
        return g

    def _planar(self, x, o):
        """(fn, args) pooling NCHW x into NCHW o (C-contiguous, of the output's shape), plane
        by plane (no layout copies), or None."""
        if self.x_layout != "NCHW" or self.y_layout != "NCHW" or x.ndim != 4 \
                or x.dtype not in (np.uint8, np.int8) or not x.flags.c_contiguous \
                or o is None or o.dtype != x.dtype or not o.flags.c_contiguous \
                or np.may_share_memory(x, o):
            return None
        b, c, h, w = x.shape
        g = self._geom(b, h, w, c)
        ho, wo = g.O
        if o.shape != (b, c, ho, wo):
            return None
        (kh, kw), (sh, sw), (dh, dw) = g.k, g.s, g.d
        return _f32_ops.maxpool_planes_8, (
            x.view(np.uint8).reshape(b * c, h, w), x.dtype == np.int8, kh, kw, sh, sw, dh, dw,
            g.pb[0], g.pb[1], o.view(np.uint8).reshape(b * c, ho, wo), self.num_threads)

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the planar pool on these arrays."""
        return self._planar(inputs[0], outs[0] if outs else None)

    def run(self, inputs, outs):
        x = inputs[0]
        if x.ndim != 4 or x.dtype not in (np.uint8, np.int8):
            raise ShapeError(f"QMaxPool: input must be 4-D uint8 / int8, got {x.dtype} "
                             f"{list(x.shape)}")
        if self.x_layout == "NCHW" and self.y_layout == "NCHW":
            x = np.ascontiguousarray(x)
            o = outs[0] if outs else None
            call = self._planar(x, o)
            if call is None:
                b, c, h, w = x.shape
                o = np.empty((b, c) + tuple(self._geom(b, h, w, c).O), x.dtype)
                call = self._planar(x, o)
            call[0](*call[1])
            return [o]
        xn = x if self.x_layout == "NHWC" else x.transpose(0, 2, 3, 1)
        b, h, w, c = xn.shape
        g = self._geom(b, h, w, c)
        ho, wo = g.O
        oshape = (b, ho, wo, c) if self.y_layout == "NHWC" else (b, c, ho, wo)
        o = outs[0] if outs else None
        if o is None or o.shape != oshape or o.dtype != x.dtype or not o.flags.c_contiguous:
            o = np.empty(oshape, x.dtype)
        yn = o if self.y_layout == "NHWC" else np.empty((b, ho, wo, c), x.dtype)
        (kh, kw), (sh, sw), (dh, dw) = g.k, g.s, g.d
        # compiled: taps outside the input skipped, which is padding with the type's lowest
        # value (it never wins; a window with no tap inside gives that value)
        _f32_ops.maxpool_nhwc_8(np.ascontiguousarray(xn).view(np.uint8), x.dtype == np.int8,
                                kh, kw, sh, sw, dh, dw, g.pb[0], g.pb[1], yn.view(np.uint8),
                                self.num_threads)
        if self.y_layout != "NHWC":
            np.copyto(o, yn.transpose(0, 3, 1, 2))
        return [o]
