"""Random generators: RandomUniform, RandomNormal, RandomUniformLike, RandomNormalLike, Bernoulli,
Multinomial.

With a `seed` attribute every call starts from np.random.RandomState(seed), so a seeded node is
reproducible run to run and gives the same numbers as onnx's reference evaluator. Without one,
each node owns a generator seeded from OS entropy that advances across calls.

These nodes must never be constant-folded (graph.passes.NONDETERMINISTIC lists them).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..graph.ir import elem_dtype
from .registry import Op, register


def _dtype(code, like=None, default=np.float32):
    if code is None or code == 0:
        return np.dtype(like.dtype if like is not None else default)
    dt = elem_dtype(code)
    if dt is None:
        raise InputError(f"unsupported dtype {code}")
    return dt


class _RandomOp(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.a = node.attrs
        seed = self.a.get("seed")
        self.seed = None if seed is None else int(seed)
        self._state = None if self.seed is not None else np.random.RandomState(
            np.random.SeedSequence().generate_state(4))

    def state(self):
        return np.random.RandomState(self.seed) if self.seed is not None else self._state


@register("RandomUniform", since=1)
class RandomUniform(_RandomOp):
    def run(self, inputs, outs):
        shape = tuple(self.a["shape"])
        dt = _dtype(self.a.get("dtype", 1))
        lo, hi = self.a.get("low", 0.0), self.a.get("high", 1.0)
        r = self.state().rand(*shape).astype(dt)
        return [(r * (hi - lo) + lo).astype(dt)]


@register("RandomNormal", since=1)
class RandomNormal(_RandomOp):
    def run(self, inputs, outs):
        shape = tuple(self.a["shape"])
        dt = _dtype(self.a.get("dtype", 1))
        r = self.state().randn(*shape).astype(dt)
        return [(r * self.a.get("scale", 1.0) + self.a.get("mean", 0.0)).astype(dt)]


@register("RandomUniformLike", since=1)
class RandomUniformLike(_RandomOp):
    def run(self, inputs, outs):
        x = inputs[0]
        dt = _dtype(self.a.get("dtype"), like=x)
        lo, hi = self.a.get("low", 0.0), self.a.get("high", 1.0)
        r = self.state().rand(*x.shape).astype(dt)
        return [(r * (hi - lo) + lo).astype(dt)]


@register("RandomNormalLike", since=1)
class RandomNormalLike(_RandomOp):
    def run(self, inputs, outs):
        x = inputs[0]
        dt = _dtype(self.a.get("dtype"), like=x)
        r = self.state().randn(*x.shape).astype(dt)
        return [(r * self.a.get("scale", 1.0) + self.a.get("mean", 0.0)).astype(dt)]


@register("Bernoulli", since=15)
class Bernoulli(_RandomOp):
    def run(self, inputs, outs):
        p = inputs[0]
        dt = _dtype(self.a.get("dtype"), like=p)
        return [self.state().binomial(1, p=p).astype(dt)]


@register("Multinomial", since=7)
class Multinomial(_RandomOp):
    """input (batch, classes) unnormalised log-probabilities -> (batch, sample_size) class ids."""

    def run(self, inputs, outs):
        x = inputs[0]
        if x.ndim != 2:
            raise InputError(f"Multinomial input must be (batch, classes), got {x.shape}")
        n = int(self.a.get("sample_size", 1))
        dt = _dtype(self.a.get("dtype", 6))
        logits = x.astype(np.float64)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        cdf /= cdf[:, -1:]
        u = self.state().rand(x.shape[0], n)
        # inverse-CDF sampling, vectorised per row
        idx = np.empty((x.shape[0], n), np.int64)
        for b in range(x.shape[0]):
            idx[b] = np.searchsorted(cdf[b], u[b], side="right")
        return [np.minimum(idx, x.shape[1] - 1).astype(dt)]
