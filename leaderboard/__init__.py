"""The leaderboard: a Gradio 6 app over a results store (see :mod:`benchmark.stores`).

Built from Gradio's plain components (``gradio_leaderboard`` does not work with
Gradio 6). One module per job: :mod:`.data` turns a store snapshot into tables,
:mod:`.ranking`, :mod:`.matrices`, :mod:`.detail`, :mod:`.curves` and :mod:`.about`
compute one view each, :mod:`.safe` escapes untrusted text, and :mod:`.app` wires
them into Gradio and serves them. Only :mod:`.app` imports Gradio, so the views can be
tested without a browser.
"""
