"""Imports jaxtrack before pytest collects anything, so its doctests run against the modules in use.

With ``--import-mode=importlib``, collecting ``src/jaxtrack/run.py`` for its
doctests executes the file as a second module when ``jaxtrack.run`` is not
imported yet; that copy would hold a current tracker and a dispatcher of its
own. Imported here first, every module is found in ``sys.modules`` instead.

Tests and doctests that use the default run store write into a scratch one,
never into ``runs/`` of the checkout (a test about the default itself unsets it).
"""

import os
import tempfile

os.environ.setdefault("JAXTRACK_STORE", os.path.join(tempfile.mkdtemp(prefix="jaxtrack-tests-"), "jaxtrack.db"))

import jaxtrack  # imported first, for its side effect on sys.modules
import jaxtrack.cli.main
import jaxtrack.store.export  # noqa: F401
