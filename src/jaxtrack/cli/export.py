"""``jaxtrack export RUN --to tensorboard DIR | --to wandb | --to jsonl FILE | --to csv FILE``: a run replayed into another backend, over ``jaxtrack.store.export``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from jaxtrack.cli.command import CommandError, open_store
from jaxtrack.cli.format import echo, print_json
from jaxtrack.store.export import EXPORT_TARGETS, export_csv, export_jsonl, export_tensorboard, export_wandb
from jaxtrack.store.reader import StoredRun


def command(args: argparse.Namespace) -> None:
    """``jaxtrack export``: replays the run into the ``--to`` target and says what it wrote, and where."""
    target, *rest = args.to
    if target not in EXPORT_TARGETS:
        raise CommandError(
            f"unknown export target {target!r}: use --to tensorboard DIR, --to wandb, --to jsonl FILE or --to csv FILE"
        )
    if target == "tensorboard" and len(rest) != 1:
        raise CommandError("--to tensorboard needs one directory: --to tensorboard DIR")
    if target in ("jsonl", "csv") and len(rest) != 1:
        raise CommandError(f"--to {target} needs one file: --to {target} FILE")
    if target == "wandb" and rest:
        raise CommandError(f"--to wandb takes no directory (got {' '.join(rest)!r}); use --dir D for W&B's files")
    with open_store(args) as store:
        run = store.run(args.run)
        if target == "tensorboard":
            exported = export_tensorboard(store, run.id, rest[0])
        elif target == "jsonl":
            exported = export_jsonl(store, run.id, rest[0])
        elif target == "csv":
            exported = export_csv(store, run.id, rest[0])
        else:
            exported = export_wandb(
                store, run.id, mode=args.mode, project=args.project, entity=args.entity, directory=args.dir
            )
    if args.json:
        print_json(exported)
    elif target == "tensorboard":
        _print_tensorboard(run, exported)
    elif target == "jsonl":
        echo(f"exported run {_run_label(run)} to JSON lines: {_counts_text(exported)}", f"file: {exported['path']}")
    elif target == "csv":
        echo(
            f"exported the history of run {_run_label(run)} to CSV: "
            f"{_plural(exported['steps'], 'row')}, {_plural(exported['columns'], 'column')}",
            f"file: {exported['path']}",
        )
    else:
        _print_wandb(run, exported)


def _print_tensorboard(run: StoredRun, exported: Mapping[str, Any]) -> None:
    path = exported["path"]
    echo(
        f"exported run {_run_label(run)} to TensorBoard: {_counts_text(exported)}",
        f"event files: {path}",
        f"view them with: tensorboard --logdir {path}",
    )


def _print_wandb(run: StoredRun, exported: Mapping[str, Any]) -> None:
    mode, run_dir = exported["mode"], exported["run_dir"]
    echo(f"exported run {_run_label(run)} to W&B ({mode}, project {exported['project']}): {_counts_text(exported)}")
    echo(f"run directory: {run_dir}")
    if exported["url"]:
        echo(f"url: {exported['url']}")
    if mode == "offline":
        echo(f"upload it with: wandb sync {run_dir}")


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


__all__ = ["command"]
