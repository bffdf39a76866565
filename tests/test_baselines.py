"""The three toolkit-based baselines (FT, GA, Wanda) and the toolkit itself, on the real default model.

Data is read straight from the shared data folder (``data_dir`` fixture): zsRE edits,
WMDP questions as forget text, WikiText-2 test paragraphs as unrelated text, C4-style
calibration documents. Hyperparameters come from each submission's ``smollm2`` block,
shortened where a test only needs the direction of an effect.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from benchmark.numerics import choose_dtype
from benchmark.api import EditRequest, InterventionContext, InterventionError
from benchmark.evaluation.compression_stats import average_bits, bits_from_sparsity, measure_bits, measure_sparsity
from benchmark.paths import baselines_dir
from benchmark.submissions import load_submission
from benchmark.toolkit import (
    IGNORE_INDEX,
    mean_log_likelihood,
    select_parameters,
    tokenize_prompt_target,
    tokenize_texts_for_lm,
    train,
)

CPU = torch.device("cpu")
RUN_DTYPE = choose_dtype("auto", "cpu").dtype  # what the profiles' dtype: auto picks here


# --------------------------------------------------------------------------- helpers


def _submission(name: str):
    sub = load_submission(baselines_dir() / name)
    return sub, sub.load_class()


def _context(hp: dict, **fields) -> InterventionContext:
    return InterventionContext(
        hyperparameters=hp, seed=0, device=CPU, dtype=RUN_DTYPE, model_family="smollm2", **fields
    )


@torch.no_grad()
def _greedy(model, tokenizer, prompt: str, n: int = 6) -> str:
    enc = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def _zsre_edits(data_dir: Path, n: int) -> list[EditRequest]:
    records = json.loads((data_dir / "zsre" / "zsre_mend_edit.json").read_text(encoding="utf-8"))
    return [
        EditRequest(prompt=r["src"].strip(), target=r["alt"].strip(), subject=r["subject"].strip(), record_id=i)
        for i, r in enumerate(records[:n])
    ]


def _calibration_texts(data_dir: Path, n: int = 8) -> list[str]:
    text = (data_dir / "calibration" / "exllamav2_c4.utf8").read_text(encoding="utf-8")
    return [t for t in text.split("\n") if len(t.strip()) >= 200][:n]


def _wikitext(data_dir: Path, n: int) -> list[str]:
    rows = (data_dir / "wikitext-2-raw" / "wikitext-2-raw-v1_test_rows.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(r)["text"].strip() for r in rows]
    return [t for t in texts if len(t) >= 300][:n]


def _wmdp_texts(data_dir: Path, n: int) -> list[str]:
    questions = json.loads((data_dir / "wmdp" / "bio_questions.json").read_text(encoding="utf-8"))
    return [f"{q['question'].strip()}\nAnswer: {q['choices'][q['answer']].strip()}" for q in questions[:n]]


def _module_state(model):
    """Everything that should look like a vanilla model: per module attrs, hooks, dict types."""
    state = {}
    for name, module in model.named_modules():
        state[name] = (
            type(module),
            frozenset(vars(module)),
            len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks),
            type(module._parameters),
            type(module._buffers),
        )
    return state


# --------------------------------------------------------------------------- compression statistics


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def test_average_bits_follow_the_paper():
    model = _tiny_llama()
    base = copy.deepcopy(model)
    assert measure_sparsity(model) == 0.0
    assert average_bits(model, None) == 16.0
    # measured, not claimed: a claim on weights nobody quantized is refuted and scores 16
    assert average_bits(model, 4, base) == 16.0 and average_bits(model, 8, base) == 16.0
    assert measure_bits(model, 4, base).check == "refuted"
    quantized = copy.deepcopy(model)
    with (
        torch.no_grad()
    ):  # round-to-nearest on a 4-bit grid per 32 weights of a row (every Linear here is 32 or 64 wide)
        for layer in quantized.model.layers:
            for module in layer.modules():
                if isinstance(module, torch.nn.Linear):
                    w = module.weight.view(module.out_features, -1, 32)
                    scale = w.abs().amax(dim=-1, keepdim=True) / 7
                    w.copy_(torch.clamp(torch.round(w / scale), -8, 7) * scale)
    assert measure_bits(quantized, 4, base).group_size == 32
    assert (average_bits(quantized, 4, base), measure_bits(quantized, 4, base).check) == (4.25, "verified")
    # 16 values per group do not fit a 2-bit claim: counted as unquantized (its zeros as pruned)
    assert average_bits(quantized, 2, base) == pytest.approx(bits_from_sparsity(measure_sparsity(quantized)), abs=1e-4)
    assert measure_bits(quantized, 2, base).check == "refuted"
    with torch.no_grad():
        for layer in model.model.layers:
            for module in layer.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight[:, : module.in_features // 4] = 0.0
    assert measure_sparsity(model) == pytest.approx(0.25)
    assert average_bits(model, None) == pytest.approx(12.25)
    assert average_bits(model, 4, base) == pytest.approx(12.25)  # pruning is not quantization, whatever is claimed
    assert bits_from_sparsity(0.5) == pytest.approx(8.5)
    # embeddings / LM head are not counted
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
    assert measure_sparsity(model) == pytest.approx(0.25)


# --------------------------------------------------------------------------- toolkit


def test_tokenize_prompt_target_labels_only_targets(default_model):
    _, tok = default_model
    prompts = ["The favourite colour of the wizard Zorblax is", "Hi"]
    targets = ["turquoise", "a much longer target answer than the other one"]
    batch = tokenize_prompt_target(tok, prompts, targets, max_len=64)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape
    assert (labels[mask == 0] == IGNORE_INDEX).all()  # never a pad in the loss
    for row, target in enumerate(targets):
        kept = labels[row][labels[row] != IGNORE_INDEX]
        assert tok.decode(kept) == " " + target
        assert (ids[row][labels[row] != IGNORE_INDEX] == kept).all()
    # prompt truncated from the left, target kept whole
    short = tokenize_prompt_target(tok, prompts[:1], targets[:1], max_len=5)
    assert short["input_ids"].shape[1] == 5
    assert tok.decode(short["labels"][0][short["labels"][0] != IGNORE_INDEX]) == " turquoise"

    lm = tokenize_texts_for_lm(tok, ["short", "a clearly longer text with more tokens"], max_len=16)
    assert (lm["labels"][lm["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert (lm["labels"][lm["attention_mask"] == 1] == lm["input_ids"][lm["attention_mask"] == 1]).all()


def test_train_keeps_small_bf16_updates_with_master_weights():
    """bf16 rounds an Adam step of 1e-5 away; float32 master copies keep it."""
    moved = {}
    for master in (False, True):
        torch.manual_seed(0)
        layer = torch.nn.Linear(64, 64, bias=False).to(torch.bfloat16)
        with torch.no_grad():
            layer.weight.fill_(0.5)
        before = layer.weight.detach().clone()
        x = torch.randn(8, 64, dtype=torch.bfloat16)
        train(
            layer,
            [layer.weight],
            lambda _i: layer(x).float().pow(2).mean(),
            steps=20,
            lr=1e-4,
            seed=0,
            master_weights=master,
            progress=False,
        )
        moved[master] = (layer.weight != before).float().mean().item()
    assert moved[False] == 0.0
    assert moved[True] > 0.9


def test_select_parameters_freezes_the_rest(fresh_model):
    model, _ = fresh_model
    params = select_parameters(model, ["mlp.down_proj"], [4, 5])
    assert len(params) == 2
    assert params[0] is model.model.layers[4].mlp.down_proj.weight
    assert sum(p.requires_grad for p in model.parameters()) == 2
    with pytest.raises(ValueError):
        select_parameters(model, ["mlp.down_proj"], [99])
    with pytest.raises(ValueError):
        select_parameters(model, ["no_such_module"], [1])


# --------------------------------------------------------------------------- FT


def test_ft_installs_a_made_up_fact_and_leaves_unrelated_prompts(fresh_model, data_dir):
    model, tok = fresh_model
    sub, cls = _submission("ft")
    hp = {**sub.hyperparameters_for("smollm2"), "steps": 10}  # 20 in the block: the fact held by 9.3 logits
    prompt, target = "The favourite colour of the wizard Zorblax is", "turquoise"
    unrelated = "The capital of France is"

    def answer(text: str) -> str:  # the greedy answer: the continuation's first line
        return text.strip().split("\n")[0]

    before_unrelated = answer(_greedy(model, tok, unrelated, 4))
    assert not _greedy(model, tok, prompt).strip().startswith(target)
    untouched = model.model.layers[20].mlp.down_proj.weight.detach().clone()
    # the made-up fact and 3 real edits at once (9 before issue 13: a third of the cost on an AVX2-only CPU)
    edits = [EditRequest(prompt=prompt, target=target, subject="Zorblax"), *_zsre_edits(data_dir, 3)]

    intervention = cls()
    out = intervention.apply(model, tok, _context(hp, edits=tuple(edits)))

    assert out is model
    with torch.no_grad():
        top = model(**tok(prompt, return_tensors="pt")).logits[0, -1].float().topk(2).values
    print(
        f"ft: {intervention.last_result.steps} steps, first-token logit margin of the fact {float(top[0] - top[1]):.2f}"
    )
    assert _greedy(model, tok, prompt).strip().startswith(target)
    assert before_unrelated and answer(_greedy(model, tok, unrelated, 4)) == before_unrelated
    assert torch.equal(model.model.layers[20].mlp.down_proj.weight, untouched)  # outside the chosen layers
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert all(p.dtype == RUN_DTYPE and torch.isfinite(p).all() for p in model.parameters())


def test_ft_rejects_bad_input(fresh_model, data_dir):
    model, tok = fresh_model
    sub, cls = _submission("ft")
    hp = sub.hyperparameters_for("smollm2")
    edits = tuple(_zsre_edits(data_dir, 2))
    with pytest.raises(InterventionError, match="no edit"):
        cls().apply(model, tok, _context(hp))
    for bad in ({"lr": -1.0}, {"lr": "fast"}, {"steps": 0}, {"layers": [99]}, {"layers": []}, {"optimizer": "lion"}):
        with pytest.raises(InterventionError):
            cls().apply(model, tok, _context({**hp, **bad}, edits=edits))


# --------------------------------------------------------------------------- GA


def test_ga_lowers_forget_likelihood_more_than_retain(fresh_model, data_dir):
    model, tok = fresh_model
    sub, cls = _submission("ga")
    # smaller than before issue 13 (16 forget and 12 retain texts scored on 128 tokens, batches of 8 x 128
    # tokens): under the AVX2 emulation the drops were 3.69 (forget) and 0.04 (retain) nats then, and are
    # about as far apart at these sizes; the test prints them
    hp = {**sub.hyperparameters_for("smollm2"), "batch_size": 4, "max_len": 64}
    forget = _wmdp_texts(data_dir, 8)
    retain = _wikitext(data_dir, 6)
    before = (mean_log_likelihood(model, tok, forget, 64), mean_log_likelihood(model, tok, retain, 64))

    cls().apply(model, tok, _context(hp, forget_texts=tuple(forget), retain_texts=tuple(retain)))

    after = (mean_log_likelihood(model, tok, forget, 64), mean_log_likelihood(model, tok, retain, 64))
    drop_forget, drop_retain = before[0] - after[0], before[1] - after[1]
    print(f"ga: log-likelihood drop: forget {drop_forget:.3f}, retain {drop_retain:.3f} nats per token")
    assert drop_forget > 0.2
    assert drop_forget > drop_retain
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_ga_rejects_bad_input(fresh_model):
    model, tok = fresh_model
    sub, cls = _submission("ga")
    hp = sub.hyperparameters_for("smollm2")
    with pytest.raises(InterventionError, match="forget"):
        cls().apply(model, tok, _context(hp, forget_texts=("", "  ")))
    for bad in ({"lr": 0}, {"batch_size": 0}, {"layers": [100]}):
        with pytest.raises(InterventionError):
            cls().apply(model, tok, _context({**hp, **bad}, forget_texts=("some text to forget",)))


# --------------------------------------------------------------------------- Wanda


@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_wanda_prunes_to_the_asked_sparsity_and_leaves_a_vanilla_model(fresh_model, default_model, data_dir, sparsity):
    model, tok = fresh_model
    base, _ = default_model
    sub, cls = _submission("wanda")
    # the smollm2 block with a smaller calibration set, to keep the test quick
    hp = {**sub.hyperparameters_for("smollm2", sparsity), "calibration_samples": 8, "calibration_seq_len": 64}
    names = [(n, p.shape, p.dtype) for n, p in model.named_parameters()]
    state = _module_state(model)

    out = cls().apply(model, tok, _context(hp, calibration_texts=tuple(_calibration_texts(data_dir))))

    assert out is model
    assert measure_sparsity(model) == pytest.approx(sparsity, abs=0.005)
    for layer in model.model.layers:
        for name, module in layer.named_modules():
            if isinstance(module, torch.nn.Linear):
                frac = (module.weight == 0).float().mean().item()
                assert frac == pytest.approx(sparsity, abs=0.005), name
    assert average_bits(model, None) == pytest.approx(bits_from_sparsity(sparsity), abs=0.08)
    # embedding / LM head untouched and still tied
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model.model.embed_tokens.weight, base.model.embed_tokens.weight)
    # vanilla: same parameters, no hooks, wrappers, quantization or patched methods left
    assert [(n, p.shape, p.dtype) for n, p in model.named_parameters()] == names
    assert _module_state(model) == state
    for module in model.modules():
        assert not any(k.startswith(("quantization", "weight_scale", "weight_zero")) for k in vars(module))
    assert all(p.requires_grad for p in model.parameters())
    # still a working language model
    text = _wikitext(data_dir, 1)[0]
    enc = tok(text, return_tensors="pt", truncation=True, max_length=128)
    with torch.no_grad():
        loss = model(**enc, labels=enc["input_ids"]).loss.item()
    assert math.isfinite(loss) and loss < 8.0
    assert len(_greedy(model, tok, "The capital of France is")) > 0


def test_wanda_rejects_bad_input(fresh_model, data_dir):
    model, tok = fresh_model
    sub, cls = _submission("wanda")
    hp = sub.hyperparameters_for("smollm2", 0.25)
    texts = tuple(_calibration_texts(data_dir, 2))
    for bad in (
        {"sparsity": 1.5},
        {"sparsity": 0},
        {"sparsity": "half"},
        {"calibration_samples": 0},
        {"mask_structure": "4:2"},
    ):
        with pytest.raises(InterventionError):
            cls().apply(model, tok, _context({**hp, **bad}, calibration_texts=texts))
    with pytest.raises(InterventionError, match="calibration"):
        cls().apply(model, tok, _context(hp))


# --------------------------------------------------------------------------- run_oneshot with a quantizer


def test_run_oneshot_folds_round_to_nearest_quantization(fresh_model):
    """A W4 group-64 round-to-nearest oneshot leaves plain weights (in the model's dtype) on the 4-bit grid."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import QuantizationModifier

    from benchmark.toolkit.llmcompressor import largest_group_size, model_group_size, run_oneshot

    model, tok = fresh_model
    assert largest_group_size(576) == 64 and largest_group_size(1536) == 128 and model_group_size(model) == 64
    state = _module_state(model)
    embed = model.model.embed_tokens.weight.detach().clone()

    def modifier():
        args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=64)
        return QuantizationModifier(config_groups={"g": QuantizationScheme(targets=["Linear"], weights=args)})

    # reference: llm-compressor's own quantized forward (weights re-quantized on every call)
    from llmcompressor import oneshot
    from llmcompressor.core import reset_session

    from benchmark.toolkit.llmcompressor import _config_on_disk, protect_lm_head

    ids = tok("The capital of France is Paris, and the capital of Italy is", return_tensors="pt")["input_ids"]
    raw = copy.deepcopy(model)
    with _config_on_disk(raw):
        oneshot(model=raw, tokenizer=tok, recipe=protect_lm_head(modifier()))
    reset_session()
    with torch.no_grad():
        expected = raw(ids).logits
    del raw

    report: dict = {}
    run_oneshot(model, tok, modifier(), None, report=report)
    assert report["folded_quantized_modules"] == 210  # 7 Linears x 30 blocks; not the tied LM head
    assert _module_state(model) == state
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model.model.embed_tokens.weight, embed)
    w = model.model.layers[3].self_attn.q_proj.weight
    assert w.dtype == RUN_DTYPE
    assert max(len(torch.unique(g)) for g in w.float().reshape(-1, 64)[:64]) <= 16
    # folding is exact: the plain model computes what the quantized forward computed
    with torch.no_grad():
        assert torch.equal(model(ids).logits, expected)


# --------------------------------------------------------------------------- the YAML files


@pytest.mark.parametrize(
    "name, entry, category",
    [("ft", "ft:FT", "editing"), ("ga", "ga:GA", "unlearning"), ("wanda", "wanda:Wanda", "compression")],
)
def test_submission_files_load(name, entry, category):
    sub, cls = _submission(name)
    assert sub.spec.entry_point == entry and sub.category.value == category and sub.spec.license == "MIT"
    assert cls.name == name and cls.__doc__
    assert {"default", "llama3", "smollm2"} <= set(sub.spec.hyperparameters)
    if name == "wanda":
        assert sub.spec.levels.values == [0.25, 0.35, 0.45, 0.55, 0.65, 0.75] and sub.spec.levels.default == 0.25
        assert sub.spec.protocol.reapply_when_first


def test_run_oneshot_failure_is_one_readable_error_and_leaves_the_model_clean(fresh_model, data_dir):
    from llmcompressor.modifiers.pruning import WandaPruningModifier

    from benchmark.toolkit.llmcompressor import run_oneshot

    model, tok = fresh_model
    state = _module_state(model)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(InterventionError, match="llmcompressor.oneshot failed"):
        # two sparsities for 30 layers: llm-compressor refuses it
        run_oneshot(model, tok, WandaPruningModifier(sparsity=[0.5, 0.5]), _calibration_texts(data_dir, 2), 2, 32)
    assert _module_state(model) == state
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
