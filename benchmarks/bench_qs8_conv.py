"""INT8 convolution paths of the quantized CNNs (issue #5's pruned + quantized variants), each
against the path it replaced, both in one process in interleaved blocks; pairs with
tests/kernels/test_qs8_dwconv.py.

    pytest benchmarks/bench_qs8_conv.py --benchmark-only -s

* k x k convs: the kernels gathering the im2col rows from NHWC input (PreparedQS8.conv) over the
  compiled im2col into a column buffer followed by the same prepared kernel;
* depthwise convs: the compiled kernel with the fused epilogue (PreparedQDW) over float32 sums
  (_f32_fused.dw_conv_nhwc_q8) with the requantization in numpy, the path QConv took before;
* layout copies: the blocked transposes over numpy's transposed copy.
* amx dense k x k convs: the direct conv (tiles loaded from a padded copy of x, no im2col rows)
  over the kernel gathering im2col rows per work item.
The summaries print old time / new time (above 1: the new path is faster)."""
import numpy as np

from deepsparse_cy import kernels as K
from deepsparse_cy.kernels import _f32_fused, _f32_ops
from _bench_common import nthreads, interleaved_best

# (name, C in, N out, H, W, k, stride, pad, weight format): the zoo models' k x k INT8 convs
KXK = [
    ("resnet50_stem_7x7s2", 3, 64, 224, 224, 7, 2, 3, "dense"),
    ("yolov8n320_stem_3x3s2", 3, 16, 320, 320, 3, 2, 1, "dense"),
    ("mbv3ocr_stem_3x3s2", 3, 8, 48, 320, 3, 2, 1, "dense"),
    ("mbv3ocr_head_12x80", 96, 24, 12, 80, 3, 1, 1, "dense"),
    ("yolov8n320_c2f_80x80", 16, 16, 80, 80, 3, 1, 1, "block4"),
    ("resnet50_l1_56x56", 64, 64, 56, 56, 3, 1, 1, "block4"),
]
# (name, C, H, W, k, stride): depthwise convs of the MobileNetV3-OCR at 48x320
DW = [("mbv3ocr_s0_24x160", 8, 24, 160, 3, 1), ("mbv3ocr_s1_24x160_s2", 32, 24, 160, 3, 2),
      ("mbv3ocr_s4_6x40_5x5", 64, 6, 40, 5, 1), ("mbv3ocr_s11_3x20", 240, 3, 20, 3, 1)]


def _weight(rng, n, k, fmt):
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    if fmt == "block4":
        keep = rng.random((n, -(-k // 4))) < 0.1
        w = (w * np.repeat(keep, 4, axis=1)[:, :k]).astype(np.int8)
    return w


def test_qs8_conv_gathered_rows_summary(benchmark):
    nt = nthreads()
    rng = np.random.default_rng(0)
    lines = [f"threads {nt}; speedup = im2col + kernel time / gathered-rows time (best of "
             f"interleaved blocks)"]
    for name, c, n, h, w, k, s, p, fmt in KXK:
        x = rng.integers(0, 256, (1, h, w, c)).astype(np.uint8)
        pr = K.prepare_qs8_matmul(K.pack_qs8(_weight(rng, n, k * k * c, fmt), fmt),
                                  scale=np.full(n, 1e-3, np.float32), out_dtype=np.uint8,
                                  x_zero_point=3)
        pads = (p,) * 4
        cols = np.ascontiguousarray(K.im2col_nhwc(x, (k, k), (s, s), pads, pad_value=3))
        out = np.empty((cols.shape[0], n), np.uint8)
        assert np.array_equal(pr.conv(x, (k, k), (s, s), pads, num_threads=nt),
                              pr(cols, num_threads=nt))
        best = interleaved_best({
            "gathered": lambda: pr.conv(x, (k, k), (s, s), pads, out=out, num_threads=nt),
            "im2col": lambda: pr(K.im2col_nhwc(x, (k, k), (s, s), pads, pad_value=3,
                                               num_threads=nt, out=cols), out=out,
                                 num_threads=nt)})
        lines.append(f"{name} ({fmt}): im2col + kernel {best['im2col'] * 1e3:.3f} ms, gathered "
                     f"{best['gathered'] * 1e3:.3f} ms, {best['im2col'] / best['gathered']:.2f}x")
        benchmark.extra_info[name] = lines[-1]
    print("\n" + "\n".join(lines))


# (name, C in, N out, H, W, k, stride): dense k x k convs for the amx build's direct conv
DIRECT = [("resnet50_stem_7x7s2", 3, 64, 224, 224, 7, 2),
          ("yolov8n320_stem_3x3s2", 3, 16, 320, 320, 3, 2),
          ("yolov8n640_c2f_160x160", 16, 16, 160, 160, 3, 1),
          ("yolov8n320_c2f_80x80", 32, 32, 80, 80, 3, 1),
          ("resnet50_l1_56x56", 64, 64, 56, 56, 3, 1),
          ("yolov8n320_20x20", 128, 128, 20, 20, 3, 1),
          ("yolov8n320_10x10", 128, 128, 10, 10, 3, 1)]


def test_qs8_conv_direct_summary(benchmark):
    """The amx build's dense conv reading its tiles from a padded copy of x (gemm_conv_direct)
    over the same kernel gathering im2col rows into per-item tiles (dscy_qs8_conv_amx)."""
    if K.kernel_builds().get("qs8_gemm") != "amx":
        print("\nno amx build of qs8_gemm on this machine: skipped")
        return
    nt = nthreads()
    rng = np.random.default_rng(1)
    lines = [f"threads {nt}; speedup = gathered-rows time / direct time (best of interleaved "
             f"blocks), dense weights"]
    for name, c, n, h, w, k, s in DIRECT:
        x = rng.integers(0, 256, (1, h, w, c)).astype(np.uint8)
        packed = K.pack_qs8(_weight(rng, n, k * k * c, "dense"), "dense")
        kw = dict(scale=np.full(n, 1e-3, np.float32), out_dtype=np.uint8, x_zero_point=3)
        direct, rows = K.prepare_qs8_matmul(packed, **kw), K.prepare_qs8_matmul(packed, **kw)
        rows._direct_ok = False
        pads = (k // 2,) * 4
        a = direct.conv(x, (k, k), (s, s), pads, num_threads=nt)
        assert f"wd{k}x{k}x{c}" in packed.arrays and np.array_equal(
            a, rows.conv(x, (k, k), (s, s), pads, num_threads=nt))
        out = np.empty_like(a)
        best = interleaved_best({
            "direct": lambda: direct.conv(x, (k, k), (s, s), pads, out=out, num_threads=nt),
            "rows": lambda: rows.conv(x, (k, k), (s, s), pads, out=out, num_threads=nt)})
        lines.append(f"{name}: gathered rows {best['rows'] * 1e3:.3f} ms, direct "
                     f"{best['direct'] * 1e3:.3f} ms, {best['rows'] / best['direct']:.2f}x")
        benchmark.extra_info[name] = lines[-1]
    print("\n" + "\n".join(lines))


def test_qs8_dwconv_summary(benchmark):
    nt = nthreads()
    rng = np.random.default_rng(1)
    lines = [f"threads {nt}; speedup = float sums + numpy requantization time / qs8_dwconv time"]
    for name, c, h, w, k, s in DW:
        x = rng.integers(0, 256, (1, h, w, c)).astype(np.uint8)
        wq = rng.integers(-127, 128, (c, k, k)).astype(np.int8)
        bias = rng.integers(-2000, 2000, c).astype(np.int32)
        sc = (rng.random(c) * 1e-3 + 1e-4).astype(np.float32)
        p = k // 2
        pr = K.prepare_qs8_dwconv(wq, bias=bias, scale=sc, out_dtype=np.uint8, out_zero_point=5,
                                  x_zero_point=7, activation="relu")
        ho, wo = K.conv.conv_output_hw(h, w, (k, k), (s, s), (p,) * 4)
        out = np.empty((ho * wo, c), np.uint8)
        acc = np.empty((1, ho, wo, c), np.float32)
        taps = np.ascontiguousarray(wq.reshape(c, k * k).T, np.float32)
        bf = bias.astype(np.float32)

        def old():
            _f32_fused.dw_conv_nhwc_q8(x, False, 7.0, taps, k, k, s, s, 1, 1, p, p, acc, nt)
            f = acc.reshape(-1, c)
            f += bf
            f *= sc
            np.maximum(f, np.float32(0), out=f)
            out[...] = np.clip(np.rint(f) + 5, 0, 255)

        old()
        ref = out.copy()
        pr(x, (s, s), (p,) * 4, out=out, num_threads=nt)
        assert np.array_equal(out, ref)
        best = interleaved_best({"new": lambda: pr(x, (s, s), (p,) * 4, out=out, num_threads=nt),
                                 "old": old})
        lines.append(f"{name}: float sums + numpy {best['old'] * 1e3:.3f} ms, qs8_dwconv "
                     f"{best['new'] * 1e3:.3f} ms, {best['old'] / best['new']:.2f}x")
        benchmark.extra_info[name] = lines[-1]
    print("\n" + "\n".join(lines))


def test_layout_transpose_summary(benchmark):
    nt = nthreads()
    rng = np.random.default_rng(2)
    lines = [f"threads {nt}; speedup = numpy transposed copy time / compiled transpose time"]
    for c, h, w in [(32, 80, 80), (64, 40, 40), (256, 10, 10)]:
        x = rng.integers(0, 256, (1, c, h, w)).astype(np.uint8)
        xn = np.empty((1, h, w, c), np.uint8)
        yn = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(1, h * w, c)
        yc = np.empty((1, c, h * w), np.uint8)
        yf, yfc = yn.astype(np.float32), yc.astype(np.float32)
        best = interleaved_best({
            "in_c": lambda: _f32_ops.nchw_to_nhwc_8(x, xn, nt),
            "in_np": lambda: np.copyto(xn, x.transpose(0, 2, 3, 1)),
            "out_c": lambda: _f32_ops.nhwc_to_nchw(yn, yc, nt),
            "out_np": lambda: np.copyto(yc, yn.transpose(0, 2, 1)),
            "outf_c": lambda: _f32_ops.nhwc_to_nchw(yf, yfc, nt),
            "outf_np": lambda: np.copyto(yfc, yf.transpose(0, 2, 1))})
        name = f"{c}x{h}x{w}"
        lines.append(f"{name}: NCHW->NHWC u8 {best['in_np'] / best['in_c']:.2f}x, NHWC->NCHW u8 "
                     f"{best['out_np'] / best['out_c']:.2f}x, f32 "
                     f"{best['outf_np'] / best['outf_c']:.2f}x")
        benchmark.extra_info[name] = lines[-1]
    print("\n" + "\n".join(lines))
