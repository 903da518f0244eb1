"""Loss operators: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (numpy references)."""
from __future__ import annotations

import numpy as np

from ..errors import InputError, ShapeError
from .registry import register


def _nll(logp, target, weight, reduction, ignore_index):
    """logp: (N, C, d1..dk) log-probabilities; target: (N, d1..dk) class indices."""
    if logp.ndim < 2:
        raise ShapeError(f"loss input must be at least 2D (N, C, ...), got {logp.shape}")
    if reduction not in ("none", "sum", "mean"):
        raise InputError(f"unknown reduction {reduction!r}")
    C = logp.shape[1]
    target = target.astype(np.int64, copy=False)
    ignored = (target == ignore_index) if ignore_index is not None else np.zeros(target.shape, bool)
    # ignored positions may hold out-of-range class ids: point them at class 0 before gathering
    safe = np.where(ignored, 0, target)
    if ((safe < 0) | (safe >= C)).any():
        raise InputError(f"target class index out of range [0, {C})")
    picked = np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
    loss = np.where(ignored, 0, -picked).astype(logp.dtype)
    if weight is not None:
        w = np.where(ignored, 0, weight[safe]).astype(logp.dtype)
        loss = loss * w
    elif ignore_index is not None:
        w = (~ignored).astype(logp.dtype)
    else:
        w = None
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.asarray(loss.sum(), dtype=logp.dtype)
    if w is None:
        return np.asarray(loss.mean(), dtype=logp.dtype)
    return np.asarray(loss.sum() / w.sum(), dtype=logp.dtype)


@register("NegativeLogLikelihoodLoss", since=12)
def NegativeLogLikelihoodLoss(input, target, weight=None, *, ignore_index=None, reduction="mean"):
    return _nll(input, target, weight, reduction, ignore_index)


def _log_softmax_axis1(x):
    m = np.max(x, axis=1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


@register("SoftmaxCrossEntropyLoss", since=12)
def SoftmaxCrossEntropyLoss(scores, labels, weights=None, *, ignore_index=None, reduction="mean"):
    logp = _log_softmax_axis1(scores).astype(scores.dtype)
    loss = _nll(logp, labels, weights, reduction, ignore_index)
    # The optional second output is the log-probabilities; returning it always is cheap.
    return loss, logp
