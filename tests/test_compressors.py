"""GPTQ, AWQ and SparseGPT (beside Wanda) on the real default model's weights.

To keep the suite affordable the compressors run on the first four transformer blocks of
the real SmolLM2-135M (same weights, same tokenizer, same module shapes; only fewer
blocks) with 4 x 64 tokens of the real calibration text. What is asserted is what the
protocol relies on: the asked sparsity is the measured one, quantized weights sit on at
most 2**bits values per group, the model comes back vanilla, the re-application rule
leaves the final model compressed, and the compressed-tensors export reloads to the same
next-token logits.
"""

from __future__ import annotations

import copy

import pytest
import torch

from benchmark.numerics import choose_dtype
from benchmark.api import InterventionContext, InterventionError
from benchmark.data.corpora import load_calibration_corpus
from benchmark.evaluation.compression_stats import block_linear_weights, measure_bits, measure_sparsity
from benchmark.evaluation.deployment import check_deployment
from benchmark.paths import baselines_dir
from benchmark.plan import Step, build_plan
from benchmark.submissions import load_submission

CPU = torch.device("cpu")
BLOCKS = 4
RUN_DTYPE = choose_dtype("auto", "cpu").dtype  # the default model's dtype in the suite (conftest)


@pytest.fixture(scope="module")
def calibration(data_dir):
    return load_calibration_corpus(16, 0, data_dir).texts


@pytest.fixture()
def short_model(default_model):
    """The real default model cut to its first four blocks (a private copy)."""
    model, tokenizer = default_model
    model = copy.deepcopy(model)
    model.model.layers = model.model.layers[:BLOCKS]
    model.config.num_hidden_layers = BLOCKS
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:BLOCKS]
    return model, tokenizer


def _run(name: str, model, tokenizer, calibration, **level):
    sub = load_submission(baselines_dir() / name)
    hp = {**sub.spec.hyperparameters["smollm2"], **level, "calibration_samples": 4, "calibration_seq_len": 64}
    context = InterventionContext(
        hyperparameters=hp, seed=0, device=CPU, dtype=RUN_DTYPE, model_family="smollm2", calibration_texts=calibration
    )
    return sub.instantiate(), context


def _max_values_per_group(model, group: int) -> int:
    """Most distinct values in any (output row, group of input columns) of any block Linear."""
    most = 0
    for _, weight in block_linear_weights(model):
        groups = weight.detach().float().reshape(weight.shape[0], -1, group)
        # distinct values per group: sort, count changes
        ordered = groups.sort(dim=-1).values
        distinct = 1 + (ordered[..., 1:] != ordered[..., :-1]).sum(dim=-1)
        most = max(most, int(distinct.max()))
    return most


def _assert_vanilla(model):
    for name, module in model.named_modules():
        assert not hasattr(module, "quantization_scheme"), name
        assert not hasattr(module, "weight_scale"), name
        assert not module._forward_hooks and not module._forward_pre_hooks, name
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert all(p.dtype == RUN_DTYPE for p in model.parameters())


@pytest.mark.parametrize("sparsity", [0.45])
def test_sparsegpt_measured_sparsity_is_the_asked_one(short_model, calibration, sparsity):
    model, tok = short_model
    embed = model.model.embed_tokens.weight.detach().clone()
    intervention, context = _run("sparsegpt", model, tok, calibration, sparsity=sparsity)
    before = model.model.layers[1].mlp.up_proj.weight.detach().clone()
    model = intervention.apply(model, tok, context)
    assert measure_sparsity(model) == pytest.approx(sparsity, abs=2e-3)
    after = model.model.layers[1].mlp.up_proj.weight
    kept = after != 0
    # SparseGPT updates the kept weights (Wanda would not): the row-wise compensation is there
    assert not torch.equal(after[kept], before[kept])
    assert torch.equal(model.model.embed_tokens.weight, embed)
    _assert_vanilla(model)


def test_gptq_stays_on_its_grid_and_its_compressed_export_reloads_to_the_same_logits(short_model, calibration):
    model, tok = short_model
    base = copy.deepcopy(model)
    intervention, context = _run("gptq", model, tok, calibration, bits=3)
    model, check = check_deployment(intervention, model, tok, context)
    assert check.format == "pack-quantized" and "model.safetensors" in check.files
    assert check.ok, check.as_dict()
    assert 1 < _max_values_per_group(model, 64) <= 2**3
    assert intervention.weight_bits(context) == 3
    measured = measure_bits(model, intervention.weight_bits(context), base)  # what the record scores
    assert (measured.avg_bits, measured.check, measured.groups_refuting_the_claim) == (3.25, "verified", 0)
    _assert_vanilla(model)


def test_awq_stays_on_its_grid(short_model, calibration):
    model, tok = short_model
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    base = copy.deepcopy(model)
    intervention, context = _run("awq", model, tok, calibration, bits=2)
    model = intervention.apply(model, tok, context)
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, before)
    assert 1 < _max_values_per_group(model, 64) <= 2**2
    measured = measure_bits(model, intervention.weight_bits(context), base)
    assert (measured.avg_bits, measured.check) == (2.25, "verified")
    _assert_vanilla(model)


def test_reapplication_leaves_the_final_model_compressed(short_model, calibration, data_dir):
    """compression -> FT edit -> compression again (the plan's rule), on the real weights."""
    from benchmark.data.zsre import load_zsre, sample_edits

    subs = {n: load_submission(baselines_dir() / n) for n in ("gptq", "awq", "sparsegpt", "ft")}
    steps = {n: Step(s, s.spec.levels.default if s.spec.levels else None, family="smollm2") for n, s in subs.items()}

    def by_steps(rule):
        return {" -> ".join(s.label for s in c.steps): c for c in build_plan(list(steps.values()), rule)}

    plan = by_steps("paper")
    assert plan["gptq(bits=4) -> ft"].recompress is steps["gptq"]
    assert plan["sparsegpt(sparsity=0.25) -> ft"].recompress is steps["sparsegpt"]
    assert plan["awq(bits=4) -> ft"].recompress is None  # the paper did not re-apply AWQ
    assert plan["ft -> gptq(bits=4)"].recompress is None
    assert by_steps("always")["awq(bits=4) -> ft"].recompress is steps["awq"]
    assert by_steps("never")["gptq(bits=4) -> ft"].recompress is None

    model, tok = short_model
    base = copy.deepcopy(model)
    edits = tuple(r.to_edit_request() for r in sample_edits(load_zsre(data_dir)[0], 4, 0))
    cell = plan["gptq(bits=4) -> ft"]
    for step in (*cell.steps, cell.recompress):
        hp = step.hyperparameters
        if step.category.value == "compression":
            hp.update(calibration_samples=4, calibration_seq_len=64)
        else:
            hp.update(layers=[1, 2], steps=3)
        context = InterventionContext(
            hyperparameters=hp,
            seed=0,
            device=CPU,
            dtype=RUN_DTYPE,
            model_family="smollm2",
            edits=edits,
            calibration_texts=calibration,
        )
        model = step.submission.instantiate().apply(model, tok, context)
        if step is cell.steps[1]:
            assert _max_values_per_group(model, 64) > 2**4  # the edit moved weights off the grid
            # ... and the measured bits say so: FT's layers count as unquantized, the rest as 4 bits
            off_grid = measure_bits(model, 4, base)
            assert off_grid.check == "refuted" and 4.25 < off_grid.avg_bits < 16
            assert off_grid.groups_refuting_the_claim > 0 and off_grid.groups_fitting_the_claim > 0
    assert _max_values_per_group(model, 64) <= 2**4
    assert (measure_bits(model, 4, base).avg_bits, measure_bits(model, 4, base).check) == (4.25, "verified")
    _assert_vanilla(model)


def test_compressors_reject_bad_levels_and_settings(short_model, calibration):
    model, tok = short_model
    cases = [
        ("gptq", {"bits": 9}, "bits: Input should be 2, 3, 4"),
        ("awq", {"bits": "4"}, "bits: Input should be 2, 3, 4"),
        ("gptq", {"bits": 4, "group_size": 128}, "group_size 128 does not divide the input width 576.*64"),
        ("sparsegpt", {"sparsity": 1.2}, "sparsity: Input should be less than 1"),
        ("sparsegpt", {"sparsity": 0.5, "mask_structure": "4:2"}, "mask_structure"),
        ("awq", {"bits": 4, "n_grid": 0}, "n_grid: Input should be greater than or equal to 1"),
        ("gptq", {"bits": 4, "actorder": "sideways"}, "actorder: Input should be"),
    ]
    for name, level, message in cases:
        intervention, context = _run(name, model, tok, calibration, **level)
        with pytest.raises(InterventionError, match=message):
            intervention.apply(model, tok, context)
    intervention, context = _run("gptq", model, tok, (), bits=4)
    with pytest.raises(InterventionError, match="no calibration texts"):
        intervention.apply(model, tok, context)


@pytest.mark.parametrize(
    "name, entry, values, default, reapply",
    [
        ("gptq", "gptq:GPTQ", [2, 3, 4, 8], 4, True),
        ("awq", "awq:AWQ", [2, 3, 4, 5, 6, 8], 4, False),
        ("sparsegpt", "sparsegpt:SparseGPT", [0.25, 0.35, 0.45, 0.55, 0.65, 0.75], 0.25, True),
    ],
)
def test_compressor_submission_files(name, entry, values, default, reapply):
    sub = load_submission(baselines_dir() / name)
    assert sub.spec.entry_point == entry and sub.category.value == "compression" and sub.spec.license == "MIT"
    assert sub.spec.levels.values == values and sub.spec.levels.default == default
    assert sub.spec.protocol.reapply_when_first is reapply
    assert {"default", "llama3", "smollm2"} <= set(sub.spec.hyperparameters)
    assert sub.spec.hyperparameters["llama3"].get("group_size", 128) == 128
    assert sub.load_class().__doc__
