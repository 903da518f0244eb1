"""The generic kernel modules must run on any x86-64: no AVX instruction may reach them.

setup.py builds every kernel family once per ISA from the same C sources; the objects of each
ISA need their own paths, or a parallel build (build_ext -j) links one ISA's objects into
another's module (seen: AVX2 code in _f32_conv_generic, which would die with SIGILL on an
SSE-only CPU)."""
import glob
import os
import shutil
import subprocess

import pytest

import deepsparse_cy.kernels as kernels

KDIR = os.path.dirname(kernels.__file__)


def _disasm(path):
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not installed (binutils): cannot inspect the built modules")
    return subprocess.run([objdump, "-d", "--no-show-raw-insn", path], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(KDIR, "_*_generic*.so"))),
                         ids=os.path.basename)
def test_generic_modules_hold_no_avx_code(path):
    text = _disasm(path)
    bad = [ln for ln in text.splitlines() if "%ymm" in ln or "%zmm" in ln]
    assert not bad, f"{os.path.basename(path)} holds AVX code, e.g. {bad[:3]}"


def test_avx2_modules_hold_avx2_code():
    paths = sorted(glob.glob(os.path.join(KDIR, "_*_avx2*.so")))
    if not paths:
        pytest.skip("no AVX2 kernel modules built here")
    for path in paths:
        assert "%ymm" in _disasm(path), f"{os.path.basename(path)} has no AVX2 code"
