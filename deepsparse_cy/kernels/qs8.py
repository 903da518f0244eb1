"""INT8 weights: packing (dense / block4 / unstructured), the per-layer format chooser, and
qs8_matmul, which runs the dispatched dense or sparse kernel with the fused epilogue.

Packing is ISA-independent numpy (done once per layer at compile time); see the package
docstring for the API and the layouts.
"""
import os

import numpy as np

from . import load
from ._mem import aligned
from ._f32_fused import gelu_q8_table

GEMM_NR = 16  # output channels per dense micro-tile (csrc/dscy_kernels.h DSCY_GEMM_NR)
FORMATS = ("dense", "block4", "unstructured")

# Cost model of the chooser, in "dense vpmaddwd" units per 8 tokens: time ~ madds / efficiency
# + per-row cost (epilogue and transposed stores of the sparse kernels). Efficiencies relative to
# the dense kernel, from benchmarks/bench_qs8_spmm.py on BERT-base shapes (AVX2, Zen 3).
COST_EFF = {"dense": 1.0, "block4": 0.55, "unstructured": 0.55}
COST_ROW = 6.0
# The avx512_vnni build, in dense vpdpbusd units (16 channels x 4 k for one token): a sparse
# block (a quad, or a pair in its zero-padded slot: one vpdpbusd per 16 tokens either way) costs
# about two, an output row about 12 (the epilogue and transposed stores per 32 tokens), from
# 2-thread timings of 90% block4 / unstructured / dense 768x768, 768x3072, 3072x768 (M = 128) and
# 64 -> 256 (M = 3136) layers on an AVX-512 VNNI Xeon. Since a nonzero pair lies in a nonzero
# quad, block4 never needs more blocks than unstructured there: unstructured weights pack as
# block4 (1.23-1.28x faster than as pairs on BERT-base's shapes at 90%).
COST_VNNI_BLOCK, COST_VNNI_ROW = 2.0, 12.0
# The amx build of the dense GEMM: its tiles do the multiplies COST_AMX_GAIN times faster than
# the vpdpbusd GEMM, and its epilogue costs what the sparse kernel's does per output row (16
# tokens through the same flush: COST_VNNI_ROW). Fitted to 90% block4 against amx dense, both
# threads, on BERT-base's (M = 128) and ResNet-50's layer shapes (M = 3136 ... 49) on the AMX
# Xeon: sparse / dense 0.54-0.68 at M = 128 (gain 2.6-3.1 with the row cost), 0.65-0.88 on the
# conv shapes; without the row term the model sent ResNet-50's K = 64 layers to the dense
# GEMM, where they ran 1.25x slower. Break-even near 18% quad occupancy (~82% block4).
COST_AMX_GAIN = 2.8

_OUT_CODES = {np.dtype(np.int32): 0, np.dtype(np.float32): 1, np.dtype(np.uint8): 2,
              np.dtype(np.int8): 3}
_ACT_CODES = {None: 0, "none": 0, "relu": 1, "clip": 2, "gelu": 3}


class PackedQS8:
    """A packed s8 weight matrix [N, K]. Attributes: format, n, k, kp (padded K), nnz, nblocks,
    nbytes (all packed arrays), rowsum (int64 [N], sum_k w, for zero-point folding), costs
    (chooser estimates per format, when packed with format='auto'), stats (pattern counts)."""

    def __init__(self, fmt, n, k, kp, arrays, nnz, nblocks, rowsum, stats):
        self.format, self.n, self.k, self.kp = fmt, n, k, kp
        self.arrays, self.nnz, self.nblocks = arrays, nnz, nblocks
        self.rowsum, self.stats, self.costs = rowsum, stats, None

    @property
    def nbytes(self):
        return int(sum(a.nbytes for a in self.arrays.values()))

    @property
    def bytes_per_nnz(self):
        """Packed bytes per nonzero weight, without the per-row table (row_ptr)."""
        b = self.nbytes - self.arrays["row_ptr"].nbytes if "row_ptr" in self.arrays else self.nbytes
        return b / max(self.nnz, 1)

    @property
    def sparsity(self):
        return 1.0 - self.nnz / max(self.n * self.k, 1)

    def unpack(self):
        """The [N, K] int8 matrix back (tests, debugging)."""
        n, k, a = self.n, self.k, self.arrays
        if self.format == "dense":
            npan = a["wp"].shape[0]
            w = a["wp"].transpose(0, 2, 1, 3).reshape(npan * GEMM_NR, self.kp)
            return w[:n, :k].astype(np.int8)
        bw = 4 if self.format == "block4" else 2
        w = np.zeros((n, self.kp // bw, bw), np.int8)
        rows = np.repeat(np.arange(n), np.diff(a["row_ptr"]))
        w[rows, a["idx"].astype(np.int64)] = a["vals"].reshape(-1, bw)
        return w.reshape(n, self.kp)[:, :k]

    def row_order(self):
        """The sparse kernel's row order (row_order(row_ptr)), computed on first use and kept
        with the packed weight (a PreparedQS8 per call, as qs8_matmul makes, would otherwise
        sort the rows on every call)."""
        o = getattr(self, "_row_order", None)
        if o is None:
            o = self._row_order = row_order(self.arrays["row_ptr"])
        return o

    def quads(self, multiple=4):
        """The dense weights as s8 k-quads [Np/16][Kq/4][16][4] (Kq = K rounded up to a multiple
        of `multiple`: 4 for the avx512_vnni GEMM, 64 for the amx one); built from the int16
        pairs on first use and kept (counted in nbytes from then on; one array when both
        roundings agree)."""
        kq = -(-self.kp // multiple) * multiple
        key = "wq" if kq == -(-self.kp // 4) * 4 else f"wq{multiple}"
        wq = self.arrays.get(key)
        if wq is None:
            wp = self.arrays["wp"]
            npan, kp = wp.shape[0], self.kp
            w = np.zeros((npan * GEMM_NR, kq), np.int8)
            w[:, :kp] = wp.transpose(0, 2, 1, 3).reshape(npan * GEMM_NR, kp)
            wq = aligned(w.reshape(npan, GEMM_NR, kq // 4, 4).transpose(0, 2, 1, 3))
            self.arrays[key] = wq
        return wq

    def direct(self, kh, kw, c):
        """(wd, nch) for the amx build's gemm_conv_direct on a dense weight whose K is a kh x kw
        x c window (im2col order ky, kx, c): per kernel row ky and 64-byte chunk j of its kw * c
        window, [kh][nch][Np/16 panels][16 quads][16 channels][4 bytes], the AMX weight tile of
        that chunk and panel; bytes past the window (and channels past N) zero. Built on first
        use and kept like quads() (counted in nbytes), so every PreparedQS8 of this weight
        shares it."""
        key = f"wd{kh}x{kw}x{c}"
        win = kw * c
        nch = -(-win // 64)
        wd = self.arrays.get(key)
        if wd is None:
            np_ = self.arrays["wp"].shape[0] * GEMM_NR
            w3 = np.zeros((np_, kh, nch * 64), np.int8)
            w3[:self.n, :, :win] = self.unpack().reshape(self.n, kh, win)
            wd = self.arrays[key] = aligned(
                w3.reshape(np_ // 16, 16, kh, nch, 16, 4).transpose(2, 3, 0, 4, 1, 5))
        return wd, nch

    def __repr__(self):
        return (f"PackedQS8({self.format}, n={self.n}, k={self.k}, nnz={self.nnz}, "
                f"sparsity={self.sparsity:.3f}, nbytes={self.nbytes})")


def _check_weight(w):
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype != np.int8:
        raise ValueError(f"weight must be int8 [N, K], got {w.dtype} {w.shape}")
    return w


def weight_pattern_stats(w):
    """Occupancy counts the chooser uses: nnz, nonzero 1x4 quads along K, nonzero 1x2 pairs."""
    w = _check_weight(w)
    n, k = w.shape
    nz = w != 0
    k4, k2 = -(-k // 4) * 4, -(-k // 2) * 2
    q = np.zeros((n, k4), bool)
    q[:, :k] = nz
    quads = int(q.reshape(n, k4 // 4, 4).any(2).sum())
    pairs = int(q[:, :k2].reshape(n, k2 // 2, 2).any(2).sum())
    nnz = int(nz.sum())
    return {"n": n, "k": k, "nnz": nnz, "quads": quads, "pairs": pairs,
            "quad_occupancy": nnz / max(4 * quads, 1), "pair_occupancy": nnz / max(2 * pairs, 1)}


def _cost_isa(isa):
    """(sparse build, dense build) whose costs the chooser weighs: those dispatch runs, or
    those of level `isa`."""
    from . import _build_for, kernel_builds
    if isa is None:
        b = kernel_builds()
        return b.get("qs8_spmm"), b.get("qs8_gemm")
    return _build_for("qs8_spmm", isa), _build_for("qs8_gemm", isa)


def format_costs(stats, isa=None):
    """Estimated cost per format for the kernels of `isa` (default: the dispatched build): dense
    vpmaddwd units per 8 tokens on avx2 / generic, dense vpdpbusd units on avx512_vnni (and on
    amx, whose dense GEMM costs 1 / COST_AMX_GAIN of those)."""
    n, k = stats["n"], stats["k"]
    np_ = -(-n // GEMM_NR) * GEMM_NR
    sparse_isa, dense_isa = _cost_isa(isa)
    if sparse_isa == "avx512_vnni":
        costs = {"dense": float(np_ * (-(-k // 4)))}
        if dense_isa == "amx":
            costs["dense"] = costs["dense"] / COST_AMX_GAIN + n * COST_VNNI_ROW
        if -(-k // 4) <= 65536:
            costs["block4"] = COST_VNNI_BLOCK * stats["quads"] + n * COST_VNNI_ROW
        if -(-k // 2) <= 65536:
            costs["unstructured"] = COST_VNNI_BLOCK * stats["pairs"] + n * COST_VNNI_ROW
        return costs
    costs = {"dense": np_ * (-(-k // 2)) / COST_EFF["dense"]}
    if -(-k // 4) <= 65536:
        costs["block4"] = 2 * stats["quads"] / COST_EFF["block4"] + n * COST_ROW
    if -(-k // 2) <= 65536:
        costs["unstructured"] = stats["pairs"] / COST_EFF["unstructured"] + n * COST_ROW
    return costs


def _pick(costs):
    """The cheapest format; block4 over unstructured unless unstructured is 10% cheaper: on a
    4-block pruned weight where quantization rounded a few kept weights to zero, the two cost
    the same to a few pairs, and the block4 kernel ran 1.1-1.46x faster on BERT-base's layers
    (and packs 1.5 bytes per nonzero against ~2 for the pairs)."""
    if "block4" in costs and "unstructured" in costs \
            and costs["block4"] <= 1.1 * costs["unstructured"]:
        costs = {k: v for k, v in costs.items() if k != "unstructured"}
    return min(costs, key=costs.get)


def choose_format(w, isa=None):
    """'dense' | 'block4' | 'unstructured' for weight w [N, K] int8 from its measured pattern,
    for the kernels of `isa` (default: the dispatched build)."""
    return _pick(format_costs(weight_pattern_stats(w), isa))


def pack_qs8(w, format="auto", isa=None):
    """Pack an int8 weight [N, K] (output channels x input features) once, at compile time
    ('auto': the format choose_format picks for the kernels of `isa`, default the dispatched
    build)."""
    w = _check_weight(w)
    n, k = w.shape
    stats = weight_pattern_stats(w)
    costs = None
    if format == "auto":
        costs = format_costs(stats, isa)
        format = _pick(costs)
    if format not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    rowsum = w.sum(axis=1, dtype=np.int64)
    if format == "dense":
        kp, np_ = -(-k // 2) * 2, -(-n // GEMM_NR) * GEMM_NR
        w16 = np.zeros((np_, kp), np.int16)
        w16[:n, :k] = w
        # [panel][k-pair][16 channels][2]: one k-pair of 16 channels is two ymm of int16 pairs
        wp = aligned(w16.reshape(np_ // GEMM_NR, GEMM_NR, kp // 2, 2).transpose(0, 2, 1, 3))
        p = PackedQS8("dense", n, k, kp, {"wp": wp}, stats["nnz"], np_ * kp // 2, rowsum, stats)
    else:
        bw = 4 if format == "block4" else 2
        kp = -(-k // bw) * bw
        if kp // bw > 65536:
            raise ValueError(f"K={k} too large for 16-bit {format} offsets; use dense")
        wb = np.zeros((n, kp), np.int8)
        wb[:, :k] = w
        wb = wb.reshape(n, kp // bw, bw)
        mask = (wb != 0).any(axis=2)
        rows, cols = np.nonzero(mask)          # row-major: rows ascending, K ascending within
        row_ptr = np.zeros(n + 1, np.int32)
        np.cumsum(mask.sum(axis=1), out=row_ptr[1:])
        arrays = {"row_ptr": row_ptr, "idx": cols.astype(np.uint16),
                  "vals": np.ascontiguousarray(wb[rows, cols]).reshape(-1)}
        p = PackedQS8(format, n, k, kp, arrays, stats["nnz"], len(rows), rowsum, stats)
    p.costs = costs
    return p


ROW_CHUNK = 64     # dscy_kernels.h DSCY_ROW_CHUNK


def row_order(row_ptr):
    """The sparse kernel's row order: within each aligned chunk of ROW_CHUNK rows, the rows by
    ascending block count (stable), -1 past N (int32, N rounded up to ROW_CHUNK). The row loop's
    trip count then changes rarely between consecutive rows; with the natural order's random
    counts about one branch a row was mispredicted (768x3072, ~20 blocks a row: 1.34x slower
    than the same blocks sorted). Each chunk's rows are staged and stored in natural order."""
    row_ptr = np.asarray(row_ptr)
    n = row_ptr.shape[0] - 1
    rows = np.arange(n)
    order = np.full(-(-n // ROW_CHUNK) * ROW_CHUNK, -1, np.int32)
    order[:n] = np.lexsort((np.diff(row_ptr), rows // ROW_CHUNK))
    return order


def _check_zero_point(zp, dt, what):
    info = np.iinfo(dt)
    if not info.min <= int(zp) <= info.max:
        raise ValueError(f"{what} zero point {zp} outside {dt}")


def _mid_args(n, mid):
    """mid = (dtype, zero_point, scale (scalar or [n]), bias ([n] or None) [, table]) -> the
    kernels' (code, zp, float32 scale [n], float32 bias [n] [, uint8 table [n * 256 + 4]]).
    table: uint8 [n, 256] or [256] (every channel), the output byte of each mid value q at index
    q - (type min) (an int8 output as its bytes); it replaces the rest of the epilogue."""
    if mid is None:
        return None
    if len(mid) not in (4, 5):
        raise ValueError("mid must be (dtype, zero_point, scale, bias[, table])")
    dt, zp, sc, b = mid[:4]
    dt = np.dtype(dt)
    if dt not in (_U8, _S8):
        raise ValueError(f"mid dtype must be uint8 or int8, got {dt}")
    _check_zero_point(zp, dt, "mid")
    sc = np.asarray(sc, np.float32).reshape(-1)
    sc = np.ascontiguousarray(np.broadcast_to(sc, (n,)) if sc.size == 1 else sc)
    if sc.shape != (n,) or not (np.isfinite(sc).all() and (sc > 0).all()):
        raise ValueError(f"mid scale must be positive finite, a scalar or {n} values")
    b = np.zeros(n, np.float32) if b is None else np.ascontiguousarray(b, np.float32).reshape(-1)
    if b.shape != (n,):
        raise ValueError(f"mid bias must have {n} elements, got {b.shape}")
    if len(mid) == 5 and mid[4] is not None:
        t = np.asarray(mid[4])
        if t.dtype != np.uint8 or t.shape not in ((256,), (n, 256)):
            raise ValueError(f"mid table must be uint8 [256] or [{n}, 256], got {t.dtype} {t.shape}")
        lut = np.zeros(n * 256 + 4, np.uint8)
        lut[:n * 256] = np.broadcast_to(t, (n, 256)).reshape(-1)
        return (_OUT_CODES[dt], int(zp), sc, b) + _table_entry(lut, n)
    return (_OUT_CODES[dt], int(zp), sc, b)


def _table_entry(lut, n):
    """The kernels' (table, shared) tail of a mid tuple: lut uint8 [n * 256 + 4]; shared when
    every channel's row is the same (a per-tensor mid step before the activation, as
    quantize_static's activations are), which the dense tile epilogue looks up by byte permutes
    of one table instead of a gather per 16 outputs (dscy_epilogue.lut_shared)."""
    rows = lut[:n * 256].reshape(n, 256)
    return (lut, bool(n > 0 and (rows == rows[:1]).all()))


def mid_q8_table(mid, act, lo, hi, y_scale, out_dtype, out_zero_point):
    """The table epilogue (dscy_kernels.h, lut) of a mid step followed by no activation, ReLU or
    Clip [lo, hi] (act code 0 / 1 / 2) and an 8-bit output: for channel n and each mid value q
    the output of f = (q - mid zero point) * scale[n] + bias[n], the activation, f / y_scale
    (y_scale != 1), rounded half to even, + out_zero_point, saturated: _epilogue_reference's
    steps from the mid value on. mid: _mid_args's (code, zp, scale [n], bias [n]).
    Returns uint8 [n * 256 + 4] (an int8 output as its bytes)."""
    if act not in (0, 1, 2):
        raise ValueError("mid_q8_table: activation must be none, relu or clip")
    code, mzp, msc, mb = mid[:4]
    mt = np.dtype(_U8) if code == _OUT_CODES[_U8] else np.dtype(_S8)
    q1 = np.arange(256, dtype=np.int64)[:, None] + np.iinfo(mt).min     # [256, 1]: every value
    f = _mid_dequant(q1, mzp, msc, mb)                                  # [256, n]
    v = _after_mid(f, None, (None, "relu", "clip")[act], (lo, hi), y_scale, out_dtype,
                   out_zero_point)
    info = np.iinfo(np.dtype(out_dtype))
    out = np.zeros(f.shape[1] * 256 + 4, np.uint8)
    out[:f.shape[1] * 256] = v.astype(np.int64).T.reshape(-1).astype(np.int8 if info.min < 0 else np.uint8).view(np.uint8)
    return out


def _table_reference(q1, mdt, table, out_dtype):
    """The table epilogue on mid values q1 [M, N] (int): table[n, q1 - type min] as out_dtype."""
    t = np.broadcast_to(np.asarray(table, np.uint8), (q1.shape[1], 256))
    idx = (q1 - np.iinfo(np.dtype(mdt)).min).astype(np.int64)
    b = t[np.arange(q1.shape[1])[None, :], idx]
    return b.view(np.int8) if np.dtype(out_dtype) == np.int8 else b


def _res_args(residual, m, n, out):
    """residual = (r [M, N] float32 / uint8 / int8, zero_point, scale) -> the kernels'
    (array with contiguous rows, type code, zero point, scale); copied when it overlaps out."""
    r, zp, sc = residual
    r = np.asarray(r)
    if r.shape != (m, n) or r.dtype not in (np.float32, np.uint8, np.int8):
        raise ValueError(f"residual must be float32 / uint8 / int8 [{m}, {n}], got "
                         f"{r.dtype} {r.shape}")
    if r.strides[1] != r.itemsize or r.strides[0] < 0 or r.strides[0] % r.itemsize:
        r = np.ascontiguousarray(r)
    if np.may_share_memory(r, out):
        r = r.copy()
    sc = float(np.float32(sc))
    if not np.isfinite(sc):
        raise ValueError(f"residual scale must be finite, got {residual[2]!r}")
    if r.dtype == np.float32:
        return (r, _OUT_CODES[r.dtype], 0, 1.0)
    _check_zero_point(zp, r.dtype, "residual")
    return (r, _OUT_CODES[r.dtype], int(zp), sc)


def _epilogue_args(n, bias, scale, out_dtype, x_zero_point, rowsum, activation, clip, y_scale):
    out_dtype = np.dtype(out_dtype)
    if out_dtype not in _OUT_CODES:
        raise ValueError(f"out_dtype must be float32, uint8, int8 or int32, got {out_dtype}")
    b = np.zeros(n, np.int64) if bias is None else np.asarray(bias).astype(np.int64).reshape(-1)
    if b.shape != (n,):
        raise ValueError(f"bias must have {n} elements, got {b.shape}")
    if x_zero_point:
        b = b - int(x_zero_point) * rowsum     # sum (x - zx) w = sum x w - zx * sum w
    if b.size and (b.min() < -2**31 or b.max() >= 2**31):
        raise ValueError("bias with zero-point compensation does not fit int32")
    b = np.ascontiguousarray(b, np.int32)
    if out_dtype == np.int32:
        s = np.ones(n, np.float32)
    else:
        if scale is None:
            raise ValueError(f"scale is required for {out_dtype} output")
        s = np.asarray(scale, np.float32).reshape(-1)
        s = np.ascontiguousarray(np.broadcast_to(s, (n,)) if s.size == 1 else s, np.float32)
        if s.shape != (n,):
            raise ValueError(f"scale must be a scalar or have {n} elements, got {s.shape}")
    if activation not in _ACT_CODES:
        raise ValueError(f"activation must be None, 'relu', 'clip' or 'gelu', got {activation!r}")
    act = _ACT_CODES[activation]
    lo, hi = (float(clip[0]), float(clip[1])) if act == 2 else (0.0, 0.0)
    ys = float(np.float32(y_scale))
    if not (np.isfinite(ys) and ys > 0):
        raise ValueError(f"y_scale must be a positive finite float, got {y_scale!r}")
    return out_dtype, b, s, act, lo, hi, ys


def _check_x(x, k, dtypes):
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype not in dtypes or x.shape[1] != k:
        raise ValueError(f"x must be [M, {k}] of {[str(np.dtype(d)) for d in dtypes]}, "
                         f"got {x.dtype} {x.shape}")
    if x.strides[1] != x.itemsize or x.strides[0] < 0:
        x = np.ascontiguousarray(x)
    return x


def _rows_out(out, m, n, dtype):
    """out is [m, n] of dtype with contiguous rows (the kernels' tokens-major output)."""
    return (out.shape == (m, n) and out.dtype == dtype and out.strides[1] == out.itemsize
            and out.strides[0] % out.itemsize == 0)


def _out(out, m, n, dtype):
    if out is None:
        return np.empty((m, n), dtype)
    if not _rows_out(out, m, n, dtype):
        raise ValueError(f"out must be [{m}, {n}] {dtype} with contiguous rows")
    return out


def _kernel_lead(packed, isa):
    """(kernel module, the leading weight arguments of its calls) for a packed weight: the
    dense GEMM's (weights, N, Np, Kp) or the sparse kernel's (Kp, row_ptr, idx, vals, row
    order, block width, N)."""
    n, a = packed.n, packed.arrays
    if packed.format != "dense":
        return load("qs8_spmm", isa), (packed.kp, a["row_ptr"], a["idx"], a["vals"],
                                       packed.row_order(), 2 if packed.format == "block4" else 1,
                                       n)
    mod = load("qs8_gemm", isa)
    if mod.QUADS:
        wq = packed.quads(mod.KP_MULTIPLE)
        return mod, (wq, n, wq.shape[0] * GEMM_NR, wq.shape[1] * 4)
    return mod, (a["wp"], n, a["wp"].shape[0] * GEMM_NR, packed.kp)


def _direct_pays(geom):
    """Does gemm_conv_direct pay on this geometry (_conv_geom's tuple)? Stride 1: its
    tiles run across the padded rows, wasting kw - 1 pixels a row. Other strides: tiles of 16
    pixels of one output row, so a row of wo pixels computes ceil(wo / 16) * 16: at 20 x 20 (12
    of 32 rows wasted) a 128 x 128 x 3 x 3 layer took 1.15-1.25x the im2col kernel's time, at 56
    x 56 (8 of 64) 0.7-0.9x, at 80 x 80 and 160 x 160 (none) 0.25-0.6x."""
    if geom[2] == 1 and geom[3] == 1:
        return True
    wo = geom[9]
    t = -(-wo // 16) * 16
    return (t - wo) <= 0.15 * t


def _bias_s8(b, rowsum):
    """The int32 bias for s8 x on the u8 x s8 quad builds, which run s8 x as x + 128: b -
    128 * sum_k w (int32 wrap-around like the kernels' additions: exact wherever the result
    fits)."""
    b64 = b.astype(np.int64) - 128 * np.asarray(rowsum, np.int64)
    return (b64 & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


class _EpilogueArgs:
    """The kernels' epilogue arguments worked out once (PreparedQS8, PreparedQDW): bias with
    the zero-point fold, scale, activation, output type and zero point, mid step and its table
    (a caller's, or the GELU one)."""

    def __init__(self, n, bias, scale, out_dtype, out_zero_point, x_zero_point, rowsum,
                 activation, clip, y_scale, mid):
        self.out_dtype, self.b, self.s, self.act, self.lo, self.hi, self.ys = _epilogue_args(
            n, bias, scale, out_dtype, x_zero_point, rowsum, activation, clip, y_scale)
        self.mid = _mid_args(n, mid)
        if self.mid is not None and self.out_dtype == np.int32:
            raise ValueError("mid needs a float32, uint8 or int8 output")
        self.table = self.mid is not None and len(self.mid) > 4
        if self.table and self.out_dtype not in (np.uint8, np.int8):
            raise ValueError("a mid table needs a uint8 or int8 output")
        self.zp = int(out_zero_point)
        if self.out_dtype in (np.uint8, np.int8):
            info = np.iinfo(self.out_dtype)
            if not info.min <= self.zp <= info.max:
                raise ValueError(f"out_zero_point {self.zp} outside {self.out_dtype}")
        if self.mid is not None and not self.table and self.act == _ACT_CODES["gelu"] \
                and self.out_dtype in (np.uint8, np.int8):
            # mid step -> GELU -> 8-bit output depends on (channel, mid value) only: one table
            # per layer (exact erf: the reference's arithmetic) instead of a GELU per element
            code, mzp, msc, mb = self.mid
            self.mid = self.mid + _table_entry(
                gelu_q8_table(mzp, code == _OUT_CODES[_S8], msc, mb, self.ys, self.zp,
                              self.out_dtype == np.int8), n)

    def _check_res(self, residual):
        if residual is not None and (self.out_dtype == np.int32 or self.table):
            raise ValueError("a residual needs a float32, uint8 or int8 output and no mid table")

    def _bound_res(self, residual, m, n, out):
        """The kernels' residual tuple for a bound call (None without one), or False where the
        call cannot bind: int32 out, a table, or a converted copy (its values would go stale)."""
        if residual is None:
            return None
        if self.out_dtype == np.int32 or self.table:
            return False
        res = _res_args(residual, m, n, out)
        return res if np.may_share_memory(res[0], residual[0]) else False


class PreparedQS8(_EpilogueArgs):
    """qs8_matmul with its epilogue (bias with the zero-point fold, scale, activation, output
    type) worked out once: a layer's call then only checks x and out and runs the kernel
    (~20 us of Python per call less, on the 72 INT8 layers of a BERT-base). Build it with
    prepare_qs8_matmul; call as p(x, out=None, num_threads=None)."""

    def __init__(self, packed, bias, scale, out_dtype, out_zero_point, x_zero_point, activation,
                 clip, isa, y_scale=1.0, mid=None):
        n = packed.n
        _EpilogueArgs.__init__(self, n, bias, scale, out_dtype, out_zero_point, x_zero_point,
                               packed.rowsum, activation, clip, y_scale, mid)
        self.packed, self.code = packed, _OUT_CODES[self.out_dtype]
        self.reference_args = (bias, scale, out_dtype, out_zero_point, x_zero_point, activation,
                               clip)
        self._mid_user = mid
        self.zx = int(x_zero_point)
        mod, self._lead = _kernel_lead(packed, isa)
        if packed.format == "dense":
            self._fn, self._conv_fn = mod.gemm, mod.gemm_conv
            self._bound_fn = mod.gemm_bound       # the call prepared once (bound())
        else:
            self._fn, self._conv_fn = mod.spmm, mod.spmm_conv
            self._bound_fn = mod.spmm_bound       # the call prepared once (bound())
        # the amx build's convolutions without im2col rows (gemm_conv_direct; the weight's
        # layout per (kh, kw, C) from packed.direct)
        self._direct_ok = packed.format == "dense" and bool(getattr(mod, "AMX", 0)) \
            and os.environ.get("DEEPSPARSE_CY_NO_DIRECT_CONV", "") not in ("1", "true")
        self._direct_fn = getattr(mod, "gemm_conv_direct", None)
        # a mid step with ReLU / Clip / nothing before an 8-bit output on the sparse kernel's
        # VBMI table epilogue: its output as a table of (channel, mid value), used by the calls
        # without a residual (three byte permutes per 64 outputs instead of ~15 vector
        # operations per 16; ResNet-50's conv1 / conv2 layers, where the epilogue was half the
        # time). Without VBMI a table goes through gathers, slower than the arithmetic.
        # (built on the first call without a residual: a layer with one never needs it)
        self._mid_lut = None
        self._lut_ok = packed.format != "dense" and self.mid is not None and not self.table \
            and self.act in (0, 1, 2) and self.out_dtype in (_U8, _S8) and mod.vbmi()
        self._b_s8 = _bias_s8(self.b, packed.rowsum) if mod.QUADS else None

    def __call__(self, x, out=None, num_threads=None, residual=None):
        packed = self.packed
        if not (type(x) is np.ndarray and x.ndim == 2 and x.shape[1] == packed.k
                and x.dtype in (_U8, _S8) and x.flags.c_contiguous):
            x = _check_x(x, packed.k, (np.uint8, np.int8))
        m, n = x.shape[0], packed.n
        out = _out(out, m, n, self.out_dtype)
        if m == 0 or n == 0:
            return out
        self._check_res(residual)
        res = _res_args(residual, m, n, out) if residual is not None else None
        if packed.k == 0:
            mid = self._mid_user
            return qs8_matmul_reference(x, np.zeros((n, 0), np.int8), *self.reference_args,
                                        out=out, y_scale=self.ys, mid=mid, residual=residual)
        self._fn(*self._args(x, out, res, num_threads))
        return out

    def _mid_for(self, res):
        """The kernels' mid tuple for a call with (res) or without a residual (None)."""
        if res is not None or not self._lut_ok:
            return self.mid
        if self._mid_lut is None:
            self._mid_lut = self.mid + _table_entry(
                mid_q8_table(self.mid, self.act, self.lo, self.hi, self.ys, self.out_dtype,
                             self.zp), self.packed.n)
        return self._mid_lut

    def _bias(self, x_signed):
        """The kernels' int32 bias for u8 (False) or s8 (True) activations."""
        return self._b_s8 if x_signed and self._b_s8 is not None else self.b

    def _args(self, x, out, res, num_threads):
        """The compiled kernel's argument tuple for checked x [M, K] and out [M, N]."""
        xs = x.dtype == _S8
        return ((x, int(xs)) + self._lead
                + (self._bias(xs), self.s, self.code, self.act, self.lo, self.hi, self.ys,
                   self._mid_for(res), res,
                   self.zp, out, int(num_threads or 0)))

    def _planar(self, out, m, n, residual):
        """out is a planar [B, N, HW] output the sparse kernel writes directly (a conv's NCHW
        output, no channels-last copy to transpose): C-contiguous, B * HW = M, no residual
        (with one the kernel would add it element by element)."""
        return (self.packed.format != "dense" and residual is None and type(out) is np.ndarray
                and out.ndim == 3 and out.shape[1] == n and out.shape[0] * out.shape[2] == m
                and out.dtype == self.out_dtype and out.flags.c_contiguous)

    def bound(self, x, out, num_threads=None, residual=None):
        """(fn, args) running this call on exactly these x / out (/ residual) arrays
        (engine._run_plan's bound step: the same objects on every run), or None where
        __call__ takes another path (fresh or converted arrays, empty shapes). out: [M, N]
        rows, or (sparse formats, no residual) planar [B, N, HW] with B * HW = M. x: [M, K]
        rows, or (sparse formats) planar [B, K, HW], C-contiguous (a 1x1 conv's NCHW input,
        M = B * HW, read by the kernel's tile packer: no channels-last copy)."""
        packed = self.packed
        if not (type(x) is np.ndarray and x.dtype in (_U8, _S8) and x.flags.c_contiguous
                and packed.n > 0 and x.ndim in (2, 3) and x.shape[1] == packed.k > 0):
            return None
        if x.ndim == 3 and packed.format == "dense":
            return None
        m = x.shape[0] * (x.shape[2] if x.ndim == 3 else 1)
        if m == 0 or type(out) is not np.ndarray or not (
                _rows_out(out, m, packed.n, self.out_dtype)
                or self._planar(out, m, packed.n, residual)):
            return None
        res = self._bound_res(residual, m, packed.n, out)
        if res is False:
            return None
        return self._bound_fn(*self._args(x, out, res, num_threads)), ()

    def _conv_geom(self, x, kernel_shape, strides, pads, dilations):
        """(geometry tuple, M) of a convolution of NHWC x whose im2col rows this layer's weight
        [N, kh*kw*C] multiplies, or ValueError."""
        if not (type(x) is np.ndarray and x.ndim == 4 and x.dtype in (_U8, _S8)
                and x.flags.c_contiguous):
            raise ValueError("conv: x must be a C-contiguous uint8 / int8 [B, H, W, C] array")
        b, h, w, c = x.shape
        kh, kw = kernel_shape
        if kh * kw * c != self.packed.k:
            raise ValueError(f"conv: weight has K={self.packed.k}, expected kh*kw*C={kh * kw * c}")
        _check_zero_point(self.zx, x.dtype, "x")
        from .conv import conv_output_hw          # (conv.py imports this module)
        ho, wo = conv_output_hw(h, w, kernel_shape, strides, pads, dilations)
        if ho <= 0 or wo <= 0:
            raise ValueError(f"conv: output would be empty ({ho}x{wo})")
        geom = (int(kh), int(kw), int(strides[0]), int(strides[1]), int(dilations[0]),
                int(dilations[1]), int(pads[0]), int(pads[1]), int(ho), int(wo))
        return geom, b * ho * wo

    def _conv_call(self, x, geom, out, res, num_threads):
        """(kernel, arguments) of a convolution: the amx build's direct conv where it applies
        (dense weight, dilation 1 along W), else the kernels gathering im2col rows."""
        xs = x.dtype == _S8
        tail = (self._bias(xs), self.s, self.code, self.act, self.lo, self.hi, self.ys,
                self._mid_for(res), res, self.zp, out, int(num_threads or 0))
        if self._direct_ok and geom[5] == 1 and _direct_pays(geom):
            d = self.packed.direct(geom[0], geom[1], x.shape[3])
            return self._direct_fn, (x, int(xs), geom, self.zx & 0xFF) + d \
                + self._lead[1:3] + tail
        return self._conv_fn, (x, int(xs), geom, self.zx & 0xFF) + self._lead + tail

    def conv(self, x, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
             out=None, num_threads=None, residual=None):
        """This layer on the im2col rows of a k x k convolution of x [B, H, W, C] (NHWC,
        padded with x_zero_point), gathered by the kernels themselves: no column matrix.
        Returns out [B*Ho*Wo, N], bit-identical to __call__ on im2col_nhwc's columns."""
        geom, m = self._conv_geom(x, kernel_shape, strides, pads, dilations)
        n = self.packed.n
        out = _out(out, m, n, self.out_dtype)
        if m == 0 or n == 0:
            return out
        self._check_res(residual)
        res = _res_args(residual, m, n, out) if residual is not None else None
        fn, args = self._conv_call(x, geom, out, res, num_threads)
        fn(*args)
        return out

    def conv_bound(self, x, kernel_shape, strides, pads, dilations, out, num_threads=None,
                   residual=None):
        """(fn, args) running conv() on exactly these arrays, or None where conv() would
        convert or copy one of them. out as in bound(): [M, N] rows or planar [B, N, HW]."""
        try:
            geom, m = self._conv_geom(x, kernel_shape, strides, pads, dilations)
        except ValueError:
            return None
        n = self.packed.n
        if m == 0 or n == 0 or type(out) is not np.ndarray or not (
                _rows_out(out, m, n, self.out_dtype) or self._planar(out, m, n, residual)):
            return None
        res = self._bound_res(residual, m, n, out)
        if res is False:
            return None
        return self._conv_call(x, geom, out, res, num_threads)


_U8, _S8 = np.dtype(np.uint8), np.dtype(np.int8)


class PreparedQS8Parts:
    """Sibling layers that read the same x (a transformer's Q, K and V projections) as one
    INT8 GEMM over their weights stacked along N, each part through its own epilogue into its
    own output: x is packed once and the threads share one pool of work items (three 768 x 768
    calls took 1.2-1.5x the time of one 768 x 2304 dense, 1.1-1.3x block4 90%, M = 128). Build
    it with prepare_qs8_parts; call as p(x, outs=None, num_threads=None) -> list of outputs.

    w_parts: int8 [n, K] weights (the same n and K, at most PARTS_MAX of them; n a multiple of
    32 for the dense GEMM, of 64 for the sparse formats, whose row order works in chunks of 64);
    epilogues: one dict per part of prepare_qs8_matmul's keyword arguments (bias, scale,
    out_dtype, out_zero_point, x_zero_point - the same for all -, activation, clip, y_scale,
    mid); format: "dense", "block4" or "unstructured" (the stacked weight's). Each part's
    outputs equal prepare_qs8_matmul on its own weight in that format, bit for bit."""

    def __init__(self, w_parts, epilogues, isa=None, format="dense"):
        if format not in FORMATS:
            raise ValueError(f"prepare_qs8_parts: format must be one of {FORMATS}, got {format!r}")
        mod = load("qs8_gemm" if format == "dense" else "qs8_spmm", isa)
        ws = [np.asarray(w) for w in w_parts]
        if not 1 <= len(ws) <= mod.PARTS_MAX or len(epilogues) != len(ws):
            raise ValueError(f"prepare_qs8_parts: 1..{mod.PARTS_MAX} parts, one epilogue each")
        n, k = ws[0].shape if ws[0].ndim == 2 else (0, 0)
        mult = 32 if format == "dense" else ROW_CHUNK
        if any(w.dtype != np.int8 or w.shape != (n, k) for w in ws) or n % mult or n == 0 \
                or k == 0:
            raise ValueError("prepare_qs8_parts: int8 [n, K] weights of one shape, n a nonzero "
                             f"multiple of {mult}")
        zxs = {int(e.get("x_zero_point", 0)) for e in epilogues}
        if len(zxs) != 1:
            raise ValueError("prepare_qs8_parts: the parts read one x: one x_zero_point")
        self.zx = zxs.pop()
        self.k, self.n, self.nparts = k, n, len(ws)
        self.packed = packed = pack_qs8(np.concatenate(ws), format, isa=isa)
        _, self._lead = _kernel_lead(packed, isa)
        self._fn = mod.gemm_parts if format == "dense" else mod.spmm_parts
        self._bound_fn = mod.gemm_parts_bound if format == "dense" else mod.spmm_parts_bound
        self.parts = []
        for i, kw in enumerate(epilogues):
            kw = dict(kw)
            rowsum = packed.rowsum[i * n:(i + 1) * n]
            e = _EpilogueArgs(n, kw.get("bias"), kw.get("scale"),
                              kw.get("out_dtype", np.float32), kw.get("out_zero_point", 0),
                              self.zx, rowsum, kw.get("activation"), kw.get("clip"),
                              kw.get("y_scale", 1.0), kw.get("mid"))
            self.parts.append((e, _OUT_CODES[e.out_dtype],
                               _bias_s8(e.b, rowsum) if mod.QUADS else None))

    def _args(self, x, outs, num_threads):
        xs = x.dtype == _S8
        parts = [(b_s8 if xs and b_s8 is not None else e.b, e.s, code, e.act, e.lo, e.hi, e.ys,
                  e.mid, None, e.zp, o) for (e, code, b_s8), o in zip(self.parts, outs)]
        return (x, int(xs)) + self._lead + (parts, int(num_threads or 0))

    def _outs(self, outs, m):
        if outs is None:
            return [np.empty((m, self.n), e.out_dtype) for e, _, _ in self.parts]
        if len(outs) != self.nparts:
            raise ValueError(f"prepare_qs8_parts: {self.nparts} outputs, got {len(outs)}")
        return [_out(o, m, self.n, e.out_dtype) for o, (e, _, _) in zip(outs, self.parts)]

    def __call__(self, x, outs=None, num_threads=None):
        if not (type(x) is np.ndarray and x.ndim == 2 and x.shape[1] == self.k
                and x.dtype in (_U8, _S8) and x.flags.c_contiguous):
            x = _check_x(x, self.k, (np.uint8, np.int8))
        _check_zero_point(self.zx, x.dtype, "x")
        outs = self._outs(outs, x.shape[0])
        if x.shape[0] == 0:
            return outs
        if any(np.may_share_memory(x, o) for o in outs):
            raise ValueError("prepare_qs8_parts: an output overlaps x")
        self._fn(*self._args(x, outs, num_threads))
        return outs

    def bound(self, x, outs, num_threads=None):
        """(fn, args) running this call on exactly these x / outs arrays, or None (another
        path: converted arrays, an empty x, overlapping arrays)."""
        if not (type(x) is np.ndarray and x.ndim == 2 and x.dtype in (_U8, _S8)
                and x.flags.c_contiguous and x.shape[1] == self.k and x.shape[0] > 0):
            return None
        m = x.shape[0]
        if len(outs) != self.nparts or not all(
                type(o) is np.ndarray and _rows_out(o, m, self.n, e.out_dtype)
                and not np.may_share_memory(x, o) for o, (e, _, _) in zip(outs, self.parts)):
            return None
        try:
            _check_zero_point(self.zx, x.dtype, "x")
        except ValueError:
            return None
        return self._bound_fn(*self._args(x, outs, num_threads)), ()


def prepare_qs8_parts(w_parts, epilogues, isa=None, format="dense"):
    """A PreparedQS8Parts: sibling layers reading the same x as one GEMM (see the class)."""
    return PreparedQS8Parts(w_parts, epilogues, isa, format)


def prepare_qs8_matmul(packed, bias=None, scale=None, out_dtype=np.float32, out_zero_point=0,
                       x_zero_point=0, activation=None, clip=None, isa=None, y_scale=1.0,
                       mid=None):
    """A PreparedQS8 for repeated qs8_matmul calls with the same weight and epilogue."""
    return PreparedQS8(packed, bias, scale, out_dtype, out_zero_point, x_zero_point, activation,
                       clip, isa, y_scale, mid)


def qs8_matmul(x, packed, bias=None, scale=None, out_dtype=np.float32, out_zero_point=0,
               x_zero_point=0, activation=None, clip=None, num_threads=None, out=None, isa=None,
               y_scale=1.0, mid=None, residual=None):
    """out[M, N] = epilogue(sum_k (x[m, k] - x_zero_point) * w[n, k] + bias[n]); see the
    package docstring. x: uint8 or int8 [M, K], tokens-major. mid = (dtype, zero_point, scale,
    bias) quantizes (acc + bias) * scale to dtype first and continues from its dequantized value
    times scale plus bias (scalar or per channel: QuantizeLinear -> DequantizeLinear [-> Mul]
    [-> Add] inside the layer). The activation ("gelu": the erf GELU) then sees that value, and
    y_scale != 1 divides it by the output quantization scale before rounding. residual =
    (r [M, N], zero_point, scale) adds r (float32) or (r - zero_point) * scale (uint8 / int8)
    after the mid step, before the activation (a residual Add)."""
    x = _check_x(x, packed.k, (np.uint8, np.int8))
    p = PreparedQS8(packed, bias, scale, out_dtype, out_zero_point, x_zero_point, activation,
                    clip, isa, y_scale, mid)
    return p(x, out=out, num_threads=num_threads, residual=residual)


def _gelu64(f):
    """0.5 f (1 + erf(f / sqrt 2)) in float64 (math.erf per element: the test sizes are small)."""
    import math
    f = np.asarray(f, np.float64)
    e = np.frompyfunc(lambda t: math.erf(t / math.sqrt(2.0)), 1, 1)(f).astype(np.float64)
    return 0.5 * f * (1.0 + e)


def _epilogue_reference(acc, bias, scale, out_dtype, out_zero_point, activation, clip, y_scale,
                        mid, residual):
    """The kernels' epilogue (dscy_kernels.h) in numpy on integer sums acc [M, N] (int64)."""
    out_dtype = np.dtype(out_dtype)
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64).reshape(1, -1)
    acc = acc.astype(np.int32)                   # the kernels accumulate in int32
    if out_dtype == np.int32:
        return acc
    f = acc.astype(np.float32) * np.asarray(scale, np.float32).reshape(1, -1)
    if mid is not None:
        mdt, mzp, msc, mb = mid[:4]
        mi = np.iinfo(np.dtype(mdt))
        q1 = np.clip(np.rint(f.astype(np.float64)) + int(mzp), mi.min, mi.max)
        if len(mid) > 4 and mid[4] is not None:
            return _table_reference(q1, mdt, mid[4], out_dtype)
        f = _mid_dequant(q1, mzp, msc, mb)
    return _after_mid(f, residual, activation, clip, y_scale, out_dtype, out_zero_point)


def _mid_dequant(q1, mzp, msc, mb):
    """The mid step's float value of mid values q1 [M, N] (or [M, 1], broadcast over channels):
    (q1 - zero point) * scale [+ bias] per channel, float32 steps."""
    f = (q1 - int(mzp)).astype(np.float32) * np.asarray(msc, np.float32).reshape(1, -1)
    if mb is not None:
        f = f + np.asarray(mb, np.float32).reshape(1, -1)
    return f


def _after_mid(f, residual, activation, clip, y_scale, out_dtype, out_zero_point):
    """_epilogue_reference from the float value on: residual, activation, y_scale division and
    the output quantization (float32 f [M, N])."""
    out_dtype = np.dtype(out_dtype)
    if residual is not None:
        r, rzp, rsc = residual
        r = np.asarray(r)
        f = f + (r if r.dtype == np.float32
                 else (r.astype(np.int32) - int(rzp)).astype(np.float32) * np.float32(rsc))
    if activation == "relu":
        f = np.maximum(f, np.float32(0))
    elif activation == "clip":
        f = np.minimum(np.maximum(f, np.float32(clip[0])), np.float32(clip[1]))
    elif activation == "gelu":
        f = _gelu64(f)
    if np.float32(y_scale) != 1:
        f = (np.asarray(f, np.float64) / np.float64(np.float32(y_scale))
             if activation == "gelu" else f / np.float32(y_scale))
    if out_dtype == np.float32:
        return f
    info = np.iinfo(out_dtype)                   # ONNX QuantizeLinear: round half to even
    return np.clip(np.rint(f.astype(np.float64)) + int(out_zero_point), info.min, info.max)


def qs8_matmul_reference(x, w, bias=None, scale=None, out_dtype=np.float32, out_zero_point=0,
                         x_zero_point=0, activation=None, clip=None, out=None, y_scale=1.0,
                         mid=None, residual=None):
    """Plain numpy version of qs8_matmul with the unpacked weight w [N, K] (int8); bit-exact to
    the kernels except for activation="gelu" (exact erf here, a rational approximation of a few
    ulp there: a quantized output may differ by one step where the value sits on a rounding
    boundary)."""
    x, w = np.asarray(x), np.asarray(w)
    acc = (x.astype(np.int64) - int(x_zero_point)) @ w.astype(np.int64).T
    res = _epilogue_reference(acc, bias, scale, out_dtype, out_zero_point, activation, clip,
                              y_scale, mid, residual)
    out_dtype = np.dtype(out_dtype)
    if out is None:
        return res.astype(out_dtype)
    out[...] = res
    return out
