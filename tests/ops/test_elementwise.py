"""deepsparse_cy/ops/elementwise.py against onnx's ReferenceEvaluator and the node test cases."""
import numpy as np
import pytest

from _ref_common import check, node_cases

RNG = np.random.default_rng(0)
SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (5,)), ((0, 3), (3,))]
FLOATS = [np.float32, np.float64, np.float16]
INTS = [np.int8, np.uint8, np.int32, np.int64]


def rand(shape, dt, lo=-5, hi=5):
    dt = np.dtype(dt)
    if dt.kind == "f":
        return RNG.uniform(lo, hi, size=shape).astype(dt)
    if dt.kind == "u":
        lo = max(lo, 0)
    if dt == bool:
        return RNG.integers(0, 2, size=shape).astype(bool)
    return RNG.integers(lo, hi, size=shape, endpoint=True).astype(dt)


def nonzero(shape, dt):
    a = rand(shape, dt, 1, 5)
    if np.dtype(dt).kind in "if":
        a = a * np.where(RNG.random(shape) < 0.5, -1, 1).astype(dt)
    return a


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
@pytest.mark.parametrize("dt", FLOATS + INTS)
@pytest.mark.parametrize("shapes", SHAPES)
def test_add_sub_mul(op, dt, shapes):
    check(op, [("a", rand(shapes[0], dt)), ("b", rand(shapes[1], dt))], rtol=1e-3)


@pytest.mark.parametrize("dt", FLOATS + INTS)
@pytest.mark.parametrize("shapes", SHAPES)
def test_div(dt, shapes):
    # Integer division truncates toward zero (C), not numpy's floor.
    check("Div", [("a", rand(shapes[0], dt, -20, 20)), ("b", nonzero(shapes[1], dt))], rtol=1e-3)


def test_div_int_truncates():
    got = check("Div", [("a", np.array([-7, 7, -7, 7], np.int32)), ("b", np.array([2, 2, -2, -2], np.int32))])
    assert got[0].tolist() == [-3, 3, 3, -3]


@pytest.mark.parametrize("dt", [np.int32, np.int64, np.int8])
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_int(dt, fmod):
    check("Mod", [("a", rand((4, 5), dt, -20, 20)), ("b", nonzero((5,), dt))], {"fmod": fmod})


@pytest.mark.parametrize("dt", FLOATS)
def test_mod_float_fmod(dt):
    check("Mod", [("a", rand((4, 5), dt, -20, 20)), ("b", nonzero((5,), dt))], {"fmod": 1}, rtol=1e-3)


@pytest.mark.parametrize("a_dt,b_dt", [(np.float32, np.float32), (np.float64, np.float64),
                                       (np.float32, np.int64), (np.int32, np.float32),
                                       (np.int64, np.int64), (np.int32, np.int32)])
def test_pow(a_dt, b_dt):
    a = rand((3, 4), a_dt, 1, 4)
    b = rand((4,), b_dt, 0, 3)
    got = check("Pow", [("a", a), ("b", b)], rtol=1e-5)
    assert got[0].dtype == np.dtype(a_dt)   # Pow keeps the base's type


UNARY = {
    "Abs": (-5, 5), "Neg": (-5, 5), "Exp": (-5, 5), "Log": (0.1, 5), "Sqrt": (0, 5),
    "Reciprocal": (0.5, 5), "Floor": (-5, 5), "Ceil": (-5, 5), "Round": (-5, 5), "Sign": (-5, 5),
    "Erf": (-4, 4), "Sin": (-3, 3), "Cos": (-3, 3), "Tan": (-1, 1), "Asin": (-1, 1),
    "Acos": (-1, 1), "Atan": (-5, 5), "Sinh": (-3, 3), "Cosh": (-3, 3), "Asinh": (-5, 5),
    "Acosh": (1, 5), "Atanh": (-0.9, 0.9), "Tanh": (-5, 5), "Relu": (-5, 5), "Sigmoid": (-30, 30),
    "Softplus": (-30, 30), "Softsign": (-5, 5), "HardSwish": (-5, 5), "Mish": (-10, 10),
    "Elu": (-5, 5), "Selu": (-5, 5), "Celu": (-5, 5), "HardSigmoid": (-5, 5),
    "LeakyRelu": (-5, 5), "ThresholdedRelu": (-5, 5), "Shrink": (-5, 5),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5), (), (0,)])
def test_unary_float(op, dt, shape):
    lo, hi = UNARY[op]
    x = rand(shape, dt, lo, hi)
    if op == "Softsign" and shape == ():
        # ReferenceEvaluator's Softsign rejects 0-d input; check the formula directly.
        from deepsparse_cy.ops.elementwise import Softsign
        r = Softsign(x)
        assert r.dtype == x.dtype and r.shape == ()
        np.testing.assert_allclose(r, x / (1 + abs(x)), rtol=1e-6)
        return
    check(op, [("x", x)], rtol=1e-5, atol=1e-6)


def test_round_half_to_even():
    got = check("Round", [("x", np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4], np.float32))])
    assert got[0].tolist() == [0, 2, 2, -0, -2, 2]


@pytest.mark.parametrize("op", ["Abs", "Neg", "Sign", "Relu"])
@pytest.mark.parametrize("dt", [np.int8, np.int32, np.int64])
def test_unary_int(op, dt):
    check(op, [("x", rand((3, 7), dt))], opset=21)


@pytest.mark.parametrize("op,attrs", [("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.5}),
                                      ("Selu", {"alpha": 1.5, "gamma": 2.0}), ("Celu", {"alpha": 2.0}),
                                      ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
                                      ("ThresholdedRelu", {"alpha": 0.7}),
                                      ("Shrink", {"lambd": 1.5, "bias": 0.5})])
def test_activation_attrs(op, attrs):
    check(op, [("x", rand((4, 6), np.float32))], attrs)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_gelu(approximate, dt):
    check("Gelu", [("x", rand((5, 7), dt))], {"approximate": approximate}, rtol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_swish(alpha):
    check("Swish", [("x", rand((5, 7), np.float32, -20, 20))], {"alpha": alpha}, opset=24)


def test_swiglu():
    check("SwiGLU", [("a", rand((3, 8), np.float32)), ("b", rand((3, 8), np.float32))],
          {"alpha": 1.5}, opset=28)


@pytest.mark.parametrize("slope_shape", [(1,), (4,), (3, 1, 1), (3, 2, 4)])
def test_prelu(slope_shape):
    check("PRelu", [("x", rand((3, 2, 4), np.float32)), ("s", rand(slope_shape, np.float32))])


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
@pytest.mark.parametrize("dt", [np.float32, np.int32, np.int64, np.uint8])
def test_compare(op, dt):
    check(op, [("a", rand((3, 4), dt, 0, 3)), ("b", rand((4,), dt, 0, 3))])


def test_equal_strings():
    a = np.array(["a", "b", "c"], dtype=object)
    b = np.array(["a", "x", "c"], dtype=object)
    check("Equal", [("a", a), ("b", b)], test_out=False)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op):
    check(op, [("a", rand((2, 3, 4), bool)), ("b", rand((3, 4), bool))])


def test_not():
    check("Not", [("x", rand((2, 3), bool))])


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
@pytest.mark.parametrize("dt", [np.int8, np.uint16, np.int32, np.uint64])
def test_bitwise(op, dt):
    check(op, [("a", rand((3, 4), dt, 0, 100)), ("b", rand((4,), dt, 0, 100))])


@pytest.mark.parametrize("dt", [np.int8, np.uint8, np.int32, np.uint64])
def test_bitwise_not(dt):
    check("BitwiseNot", [("x", rand((3, 4), dt, 0, 100))])


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dt", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_bitshift(direction, dt):
    check("BitShift", [("x", rand((3, 4), dt, 0, 200)), ("y", rand((4,), dt, 0, 7))],
          {"direction": direction})


def test_bitshift_out_of_range_amounts():
    x = np.array([1, 255, 16, 7], np.uint8)
    y = np.array([8, 9, 100, 1], np.uint8)
    got = check("BitShift", [("x", x), ("y", y)], {"direction": "LEFT"}, test_out=False)
    assert got[0].tolist() == [0, 0, 0, 14]


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dt", [np.float32, np.int32])
def test_variadic(op, n, dt):
    shapes = [(2, 3, 4), (3, 1), (4,)][:n]
    check(op, [(f"x{i}", rand(s, dt)) for i, s in enumerate(shapes)], rtol=1e-5)


@pytest.mark.parametrize("bounds", [(-1.0, 2.0), (None, 2.0), (-1.0, None), (None, None), (3.0, 1.0)])
@pytest.mark.parametrize("dt", [np.float32, np.int32])
def test_clip_inputs(bounds, dt):
    lo, hi = bounds
    ins = [("x", rand((4, 5), dt)), ("lo", None if lo is None else np.array(lo, dt)),
           ("hi", None if hi is None else np.array(hi, dt))]
    check("Clip", ins, opset=13)


def test_clip_attrs():
    check("Clip", [("x", rand((4, 5), np.float32))], {"min": -0.5, "max": 0.5}, opset=6)
    check("Clip", [("x", rand((4, 5), np.float32))], {"max": 0.5}, opset=6)


@pytest.mark.parametrize("dt", [np.float32, np.int64, bool])
def test_where(dt):
    check("Where", [("c", rand((3, 1, 4), bool)), ("x", rand((2, 4), dt)), ("y", rand((4,), dt))])


def test_isnan_isinf():
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0], np.float32)
    check("IsNaN", [("x", x)])
    for neg in (0, 1):
        for pos in (0, 1):
            check("IsInf", [("x", x)], {"detect_negative": neg, "detect_positive": pos}, test_out=False)


def test_legacy_broadcast_attr():
    # Add-6 with broadcast=1, axis=1: B of shape (3,) aligns with A's dim 1.
    a = rand((2, 3, 4), np.float32)
    b = rand((3,), np.float32)
    m_exp = a + b.reshape(3, 1)
    from _ref_common import model, run_mine
    m, feeds = model("Add", [("a", a), ("b", b)], attrs={"broadcast": 1, "axis": 1}, opset=6)
    np.testing.assert_allclose(run_mine(m, feeds)[0], m_exp)


def test_out_buffer_is_used():
    a, b = rand((8, 16), np.float32), rand((16,), np.float32)
    from deepsparse_cy.ops.elementwise import Add, Sigmoid
    out = np.empty((8, 16), np.float32)
    assert Add(a, b, out=out) is out
    assert Sigmoid(a, out=out) is out
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-a)), rtol=1e-6)


def test_sigmoid_no_overflow_warning():
    x = np.array([-1000.0, 0.0, 1000.0], np.float32)
    with np.errstate(all="raise"):
        from deepsparse_cy.ops.elementwise import Sigmoid
        np.testing.assert_array_equal(Sigmoid(x), [0.0, 0.5, 1.0])


FAMILY = ["Add", "Sub", "Mul", "Div", "Pow", "Mod", "Abs", "Neg", "Exp", "Log", "Sqrt",
          "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Erf", "Sin", "Cos", "Tan", "Asin", "Acos",
          "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Min", "Max", "Sum", "Mean", "Clip",
          "Where", "IsNaN", "IsInf", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
          "BitwiseNot", "And", "Or", "Xor", "Not", "Equal", "Less", "Greater", "LessOrEqual",
          "GreaterOrEqual", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid",
          "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Tanh", "ThresholdedRelu", "Shrink",
          "Gelu", "Mish", "Swish", "SwiGLU"]


def test_node_cases():
    ran, fails = node_cases(FAMILY)
    assert ran > 300
    assert not fails, fails
