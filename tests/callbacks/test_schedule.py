"""Schedules: CLU's every_steps / every_secs / on_steps, skipped steps, a controllable clock."""

from __future__ import annotations

import pytest

from jaxtrack.callbacks import Schedule


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _fired(schedule: Schedule, steps) -> list[int]:
    return [step for step in steps if schedule.due(step)]


def test_every_steps_fires_at_multiples():
    assert _fired(Schedule(every_steps=3), range(1, 11)) == [3, 6, 9]


def test_a_skipped_due_step_fires_at_the_first_step_past_it_once():
    # 10 and 20 are never seen: the action runs at 11 and 23, not twice for 23.
    assert _fired(Schedule(every_steps=10), [1, 5, 11, 12, 23, 29, 30, 31]) == [11, 23, 30]


def test_on_steps_fire_once_each_even_when_skipped():
    assert _fired(Schedule(on_steps=[2, 5, 6, 50]), [1, 2, 3, 7, 8, 60, 70]) == [2, 7, 60]


def test_every_secs_follows_the_clock():
    clock = FakeClock()
    schedule = Schedule(every_secs=5.0, clock=clock)
    fired = []
    for step, advance in enumerate([1.0, 1.0, 3.0, 1.0, 4.9, 0.2, 10.0], start=1):
        clock.now += advance
        if schedule.due(step):
            fired.append(step)
    # 5 s after the start at step 3 (t=105); 5.9 s later at step 5; not at 6 (0.2 s); then at 7.
    assert fired == [3, 5, 7]


def test_combined_conditions_fire_when_any_is_due_and_reset_together():
    clock = FakeClock()
    schedule = Schedule(every_steps=4, every_secs=10.0, on_steps=[1], clock=clock)
    fired = []
    for step in range(1, 10):
        clock.now += 3.0 if step != 6 else 20.0
        if schedule.due(step):
            fired.append(step)
    assert fired == [1, 4, 6, 8]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"every_steps": 0}, {"every_steps": 2.5}, {"every_steps": True}, {"every_secs": 0}, {"on_steps": [-1]}],
)
def test_bad_schedules_are_clear_errors(kwargs):
    with pytest.raises(ValueError, match=r"every_steps|every_secs|on_steps"):
        Schedule(**kwargs)
