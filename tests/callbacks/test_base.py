"""Callback, CallbackList, PeriodicCallback, LambdaCallback."""

from __future__ import annotations

import pytest

from jaxtrack.callbacks import Callback, CallbackList, LambdaCallback, PeriodicCallback, StopTraining


def test_callbacks_drop_into_a_clu_style_loop_with_context():
    seen = []
    hooks = [
        PeriodicCallback(lambda step, **ctx: seen.append(("periodic", step, ctx["loss"])), every_steps=2),
        LambdaCallback(on_step=lambda step, **ctx: seen.append(("lambda", step, ctx["loss"]))),
        lambda step, **ctx: seen.append(("function", step, ctx["loss"])),
    ]
    callbacks = CallbackList(hooks)
    for step in range(1, 4):
        callbacks(step, loss=step * 0.5)
    assert seen == [
        ("lambda", 1, 0.5),
        ("function", 1, 0.5),
        ("periodic", 2, 1.0),
        ("lambda", 2, 1.0),
        ("function", 2, 1.0),
        ("lambda", 3, 1.5),
        ("function", 3, 1.5),
    ]


def test_begin_and_end_hooks_are_called_in_order():
    calls = []

    class Recorder(Callback):
        def __init__(self, name):
            self.name = name

        def on_begin(self, step, **ctx):
            calls.append((self.name, "begin", step))

        def on_end(self, step, **ctx):
            calls.append((self.name, "end", step))

    hooks = CallbackList(
        [Recorder("a"), Recorder("b"), LambdaCallback(on_end=lambda step, **_: calls.append(("l", "end", step)))]
    )
    hooks.on_begin(0)
    hooks.on_end(9)
    assert calls == [("a", "begin", 0), ("b", "begin", 0), ("a", "end", 9), ("b", "end", 9), ("l", "end", 9)]


def test_a_failing_callback_is_named_and_keeps_its_exception_type():
    def broken(step, **_):
        raise ZeroDivisionError("oops")

    hooks = CallbackList([LambdaCallback(on_step=lambda step, **_: None), broken])
    with pytest.raises(ZeroDivisionError) as info:
        hooks(7)
    assert any("broken" in note and "step 7" in note for note in info.value.__notes__)

    def stop(step, **_):
        raise StopTraining("enough", step=step)

    with pytest.raises(StopTraining) as stopped:
        CallbackList([stop])(3)
    assert (stopped.value.reason, stopped.value.step) == ("enough", 3)


def test_periodic_callback_without_fn_must_override_run():
    with pytest.raises(NotImplementedError, match="run"):
        PeriodicCallback(every_steps=1)(1)


def test_callback_list_rejects_non_callables():
    with pytest.raises(TypeError, match="Callback or a function"):
        CallbackList([42])
