"""deepsparse_cy/ops/cast.py against onnx's ReferenceEvaluator and the node test cases."""
import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto as TP

from _ref_common import check, node_cases

RNG = np.random.default_rng(1)
NUMERIC = [TP.FLOAT, TP.DOUBLE, TP.FLOAT16, TP.BFLOAT16, TP.INT8, TP.UINT8, TP.INT16, TP.INT32,
           TP.INT64, TP.UINT32, TP.BOOL]


def sample(dt):
    x = RNG.uniform(-100, 100, size=(3, 5))
    if np.dtype(dt) == bool:
        return x > 0
    if np.dtype(dt).kind == "u":
        x = np.abs(x)
    return x.astype(dt)


@pytest.mark.parametrize("src", [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, bool])
@pytest.mark.parametrize("to", NUMERIC)
def test_numeric(src, to):
    check("Cast", [("x", sample(src))], {"to": to}, rtol=1e-2, atol=0.5)


@pytest.mark.parametrize("to", [TP.FLOAT8E4M3FN, TP.FLOAT8E4M3FNUZ, TP.FLOAT8E5M2, TP.FLOAT8E5M2FNUZ])
@pytest.mark.parametrize("saturate", [0, 1])
def test_float8(to, saturate):
    x = np.array([0.0, -0.0, 0.3, -2.5, 1e6, -1e6, np.inf, -np.inf, np.nan, 448.0, 500.0, 57344.0],
                 np.float32)
    check("Cast", [("x", x)], {"to": to, "saturate": saturate}, opset=21, rtol=0, atol=0)


@pytest.mark.parametrize("to", [TP.INT4, TP.UINT4, TP.FLOAT4E2M1])
def test_4bit(to):
    check("Cast", [("x", np.arange(-9, 16).astype(np.float32))], {"to": to}, opset=23, atol=0)


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [0, 1])
def test_e8m0(round_mode, saturate):
    x = np.array([1.0, 1.5, 3.0, 0.7, 1e30, 2.0 ** -126, 3.0e38], np.float32)
    check("Cast", [("x", x)], {"to": TP.FLOAT8E8M0, "round_mode": round_mode, "saturate": saturate},
          opset=25, rtol=0, atol=0)


def test_strings():
    s = np.array(["1.5", "-2", "INF", "-inf", "NaN", "1e-5"], dtype=object)
    check("Cast", [("x", s)], {"to": TP.FLOAT}, test_out=False)
    check("Cast", [("x", np.array(["12", "-7"], dtype=object))], {"to": TP.INT64}, test_out=False)
    got = check("Cast", [("x", np.array([1.5, -2.0], np.float32))], {"to": TP.STRING}, test_out=False)
    assert got[0].dtype == object and got[0].tolist() == ["1.5", "-2.0"]


def test_cast_1_string_to_attr():
    from deepsparse_cy.ops.cast import Cast
    assert Cast(np.array([1.7], np.float32), to="INT32").dtype == np.int32


def test_castlike():
    check("CastLike", [("x", sample(np.float32)), ("t", np.zeros(1, np.int16))], test_out=False)
    check("CastLike", [("x", sample(np.float32)), ("t", np.zeros(1, ml_dtypes.bfloat16))], test_out=False)


@pytest.mark.parametrize("src,to", [(np.float32, TP.INT32), (np.int64, TP.DOUBLE), (np.uint8, TP.INT8),
                                    (np.float16, TP.UINT16), (np.float32, TP.FLOAT)])
def test_bitcast(src, to):
    check("BitCast", [("x", sample(src))], {"to": to}, opset=26, rtol=0, atol=0, test_out=False)


def test_node_cases():
    ran, fails = node_cases(["Cast", "CastLike", "BitCast"])
    assert ran > 150
    assert not fails, fails
