"""The Gradio app: seven views over one results store, filtered by model, profile and dtype.

Figures reported by a paper (:mod:`benchmark.reported`) form their own group (dtype
``reported``), so a selection is either reported or re-run, never both; a reported selection
carries a visible "reported in the paper, not re-run" mark above every view and in every
ranking row. Level selectors (bits, sparsity; the paper's 4 and 0.25 by default) pick one
level per compressor for the Ranking and the Pair matrices. The Runs view lists every run of
the store with its failures, unfiltered.

Plain Gradio 6 components only (Dataframe, Plot, Dropdown, Markdown, JSON);
``gradio_leaderboard`` needs Gradio < 6. The board is read from the store once at start
and again on "Reload"; every control triggers one function that recomputes the
views it affects from the (cached) filtered board. User events are ``.input`` (not
``.change``) so that updating a dropdown's choices from code does not recompute twice.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Any

import pandas as pd

from benchmark.metrics import headline_criteria
from benchmark.results import failures_frame, records_frame
from benchmark.stores import Snapshot
from leaderboard import about, curves, detail, downloads, matrices, ranking, runs, sequences
from leaderboard.data import Board, build_board
from leaderboard.safe import md

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

TITLE = "Composable Interventions Leaderboard"
INTRO = (
    "How knowledge editing, unlearning and compression **compose** when applied to one language model "
    "one after another, in both orders: Order-free Error (lower is better) and Order Sensitivity "
    "(how much the order matters), with paired-bootstrap 95% confidence intervals. See **About** for "
    "the definitions, the protocol and how to submit."
)


class BoardSource:
    """The store and the board last read from it; filtered boards are cached per read."""

    def __init__(self, store: Any = None, snapshot: Snapshot | None = None) -> None:
        if store is None and snapshot is None:
            raise ValueError("give a store or a snapshot")
        self.store = store
        self._lock = threading.Lock()
        self.generation = 0
        self.board = build_board(snapshot if snapshot is not None else store.read())

    def reload(self) -> None:
        """Read the store again (no-op for a fixed snapshot)."""
        if self.store is None:
            return
        board = build_board(self.store.read())
        with self._lock:
            self.board, self.generation = board, self.generation + 1

    def select(self, model: str | None, profile: str | None, dtype: str | None) -> Board:
        return _select(self, self.generation, model, profile, dtype)

    def defaults(
        self, model: str | None = None, profile: str | None = None, dtype: str | None = None
    ) -> tuple[str | None, str | None, str | None]:
        """A valid (model, profile, dtype): the given ones when they exist, else the largest group."""
        models = self.board.models()
        model = model if model in models else (models[0] if models else None)
        profiles = self.board.profiles(model)
        profile = profile if profile in profiles else (profiles[0] if profiles else None)
        dtypes = self.board.dtypes(model, profile)
        dtype = dtype if dtype in dtypes else (dtypes[0] if dtypes else None)
        return model, profile, dtype


@lru_cache(maxsize=64)
def _select(source: BoardSource, generation: int, model: str | None, profile: str | None, dtype: str | None) -> Board:
    return source.board.select(model, profile, dtype)


def _datatypes(df: pd.DataFrame) -> list[str]:
    """``number`` for numeric columns (so they sort as numbers), ``str`` (shown as text) for the rest."""
    return ["number" if pd.api.types.is_numeric_dtype(df[c]) else "str" for c in df.columns]


def source_mark(board: Board) -> str:
    """The banner above the views: where the selection's figures come from."""
    if not board.records:
        return "_Nothing in this selection._"
    if board.reported:
        first = board.records[0].reported or {}
        return (
            f"### REPORTED IN THE PAPER, NOT RE-RUN\n\n{md(first.get('source'))}. Figures as printed "
            f"(two decimals), imported with `compose-bench import-reported`; no per-item scores, so no confidence "
            f"intervals and the significance of every order effect is **unknown**. Re-run results are never "
            f"shown in the same table: pick another model, profile or dtype."
        )
    versions = sorted({str(r.provenance.harness_version) for r in board.records})
    return f"### Re-run by this harness\n\nHarness version(s): {md(', '.join(versions))}."


LEVEL_PARAMETERS = ("bits", "sparsity")


def level_choices(board: Board, parameter: str) -> list[str]:
    return [f"{v:g}" for v in board.level_values(parameter)]


def chosen_levels(board: Board, bits: str | None, sparsity: str | None) -> dict[str, float | None]:
    """The levels to show: the chosen ones when the board has them, else the paper's headline ones."""
    out: dict[str, float | None] = {}
    for parameter, value in zip(LEVEL_PARAMETERS, (bits, sparsity)):
        choices = level_choices(board, parameter)
        out[parameter] = float(value) if value in choices else board.level_default(parameter)
    return out


def _pick(value: Any, choices: list, fallback: Any = None) -> Any:
    values = [c[1] if isinstance(c, tuple) else c for c in choices]
    if value in values:
        return value
    if fallback in values:
        return fallback
    return values[0] if values else None


def build_app(source: BoardSource):
    """The Gradio Blocks of the leaderboard over ``source``."""
    import gradio as gr

    def table(df: pd.DataFrame, **kwargs: Any):
        return gr.Dataframe(value=df, datatype=_datatypes(df) if not df.empty else "str", **kwargs)

    def status_text(board: Board) -> str:
        return f"Store: {md(board.description)} · {len(board.records)} record(s) in this selection"

    # ---------------------------------------------------------------- view functions

    def level_dropdowns(board, bits, sparsity):
        levels = chosen_levels(board, bits, sparsity)
        return tuple(
            gr.Dropdown(
                choices=level_choices(board, p),
                value=None if levels[p] is None else f"{levels[p]:g}",
                interactive=bool(level_choices(board, p)),
            )
            for p in LEVEL_PARAMETERS
        )

    def ranking_view(model, profile, dtype, criteria, category, bits, sparsity):
        board = source.select(model, profile, dtype)
        choices = ranking.categories(board)
        category = _pick(category, choices, "editing")
        levels = chosen_levels(board, bits, sparsity)
        df = ranking.category_ranking(board, category or "", criteria or [], levels)
        stem = downloads.file_stem(
            "ranking", model, profile, dtype, category, *(f"{k}={v:g}" for k, v in levels.items() if v is not None)
        )
        csv_path, json_path = downloads.write_table(
            df,
            stem,
            {"view": "ranking", "model": model, "profile": profile, "dtype": dtype, "category": category, **levels},
        )
        return (
            gr.Radio(choices=choices, value=category, interactive=True),
            table(df),
            gr.DownloadButton(value=csv_path),
            gr.DownloadButton(value=json_path),
        )

    def matrices_view(model, profile, dtype, criterion, bits, sparsity):
        board = source.select(model, profile, dtype)
        choices = board.criteria_with_scores()
        criterion = _pick(criterion, choices, "edit_success")
        levels = chosen_levels(board, bits, sparsity)
        rows = matrices.pair_rows(board, criterion or "", levels)
        stem = downloads.file_stem(
            "pairs", model, profile, dtype, criterion, *(f"{k}={v:g}" for k, v in levels.items() if v is not None)
        )
        csv_path, json_path = downloads.write_table(
            rows,
            stem,
            {
                "view": "pair matrices",
                "model": model,
                "profile": profile,
                "dtype": dtype,
                "criterion": criterion,
                **levels,
            },
        )
        return (
            gr.Dropdown(choices=choices, value=criterion),
            matrices.heatmap_figure(board, criterion or "", "order_free_error", levels),
            matrices.heatmap_figure(board, criterion or "", "order_sensitivity", levels),
            gr.DownloadButton(value=csv_path),
            gr.DownloadButton(value=json_path),
        )

    def runs_view():
        frame = records_frame(source.board.records)
        return table(runs.runs_table(source.board.records)), table(failures_frame(frame))

    def levels_changed(model, profile, dtype, criteria, category, matrix_criterion, bits, sparsity):
        return (
            *ranking_view(model, profile, dtype, criteria, category, bits, sparsity),
            *matrices_view(model, profile, dtype, matrix_criterion, bits, sparsity),
        )

    def detail_view(model, profile, dtype, name, criteria):
        board = source.select(model, profile, dtype)
        names = board.names()
        name = _pick(name, names)
        criteria = criteria or []
        records = detail.record_choices(board, name) if name else []
        chosen = (
            next((c for _, c in records if board.cells.set_index("cell_id").loc[c, "n_steps"] == 2), None)
            if records
            else None
        )
        return (
            gr.Dropdown(choices=names, value=name),
            detail.header_markdown(board, name) if name else "_No intervention in this selection._",
            table(detail.orders_table(board, name, criteria) if name else pd.DataFrame()),
            table(detail.pairs_table(board, name, criteria) if name else pd.DataFrame()),
            table(detail.provenance_table(board, name) if name else pd.DataFrame()),
            gr.Dropdown(choices=records, value=chosen),
            detail.record_details(board, chosen),
        )

    def record_view(model, profile, dtype, cell_id):
        return detail.record_details(source.select(model, profile, dtype), cell_id)

    def curves_view(model, profile, dtype, pair, criterion, axis):
        board = source.select(model, profile, dtype)
        pairs = curves.curve_pairs(board)
        pair = _pick(pair, pairs)
        choices = board.criteria_with_scores()
        criterion = _pick(criterion, choices, "edit_success")
        figure = curves.curve_figure(board, pair or "", criterion or "", axis or "level")
        return gr.Dropdown(choices=pairs, value=pair), gr.Dropdown(choices=choices, value=criterion), figure

    def sequences_view(model, profile, dtype, triple, criteria):
        board = source.select(model, profile, dtype)
        choices = sequences.triple_choices(board)
        triple = _pick(triple, choices)
        criteria = criteria or []
        return (
            gr.Dropdown(choices=choices, value=triple),
            sequences.note_markdown(board),
            table(sequences.orders_table(board, triple, criteria)),
            table(sequences.summary_table(board, triple, criteria)),
            table(sequences.swaps_table(board, triple, criteria)),
        )

    def all_views(
        model,
        profile,
        dtype,
        criteria,
        matrix_criterion,
        name,
        pair,
        curve_criterion,
        axis,
        category,
        bits,
        sparsity,
        triple,
    ):
        model, profile, dtype = source.defaults(model, profile, dtype)
        board = source.select(model, profile, dtype)
        levels = chosen_levels(board, bits, sparsity)
        bits, sparsity = (None if levels[p] is None else f"{levels[p]:g}" for p in LEVEL_PARAMETERS)
        return (
            gr.Dropdown(choices=source.board.models(), value=model),
            gr.Dropdown(choices=source.board.profiles(model), value=profile),
            gr.Dropdown(choices=source.board.dtypes(model, profile), value=dtype),
            status_text(board),
            source_mark(board),
            *level_dropdowns(board, bits, sparsity),
            *ranking_view(model, profile, dtype, criteria, category, bits, sparsity),
            *matrices_view(model, profile, dtype, matrix_criterion, bits, sparsity),
            *detail_view(model, profile, dtype, name, criteria),
            *curves_view(model, profile, dtype, pair, curve_criterion, axis),
            *sequences_view(model, profile, dtype, triple, criteria),
            about.about_markdown(board),
            *runs_view(),
        )

    def reload(*args):
        source.reload()
        return all_views(*args)

    # ---------------------------------------------------------------- layout

    model0, profile0, dtype0 = source.defaults()
    board0 = source.select(model0, profile0, dtype0)
    criteria_choices = list(source.board.criteria)
    # the headline criteria (tasks/criteria.yaml) the first selection has scores for; all of them for an empty store
    headline = board0.headline() or headline_criteria(source.board.criteria)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\n\n{INTRO}")
        with gr.Row():
            model_dd = gr.Dropdown(label="Model", choices=source.board.models(), value=model0, elem_id="filter-model")
            profile_dd = gr.Dropdown(
                label="Profile", choices=source.board.profiles(model0), value=profile0, elem_id="filter-profile"
            )
            dtype_dd = gr.Dropdown(
                label="Numerics (dtype)",
                choices=source.board.dtypes(model0, profile0),
                value=dtype0,
                elem_id="filter-dtype",
                info="scores differ slightly by dtype: cells of different dtypes are never compared",
            )
            reload_btn = gr.Button("Reload from the store", scale=0)
        status_md = gr.Markdown(status_text(board0), elem_id="status")
        mark_md = gr.Markdown(source_mark(board0), elem_id="source-mark")
        with gr.Row():
            criteria_cb = gr.CheckboxGroup(
                label="Criteria shown in the Ranking and the Intervention detail",
                choices=criteria_choices,
                value=headline,
                elem_id="criteria",
                scale=3,
            )
            bits_dd = gr.Dropdown(
                label="Quantization level (bits)",
                elem_id="level-bits",
                scale=1,
                interactive=True,
                info="one level per compressor in the Ranking and the Pair matrices",
            )
            sparsity_dd = gr.Dropdown(
                label="Pruning level (sparsity)",
                elem_id="level-sparsity",
                scale=1,
                interactive=True,
                info="the paper's figures use 4 bits and 0.25",
            )
        with gr.Tabs():
            with gr.Tab("Ranking", id="ranking"):
                gr.Markdown(
                    "One table per category, each intervention at the chosen level: mean Order-free Error "
                    "(**OFE**, lower is better) and Order Sensitivity (**OS**) over its partners, the "
                    "category's own criteria first; ranked by the mean OFE over those. Sort from a column's "
                    "⋮ menu; the search box filters rows; the last column is the command that reproduces "
                    "the row."
                )
                with gr.Row():
                    category_radio = gr.Radio(label="Category", elem_id="ranking-category", scale=3, interactive=True)
                    ranking_csv = gr.DownloadButton("Download CSV", elem_id="ranking-csv", scale=0)
                    ranking_json = gr.DownloadButton("Download JSON", elem_id="ranking-json", scale=0)
                ranking_df = table(
                    pd.DataFrame(),
                    interactive=False,
                    show_search="search",
                    elem_id="ranking-table",
                    max_height=600,
                    wrap=False,
                )
            with gr.Tab("Pair matrices", id="matrices"):
                with gr.Row():
                    matrix_dd = gr.Dropdown(label="Criterion", elem_id="matrix-criterion", scale=3)
                    matrix_csv = gr.DownloadButton("Download CSV", elem_id="matrix-csv", scale=0)
                    matrix_json = gr.DownloadButton("Download JSON", elem_id="matrix-json", scale=0)
                gr.Markdown(
                    "Symmetric in the pair; `*` marks an order effect beyond evaluation noise (95% paired "
                    "bootstrap). Hover a cell for its confidence interval, both orders' scores and the "
                    "command that reproduces it. Compressors at the chosen levels."
                )
                ofe_plot = gr.Plot(label="Order-free Error", elem_id="ofe-heatmap")
                os_plot = gr.Plot(label="Order Sensitivity", elem_id="os-heatmap")
            with gr.Tab("Intervention detail", id="detail"):
                name_dd = gr.Dropdown(label="Intervention", elem_id="detail-intervention")
                header_md = gr.Markdown(elem_id="detail-header")
                gr.Markdown("#### Every evaluated model involving it (both orders of every pair)")
                orders_df = table(pd.DataFrame(), interactive=False, elem_id="detail-orders")
                gr.Markdown("#### Composability with each partner")
                pairs_df = table(pd.DataFrame(), interactive=False, show_search="search", elem_id="detail-pairs")
                gr.Markdown("#### Provenance of each record")
                prov_df = table(pd.DataFrame(), interactive=False, elem_id="detail-provenance")
                record_dd = gr.Dropdown(label="Full provenance of one record", elem_id="detail-record")
                record_json = gr.JSON(elem_id="detail-record-json")
            with gr.Tab("Compression curves", id="curves"):
                with gr.Row():
                    pair_dd = gr.Dropdown(label="Pair (intervention × compressor)", elem_id="curve-pair")
                    curve_crit_dd = gr.Dropdown(label="Criterion", elem_id="curve-criterion")
                    axis_radio = gr.Radio(
                        label="x axis",
                        choices=[(v, k) for k, v in curves.X_AXES.items()],
                        value="level",
                        elem_id="curve-axis",
                    )
                curve_plot = gr.Plot(label="Criterion against compression level", elem_id="curve-plot")
                gr.Markdown(
                    "Each point is one evaluated model of the grid; a grid with one level gives one point "
                    "per order. Dotted: the compressor alone; diamond: the other intervention alone, "
                    "uncompressed."
                )
            with gr.Tab("Sequences of three", id="sequences"):
                triple_dd = gr.Dropdown(label="Triple (a / b / c)", elem_id="sequence-triple")
                sequence_note = gr.Markdown(elem_id="sequence-note")
                gr.Markdown("#### The six orders (criteria chosen above)")
                sequence_orders_df = table(pd.DataFrame(), interactive=False, elem_id="sequence-orders", wrap=True)
                gr.Markdown("#### Order-free Error and Order Sensitivity over the six orders")
                sequence_summary_df = table(pd.DataFrame(), interactive=False, elem_id="sequence-summary", wrap=True)
                gr.Markdown("#### Adjacent swaps: the terms of the spread")
                sequence_swaps_df = table(
                    pd.DataFrame(), interactive=False, show_search="search", elem_id="sequence-swaps", wrap=True
                )
            with gr.Tab("Runs", id="runs"):
                gr.Markdown(
                    "Every run in the store (all models and profiles): its numerics, harness version, when, "
                    "how many cells succeeded or failed, and the command that reproduces it; then each "
                    "failed cell with the first line of its reason (the full text is in its record)."
                )
                runs_df = table(pd.DataFrame(), interactive=False, elem_id="runs-table", wrap=True)
                gr.Markdown("#### Failed cells")
                failures_df = table(pd.DataFrame(), interactive=False, elem_id="failures-table", wrap=True)
            with gr.Tab("About", id="about"):
                about_md = gr.Markdown(about.about_markdown(board0), elem_id="about")

        # ---------------------------------------------------------------- events

        filters = [
            model_dd,
            profile_dd,
            dtype_dd,
            criteria_cb,
            matrix_dd,
            name_dd,
            pair_dd,
            curve_crit_dd,
            axis_radio,
            category_radio,
            bits_dd,
            sparsity_dd,
            triple_dd,
        ]
        sequences_out = [triple_dd, sequence_note, sequence_orders_df, sequence_summary_df, sequence_swaps_df]
        ranking_out = [category_radio, ranking_df, ranking_csv, ranking_json]
        matrices_out = [matrix_dd, ofe_plot, os_plot, matrix_csv, matrix_json]
        everything = [
            model_dd,
            profile_dd,
            dtype_dd,
            status_md,
            mark_md,
            bits_dd,
            sparsity_dd,
            *ranking_out,
            *matrices_out,
            name_dd,
            header_md,
            orders_df,
            pairs_df,
            prov_df,
            record_dd,
            record_json,
            pair_dd,
            curve_crit_dd,
            curve_plot,
            *sequences_out,
            about_md,
            runs_df,
            failures_df,
        ]
        gr.on([model_dd.input, profile_dd.input, dtype_dd.input], all_views, inputs=filters, outputs=everything)
        reload_btn.click(reload, inputs=filters, outputs=everything)
        demo.load(all_views, inputs=filters, outputs=everything)
        criteria_cb.input(
            lambda m, p, d, c, n, cat, b, sp: (*ranking_view(m, p, d, c, cat, b, sp), *detail_view(m, p, d, n, c)),
            inputs=[model_dd, profile_dd, dtype_dd, criteria_cb, name_dd, category_radio, bits_dd, sparsity_dd],
            outputs=[*ranking_out, name_dd, header_md, orders_df, pairs_df, prov_df, record_dd, record_json],
        )
        gr.on(
            [triple_dd.input, criteria_cb.input],
            sequences_view,
            inputs=[model_dd, profile_dd, dtype_dd, triple_dd, criteria_cb],
            outputs=sequences_out,
        )
        category_radio.input(
            ranking_view,
            inputs=[model_dd, profile_dd, dtype_dd, criteria_cb, category_radio, bits_dd, sparsity_dd],
            outputs=ranking_out,
        )
        gr.on(
            [bits_dd.input, sparsity_dd.input],
            levels_changed,
            inputs=[model_dd, profile_dd, dtype_dd, criteria_cb, category_radio, matrix_dd, bits_dd, sparsity_dd],
            outputs=[*ranking_out, *matrices_out],
        )
        matrix_dd.input(
            matrices_view,
            inputs=[model_dd, profile_dd, dtype_dd, matrix_dd, bits_dd, sparsity_dd],
            outputs=matrices_out,
        )
        name_dd.input(
            detail_view,
            inputs=[model_dd, profile_dd, dtype_dd, name_dd, criteria_cb],
            outputs=[name_dd, header_md, orders_df, pairs_df, prov_df, record_dd, record_json],
        )
        record_dd.input(record_view, inputs=[model_dd, profile_dd, dtype_dd, record_dd], outputs=record_json)
        gr.on(
            [pair_dd.input, curve_crit_dd.input, axis_radio.input],
            curves_view,
            inputs=[model_dd, profile_dd, dtype_dd, pair_dd, curve_crit_dd, axis_radio],
            outputs=[pair_dd, curve_crit_dd, curve_plot],
        )
    return demo


def serve(
    source: BoardSource, host: str = "127.0.0.1", port: int = 7860, open_browser: bool = False, quiet: bool = False
) -> None:
    """Serve the app over ``source`` until interrupted: on ``host`` only, never through a share tunnel."""
    demo = build_app(source)
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=open_browser,
        show_error=True,
        ssr_mode=False,
        quiet=quiet,
    )
