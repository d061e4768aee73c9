"""The package's version, in a module of its own so that no module inside the package imports the package."""

__version__ = "0.1.0"
