"""Sibling layers as one INT8 GEMM (prepare_qs8_parts: stacked weights, one epilogue and output
per part; dense, block4 and unstructured) against each part run alone and against the plain
numpy reference, bit-exact, at every ISA build this CPU runs."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from deepsparse_cy.kernels import qs8
from _kernel_cases import isa_params, sparse_weight


def _epilogues(rng, n, parts, zx):
    """One epilogue per part, cycling through float + mid step, u8 requantization, GELU (its
    table) into u8, ReLU into s8 and int32 sums."""
    eps = []
    for i in range(parts):
        kind = i % 5
        e = dict(bias=rng.integers(-5000, 5000, n).astype(np.int32),
                 scale=(rng.random(n) * 2e-3 + 1e-5).astype(np.float32), x_zero_point=zx)
        if kind == 0:
            e.update(out_dtype=np.float32,
                     mid=(np.uint8, int(rng.integers(0, 256)), np.float32(0.05),
                          rng.standard_normal(n).astype(np.float32)))
        elif kind == 1:
            e.update(out_dtype=np.uint8, out_zero_point=int(rng.integers(0, 256)))
        elif kind == 2:
            e.update(out_dtype=np.uint8, activation="gelu", y_scale=0.02,
                     mid=(np.uint8, 120, np.float32(0.03), rng.standard_normal(n).astype(np.float32)))
        elif kind == 3:
            e.update(out_dtype=np.int8, out_zero_point=-3, activation="relu")
        else:
            e = dict(bias=e["bias"], x_zero_point=zx, out_dtype=np.int32)
        eps.append(e)
    return eps


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("m", [1, 17, 128, 130])
@pytest.mark.parametrize("k,n,parts", [(3, 32, 2), (64, 64, 3), (769, 32, 4), (384, 96, 3),
                                       (100, 32, 1)])
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8])
def test_parts_equal_each_layer_alone(isa, m, k, n, parts, xdtype):
    rng = np.random.default_rng(m * 1000 + k * 7 + n + parts)
    ws = [rng.integers(-127, 128, (n, k)).astype(np.int8) for _ in range(parts)]
    for w in ws:
        w[rng.random(w.shape) < 0.5] = 0
    info = np.iinfo(xdtype)
    zx = int(rng.integers(0, 256)) if xdtype == np.uint8 else int(rng.integers(-128, 128))
    x = rng.integers(info.min, info.max + 1, (m, k)).astype(xdtype)
    eps = _epilogues(rng, n, parts, zx)
    pp = K.prepare_qs8_parts(ws, eps, isa=isa)
    got = pp(x, num_threads=2)
    assert len(got) == parts
    for i, (w, e) in enumerate(zip(ws, eps)):
        alone = K.prepare_qs8_matmul(K.pack_qs8(w, "dense", isa=isa), isa=isa, **e)(x)
        assert got[i].dtype == alone.dtype and got[i].shape == (m, n)
        np.testing.assert_array_equal(got[i], alone, err_msg=f"part {i}")
        if e.get("activation") != "gelu":       # the GELU table has its own reference test
            kw = {a: e[a] for a in ("bias", "scale", "out_dtype", "activation", "mid") if a in e}
            ref = K.qs8_matmul_reference(x, w, out_zero_point=e.get("out_zero_point", 0),
                                         x_zero_point=zx, **kw)
            np.testing.assert_array_equal(got[i], ref, err_msg=f"part {i} vs reference")
    # the bound call (the engine's) writes the same into the given arrays
    outs = [np.full_like(g, 7) for g in got]
    f, args = pp.bound(x, outs, 2)
    f(*args)
    for o, g in zip(outs, got):
        np.testing.assert_array_equal(o, g)


@pytest.mark.parametrize("isa", isa_params("qs8_spmm"))
@pytest.mark.parametrize("fmt", ["block4", "unstructured"])
@pytest.mark.parametrize("m", [1, 37, 64, 128, 200])
@pytest.mark.parametrize("k,n,parts", [(8, 64, 2), (100, 64, 3), (384, 128, 4), (64, 64, 1)])
@pytest.mark.parametrize("nt", [1, 2])
def test_sparse_parts_equal_each_layer_alone(isa, fmt, m, k, n, parts, nt):
    """The sparse kernel's parts: the stacked rows of each part (a multiple of 64, the row
    order's chunk) through that part's epilogue, on both thread splits (tokens: M >= 64 on two
    threads; rows: fewer tokens)."""
    rng = np.random.default_rng(m * 1000 + k * 7 + n + parts + nt)
    ws = [sparse_weight(rng, n, k, 0.85, fmt) for _ in range(parts)]
    xdtype = np.uint8 if m % 2 else np.int8
    info = np.iinfo(xdtype)
    zx = int(rng.integers(0, 256)) if xdtype == np.uint8 else int(rng.integers(-128, 128))
    x = rng.integers(info.min, info.max + 1, (m, k)).astype(xdtype)
    eps = _epilogues(rng, n, parts, zx)
    pp = K.prepare_qs8_parts(ws, eps, isa=isa, format=fmt)
    assert pp.packed.format == fmt
    got = pp(x, num_threads=nt)
    for i, (w, e) in enumerate(zip(ws, eps)):
        alone = K.prepare_qs8_matmul(K.pack_qs8(w, fmt, isa=isa), isa=isa, **e)(x, num_threads=nt)
        np.testing.assert_array_equal(got[i], alone, err_msg=f"part {i}")
        if e.get("activation") != "gelu":
            kw = {a: e[a] for a in ("bias", "scale", "out_dtype", "activation", "mid") if a in e}
            ref = K.qs8_matmul_reference(x, w, out_zero_point=e.get("out_zero_point", 0),
                                         x_zero_point=zx, **kw)
            np.testing.assert_array_equal(got[i], ref, err_msg=f"part {i} vs reference")
    outs = [np.full_like(g, 7) for g in got]
    f, args = pp.bound(x, outs, nt)
    f(*args)
    for o, g in zip(outs, got):
        np.testing.assert_array_equal(o, g)


@pytest.mark.parametrize("isa", isa_params())
def test_parts_output_rows_strided(isa):
    """Each part's output may be a column block of a wider array (rows further apart)."""
    rng = np.random.default_rng(5)
    ws = [rng.integers(-127, 128, (64, 80)).astype(np.int8) for _ in range(3)]
    eps = [dict(bias=rng.integers(-99, 99, 64).astype(np.int32),
                scale=np.full(64, 1e-3, np.float32), out_dtype=np.float32) for _ in ws]
    x = rng.integers(0, 256, (9, 80), dtype=np.uint8)
    wide = np.zeros((9, 3 * 64 + 16), np.float32)
    outs = [wide[:, i * 64:(i + 1) * 64] for i in range(3)]
    K.prepare_qs8_parts(ws, eps, isa=isa)(x, outs)
    for i, (w, e) in enumerate(zip(ws, eps)):
        np.testing.assert_array_equal(outs[i], K.qs8_matmul_reference(x, w, e["bias"], e["scale"]))
    assert not wide[:, 192:].any()


def test_parts_refused():
    rng = np.random.default_rng(0)
    w = rng.integers(-5, 5, (32, 16)).astype(np.int8)
    e = dict(scale=np.ones(32, np.float32))
    with pytest.raises(ValueError, match="multiple of 32"):
        K.prepare_qs8_parts([w[:16], w[:16]], [e, e])
    with pytest.raises(ValueError, match="multiple of 64"):
        K.prepare_qs8_parts([w, w], [e, e], format="block4")
    with pytest.raises(ValueError, match="format"):
        K.prepare_qs8_parts([w, w], [e, e], format="csr")
    with pytest.raises(ValueError, match="one shape"):
        K.prepare_qs8_parts([w, w[:, :8]], [e, e])
    with pytest.raises(ValueError, match="parts"):
        K.prepare_qs8_parts([w] * 5, [e] * 5)
    with pytest.raises(ValueError, match="one epilogue each"):
        K.prepare_qs8_parts([w, w], [e])
    with pytest.raises(ValueError, match="x_zero_point"):
        K.prepare_qs8_parts([w, w], [dict(e, x_zero_point=1), dict(e, x_zero_point=2)])
    pp = K.prepare_qs8_parts([w, w], [e, e])
    x = rng.integers(0, 256, (4, 16), dtype=np.uint8)
    with pytest.raises(ValueError, match="2 outputs"):
        pp(x, [np.empty((4, 32), np.float32)])
    with pytest.raises(ValueError, match=r"\[4, 32\]"):
        pp(x, [np.empty((4, 32), np.float32), np.empty((4, 31), np.float32)])
    with pytest.raises(ValueError):
        pp(x[:, :15])
    assert pp.bound(x, [np.empty((4, 32), np.float32)]) is None
    # the kernel entry itself refuses a split it cannot honour
    mod = K.load("qs8_gemm")
    args = list(pp._args(x, [np.empty((4, 32), np.float32)] * 2, 1))
    args[6] = args[6][:1] * 3          # three parts of 64 / 3 columns
    with pytest.raises(ValueError, match="parts"):
        mod.gemm_parts(*args)
    w64 = rng.integers(-5, 5, (64, 16)).astype(np.int8)
    e64 = dict(scale=np.ones(64, np.float32))
    sp = K.prepare_qs8_parts([w64, w64], [e64, e64], format="block4")
    args = list(sp._args(x, [np.empty((4, 64), np.float32)] * 2, 1))
    args[9] = args[9][:1] * 4          # four parts of 32 rows: not whole row-order chunks
    with pytest.raises(ValueError, match="parts"):
        K.load("qs8_spmm").spmm_parts(*args)
