"""The ``compose-bench`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NoReturn, Optional, Sequence

import typer

if TYPE_CHECKING:
    from benchmark.record_schema import Record

app = typer.Typer(
    name="compose-bench",
    help=(
        "Composable Interventions Benchmark: apply knowledge editing, unlearning and compression "
        "to one model in both orders, score every criterion and measure how they compose.\n\n"
        "Start with `compose-bench run --profile smoke`, then `compose-bench metrics runs/smoke/records.jsonl`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DATA_DIR_HELP = (
    "Local data folder with the layout of shared/data (also $COMPOSE_BENCH_DATA). Without it the Hub is used."
)


def _setup(verbose: bool) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("lm_eval", "lm-eval", "llmcompressor", "transformers", "datasets", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    import benchmark.transformers_setup  # noqa: F401  (first: transformers then skips scikit-learn, ~1.3 s)

    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()


def _die(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _read_records_or_die(path: Path, what: str) -> list[dict]:
    """The records at ``path`` (a records.jsonl or its folder), or exit with the one-line reason."""
    from benchmark.records import RecordsError, read_records

    if not path.exists():
        _die(f"{path}: no such {what}")
    try:
        return read_records(path)
    except RecordsError as exc:
        _die(str(exc))


@app.command()
def run(
    profile: str = typer.Option(
        "smoke", "--profile", "-p", help="Profile name in tasks/profiles/ or a path to a profile YAML."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Output folder (default runs/<profile>). Re-running resumes it."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Hub id or local folder; overrides the profile's model."
    ),
    submission: list[Path] = typer.Option(
        [], "--submission", "-s", help="Extra submission folder to run against the baselines (repeatable)."
    ),
    only: list[str] = typer.Option([], "--only", help="Run only these interventions (names; repeatable)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run again the cells recorded as failed."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap samples for the confidence intervals."),
    in_process: bool = typer.Option(
        False,
        "--in-process",
        help="Run interventions inside the harness process, without the sandbox "
        "(trusted code only: for debugging with a debugger or profiler).",
    ),
    unsafe_no_sandbox: bool = typer.Option(
        False,
        "--unsafe-no-sandbox",
        help="Where the kernel cannot build the sandbox, run outside submissions "
        "anyway, unconfined: their code can read your data, runs and environment (secrets).",
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Neither read nor write the evaluation and state caches (`compose-bench cache`)."
    ),
    executor: str = typer.Option(
        "local",
        "--executor",
        help="local: this process, one cell after another; ray: each first step and each cell "
        'a Ray task with the profile\'s resources (pip install ".[ray]"; docs/SCALING.md).',
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Ray cluster to join (e.g. auto, ray://head:10001); default: start Ray locally."
    ),
    state_dir: Optional[Path] = typer.Option(
        None,
        "--state-dir",
        help="--executor ray: folder every worker can read, for first-step states "
        "(a shared file system on a cluster; default <out>/ray-states).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run a grid: the base model, each intervention alone and every cross-category pair in both orders.

    Writes records.jsonl (one record per evaluated model), composability.csv/.json and prints
    a summary. Cells already in records.jsonl are skipped, so a killed run resumes.
    """
    _setup(verbose)
    from benchmark.metrics import compute_composability, write_composability
    from benchmark.paths import baselines_dir
    from benchmark.profiles import ProfileError, load_profile
    from benchmark.record_schema import Record
    from benchmark.runner import summary_table
    from benchmark.submissions import SubmissionError, discover, load_submission

    try:
        prof = load_profile(profile)
        subs = [s for s in discover(baselines_dir()) if s.name in prof.interventions]
        subs += [load_submission(p) for p in submission]
    except (ProfileError, SubmissionError) as exc:
        _die(str(exc))
    from benchmark.validate import reserved_name_problem

    for extra in subs[len(subs) - len(submission) :]:
        problem = reserved_name_problem(extra)  # a baseline's name: records and leaderboard rows would mix
        if problem:
            _die(problem)
    missing = sorted(set(prof.interventions) - {s.name for s in subs})
    if missing:
        _die(f"profile {prof.name!r} names interventions that are not in {baselines_dir()}: {missing}")
    if only:
        unknown = sorted(set(only) - {s.name for s in subs})
        if unknown:
            _die(f"--only names unknown interventions {unknown}; known: {sorted(s.name for s in subs)}")
        subs = [s for s in subs if s.name in only]
    names = [s.name for s in subs]
    if len(set(names)) != len(names):
        _die(f"two submissions share a name: {names}")
    from benchmark.isolation import allow_unsafe, is_trusted, refusal

    refused = refusal([s.folder for s in subs], unsafe_no_sandbox)
    if refused:
        _die(refused)
    outside = [s.name for s in subs if not is_trusted(s.folder)]
    if in_process and outside and not unsafe_no_sandbox:
        _die(
            f"--in-process would run outside submission(s) {outside} inside the harness; add --unsafe-no-sandbox "
            "to accept that their code can read your data, runs and environment"
        )
    allow_unsafe(unsafe_no_sandbox)
    out_dir = out or Path("runs") / prof.name
    from benchmark.ray_executor import make_runner

    try:
        runner = make_runner(
            executor,
            prof,
            subs,
            out_dir,
            data_dir=data_dir,
            model_id=model,
            device=device,
            retry_failed=retry_failed,
            echo=typer.echo,
            isolate=not in_process,
            use_cache=not no_cache,
            ray_address=ray_address,
            state_dir=state_dir,
            unsafe_no_sandbox=unsafe_no_sandbox,
        )
        records = [Record.of(r) for r in runner.run()]
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _die(str(exc))
    table = summary_table(records)
    typer.echo("\nEvaluated models:\n" + table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    try:
        df = compute_composability(records, n_bootstrap=bootstrap, seed=prof.seed)
        csv_path, _ = write_composability(
            df, out_dir, {"n_bootstrap": bootstrap, "seed": prof.seed, "confidence": 0.95}
        )
    except (ValueError, OSError) as exc:
        _die(" ".join(str(exc).split()))
    _print_composability(df)
    _sequences(
        records, out_dir, {"n_bootstrap": bootstrap, "seed": prof.seed, "confidence": 0.95}, bootstrap, prof.seed, 0.95
    )
    typer.echo(f"\nrecords: {runner.records_path}\ncomposability: {csv_path}")
    failed = [r for r in records if r.status != "ok"]
    if failed:
        typer.secho(f"{len(failed)} cell(s) failed; their reasons are in the records.", fg=typer.colors.YELLOW)


def _sequences(
    records: Sequence[Record | Mapping[str, Any]],
    out_dir: Path,
    settings: dict,
    bootstrap: int,
    seed: int,
    confidence: float,
) -> None:
    """Sequences of three (benchmark/sequence_metrics.py): written and printed only where the records hold a triple."""
    from benchmark.sequence_metrics import ORDERS, compute_sequences, write_sequences

    try:
        table, swap_table = compute_sequences(records, n_bootstrap=bootstrap, seed=seed, confidence=confidence)
        if table.empty:
            return
        paths = write_sequences(table, swap_table, out_dir, settings)
    except (ValueError, OSError) as exc:
        _die(" ".join(str(exc).split()))
    from benchmark.metrics import headline_criteria

    view = table[table["criterion"].isin(headline_criteria())]
    typer.echo(
        "\nSequences of three (scores of the six orders, a b c = the labels sorted; OFE over all orders; "
        "OS = max - min; * = beyond evaluation noise):"
    )
    for (a, b, c), rows in view.groupby(["a", "b", "c"], sort=False):
        typer.echo(f"  a = {a}, b = {b}, c = {c}")
        for row in rows.itertuples():
            scores = "  ".join(f"{o} {_metric_text(getattr(row, f'score_{o}'))}" for o in ORDERS)
            mark = {"beyond_noise": "*", "unknown": "?"}.get(row.significance, "")
            typer.echo(
                f"    {row.criterion:<14} {scores}  OFE {_metric_text(row.order_free_error)}"
                f"  OS {_metric_text(row.order_sensitivity)}{mark}"
            )
    typer.echo(f"sequences: {paths[0]} (swap terms: {paths[1]})")


def _print_composability(df) -> None:
    if df.empty:
        typer.echo("\nno pair has both orders recorded yet: no composability metrics")
        return
    from benchmark.metrics import headline_criteria, power_summary

    shown = headline_criteria()  # tasks/criteria.yaml: the one list of what summaries show first
    view = df[df["criterion"].isin(shown)].copy()
    view["pair"] = view["a"] + " | " + view["b"]
    view["OFE"] = view["order_free_error"].map(_metric_text)
    marks = {"beyond_noise": "*", "unknown": "?", "diverged": "", "within_noise": ""}
    view["OS"] = [
        _metric_text(v) + marks.get(sig, "") for v, sig in zip(view["order_sensitivity"], view["significance"])
    ]
    wide = view.pivot_table(index="pair", columns="criterion", values=["OFE", "OS"], aggfunc="first")
    typer.echo(
        "\nComposability (Order-free Error / Order Sensitivity; * = beyond evaluation noise, 95% paired bootstrap;"
        " ? = significance unknown: no per-item scores):"
    )
    typer.echo(wide.to_string())
    typer.echo("\n" + power_summary(df, shown))


def _metric_text(value: float) -> str:
    """A metric as the summary prints it: 3 decimals, ``diverged`` for infinite, ``-`` for missing."""
    if value != value:
        return "-"
    if value in (float("inf"), float("-inf")):
        return "diverged"
    return f"{value:.3f}"


@app.command()
def validate(
    folder: Path = typer.Argument(..., help="A submission folder (holding submission.yaml)."),
    smoke: bool = typer.Option(True, "--smoke/--no-smoke", help="Also apply it once to the default model."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Hub id or local folder to smoke-apply it to instead of the default model."
    ),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    store: Optional[str] = typer.Option(
        None,
        "--store",
        envvar="COMPOSE_BENCH_STORE",
        help="Results store whose published names the submission may not take (default: $COMPOSE_BENCH_STORE).",
    ),
    unsafe_no_sandbox: bool = typer.Option(
        False,
        "--unsafe-no-sandbox",
        help="Where the kernel cannot build the sandbox, import and apply the "
        "submission anyway, unconfined: its code can read your data and environment (secrets).",
    ),
) -> None:
    """Check a submission: schema, licence, reserved names, import in a fresh process, API, smoke application."""
    _setup(False)
    from benchmark.isolation import allow_unsafe, refusal
    from benchmark.validate import report_json, validate_folder

    refused = refusal([folder], unsafe_no_sandbox)
    if refused:
        _die(refused)
    allow_unsafe(unsafe_no_sandbox)
    report = validate_folder(folder, smoke=smoke, data_dir=data_dir, store=store, model=model)
    if as_json:
        typer.echo(report_json(report))
    else:
        for line in report.passed:
            typer.secho(f"ok      {line}", fg=typer.colors.GREEN)
        for line in report.problems:
            typer.secho(f"PROBLEM {line}", fg=typer.colors.RED)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def summary(
    run_folder: Path = typer.Argument(..., help="A run folder holding records.jsonl (or the file itself)."),
    validation: Optional[Path] = typer.Option(
        None, "--validation", help="JSON lines written by `compose-bench validate --json` (one per submission)."
    ),
    only: list[str] = typer.Option([], "--only", help="Show only cells involving these interventions (repeatable)."),
) -> None:
    """Print a markdown summary of a run (and of validation reports): what CI posts on a pull request."""
    from benchmark.summary import markdown_summary

    records = _read_records_or_die(run_folder, "file or folder")
    reports = []
    if validation is not None and validation.exists():
        import json

        for line in validation.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    reports.append(json.loads(line))
                except json.JSONDecodeError:
                    reports.append(
                        {"folder": "?", "ok": False, "problems": [f"unreadable validate output: {line[:200]}"]}
                    )
    typer.echo(markdown_summary(records, reports, set(only)))


@app.command()
def metrics(
    records: Path = typer.Argument(..., help="A records.jsonl file (or the folder holding it)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Where to write composability.csv/.json (default: beside the records)."
    ),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap samples for the confidence intervals."),
    seed: int = typer.Option(0, "--seed"),
    confidence: float = typer.Option(0.95, "--confidence"),
) -> None:
    """Recompute Order-free Error and Order Sensitivity (with CIs) from a records file."""
    _setup(False)
    from benchmark.metrics import compute_composability, write_composability

    recs = _read_records_or_die(records, "file")
    try:
        df = compute_composability(recs, n_bootstrap=bootstrap, seed=seed, confidence=confidence)
        out_dir = out or (records if records.is_dir() else records.parent)
        csv_path, json_path = write_composability(
            df, out_dir, {"n_bootstrap": bootstrap, "seed": seed, "confidence": confidence, "records": str(records)}
        )
    except (ValueError, OSError) as exc:  # mismatched items, a bad criteria file, a wrong-typed score, a write
        _die(" ".join(str(exc).split()))
    _print_composability(df)
    typer.echo(f"\n{len(df)} rows -> {csv_path} and {json_path}")
    _sequences(
        recs,
        out_dir,
        {"n_bootstrap": bootstrap, "seed": seed, "confidence": confidence, "records": str(records)},
        bootstrap,
        seed,
        confidence,
    )


@app.command("list")
def list_(
    what: str = typer.Argument("all", help="interventions | tasks | profiles | all"),
) -> None:
    """List the baseline interventions (with their hyperparameters), the tasks and the run profiles."""
    from benchmark.paths import baselines_dir
    from benchmark.profiles import available_profiles, load_profile
    from benchmark.submissions import discover

    if what not in {"interventions", "tasks", "profiles", "all"}:
        _die(f"unknown list {what!r}: use interventions, tasks, profiles or all")
    if what in {"interventions", "all"}:
        typer.secho("interventions (submissions/baselines):", bold=True)
        from benchmark.hyperparameter_checks import class_fields

        for sub in discover(baselines_dir()):
            levels = f"  {sub.spec.levels.parameter}: {sub.spec.levels.values}" if sub.spec.levels else ""
            typer.echo(f"  {sub.name:<12} {sub.category.value:<12} {sub.spec.description.strip()[:70]}{levels}")
            problem, fields = class_fields(sub.folder)  # read in the sandbox: the harness never imports a submission
            if problem:
                typer.echo(f"      (hyperparameters unreadable: {problem})")
            for f in fields:
                default = "required" if f["required"] else f"default {json.dumps(f['default'])}"
                bounds = f" [{f['constraints']}]" if f["constraints"] else ""
                typer.echo(f"      {f['name']}: {f['type']}{bounds}, {default}. {f['description']}")
    if what in {"tasks", "all"}:
        from benchmark.tasks import TASKS, TaskError, load_task

        typer.secho("tasks (tasks/):", bold=True)
        for name in TASKS:
            try:
                task = load_task(name)
            except TaskError as exc:
                _die(str(exc))
            hub = task.source.hub
            typer.echo(f"  {task.name:<12} {' '.join(task.description.split())[:90]}")
            typer.echo(
                f"      data: {hub.dataset or '-'}{f' ({hub.config})' if hub.config else ''}, split {hub.split}; "
                f"offline {task.source.local}; criteria: {', '.join(task.criteria)}"
            )
    if what in {"profiles", "all"}:
        typer.secho("profiles (tasks/profiles):", bold=True)
        for name in available_profiles():
            prof = load_profile(name)
            typer.echo(f"  {name:<12} {prof.model}  {' '.join(prof.description.split())[:80]}")


STORE_HELP = (
    "Results store: a folder (the local store; run folders with records.jsonl below it are read too) or "
    "hf://datasets/OWNER/NAME or hf://datasets/OWNER/NAME@BRANCH (a Hugging Face dataset repository; "
    "token from $HF_TOKEN or `hf auth login`). Default: $COMPOSE_BENCH_STORE."
)


@app.command()
def publish(
    run_folder: Path = typer.Argument(
        ..., help="A run folder holding records.jsonl (or the records.jsonl file itself)."
    ),
    store: str = typer.Option(..., "--store", "-s", envvar="COMPOSE_BENCH_STORE", help=STORE_HELP),
    submission: list[Path] = typer.Option(
        [],
        "--submission",
        help="Submission folder whose authors, link and licence to publish too (repeatable; "
        "the baselines' are always included).",
    ),
    create: bool = typer.Option(False, "--create", help="Create the Hub dataset repository if it does not exist."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap samples for the recomputed metrics' CIs."),
    confidence: float = typer.Option(0.95, "--confidence"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Publish a run's records to a results store, with metrics recomputed from everything stored.

    One file per record, keyed by profile, model, harness version and cell id.

    The metrics of every (model, profile) that gains a record are recomputed from all its stored records.

    Publishing the same records again writes nothing.

    On the Hub, a publish is one commit checked against its parent; if another publisher got in first, it re-reads and retries, so no record is lost.
    """
    _setup(verbose)
    from benchmark.paths import baselines_dir
    from benchmark.stores import StoreError, open_store
    from benchmark.stores.metadata import metadata_from_folders, names_in

    records = _read_records_or_die(run_folder, "file or folder")
    if not records:
        _die(f"{run_folder}: no records to publish")
    metadata = metadata_from_folders([baselines_dir(), *submission])  # a baseline's row is never overwritten
    used = names_in(records)
    try:
        target = open_store(store, create=create)
        report = target.publish(
            records, {n: m for n, m in metadata.items() if n in used}, n_bootstrap=bootstrap, confidence=confidence
        )
    except StoreError as exc:
        _die(str(exc))
    typer.echo(report.summary())


@app.command()
def leaderboard(
    store: str = typer.Option("runs", "--store", "-s", envvar="COMPOSE_BENCH_STORE", help=STORE_HELP),
    port: int = typer.Option(7860, "--port", "-p", help="TCP port to serve on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; the default serves this machine only."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in a browser."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Serve the leaderboard (a Gradio app) on http://127.0.0.1:PORT over a results store.

    Views: Ranking, Pair matrices, Intervention detail, Compression curves and About, each filtered by model and profile.

    `--store runs` (the default) shows every local run under runs/; `--store hf://datasets/OWNER/NAME` a published repository.
    """
    _setup(verbose)
    from benchmark.paths import baselines_dir
    from benchmark.stores import StoreError, open_store

    try:
        from leaderboard.app import BoardSource, serve
    except ImportError as exc:
        _die(f"the leaderboard needs its extra ({exc.name} is missing): pip install -e '.[leaderboard]'")
    try:
        source = BoardSource(open_store(store, metadata_folders=[baselines_dir()]))
    except StoreError as exc:
        _die(str(exc))
    if not source.board.records:
        typer.secho(f"warning: {source.board.description} holds no records yet", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"serving {source.board.description} on http://{host}:{port} (Ctrl+C stops)")
    serve(source, host=host, port=port, open_browser=open_browser, quiet=not verbose)


# ---------------------------------------------------------------- reported results (issue 17)


class _CollapseNoItems(logging.Filter):
    """Counts, instead of printing, the metrics' per-pair "no items" warnings (reported figures have none)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "no items in the records" in record.getMessage():
            self.count += 1
            return False
        return True


@app.command("import-reported")
def import_reported(
    store: str = typer.Option(..., "--store", "-s", envvar="COMPOSE_BENCH_STORE", help=STORE_HELP),
    csv_file: Optional[Path] = typer.Option(
        None, "--csv", help="The paper's table (default: <data dir>/paper/llama3_8b_compositions.csv)."
    ),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="COMPOSE_BENCH_DATA", help=DATA_DIR_HELP),
    create: bool = typer.Option(False, "--create", help="Create the Hub dataset repository if it does not exist."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Import the paper's reported Llama-3-8B results into a results store, marked as reported.

    Records of model meta-llama/Meta-Llama-3-8B, profile `paper`, dtype `reported`: figures as the paper printed them, not re-run, without per-item scores (so every order effect has unknown significance). Their Order-free Error and Order Sensitivity are computed by the same code as every run's.

    Importing again writes nothing.
    """
    _setup(verbose)
    from benchmark.paths import baselines_dir
    from benchmark.reported import PAPER_CSV, ReportedError, records_from_csv
    from benchmark.stores import StoreError, open_store
    from benchmark.stores.metadata import metadata_from_folders, names_in

    if csv_file is None:
        if data_dir is None:
            _die("give --csv FILE or --data-dir DIR (or set $COMPOSE_BENCH_DATA): where is the paper's table?")
        csv_file = Path(data_dir) / PAPER_CSV
    metadata = metadata_from_folders([baselines_dir()])
    try:
        records = records_from_csv(csv_file, metadata)
    except ReportedError as exc:
        _die(str(exc))
    used = names_in(records)
    quiet = _CollapseNoItems()
    metrics_logger = logging.getLogger("benchmark.metrics")
    metrics_logger.addFilter(quiet)
    try:
        target = open_store(store, create=create)
        report = target.publish(records, {n: m for n, m in metadata.items() if n in used})
    except StoreError as exc:
        _die(str(exc))
    finally:
        metrics_logger.removeFilter(quiet)
    typer.echo(
        f"{csv_file}: {len(records)} reported records (model meta-llama/Meta-Llama-3-8B, profile paper, "
        "not re-run); without per-item scores no CI can be computed: every order effect's significance is unknown"
    )
    typer.echo(report.summary())


# ---------------------------------------------------------------- end of reported results


cache_app = typer.Typer(
    help="The evaluation and state caches: evaluations keyed by weights + settings + scorer code, and the "
    "trusted baselines' step outputs. Location: $COMPOSE_BENCH_RESULTS_CACHE (default <cache>/results); "
    "size limits: $COMPOSE_BENCH_CACHE_EVALUATIONS_GB (default 1), $COMPOSE_BENCH_CACHE_STATES_GB (default 5).",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


def _open_caches_or_die():
    from benchmark.caches.folders import open_caches  # no torch: the command answers at once
    from benchmark.caches.store import CacheConfigError

    try:
        return open_caches()
    except CacheConfigError as exc:
        _die(str(exc))


@cache_app.command("show")
def cache_show(as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON.")) -> None:
    """Entries, size against the limit and hit statistics of each cache."""
    import json
    from dataclasses import asdict

    evaluations, states = _open_caches_or_die()
    rows = {}
    for name, cache in (("evaluations", evaluations), ("states", states)):
        entries, size = cache.store.usage()
        rows[name] = {
            "folder": str(cache.store.folder),
            "entries": entries,
            "bytes": size,
            "limit_bytes": cache.store.limit_bytes,
            **asdict(cache.store.stats()),
        }
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for name, r in rows.items():
        looked = r["hits"] + r["misses"]
        rate = f"{100 * r['hits'] / looked:.0f}%" if looked else "-"
        typer.echo(
            f"{name:<12} {r['entries']:>5} entries  {r['bytes'] / 1e9:7.3f} / {r['limit_bytes'] / 1e9:g} GB  "
            f"hits {r['hits']}, misses {r['misses']} ({rate}), saved {r['saved_s']:.0f} s, "
            f"stored {r['stores']}, evicted {r['evictions']}, discarded {r['discarded']}  {r['folder']}"
        )


@cache_app.command("clear")
def cache_clear(
    evaluations: bool = typer.Option(False, "--evaluations", help="Clear only the evaluation cache."),
    states: bool = typer.Option(False, "--states", help="Clear only the state cache."),
) -> None:
    """Remove cached entries (both caches unless one is named); the converted models are kept."""
    evaluation_cache, state_cache = _open_caches_or_die()
    both = not evaluations and not states
    for name, cache, chosen in (("evaluations", evaluation_cache, evaluations), ("states", state_cache, states)):
        if both or chosen:
            removed = cache.store.clear()
            typer.echo(f"{name}: removed {removed} entries from {cache.store.folder}")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
