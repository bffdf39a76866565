"""LoRA and MEMIT (beside FT) on the real default model, and the cached key statistics.

Each editor gets a made-up fact plus real zsRE edits, all at once, and must install the
fact while leaving an unrelated prompt's greedy answer alone. LoRA keeps float32 adapters
on the bf16 model; MEMIT estimates
its key statistics from a small sample of the real reference text into a temporary cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark.numerics import choose_dtype
from benchmark.api import EditRequest, InterventionContext, InterventionError
from benchmark.paths import baselines_dir
from benchmark.submissions import load_submission
from benchmark.toolkit import key_second_moments, reference_texts

CPU = torch.device("cpu")
RUN_DTYPE = choose_dtype("auto", "cpu").dtype  # the default model's dtype in the suite (conftest)
FACT = ("The favourite colour of the wizard Zorblax is", "turquoise", "Zorblax")
UNRELATED = "The capital of France is"


def _context(hp: dict, dtype=None, **fields) -> InterventionContext:
    return InterventionContext(
        hyperparameters=hp, seed=0, device=CPU, dtype=dtype or RUN_DTYPE, model_family="smollm2", **fields
    )


@torch.no_grad()
def _greedy(model, tokenizer, prompt: str, n: int = 6) -> str:
    enc = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip().split("\n")[0]


@torch.no_grad()
def _first_token_margin(model, tokenizer, prompt: str) -> float:
    """Top logit minus the runner-up's at the first generated position: how firmly the greedy answer is held."""
    enc = tokenizer(prompt, return_tensors="pt")
    top = model(**enc).logits[0, -1].float().topk(2).values
    return float(top[0] - top[1])


def _edits(data_dir: Path, n: int) -> list[EditRequest]:
    from benchmark.data.zsre import load_zsre, sample_edits

    records = sample_edits(load_zsre(data_dir)[0], n, seed=0, split="development")
    return [EditRequest(prompt=FACT[0], target=FACT[1], subject=FACT[2]), *(r.to_edit_request() for r in records)]


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPOSE_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# Sizes (issue 13: the suite within 15 minutes on an AVX2-only CPU): the made-up fact plus 3 real edits, not 9;
# LoRA 15 steps (not 25); MEMIT's key statistics over 2000 tokens (more than the 1536 key dimensions, so C has
# full rank), not 6000, and 15 value steps (not 25). Measured under the AVX2 emulation (float32): mean target
# loss 4.74 -> 0.62 (LoRA) and 4.74 -> 1.06 (MEMIT's value optimisation), the fact's greedy answer "turquoise"
# and "Paris" kept for both; the test prints the first-token logit margins.
N_REAL_EDITS = 3


@pytest.mark.parametrize(
    "name, overrides, dtype",
    [
        ("lora", {"steps": 15}, RUN_DTYPE),
        ("memit", {"mom2_n_tokens": 2000, "v_steps": 15}, RUN_DTYPE),
    ],
)
def test_editor_installs_a_made_up_fact_and_leaves_an_unrelated_prompt(
    fresh_model, data_dir, tmp_cache, name, overrides, dtype
):
    model, tok = fresh_model
    sub = load_submission(baselines_dir() / name)
    before_unrelated = _greedy(model, tok, UNRELATED, 4)
    assert not _greedy(model, tok, FACT[0]).startswith(FACT[1])
    untouched = model.model.layers[20].mlp.down_proj.weight.detach().clone()
    model = model.to(dtype)
    out = sub.instantiate().apply(
        model,
        tok,
        _context(
            {**sub.hyperparameters_for("smollm2"), **overrides}, dtype, edits=tuple(_edits(data_dir, N_REAL_EDITS))
        ),
    )
    out = out.to(RUN_DTYPE)
    print(
        f"{name}: first-token logit margins: fact {_first_token_margin(out, tok, FACT[0]):.2f}, "
        f"unrelated {_first_token_margin(out, tok, UNRELATED):.2f}"
    )
    assert _greedy(out, tok, FACT[0]).startswith(FACT[1])
    # the unrelated question keeps its answer (the first word: "Paris")
    assert before_unrelated and _greedy(out, tok, UNRELATED, 4).split()[0].strip(
        ".,;:!?()\"'"
    ) == before_unrelated.split()[0].strip(".,;:!?()\"'")
    assert torch.equal(out.model.layers[20].mlp.down_proj.weight, untouched)  # outside the edited layers
    assert all(
        type(m).__name__ != "LoraLayer" and not hasattr(m, "lora_A") for m in out.modules()
    )  # merged, no adapters
    assert (
        sorted(n for n, _ in out.named_parameters()) == sorted(n for n, _ in model.named_parameters()) or name == "lora"
    )
    assert all(torch.isfinite(p).all() for p in out.parameters())


def test_key_statistics_are_computed_once_reused_and_recomputed_when_provenance_differs(fresh_model, tmp_cache):
    model, tok = fresh_model
    calls = []
    handle = model.model.layers[0].register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        first = key_second_moments(model, tok, [2, 3], n_tokens=1500, seq_len=128)
        n_first = len(calls)
        second = key_second_moments(model, tok, [2, 3], n_tokens=1500, seq_len=128)
        n_second = len(calls) - n_first
        other = key_second_moments(model, tok, [3], n_tokens=1000, seq_len=128)
    finally:
        handle.remove()
    assert n_first > 0 and not first.from_cache
    assert n_second == 0 and second.from_cache  # no forward pass: read from disk
    assert torch.equal(first.moments[3], second.moments[3]) and not other.from_cache
    moment = first.moments[2]
    assert moment.shape == (1536, 1536) and moment.dtype == torch.float32 and torch.allclose(moment, moment.T)
    meta = json.loads(
        next(
            p for p in (tmp_cache / "key-statistics").glob("*.json") if json.loads(p.read_text())["layer"] == 2
        ).read_text()
    )
    assert (
        meta["n_tokens"] == 1500
        and meta["corpus"]["name"]
        and meta["weights_sha256_prefix"]
        and meta["tokens_used"] == 1500
    )
    # a cache file whose provenance was altered is not trusted
    path = next(
        p
        for p in (tmp_cache / "key-statistics").glob("*.json")
        if json.loads(p.read_text())["layer"] == 3 and json.loads(p.read_text())["n_tokens"] == 1500
    )
    path.write_text(json.dumps({**json.loads(path.read_text()), "corpus": {"name": "something else"}}))
    assert not key_second_moments(model, tok, [3], n_tokens=1500, seq_len=128).from_cache
    # a changed block below the layer changes the fingerprint: recomputed, not reused
    assert key_second_moments(model, tok, [2], n_tokens=1500, seq_len=128).from_cache
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(1.01)
    assert not key_second_moments(model, tok, [2], n_tokens=1500, seq_len=128).from_cache
    texts, corpus = reference_texts()
    assert corpus["name"] and len(texts) > 100


@pytest.mark.parametrize(
    "name, bad, message",
    [
        ("lora", {"variant": "dora"}, "variant: Input should be 'lora' or 'adalora'"),
        ("lora", {"rank": 0}, "rank: Input should be greater than or equal to 1"),
        ("lora", {"target_modules": "q_proj"}, "target_modules: Input should be a valid list"),
        ("memit", {"layers": [31]}, "'layers' must list block indices"),
        ("memit", {"v_lr": -0.5}, "v_lr: Input should be greater than 0"),
    ],
)
def test_editors_reject_bad_input(fresh_model, data_dir, name, bad, message):
    model, tok = fresh_model
    sub = load_submission(baselines_dir() / name)
    with pytest.raises(InterventionError, match=message):
        sub.instantiate().apply(
            model, tok, _context({**sub.hyperparameters_for("smollm2"), **bad}, edits=tuple(_edits(data_dir, 1)))
        )
    with pytest.raises(InterventionError, match="no edit requests"):
        sub.instantiate().apply(model, tok, _context(sub.hyperparameters_for("smollm2")))


@pytest.mark.parametrize("name, entry", [("lora", "lora:LoRA"), ("memit", "memit:MEMIT")])
def test_editor_submission_files(name, entry):
    sub = load_submission(baselines_dir() / name)
    assert sub.spec.entry_point == entry and sub.category.value == "editing" and sub.spec.license == "MIT"
    assert {"default", "llama3", "smollm2"} <= set(sub.spec.hyperparameters)
    assert sub.load_class().__doc__
