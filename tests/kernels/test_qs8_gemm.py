"""Dense INT8 GEMM (qs8_matmul with format='dense') against the plain numpy reference, bit-exact,
at every ISA build this CPU runs; dispatch levels; probe."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import deepsparse_cy.kernels as K
from _kernel_cases import isa_params, level_params, sparse_weight

SHAPES = [(1, 1, 1), (1, 5, 3), (2, 7, 17), (5, 13, 15), (6, 16, 16), (7, 33, 31), (13, 64, 100),
          (37, 255, 65), (64, 512, 48), (128, 768, 96), (3, 700, 1)]
OUTS = [(np.int32, 0), (np.float32, 0), (np.uint8, 0), (np.uint8, 131), (np.int8, -5), (np.int8, 0)]


def _run(x, w, isa, fmt="dense", out_dtype=np.float32, zp=0, xzp=0, act=None, clip=None, seed=0,
         nt=None, bias=True, per_channel=True):
    rng = np.random.default_rng(seed)
    n = w.shape[0]
    b = rng.integers(-20000, 20000, n).astype(np.int32) if bias else None
    sc = (rng.random(n) * 2e-3 + 1e-5).astype(np.float32) if per_channel else np.float32(7.3e-4)
    p = K.pack_qs8(w, fmt)
    assert p.format == fmt if fmt != "auto" else p.format in K.qs8.FORMATS
    np.testing.assert_array_equal(p.unpack(), w)
    got = K.qs8_matmul(x, p, b, sc, out_dtype, zp, xzp, act, clip, num_threads=nt, isa=isa)
    ref = K.qs8_matmul_reference(x, w, b, sc, out_dtype, zp, xzp, act, clip)
    assert got.dtype == np.dtype(out_dtype) and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    return got


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("out", OUTS, ids=lambda o: f"{np.dtype(o[0]).name}_zp{o[1]}")
def test_dense_shapes_outputs(isa, shape, out):
    m, k, n = shape
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = sparse_weight(rng, n, k, 0.0, "dense")
    _run(x, w, isa, "dense", out[0], out[1], xzp=int(rng.integers(0, 256)))


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("shape", [(1, 5, 3), (37, 255, 65), (130, 800, 96)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("out", [(np.int32, 0), (np.uint8, 131), (np.float32, 0)],
                         ids=lambda o: np.dtype(o[0]).name)
def test_dense_bound_call_reads_its_arrays_each_call(isa, shape, out):
    """PreparedQS8.bound on the dense GEMM (the engine's bound step: a BoundGemm prepared once):
    each call reads x as it is then and writes out, equal to the reference, on one and two
    threads; another x object or shape does not bind to it."""
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    w = sparse_weight(rng, n, k, 0.0, "dense")
    b = rng.integers(-20000, 20000, n).astype(np.int32)
    sc = (rng.random(n) * 2e-3 + 1e-5).astype(np.float32)
    p = K.prepare_qs8_matmul(K.pack_qs8(w, "dense"), b, sc, out[0], out[1], 3, isa=isa)
    x = np.empty((m, k), np.uint8)
    y = np.empty((m, n), out[0])
    for nt in (1, 2):
        f, args = p.bound(x, y, nt)
        for _ in range(2):
            x[...] = rng.integers(0, 256, (m, k))
            y.fill(0)
            f(*args)
            np.testing.assert_array_equal(
                y, K.qs8_matmul_reference(x, w, b, sc, out[0], out[1], 3))
    assert p.bound(x[:, :-1], y, 1) is None


# The amx build's blocking: 16-token tiles in pairs, items of 8 tiles (128 tokens), panels of
# 16 channels in pairs, K in chunks of 192 quads (768 bytes) with partial sums parked between
# chunks, Kp rounded up to 64. Shapes on and across each of those edges.
AMX_EDGES = [(1, 768, 16), (15, 64, 17), (16, 65, 32), (17, 700, 48), (33, 769, 33), (31, 1000, 50),
             (129, 3072, 40), (130, 1536, 16), (300, 800, 31), (257, 147, 64), (2, 4608, 3)]


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("shape", AMX_EDGES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8])
def test_dense_tile_edges(isa, shape, xdtype):
    m, k, n = shape
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    info = np.iinfo(xdtype)
    x = rng.integers(info.min, info.max + 1, (m, k), dtype=xdtype)
    w = sparse_weight(rng, n, k, 0.0, "dense")
    for od, zp in [(np.int32, 0), (np.uint8, 77), (np.float32, 0)]:
        _run(x, w, isa, "dense", od, zp, xzp=int(rng.integers(info.min, info.max + 1)), nt=2)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8])
def test_dense_conv_rows_tile_edges(isa, xdtype):
    """Rows gathered by the kernel (PreparedQS8.conv) = the GEMM on im2col's columns, on convs
    whose K and pixel counts cross the amx build's tile, chunk and item edges; the amx build
    gathers each item's block of token tiles itself (dscy_qs8_conv_amx): blocks of 2-8 tiles by
    K, several blocks per thread, the panel pairs split into groups on small maps (7 tiles, 4
    pairs), an odd last panel, K over one chunk (1152 bytes), one and two threads."""
    rng = np.random.default_rng(41)
    info = np.iinfo(xdtype)
    for (b, h, w_, c, n, ks, st_, pads) in [(1, 15, 14, 64, 40, (3, 3), (1, 1), (1, 1, 1, 1)),
                                            (2, 23, 19, 3, 20, (7, 7), (2, 2), (3, 3, 3, 3)),
                                            (1, 9, 9, 100, 17, (3, 3), (2, 2), (1, 1, 1, 1)),
                                            (1, 40, 41, 16, 16, (3, 3), (1, 1), (1, 1, 1, 1)),
                                            (1, 10, 10, 128, 128, (3, 3), (1, 1), (1, 1, 1, 1)),
                                            (2, 10, 10, 128, 48, (3, 3), (1, 1), (0, 0, 0, 0)),
                                            (1, 64, 64, 3, 16, (3, 3), (2, 2), (1, 1, 1, 1)),
                                            (3, 5, 3, 32, 64, (1, 3), (1, 1), (0, 1, 0, 1))]:
        x = rng.integers(info.min, info.max + 1, (b, h, w_, c), dtype=xdtype)
        wt = sparse_weight(rng, n, ks[0] * ks[1] * c, 0.0, "dense")
        sc = (rng.random(n) * 1e-3 + 1e-5).astype(np.float32)
        xzp = int(rng.integers(info.min, info.max + 1))
        pr = K.prepare_qs8_matmul(K.pack_qs8(wt, "dense"), None, sc, np.uint8, 5, xzp, isa=isa)
        cols = K.im2col_nhwc(x, ks, st_, pads, (1, 1), xzp)
        ref = K.qs8_matmul_reference(cols, wt, None, sc, np.uint8, 5, xzp)
        for nt in (1, 2):
            np.testing.assert_array_equal(pr.conv(x, ks, st_, pads, num_threads=nt), ref)


DIRECT = [(1, 40, 41, 16, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
          (1, 64, 64, 3, 16, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),     # an RGB stem
          (2, 10, 10, 128, 48, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1)),
          (2, 20, 20, 128, 130, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # K over one chunk
          (1, 9, 8, 7, 20, (3, 3), (1, 1), (2, 1, 0, 2), (2, 1)),       # dilation along H
          (3, 1, 1, 16, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),      # 1 x 1 maps
          (1, 5, 5, 64, 17, (1, 7), (1, 1), (0, 3, 0, 3), (1, 1)),
          (1, 33, 64, 24, 40, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1))]


@pytest.mark.skipif(K.HW_ISA != "amx", reason="no AMX (or no amx build)")
@pytest.mark.parametrize("case", DIRECT, ids=lambda c: "x".join(map(str, c[:5])) + f"_s{c[6][0]}")
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8])
def test_direct_conv_amx(case, xdtype):
    """The amx build's direct conv (gemm_conv_direct: activation tiles loaded from a padded
    copy with overlapping rows, flat runs across rows at stride 1, tiles of one output row
    otherwise) is the path taken, and bit-exact against the GEMM on im2col's columns: batches,
    1 x 1 maps, stride 2, dilation along H, windows over several 64-byte chunks, N not a
    multiple of 32, int32 / float / u8 outputs, one and two threads."""
    b, h, w_, c, n, ks, st_, pads, dil = case
    rng = np.random.default_rng(b * 100 + h + c + n)
    info = np.iinfo(xdtype)
    x = rng.integers(info.min, info.max + 1, (b, h, w_, c), dtype=xdtype)
    wt = sparse_weight(rng, n, ks[0] * ks[1] * c, 0.0, "dense")
    sc = (rng.random(n) * 1e-3 + 1e-5).astype(np.float32)
    xzp = int(rng.integers(info.min, info.max + 1))
    cols = K.im2col_nhwc(x, ks, st_, pads, dil, xzp)
    for od, zp in [(np.int32, 0), (np.float32, 0), (np.uint8, 77)]:
        packed = K.pack_qs8(wt, "dense")
        pr = K.prepare_qs8_matmul(packed, None, sc, od, zp, xzp, isa="amx")
        ref = K.qs8_matmul_reference(cols, wt, None, sc, od, zp, xzp)
        for nt in (1, 2):
            np.testing.assert_array_equal(pr.conv(x, ks, st_, pads, dil, num_threads=nt), ref)
        # the direct path ran: its weight layout was made (PackedQS8.direct), and only it
        assert [k for k in packed.arrays if k.startswith("wd")] == [f"wd{ks[0]}x{ks[1]}x{c}"]


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("act,clip", [(None, None), ("relu", None), ("clip", (-3.0, 6.0))])
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8])
def test_dense_activation_signed(isa, act, clip, xdtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(xdtype)
    x = rng.integers(info.min, info.max + 1, (19, 130), dtype=xdtype)
    x[0] = info.max                          # worst case for int16 pair sums (255*-128*2)
    w = sparse_weight(rng, 45, 130, 0.0, "dense")
    w[0] = -128
    for od, zp in [(np.float32, 0), (np.uint8, 128), (np.int8, 3)]:
        _run(x, w, isa, "dense", od, zp, xzp=-7 if xdtype == np.int8 else 100, act=act, clip=clip)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("nt", [1, 2, 3])
def test_dense_threads_and_scalar_scale(isa, nt):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (50, 300), dtype=np.uint8)
    w = sparse_weight(rng, 70, 300, 0.3, "unstructured")
    _run(x, w, isa, "dense", np.uint8, 10, nt=nt, per_channel=False, bias=False)


@pytest.mark.parametrize("isa", isa_params())
def test_dense_out_slice_and_strided_x(isa):
    """out= may be a column slice of a wider buffer (concat in place); x may be a strided view."""
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (20, 90), dtype=np.uint8)
    x = big[:, 10:60]
    w = sparse_weight(rng, 33, 50, 0.0, "dense")
    sc = np.full(33, 1e-3, np.float32)
    buf = np.full((20, 40), 7, np.uint8)
    K.qs8_matmul(x, K.pack_qs8(w, "dense"), None, sc, np.uint8, 3, out=buf[:, 4:37], isa=isa)
    ref = K.qs8_matmul_reference(x, w, None, sc, np.uint8, 3)
    np.testing.assert_array_equal(buf[:, 4:37], ref)
    assert (buf[:, :4] == 7).all() and (buf[:, 37:] == 7).all()


@pytest.mark.parametrize("isa", isa_params())
def test_dense_saturation_and_rounding(isa):
    """Requantization saturates both ways and rounds halves to even (ONNX QuantizeLinear)."""
    x = np.array([[1], [2], [3], [5], [255]], np.uint8)
    w = np.array([[1], [-1], [127]], np.int8)
    sc = np.array([0.5, 0.5, 1.0], np.float32)   # 0.5, 1.5, 2.5 -> 0, 2, 2 (half to even)
    for od, zp in [(np.uint8, 0), (np.uint8, 200), (np.int8, 0), (np.int8, -100)]:
        p = K.pack_qs8(w, "dense")
        got = K.qs8_matmul(x, p, None, sc, od, zp, isa=isa)
        np.testing.assert_array_equal(got, K.qs8_matmul_reference(x, w, None, sc, od, zp))
    got = K.qs8_matmul(x, K.pack_qs8(w, "dense"), None, sc, np.uint8, 0, isa=isa)
    assert list(got[:4, 0]) == [0, 1, 2, 2]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 40), k=st.integers(1, 200), n=st.integers(1, 70),
       fmt=st.sampled_from(["dense", "block4", "unstructured", "auto"]),
       sparsity=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
       out=st.sampled_from(OUTS), xdtype=st.sampled_from([np.uint8, np.int8]),
       seed=st.integers(0, 2**31))
def test_hypothesis_all_formats(m, k, n, fmt, sparsity, out, xdtype, seed):
    """u8 and s8 activations (the avx512_vnni kernels run s8 as x + 128)."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(xdtype)
    x = rng.integers(info.min, info.max + 1, (m, k), dtype=xdtype)
    w = sparse_weight(rng, n, k, sparsity, "unstructured")
    for isa in K.runnable_isas():
        _run(x, w, isa, fmt, out[0], out[1], xzp=int(rng.integers(info.min, info.max + 1)),
             seed=seed)


def test_empty_dims():
    w = np.ones((4, 3), np.int8)
    p = K.pack_qs8(w, "dense")
    assert K.qs8_matmul(np.zeros((0, 3), np.uint8), p, scale=1.0).shape == (0, 4)


def test_bad_arguments():
    p = K.pack_qs8(np.ones((4, 3), np.int8), "dense")
    with pytest.raises(ValueError):
        K.qs8_matmul(np.zeros((2, 5), np.uint8), p, scale=1.0)      # K mismatch
    with pytest.raises(ValueError):
        K.qs8_matmul(np.zeros((2, 3), np.float32), p, scale=1.0)    # dtype
    with pytest.raises(ValueError):
        K.qs8_matmul(np.zeros((2, 3), np.uint8), p)                  # scale missing
    with pytest.raises(ValueError):
        K.qs8_matmul(np.zeros((2, 3), np.uint8), p, scale=1.0, out_dtype=np.uint8, out_zero_point=300)
    with pytest.raises(ValueError):
        K.pack_qs8(np.ones((4, 3), np.int16))


@pytest.mark.parametrize("level", level_params())
def test_dispatch_level_subprocess(level):
    """DEEPSPARSE_CY_ISA=<level> in a fresh process: dispatch obeys it and results stay exact."""
    code = (
        "import numpy as np, deepsparse_cy.kernels as K\n"
        "r = np.random.default_rng(0)\n"
        "x = r.integers(0, 256, (33, 70), dtype=np.uint8)\n"
        "w = r.integers(-128, 128, (29, 70), dtype=np.int8); w[r.random(w.shape) < .9] = 0\n"
        "s = np.full(29, 1e-3, np.float32)\n"
        "for f in ('dense', 'block4', 'unstructured'):\n"
        "    got = K.qs8_matmul(x, K.pack_qs8(w, f), None, s, np.uint8, 9)\n"
        "    assert np.array_equal(got, K.qs8_matmul_reference(x, w, None, s, np.uint8, 9)), f\n"
        "print(K.kernel_isa(), sorted(set(K.kernel_builds().values())))\n")
    env = dict(os.environ, DEEPSPARSE_CY_ISA=level)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    isa, builds = res.stdout.split(maxsplit=1)
    assert isa == level
    # every family has an avx512_vnni build (the level "avx512" alone has none: it runs avx2);
    # at amx the dense INT8 GEMM runs its amx build, the others stay at avx512_vnni
    expect = {"generic": ["generic"], "avx2": ["avx2"], "avx512": ["avx2"],
              "avx512_vnni": ["avx512_vnni"], "amx": ["amx", "avx512_vnni"]}[level]
    assert builds.strip() == repr(expect)


def test_invalid_level_env():
    env = dict(os.environ, DEEPSPARSE_CY_ISA="sse9")
    res = subprocess.run([sys.executable, "-c", "import deepsparse_cy.kernels"], env=env,
                         capture_output=True, text=True)
    assert res.returncode != 0 and "DEEPSPARSE_CY_ISA" in res.stderr


def test_avx2_build_has_no_vnni_or_avx512():
    """The avx2 build must run on AVX2-only CPUs: no AVX-VNNI / AVX-512 instructions inside."""
    import shutil
    if not shutil.which("objdump"):
        pytest.skip("objdump not installed")
    for fam in K.FAMILIES:
        if not any(f == fam and K.ISA_BUILDS.index(b) <= K.ISA_BUILDS.index("avx2")
                   for f, b, _, _ in K.KERNELS):
            continue                     # f32_attn: an amx build only
        path = K.load(fam, "avx2").__file__ if "avx2" in K.runnable_isas() else None
        if path is None:
            pytest.skip("CPU lacks avx2")
        dis = subprocess.run(["objdump", "-d", path], capture_output=True, text=True).stdout
        assert "vpdpbusd" not in dis and "%zmm" not in dis, fam


def test_probe():
    for isa in K.runnable_isas():
        r = K.load("qs8_gemm", isa).probe_peak(1, 100000)
        assert (r > 0) == (isa != "generic")
