"""Tracker configs: dataclasses chosen by a ``type:`` key, from YAML, dicts or code.

Built-in choices are ``local``, ``noop``, ``tensorboard``, ``wandb``, ``console`` and ``json_logger``.
``@TrackerConfig.register("name")`` adds one; a package can also add one
without being imported first, through an entry point in the group
[`ENTRY_POINT_GROUP`][jaxtrack.trackers.config.ENTRY_POINT_GROUP] (``"jaxtrack.trackers"``) whose name is the ``type`` and
whose object is the config class, e.g. in its ``pyproject.toml``:

```toml
[project.entry-points."jaxtrack.trackers"]
mlflow = "my_package.tracking:MlflowConfig"
```
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import importlib.metadata
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import yaml

from jaxtrack.errors import TrackerConfigError
from jaxtrack.trackers.base import NoopTracker, Tracker

ENTRY_POINT_GROUP = "jaxtrack.trackers"
"""The entry-point group in which installed packages offer tracker configs, by ``type`` name."""

_C = TypeVar("_C", bound="type[TrackerConfig]")


@dataclasses.dataclass(frozen=True)
class TrackerConfig(abc.ABC):
    """Base of every tracker config; subclasses are frozen dataclasses.

    Examples:
        >>> cfg = TrackerConfig.parse("type: noop")
        >>> cfg
        NoopConfig()
        >>> cfg.init(run_id="run-1").name
        'noop'

        A new choice is a dataclass with an ``init`` that builds the tracker:

        >>> @TrackerConfig.register("doc_example")
        ... @dataclasses.dataclass(frozen=True)
        ... class DocExampleConfig(TrackerConfig):
        ...     verbose: bool = False
        ...     def init(self, run_id):
        ...         return NoopTracker()
        >>> TrackerConfig.parse({"type": "doc_example", "verbose": True})
        DocExampleConfig(verbose=True)
    """

    _registry: ClassVar[dict[str, type[TrackerConfig]]] = {}
    type_name: ClassVar[str] = ""

    @abc.abstractmethod
    def init(self, run_id: str | None) -> Tracker:
        """Builds the tracker this config describes, for the run ``run_id``."""

    @classmethod
    def register(cls, name: str) -> typing.Callable[[_C], _C]:
        """Class decorator that makes a config the choice ``type: name``."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a tracker type name must be a non-empty string, got {name!r}")

        def decorate(config_cls: _C) -> _C:
            if not (isinstance(config_cls, type) and issubclass(config_cls, TrackerConfig)):
                raise TypeError(
                    f"@TrackerConfig.register({name!r}) decorates TrackerConfig subclasses, got {config_cls!r}"
                )
            if not dataclasses.is_dataclass(config_cls):
                raise TypeError(f"{config_cls.__name__} must be a dataclass to be registered as {name!r}")
            existing = TrackerConfig._registry.get(name)
            if existing is not None and existing.__qualname__ != config_cls.__qualname__:
                raise TrackerConfigError(
                    f"tracker type {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
                )
            if "type_name" not in vars(config_cls):
                # A class registered under a second name (an alias, an entry point) keeps its first: to_dict stays stable.
                config_cls.type_name = name
            TrackerConfig._registry[name] = config_cls
            return config_cls

        return decorate

    @classmethod
    def choices(cls) -> list[str]:
        """Every ``type`` name known: registered ones and installed entry points."""
        return sorted(set(TrackerConfig._registry) | {ep.name for ep in _entry_points()})

    @classmethod
    def get_choice_class(cls, name: str) -> type[TrackerConfig]:
        """The config class registered as ``name``, loading an entry point if needed."""
        if name not in TrackerConfig._registry:
            _load_entry_point(name)
        try:
            return TrackerConfig._registry[name]
        except KeyError:
            raise TrackerConfigError(
                f"unknown tracker type {name!r}{_did_you_mean(name, cls.choices())}; "
                f"choices: {', '.join(cls.choices())}"
            ) from None

    @classmethod
    def parse(cls, obj: Any) -> TrackerConfig | list[TrackerConfig]:
        """Makes config(s) from a config, a dict with ``type:``, a list of those, or YAML text.

        YAML is read with a safe loader; it may also be a whole training config
        whose ``tracker:`` (or ``trainer: tracker:``) section holds the choice.
        A list gives a list of configs. Every error names the offending
        type or field and lists what is valid.

        Examples:
            >>> TrackerConfig.parse([{"type": "noop"}, "type: noop"])
            [NoopConfig(), NoopConfig()]
        """
        if isinstance(obj, TrackerConfig):
            return obj
        if isinstance(obj, str):
            try:
                obj = yaml.safe_load(obj)
            except yaml.YAMLError as error:
                raise TrackerConfigError(f"tracker config is not valid YAML: {error}") from None
            obj = _tracker_section(obj)
        if isinstance(obj, Mapping):
            return _from_mapping(obj)
        if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
            configs: list[TrackerConfig] = []
            for i, item in enumerate(obj):
                parsed = cls.parse(item)
                if isinstance(parsed, list):
                    raise TrackerConfigError(f"tracker list item {i} is itself a list; nest trackers in one flat list")
                configs.append(parsed)
            return configs
        raise TrackerConfigError(
            f"a tracker config is a TrackerConfig, a mapping with 'type:', a list of those, or YAML text; got {type(obj).__name__}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The config as ``parse`` reads it back, ``type`` first.

        Examples:
            >>> NoopConfig().to_dict()
            {'type': 'noop'}
        """
        return {"type": self.type_name, **dataclasses.asdict(self)}


@TrackerConfig.register("noop")
@dataclasses.dataclass(frozen=True)
class NoopConfig(TrackerConfig):
    """``type: noop``: a tracker that records nothing.

    Examples:
        >>> NoopConfig().init(None)
        NoopTracker(name='noop')
    """

    def init(self, run_id: str | None) -> Tracker:
        return NoopTracker()


def _tracker_section(obj: Any) -> Any:
    """Finds the tracker choice in a whole training config, as Levanter's YAML nests it."""
    if isinstance(obj, Mapping) and "type" not in obj:
        if "tracker" in obj:
            return obj["tracker"]
        trainer = obj.get("trainer")
        if isinstance(trainer, Mapping) and "tracker" in trainer:
            return trainer["tracker"]
    return obj


def _from_mapping(raw: Mapping[str, Any]) -> TrackerConfig:
    if "type" not in raw:
        raise TrackerConfigError(
            f"a tracker config needs a 'type:' key, one of: {', '.join(TrackerConfig.choices())}; got keys {sorted(map(str, raw))}"
        )
    name = raw["type"]
    if not isinstance(name, str):
        raise TrackerConfigError(f"tracker 'type' must be a string, got {name!r}")
    config_cls = TrackerConfig.get_choice_class(name)
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    hints = typing.get_type_hints(config_cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "type":
            continue
        if key not in fields:
            raise TrackerConfigError(
                f"unknown field {key!r} for tracker type {name!r}{_did_you_mean(str(key), list(fields))}; "
                f"valid fields: {', '.join(fields) or '(none)'}"
            )
        kwargs[key] = coerce(value, hints[key], f"{name}.{key}")
    return config_cls(**kwargs)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Checks ``value`` against the type ``hint`` and returns it in that type.

    Lists become tuples for tuple fields and ints become floats for float
    fields; anything else that does not fit raises ``TrackerConfigError``
    naming ``where``.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin is typing.Union or origin is types.UnionType:
        for option in args:
            try:
                return coerce(value, option, where)
            except TrackerConfigError:
                pass  # the message below names every option
        raise TrackerConfigError(f"{where} must be {_describe(hint)}, got {value!r} ({type(value).__name__})")
    if origin is typing.Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise TrackerConfigError(f"{where} must be one of {', '.join(map(repr, args))}; got {value!r}")
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list, Sequence) or hint in (tuple, list):
        if isinstance(value, (list, tuple)):
            item_hint = args[0] if args else Any
            items = [coerce(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value)]
            return list(items) if origin is list else tuple(items)
    elif origin in (dict, Mapping) or hint in (dict, Mapping):
        if isinstance(value, Mapping):
            key_hint, value_hint = args if args else (Any, Any)
            return {coerce(k, key_hint, where): coerce(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    elif isinstance(hint, type):
        if isinstance(value, hint):
            return value
    else:
        return value
    raise TrackerConfigError(f"{where} must be {_describe(hint)}, got {value!r} ({type(value).__name__})")


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin in (tuple, list, Sequence):
        return f"a list of {_describe(typing.get_args(hint)[0])}" if typing.get_args(hint) else "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _load_entry_point(name: str) -> None:
    for ep in _entry_points():
        if ep.name != name:
            continue
        try:
            config_cls = ep.load()
        except Exception as error:
            raise TrackerConfigError(
                f"tracker type {name!r} comes from the entry point {ep.value!r} "
                f"(package {ep.dist.name if ep.dist else '?'}), which failed to load: {type(error).__name__}: {error}"
            ) from error
        if not (isinstance(config_cls, type) and issubclass(config_cls, TrackerConfig)):
            raise TrackerConfigError(f"entry point {name!r} = {ep.value!r} is not a TrackerConfig subclass")
        if name not in TrackerConfig._registry:
            TrackerConfig.register(name)(config_cls)
        return


__all__ = [
    "ENTRY_POINT_GROUP",
    "NoopConfig",
    "TrackerConfig",
]
