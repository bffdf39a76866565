"""The pre-run estimate's step costs (benchmark/cost.py): shipped table, work scaling, this machine's history."""

from __future__ import annotations

import pytest

from benchmark.cost import CostModel, StepPlan, record_step_cost, step_cost_key, step_seconds


def _ga(steps: int, key: str = "k") -> StepPlan:
    return StepPlan("ga", "unlearning", key, 128, {"steps": steps, "batch_size": 8})


def test_shipped_ga_cost_scales_with_its_training_steps():
    model = CostModel.load("float32")
    assert model.measured_at["ga"] == {"steps": 12.0}
    full, source = step_seconds(_ga(12), 100.0, model, {}, overhead_s=0.0)
    third, _ = step_seconds(_ga(4), 100.0, model, {}, overhead_s=0.0)
    assert source == "tasks/cost_model.yaml"
    assert full == pytest.approx(model.steps["ga"]["fixed"] / 100.0)
    assert third == pytest.approx(full / 3)
    # a step that does not set the hyperparameter keeps the measured cost; a category fallback is not scaled
    unset, _ = step_seconds(StepPlan("ga", "unlearning", "k", 128, {}), 100.0, model, {}, overhead_s=1.5)
    assert unset == pytest.approx(full + 1.5)
    other, source = step_seconds(StepPlan("mine", "unlearning", "k", 128, {"steps": 4}), 100.0, model, {}, 0.0)
    assert source.endswith("(category:unlearning)") and other == pytest.approx(full)


@pytest.mark.parametrize(
    "name,category,setting,measured",
    [("ft", "editing", "steps", 20), ("wanda", "compression", "calibration_samples", 16)],
)
def test_shipped_ft_and_wanda_costs_scale_with_their_work_settings(name, category, setting, measured):
    """FT's work is its training steps (per edit), Wanda's its calibration windows: half of either costs half of
    the part that scales; Wanda's pipeline set-up is paid whatever the windows."""
    for dtype in ("float32", "bfloat16"):
        model = CostModel.load(dtype)
        assert model.measured_at[name] == {setting: float(measured)}
        setup = model.steps[name]["setup"] / 100.0
        full, _ = step_seconds(StepPlan(name, category, "k", 10, {setting: measured}), 100.0, model, {}, 0.0)
        half, _ = step_seconds(StepPlan(name, category, "k", 10, {setting: measured // 2}), 100.0, model, {}, 0.0)
        assert full > setup and half - setup == pytest.approx((full - setup) / 2)
        assert (setup > 0) == (name == "wanda"), (name, dtype)


def test_a_cached_step_costs_writing_the_model_to_the_state_cache():
    """A trusted step's output is hashed and written to the state cache: seconds per GB of the model's weights."""
    from benchmark.cost import EvaluationTokens, estimate

    tokens = EvaluationTokens({"mcq": 0, "zsre": 0, "perplexity": 0}, {"mcq": 0, "zsre": 0, "perplexity": 0})
    steps = [("ga", _ga(12)), ("ga cached", StepPlan("ga", "unlearning", "k", 128, {"steps": 12}, cached=True))]
    est = estimate(tokens, 1, 100.0, 0, steps, sandboxed=False, dtype="float32", weights_gb=0.5)
    (_, plain, _), (_, cached, _) = est.steps_s
    per_gb = CostModel.load("float32").state_cache_s_per_gb
    assert per_gb > 0 and cached - plain == pytest.approx(per_gb * 0.5)


def test_history_is_per_hyperparameters(tmp_path, monkeypatch):
    """A step's recorded cost is reused only for the same resolved hyperparameters (12 GA steps are not 4)."""
    from benchmark.caches.store import ENV_RESULTS_CACHE
    from benchmark.cost import read_history

    monkeypatch.setenv(ENV_RESULTS_CACHE, str(tmp_path))
    key12 = step_cost_key("ga", "sha", None, 128, '{"steps": 12}')
    key4 = step_cost_key("ga", "sha", None, 128, '{"steps": 4}')
    assert key12 != key4
    record_step_cost(key12, seconds=10.0, gflops=90.0, capability="cpu:AVX2", dtype="float32")
    history = read_history("float32")
    assert history == {key12: [900.0]} and read_history("bfloat16") == {}
    model = CostModel.load("float32")
    seconds, source = step_seconds(_ga(12, key12), 45.0, model, history, overhead_s=0.0)
    assert source == "this machine's history" and seconds == pytest.approx(20.0)
    _, source = step_seconds(_ga(4, key4), 45.0, model, history, overhead_s=0.0)
    assert source == "tasks/cost_model.yaml"


def test_shipped_costs_scale_with_the_models_parameters_and_history_is_per_model_size():
    """The table was measured on the default model; a model of half its parameters costs half of each step
    (set-up included), and a cost this machine recorded on one model size is not reused for another."""
    model = CostModel.load("float32")
    assert model.measured_on_params == 134515008  # SmolLM2-135M-Instruct (its tied embedding once)
    for name, category, hp in (("ft", "editing", {"steps": 20}), ("wanda", "compression", {})):
        same, _ = step_seconds(StepPlan(name, category, "k", 10, hp, n_params=134515008), 100.0, model, {}, 0.0)
        unset, _ = step_seconds(StepPlan(name, category, "k", 10, hp), 100.0, model, {}, 0.0)
        half, _ = step_seconds(StepPlan(name, category, "k", 10, hp, n_params=134515008 // 2), 100.0, model, {}, 0.5)
        assert same == pytest.approx(unset) and half - 0.5 == pytest.approx(same / 2), name
    assert step_cost_key("ga", "sha", None, 128, "{}", 134515008) != step_cost_key(
        "ga", "sha", None, 128, "{}", 70793280
    )


def test_parameter_count_is_what_a_forward_pass_multiplies_by(default_model):
    """Tied (SmolLM2): every parameter once, the embedding as the LM head. Untied: the input table is a lookup."""
    import copy

    import torch

    from benchmark.cost import parameter_count

    model, _ = default_model
    assert model.lm_head.weight is model.model.embed_tokens.weight  # SmolLM2 ties them
    assert parameter_count(model) == 134515008 == sum(p.numel() for p in model.parameters())
    untied = copy.deepcopy(model)
    untied.lm_head.weight = torch.nn.Parameter(untied.lm_head.weight.detach().clone())
    table = untied.model.embed_tokens.weight.numel()
    assert sum(p.numel() for p in untied.parameters()) == 134515008 + table
    assert parameter_count(untied) == 134515008  # the same matmuls, the table not among them


def test_an_evaluations_fixed_part_scales_with_the_model():
    """Compression statistics, hashes and copies read every weight: half the parameters, half that part."""
    from benchmark.cost import EvaluationTokens, estimate

    none = EvaluationTokens({"mcq": 0, "zsre": 0, "perplexity": 0}, {"mcq": 0, "zsre": 0, "perplexity": 0})
    model = CostModel.load("float32")
    full = estimate(none, model.measured_on_params, 100.0, 1, [], sandboxed=False, dtype="float32")
    half = estimate(none, model.measured_on_params // 2, 100.0, 1, [], sandboxed=False, dtype="float32")
    assert full.evaluation_s == pytest.approx(model.evaluation_overhead_s) and model.evaluation_overhead_s > 0
    assert half.evaluation_s == pytest.approx(full.evaluation_s / 2)


def test_bf16_shipped_costs_stop_shrinking_at_the_tables_rate_cap(tmp_path, monkeypatch):
    """Beyond ``rate_cap_gflops`` a faster matmul no longer shortens a shipped cost (an AMX host at 2,500 GFLOP/s
    evaluated and trained in the seconds of a 974 GFLOP/s EPYC); below it, and from this machine's own history,
    seconds still follow the measured rate."""
    from benchmark.caches.store import ENV_RESULTS_CACHE
    from benchmark.cost import EvaluationTokens, estimate, read_history

    monkeypatch.setenv(ENV_RESULTS_CACHE, str(tmp_path))
    model = CostModel.load("bfloat16")
    cap = model.rate_cap_gflops
    assert cap and CostModel.load("float32").rate_cap_gflops is None
    assert CostModel.load("bfloat16", device_type="cuda").cost_rate(100 * cap) == 100 * cap  # measured on CPUs only
    assert model.cost_rate(2 * cap) == cap and model.cost_rate(cap / 2) == cap / 2
    ga = _ga(12)
    at_cap, _ = step_seconds(ga, cap, model, {}, overhead_s=0.0)
    assert step_seconds(ga, 2.5 * cap, model, {}, overhead_s=0.0)[0] == pytest.approx(at_cap)
    assert step_seconds(ga, cap / 2, model, {}, overhead_s=0.0)[0] == pytest.approx(2 * at_cap)
    record_step_cost("k", seconds=20.0, gflops=2.5 * cap, capability="cpu:AVX512", dtype="bfloat16")
    assert step_seconds(ga, 2.5 * cap, model, read_history("bfloat16"), overhead_s=0.0)[0] == pytest.approx(20.0)
    tokens = EvaluationTokens(
        {"mcq": 10**6, "zsre": 10**5, "perplexity": 10**5}, {"mcq": 1, "zsre": 1, "perplexity": 1}
    )
    fast = estimate(tokens, 10**8, 2.5 * cap, 1, [], sandboxed=False, dtype="bfloat16")
    capped = estimate(tokens, 10**8, cap, 1, [], sandboxed=False, dtype="bfloat16")
    assert fast.evaluation_parts_s == pytest.approx(capped.evaluation_parts_s)
