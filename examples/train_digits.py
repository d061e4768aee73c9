"""Train a small Flax NNX classifier on scikit-learn's bundled digits, tracked by jaxtrack.

Runs on a CPU in seconds, needs no download and no account:

    python examples/train_digits.py --steps 300 --logdir runs

The default trackers record the run: the local run store (``runs/jaxtrack.db``,
read by the ``jaxtrack`` command line) and TensorBoard
(``runs/tensorboard/<run id>``), with a progress bar on the terminal. The
script ends by printing the commands that show the run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxtrack as jt
from jaxtrack.callbacks import PeriodicCallback, ReportMetrics, ReportProgress, TerminateOnNaN
from jaxtrack.trackers.local import default_store_path


class MLP(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs) -> None:
        self.hidden = nnx.Linear(64, width, rngs=rngs)
        self.out = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(x)))


def load_data(seed: int) -> tuple[np.ndarray, ...]:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], digits.target[order].astype(np.int32)
    split = int(0.8 * len(images))
    return images[:split], labels[:split], images[split:], labels[split:]


@jt.jit(transform=nnx.jit)
def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> None:
    def loss_fn(model: MLP) -> tuple[jax.Array, jax.Array]:
        logits = model(x.reshape(x.shape[0], -1))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    # Folded into an accumulator on the device; read only when reported, off the training thread.
    jt.jit_log({"loss": loss, "accuracy": (logits.argmax(-1) == y).mean()})
    jt.jit_log({"grad_norm": optax.tree.norm(grads)}, reduce="max")
    jt.jit_log({"logits": logits}, reduce="stats")


@nnx.jit
def evaluate(model: MLP, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    logits = model(x.reshape(x.shape[0], -1))
    return {
        "loss": optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
        "accuracy": (logits.argmax(-1) == y).mean(),
    }


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--logdir", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x_train, y_train, x_test, y_test = load_data(args.seed)
    model = MLP(args.width, rngs=nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)

    store = os.path.join(args.logdir, "jaxtrack.db")
    tracker = jt.init_tracker(
        [
            {"type": "local", "path": store, "name": "digits-mlp", "project": "examples"},
            {"type": "tensorboard", "logdir": os.path.join(args.logdir, "tensorboard")},
        ]
    )
    run_id = jt.get_tracker("local").run_id  # type: ignore[attr-defined]
    with tracker:
        jt.log_configuration(vars(args))
        test = (jnp.asarray(x_test), jnp.asarray(y_test))

        def log_eval(step: int, **_: object) -> None:
            jt.log({"eval": evaluate(model, *test)}, step=step)  # queued: the reporter fetches it

        def batches() -> Iterator[tuple[jax.Array, jax.Array]]:
            rng = np.random.default_rng(args.seed)
            while True:
                picked = rng.choice(len(x_train), size=args.batch_size, replace=False)
                yield jnp.asarray(x_train[picked]), jnp.asarray(y_train[picked])

        def step_fn(state: None, batch: tuple[jax.Array, jax.Array]) -> None:
            train_step(model, optimizer, *batch)  # NNX updates the model and optimizer in place

        callbacks = [
            ReportMetrics(train_step, every_steps=args.log_every, prefix="train/"),
            PeriodicCallback(log_eval, every_steps=4 * args.log_every),
            ReportProgress(num_train_steps=args.steps, metrics=["train/loss", "train/accuracy", "eval/accuracy"]),
            TerminateOnNaN(),
        ]
        jt.train(step_fn, None, batches(), args.steps, callbacks=callbacks)

        final = evaluate(model, *test)
        jt.log_summary({"eval/final_accuracy": final["accuracy"]})
        jt.log(
            {"weights/hidden": model.hidden.kernel[...], "samples": jt.Image(x_test[:4, :, :, None])}, step=args.steps
        )
        tensorboard_dir = jt.get_tracker("tensorboard").logdir  # type: ignore[attr-defined]

    print(how_to_look(run_id, store, tensorboard_dir))
    return run_id


def how_to_look(run_id: str, store: str, tensorboard_dir: str) -> str:
    """Where the run is, and the commands that show it (runnable as printed, venv or not)."""
    cli, tensorboard = _command("jaxtrack"), _command("tensorboard")
    store_option = (
        "" if os.path.normpath(store) == os.path.normpath(default_store_path()) else f" --store {shlex.quote(store)}"
    )
    return "\n".join(
        [
            "",
            f"Run {run_id} is in the local store {store} and in {tensorboard_dir}. Look at it with:",
            f"  {cli} show {run_id}{store_option}",
            f"  {cli} plot {run_id} 'train/*' 'eval/*'{store_option} -o {run_id}.png",
            f"  {cli} runs{store_option}",
            f"  {tensorboard} --logdir {shlex.quote(os.path.dirname(tensorboard_dir))}",
        ]
    )


def _command(name: str) -> str:
    """``name`` if it is on the PATH, else its path next to this Python (a virtual environment not activated)."""
    if shutil.which(name):
        return name
    return shlex.quote(os.path.relpath(os.path.join(os.path.dirname(sys.executable), name)))


if __name__ == "__main__":
    main()
