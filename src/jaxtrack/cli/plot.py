"""``jaxtrack plot RUN [KEY ...]``: scalar metrics against step into an image file, over ``jaxtrack.store.plot``."""

from __future__ import annotations

import argparse

from jaxtrack._optional import import_optional
from jaxtrack.cli.command import open_store
from jaxtrack.cli.format import echo, print_json
from jaxtrack.store.plot import plot_runs


def command(args: argparse.Namespace) -> None:
    """``jaxtrack plot``: draws the run's metrics (and the ``--compare`` runs') and prints the image's path."""
    # Checked first, so a missing matplotlib is reported before the store is opened.
    import_optional("matplotlib", extra="plot", purpose="jaxtrack plot")
    with open_store(args) as store:
        plotted = plot_runs(store, args.run, args.keys, compare=args.compare, output=args.output)
    if args.json:
        print_json(plotted)
    else:
        echo(plotted["path"])


__all__ = ["command"]
