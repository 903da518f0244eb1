"""Compiled kernels and the one place that decides which ISA build runs.

Filled once at import: start from 'generic', upgrade after cpuid + xgetbv checks, then cap by
DEEPSPARSE_CY_ISA (generic | avx2 | avx512 | avx512_vnni), which can only lower the level.
"""
import os

from . import _cpuid

LEVELS = ["generic", "avx2", "avx512", "avx512_vnni"]


def cpu_features():
    """CPU feature flags, with OS support of the register state taken into account."""
    return dict(_cpuid.features())


def cpu_brand():
    return _cpuid.brand()


def _detect_level(f):
    if f.get("avx512f") and f.get("avx512bw") and f.get("avx512vl") and f.get("avx512_vnni"):
        return "avx512_vnni"
    if f.get("avx512f") and f.get("avx512bw") and f.get("avx512vl"):
        return "avx512"
    if f.get("avx2") and f.get("fma"):
        return "avx2"
    return "generic"


def _choose():
    hw = _detect_level(cpu_features())
    want = os.environ.get("DEEPSPARSE_CY_ISA", "").strip().lower()
    if not want:
        return hw, hw
    if want not in LEVELS:
        raise ValueError(f"DEEPSPARSE_CY_ISA={want!r}: expected one of {LEVELS}")
    if LEVELS.index(want) > LEVELS.index(hw):
        return hw, hw  # cannot raise above what the CPU supports
    return want, hw


ISA, HW_ISA = _choose()


def kernel_isa():
    """The kernel level dispatch chose: 'avx512_vnni' | 'avx512' | 'avx2' | 'generic'."""
    return ISA
