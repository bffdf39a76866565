"""The grid: base, each intervention alone, every cross-category pair in both orders."""

from __future__ import annotations

from collections import Counter

from benchmark.paths import baselines_dir
from benchmark.plan import build_plan, cell_id, steps_for
from benchmark.profiles import available_profiles, load_profile
from benchmark.submissions import discover


def _steps(profile_name: str):
    prof = load_profile(profile_name)
    subs = [s for s in discover(baselines_dir()) if s.name in prof.interventions]
    return prof, steps_for(subs, prof, "smollm2")


def test_profiles_load():
    assert {"smoke", "default", "paper"} <= set(available_profiles())
    for name in available_profiles():
        load_profile(name)


def test_smoke_plan_has_both_orders_and_groups_by_first():
    prof, steps = _steps("smoke")
    cells = build_plan(steps, "paper")
    labels = [c.label for c in cells]
    assert labels[0] == "base"
    assert len(cells) == 1 + 3 + 6  # base, 3 alone, 3 pairs x 2 orders
    pairs = [c for c in cells if len(c.steps) == 2]
    orders = Counter(frozenset(s.label for s in c.steps) for c in pairs)
    assert all(n == 2 for n in orders.values())
    firsts = [c.first.label for c in cells[1:]]
    assert firsts == sorted(firsts, key=firsts.index)  # adjacent groups
    assert len(set(firsts)) == 3 and all(firsts.count(f) == 3 for f in set(firsts))


def test_recompression_rule():
    _, steps = _steps("smoke")
    wanda_first = [c for c in build_plan(steps, "paper") if len(c.steps) == 2 and c.first.submission.name == "wanda"]
    assert wanda_first and all(c.recompress is c.first for c in wanda_first)
    assert all(c.recompress is None for c in build_plan(steps, "never"))
    others_first = [c for c in build_plan(steps, "always") if len(c.steps) == 2 and c.first.submission.name != "wanda"]
    assert all(c.recompress is None for c in others_first)


def test_levels_multiply_cells_and_ids_are_distinct():
    prof, steps = _steps("default")
    cells = build_plan(steps, "paper")
    n_wanda = len(prof.interventions["wanda"].levels)
    assert len(cells) == 1 + (2 + n_wanda) + 2 * (1 + 2 * n_wanda)
    ids = [cell_id(c, {"k": 1}, [{} for _ in c.steps]) for c in cells]
    assert len(set(ids)) == len(ids)
    assert cell_id(cells[3], {"k": 1}, [{} for _ in cells[3].steps]) != cell_id(cells[3], {"k": 2}, [{} for _ in cells[3].steps])


def test_all_baselines_profiles_pair_every_category_both_orders():
    """77 cells: base, 10 alone, 3x3 + 3x4 + 3x4 = 33 cross-category pairs in both orders."""
    plans = {}
    for name in ("all-baselines", "all-baselines-smoke"):
        _, steps = _steps(name)
        assert len(steps) == 10, name
        cells = build_plan(steps, "paper")
        plans[name] = [c.label for c in cells]
        pairs = Counter(frozenset(s.label for s in c.steps) for c in cells if len(c.steps) == 2)
        assert len(cells) == 77 and len(pairs) == 33 and set(pairs.values()) == {2}, name
        categories = {s.label: s.submission.spec.category for s in steps}
        assert all(len({categories[label] for label in pair}) == 2 for pair in pairs), name
    assert plans["all-baselines"] == plans["all-baselines-smoke"]  # the same grid, other sizes
