"""FP32 3x3 stride-1 convolutions: the Winograd F(2x2, 3x3) path against the packed implicit
im2col path of the same kernel module (csrc/f32_wino.c, csrc/f32_conv.c), on the 3x3 convs of
the models issue #5 measures; pairs with tests/kernels/test_f32_conv.py.

    pytest benchmarks/bench_f32_conv.py --benchmark-only -s

Both paths in one process, the switch (`set_wino`) flipped between interleaved blocks; the
summary prints packed time / Winograd time per shape (above 1: Winograd faster)."""
import numpy as np
import pytest

from deepsparse_cy.kernels import load
from deepsparse_cy.kernels.f32conv import PackedConvF32, f32_conv2d
from _bench_common import nthreads, interleaved_best

# (name, C in, M out, H, W): 'same' 3x3 convs of the zoo models at their benchmark sizes
CONVS = [
    ("mbv3ocr_neck_12x80", 96, 24, 12, 80),       # MobileNetV3-OCR 48x320: neck / head convs
    ("yolov8n_c2f_80x80", 16, 16, 80, 80),        # YOLOv8n 320: C2f bottleneck, stride-4 level
    ("yolov8n_head_40x40", 64, 64, 40, 40),       # YOLOv8n 320: detection head, stride 8
    ("yolov8n_cls_40x40", 80, 80, 40, 40),
    ("resnet50_l1_56x56", 64, 64, 56, 56),        # ResNet-50: bottleneck 3x3 convs
    ("resnet50_l2_28x28", 128, 128, 28, 28),
    ("resnet50_l3_14x14", 256, 256, 14, 14),
]
IDS = [c[0] for c in CONVS]


def _setup(C, M, H, W):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, C, H, W)).astype(np.float32)
    pk = PackedConvF32((rng.standard_normal((M, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32))
    out = np.empty((1, M, H, W), np.float32)
    return x, pk, out


def _conv(x, pk, out, nt):
    return f32_conv2d(x, pk, (1, 1), (1, 1, 1, 1), out=out, num_threads=nt)


@pytest.mark.parametrize("conv", CONVS, ids=IDS)
@pytest.mark.parametrize("path", ["wino", "packed"])
def test_f32_conv3x3(benchmark, conv, path):
    _, C, M, H, W = conv
    mod = load("f32_conv", None)
    x, pk, out = _setup(C, M, H, W)
    was = mod.get_wino()
    mod.set_wino(path == "wino")
    try:
        benchmark(_conv, x, pk, out, nthreads())
    finally:
        mod.set_wino(was)


def test_f32_conv3x3_summary(benchmark):
    mod = load("f32_conv", None)
    nt = nthreads()
    was = mod.get_wino()
    lines = [f"threads {nt}; speedup = packed time / Winograd time (best of interleaved blocks)"]
    try:
        for name, C, M, H, W in CONVS:
            x, pk, out = _setup(C, M, H, W)
            mod.set_wino(True)
            used = mod.uses_wino(H, W)

            def run(on):
                mod.set_wino(on)
                _conv(x, pk, out, nt)

            best = interleaved_best({"wino": lambda: run(True), "packed": lambda: run(False)})
            macs = M * C * 9 * H * W
            lines.append(f"{name}: packed {best['packed'] * 1e3:.3f} ms "
                         f"({macs / best['packed'] / 1e9:.1f} GMAC/s), Winograd "
                         f"{best['wino'] * 1e3:.3f} ms ({macs / best['wino'] / 1e9:.1f} "
                         f"direct-equivalent GMAC/s), {best['packed'] / best['wino']:.2f}x"
                         + ("" if used else " (Winograd path not taken here)"))
            benchmark.extra_info[name] = lines[-1]
    finally:
        mod.set_wino(was)
    print("\n" + "\n".join(lines))
    benchmark.pedantic(lambda: None, rounds=1)
