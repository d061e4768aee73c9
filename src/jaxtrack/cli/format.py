"""How the ``jaxtrack`` command line writes values, durations, tables and JSON.

Numbers are shown as ``{:.6g}``, histograms and images described in a few
words, long or multi-line text cut short; tables are aligned columns two
spaces apart. With ``--json`` a command prints ``to_json`` of its result:
strict JSON, with NaN and infinities as ``null``.

Whatever a store holds reaches the terminal escaped: control characters
(C0 such as ESC and carriage return, DEL, C1) and the characters that
reorder text (bidirectional overrides and isolates, line and paragraph
separators) are shown as Python writes them in a string, ``\\x1b``, ``\\r``,
``\\u202e``, in every table cell (``printable``) and every line a
command prints (``echo``), line breaks too. JSON output escapes the same
characters as ``\\uXXXX``, so it reads back exactly.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from jaxtrack.store.codec import HISTOGRAM_FIELDS, from_summary
from jaxtrack.store.reader import StoredRun
from jaxtrack.values import Histogram, Image

# ---- text ----------------------------------------------------------------------------------------

# Controls (C0, DEL, C1), and the characters that reorder or break lines of text on a terminal:
# the bidirectional marks, embeddings, overrides and isolates, the line and paragraph separators.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
# What json.dumps leaves raw (it escapes C0 in strings; none of these can appear outside one).
_JSON_UNESCAPED = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def printable(text: str) -> str:
    r"""``text`` with every control and text-reordering character escaped, line breaks too: one cell of output.

    >>> print(printable("run\x1b[2J\rname\u202egnp.exe\nnext"))
    run\x1b[2J\rname\u202egnp.exe\nnext
    >>> printable("train/loss ✓ 学習")
    'train/loss ✓ 学習'
    """
    return _UNPRINTABLE.sub(_escape, text)


def echo(*lines: str, file: Any = None) -> None:
    r"""Prints each of ``lines`` on a line of its own, escaped as ``printable`` escapes a cell.

    The one way the command line prints text, so no name, key or message
    from a store reaches the terminal raw, nor starts a line of its own.
    ``file`` defaults to standard output.

    >>> echo("no runs in /tmp/\x1b]0;owned\x07runs.db", "run a\nforged line")
    no runs in /tmp/\x1b]0;owned\x07runs.db
    run a\nforged line
    """
    print("\n".join(map(printable, lines)), file=file if file is not None else sys.stdout)


def format_value(value: Any) -> str:
    """A short text for a metric, config or summary value: numbers as ``{:.6g}``, arrays described.

    >>> format_value(0.123456789), format_value(12345678), format_value(float("nan")), format_value("a\\nb")
    ('0.123457', '12345678', 'nan', 'a ...')
    >>> format_value(Histogram.from_array([1.0, 2.0, 3.0], num_bins=2))
    'histogram of 3 values in [1, 3], mean 2 (2 buckets)'
    >>> format_value([64, 64])
    '[64, 64]'
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, str):
        return _shorten(value)
    if isinstance(value, Histogram):
        return _describe_histogram(value)
    if isinstance(value, Image):
        return _describe_image(value)
    if isinstance(value, dict) and set(value) == HISTOGRAM_FIELDS:
        return _describe_histogram(from_summary(value))
    return _shorten(json.dumps(to_json(value), ensure_ascii=False, allow_nan=False))


def _describe_histogram(histogram: Histogram) -> str:
    buckets = np.size(histogram.bucket_counts)
    if not histogram.num:
        return f"histogram of no finite values ({buckets} buckets)"
    return (
        f"histogram of {int(histogram.num)} values in [{float(histogram.min):.6g}, {float(histogram.max):.6g}], "
        f"mean {float(histogram.mean):.6g} ({buckets} buckets)"
    )


def _describe_image(image: Image) -> str:
    count, height, width, channels = image.to_uint8().shape
    text = f"{count} images" if count > 1 else "image"
    text += f" {height}x{width}x{channels}"
    return text + (f" {image.caption!r}" if image.caption else "")


def _shorten(text: str, width: int = 60) -> str:
    first_line, *more = text.splitlines() or [""]
    if len(first_line) > width:
        return first_line[: width - 4] + " ..."
    return first_line + (" ..." if more else "")


def format_duration(seconds: float) -> str:
    """A duration as people read it.

    >>> format_duration(3.24), format_duration(42), format_duration(65), format_duration(7384), format_duration(200000)
    ('3.2s', '42s', '1m 05s', '2h 03m', '2d 07h')
    """
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Collection[int] = (), header: bool = True
) -> str:
    """Rows of text as aligned columns, two spaces apart; the columns in ``right`` are right-aligned (numbers).

    >>> print(format_table(["key", "value"], [["loss", "0.5"], ["accuracy", "0.75"]], right={1}))
    key       value
    loss        0.5
    accuracy   0.75
    """
    lines = [[printable(cell) for cell in line] for line in ([headers, *rows] if header else rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def indent(text: str) -> str:
    """``text`` with each non-empty line indented by two spaces: a section's body under its title."""
    return "\n".join("  " + line if line else line for line in text.splitlines())


def format_time(timestamp: float | None) -> str:
    """A time in seconds since the epoch as local ``YYYY-MM-DD HH:MM:SS``; ``-`` for none."""
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def format_optional(number: int | None) -> str:
    """A number that may be missing (a run's last step, say); ``-`` for none."""
    return "-" if number is None else str(number)


# ---- JSON ----------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """``value`` as data ``json.dumps(..., allow_nan=False)`` accepts.

    NaN and infinities become ``None`` (``null``, as JavaScript's
    ``JSON.stringify`` writes them), NumPy values Python ones, histograms
    and images a short description of themselves.

    >>> to_json({"loss": float("nan"), "steps": np.int64(3), "curve": np.array([1.0, np.inf])})
    {'loss': None, 'steps': 3, 'curve': [1.0, None]}
    >>> to_json(Image(np.zeros((2, 4, 3), np.uint8), caption="blank"))
    {'type': 'image', 'count': 1, 'height': 2, 'width': 4, 'channels': 3, 'caption': 'blank'}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.generic, np.ndarray)):
        return to_json(value.tolist())
    if isinstance(value, Histogram):
        return _histogram_json(value)
    if isinstance(value, Image):
        count, height, width, channels = value.to_uint8().shape
        return {
            "type": "image",
            "count": count,
            "height": height,
            "width": width,
            "channels": channels,
            "caption": value.caption,
        }
    if isinstance(value, Mapping):
        if set(value) == HISTOGRAM_FIELDS:
            return _histogram_json(from_summary(dict(value)))
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


def _histogram_json(histogram: Histogram) -> dict[str, Any]:
    return to_json(
        {
            "type": "histogram",
            "num": int(histogram.num),
            "min": float(histogram.min),
            "max": float(histogram.max),
            "mean": float(histogram.mean),
            "std": float(histogram.std),
            "buckets": int(np.size(histogram.bucket_counts)),
        }
    )


def print_json(value: Any) -> None:
    r"""Prints ``value`` as strict, indented JSON (see ``to_json``): the ``--json`` output of every command.

    ``json.dumps`` escapes C0 controls; the other characters a terminal acts
    on (DEL, C1, bidirectional overrides) are escaped here as ``\uXXXX``,
    which JSON reads back as the same character: outside strings JSON has
    none of them.

    >>> print_json({"name": "a\x1b[31m\x9b\u202eb"})
    {
      "name": "a\u001b[31m\u009b\u202eb"
    }
    """
    text = json.dumps(to_json(value), indent=2, ensure_ascii=False, allow_nan=False)
    print(_JSON_UNESCAPED.sub(lambda match: f"\\u{ord(match.group()):04x}", text))


def run_identity(run: StoredRun) -> dict[str, Any]:
    """What ``--json`` output says of a run wherever it lists one: id, name, project, status, steps and times."""
    return {
        "id": run.id,
        "name": run.name,
        "project": run.project,
        "status": run.status,
        "last_step": run.last_step,
        "start_time": run.start_time,
        "end_time": run.end_time,
        "duration": run.duration,
    }


__all__ = [
    "echo",
    "format_duration",
    "format_optional",
    "format_table",
    "format_time",
    "format_value",
    "indent",
    "print_json",
    "printable",
    "run_identity",
    "to_json",
]
