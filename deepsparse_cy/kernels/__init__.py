"""Compiled kernels and the one place that decides which ISA build runs.

Filled once at import: start from 'generic', upgrade after cpuid + xgetbv checks, then cap by
DEEPSPARSE_CY_ISA (generic | avx2 | avx512 | avx512_vnni | amx), which can only lower the level.
Each kernel family is built once per ISA (module ``_<family>_<isa>``); ``KERNELS`` lists every
build and feeds dispatch, the tests (parametrised over ``runnable_isas()``) and the benchmarks.
The INT8 families (qs8_gemm, qs8_spmm) have an avx512_vnni build (u8 x s8 quads with vpdpbusd),
f32_conv one for its zmm tiles and attention, f32_spmm one that runs 32 tokens per nonzero in
two zmm. qs8_gemm has an amx build too: the same quads and epilogue on AMX tiles (tdpbusd), run
where the CPU has AMX-INT8 and Linux grants the process the tile state; a build the compiler
could not make (no -mamx-int8) is simply absent and dispatch passes over it.

Python API (what the graph layer calls)
---------------------------------------
Layouts: activations are **tokens-major** ``x[M, K]`` (M = tokens / pixels, K = input features,
rows contiguous; NHWC for convolutions), outputs are tokens-major ``out[M, N]`` (an ``out=``
array may be a column slice of a wider C-contiguous buffer: only its row stride matters). Weights
are ``[N, K]`` (ONNX MatMul weights ``[K, N]`` must be transposed; Conv weights go through
``conv_weight_matrix``). Packing happens once at compile time; the kernels repack activations
per call into the layout they need (int16 k-pairs; on avx512_vnni bytes in k-quads, s8 stored as
x + 128 with the bias corrected by -128 * sum_k w), which costs O(M*K) against
O(M*K*N*density).

``pack_qs8(w_s8[N, K], format='auto'|'dense'|'block4'|'unstructured') -> PackedQS8``
    ``.format .n .k .nnz .nblocks .nbytes .bytes_per_nnz .rowsum .costs``. 'auto' measures the
    occupancy of 1x4 quads / 1x2 pairs / elements and picks by a cost model (``choose_format``),
    dense when sparsity does not pay. block4 stores 4 s8 + a 16-bit offset per nonzero quad (1.5 B
    per nonzero at 100% quad occupancy); unstructured stores 2 s8 + 16-bit offset per nonzero
    pair; dense stores int16 (2 B per weight).
``qs8_matmul(x[M, K] u8|s8, packed, bias=None (int32[N]), scale=None (float | float32[N]),
            out_dtype=np.float32|np.uint8|np.int8|np.int32, out_zero_point=0, x_zero_point=0,
            activation=None|'relu'|'clip'|'gelu', clip=(lo, hi), num_threads=None, out=None,
            isa=None, y_scale=1.0, mid=None, residual=None)``
    acc = sum_k (x - x_zero_point) * w + bias  (int32, exact);  int32 out: acc;
    else f = float32(acc) * scale[n]; [mid = (dtype, zp1, s1 (scalar | [N]), b1 ([N] | None)):
    f = (saturate(round_half_even(f) + zp1) - zp1) * s1[n] + b1[n], a QuantizeLinear ->
    DequantizeLinear -> Mul/Add inside the layer]; [residual = (r[M, N], zp_r, s_r): f += r, or
    (r - zp_r) * s_r for uint8/int8 r]; -> activation -> [f / y_scale when y_scale != 1] ->
    float32 out, or saturate(round_half_even(f) + out_zero_point) for uint8/int8 out. A plain
    requantization folds s_y into scale (s_x * s_w[n] / s_y); after GELU, a mid step or a
    residual the activation sees real values and y_scale = s_y divides, as QuantizeLinear does.
    mid may carry a fifth element, a uint8 table [N, 256] or [256]: the output byte of each mid
    value (index q - type min), replacing the rest of the epilogue (8-bit out, no residual).
``qs8_matmul_reference(...)``: same arguments, plain numpy; bit-exact to the kernels (GELU: the
    kernels' erf is a rational approximation, a quantized output may move by one step).
``prepare_qs8_matmul(packed, ...) -> PreparedQS8``: the epilogue worked out once; ``p(x, out=,
    num_threads=, residual=)``, and ``p.conv(x[B, H, W, C], kernel_shape, strides, pads,
    dilations, out=...)``: the same layer on a convolution's im2col rows, gathered by the kernels
    from NHWC x (padding x_zero_point), bit-identical to ``p(im2col_nhwc(...))``. On the amx
    build a dense weight's conv (dilation 1 along W) reads no im2col rows: its activation tiles
    come from a padded copy of x with overlapping rows (``qs8_gemm.gemm_conv_direct``).
``prepare_qs8_parts([w_s8[n, K], ...], [epilogue kwargs, ...], format=) -> PreparedQS8Parts``:
    2-4 sibling layers reading the same x as one GEMM over their stacked weights (dense, block4
    or unstructured), each part with its own epilogue and output (``p(x, outs=, num_threads=)``
    -> list); bit-identical to each layer's own ``prepare_qs8_matmul`` call in that format.
``prepare_qs8_dwconv(w_s8[C, kh, kw], bias, scale, ...) -> PreparedQDW``: depthwise conv of NHWC
    u8 / s8 x (channel multiplier 1, kh*kw <= 256) with the same epilogue;
    ``qs8_dwconv_reference`` is its numpy twin.
``pack_f32_sparse(w_f32[N, K]) -> PackedF32`` (CSR; K panels of ``f32.PANEL_K`` for wide K);
    ``f32_spmm(x[M, K] f32, packed, bias=None, activation=None|'relu'|'clip'|'gelu', clip=None,
    num_threads=None, out=None, isa=None) -> out[M, N] f32``.
Convolution: ``conv_weight_matrix(w[Cout, Cin, kh, kw]) -> [Cout, kh*kw*Cin]``,
``im2col_nhwc(x[B, H, W, C], kernel_shape, strides, pads, dilations, pad_value)`` and
``qs8_conv2d_nhwc(x_nhwc, packed, kernel_shape, ...) -> [B, Ho, Wo, Cout]`` (1x1 stride 1 is
the GEMM over pixels without a copy; others explicit im2col; pad with the activation zero point;
``PreparedQS8.conv`` gathers the rows without a column matrix).
8-bit tables (``_f32_ops``, ops/fast_quant.QTable / QAdd): ``lut8_f32`` / ``lut8_8(x, x_signed,
table[256], out)`` (VBMI byte permutes where ``set_vbmi``), ``qadd8(a, a_signed, b, b_signed,
ta[256], tb[256], out, scale, zero_point)`` = QuantizeLinear(ta[a] + tb[b]) (or the float sums),
``qadd8_t2(a, .., b, .., t2[65536 + 3], out)`` = t2[a * 256 + b] (indices: value - type min).
``num_threads``: None or 0 = OpenMP default (OMP_NUM_THREADS / threadpoolctl limits apply).
``isa``: force a build ('generic' | 'avx2' | 'avx512_vnni' | 'amx', where the family has it) for tests;
None = dispatch.
Every kernel call releases the GIL.
"""
import importlib
import importlib.util
import os

from . import _cpuid

LEVELS = ["generic", "avx2", "avx512", "avx512_vnni", "amx"]

_VNNI = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni")
_AMX = _VNNI + ("amx_tile", "amx_int8", "os_amx")
# Every compiled kernel variant: (family, isa build suffix, dispatch level it belongs to,
# CPU features the build's -m flags require). Dispatch, tests and benchmarks all read this.
KERNELS = [
    ("qs8_gemm", "generic", "generic", ()),
    ("qs8_gemm", "avx2", "avx2", ("avx2", "fma", "f16c")),
    ("qs8_spmm", "generic", "generic", ()),
    ("qs8_spmm", "avx2", "avx2", ("avx2", "fma", "f16c")),
    ("qs8_gemm", "avx512_vnni", "avx512_vnni", _VNNI),
    ("qs8_spmm", "avx512_vnni", "avx512_vnni", _VNNI),
    ("f32_spmm", "generic", "generic", ()),
    ("f32_spmm", "avx2", "avx2", ("avx2", "fma", "f16c")),
    ("f32_spmm", "avx512_vnni", "avx512_vnni", _VNNI),
    ("f32_conv", "generic", "generic", ()),
    ("f32_conv", "avx2", "avx2", ("avx2", "fma", "f16c")),
    ("f32_conv", "avx512_vnni", "avx512_vnni", _VNNI),
    ("qs8_gemm", "amx", "amx", _AMX),
    # the attention alone, for a quantized output on AMX-BF16 tiles (f32_attn.pyx); other levels
    # and float outputs take f32_conv's attention
    ("f32_attn", "amx", "amx", _AMX + ("amx_bf16", "avx512_bf16")),
]
FAMILIES = sorted({k[0] for k in KERNELS})
ISA_BUILDS = ["generic", "avx2", "avx512_vnni", "amx"]   # ascending


def _built(family, isa):
    """Whether the module of this build was compiled (the amx one needs a compiler that knows
    -mamx-int8)."""
    return importlib.util.find_spec(f"{__name__}._{family}_{isa}") is not None


def cpu_features():
    """CPU feature flags, with OS support of the register state taken into account."""
    return dict(_cpuid.features())


def cpu_brand():
    return _cpuid.brand()


def _detect_level(f):
    if all(f.get(x) for x in _AMX) and _built("qs8_gemm", "amx"):
        return "amx"
    if f.get("avx512f") and f.get("avx512bw") and f.get("avx512vl") and f.get("avx512_vnni"):
        return "avx512_vnni"
    if f.get("avx512f") and f.get("avx512bw") and f.get("avx512vl"):
        return "avx512"
    if f.get("avx2") and f.get("fma"):
        return "avx2"
    return "generic"


def _choose():
    hw = _detect_level(cpu_features())
    want = os.environ.get("DEEPSPARSE_CY_ISA", "").strip().lower()
    if not want:
        return hw, hw
    if want not in LEVELS:
        raise ValueError(f"DEEPSPARSE_CY_ISA={want!r}: expected one of {LEVELS}")
    if LEVELS.index(want) > LEVELS.index(hw):
        return hw, hw  # cannot raise above what the CPU supports
    return want, hw


ISA, HW_ISA = _choose()


def kernel_isa():
    """The kernel level dispatch chose: 'amx' | 'avx512_vnni' | 'avx512' | 'avx2' | 'generic'."""
    return ISA


def missing_features(isa, family=None):
    """CPU features an ISA build needs that this machine lacks ([] = runnable); a build the
    compiler could not make reports 'not built'. With a family, that family's build only (the
    amx builds need different features: AMX-INT8 for qs8_gemm, AMX-BF16 too for f32_attn)."""
    f = cpu_features()
    rows = [k for k in KERNELS if k[1] == isa and (family is None or k[0] == family)]
    need = {feat for _, _, _, feats in rows for feat in feats}
    miss = sorted(x for x in need if not f.get(x))
    if not miss and not all(_built(fam, b) for fam, b, _, _ in rows):
        miss = ["not built"]
    return miss


def runnable_isas(family=None):
    """ISA builds this CPU can execute, ascending (tests parametrise over these); with a family,
    only the builds that family has."""
    have = {b for f, b, _, _ in KERNELS if family is None or f == family}
    return [b for b in ISA_BUILDS if b in have and not missing_features(b, family)]


def _dispatch():
    # highest build whose level does not exceed the chosen level and whose features are present
    table = {}
    for fam, build, level, _ in KERNELS:
        if LEVELS.index(level) <= LEVELS.index(ISA) and not missing_features(build, fam):
            cur = table.get(fam)
            if cur is None or ISA_BUILDS.index(build) > ISA_BUILDS.index(cur):
                table[fam] = build
    return table


DISPATCH = _dispatch()
_modules = {}


def kernel_builds():
    """{family: isa build} that dispatch runs, e.g. {'qs8_gemm': 'avx2', ...}."""
    return dict(DISPATCH)


def _build_for(family, isa):
    """The build of `family` that build name `isa` stands for: `isa` itself where the family
    has it, else (a build another family has: only qs8_gemm has 'amx') the family's highest
    build below it, as dispatch at that level runs; other names come back unchanged."""
    builds = {k[1] for k in KERNELS if k[0] == family}
    if isa in builds or isa not in ISA_BUILDS or family not in FAMILIES:
        return isa
    below = [b for b in builds if ISA_BUILDS.index(b) < ISA_BUILDS.index(isa)]
    if not below:      # f32_attn: an amx build only
        raise ValueError(f"kernel family {family!r} has no build at or below {isa!r}")
    return max(below, key=ISA_BUILDS.index)


def load(family, isa=None):
    """The compiled module of `family` for build `isa` (None = the dispatched one; a build the
    family lacks stands for its highest build below, _build_for)."""
    isa = DISPATCH[family] if isa is None else _build_for(family, isa)
    key = (family, isa)
    mod = _modules.get(key)
    if mod is None:
        if (family, isa) not in {(k[0], k[1]) for k in KERNELS}:
            raise ValueError(f"no kernel build {family!r} for isa {isa!r}")
        miss = missing_features(isa, family)
        if miss:
            raise RuntimeError(f"{family}/{isa} needs CPU features this machine lacks: {miss}")
        mod = _modules[key] = importlib.import_module(f"{__name__}._{family}_{isa}")
    return mod


from .qs8 import (PackedQS8, choose_format, pack_qs8, prepare_qs8_matmul, prepare_qs8_parts,  # noqa: E402
                  qs8_matmul, qs8_matmul_reference, weight_pattern_stats, row_order,
                  ROW_CHUNK)
from .f32 import PackedF32, pack_f32_sparse, f32_spmm, f32_spmm_reference  # noqa: E402
from .conv import (DW_MAX_TAPS, PreparedQDW, conv_weight_matrix, im2col_nhwc, prepare_qs8_dwconv,  # noqa: E402
                   qs8_conv2d_nhwc, qs8_dwconv_reference)
