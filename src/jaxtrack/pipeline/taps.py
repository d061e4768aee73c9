"""What guards and progress bars read: every reported value, as the backends received it, in order.

The dispatcher appends each ``log`` call's values here as it hands them to
the backends (host values, already fetched), so callbacks such as
``TerminateOnNaN`` act on every reported value without another device sync.
Numbers are kept as they are; of an array only how many of its elements are
not finite ([`NonFinite`][jaxtrack.pipeline.taps.NonFinite]).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any

from jaxtrack.values.normalize import NormalizedValues


@dataclasses.dataclass(frozen=True)
class NonFinite:
    """An array value with ``count`` NaN or infinite elements (as ``ReportedValues`` records it).

    Guards read it instead of the array: the array itself stays with the
    backends, and its histogram leaves the non-finite elements out.

    Examples:
        >>> import numpy as np
        >>> from jaxtrack.values import NormalizedValues
        >>> reported = ReportedValues()
        >>> reader = reported.reader()
        >>> reported.update(NormalizedValues({"w": np.array([1.0, np.nan, np.inf])}), step=2)
        >>> reader.read()
        [('w', 2, NonFinite(count=2))]
    """

    count: int


class ReportedValues:
    """Every metric value reported, in order; readers keep the ``version`` they have read up to.

    The log holds the last ``capacity`` values.

    Examples:
        >>> from jaxtrack.values import NormalizedValues
        >>> reported = ReportedValues()
        >>> reader = reported.reader()
        >>> reported.update(NormalizedValues({"loss": 0.5, "note": "text is skipped"}), step=3)
        >>> reader.read()
        [('loss', 3, 0.5)]
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._log: collections.deque[tuple[int, str, int | None, Any]] = collections.deque(maxlen=capacity)
        self.version = 0

    def update(self, values: NormalizedValues, step: int | None) -> None:
        """Appends the numbers of one ``log`` call at ``step`` (and a ``NonFinite`` per array with NaN/Inf).

        Text, histograms, images and finite arrays are not recorded: guards
        and progress bars read numbers only. The dispatcher calls it as it
        hands the values to the backends.
        """
        entries: list[tuple[str, Any]] = values.numbers()
        if values.nonfinite:
            entries += [(key, NonFinite(count)) for key, count in values.nonfinite.items()]
        if not entries:
            return
        with self._lock:
            first = self.version + 1
            self._log.extend((first + i, key, step, value) for i, (key, value) in enumerate(entries))
            self.version += len(entries)

    def since(self, version: int) -> tuple[list[tuple[str, int | None, Any]], int]:
        """``(key, step, value)`` of every value reported after ``version``, in order, and the version now.

        Both are taken under one lock, so a reader that keeps the returned
        version sees each value exactly once. The walk goes back from the
        newest entry, so a read costs the new values, not the whole log.
        """
        fresh = []
        with self._lock:
            for v, key, step, value in reversed(self._log):
                if v <= version:
                    break
                fresh.append((key, step, value))
            now = self.version
        fresh.reverse()
        return fresh, now

    def reader(self) -> ReportedValuesReader:
        """A cursor that returns, at each read, the values reported since its last read."""
        return ReportedValuesReader(self)


class ReportedValuesReader:
    """Reads a ``ReportedValues`` log from where it was made, each value once.

    Values reported before the reader was made are not its business; made by
    [`ReportedValues.reader`][jaxtrack.pipeline.taps.ReportedValues.reader].

    Examples:
        >>> from jaxtrack.values import NormalizedValues
        >>> reported = ReportedValues()
        >>> reported.update(NormalizedValues({"loss": 1.0}), step=0)
        >>> reader = reported.reader()  # starts after step 0's value
        >>> reported.update(NormalizedValues({"loss": 0.5}), step=1)
        >>> reader.read(), reader.read()
        ([('loss', 1, 0.5)], [])
    """

    def __init__(self, values: ReportedValues) -> None:
        self._values = values
        self._seen = values.version  # values reported before the reader existed are not its business

    def read(self) -> list[tuple[str, int | None, Any]]:
        """``(key, step, value)`` of every value reported since the last read, in order."""
        if self._values.version == self._seen:  # the common case, without the lock
            return []
        fresh, self._seen = self._values.since(self._seen)
        return fresh


__all__ = ["NonFinite", "ReportedValues", "ReportedValuesReader"]
