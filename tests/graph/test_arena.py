"""The arena planner on its own: no overlap between values alive at the same time, reuse of dead
values' space, and the switch that turns reuse off."""
import random

import pytest

from deepsparse_cy.graph.arena import ALIGN, peak_live, plan_offsets


def _check_no_overlap(items, offsets):
    for i, (ka, na, fa, la) in enumerate(items):
        for kb, nb, fb, lb in items[i + 1:]:
            if la < fb or lb < fa:
                continue  # lifetimes disjoint
            a0, a1 = offsets[ka], offsets[ka] + na
            b0, b1 = offsets[kb], offsets[kb] + nb
            assert a1 <= b0 or b1 <= a0, f"{ka} and {kb} overlap while both alive"


def test_chain_reuses_space():
    # a -> b -> c -> d: each value dies right after the next is made, so two slots suffice.
    items = [(k, 1000, i, i + 1) for i, k in enumerate("abcd")]
    offsets, total = plan_offsets(items)
    _check_no_overlap(items, offsets)
    assert total <= 2 * ((1000 + ALIGN - 1) // ALIGN * ALIGN)


def test_no_reuse_switch_gives_sum():
    items = [(k, 1000, i, i + 1) for i, k in enumerate("abcd")]
    offsets, total = plan_offsets(items, reuse=False)
    _check_no_overlap(items, offsets)
    assert total == 4 * 1024
    assert len(set(offsets.values())) == 4


@pytest.mark.parametrize("seed", range(20))
def test_random_lifetimes(seed):
    rng = random.Random(seed)
    items = []
    for i in range(60):
        f = rng.randrange(100)
        items.append((f"v{i}", rng.randrange(1, 5000), f, f + rng.randrange(0, 20)))
    offsets, total = plan_offsets(items)
    _check_no_overlap(items, offsets)
    for k, n, _, _ in items:
        assert offsets[k] % ALIGN == 0
        assert offsets[k] + n <= total
    # greedy-by-size stays within a small factor of the lower bound
    assert peak_live(items) <= total <= 2 * peak_live(items)
