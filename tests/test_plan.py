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
    assert cell_id(cells[3], {"k": 1}, [{} for _ in cells[3].steps]) != cell_id(
        cells[3], {"k": 2}, [{} for _ in cells[3].steps]
    )


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


def test_triples_plan_adds_six_orders_after_their_pairs():
    """16 cells: the smoke grid (10) plus the six orders of FT, GA, Wanda; each triple right after its pair."""
    prof, steps = _steps("triples")
    assert prof.protocol.sequence_length == 3
    cells = build_plan(steps, "paper", prof.protocol.sequence_length)
    assert len(cells) == 16
    triples = [c for c in cells if len(c.steps) == 3]
    assert len(triples) == 6
    assert len({tuple(s.label for s in c.steps) for c in triples}) == 6  # every order once
    assert all(len({s.category for s in c.steps}) == 3 for c in triples)
    for cell in triples:
        before = cells[cells.index(cell) - 1]
        assert before.steps == cell.steps[:2]  # the pair whose state the triple starts from
    # the pair-only plan of the same steps is exactly the smoke plan
    assert [c.label for c in build_plan(steps, "paper")] == [c.label for c in build_plan(_steps("smoke")[1], "paper")]


def test_triples_recompress_a_compressor_that_is_not_last():
    _, steps = _steps("triples")
    triples = [c for c in build_plan(steps, "paper", 3) if len(c.steps) == 3]
    for cell in triples:
        names = [s.submission.name for s in cell.steps]
        expected = "wanda" if names.index("wanda") < 2 else None
        assert (cell.recompress.submission.name if cell.recompress else None) == expected, cell.label
    assert sum(c.recompress is not None for c in triples) == 4
    assert all(c.recompress is None for c in build_plan(steps, "never", 3))


def test_triples_plan_sizes_and_what_is_reused():
    """Applications without and with reuse: what docs/SEQUENCES.md states for the triples profile."""
    _, steps = _steps("triples")
    cells = build_plan(steps, "paper", 3)
    firsts = {c.first for c in cells if c.first is not None}
    prefixes = {c.steps[:2] for c in cells if len(c.steps) == 3}
    naive = sum(len(c.steps) + (c.recompress is not None) for c in cells)
    # with reuse: each first step once, each pair's second step once (shared with its triple), then the rest
    reused = len(firsts) + sum((c.recompress is not None) + (1 if len(c.steps) >= 2 else 0) for c in cells)
    assert (len(cells), len(firsts), len(prefixes)) == (16, 3, 6)
    assert naive == 3 + 6 * 2 + 2 + 6 * 3 + 4 == 39
    assert reused == 3 + 6 + 2 + 6 + 4 == 21


def test_triples_with_two_levels_share_a_prefix():
    """Wanda at two levels: FT -> GA is the prefix of two triples, computed once for both."""
    from benchmark.plan import Step
    from benchmark.prefixes import PrefixKeeper

    _, steps = _steps("triples")
    wanda = next(s for s in steps if s.submission.name == "wanda")
    other = Step(wanda.submission, 0.5, wanda.overrides, wanda.family)
    cells = build_plan(steps + [other], "paper", 3)
    assert len([c for c in cells if len(c.steps) == 3]) == 12  # 2 triples x 6 orders
    ft_ga = [c for c in cells if len(c.steps) == 3 and [s.submission.name for s in c.steps[:2]] == ["ft", "ga"]]
    assert len(ft_ga) == 2 and ft_ga[0].steps[:2] == ft_ga[1].steps[:2]
    group = [c for c in cells if c.first is not None and c.first.submission.name == "ft"]
    keeper = PrefixKeeper.for_group(group)
    assert len(keeper.wanted) == 3  # FT->GA (two triples follow it), FT->Wanda(0.25), FT->Wanda(0.5)
    # the runner's loop over the group: a pair keeps its state as the prefix, the triples after it take it
    import torch

    layer = torch.nn.Linear(2, 2)
    for cell in group:
        kept = keeper.take(cell)
        applied = 2 if kept else min(1, len(cell.steps))
        while applied < len(cell.steps):
            applied += 1
            if keeper.wants(cell, applied):
                keeper.keep(cell, layer, [{"label": s.label} for s in cell.steps[:applied]])
        if kept:
            _, entries = kept
            assert [e["label"] for e in entries] == [s.label for s in cell.steps[:2]]
            assert all(e["reused_prefix"] for e in entries)
    assert (keeper.computed, keeper.served) == (3, 4)  # 3 prefixes applied once; 4 triples start from one
