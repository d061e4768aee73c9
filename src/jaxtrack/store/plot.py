"""Drawing a run's scalar metrics against step into an image file: the library side of ``jaxtrack plot``.

[`plot_runs`][jaxtrack.store.plot.plot_runs] draws one panel per metric and
one line per run, with matplotlib's object-oriented API and its Agg canvas:
no pyplot, no GUI, and the process's global matplotlib backend is left
alone. It needs ``pip install 'jaxtrack[plot]'``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxtrack._optional import import_optional
from jaxtrack.store.reader import RunStore, StoredRun

# A panel's lines: each run that has the panel's metric, with its steps and values.
_Series = Mapping[str, Sequence[tuple[StoredRun, np.ndarray, np.ndarray]]]


def plot_runs(
    store: RunStore,
    ref: str,
    keys: Sequence[str] = (),
    *,
    compare: Sequence[str] = (),
    output: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Draws the scalar metrics ``keys`` of the run ``ref`` names (and of the ``compare`` runs) into ``output``.

    ``keys`` are names or shell-style globs (``train/*``); none means every
    scalar metric of the run. A compared run without a metric has no line on
    its panel. ``output`` (a PNG, or any format matplotlib writes) defaults to
    ``<run id>.png`` in the working directory.

    Returns ``path`` (``output``, absolute), ``keys`` (the panels), ``runs``
    (the runs' ids) and ``lines`` (for each key, the ids of the runs with a
    line on its panel). An unknown run or key is a ``KeyError`` with the
    closest name; a run without scalar metrics a ``ValueError``.

    Examples:
        >>> import os, tempfile
        >>> from jaxtrack.store import RunStore
        >>> from jaxtrack.trackers.local import LocalTracker
        >>> directory = tempfile.mkdtemp()
        >>> path = os.path.join(directory, "runs.db")
        >>> for run_id, scale in [("base", 1.0), ("wide", 2.0)]:
        ...     with LocalTracker(path, run_id=run_id) as tracker:
        ...         for step in range(3):
        ...             tracker.log({"train/loss": scale / (step + 1), "lr": 0.1}, step=step)
        >>> with RunStore(path) as store:
        ...     plotted = plot_runs(store, "base", ["train/*"], compare=["wide"], output=os.path.join(directory, "c.png"))
        >>> plotted["keys"], plotted["lines"], os.path.isfile(plotted["path"])
        (['train/loss'], {'train/loss': ['base', 'wide']}, True)
    """
    # Checked first, so a missing matplotlib is reported before any work is done.
    import_optional("matplotlib", extra="plot", purpose="jaxtrack plot")
    run = store.run(ref)
    keys = store.select_keys(run.id, keys, kind="scalar") if keys else _scalar_keys(store, run)
    if not keys:
        raise ValueError(f"run {run.id!r} has no scalar metrics to plot")
    runs = list({r.id: r for r in [run, *(store.run(other) for other in compare)]}.values())
    series: dict[str, list[tuple[StoredRun, np.ndarray, np.ndarray]]] = {key: [] for key in keys}
    for plotted in runs:
        available = _scalar_keys(store, plotted)
        for key in keys:
            if key in available:  # a compared run without the key has no line on its panel
                steps, values = store.scalars(plotted.id, key)
                series[key].append((plotted, steps, values))
    path = os.path.abspath(output or f"{run.id}.png")
    _draw(series, _legend_labels(runs), path)
    lines = {key: [plotted.id for plotted, _, _ in key_lines] for key, key_lines in series.items()}
    return {"path": path, "keys": keys, "runs": [r.id for r in runs], "lines": lines}


def _scalar_keys(store: RunStore, run: StoredRun) -> list[str]:
    return [key for key, kind in store.keys(run.id).items() if kind == "scalar"]


def _legend_labels(runs: Sequence[StoredRun]) -> dict[str, str]:
    names = [run.display_name for run in runs]
    # Two runs of the same name would be indistinguishable in the legend.
    return {
        run.id: run.display_name if names.count(run.display_name) == 1 else f"{run.display_name} ({run.id})"
        for run in runs
    }


def _draw(series: _Series, labels: Mapping[str, str], output: str) -> None:
    # The object-oriented API with the Agg canvas: no pyplot, no GUI, and the process's
    # global matplotlib backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = min(len(series), 3)
    rows = -(-len(series) // columns)
    figure = Figure(figsize=(5.0 * columns, 3.5 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    colors = {run_id: f"C{index % 10}" for index, run_id in enumerate(labels)}
    for ax, (key, lines) in zip(axes, series.items(), strict=False):
        for run, steps, values in lines:
            # A run keeps its colour on every panel, even where an earlier run has no line;
            # markers keep a short series (a single point, say) visible.
            ax.plot(
                steps,
                values,
                label=labels[run.id],
                color=colors[run.id],
                marker="o" if len(steps) <= 30 else None,
                markersize=3,
            )
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(series) :]:
        ax.set_visible(False)
    figure.savefig(output, dpi=100)


__all__ = ["plot_runs"]
