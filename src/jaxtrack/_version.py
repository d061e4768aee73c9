"""jaxtrack's version, in a module of its own so that modules inside the package can read it.

The root package imports it from here; a module of the package that needs the
version (the run metadata the local store records, ``jaxtrack --version``)
imports this module rather than ``jaxtrack``, which would make it depend on
the whole package it is part of.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
