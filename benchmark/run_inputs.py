"""What a run loads once and every cell shares: the model, its family, the data, the evaluation suite.

Both executors build this the same way (:func:`load_run_inputs`): the local runner once per
run, each Ray worker once per process. The model family is known here, before the plan is
built, so every step's settings are resolved once (:func:`benchmark.plan.steps_for`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from benchmark.data.corpora import Corpus, load_calibration_corpus, load_forget_corpus, load_retain_corpus
from benchmark.models import (
    ResolvedModel,
    copy_holding,
    family_of,
    load_model,
    pick_device,
    resolve_model,
    weights_sha256,
)
from benchmark.numerics import DtypeChoice, choose_dtype
from benchmark.profiles import Profile
from benchmark.step_checks import signature
from benchmark.step_executor import StepMaterials
from benchmark.suite import EvaluationSuite


@dataclass
class RunInputs:
    """Everything loaded once per run and shared by every cell."""

    profile: Profile
    resolved: ResolvedModel
    family: str
    device: torch.device
    dtype: torch.dtype
    numerics: DtypeChoice  # how dtype was chosen (recorded)
    base_model: torch.nn.Module  # pristine, never handed to an intervention
    tokenizer: Any
    base_sha: str
    signature: dict[str, tuple[int, ...]]
    suite: EvaluationSuite
    forget: Corpus
    retain: Corpus
    calibration: Corpus
    out_dir: Path
    context_key: dict[str, Any] = field(default_factory=dict)
    tokens: Any = None  # benchmark.cost.EvaluationTokens: tokens one evaluation processes (cost model)
    reference: Corpus | None = None  # generic text for editors' statistics (the whole retain corpus)

    @property
    def materials(self) -> StepMaterials:
        """What the step executor builds every step's context from."""
        return StepMaterials(
            seed=self.profile.seed,
            device=self.device,
            dtype=self.dtype,
            family=self.family,
            model_id=self.resolved.model_id,
            model_path=self.resolved.path,
            base_sha=self.base_sha,
            tokenizer=self.tokenizer,
            signature=self.signature,
            edits=tuple(r.to_edit_request() for r in self.suite.edits),  # prompt, subject, target only
            reference_texts=self.reference.texts if self.reference else (),
            forget_texts=self.forget.texts,
            retain_texts=self.retain.texts,
            calibration_texts=self.calibration.texts,
            forget_corpus_name=self.forget.name,
            max_seq_len=self.profile.evaluation.perplexity_seq_len,
        )

    def fresh(self, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """A harness-owned copy of the base model, holding ``state`` when given."""
        return copy_holding(self.base_model, state)


def load_run_inputs(
    profile: Profile,
    out_dir: Path,
    model_id: str | None = None,
    device: str | None = None,
    data_dir: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> RunInputs:
    """Load the model, data and suite of ``profile`` and write the locality reference under ``out_dir``."""
    p = profile
    if p.threads:
        torch.set_num_threads(p.threads)
    where = pick_device(device or p.device)
    numerics = choose_dtype(p.dtype, str(where))
    if warning := numerics.slow_warning():
        echo(warning)
    resolved = resolve_model(model_id or p.model)
    echo(f"model: {resolved.model_id} from {resolved.source} ({numerics.name} on {where}, {numerics.reason})")
    base_model, tokenizer = load_model(resolved, numerics.dtype, where)
    family = family_of(resolved.model_id, base_model.config)
    base_sha = weights_sha256(base_model)
    c = p.corpora
    forget = load_forget_corpus(c.forget_n, p.seed, data_dir, c.bio_forget_path)
    retain = load_retain_corpus(c.retain_n, p.seed, data_dir)
    calibration = load_calibration_corpus(c.calibration_n, p.seed, data_dir)
    suite = EvaluationSuite.build(p.evaluation, p.seed, data_dir, forget.name)
    echo(
        f"data: {len(suite.edits)} edits, {len(suite.mcq['mmlu'])} MMLU, "
        f"{len(suite.mcq['wmdp_bio'])}+{len(suite.mcq['wmdp_cyber'])} WMDP ({p.evaluation.prompt_format}), "
        f"forget corpus {forget.name}"
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suite.prepare_reference(base_model, tokenizer, out_dir / "locality_reference.json", base_sha)
    context_key = {
        "model_id": resolved.model_id,
        "weights_sha256": base_sha,
        "dtype": numerics.name,
        "seed": p.seed,
        "evaluation": p.evaluation.model_dump(mode="json"),
        "corpora": {"forget": forget.describe(), "retain": retain.describe(), "calibration": calibration.describe()},
        "protocol": p.protocol.model_dump(mode="json"),
        "tasks": suite.provenance,
    }
    return RunInputs(
        p,
        resolved,
        family,
        where,
        numerics.dtype,
        numerics,
        base_model,
        tokenizer,
        base_sha,
        signature(base_model),
        suite,
        forget,
        retain,
        calibration,
        out_dir,
        context_key,
        reference=load_retain_corpus(None, p.seed, data_dir),
    )
