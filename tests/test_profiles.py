"""Profiles without copies: ``extends:`` and the standard tier as the Python defaults change no value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.profiles import Profile, ProfileError, available_profiles, load_profile, profiles_dir

FIXTURES = Path(__file__).parent / "fixtures"


def test_every_profile_resolves_to_the_values_it_had_before_extends():
    """tests/fixtures/profiles_resolved.json: each profile's settings() as main resolved them before extends:."""
    before = json.loads((FIXTURES / "profiles_resolved.json").read_text())
    assert sorted(before) == available_profiles()
    for name, settings in before.items():
        assert load_profile(name).settings() == settings, name


def test_profiles_do_not_repeat_the_defaults():
    """The standard tier is the Python defaults: its profiles name their interventions and little else."""
    defaults = Profile(name="x").settings()
    for name in ("all-baselines", "editing"):
        raw = (profiles_dir() / f"{name}.yaml").read_text()
        assert "evaluation:" not in raw and "corpora:" not in raw, name
        resolved = load_profile(name).settings()
        assert resolved["evaluation"] == defaults["evaluation"] and resolved["corpora"] == defaults["corpora"]


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def test_extends_merges_mappings_replaces_interventions_and_keeps_its_own_name(tmp_path):
    _write(
        tmp_path,
        "parent",
        "name: parent\ndescription: the parent\nseed: 3\n"
        "interventions: {ft: {}, ga: {}}\nevaluation: {n_edits: 7, mcq_max_chars: 500}\n",
    )
    child = _write(
        tmp_path,
        "child",
        "name: child\nextends: parent.yaml\ninterventions: {wanda: {levels: [0.25]}}\n"
        "evaluation: {mmlu_n: 9, mcq_max_chars: null}\n",
    )
    prof = load_profile(str(child))
    assert prof.name == "child" and prof.description == ""  # name and description are never inherited
    assert prof.seed == 3 and prof.evaluation.n_edits == 7 and prof.evaluation.mmlu_n == 9
    assert prof.evaluation.mcq_max_chars is None  # an explicit null unsets the parent's value
    assert list(prof.interventions) == ["wanda"]  # not ft + ga + wanda
    smoke_child = _write(tmp_path, "smoke-child", "name: sc\nextends: smoke\nevaluation: {n_edits: 3}\n")
    resolved = load_profile(str(smoke_child))
    assert resolved.evaluation.n_edits == 3 and resolved.corpora == load_profile("smoke").corpora


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"a": "name: a\nextends: b.yaml\n", "b": "name: b\nextends: a.yaml\n"}, "a cycle"),
        ({"a": "name: a\nextends: nowhere\n"}, "field 'extends': profile 'nowhere' not found"),
        ({"a": "name: a\nextends: [smoke]\n"}, "field 'extends': must name one profile"),
        ({"a": "name: a\nextends: smoke\nevaluation: {n_edits: 0}\n"}, "field 'evaluation.n_edits'"),
    ],
)
def test_bad_extends_is_one_line_naming_the_file_and_field(tmp_path, files, expected):
    for name, text in files.items():
        _write(tmp_path, name, text)
    with pytest.raises(ProfileError) as err:
        load_profile(str(tmp_path / "a.yaml"))
    assert expected in str(err.value) and "\n" not in str(err.value) and str(tmp_path) in str(err.value)
