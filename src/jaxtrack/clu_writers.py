"""CLU's metric writers without TensorFlow: [`load_metric_writers`][jaxtrack.clu_writers.load_metric_writers].

``clu/metric_writers/__init__.py`` imports CLU's ``SummaryWriter``, which needs
TensorFlow, so ``from clu import metric_writers`` fails without it although
the interface, logging, multi and async writers do not use it. This module
makes those importable under their usual names. CLU is imported only when
``load_metric_writers`` is called, never when ``jaxtrack`` is.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from types import ModuleType
from typing import Any

from jaxtrack._optional import import_optional

logger = logging.getLogger(__name__)

_TF_FREE_SUBMODULES = ("interface", "logging_writer", "multi_writer", "async_writer")
_TF_FREE_NAMES = {
    "MetricWriter": "interface",
    "LoggingWriter": "logging_writer",
    "MultiWriter": "multi_writer",
    "AsyncWriter": "async_writer",
    "AsyncMultiWriter": "async_writer",
    "ensure_flushes": "async_writer",
}
_load_lock = threading.Lock()


def load_metric_writers() -> ModuleType:
    """``clu.metric_writers``, importable with or without TensorFlow.

    With TensorFlow installed this is the package as ``import`` gives it.
    Without, the package's ``__init__`` fails on its import of
    ``SummaryWriter``; then the package is registered in ``sys.modules``
    without running its ``__init__``, and CLU's own TF-free submodules
    (``interface``, ``logging_writer``, ``multi_writer``, ``async_writer``)
    are imported under their real names, with ``MetricWriter``,
    ``LoggingWriter``, ``MultiWriter``, ``AsyncWriter``, ``AsyncMultiWriter``
    and ``ensure_flushes`` set on it as ``__init__`` would. From then on
    ``from clu.metric_writers import AsyncMultiWriter``, ``import
    clu.metric_writers.logging_writer`` and ``clu.periodic_actions`` work as
    usual; asking the package for anything else (``SummaryWriter``,
    ``create_default_writer``) raises an ``AttributeError`` saying it needs
    TensorFlow.

    Examples:
        >>> load_metric_writers().AsyncMultiWriter.__module__
        'clu.metric_writers.async_writer'
    """
    with _load_lock:
        clu = import_optional("clu", extra="clu", purpose="CLU interop")
        try:
            return importlib.import_module("clu.metric_writers")
        except ImportError as error:
            reason = error
        spec = importlib.util.find_spec("clu.metric_writers")
        if spec is None:  # pragma: no cover - clu without metric_writers
            raise reason
        package = importlib.util.module_from_spec(spec)  # has __path__; __init__ is not run
        sys.modules[spec.name] = package
        try:
            for submodule in _TF_FREE_SUBMODULES:
                importlib.import_module(f"{spec.name}.{submodule}")
        except ImportError:
            del sys.modules[spec.name]
            raise
        for name, submodule in _TF_FREE_NAMES.items():
            setattr(package, name, getattr(sys.modules[f"{spec.name}.{submodule}"], name))

        def missing(name: str) -> Any:
            raise AttributeError(
                f"clu.metric_writers.{name} is not available: the package's __init__ failed "
                f"({type(reason).__name__}: {reason}); jaxtrack loaded only its parts that need no TensorFlow"
            )

        package.__getattr__ = missing  # type: ignore[method-assign]
        clu.metric_writers = package  # type: ignore[attr-defined]  # as a finished import would set it
        return package


def warn_once(owner: Any, what: str, message: str, *args: Any) -> None:
    """Logs ``message`` the first time ``owner`` (an adapter with a ``_warned`` set) hits ``what``.

    The CLU adapters (both directions) warn once per kind of call they skip
    or cannot store in full, rather than once per step.

    Examples:
        >>> class Adapter:
        ...     def __init__(self):
        ...         self._warned = set()
        >>> adapter = Adapter()
        >>> for step in range(3):
        ...     warn_once(adapter, "audios", "write_audios is skipped (step %d)", step)  # logged for step 0 only
        >>> adapter._warned
        {'audios'}
    """
    warned: set[str] = owner._warned
    if what not in warned:
        warned.add(what)
        logger.warning(message, *args)


__all__ = ["load_metric_writers", "warn_once"]
