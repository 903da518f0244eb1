"""Recurrent operators: RNN, GRU, LSTM (numpy references).

The input projection X @ W^T is done for all time steps in one matmul; the recurrence then loops
over time in Python (inherently sequential) with each step vectorised over batch and hidden.
Variable sequence_lens are handled per batch row by masking (forward) or by gathering each row's
own time index (reverse), so short rows stop updating and emit zeros past their end.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, ShapeError
from .registry import register


def _sigmoid(x):
    # split by sign so exp never overflows
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


# name -> (fn(x, alpha, beta), default alpha, default beta); alpha/beta None = not used
_ACTS = {
    "relu": (lambda x, a, b: np.maximum(x, 0), None, None),
    "tanh": (lambda x, a, b: np.tanh(x), None, None),
    "sigmoid": (lambda x, a, b: _sigmoid(x), None, None),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0)) - 1)), 1.0, None),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), None, None),
    "softplus": (lambda x, a, b: np.logaddexp(0, x), None, None),
}


def _activations(names, alphas, betas, per_dir, num_dir, defaults):
    """List (per direction) of lists of `per_dir` unary callables.

    alpha/beta lists are consumed in order by the activations that take them."""
    names = list(names) if names else list(defaults)
    if len(names) == per_dir and num_dir == 2:
        names = names * 2
    if len(names) != per_dir * num_dir:
        raise InputError(f"expected {per_dir * num_dir} activations, got {len(names)}")
    alphas = list(alphas or [])
    betas = list(betas or [])
    fns = []
    for nm in names:
        key = nm.lower()
        if key not in _ACTS:
            raise InputError(f"unsupported RNN activation {nm!r}")
        f, da, db = _ACTS[key]
        a = alphas.pop(0) if (da is not None and alphas) else da
        b = betas.pop(0) if (db is not None and betas) else db
        fns.append(lambda x, f=f, a=a, b=b: f(x, a, b))
    return [fns[d * per_dir:(d + 1) * per_dir] for d in range(num_dir)]


def _compute_dtype(dt):
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


class _Prep:
    """Shared decoding of inputs/attributes for the three recurrent ops."""

    def __init__(self, X, W, R, B, sequence_lens, initial, layout, direction, hidden_size, gates,
                 extra_states=()):
        if direction not in ("forward", "reverse", "bidirectional"):
            raise InputError(f"unknown direction {direction!r}")
        self.num_dir = 2 if direction == "bidirectional" else 1
        self.direction = direction
        self.dtype = X.dtype
        ct = self.ct = _compute_dtype(X.dtype)
        if X.ndim != 3:
            raise ShapeError(f"X must be 3D, got {X.shape}")
        x = X.astype(ct)
        self.layout = layout
        if layout:
            x = x.transpose(1, 0, 2)                     # -> (seq, batch, input)
        self.T, self.Bn, _ = x.shape
        if W.shape[0] != self.num_dir:
            raise ShapeError(f"W has {W.shape[0]} directions, expected {self.num_dir}")
        H = hidden_size or W.shape[1] // gates
        self.H = H
        self.W = W.astype(ct)
        self.R = R.astype(ct)
        if B is None:
            self.bias = np.zeros((self.num_dir, 2 * gates * H), ct)
        else:
            self.bias = B.astype(ct)
        self.x = x
        if sequence_lens is None:
            self.lens = None
        else:
            self.lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
            if (self.lens == self.T).all():
                self.lens = None                         # no padding: take the fast path
        self.init = []
        for s in (initial,) + tuple(extra_states):
            if s is None:
                self.init.append(np.zeros((self.num_dir, self.Bn, H), ct))
            else:
                s = s.astype(ct)
                self.init.append(s.transpose(1, 0, 2) if layout else s)

    def steps(self, d):
        """Yields (step, row time index per batch or scalar, active mask or None)."""
        reverse = self.direction == "reverse" or d == 1
        T = self.T
        if self.lens is None:
            for s in range(T):
                yield s, (T - 1 - s if reverse else s), None
            return
        rows = np.arange(self.Bn)
        for s in range(T):
            active = s < self.lens
            if reverse:
                t = np.clip(self.lens - 1 - s, 0, T - 1)
            else:
                t = np.full(self.Bn, s)
            yield s, (t, rows), active

    def outputs(self, Y, finals):
        """Y: (T, D, B, H) in compute dtype; finals: list of (D, B, H)."""
        dt = self.dtype
        if self.layout:
            Y = Y.transpose(2, 0, 1, 3)                  # (B, T, D, H)
            finals = [f.transpose(1, 0, 2) for f in finals]
        return (np.ascontiguousarray(Y, dtype=dt),) + tuple(np.ascontiguousarray(f, dtype=dt) for f in finals)


def _gather(a, idx):
    """a[(t, b)] for a (T, B, ...) array: scalar t -> a[t]; per-row (t, rows) -> a[t, rows]."""
    return a[idx] if isinstance(idx, tuple) else a[idx]


def _run_cell(p, gates, step_fn, n_states):
    """Common time loop. step_fn(d, xw_t, states) -> (h_new, new_states)."""
    T, Bn, H, D = p.T, p.Bn, p.H, p.num_dir
    Y = np.zeros((T, D, Bn, H), p.ct)
    finals = [np.empty((D, Bn, H), p.ct) for _ in range(n_states)]
    for d in range(D):
        gh = gates * H
        # one big matmul for the input projection of every time step (input bias folded in; the
        # recurrent bias stays separate because GRU's linear_before_reset needs it apart)
        xw = p.x @ p.W[d].T + p.bias[d, :gh]
        rb = p.bias[d, gh:]
        states = [s[d] for s in p.init]
        for s, idx, active in p.steps(d):
            new = step_fn(d, _gather(xw, idx), rb, states)
            if active is None:
                states = new
                Y[idx, d] = new[0]
            else:
                m = active[:, None]
                states = [np.where(m, n, o) for n, o in zip(new, states)]
                # inactive rows' clipped time index may alias a valid step: write active rows only
                Y[idx[0][active], d, idx[1][active]] = new[0][active]
        for k in range(n_states):
            finals[k][d] = states[k]
    return Y, finals


def _clip(x, clip):
    return np.clip(x, -clip, clip) if clip is not None else x


@register("RNN", since=7)
def RNN(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
        activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None,
        layout=0):
    p = _Prep(X, W, R, B, sequence_lens, initial_h, layout, direction, hidden_size, 1)
    acts = _activations(activations, activation_alpha, activation_beta, 1, p.num_dir, ["Tanh"])

    def step(d, xw, rb, st):
        (h,) = st
        return [acts[d][0](_clip(xw + h @ p.R[d].T + rb, clip))]

    Y, (Yh,) = _run_cell(p, 1, step, 1)
    return p.outputs(Y, [Yh])


@register("GRU", since=7)
def GRU(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
        activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None,
        layout=0, linear_before_reset=0):
    p = _Prep(X, W, R, B, sequence_lens, initial_h, layout, direction, hidden_size, 3)
    acts = _activations(activations, activation_alpha, activation_beta, 2, p.num_dir,
                        ["Sigmoid", "Tanh"])
    H = p.H

    def step(d, xw, rb, st):
        (h,) = st
        f, g = acts[d]
        Rd = p.R[d]
        hr_zr = h @ Rd[:2 * H].T + rb[:2 * H]                 # z, r recurrent parts
        zr = f(_clip(xw[:, :2 * H] + hr_zr, clip))
        z, r = zr[:, :H], zr[:, H:]
        if linear_before_reset:
            hh = g(_clip(xw[:, 2 * H:] + r * (h @ Rd[2 * H:].T + rb[2 * H:]), clip))
        else:
            hh = g(_clip(xw[:, 2 * H:] + (r * h) @ Rd[2 * H:].T + rb[2 * H:], clip))
        return [(1 - z) * hh + z * h]

    Y, (Yh,) = _run_cell(p, 3, step, 1)
    return p.outputs(Y, [Yh])


@register("LSTM", since=7)
def LSTM(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *,
         activation_alpha=None, activation_beta=None, activations=None, clip=None,
         direction="forward", hidden_size=None, input_forget=0, layout=0):
    p = _Prep(X, W, R, B, sequence_lens, initial_h, layout, direction, hidden_size, 4,
              extra_states=(initial_c,))
    acts = _activations(activations, activation_alpha, activation_beta, 3, p.num_dir,
                        ["Sigmoid", "Tanh", "Tanh"])
    H = p.H
    peep = np.zeros((p.num_dir, 3 * H), p.ct) if P is None else P.astype(p.ct)

    def step(d, xw, rb, st):
        h, c = st
        f, g, hf = acts[d]
        pre = xw + h @ p.R[d].T + rb                          # gate order i, o, f, c
        pi, po, pf = peep[d, :H], peep[d, H:2 * H], peep[d, 2 * H:]
        i = f(_clip(pre[:, :H] + pi * c, clip))
        fg = 1 - i if input_forget else f(_clip(pre[:, 2 * H:3 * H] + pf * c, clip))
        c_new = fg * c + i * g(_clip(pre[:, 3 * H:], clip))
        o = f(_clip(pre[:, H:2 * H] + po * c_new, clip))
        return [o * hf(c_new), c_new]

    Y, (Yh, Yc) = _run_cell(p, 4, step, 2)
    return p.outputs(Y, [Yh, Yc])
