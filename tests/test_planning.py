import math
import random

import numpy as np
import pytest

from whisperjav_enhance.planning import (WindowPlan, group_by_length, pack_units, padded_length,
                                         plan_windows, window_starts)

PLANS = [WindowPlan(window=1000, hop=750, quantum=125), WindowPlan(window=64, hop=64, quantum=64),
         WindowPlan(window=4000, hop=1, quantum=1), WindowPlan.from_seconds(48_000, 4.0, 1.0)]


@pytest.mark.parametrize("plan", PLANS)
def test_windows_cover_every_sample_and_respect_limits(plan):
    rng = random.Random(0)
    lengths = [1, 2, plan.window - 1, plan.window, plan.window + 1, 3 * plan.window + 7] + \
        [rng.randint(1, 10 * plan.window) for _ in range(20)]
    for n in lengths:
        if plan.hop == 1 and n > 3 * plan.window:
            continue  # hop 1 is only a bound check; long scenes would be slow to enumerate
        covered = np.zeros(n, dtype=int)
        for w in plan_windows([n], plan):
            assert 1 <= w.length <= plan.window
            assert w.length <= w.padded <= plan.window
            assert w.start + w.length <= n
            covered[w.start:w.start + w.length] += 1
        assert covered.min() >= 1, f"gap in a scene of {n} samples"
        starts = window_starts(n, plan)
        assert starts == sorted(set(starts))
        assert all(b - a <= plan.hop for a, b in zip(starts, starts[1:]))
        if n >= plan.window:  # no padding for long scenes: the last window ends at the end
            assert starts[-1] + plan.window == n


def test_padded_length_is_a_quantum_multiple():
    plan = WindowPlan(window=1000, hop=750, quantum=125)
    assert padded_length(1, plan) == 125
    assert padded_length(125, plan) == 125
    assert padded_length(126, plan) == 250
    assert padded_length(999, plan) == 1000
    assert padded_length(5000, plan) == 1000


def test_plan_validation():
    with pytest.raises(ValueError):
        WindowPlan(window=100, hop=101, quantum=10)
    with pytest.raises(ValueError):
        WindowPlan(window=0, hop=1, quantum=1)
    with pytest.raises(ValueError):
        window_starts(0, PLANS[0])


def test_group_by_length_keeps_every_window_and_scene_order():
    plan = WindowPlan(window=1000, hop=750, quantum=250)
    ws = plan_windows([100, 5000, 300, 900, 120, 2000], plan)
    groups = group_by_length(ws)
    assert list(groups) == [250, 1000, 500]          # order of first appearance
    flat = [w for g in groups.values() for w in g]
    assert sorted(flat, key=lambda w: (w.scene, w.start)) == ws
    for padded, g in groups.items():
        assert {w.padded for w in g} == {padded}
        assert [(w.scene, w.start) for w in g] == sorted((w.scene, w.start) for w in g)


def test_pack_units_budget_and_long_scenes_alone():
    durs = [1.0, 2.0, 30.0, 0.5, 0.5, 200.0, 3.0, 4.0]
    units = pack_units(durs, batch_seconds=10.0)
    seen = [s for u in units for s in u.scenes]
    assert seen == list(range(len(durs)))              # every scene once, in order
    for u in units:
        assert u.seconds == pytest.approx(sum(durs[i] for i in u.scenes))
        assert u.seconds <= 10.0 or len(u.scenes) == 1  # only a lone scene may exceed the budget
    assert any(u.scenes == (5,) for u in units)         # the 200 s scene is alone
    assert [u.unit_id for u in units] == list(range(len(units)))
    assert pack_units(durs, 10.0) == units              # deterministic


def test_pack_units_max_scenes():
    units = pack_units([0.1] * 10, batch_seconds=100.0, max_scenes=3)
    assert [len(u.scenes) for u in units] == [3, 3, 3, 1]


@pytest.mark.parametrize("bad", [[-1.0], [math.nan], [math.inf]])
def test_pack_units_rejects_bad_durations(bad):
    with pytest.raises(ValueError):
        pack_units(bad, 10.0)


def test_pack_units_random_property():
    rng = random.Random(1)
    for _ in range(50):
        durs = [rng.lognormvariate(1, 1) for _ in range(rng.randint(0, 60))]
        budget = rng.uniform(1, 60)
        units = pack_units(durs, budget)
        assert [s for u in units for s in u.scenes] == list(range(len(durs)))
        assert all(u.seconds <= budget + 1e-9 or len(u.scenes) == 1 for u in units)
