"""Softmax / LogSoftmax / Hardmax, both axis semantics, vs onnxruntime + conformance cases."""
import numpy as np
import pytest

from tests.ops._cnn_common import check, conformance_params, run_conformance_case

FAMILY = ["Softmax", "LogSoftmax", "Hardmax"]


@pytest.mark.parametrize("op", FAMILY)
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_vs_ort(rng, op, opset, axis):
    x = (rng.standard_normal((2, 3, 4)) * 3).astype(np.float32)
    if op == "Hardmax":
        x[0, 0, :2] = 5.0            # ties: the first maximum wins
    check(op, [("x", x)], dict(axis=axis), opset=opset, const_sets=((),))


def test_default_axes(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    for op in FAMILY:
        check(op, [("x", x)], {}, opset=11, const_sets=((),))
        check(op, [("x", x)], {}, opset=13, const_sets=((),))


@pytest.mark.parametrize("case", conformance_params(FAMILY))
def test_conformance(case):
    run_conformance_case(case)
