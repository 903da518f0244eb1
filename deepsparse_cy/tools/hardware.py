"""`deepsparse-cy check-hardware`: CPU model, cores, caches, the feature flags the kernels care
about, the ISA level dispatch chose, and whether INT8 dot products run natively (VNNI) or are
emulated with AVX2 multiply-adds.
"""
from __future__ import annotations

import os

from .. import kernels as _k

# flags in the order a reader scans them, with what they mean for this engine
FLAGS = [
    ("sse4_2", "SSE4.2"), ("popcnt", "POPCNT"), ("avx", "AVX"), ("avx2", "AVX2 (256-bit int)"),
    ("fma", "FMA3"), ("f16c", "F16C"), ("bmi2", "BMI2"), ("avx512f", "AVX-512 F"),
    ("avx512dq", "AVX-512 DQ"), ("avx512cd", "AVX-512 CD"), ("avx512bw", "AVX-512 BW"),
    ("avx512vl", "AVX-512 VL"), ("avx512_vnni", "AVX-512 VNNI (vpdpbusd zmm)"),
    ("avx512_vbmi", "AVX-512 VBMI"), ("avx512_bf16", "AVX-512 BF16"),
    ("avx_vnni", "AVX-VNNI (vpdpbusd ymm)"), ("amx_int8", "AMX INT8"), ("amx_bf16", "AMX BF16"),
    ("amx_tile", "AMX TILE"),
    ("os_amx", "OS grants AMX tile state (arch_prctl)"),
    ("os_avx", "OS saves ymm state (XCR0)"), ("os_avx512", "OS saves zmm state (XCR0)"),
]


def _proc_cpuinfo():
    info = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if ":" in line:
                    k, v = line.split(":", 1)
                    info.setdefault(k.strip(), v.strip())
                elif info:
                    break   # first processor block is enough
    except OSError:
        pass
    return info


def _physical_cores():
    try:
        ids = set()
        phys = core = None
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip():
                    if core is not None:
                        ids.add((phys, core))
                    phys = core = None
        return len(ids) or None
    except OSError:
        return None


def _caches():
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in sorted(os.listdir(base)):
            if not d.startswith("index"):
                continue
            rd = lambda f: open(os.path.join(base, d, f)).read().strip()  # noqa: E731
            level, typ, size = rd("level"), rd("type"), rd("size")
            key = f"L{level}" + ({"Data": "d", "Instruction": "i"}.get(typ, ""))
            out[key] = size
    except OSError:
        pass
    return out


def int8_mode(features, isa):
    """('native' | 'emulated', how) for the INT8 dot products of the chosen kernel level."""
    if isa == "amx":
        return "native", ("native AMX + VNNI: dense INT8 GEMMs on AMX tiles (tdpbusd, 16x16x64 "
                          "MACs per instruction), sparse ones with vpdpbusd on zmm")
    if isa == "avx512_vnni":
        return "native", "native VNNI: vpdpbusd on zmm registers (64 u8 x s8 MACs per instruction)"
    if isa in ("avx2", "avx512"):
        why = ("this build has no AVX-VNNI kernels" if features.get("avx_vnni")
               else "VNNI kernels not selected" if features.get("avx512_vnni")
               else "this CPU has no VNNI")
        return "emulated", f"emulated with exact 16-bit vpmaddwd ({isa.upper()}; {why})"
    return "emulated", "emulated in generic C loops (no SIMD kernels at this level)"


def check_hardware():
    """Everything `check-hardware` prints, as a dict."""
    f = _k.cpu_features()
    info = _proc_cpuinfo()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    isa = _k.kernel_isa()
    mode, how = int8_mode(f, isa)
    return {
        "cpu_model": info.get("model name") or _k.cpu_brand(),
        "cpu_brand": _k.cpu_brand(),
        "vendor": info.get("vendor_id"),
        "family": info.get("cpu family"), "model": info.get("model"),
        "logical_cores": os.cpu_count(), "physical_cores": _physical_cores(),
        "usable_cores": affinity,
        "caches": _caches(),
        "features": {k: bool(f.get(k, False)) for k, _ in FLAGS},
        "kernel_isa": isa, "hardware_isa": getattr(_k, "HW_ISA", isa),
        "isa_override": os.environ.get("DEEPSPARSE_CY_ISA") or None,
        "int8": mode, "int8_detail": how,
    }


def format_hardware(h):
    caches = ", ".join(f"{k} {v}" for k, v in h["caches"].items()) or "unknown"
    fam = f"   (vendor {h['vendor']}, family {h['family']}, model {h['model']})" \
        if h.get("vendor") else ""
    lines = [
        f"CPU:              {h['cpu_model']}{fam}",
        f"Cores:            {h['logical_cores']} logical, {h['physical_cores'] or '?'} physical, "
        f"{h['usable_cores'] or '?'} usable by this process",
        f"Caches:           {caches} (L1/L2 per core)",
        "Feature flags:",
    ]
    for k, label in FLAGS:
        lines.append(f"  {'yes' if h['features'][k] else 'no ':<4} {k:<12} {label}")
    ov = f" (DEEPSPARSE_CY_ISA={h['isa_override']})" if h["isa_override"] else ""
    lines += [
        f"Kernel ISA:       {h['kernel_isa']}{ov}; best this CPU supports: {h['hardware_isa']}",
        f"INT8:             {h['int8_detail']}",
    ]
    return "\n".join(lines)
