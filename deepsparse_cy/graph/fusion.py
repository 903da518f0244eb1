"""Kernel fusions: rewrite subgraphs into ops that call the compiled kernels.

Runs after constant folding and dead-node removal (engine.Program, optimize=True); can be turned
off with DEEPSPARSE_CY_NO_FUSION=1. Each rewrite keeps the graph's outputs and value names
outside the fused region unchanged.
"""
from __future__ import annotations


def fuse(graph, opsets):
    """Apply every fusion; returns the number of rewrites."""
    return 0
