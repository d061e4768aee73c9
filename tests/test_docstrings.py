"""The API reference is complete: every public name has a docstring with an example, and a page shows it.

The docstrings' ``>>>`` examples themselves are run by pytest's ``--doctest-modules``
over ``src``; ``mkdocs build --strict`` (the docs test) checks that they render
and that their cross-references resolve.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pathlib
import pkgutil
import re
import types
from typing import Any

import pytest
import yaml


def _public_modules() -> list[str]:
    """Every module of the package whose dotted name has no private part; the command line has its own page."""
    import jaxtrack

    names = [
        info.name
        for info in pkgutil.walk_packages(jaxtrack.__path__, "jaxtrack.")
        if not any(part.startswith("_") for part in info.name.split(".")) and not info.name.startswith("jaxtrack.cli")
    ]
    return ["jaxtrack", *sorted(names)]


PUBLIC_MODULES = _public_modules()

API_PAGES = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api"


def _exports(module_name: str) -> list[tuple[str, Any]]:
    module = importlib.import_module(module_name)
    return [(f"{module_name}.{name}", getattr(module, name)) for name in getattr(module, "__all__", ())]


def _documented_objects() -> dict[str, Any]:
    """Every exported function and class of the public modules, by its first public name."""
    found: dict[int, tuple[str, Any]] = {}
    for module_name in PUBLIC_MODULES:
        for name, obj in _exports(module_name):
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found.setdefault(id(obj), (name, obj))
    return dict(found.values())


def _is_constant(obj: Any) -> bool:
    return not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj) or callable(obj))


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_module_has_a_docstring_and_all(module_name):
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    assert isinstance(getattr(module, "__all__", None), list), f"{module_name} has no __all__ list"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names what the module does not have: {missing}"
    private = [name for name in module.__all__ if name.startswith("_")]
    assert not private, f"{module_name}.__all__ exports private names: {private}"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_exported_constants_are_described_in_the_module_docstring(module_name):
    module = importlib.import_module(module_name)
    undescribed = [
        name
        for name in module.__all__
        if _is_constant(getattr(module, name)) and not re.search(rf"\b{re.escape(name)}\b", module.__doc__ or "")
    ]
    assert not undescribed, f"constants of {module_name} that its module docstring does not describe: {undescribed}"


def test_every_exported_function_and_class_has_a_docstring_with_an_example():
    offenders = [name for name, obj in _documented_objects().items() if ">>>" not in (inspect.getdoc(obj) or "")]
    assert not offenders, f"exported names whose docstring has no >>> example: {sorted(offenders)}"


def _public_members(cls: type) -> list[tuple[str, Any]]:
    """The methods and properties that jaxtrack's classes in ``cls``'s MRO define, public names only."""
    members = []
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        owner = next((base for base in cls.__mro__ if name in vars(base)), None)
        if owner is None or not owner.__module__.startswith("jaxtrack"):
            continue  # from object, Exception, abc.ABC...
        raw = vars(owner)[name]
        if isinstance(raw, (staticmethod, classmethod)):
            raw = raw.__func__
        if isinstance(raw, property | functools.cached_property) or inspect.isfunction(raw):
            members.append((name, raw))
    return members


def _member_doc(cls: type, name: str, raw: Any) -> str:
    if isinstance(raw, property):
        raw = raw.fget
    elif isinstance(raw, functools.cached_property):
        raw = raw.func
    doc = raw.__doc__
    if not doc:
        # An override documented by the method it overrides (Tracker.log for LocalTracker.log).
        for base in cls.__mro__[1:]:
            inherited = vars(base).get(name)
            if inherited is not None and getattr(inherited, "__doc__", None):
                doc = inherited.__doc__
                break
    return (doc or "").strip()


def test_every_public_method_and_property_of_an_exported_class_has_a_docstring():
    offenders = [
        f"{name}.{member}"
        for name, obj in _documented_objects().items()
        if inspect.isclass(obj)
        for member, raw in _public_members(obj)
        if not _member_doc(obj, member, raw)
    ]
    assert not offenders, f"public methods and properties without a docstring: {sorted(offenders)}"


def _rendered_objects() -> set[int]:
    """The objects that a ``::: identifier`` block of ``docs/api/*.md`` renders (and its ``members:``)."""
    rendered: set[int] = set()
    for page in sorted(API_PAGES.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"^:::\s+(\S+)\s*$", line)
            if not match:
                continue
            options_lines = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith(" "):
                    break
                options_lines.append(following)
            options = (yaml.safe_load("\n".join(options_lines)) or {}).get("options", {}) or {}
            obj = _resolve(match.group(1))
            rendered.add(id(obj))
            members = options.get("members")
            if isinstance(obj, types.ModuleType):
                names = members if isinstance(members, list) else ([] if members is False else obj.__all__)
                rendered.update(id(getattr(obj, name)) for name in names)
    return rendered


def _resolve(identifier: str) -> Any:
    parts = identifier.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)
        return obj
    raise AssertionError(f"cannot import {identifier!r}")


def test_every_exported_function_and_class_is_in_the_api_reference():
    rendered = _rendered_objects()
    missing = [name for name, obj in _documented_objects().items() if id(obj) not in rendered]
    assert not missing, f"exported names that no ::: block of docs/api/*.md renders: {sorted(missing)}"
