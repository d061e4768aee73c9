"""The step of a ``log`` call made without one, decided once per tracker, in the order calls were made."""

from __future__ import annotations

from typing import Any

from jaxtrack.values.checks import check_step


class StepCounter:
    """Gives each ``log`` call its step, following ``wandb.log``'s rule.

    An explicit step is used as is; ``step=None`` takes the step after the last
    one logged, or the same step again if that call passed ``commit=False``.
    jaxtrack keeps one per tracker a call is made to (a composite's decides
    for all its backends), so every backend receives a resolved step.

    Examples:
        >>> counter = StepCounter()
        >>> counter.resolve(None, None), counter.resolve(None, False), counter.resolve(None, None)
        (0, 1, 1)
        >>> counter.resolve(10, None), counter.resolve(None, None)
        (10, 11)
    """

    def __init__(self, last_step: int | None = None) -> None:
        self.last_step: int | None = last_step
        self._open = False  # the last step was logged with commit=False

    def resolve(self, step: Any, commit: bool | None) -> int:
        """The step of a ``log(..., step=step, commit=commit)`` call, remembered for the next call.

        Raises ``TypeError`` or ``ValueError`` for a ``step`` that is not a
        non-negative integer.
        """
        if step is None:
            if self.last_step is None:
                resolved = 0
            else:
                resolved = self.last_step if self._open else self.last_step + 1
        else:
            resolved = check_step(step)
        self.last_step = resolved
        self._open = commit is False
        return resolved


__all__ = ["StepCounter"]
