"""Build: Cython extensions with OpenMP; kernel families compiled once per ISA level.

Never -march=native: each ISA build gets only its own -m flags and is chosen at import time by
deepsparse_cy.kernels (cpuid + xgetbv). Environment switches:
  DEEPSPARSE_CY_SANITIZE=1   build with AddressSanitizer + UBSan (-O1 -g)
  DEEPSPARSE_CY_CHECKS=1     Cython boundscheck/wraparound on (debugging)
  DEEPSPARSE_CY_NO_OPENMP=1  build without OpenMP
"""
import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# Only levels with their own kernel code are built. No -mavxvnni on avx2: most AVX2 CPUs lack
# AVX-VNNI and gcc may emit vpdpbusd from plain C under that flag. avx512_vnni: the INT8 families
# (their u8 x s8 quad paths, csrc `#ifdef __AVX512VNNI__`), f32_conv (its zmm attention,
# `#ifdef __AVX512F__`) and f32_spmm (32 tokens per nonzero in two zmm).
# 256-bit autovectorization there, as in the avx2 build: zmm only where the intrinsics ask.
ISA_FLAGS = {
    "generic": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512_vnni": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl",
                    "-mavx512dq", "-mavx512vnni", "-mprefer-vector-width=256"],
}
# amx: the dense INT8 GEMM on AMX tiles (Sapphire Rapids and later), when the compiler knows the
# flags (gcc >= 11, clang >= 12); dispatch also wants the CPU's AMX and the kernel's permission.
AMX_FLAGS = ISA_FLAGS["avx512_vnni"] + ["-mamx-tile", "-mamx-int8"]


def _compiler_accepts(flags):
    import subprocess
    import sysconfig
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    try:
        r = subprocess.run(cc + list(flags) + ["-x", "c", "-c", "-o", os.devnull, "-"],
                           input=b"#include <immintrin.h>\nvoid f(void){_tile_release();}\n",
                           capture_output=True, timeout=60)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# f32_attn's amx build: the attention of a quantized output multiplies on AMX-BF16 tiles
# (csrc/f32_attn.c ATT_AMX); also needs the compiler's -mamx-bf16 and -mavx512bf16.
AMX_BF16_FLAGS = AMX_FLAGS + ["-mamx-bf16", "-mavx512bf16"]

if _compiler_accepts(AMX_FLAGS):
    ISA_FLAGS["amx"] = AMX_FLAGS
ISA_FAMILIES = {"avx512_vnni": {"qs8_gemm", "qs8_spmm", "f32_conv", "f32_spmm"},   # levels built for
                "amx": {"qs8_gemm"}}                                          # some families only
FAMILY_FLAGS = {}    # (family, isa) -> flags other than the level's
if "amx" in ISA_FLAGS and _compiler_accepts(AMX_BF16_FLAGS):
    ISA_FAMILIES["amx"].add("f32_attn")
    FAMILY_FLAGS[("f32_attn", "amx")] = AMX_BF16_FLAGS
ONLY_AT = {"f32_attn": {"amx"}}   # families built at these levels only

# Kernel families built once per ISA level: (module base name, source .pyx, extra C sources).
# Module names are deepsparse_cy.kernels._<name>_<isa>; deepsparse_cy/kernels/__init__.py
# lists the same families for dispatch.
PER_ISA = [
    ("qs8_gemm", "deepsparse_cy/kernels/qs8_gemm.pyx", ["deepsparse_cy/kernels/csrc/qs8_gemm.c",
                                                        "deepsparse_cy/kernels/csrc/qs8_dw.c"]),
    ("qs8_spmm", "deepsparse_cy/kernels/qs8_spmm.pyx", ["deepsparse_cy/kernels/csrc/qs8_spmm.c"]),
    ("f32_spmm", "deepsparse_cy/kernels/f32_spmm.pyx", ["deepsparse_cy/kernels/csrc/f32_spmm.c"]),
    ("f32_conv", "deepsparse_cy/kernels/f32_conv.pyx", ["deepsparse_cy/kernels/csrc/f32_conv.c",
                                                        "deepsparse_cy/kernels/csrc/f32_attn.c",
                                                        "deepsparse_cy/kernels/csrc/f32_wino.c"]),
    ("f32_attn", "deepsparse_cy/kernels/f32_attn.pyx", ["deepsparse_cy/kernels/csrc/f32_attn.c"]),
]

# Modules built once, ISA-independent (their C may use __attribute__((target))).
SINGLE = [
    ("deepsparse_cy.kernels._cpuid", "deepsparse_cy/kernels/_cpuid.pyx", []),
    ("deepsparse_cy.kernels._f32_ops", "deepsparse_cy/kernels/_f32_ops.pyx", []),
    ("deepsparse_cy.kernels._f32_fused", "deepsparse_cy/kernels/_f32_fused.pyx", []),
]

sanitize = os.environ.get("DEEPSPARSE_CY_SANITIZE") == "1"
checks = os.environ.get("DEEPSPARSE_CY_CHECKS") == "1"
openmp = os.environ.get("DEEPSPARSE_CY_NO_OPENMP") != "1" and sys.platform != "win32"

base_cflags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"] if sanitize \
    else ["-O3"]
base_cflags += ["-std=c11" if False else "-Wno-unused-function", "-fno-strict-aliasing"]
base_ldflags = ["-fsanitize=address,undefined"] if sanitize else []
if openmp:
    base_cflags.append("-fopenmp")
    base_ldflags.append("-fopenmp")


def ext(name, src, extra, isa_flags=(), macros=(), depends=()):
    return Extension(
        name, [src] + list(extra), depends=list(depends),
        include_dirs=[np.get_include(), "deepsparse_cy/kernels"],
        extra_compile_args=base_cflags + list(isa_flags),
        extra_link_args=base_ldflags,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")] + list(macros),
    )


def _write_if_changed(path, text):
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as fh:
            fh.write(text)


HEADERS = sorted(glob.glob("deepsparse_cy/kernels/csrc/*.h"))
extensions = [ext(n, s, e, depends=HEADERS) for n, s, e in SINGLE]
for base, src, extra in PER_ISA:
    for isa, flags in ISA_FLAGS.items():
        if isa in ISA_FAMILIES and base not in ISA_FAMILIES[isa]:
            continue
        if base in ONLY_AT and isa not in ONLY_AT[base]:
            continue
        flags = FAMILY_FLAGS.get((base, isa), flags)
        # One .pyx compiled several times under different module names: Cython needs a distinct
        # source per module, so a tiny generated shim includes the shared source.
        shim_dir = os.path.join("build", "isa_shims")
        os.makedirs(shim_dir, exist_ok=True)
        mod = f"_{base}_{isa}"
        shim = os.path.join(shim_dir, mod + ".pyx")
        rel = os.path.relpath(src, shim_dir)
        text = (f"# Auto-generated by setup.py. Do not edit! Template: {src}\n"
                f"# cython: language_level=3\n"
                f"DEF DSCY_ISA = \"{isa}\"\n"
                f"include \"{rel}\"\n")
        _write_if_changed(shim, text)
        # The C sources too: compiled under each ISA's flags, they need an object file per
        # ISA. Built straight from csrc/, every ISA's object had the same path, so a parallel
        # build (build_ext -j) raced and linked e.g. AVX2 objects into the generic module.
        extra_isa = []
        for c in extra:
            cshim = os.path.join(shim_dir, f"{mod}__{os.path.basename(c)}")
            _write_if_changed(cshim, f"/* Auto-generated by setup.py: {c} built for {isa} */\n"
                                     f"#include \"{os.path.relpath(c, shim_dir)}\"\n")
            extra_isa.append(cshim)
        extensions.append(ext(f"deepsparse_cy.kernels.{mod}", shim, extra_isa, flags,
                              [("DSCY_ISA_" + isa.upper(), "1")],
                              depends=list(extra) + HEADERS))

directives = {"language_level": 3, "boundscheck": checks, "wraparound": checks,
              "cdivision": True, "initializedcheck": checks, "nonecheck": False}

setup(ext_modules=cythonize(extensions, compiler_directives=directives, quiet=True,
                            include_path=["deepsparse_cy/kernels"]))
