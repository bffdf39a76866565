"""Baked vs llm-compressor's wrapped forward after GPTQ W4 g64 on the default model.

Prints the largest logit difference between the two, their forward time on 256 tokens, and
what one gradient step on a quantized layer changes in each (see docs/COMPRESSION.md).
Run from the repository root with the offline data folder set (COMPOSE_BENCH_DATA).
"""

import copy, time, torch
from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model
from benchmark.data.corpora import load_calibration_corpus
from benchmark.toolkit.llmcompressor import (
    _config_on_disk,
    protect_lm_head,
    build_calibration_dataset,
    oneshot_arguments,
    run_oneshot,
    _cpu_safe_pin_memory,
)
from benchmark.toolkit import weight_quantization_groups
from llmcompressor import oneshot
from llmcompressor.core import reset_session
from llmcompressor.modifiers.quantization import GPTQModifier

model, tok = load_model(resolve_model(DEFAULT_MODEL_ID), torch.bfloat16, torch.device("cpu"))
cal = load_calibration_corpus(32, 0).texts
mod = lambda: GPTQModifier(
    config_groups=weight_quantization_groups(4, 64, True), ignore=["re:.*lm_head"], actorder=None
)
wrapped = copy.deepcopy(model)
ds = build_calibration_dataset(tok, cal, 16, 128, 0)
with _cpu_safe_pin_memory(), _config_on_disk(wrapped):
    oneshot(**oneshot_arguments(wrapped, tok, protect_lm_head(mod()), ds, None))
reset_session()
baked = run_oneshot(copy.deepcopy(model), tok, mod(), cal, num_samples=16, seq_len=128, seed=0)
ids = tok(" ".join(cal)[:4000], return_tensors="pt")["input_ids"][:, :256]
with torch.no_grad():
    lw, lb = wrapped(ids).logits, baked(ids).logits
print("max |logit diff| wrapped vs baked:", (lw.float() - lb.float()).abs().max().item())
for name, m in (("wrapped", wrapped), ("baked", baked)):
    with torch.no_grad():
        m(ids)
        t = time.perf_counter()
        for _ in range(5):
            m(ids)
    print(f"forward 256 tokens {name}: {(time.perf_counter() - t) / 5 * 1000:.0f} ms")
# one gradient step on layer 4 down_proj: what does a trainer change?
for name, m in (("wrapped", wrapped), ("baked", baked)):
    w = m.model.layers[4].mlp.down_proj.weight
    w.requires_grad_(True)
    loss = m(ids, labels=ids).loss
    loss.backward()
    g = w.grad
    print(f"{name}: grad on weight exists={g is not None}, |grad|={0 if g is None else g.float().norm().item():.4g}")
    with torch.no_grad():
        before = m(ids).logits.float()
        w.add_(-1e-3 * torch.sign(w.grad) if w.grad is not None else 0)
        after = m(ids).logits.float()
    print(f"{name}: a 1e-3 sign step on down_proj[4] changes logits by max {(after - before).abs().max().item():.4g}")
    w.requires_grad_(False)
