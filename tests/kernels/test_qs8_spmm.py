"""Sparse INT8 GEMM (block4 / unstructured packs) against the numpy reference, bit-exact, at every
ISA build this CPU runs; packed sizes; the format chooser; conv helpers."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import deepsparse_cy.kernels as K
from _kernel_cases import isa_params, sparse_weight

SPARSITIES = [0.0, 0.3, 0.7, 0.9, 0.95, 0.99, 1.0]
SHAPES = [(1, 1, 1), (1, 9, 5), (3, 6, 17), (8, 31, 33), (9, 64, 65), (31, 130, 7), (32, 100, 64),
          (33, 257, 19), (40, 768, 24), (70, 103, 129), (128, 768, 40)]


def _check(x, w, fmt, isa, out_dtype=np.uint8, zp=17, xzp=0, act=None, clip=None, nt=None, seed=0):
    rng = np.random.default_rng(seed)
    n = w.shape[0]
    b = rng.integers(-30000, 30000, n).astype(np.int32)
    sc = (rng.random(n) * 3e-3 + 1e-5).astype(np.float32)
    p = K.pack_qs8(w, fmt)
    assert p.format == fmt
    np.testing.assert_array_equal(p.unpack(), w)
    got = K.qs8_matmul(x, p, b, sc, out_dtype, zp, xzp, act, clip, num_threads=nt, isa=isa)
    np.testing.assert_array_equal(got, K.qs8_matmul_reference(x, w, b, sc, out_dtype, zp, xzp, act, clip))


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("fmt", ["block4", "unstructured"])
@pytest.mark.parametrize("pattern", ["block4", "unstructured"])
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_spmm_patterns(isa, fmt, pattern, sparsity, shape):
    m, k, n = shape
    rng = np.random.default_rng(hash((m, k, n, int(sparsity * 100))) % 2**32)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = sparse_weight(rng, n, k, sparsity, pattern)
    _check(x, w, fmt, isa, xzp=int(rng.integers(0, 256)))


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("fmt", ["block4", "unstructured"])
@pytest.mark.parametrize("out", [(np.int32, 0), (np.float32, 0), (np.uint8, 0), (np.int8, -20)])
@pytest.mark.parametrize("act,clip", [(None, None), ("relu", None), ("clip", (-1.5, 2.0))])
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8])
def test_spmm_epilogues(isa, fmt, out, act, clip, xdtype):
    rng = np.random.default_rng(5)
    info = np.iinfo(xdtype)
    x = rng.integers(info.min, info.max + 1, (45, 90), dtype=xdtype)
    x[3] = info.min
    w = sparse_weight(rng, 37, 90, 0.8, "block4")
    w[2, :] = -128                             # extreme values stay exact (no int16 saturation)
    _check(x, w, fmt, isa, out[0], out[1], xzp=-3 if xdtype == np.int8 else 128, act=act, clip=clip)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("nt", [1, 2, 3, 64])
def test_spmm_threads_skewed_rows(isa, nt):
    """Rows with very different nonzero counts (and empty rows) split over threads."""
    rng = np.random.default_rng(6)
    w = sparse_weight(rng, 50, 200, 0.0, "dense")
    w[np.arange(50)[:, None] < np.arange(200)[None, :] // 4] = 0   # row n keeps ~4n weights
    w[10:20] = 0
    x = rng.integers(0, 256, (70, 200), dtype=np.uint8)
    for fmt in ("block4", "unstructured"):
        _check(x, w, fmt, isa, np.float32, 0, nt=nt)


def test_row_order_sorts_each_chunk():
    """row_order: a permutation of each aligned chunk of ROW_CHUNK rows, ascending block count
    (stable), -1 past N."""
    rng = np.random.default_rng(3)
    for n in (1, 63, 64, 65, 200):
        counts = rng.integers(0, 9, n)
        rp = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        o = K.row_order(rp)
        c = K.ROW_CHUNK
        assert o.dtype == np.int32 and o.shape == (-(-n // c) * c,)
        assert (o[n:] == -1).all()
        for c0 in range(0, n, c):
            part = o[c0:min(c0 + c, n)]
            assert sorted(part) == list(range(c0, min(c0 + c, n)))
            assert (np.diff(counts[part]) >= 0).all()
            eq = np.diff(counts[part]) == 0
            assert (np.diff(part)[eq] > 0).all()          # stable


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("nt", [1, 2, 3])
@pytest.mark.parametrize("m", [32, 49, 128])
@pytest.mark.parametrize("n", [200, 193])
def test_spmm_rows_in_chunk_order(isa, nt, m, n):
    """Rows run in row_order's order across several 64-row chunks, chunks cut by the threads'
    row ranges (m = 32: one token tile, rows split) or whole (m = 128: tiles split; m = 49: a
    full tile and a zero-padded one of 17 tokens), every
    output kind, random counts per row (so the order is far from the natural one)."""
    rng = np.random.default_rng(m + n + nt)
    k = 96
    w = sparse_weight(rng, n, k, 0.0, "dense")
    keep = rng.random((n, k // 4)) < rng.random((n, 1))          # each row its own density
    w = np.where(np.repeat(keep, 4, axis=1), w, 0).astype(np.int8)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    for fmt in ("block4", "unstructured"):
        _check(x, w, fmt, isa, np.uint8, 3, xzp=7, nt=nt, seed=n)
        _check(x, w, fmt, isa, np.float32, 0, act="relu", nt=nt, seed=n)
        _check(x, w, fmt, isa, np.int32, 0, nt=nt, seed=n)
        _check(x, w, fmt, isa, np.int8, -5, act="clip", clip=(-1.0, 1.5), nt=nt, seed=n)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("nt", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("m", [64, 70, 96, 128, 137, 291])
def test_spmm_token_tiles_per_thread(isa, nt, m):
    """Token counts whose 32-token tiles are split over the threads (each packs and multiplies
    its own tiles; 8-token tail tiles too) and those that fall back to splitting rows."""
    rng = np.random.default_rng(m * 10 + nt)
    x = rng.integers(0, 256, (m, 130), dtype=np.uint8)
    for fmt, pattern in (("block4", "block4"), ("unstructured", "unstructured")):
        w = sparse_weight(rng, 45, 130, 0.8, pattern)
        _check(x, w, fmt, isa, np.uint8, 3, xzp=100, nt=nt, seed=m)
        _check(x, w, fmt, isa, np.float32, 0, act="relu", nt=nt, seed=m)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("nt", [1, 2, 3])
@pytest.mark.parametrize("m", [511, 512, 520, 3840])
@pytest.mark.parametrize("k,n", [(8, 8), (8, 32), (16, 40), (4, 3)])
def test_spmm_few_blocks_many_tokens(isa, nt, m, k, n):
    """Layers with a handful of stored blocks over many tokens (a MobileNetV3's first 1x1
    convs): from 16 token tiles the tokens are split over the threads whatever the block count
    (spmm_run's DSCY_SPMM_SPLIT_TILES), below that one thread; bit-exact either way, with empty
    rows and an 8-token tail."""
    rng = np.random.default_rng(m + k * 7 + n)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = sparse_weight(rng, n, k, 0.875, "block4")
    w[0] = 0                                        # an empty row: bias only
    _check(x, w, "block4", isa, np.uint8, 9, xzp=128, nt=nt, seed=m)
    _check(x, w, "block4", isa, np.int8, -5, act="relu", nt=nt, seed=m)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("nt", [2, 3])
@pytest.mark.parametrize("m", [64, 128, 160, 201, 330])
def test_spmm_claimed_groups_and_row_chunks(isa, nt, m):
    """The token split's dynamic claims: groups of tiles (pairs of full tiles, a padded tile,
    8-token tails) times row chunks of 64 rows (few groups: up to ~8 claims a thread, so one
    group's rows run on several threads, each packing the group), rows of very different
    densities, every output kind, bit-exact whoever takes which chunk."""
    rng = np.random.default_rng(m * 7 + nt)
    k, n = 72, 650
    w = sparse_weight(rng, n, k, 0.0, "dense")
    keep = rng.random((n, k // 4)) < rng.random((n, 1)) ** 2
    w = np.where(np.repeat(keep, 4, axis=1), w, 0).astype(np.int8)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    for fmt in ("block4", "unstructured"):
        _check(x, w, fmt, isa, np.uint8, 3, xzp=9, nt=nt, seed=m)
        _check(x, w, fmt, isa, np.float32, 0, act="relu", nt=nt, seed=m)
        _check(x, w, fmt, isa, np.int32, 0, nt=nt, seed=m)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 80), k=st.integers(1, 300), n=st.integers(1, 50),
       sparsity=st.floats(0.0, 1.0), pattern=st.sampled_from(["block4", "unstructured"]),
       xdtype=st.sampled_from([np.uint8, np.int8]), seed=st.integers(0, 2**31))
def test_hypothesis_spmm(m, k, n, sparsity, pattern, xdtype, seed):
    """u8 and s8 activations (the avx512_vnni build stores s8 as x + 128 and corrects the bias)."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(xdtype)
    x = rng.integers(info.min, info.max + 1, (m, k), dtype=xdtype)
    w = sparse_weight(rng, n, k, sparsity, pattern)
    xzp = int(rng.integers(info.min, info.max + 1))
    for isa in K.runnable_isas():
        for fmt in ("block4", "unstructured"):
            _check(x, w, fmt, isa, xzp=xzp, seed=seed)


def test_packed_bytes():
    rng = np.random.default_rng(7)
    w = sparse_weight(rng, 768, 768, 0.9, "block4")
    p = K.pack_qs8(w, "block4")
    # 4 weights + 16-bit offset per full quad = 1.5 B per nonzero, plus 4 B per row (row_ptr)
    assert p.bytes_per_nnz <= 1.5
    assert p.nbytes <= 1.5 * p.nnz + 4 * (p.n + 1)
    u = K.pack_qs8(sparse_weight(rng, 768, 768, 0.9, "unstructured"), "unstructured")
    assert u.nbytes == u.arrays["row_ptr"].nbytes + 4 * u.nblocks
    d = K.pack_qs8(w, "dense")
    assert d.nbytes == 2 * 768 * 768


def test_chooser():
    rng = np.random.default_rng(8)
    n, k = 256, 768
    a = "avx2"                         # the cost model of the 16-bit kernels
    assert K.choose_format(sparse_weight(rng, n, k, 0.0, "dense"), a) == "dense"
    assert K.choose_format(sparse_weight(rng, n, k, 0.3, "unstructured"), a) == "dense"
    assert K.choose_format(sparse_weight(rng, n, k, 0.9, "block4"), a) == "block4"
    assert K.choose_format(sparse_weight(rng, n, k, 0.9, "unstructured"), a) == "unstructured"
    assert K.choose_format(sparse_weight(rng, n, k, 0.97, "unstructured"), a) == "unstructured"
    # vpdpbusd kernels: a pair costs what a quad does, so random patterns pack as block4 too
    v = "avx512_vnni"
    assert K.choose_format(sparse_weight(rng, n, k, 0.0, "dense"), v) == "dense"
    assert K.choose_format(sparse_weight(rng, n, k, 0.5, "unstructured"), v) == "dense"
    assert K.choose_format(sparse_weight(rng, n, k, 0.9, "block4"), v) == "block4"
    assert K.choose_format(sparse_weight(rng, n, k, 0.9, "unstructured"), v) == "block4"
    assert K.choose_format(sparse_weight(rng, n, k, 0.97, "unstructured"), v) == "block4"
    # a 4-block pruned weight with a few kept weight pairs rounded to zero stays block4
    w = sparse_weight(rng, n, k, 0.9, "block4")
    nz = np.argwhere(w != 0)
    for r, c in nz[rng.choice(len(nz), max(1, len(nz) // 200), replace=False)]:
        w[r, c & ~1:(c & ~1) + 2] = 0
    assert K.weight_pattern_stats(w)["pairs"] < 2 * K.weight_pattern_stats(w)["quads"]
    assert K.choose_format(w, a) == "block4" and K.choose_format(w, v) == "block4"
    p = K.pack_qs8(sparse_weight(rng, n, k, 0.95, "block4"))
    assert p.format == "block4" and set(p.costs) == {"dense", "block4", "unstructured"}
    st_ = K.weight_pattern_stats(sparse_weight(rng, n, k, 0.9, "block4"))
    assert st_["quad_occupancy"] == 1.0


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("cfg", [
    dict(ks=(1, 1), s=(1, 1), p=(0, 0, 0, 0), d=(1, 1)),
    dict(ks=(3, 3), s=(1, 1), p=(1, 1, 1, 1), d=(1, 1)),
    dict(ks=(3, 3), s=(2, 2), p=(1, 1, 1, 1), d=(1, 1)),
    dict(ks=(1, 1), s=(2, 2), p=(0, 0, 0, 0), d=(1, 1)),
    dict(ks=(3, 2), s=(1, 2), p=(0, 1, 2, 0), d=(2, 1)),
    dict(ks=(7, 7), s=(2, 2), p=(3, 3, 3, 3), d=(1, 1)),
], ids=["1x1", "3x3s1", "3x3s2", "1x1s2", "3x2dil", "7x7s2"])
@pytest.mark.parametrize("fmt", ["dense", "block4", "unstructured"])
def test_conv_nhwc_against_onnx_reference(isa, cfg, fmt):
    """qs8_conv2d_nhwc = ConvInteger (onnx reference evaluator as oracle) + epilogue."""
    import onnx
    from onnx import helper, TensorProto
    from onnx.reference import ReferenceEvaluator
    rng = np.random.default_rng(9)
    b, h, wd, cin, cout = 2, 9, 8, 5, 11
    x = rng.integers(0, 256, (b, h, wd, cin), dtype=np.uint8)
    kh, kw = cfg["ks"]
    wt = rng.integers(-128, 128, (cout, cin, kh, kw), dtype=np.int8)
    wt[rng.random(wt.shape) < 0.6] = 0
    xzp = 37
    node = helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], kernel_shape=list(cfg["ks"]),
                            strides=list(cfg["s"]), pads=list(cfg["p"]), dilations=list(cfg["d"]))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, None),
                                        helper.make_tensor_value_info("w", TensorProto.INT8, None),
                                        helper.make_tensor_value_info("xz", TensorProto.UINT8, None)],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    ref = ReferenceEvaluator(model).run(None, {"x": x.transpose(0, 3, 1, 2), "w": wt,
                                               "xz": np.array(xzp, np.uint8)})[0]
    packed = K.pack_qs8(K.conv_weight_matrix(wt), fmt)
    got = K.qs8_conv2d_nhwc(x, packed, cfg["ks"], cfg["s"], cfg["p"], cfg["d"], x_zero_point=xzp,
                            out_dtype=np.int32, isa=isa)
    np.testing.assert_array_equal(got, ref.transpose(0, 2, 3, 1))


_PLANAR_KINDS = {   # prepare_qs8_matmul arguments per epilogue kind of the sparse kernel
    "i32": dict(out_dtype=np.int32, activation=None),
    "f32_relu": dict(out_dtype=np.float32, activation="relu"),
    "u8_relu": dict(out_dtype=np.uint8, out_zero_point=17, activation="relu"),
    "s8_mid_clip": dict(out_dtype=np.int8, out_zero_point=-3, activation="clip", clip=(-1.0, 2.0),
                        y_scale=0.05, mid=(np.uint8, 5, 0.03, None)),
    "u8_gelu_table": dict(out_dtype=np.uint8, out_zero_point=4, activation="gelu", y_scale=0.05,
                          mid=(np.uint8, 120, 0.03, None)),
    "f32_gelu": dict(out_dtype=np.float32, activation="gelu"),      # the generic epilogue
}


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("fmt", ["block4", "unstructured"])
@pytest.mark.parametrize("kind", list(_PLANAR_KINDS))
@pytest.mark.parametrize("b,hw", [(2, 64), (1, 96), (2, 40), (3, 7)], ids=str)
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8])
def test_spmm_planar_output(isa, fmt, kind, b, hw, xdtype):
    """A planar [B, N, HW] output (a conv's NCHW layout, written by the kernel with no
    channels-last copy) holds exactly the [M, N] output's values, and a planar [B, K, HW]
    input (a 1x1 conv's NCHW input, packed from the planes) gives them too: whole 32-token
    tiles inside one image, tiles across two images, 8-token tails; both thread counts; u8 and
    s8 activations."""
    rng = np.random.default_rng(31)
    m, k, n = b * hw, 100, 37
    info = np.iinfo(xdtype)
    xzp = 128 if xdtype == np.uint8 else -5
    x = rng.integers(info.min, info.max + 1, (m, k), dtype=xdtype)
    p = K.pack_qs8(sparse_weight(rng, n, k, 0.8, fmt), fmt)
    bias = rng.integers(-3000, 3000, n).astype(np.int32)
    scale = (rng.random(n) * 3e-3 + 1e-5).astype(np.float32)
    kw = dict(_PLANAR_KINDS[kind])
    pr = K.prepare_qs8_matmul(p, bias, scale, x_zero_point=xzp, isa=isa, **kw)
    ref = pr(x)
    x3 = np.ascontiguousarray(x.reshape(b, hw, k).transpose(0, 2, 1))   # planar input
    for nt in (1, 2):
        out3 = np.full((b, n, hw), 7, ref.dtype)
        fn, args = pr.bound(x, out3, num_threads=nt)
        fn(*args)
        np.testing.assert_array_equal(out3, ref.reshape(b, hw, n).transpose(0, 2, 1))
        out3[:] = 7                               # planes in, planes out
        fn, args = pr.bound(x3, out3, num_threads=nt)
        fn(*args)
        np.testing.assert_array_equal(out3, ref.reshape(b, hw, n).transpose(0, 2, 1))
        out2 = np.full((m, n), 7, ref.dtype)      # planes in, rows out
        fn, args = pr.bound(x3, out2, num_threads=nt)
        fn(*args)
        np.testing.assert_array_equal(out2, ref)
    # a 3 x 3 conv gathering its own rows into the planar output
    xc = rng.integers(info.min, info.max + 1, (b, 6, 9, 12), dtype=xdtype)
    pc = K.pack_qs8(sparse_weight(rng, n, 108, 0.8, fmt), fmt)
    prc = K.prepare_qs8_matmul(pc, bias, scale, x_zero_point=xzp, isa=isa, **kw)
    refc = prc.conv(xc, (3, 3), (1, 1), (1, 1, 1, 1))
    out3 = np.zeros((b, n, 54), refc.dtype)
    fn, args = prc.conv_bound(xc, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), out3, 2)
    fn(*args)
    np.testing.assert_array_equal(out3, refc.reshape(b, 54, n).transpose(0, 2, 1))


def test_spmm_planar_output_refused():
    """Planar output only where the sparse kernel writes it well: not for the dense kernel
    (its bound call declines, its module raises), not with a residual, not non-contiguous."""
    rng = np.random.default_rng(32)
    x = rng.integers(0, 256, (64, 40), dtype=np.uint8)
    w = sparse_weight(rng, 24, 40, 0.8, "block4")
    sc = np.full(24, 1e-3, np.float32)
    pd = K.prepare_qs8_matmul(K.pack_qs8(w, "dense"), None, sc, np.uint8)
    assert pd.bound(x, np.zeros((2, 24, 32), np.uint8)) is None
    with pytest.raises(ValueError, match="planar"):
        pd._fn(*pd._args(x, np.zeros((2, 24, 32), np.uint8), None, 1))
    ps = K.prepare_qs8_matmul(K.pack_qs8(w, "block4"), None, sc, np.uint8)
    res = (np.zeros((64, 24), np.uint8), 0, 1.0)
    assert ps.bound(x, np.zeros((2, 24, 32), np.uint8), residual=res) is None
    assert ps.bound(x, np.zeros((2, 32, 24), np.uint8).transpose(0, 2, 1)) is None
    assert ps.bound(x, np.zeros((2, 24, 32), np.uint8)) is not None
    x3 = np.ascontiguousarray(x.reshape(2, 32, 40).transpose(0, 2, 1))
    assert pd.bound(x3, np.zeros((64, 24), np.uint8)) is None          # dense: rows only
    assert ps.bound(x3, np.zeros((64, 24), np.uint8)) is not None
    assert ps.bound(x3.transpose(0, 2, 1), np.zeros((64, 24), np.uint8)) is None


@pytest.mark.parametrize("isa", isa_params("qs8_spmm"))
@pytest.mark.parametrize("fmt", ["block4", "unstructured"])
@pytest.mark.parametrize("out", [(np.int32, 0), (np.uint8, 131), (np.float32, 0)],
                         ids=lambda o: np.dtype(o[0]).name)
def test_sparse_bound_call_reads_its_arrays_each_call(isa, fmt, out):
    """PreparedQS8.bound on the sparse kernel (the engine's bound step: a BoundSpmm prepared
    once), rows and planar x: each call reads x as it is then and writes out, equal to the
    reference, on one and two threads; prepare_qs8_parts' bound call likewise."""
    rng = np.random.default_rng(77)
    m, k, n = 70, 100, 128
    w = sparse_weight(rng, n, k, 0.85, fmt)
    b = rng.integers(-3000, 3000, n).astype(np.int32)
    sc = (rng.random(n) * 2e-3 + 1e-5).astype(np.float32)
    p = K.prepare_qs8_matmul(K.pack_qs8(w, fmt), b, sc, out[0], out[1], 5, isa=isa)
    x = np.empty((m, k), np.uint8)
    x3 = np.empty((2, k, m // 2), np.uint8)
    y = np.empty((m, n), out[0])
    for nt in (1, 2):
        for xin in (x, x3):
            f, args = p.bound(xin, y, nt)
            for _ in range(2):
                xin[...] = rng.integers(0, 256, xin.shape)
                rows = xin if xin.ndim == 2 else xin.transpose(0, 2, 1).reshape(m, k)
                f(*args)
                np.testing.assert_array_equal(
                    y, K.qs8_matmul_reference(rows, w, b, sc, out[0], out[1], 5))
    kws = [dict(bias=b[:64], scale=sc[:64], out_dtype=out[0], out_zero_point=out[1],
                x_zero_point=5), dict(bias=b[64:], scale=sc[64:], out_dtype=out[0],
                                      out_zero_point=out[1], x_zero_point=5)]
    pp = K.prepare_qs8_parts([w[:64], w[64:]], kws, isa=isa, format=fmt)
    outs = [np.empty((m, 64), out[0]) for _ in range(2)]
    f, args = pp.bound(x, outs, 2)
    for _ in range(2):
        x[...] = rng.integers(0, 256, x.shape)
        f(*args)
        for i, o in enumerate(outs):
            np.testing.assert_array_equal(o, K.qs8_matmul_reference(
                x, w[64 * i:64 * (i + 1)], b[64 * i:64 * (i + 1)], sc[64 * i:64 * (i + 1)],
                out[0], out[1], 5))
