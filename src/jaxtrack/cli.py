"""The ``jaxtrack`` command line: list, inspect, plot and export the runs of a local run store.

Every command reads the store that ``jaxtrack.trackers.local.LocalTracker``
writes: ``--store PATH`` (before or after the command name), else
``$JAXTRACK_STORE``, else ``runs/jaxtrack.db``. A run is named by its id, a
unique prefix of its id, its name, or ``latest``. With ``--json`` a command
prints JSON instead of text (NaN and infinities become ``null``)::

    jaxtrack runs [--project P] [--keys K ...]     # one line per run, oldest first, newest last
    jaxtrack show RUN                               # identity, config, summary, every metric's last/min/max
    jaxtrack plot RUN [KEY ...] [-o FILE.png] [--compare RUN2 ...]
    jaxtrack export RUN --to tensorboard DIR
    jaxtrack export RUN --to wandb [--project P] [--entity E] [--mode offline|online] [--dir D]

For example, after training with the local tracker::

    $ jaxtrack runs
    id                      name      status    steps  train/loss  train/acc  duration  started
    20250101-120000-a1b2c3  baseline  finished    999      0.0412      0.987  1m 05s    2025-01-01 12:00:00
    20250101-121500-d4e5f6            failed      120        2.31      0.113  9.5s      2025-01-01 12:15:00
    $ jaxtrack plot latest 'train/*' --compare baseline -o curves.png
    /home/me/project/curves.png
    $ jaxtrack export baseline --to wandb --mode offline   # then `wandb sync <the run directory it prints>`

``plot`` needs ``pip install 'jaxtrack[plot]'`` (matplotlib), ``export`` the
``tensorboard`` or ``wandb`` extra. A problem the user can fix (no store, no
such run or key, a missing package) is reported as one line,
``jaxtrack: error: ...``, with exit status 1; a malformed command line exits
with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import math
import os
import re
import sqlite3
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from jaxtrack._optional import MissingExtraError, import_optional
from jaxtrack._version import __version__
from jaxtrack.store import DEFAULT_STORE_PATH, STORE_ENV_VAR, RunStore, StoredRun, default_store_path
from jaxtrack.trackers.base import Tracker
from jaxtrack.values import Histogram, Image

DEFAULT_METRIC_COLUMNS = 3
"""How many metrics ``jaxtrack runs`` shows per run when ``--keys`` is not given."""

EXPORT_TARGETS = ("tensorboard", "wandb")
"""What ``jaxtrack export --to`` can write."""

_HISTOGRAM_FIELDS = frozenset(field.name for field in dataclasses.fields(Histogram))


class CommandError(Exception):
    """A problem the user can fix, reported as ``jaxtrack: error: <message>`` with exit status 1."""


# Exceptions that carry a message meant for the user: the store's lookups raise KeyError,
# a bad store ValueError or FileNotFoundError, a missing optional package MissingExtraError.
_USER_ERRORS = (CommandError, KeyError, ValueError, OSError, MissingExtraError, sqlite3.Error)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``jaxtrack`` command line on ``argv`` (default: ``sys.argv[1:]``) and returns the exit status.

    0 on success, 1 after printing one ``jaxtrack: error: ...`` line to stderr;
    a malformed command line raises ``SystemExit(2)`` as argparse does.

    >>> main(["runs", "--store", "/nonexistent/runs.db"])
    1
    """
    args = build_parser().parse_args(argv)
    try:
        args.command(args)
    except BrokenPipeError:  # an OSError, but not the user's mistake: the reader went away (`jaxtrack runs | head`)
        # Stop quietly, and keep Python from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except _USER_ERRORS as error:
        print(f"jaxtrack: error: {_error_message(error)}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``jaxtrack`` command line; each command's ``command`` default runs it.

    >>> build_parser().parse_args(["show", "latest", "--store", "my.db"]).store
    'my.db'
    """
    parser = argparse.ArgumentParser(
        prog="jaxtrack",
        description="List, inspect, plot and export the runs of a jaxtrack run store.",
        epilog="A RUN is a run id, a unique prefix of one, a run name, or 'latest'.",
    )
    parser.add_argument(
        "--store",
        default=None,
        metavar="PATH",
        help=f"the run store (default: ${STORE_ENV_VAR}, else {DEFAULT_STORE_PATH})",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    # A subcommand's --store overrides one given before the command name; SUPPRESS keeps
    # its absence from erasing that one.
    store_option = argparse.ArgumentParser(add_help=False)
    store_option.add_argument("--store", default=argparse.SUPPRESS, metavar="PATH", help="the run store")
    json_option = argparse.ArgumentParser(add_help=False)
    json_option.add_argument("--json", action="store_true", help="print JSON instead of text")
    common = [store_option, json_option]

    runs = commands.add_parser(
        "runs",
        parents=common,
        help="list the runs, oldest first",
        description="List the store's runs, oldest first (the newest is the last line), with their latest metrics.",
    )
    runs.add_argument("--project", help="only the runs of this project")
    runs.add_argument(
        "--keys",
        nargs="+",
        metavar="KEY",
        help=f"the scalar metrics to show (names or globs such as 'train/*'; default: up to "
        f"{DEFAULT_METRIC_COLUMNS} per run, losses and accuracies first)",
    )
    runs.set_defaults(command=_runs_command)

    show = commands.add_parser(
        "show",
        parents=common,
        help="show a run: identity, config, summary, metrics",
        description="Show a run's identity, hyperparameters, summary, and every metric's latest, min and max values.",
    )
    show.add_argument("run", metavar="RUN")
    show.set_defaults(command=_show_command)

    plot = commands.add_parser(
        "plot",
        parents=common,
        help="plot scalar metrics against step into an image file",
        description="Plot scalar metrics against step, one panel per metric and one line per run (needs "
        "matplotlib: pip install 'jaxtrack[plot]').",
    )
    plot.add_argument("run", metavar="RUN")
    plot.add_argument("keys", nargs="*", metavar="KEY", help="metric names or globs (default: every scalar metric)")
    plot.add_argument("-o", "--output", metavar="FILE", help="the image to write (default: <run id>.png)")
    plot.add_argument(
        "--compare", nargs="+", default=[], metavar="RUN", help="more runs to draw on the same panels (after the keys)"
    )
    plot.set_defaults(command=_plot_command)

    export = commands.add_parser(
        "export",
        parents=common,
        help="replay a run into TensorBoard event files or a W&B run",
        description="Replay a run's hyperparameters, history and summary into another backend.",
    )
    export.add_argument("run", metavar="RUN")
    export.add_argument(
        "--to",
        nargs="+",
        required=True,
        metavar=("TARGET", "DIR"),
        help="'tensorboard DIR' (DIR: a run directory for TensorBoard) or 'wandb'",
    )
    export.add_argument("--project", help="W&B project (default: the run's project)")
    export.add_argument("--entity", help="W&B entity (default: yours)")
    export.add_argument(
        "--mode",
        choices=("online", "offline"),
        help="W&B mode (default: $WANDB_MODE, else online); an offline run is uploaded later with `wandb sync`",
    )
    export.add_argument("--dir", metavar="D", help="W&B's directory (default: $WANDB_DIR, else ./wandb)")
    export.set_defaults(command=_export_command)
    return parser


# ---- jaxtrack runs -------------------------------------------------------------------------------


def _runs_command(args: argparse.Namespace) -> None:
    with _open_store(args) as store:
        runs = store.runs(project=args.project)
        listed = []
        for run in runs:
            scalar_keys = [key for key, kind in store.keys(run.id).items() if kind == "scalar"]
            chosen = choose_metric_keys(scalar_keys, args.keys)
            stats = store.metric_stats(run.id) if chosen else {}
            listed.append((run, {key: stats[key]["last"] for key in chosen}))
    if args.json:
        _print_json([{**_run_identity(run), "metrics": metrics} for run, metrics in listed])
        return
    if not listed:
        where = f" of project {args.project!r}" if args.project is not None else ""
        print(f"no runs{where} in {store.path}")
        return
    columns = list(dict.fromkeys(key for _, metrics in listed for key in metrics))
    headers = ["id", "name", "status", "steps", *columns, "duration", "started"]
    rows = [
        [
            run.id,
            run.name or "",
            run.status,
            _format_optional(run.last_step),
            *(format_value(metrics[key]) if key in metrics else "" for key in columns),
            format_duration(run.duration),
            _format_time(run.start_time),
        ]
        for run, metrics in listed
    ]
    print(format_table(headers, rows, right=range(3, 4 + len(columns))))


def choose_metric_keys(scalar_keys: Sequence[str], patterns: Sequence[str] | None = None) -> list[str]:
    """The metrics ``jaxtrack runs`` shows for a run with these scalar keys.

    With ``patterns`` (names or shell-style globs), the keys they match, in
    pattern order; a pattern that matches nothing is left out, since runs
    differ. Without, up to ``DEFAULT_METRIC_COLUMNS`` keys: losses
    first, then accuracies, then the others in order.

    >>> choose_metric_keys(["epoch", "lr", "train/acc", "train/loss", "val/loss"])
    ['train/loss', 'val/loss', 'train/acc']
    >>> choose_metric_keys(["epoch", "lr", "train/loss"], ["train/*", "missing"])
    ['train/loss']
    """
    if patterns:
        chosen = [key for pattern in patterns for key in scalar_keys if fnmatch.fnmatchcase(key, pattern)]
        return list(dict.fromkeys(chosen))
    return sorted(scalar_keys, key=_metric_rank)[:DEFAULT_METRIC_COLUMNS]


def _metric_rank(key: str) -> int:
    words = re.split(r"[^a-z0-9]+", key.lower())
    if any("loss" in word for word in words):
        return 0
    if any(word in ("acc", "accuracy") for word in words):
        return 1
    return 2


# ---- jaxtrack show -------------------------------------------------------------------------------


def _show_command(args: argparse.Namespace) -> None:
    with _open_store(args) as store:
        run = store.run(args.run)
        kinds = store.keys(run.id)
        stats = store.metric_stats(run.id)
        artifacts = store.artifacts(run.id)
    metrics: dict[str, dict[str, Any]] = {}
    for key, kind in kinds.items():
        entry = stats.get(key, {})
        metric = {
            "kind": kind,
            "count": entry.get("count", 0),
            "last": entry.get("last"),
            "last_step": entry.get("last_step"),
        }
        if kind == "scalar":
            # SQL's min/max skip NaN (stored as NULL); a metric that was only ever NaN has neither.
            metric["min"] = math.nan if entry.get("min") is None else entry["min"]
            metric["max"] = math.nan if entry.get("max") is None else entry["max"]
        metrics[key] = metric
    if args.json:
        _print_json(
            {
                **_run_identity(run),
                "host": run.host,
                "pid": run.pid,
                "sessions": run.sessions,
                "heartbeat": run.heartbeat,
                "git": run.git,
                "system": run.system,
                "config": run.config,
                "summary": run.summary,
                "metrics": metrics,
                "artifacts": artifacts,
            }
        )
        return
    identity = [
        ("run", run.id + (f" ({run.name})" if run.name else "")),
        ("project", run.project or "-"),
        ("status", run.status),
        ("started", _format_time(run.start_time)),
        ("ended", _format_time(run.end_time)),
        ("duration", format_duration(run.duration)),
        ("last step", _format_optional(run.last_step)),
        ("sessions", str(run.sessions)),
        ("host", (run.host or "-") + (f" (pid {run.pid})" if run.pid is not None else "")),
        ("git", _describe_git(run.git)),
        (
            "system",
            ", ".join(f"{name} {run.system[name]}" for name in ("python", "jax", "jaxtrack") if run.system.get(name))
            or "-",
        ),
    ]
    sections = [format_table(["", ""], identity, header=False)]
    sections.append(_section("config", [(key, format_value(value)) for key, value in run.config.items()]))
    sections.append(_section("summary", [(key, format_value(value)) for key, value in run.summary.items()]))
    metric_rows = [
        [
            key,
            metric["kind"],
            str(metric["count"]),
            format_value(metric["last"]),
            _format_optional(metric["last_step"]),
            format_value(metric["min"]) if "min" in metric else "",
            format_value(metric["max"]) if "max" in metric else "",
        ]
        for key, metric in metrics.items()
    ]
    if metric_rows:
        table = format_table(["key", "kind", "count", "last", "step", "min", "max"], metric_rows, right={2, 4})
        sections.append("metrics\n" + _indent(table))
    else:
        sections.append("metrics\n  (none)")
    if artifacts:
        artifact_rows = [[a["name"], f"v{a['version']}", a["type"] or "", a["path"]] for a in artifacts]
        sections.append("artifacts\n" + _indent(format_table(["name", "version", "type", "path"], artifact_rows)))
    print("\n\n".join(sections))


def _section(title: str, pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return f"{title}\n  (none)"
    return f"{title}\n" + _indent(format_table(["", ""], pairs, header=False))


def _describe_git(git: Mapping[str, Any]) -> str:
    if not git.get("commit"):
        return "-"
    text = str(git["commit"])[:12]
    if git.get("branch"):
        text += f" on {git['branch']}"
    if git.get("dirty"):
        text += ", with uncommitted changes"
    return text


# ---- jaxtrack plot -------------------------------------------------------------------------------


def _plot_command(args: argparse.Namespace) -> None:
    # Checked first, so a missing matplotlib is reported before any work is done.
    import_optional("matplotlib", extra="plot", purpose="jaxtrack plot")
    with _open_store(args) as store:
        run = store.run(args.run)
        keys = store.select_keys(run.id, args.keys, kind="scalar") if args.keys else _scalar_keys(store, run)
        if not keys:
            raise CommandError(f"run {run.id!r} has no scalar metrics to plot")
        runs = list({r.id: r for r in [run, *(store.run(ref) for ref in args.compare)]}.values())
        series: dict[str, list[tuple[StoredRun, np.ndarray, np.ndarray]]] = {key: [] for key in keys}
        for plotted in runs:
            available = _scalar_keys(store, plotted)
            for key in keys:
                if key in available:  # a compared run without the key has no line on its panel
                    steps, values = store.scalars(plotted.id, key)
                    series[key].append((plotted, steps, values))
    output = os.path.abspath(args.output or f"{run.id}.png")
    _draw(series, _legend_labels(runs), output)
    if args.json:
        lines = {key: [plotted.id for plotted, _, _ in lines] for key, lines in series.items()}
        _print_json({"path": output, "keys": keys, "runs": [r.id for r in runs], "lines": lines})
    else:
        print(output)


def _scalar_keys(store: RunStore, run: StoredRun) -> list[str]:
    return [key for key, kind in store.keys(run.id).items() if kind == "scalar"]


def _legend_labels(runs: Sequence[StoredRun]) -> dict[str, str]:
    names = [run.display_name for run in runs]
    # Two runs of the same name would be indistinguishable in the legend.
    return {
        run.id: run.display_name if names.count(run.display_name) == 1 else f"{run.display_name} ({run.id})"
        for run in runs
    }


def _draw(
    series: Mapping[str, Sequence[tuple[StoredRun, np.ndarray, np.ndarray]]], labels: Mapping[str, str], output: str
) -> None:
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


# ---- jaxtrack export -----------------------------------------------------------------------------


def _export_command(args: argparse.Namespace) -> None:
    target, *rest = args.to
    if target not in EXPORT_TARGETS:
        raise CommandError(f"unknown export target {target!r}: use --to tensorboard DIR or --to wandb")
    if target == "tensorboard" and len(rest) != 1:
        raise CommandError("--to tensorboard needs one directory: --to tensorboard DIR")
    if target == "wandb" and rest:
        raise CommandError(f"--to wandb takes no directory (got {' '.join(rest)!r}); use --dir D for W&B's files")
    with _open_store(args) as store:
        run = store.run(args.run)
        history = store.history(run.id)
        artifacts = store.artifacts(run.id)
    if target == "tensorboard":
        _export_tensorboard(run, history, artifacts, rest[0], as_json=args.json)
    else:
        _export_wandb(run, history, artifacts, args)


def _replay(
    tracker: Tracker,
    run: StoredRun,
    history: Sequence[Mapping[str, Any]],
    artifacts: Sequence[Mapping[str, Any]],
    *,
    config: bool = True,
) -> dict[str, int]:
    """Logs the run's config, history rows, summary and artifacts into ``tracker``; returns how much of each was written."""
    if config and run.config:
        tracker.log_hyperparameters(run.config)
    values = 0
    for row in history:
        metrics = {key: value for key, value in row.items() if key != "step"}
        tracker.log(metrics, step=row["step"])
        values += len(metrics)
    summary = {key: _summary_value(value) for key, value in run.summary.items()}
    if summary:
        tracker.log_summary(summary)
    copied = 0
    for artifact in artifacts:
        if os.path.exists(artifact["path"]):  # a store moved without its artifacts/ directory still exports
            tracker.log_artifact(artifact["path"], name=artifact["name"], type=artifact["type"])
            copied += 1
    return {
        "steps": len(history),
        "values": values,
        "config": len(run.config),
        "summary": len(summary),
        "artifacts": copied,
    }


def _summary_value(value: Any) -> Any:
    # The store keeps a summary histogram as the plain dict of its fields; rebuilt, it is
    # written as a histogram again instead of as one histogram per field.
    if isinstance(value, dict) and set(value) == _HISTOGRAM_FIELDS:
        fields = {**value, "bucket_limits": np.asarray(value["bucket_limits"], dtype=np.float64)}
        fields["bucket_counts"] = np.asarray(value["bucket_counts"], dtype=np.int64)
        return Histogram(**fields)
    return value


def _export_tensorboard(
    run: StoredRun,
    history: Sequence[Mapping[str, Any]],
    artifacts: Sequence[Mapping[str, Any]],
    logdir: str,
    *,
    as_json: bool,
) -> None:
    from jaxtrack.trackers.tensorboard import TensorboardTracker

    tracker = TensorboardTracker(logdir)
    try:
        counts = _replay(tracker, run, history, artifacts)
    finally:
        tracker.finish()
    path = os.path.abspath(logdir)
    if as_json:
        _print_json({"target": "tensorboard", "run": run.id, "path": path, **counts})
        return
    print(f"exported run {_run_label(run)} to TensorBoard: {_counts_text(counts)}")
    print(f"event files: {path}")
    print(f"view them with: tensorboard --logdir {path}")


def _export_wandb(
    run: StoredRun,
    history: Sequence[Mapping[str, Any]],
    artifacts: Sequence[Mapping[str, Any]],
    args: argparse.Namespace,
) -> None:
    wandb = import_optional("wandb", extra="wandb", purpose="jaxtrack export --to wandb")
    from jaxtrack.trackers.wandb import WandbTracker

    mode = args.mode or _wandb_mode_from_environment()
    init: dict[str, Any] = {
        "id": run.id,
        "name": run.display_name,
        "project": args.project or run.project,
        "entity": args.entity,
        "config": run.config,
        "mode": mode,
        "dir": args.dir,
        "resume": "allow",
        # This process only copies the run: its console output, system metrics and git
        # checkout are not the run's.
        "settings": wandb.Settings(console="off", x_disable_stats=True, disable_git=True),
    }
    if args.dir is not None:
        os.makedirs(args.dir, exist_ok=True)
    try:
        tracker = WandbTracker(**{key: value for key, value in init.items() if value is not None})
    except wandb.errors.Error as error:
        raise CommandError(f"W&B could not start the run: {error}") from None
    try:
        counts = _replay(tracker, run, history, artifacts, config=False)  # the config went to wandb.init
        counts["config"] = len(run.config)
        tracker.set_status(run.status)
        wandb_run = tracker.run
        run_dir = os.path.abspath(wandb_run.settings.sync_dir)
        url = None if wandb_run.offline else wandb_run.url  # an offline run's url is None, with a warning
        project, entity = wandb_run.project, wandb_run.entity
    except BaseException:
        tracker.set_status("failed")  # a partial copy must not look like a finished run
        raise
    finally:
        tracker.finish()
    result = {
        "target": "wandb",
        "run": run.id,
        "mode": mode,
        "project": project,
        "entity": entity or None,
        "run_dir": run_dir,
        "url": url,
        "exit_code": 0 if run.status == "finished" else 1,  # as WandbTracker.set_status maps it
        **counts,
    }
    if args.json:
        _print_json(result)
        return
    print(f"exported run {_run_label(run)} to W&B ({mode}, project {project}): {_counts_text(counts)}")
    print(f"run directory: {run_dir}")
    if url:
        print(f"url: {url}")
    if mode == "offline":
        print(f"upload it with: wandb sync {run_dir}")


def _wandb_mode_from_environment() -> str:
    # "dryrun" and "run" are W&B's old names of offline and online. Any other mode (such as
    # "disabled") would export nothing, which is not what the command is asked to do.
    given = os.environ.get("WANDB_MODE") or "online"
    mode = {"dryrun": "offline", "run": "online"}.get(given, given)
    if mode not in ("online", "offline"):
        raise CommandError(f"WANDB_MODE is {mode!r}, which writes no run: pass --mode online or --mode offline")
    return mode


def _run_label(run: StoredRun) -> str:
    return run.id + (f" ({run.name})" if run.name else "")


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(
        _plural(counts[what], noun)
        for what, noun in [
            ("steps", "step"),
            ("values", "value"),
            ("config", "hyperparameter"),
            ("summary", "summary value"),
            ("artifacts", "artifact"),
        ]
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# ---- formatting ----------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A short text for a metric, config or summary value: numbers as ``{:.6g}``, arrays described.

    >>> format_value(0.123456789), format_value(12345678), format_value(float("nan")), format_value("a\\nb")
    ('0.123457', '12345678', 'nan', 'a ...')
    >>> format_value(Histogram.from_array([1.0, 2.0, 3.0], num_bins=2))
    'histogram of 3 values in [1, 3], mean 2 (2 buckets)'
    >>> format_value([64, 64])
    '[64, 64]'
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, str):
        return _shorten(value)
    if isinstance(value, Histogram):
        return _describe_histogram(value)
    if isinstance(value, Image):
        return _describe_image(value)
    if isinstance(value, dict) and set(value) == _HISTOGRAM_FIELDS:
        return _describe_histogram(_summary_value(value))
    return _shorten(json.dumps(to_json(value), ensure_ascii=False, allow_nan=False))


def _describe_histogram(histogram: Histogram) -> str:
    buckets = np.size(histogram.bucket_counts)
    if not histogram.num:
        return f"histogram of no finite values ({buckets} buckets)"
    return (
        f"histogram of {int(histogram.num)} values in [{float(histogram.min):.6g}, {float(histogram.max):.6g}], "
        f"mean {float(histogram.mean):.6g} ({buckets} buckets)"
    )


def _describe_image(image: Image) -> str:
    count, height, width, channels = image.to_uint8().shape
    text = f"{count} images" if count > 1 else "image"
    text += f" {height}x{width}x{channels}"
    return text + (f" {image.caption!r}" if image.caption else "")


def _shorten(text: str, width: int = 60) -> str:
    first_line, *more = text.splitlines() or [""]
    if len(first_line) > width:
        return first_line[: width - 4] + " ..."
    return first_line + (" ..." if more else "")


def format_duration(seconds: float) -> str:
    """A duration as people read it.

    >>> format_duration(3.24), format_duration(42), format_duration(65), format_duration(7384), format_duration(200000)
    ('3.2s', '42s', '1m 05s', '2h 03m', '2d 07h')
    """
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Collection[int] = (), header: bool = True
) -> str:
    """Rows of text as aligned columns, two spaces apart; the columns in ``right`` are right-aligned (numbers).

    >>> print(format_table(["key", "value"], [["loss", "0.5"], ["accuracy", "0.75"]], right={1}))
    key       value
    loss        0.5
    accuracy   0.75
    """
    lines = [list(headers), *map(list, rows)] if header else [list(row) for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else line for line in text.splitlines())


def _format_time(timestamp: float | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _format_optional(number: int | None) -> str:
    return "-" if number is None else str(number)


# ---- JSON ----------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """``value`` as data ``json.dumps(..., allow_nan=False)`` accepts.

    NaN and infinities become ``None`` (``null``, as JavaScript's
    ``JSON.stringify`` writes them), NumPy values Python ones, histograms
    and images a short description of themselves.

    >>> to_json({"loss": float("nan"), "steps": np.int64(3), "curve": np.array([1.0, np.inf])})
    {'loss': None, 'steps': 3, 'curve': [1.0, None]}
    >>> to_json(Image(np.zeros((2, 4, 3), np.uint8), caption="blank"))
    {'type': 'image', 'count': 1, 'height': 2, 'width': 4, 'channels': 3, 'caption': 'blank'}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.generic, np.ndarray)):
        return to_json(value.tolist())
    if isinstance(value, Histogram):
        return _histogram_json(value)
    if isinstance(value, Image):
        count, height, width, channels = value.to_uint8().shape
        return {
            "type": "image",
            "count": count,
            "height": height,
            "width": width,
            "channels": channels,
            "caption": value.caption,
        }
    if isinstance(value, Mapping):
        if set(value) == _HISTOGRAM_FIELDS:
            return _histogram_json(_summary_value(dict(value)))
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


def _histogram_json(histogram: Histogram) -> dict[str, Any]:
    return to_json(
        {
            "type": "histogram",
            "num": int(histogram.num),
            "min": float(histogram.min),
            "max": float(histogram.max),
            "mean": float(histogram.mean),
            "std": float(histogram.std),
            "buckets": int(np.size(histogram.bucket_counts)),
        }
    )


def _print_json(value: Any) -> None:
    print(json.dumps(to_json(value), indent=2, ensure_ascii=False, allow_nan=False))


def _run_identity(run: StoredRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "project": run.project,
        "status": run.status,
        "last_step": run.last_step,
        "start_time": run.start_time,
        "end_time": run.end_time,
        "duration": run.duration,
    }


# ---- plumbing ------------------------------------------------------------------------------------


def _open_store(args: argparse.Namespace) -> RunStore:
    return RunStore(args.store if args.store is not None else default_store_path())


def _error_message(error: BaseException) -> str:
    # str(KeyError("x")) is "'x'": the message is its argument.
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(message.split()) or type(error).__name__


__all__ = [
    "DEFAULT_METRIC_COLUMNS",
    "EXPORT_TARGETS",
    "CommandError",
    "build_parser",
    "choose_metric_keys",
    "format_duration",
    "format_table",
    "format_value",
    "main",
    "to_json",
]
