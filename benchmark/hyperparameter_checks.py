"""Check a submission's hyperparameters against the model its class declares, before anything runs.

An intervention declares its knobs as a :class:`benchmark.api.Hyperparameters` model. The
harness never imports a submission's code itself, so the class is imported where the
import check already runs it (the sealed box of :func:`benchmark.isolation.check_import`,
or this process for ``--in-process`` runs of trusted code); this module builds the
settings to check on the harness side (every family block of ``submission.yaml`` at
every level, with a profile's overrides merged in), validates them where the class
lives (:func:`validate_sets`) and turns pydantic's errors back into one line naming the
file and field the bad value came from (:func:`first_problem`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from benchmark.api import Hyperparameters
from benchmark.submissions import SUBMISSION_FILE, Submission, SubmissionError

if TYPE_CHECKING:
    from benchmark.profiles import Profile

__all__ = [
    "SettingsToCheck",
    "settings_to_check",
    "validate_sets",
    "describe_fields",
    "first_problem",
    "check_in_process",
    "check_submissions",
]


@dataclass(frozen=True)
class SettingsToCheck:
    """One resolved set of hyperparameters, and where each value was written (for the error line)."""

    params: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)  # key -> "<file>: field '<path>'"
    block: str = ""  # where a missing required value should be written


def _profile_where(profile: "Profile") -> str:
    return profile.source or f"profile {profile.name!r}"


def settings_to_check(sub: Submission, profile: "Profile | None" = None) -> list[SettingsToCheck]:
    """Every family block of ``sub`` merged over ``default``, at each level it may run at, with the profile's overrides.

    Without a profile every declared level is checked (``validate``); with one, the levels
    the profile asks for (its default level otherwise), as :func:`benchmark.plan.steps_for`
    resolves them.
    """
    file = sub.folder / SUBMISSION_FILE
    blocks = sub.spec.hyperparameters
    choice = profile.interventions.get(sub.name) if profile is not None else None
    overrides = dict((choice.hyperparameters or {}) if choice else {})
    levels = sub.spec.levels
    if levels is None:
        level_values: list[Any] = [None]
    elif choice is not None and choice.levels:
        level_values = [lv for lv in choice.levels if lv in levels.values]  # plan.steps_for names the others
    else:
        level_values = list(levels.values) if profile is None else [levels.default]
    out, seen = [], set()
    for family in list(blocks) or ["default"]:
        for level in level_values:
            params = sub.hyperparameters_for(family, level)
            origins = {k: f"{file}: field 'hyperparameters.default.{k}'" for k in blocks.get("default", {})}
            origins.update({k: f"{file}: field 'hyperparameters.{family}.{k}'" for k in blocks.get(family, {})})
            if levels is not None and level is not None:
                origins[levels.parameter] = f"{file}: field 'levels.values' ({levels.parameter}={level!r})"
            if overrides:
                params.update(overrides)
                where = _profile_where(profile)  # type: ignore[arg-type]  # overrides come from a profile
                origins.update({k: f"{where}: field 'interventions.{sub.name}.hyperparameters.{k}'" for k in overrides})
            key = json.dumps(params, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(SettingsToCheck(params, origins, f"{file}: field 'hyperparameters.{family}'"))
    return out


def validate_sets(model: type[Hyperparameters], sets: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """pydantic's errors for each set (empty when it passes), as plain data that crosses the box's boundary."""
    out: list[list[dict[str, Any]]] = []
    for params in sets:
        try:
            model.model_validate(params)
            out.append([])
        except ValidationError as exc:
            out.append(
                [
                    {
                        "loc": [str(p) for p in e["loc"]],
                        "type": e["type"],
                        "msg": e["msg"],
                        "input": repr(e.get("input"))[:80],
                    }
                    for e in exc.errors()
                ]
            )
    return out


def _type_text(annotation: Any) -> str:
    if isinstance(annotation, type):  # int, float, str, bool (not list[int], a generic alias)
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_BOUNDS = {
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
    "min_length": "length >=",
    "max_length": "length <=",
    "pattern": "matches",
}


def _constraint_text(metadata: list[Any]) -> str:
    """``Ge(ge=1)`` as ``>= 1``: the annotated-types and pydantic metadata objects, read by their attributes."""
    parts = []
    for item in metadata:
        for attr, sign in _BOUNDS.items():
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return ", ".join(parts)


def describe_fields(model: type[Hyperparameters]) -> list[dict[str, Any]]:
    """Each declared knob: name, type, default (None when required), constraints, description."""
    rows = []
    for name, info in model.model_fields.items():
        required = info.is_required()
        default = None if required else info.get_default(call_default_factory=True)
        rows.append(
            {
                "name": name,
                "type": _type_text(info.annotation),
                "required": required,
                "default": json.loads(json.dumps(default, default=str)),
                "constraints": _constraint_text(info.metadata),
                "description": info.description or "",
            }
        )
    return rows


def declared(cls: Any) -> bool:
    """Whether the class declares its own hyperparameters model (the API's base declares none)."""
    model = getattr(cls, "Hyperparameters", Hyperparameters)
    return isinstance(model, type) and issubclass(model, Hyperparameters) and model is not Hyperparameters


def first_problem(
    sub: Submission, sets: list[SettingsToCheck], errors: list[list[dict[str, Any]]], class_name: str
) -> str | None:
    """One line for the first set that fails: the file, field and value of each bad hyperparameter."""
    for checked, errs in zip(sets, errors):
        if not errs:
            continue
        parts = []
        for e in errs:
            key = e["loc"][0] if e["loc"] else ""
            inner = ".".join(e["loc"][1:])
            if e["type"] == "missing":
                parts.append(
                    f"{checked.block}: required hyperparameter {key!r} is missing ({class_name} declares no default)"
                )
            elif e["type"] == "extra_forbidden":
                parts.append(
                    f"{checked.origins.get(key, checked.block)}: unknown hyperparameter "
                    f"({class_name}.Hyperparameters does not declare {key!r})"
                )
            else:
                where = checked.origins.get(key, f"{checked.block}.{key}")
                parts.append(
                    f"{where}{f' [{inner}]' if inner else ''}: {e['msg'].removeprefix('Value error, ')}, got {e['input']}"
                )
        return "; ".join(parts)
    return None


def check_in_process(sub: Submission, profile: "Profile | None" = None) -> str | None:
    """Import the class here (trusted code only: ``--in-process``) and check its settings; one line or None.

    A class that does not import is not this check's business: its cells fail with that reason
    when the grid reaches them, and the rest of the grid goes on.
    """
    try:
        cls = sub.load_class()
    except SubmissionError:
        return None
    if not declared(cls):
        return None
    sets = settings_to_check(sub, profile)
    return first_problem(sub, sets, validate_sets(cls.Hyperparameters, [s.params for s in sets]), cls.__name__)


def check_submissions(subs: list[Submission], profile: "Profile", isolate: bool) -> None:
    """Before a run loads its model: every submission's settings for this profile; a SubmissionError on the first problem.

    Only hyperparameters stop the run here (they are the profile's and the submitter's to fix, and
    every cell of that submission would fail on them); a class that does not import or breaks the
    API fails its own cells with the reason, as a hostile or broken submission must not stop a grid.
    """
    from benchmark.isolation import IMPORT_CHECK_TIMEOUT_S, check_import

    for sub in subs:
        if not isolate:
            problem = check_in_process(sub, profile)
        else:
            sets = settings_to_check(sub, profile)
            limit = min(
                IMPORT_CHECK_TIMEOUT_S, max(30.0, sub.spec.resources.time_budget_s)
            )  # a hostile import may hang
            verdict, _message, report = check_import(sub.folder, limit, [s.params for s in sets])
            problem = (
                first_problem(sub, sets, report["errors"], report["class_name"])
                if verdict == "ok" and report.get("declared")
                else None
            )
        if problem:
            raise SubmissionError(problem)


def class_fields(folder: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """(problem, declared knobs) of the submission in ``folder``, read in the sealed box."""
    from benchmark.isolation import IMPORT_CHECK_TIMEOUT_S, check_import

    verdict, message, report = check_import(folder, IMPORT_CHECK_TIMEOUT_S, [])
    if verdict != "ok":
        return message, []
    return None, list(report.get("fields", []))
