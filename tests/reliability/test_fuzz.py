"""Short CI run of tools/fuzz_engine.py (issue 6, item 4) and replays of past findings.

The long run is documented in docs/RELIABILITY.md."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FINDINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_findings")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import fuzz_engine  # noqa: E402


def test_fuzz_short_run(tmp_path):
    # a fixed number of cases from a fixed seed (the time cap only guards a very slow machine)
    done, findings = fuzz_engine.run_builtin(6000, seed=0, timeout=10, max_seconds=45,
                                             out_dir=str(tmp_path))
    print(f"\n{done} fuzz iterations; outcomes {fuzz_engine.STATS}")
    assert done >= 500
    assert not findings, findings[0][2]


def _replay(name):
    with open(os.path.join(FINDINGS, name), "rb") as fh:
        fuzz_engine.one_input(fh.read())


def test_replay_bytes_value_names():
    # value names that are not valid UTF-8 reach Python as bytes; sorting them with str names
    # raised TypeError in graph.ir (fixed)
    _replay("bytes_value_names.bin")


# graph/fusion.py _fuse_qlinear_matmul once raised ValueError at compile on a weight zero point
# whose size is neither 1 nor N (fixed: the rewrite leaves such nodes to the reference op)
@pytest.mark.parametrize("name", ["qlinearmatmul_zero_point_size_128.bin",
                                  "qlinearmatmul_zero_point_size_0.bin"])
def test_replay_qlinearmatmul_zero_point(name):
    _replay(name)
