"""The harness's import graph: no cycles, the sandbox knows nothing of interventions, layers point down.

Read statically from the source (every ``import`` at module level, ``if TYPE_CHECKING:``
blocks left out; importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``), then
checked once in a fresh interpreter for the two modules whose purity matters most.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from benchmark.paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "benchmark"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]

    def visit(nodes, top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("benchmark"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                if base.startswith("benchmark"):
                    found.add(base)
                    found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and module_level_only:
                continue
            for field in ("body", "orelse", "handlers", "finalbody"):
                visit(getattr(node, field, []) or [], top)

    visit(tree.body, True)
    return found


def _graph(module_level_only: bool = True) -> nx.DiGraph:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        for target in _imports(path, module_level_only):
            for dep in _with_parents(target):
                if dep in files and dep != name and not name.startswith(dep + "."):
                    graph.add_edge(name, dep)
    return graph


def test_no_import_cycles_at_module_level():
    cycles = list(nx.simple_cycles(_graph()))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_sandbox_and_the_step_checks_know_nothing_above_them():
    graph = _graph(module_level_only=False)  # function-level imports count here
    assert set(nx.descendants(graph, "benchmark.sandbox")) <= {"benchmark", "benchmark.sandbox_inside"}
    above = {
        "benchmark.runner",
        "benchmark.step_executor",
        "benchmark.run_inputs",
        "benchmark.ray_executor",
        "benchmark.cli",
        "benchmark.validate",
    }
    for low in ("benchmark.isolation", "benchmark.step_checks", "benchmark.plan", "benchmark.model_layout"):
        assert not (nx.descendants(graph, low) & above), low


def test_one_module_applies_steps():
    """Only the step executor calls an intervention's apply() for the grid, validate and the scripts.

    (The child side of the sandbox, benchmark.isolation.step_main, is where a sandboxed step's
    code runs; it is called by the step executor only.)
    """
    callers = []
    for path in [*PACKAGE.rglob("*.py"), *(PROJECT_ROOT / "scripts").glob("tune_*.py")]:
        text = path.read_text(encoding="utf-8")
        if ".instantiate()" in text or "run_isolated(" in text:
            callers.append(path.relative_to(PROJECT_ROOT).as_posix())
    assert sorted(callers) == ["benchmark/isolation.py", "benchmark/step_executor.py"]


def test_scorers_use_the_model_layout_helpers_below_the_toolkit():
    """The submitters' toolkit re-exports the lower helpers instead of defining them (one definition)."""
    from benchmark import model_layout
    from benchmark.toolkit import training

    assert training.decoder_layers is model_layout.decoder_layers and training.pad_token_id is model_layout.pad_token_id
    graph = _graph(False)
    assert "benchmark.toolkit" not in set(nx.descendants(graph, "benchmark.model_layout"))
    # the scorers do not import the submitters' toolkit; the deployment check is the exception by design:
    # it compresses through a submission with the toolkit's export_compressed active (its docstring says why)
    scorers = [n for n in graph if n.startswith("benchmark.evaluation.") and n != "benchmark.evaluation.deployment"]
    assert len(scorers) >= 4
    for scorer in scorers:
        reached = {d for d in nx.descendants(graph, scorer) if d.startswith("benchmark.toolkit")}
        assert not reached, (scorer, sorted(reached))


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("benchmark.sandbox", ["benchmark.isolation", "benchmark.submissions", "benchmark.api", "torch"]),
        ("benchmark.isolation", ["benchmark.runner", "benchmark.step_executor", "benchmark.run_inputs"]),
        ("benchmark.caches.folders", ["torch", "safetensors", "transformers"]),  # `compose-bench cache` answers at once
    ],
)
def test_fresh_interpreter_import(module, absent):
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert module in loaded and not (loaded & set(absent)), sorted(loaded & set(absent))


def test_model_loading_processes_skip_transformers_sklearn_import():
    """transformers imports scikit-learn (~1.3 s) for assisted generation only; our processes skip it
    (benchmark/transformers_setup.py), and the zygote preloads the switch before transformers."""
    from benchmark.isolation import _BASE_PRELOAD

    code = (
        "import json, sys, benchmark.models; from transformers import AutoModelForCausalLM; "
        "AutoModelForCausalLM.from_config; import transformers.generation.candidate_generator as cg; "
        "from transformers.utils import import_utils; "
        "print(json.dumps([sorted(sys.modules), import_utils.is_sklearn_available(), cg.is_sklearn_available()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded, installed, as_transformers_saw_it = json.loads(out.stdout.strip().splitlines()[-1])
    # the control: scikit-learn is installed (lm-eval needs it), so without the switch transformers imports it
    assert installed is True and as_transformers_saw_it is False
    assert not {"sklearn", "scipy.stats"} & set(loaded)
    assert _BASE_PRELOAD.index("benchmark.transformers_setup") < _BASE_PRELOAD.index("transformers")
