"""Optimizer update operators of domain ai.onnx.preview.training: Adagrad, Adam, Momentum.

Each takes R (learning rate), T (iteration count) and then n tensors per group: Adagrad
X.., G.., H..; Adam X.., G.., V.., H..; Momentum X.., G.., V.. . Outputs are the updated groups
in the same order (X_new.., then the updated state groups).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .registry import register

_DOMAIN = "ai.onnx.preview.training"


def _split(data, groups, name):
    if len(data) < groups or len(data) % groups:
        raise InputError(f"{name}: {len(data)} tensor inputs are not {groups} equal groups")
    n = len(data) // groups
    return [data[k * n:(k + 1) * n] for k in range(groups)]


def _s(x):
    return np.asarray(x).reshape(-1)[0]


@register("Adagrad", since=1, domain=_DOMAIN)
def Adagrad(R, T, *data, decay_factor=0.0, epsilon=1e-6, norm_coefficient=0.0):
    xs, gs, hs = _split(data, 3, "Adagrad")
    r = _s(R) / (1 + _s(T) * decay_factor)     # decayed learning rate
    new_x, new_h = [], []
    for x, g, h in zip(xs, gs, hs):
        g_reg = norm_coefficient * x + g
        h_new = h + g_reg * g_reg
        new_x.append((x - r * g_reg / (np.sqrt(h_new) + epsilon)).astype(x.dtype))
        new_h.append(h_new.astype(h.dtype))
    return tuple(new_x + new_h)


@register("Adam", since=1, domain=_DOMAIN)
def Adam(R, T, *data, alpha=0.9, beta=0.999, epsilon=1e-6, norm_coefficient=0.0,
         norm_coefficient_post=0.0):
    xs, gs, vs, hs = _split(data, 4, "Adam")
    r, t = _s(R), _s(T)
    if t > 0:                                   # bias correction of both moments
        r = r * np.sqrt(1 - beta ** t) / (1 - alpha ** t)
    out_x, out_v, out_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        g_reg = norm_coefficient * x + g
        v_new = alpha * v + (1 - alpha) * g_reg
        h_new = beta * h + (1 - beta) * (g_reg * g_reg)
        x_new = x - r * (v_new / (np.sqrt(h_new) + epsilon))
        out_x.append(((1 - norm_coefficient_post) * x_new).astype(x.dtype))
        out_v.append(v_new.astype(v.dtype))
        out_h.append(h_new.astype(h.dtype))
    return tuple(out_x + out_v + out_h)


@register("Momentum", since=1, domain=_DOMAIN)
def Momentum(R, T, *data, alpha, beta, mode, norm_coefficient):
    if mode not in ("standard", "nesterov"):
        raise InputError(f"Momentum: unknown mode {mode!r}")
    xs, gs, vs = _split(data, 3, "Momentum")
    r, t = _s(R), _s(T)
    b = beta if t > 0 else 1.0                  # the gradient's coefficient is 1 at step 0
    out_x, out_v = [], []
    for x, g, v in zip(xs, gs, vs):
        g_reg = norm_coefficient * x + g
        v_new = alpha * v + b * g_reg
        if mode == "nesterov":
            x_new = x - r * (g_reg + alpha * v_new)
        else:
            x_new = x - r * v_new
        out_x.append(x_new.astype(x.dtype))
        out_v.append(v_new.astype(v.dtype))
    return tuple(out_x + out_v)
