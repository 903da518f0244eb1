"""Signal processing: DFT (17, 20), STFT, Hann/Hamming/Blackman windows, MelWeightMatrix.

Complex tensors follow ONNX's convention: a trailing axis of 2 (real, imaginary) or 1 (real).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, ShapeError
from .registry import register

_FLOAT = 1  # TensorProto.FLOAT


def _np_dtype(tp):
    from ..graph.ir import elem_dtype
    dt = elem_dtype(tp)
    if dt is None:
        raise InputError(f"unsupported output_datatype {tp}")
    return dt


def _to_complex(x):
    """(..., 1|2) real representation -> complex array without the trailing axis.

    Precision follows the input (complex64 for float32 and narrower): the conformance data is
    produced at that precision and its tolerances are tight around exact zeros."""
    ft = np.float64 if x.dtype == np.float64 else np.float32
    if x.shape[-1] == 1:
        return x[..., 0].astype(ft)
    if x.shape[-1] == 2:
        c = np.empty(x.shape[:-1], np.complex128 if ft is np.float64 else np.complex64)
        c.real = x[..., 0]
        c.imag = x[..., 1]
        return c
    raise ShapeError(f"complex tensors need a trailing axis of 1 or 2, got {x.shape}")


def _from_complex(c, dtype):
    return np.stack([c.real, c.imag], axis=-1).astype(dtype)


def _dft(x, dft_length, axis, inverse, onesided):
    if x.ndim < 2:
        raise ShapeError(f"DFT input must have at least 2 dims, got {x.shape}")
    axis = int(axis)
    if not -x.ndim <= axis < x.ndim - 1 and not axis == -1 and axis >= 0:
        raise InputError(f"DFT axis {axis} out of range")
    axis = axis % x.ndim
    if axis == x.ndim - 1:
        raise InputError("DFT axis cannot be the trailing (real/imaginary) axis")
    n = None if dft_length is None else int(np.asarray(dft_length).reshape(-1)[0])
    c = _to_complex(x)
    if inverse:
        if onesided:
            n = 2 * (x.shape[axis] - 1) if n is None else n
            return np.fft.irfft(c, n=n, axis=axis)[..., None].astype(x.dtype)
        return _from_complex(np.fft.ifft(c, n=n, axis=axis), x.dtype)
    if onesided and x.shape[-1] == 1:
        r = np.fft.rfft(c, n=n, axis=axis)        # real input: only the unique half is needed
    else:
        r = np.fft.fft(c, n=n, axis=axis)
        if onesided:
            r = np.take(r, np.arange(r.shape[axis] // 2 + 1), axis=axis)
    return _from_complex(r, x.dtype)


@register("DFT", since=17)
def DFT_17(input, dft_length=None, *, axis=1, inverse=0, onesided=0):
    return _dft(input, dft_length, axis, inverse, onesided)


@register("DFT", since=20)
def DFT_20(input, dft_length=None, axis=None, *, inverse=0, onesided=0):
    ax = -2 if axis is None else int(np.asarray(axis).reshape(-1)[0])
    return _dft(input, dft_length, ax, inverse, onesided)


@register("STFT", since=17)
def STFT(signal, frame_step, window=None, frame_length=None, *, onesided=1):
    """signal (B, L, 1|2) -> (B, frames, bins, 2)."""
    if signal.ndim != 3:
        raise ShapeError(f"STFT signal must be (batch, length, 1|2), got {signal.shape}")
    step = int(np.asarray(frame_step).reshape(-1)[0])
    if frame_length is not None:
        flen = int(np.asarray(frame_length).reshape(-1)[0])
    elif window is not None:
        flen = window.shape[0]
    else:
        raise InputError("STFT needs a window or frame_length")
    wlen = flen if window is None else window.shape[0]
    L = signal.shape[1]
    n_frames = 1 + (L - flen) // step
    if n_frames < 1 or step < 1:
        raise ShapeError(f"STFT: signal length {L} shorter than frame length {flen}")
    c = _to_complex(signal)                                   # (B, L)
    idx = np.arange(n_frames)[:, None] * step + np.arange(wlen)[None, :]
    valid = idx < L
    frames = np.where(valid, c[:, np.minimum(idx, L - 1)], 0)  # (B, frames, wlen), zero past end
    if window is not None:
        frames = frames * window.astype(frames.real.dtype)
    if onesided and signal.shape[-1] == 1:
        r = np.fft.rfft(frames, n=flen, axis=-1)
    else:
        r = np.fft.fft(frames, n=flen, axis=-1)
        if onesided:
            r = r[..., : flen // 2 + 1]
    return _from_complex(r, signal.dtype)


def _window_n(size, periodic):
    n = int(np.asarray(size).reshape(-1)[0])
    denom = n if periodic else n - 1
    return np.arange(n, dtype=np.float64), denom


@register("HannWindow", since=17)
def HannWindow(size, *, output_datatype=_FLOAT, periodic=1):
    k, N = _window_n(size, periodic)
    return (np.sin(np.pi * k / N) ** 2).astype(_np_dtype(output_datatype))


@register("HammingWindow", since=17)
def HammingWindow(size, *, output_datatype=_FLOAT, periodic=1):
    k, N = _window_n(size, periodic)
    a = 25.0 / 46.0
    return (a - (1 - a) * np.cos(2 * np.pi * k / N)).astype(_np_dtype(output_datatype))


@register("BlackmanWindow", since=17)
def BlackmanWindow(size, *, output_datatype=_FLOAT, periodic=1):
    k, N = _window_n(size, periodic)
    w = 0.42 - 0.5 * np.cos(2 * np.pi * k / N) + 0.08 * np.cos(4 * np.pi * k / N)
    return w.astype(_np_dtype(output_datatype))


@register("MelWeightMatrix", since=17)
def MelWeightMatrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz, *,
                    output_datatype=_FLOAT):
    """Triangular mel filter bank, (dft_length // 2 + 1, num_mel_bins)."""
    m = int(np.asarray(num_mel_bins).reshape(-1)[0])
    n_fft = int(np.asarray(dft_length).reshape(-1)[0])
    sr = int(np.asarray(sample_rate).reshape(-1)[0])
    lo = float(np.asarray(lower_edge_hertz).reshape(-1)[0])
    hi = float(np.asarray(upper_edge_hertz).reshape(-1)[0])
    n_bins = n_fft // 2 + 1
    mel_lo = 2595 * np.log10(1 + lo / 700)
    mel_hi = 2595 * np.log10(1 + hi / 700)
    # the spec's function body spaces m + 2 points with a step of (hi - lo) / (m + 2)
    step = (mel_hi - mel_lo) / (m + 2)
    hz = 700 * (10 ** ((np.arange(m + 2) * step + mel_lo) / 2595) - 1)
    edges = (((n_fft + 1) * hz) // sr).astype(np.int64)
    out = np.zeros((n_bins, m), np.float64)
    j = np.arange(n_bins)
    for i in range(m):                                   # one column per mel bin
        left, center, right = edges[i], edges[i + 1], edges[i + 2]
        if center == left:
            out[center, i] = 1
        else:
            sel = (j >= left) & (j <= center)
            out[sel, i] = (j[sel] - left) / (center - left)
        if right > center:
            sel = (j >= center) & (j < right)
            out[sel, i] = (right - j[sel]) / (right - center)
    return out.astype(_np_dtype(output_datatype))
