"""``python -m jaxtrack``: the ``jaxtrack`` command line (see ``jaxtrack.cli``)."""

from __future__ import annotations

from jaxtrack.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
