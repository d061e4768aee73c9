"""``jaxtrack runs``: the store's runs, oldest first (the newest is the last line), with their latest metrics.

Each run shows up to ``DEFAULT_METRIC_COLUMNS`` scalar metrics, losses and
accuracies first, unless ``--keys`` names them.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
from collections.abc import Sequence

from jaxtrack.cli.command import open_store
from jaxtrack.cli.format import (
    echo,
    format_duration,
    format_optional,
    format_table,
    format_time,
    format_value,
    print_json,
    run_identity,
)

DEFAULT_METRIC_COLUMNS = 3
"""How many metrics ``jaxtrack runs`` shows per run when ``--keys`` is not given."""


def command(args: argparse.Namespace) -> None:
    """``jaxtrack runs``: one line per run, oldest first, with its status, steps and latest metrics."""
    with open_store(args) as store:
        runs = store.runs(project=args.project)
        listed = []
        for run in runs:
            scalar_keys = [key for key, kind in store.keys(run.id).items() if kind == "scalar"]
            chosen = choose_metric_keys(scalar_keys, args.keys)
            stats = store.metric_stats(run.id) if chosen else {}
            listed.append((run, {key: stats[key]["last"] for key in chosen}))
    if args.json:
        print_json([{**run_identity(run), "metrics": metrics} for run, metrics in listed])
        return
    if not listed:
        where = f" of project {args.project!r}" if args.project is not None else ""
        echo(f"no runs{where} in {store.path}")
        return
    columns = list(dict.fromkeys(key for _, metrics in listed for key in metrics))
    headers = ["id", "name", "status", "steps", *columns, "duration", "started"]
    rows = [
        [
            run.id,
            run.name or "",
            run.status,
            format_optional(run.last_step),
            *(format_value(metrics[key]) if key in metrics else "" for key in columns),
            format_duration(run.duration),
            format_time(run.start_time),
        ]
        for run, metrics in listed
    ]
    echo(*format_table(headers, rows, right=range(3, 4 + len(columns))).split("\n"))


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


__all__ = ["DEFAULT_METRIC_COLUMNS", "choose_metric_keys", "command"]
