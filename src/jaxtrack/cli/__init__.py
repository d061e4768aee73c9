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
    jaxtrack export RUN --to jsonl FILE | --to csv FILE

For example, after training with the local tracker::

    $ jaxtrack runs
    id                      name      status    steps  train/loss  train/acc  duration  started
    20250101-120000-a1b2c3  baseline  finished    999      0.0412      0.987  1m 05s    2025-01-01 12:00:00
    20250101-121500-d4e5f6            failed      120        2.31      0.113  9.5s      2025-01-01 12:15:00
    $ jaxtrack plot latest 'train/*' --compare baseline -o curves.png
    /home/me/project/curves.png
    $ jaxtrack export baseline --to wandb --mode offline   # then `wandb sync <the run directory it prints>`

``plot`` needs ``pip install 'jaxtrack[plot]'`` (matplotlib), ``export`` the
``tensorboard`` or ``wandb`` extra (``jsonl`` and ``csv`` need none). A problem the user can fix (no store, no
such run or key, a missing package) is reported as one line,
``jaxtrack: error: ...``, with exit status 1; a malformed command line exits
with status 2, as argparse does.

The package holds ``main`` (the parser, running a command, reporting
errors), a module a command (``runs``, ``show``, ``plot``, ``export``), each
thin over [`jaxtrack.store`][jaxtrack.store], what they share (``command``:
``CommandError``, opening the store) and how they write text and JSON
(``format``).
"""

from jaxtrack.cli.main import main

__all__ = ["main"]
