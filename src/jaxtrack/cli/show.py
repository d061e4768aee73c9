"""``jaxtrack show RUN``: one run's identity, hyperparameters, summary, every metric's latest, min and max, its artifacts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from typing import Any

from jaxtrack.cli.command import open_store
from jaxtrack.cli.format import (
    echo,
    format_duration,
    format_optional,
    format_table,
    format_time,
    format_value,
    indent,
    print_json,
    run_identity,
)


def command(args: argparse.Namespace) -> None:
    """``jaxtrack show RUN``: the run's identity, config, summary, metrics and artifacts."""
    with open_store(args) as store:
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
        print_json(
            {
                **run_identity(run),
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
        ("started", format_time(run.start_time)),
        ("ended", format_time(run.end_time)),
        ("duration", format_duration(run.duration)),
        ("last step", format_optional(run.last_step)),
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
            format_optional(metric["last_step"]),
            format_value(metric["min"]) if "min" in metric else "",
            format_value(metric["max"]) if "max" in metric else "",
        ]
        for key, metric in metrics.items()
    ]
    if metric_rows:
        table = format_table(["key", "kind", "count", "last", "step", "min", "max"], metric_rows, right={2, 4})
        sections.append("metrics\n" + indent(table))
    else:
        sections.append("metrics\n  (none)")
    if artifacts:
        artifact_rows = [[a["name"], f"v{a['version']}", a["type"] or "", a["path"]] for a in artifacts]
        sections.append("artifacts\n" + indent(format_table(["name", "version", "type", "path"], artifact_rows)))
    # Each cell is escaped already: the line breaks left are the layout's own.
    echo(*"\n\n".join(sections).split("\n"))


def _section(title: str, pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return f"{title}\n  (none)"
    return f"{title}\n" + indent(format_table(["", ""], pairs, header=False))


def _describe_git(git: Mapping[str, Any]) -> str:
    if not git.get("commit"):
        return "-"
    text = str(git["commit"])[:12]
    if git.get("branch"):
        text += f" on {git['branch']}"
    if git.get("dirty"):
        text += ", with uncommitted changes"
    return text


__all__ = ["command"]
