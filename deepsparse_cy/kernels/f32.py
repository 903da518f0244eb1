"""Sparse FP32 weights (unstructured): packing and f32_spmm, the dispatched XNNPACK-style kernel
with bias + activation epilogue. See the package docstring for the API."""
import numpy as np

from . import load
from .qs8 import _ACT_CODES, _check_x, _gelu64, _out


#: K panel width of the kernel: beyond it a 32-token activation tile (K x 32 floats, 96 KiB at
#: K = 768) no longer stays near L1, and each nonzero's 128-byte row comes from further away
#: (3072 x 768 at 90% measured 2.4x BLAS against 3.2x for 768 x 768)
PANEL_K = 768


class PackedF32:
    """CSR of a float32 weight [N, K]: row_ptr int32 [N+1], idx uint16 [nnz], vals float32 [nnz];
    for K > PANEL_K also panel_ptr int32 [N, P+1], where row n's nonzeros with
    k in [p*PANEL_K, (p+1)*PANEL_K) are panel_ptr[n, p] .. panel_ptr[n, p+1] - 1."""

    def __init__(self, n, k, row_ptr, idx, vals, panel_ptr=None):
        self.n, self.k = n, k
        self.arrays = {"row_ptr": row_ptr, "idx": idx, "vals": vals}
        if panel_ptr is not None:
            self.arrays["panel_ptr"] = panel_ptr
        self.nnz = int(len(vals))
        self.format = "unstructured"

    @property
    def nbytes(self):
        return int(sum(a.nbytes for a in self.arrays.values()))

    @property
    def sparsity(self):
        return 1.0 - self.nnz / max(self.n * self.k, 1)

    def unpack(self):
        w = np.zeros((self.n, self.k), np.float32)
        a = self.arrays
        rows = np.repeat(np.arange(self.n), np.diff(a["row_ptr"]))
        w[rows, a["idx"].astype(np.int64)] = a["vals"]
        return w


def pack_f32_sparse(w):
    """Pack a float32 weight [N, K] (zeros are pruned weights) once, at compile time."""
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype != np.float32:
        raise ValueError(f"weight must be float32 [N, K], got {w.dtype} {w.shape}")
    n, k = w.shape
    if k > 65536:
        raise ValueError(f"K={k} too large for 16-bit offsets")
    rows, cols = np.nonzero(w)
    row_ptr = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=row_ptr[1:])
    panel_ptr = None
    if k > PANEL_K:
        npan = -(-k // PANEL_K)
        counts = np.bincount(rows * npan + cols // PANEL_K, minlength=n * npan).reshape(n, npan)
        panel_ptr = np.empty((n, npan + 1), np.int32)
        panel_ptr[:, 0] = row_ptr[:-1]
        np.cumsum(counts, axis=1, out=panel_ptr[:, 1:])
        panel_ptr[:, 1:] += row_ptr[:-1, None]
    return PackedF32(n, k, row_ptr, cols.astype(np.uint16), np.ascontiguousarray(w[rows, cols]),
                     panel_ptr)


def f32_spmm(x, packed, bias=None, activation=None, clip=None, num_threads=None, out=None,
             isa=None):
    """out[M, N] = act(x[M, K] @ w.T + bias); x float32 tokens-major."""
    x = _check_x(x, packed.k, (np.float32,))
    m, n = x.shape[0], packed.n
    b = np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32).reshape(-1)
    if b.shape != (n,):
        raise ValueError(f"bias must have {n} elements, got {b.shape}")
    if activation not in _ACT_CODES:
        raise ValueError(f"activation must be None, 'relu', 'clip' or 'gelu', got {activation!r}")
    act = _ACT_CODES[activation]
    lo, hi = (float(clip[0]), float(clip[1])) if act == 2 else (0.0, 0.0)
    out = _out(out, m, n, np.dtype(np.float32))
    if m == 0 or n == 0:
        return out
    a = packed.arrays
    if packed.k == 0:
        out[...] = f32_spmm_reference(x, np.zeros((n, 0), np.float32), b, activation, clip)
        return out
    pp = a.get("panel_ptr")
    load("f32_spmm", isa).spmm(x, a["row_ptr"], a["idx"], a["vals"], n, b, act, lo, hi, out,
                               int(num_threads or 0), pp, PANEL_K)
    return out


def f32_spmm_reference(x, w, bias=None, activation=None, clip=None):
    y = np.asarray(x, np.float32) @ np.asarray(w, np.float32).T
    if bias is not None:
        y = y + np.asarray(bias, np.float32)
    if activation == "relu":
        y = np.maximum(y, 0)
    elif activation == "clip":
        y = np.clip(y, clip[0], clip[1])
    elif activation == "gelu":
        y = _gelu64(y)
    return y.astype(np.float32)
