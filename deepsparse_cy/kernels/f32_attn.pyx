# cython: language_level=3
"""Scaled dot-product attention alone (csrc/f32_attn.c), built for the amx level only (module
_f32_attn_amx): with a quantized output (the QDQ transformer's attention followed by its
QuantizeLinear) its two products run on AMX-BF16 tiles with bf16 operands and float32 sums;
a float output takes the same zmm path as the f32_conv avx512_vnni build. The other levels'
attention is f32_conv's."""
import numpy as np
include "_common.pxi"

ISA = DSCY_ISA

include "_attention.pxi"
