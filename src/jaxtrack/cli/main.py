"""The ``jaxtrack`` command line: its parser, running a command, and reporting what went wrong.

Each command is a module of its own (``runs``, ``show``, ``plot``,
``export``) with a ``command(args)`` function, which the parser's
subcommand sets as ``args.command``. A problem the user can fix (no store,
no such run or key, a missing package) is reported as one line,
``jaxtrack: error: ...``, with exit status 1; a malformed command line
exits with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence

from jaxtrack._optional import MissingExtraError
from jaxtrack._version import __version__
from jaxtrack.cli.command import CommandError
from jaxtrack.cli.export import command as export_command
from jaxtrack.cli.format import echo
from jaxtrack.cli.plot import command as plot_command
from jaxtrack.cli.runs import DEFAULT_METRIC_COLUMNS
from jaxtrack.cli.runs import command as runs_command
from jaxtrack.cli.show import command as show_command
from jaxtrack.store import DEFAULT_STORE_PATH, STORE_ENV_VAR
from jaxtrack.store.export import ExportError

# Exceptions that carry a message meant for the user: the store's lookups raise KeyError,
# a bad store ValueError or FileNotFoundError, a missing optional package MissingExtraError,
# a target that refuses an export ExportError.
_USER_ERRORS = (CommandError, ExportError, KeyError, ValueError, OSError, MissingExtraError, sqlite3.Error)


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
        echo(f"jaxtrack: error: {_error_message(error)}", file=sys.stderr)
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
    runs.set_defaults(command=runs_command)

    show = commands.add_parser(
        "show",
        parents=common,
        help="show a run: identity, config, summary, metrics",
        description="Show a run's identity, hyperparameters, summary, and every metric's latest, min and max values.",
    )
    show.add_argument("run", metavar="RUN")
    show.set_defaults(command=show_command)

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
    plot.set_defaults(command=plot_command)

    export = commands.add_parser(
        "export",
        parents=common,
        help="replay a run into TensorBoard event files, a W&B run or a JSON lines file, or its history into CSV",
        description="Replay a run's hyperparameters, history and summary into another backend.",
    )
    export.add_argument("run", metavar="RUN")
    export.add_argument(
        "--to",
        nargs="+",
        required=True,
        metavar=("TARGET", "PATH"),
        help="'tensorboard DIR' (DIR: a run directory for TensorBoard), 'wandb', 'jsonl FILE' or 'csv FILE'",
    )
    export.add_argument("--project", help="W&B project (default: the run's project)")
    export.add_argument("--entity", help="W&B entity (default: yours)")
    export.add_argument(
        "--mode",
        choices=("online", "offline"),
        help="W&B mode (default: $WANDB_MODE, else online); an offline run is uploaded later with `wandb sync`",
    )
    export.add_argument("--dir", metavar="D", help="W&B's directory (default: $WANDB_DIR, else ./wandb)")
    export.set_defaults(command=export_command)
    return parser


def _error_message(error: BaseException) -> str:
    # str(KeyError("x")) is "'x'": the message is its argument.
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(message.split()) or type(error).__name__


__all__ = ["CommandError", "build_parser", "main"]
