# %% [markdown]
# # Quickstart: track a Flax NNX training run with jaxtrack
#
# You will train a small classifier on scikit-learn's digits (bundled, no download) and learn how to:
#
# - collect metrics **inside** the jitted train step with `jt.jit` + `jt.jit_log`, at no cost to the loop;
# - drive training with `jt.train` and CLU-style callbacks: metrics, evaluation, a progress bar, Orbax checkpoints, a NaN guard;
# - record the run in the default tracker, the local run store `runs/jaxtrack.db` (no account, no server),
#   with its hyperparameters and a summary;
# - resume from the latest checkpoint and train longer, in the same run;
# - read the run back with `jaxtrack.store.RunStore`, plot it, and look at it with the `jaxtrack` command line.
#
# **Run it.** From a clone of the repository: `pip install -e '.[all,examples]'`, then open this notebook in Jupyter,
# or run its plain-script twin `python examples/01_quickstart.py` (that is what `make demo` does, in a fresh `.venv`).
# Everything it writes goes under `runs/` in the working directory. It takes well under a minute on a laptop CPU.

# %% [markdown]
# ## Imports
#
# `import jaxtrack as jt` is the whole API; the callbacks live in `jaxtrack.callbacks`, and `RunStore`, which reads
# the local run store back, in `jaxtrack.store`.
# Only what you use of the optional parts gets imported (Orbax for checkpoints, tqdm for the progress bar).

# %%
import dataclasses
import os
import shlex
import shutil
import sys

import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jaxtrack as jt
from jaxtrack.callbacks import Checkpoint, Evaluate, ReportMetrics, ReportProgress, TerminateOnNaN
from jaxtrack.store import RunStore

# %% [markdown]
# ## The data
#
# 1,797 images of 8x8 pixels, flattened to 64 values in [0, 1]. A held-out test set tells us whether the model
# learns digits or memorises the training images.

# %%
digits = load_digits()
images = (digits.images / 16.0).reshape(len(digits.images), -1).astype(np.float32)
labels = digits.target.astype(np.int32)
x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.2, random_state=0, stratify=labels)
print(f"{len(x_train)} training and {len(x_test)} test images of {x_train.shape[1]} pixels")


# %% [markdown]
# ## The configuration
#
# A dataclass keeps every knob in one place, and `jt.log_configuration` will record it with the run,
# so you can always tell what produced a curve.


# %%
@dataclasses.dataclass
class Config:
    num_steps: int = 200
    batch_size: int = 64
    width: int = 128
    learning_rate: float = 3e-3
    report_every: int = 25  # hand the train step's metrics to the trackers every 25 steps
    eval_every: int = 50
    checkpoint_every: int = 100
    seed: int = 0


config = Config()


# %% [markdown]
# ## The model
#
# A two-layer MLP in Flax NNX, and an Optax optimizer. `make_state` builds a fresh, untrained pair:
# we will use it again later to show that resuming really restores the weights from the checkpoint.


# %%
class MLP(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs) -> None:
        self.hidden = nnx.Linear(64, width, rngs=rngs)
        self.out = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def make_state(config: Config) -> tuple[MLP, nnx.Optimizer]:
    model = MLP(config.width, rngs=nnx.Rngs(config.seed))
    optimizer = nnx.Optimizer(model, optax.adam(config.learning_rate), wrt=nnx.Param)
    return model, optimizer


# %% [markdown]
# ## The train step, with metrics collected in the graph
#
# `jt.jit(transform=nnx.jit)` compiles the step as `nnx.jit` would, and threads an accumulator through it.
# Each `jt.jit_log` folds its values into that accumulator **on the device**: nothing is copied to the host at a
# step, and the loop never waits. Every `report_every` steps the interval's values are handed to a background
# reporter, which fetches them and writes them to the trackers off the training thread.
#
# `reduce=` says how the steps of an interval combine: the mean (the default) for loss and accuracy, the largest
# gradient norm, and mean/std/min/max over every logit of every step.


# %%
@jt.jit(transform=nnx.jit)
def train_step(model: MLP, optimizer: nnx.Optimizer, x, y) -> None:
    def loss_fn(model):
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)  # NNX updates the model and the optimizer in place
    jt.jit_log({"loss": loss, "accuracy": (logits.argmax(-1) == y).mean()})
    jt.jit_log({"grad_norm": optax.tree.norm(grads)}, reduce="max")
    jt.jit_log({"logits": logits}, reduce="stats")


@nnx.jit
def evaluate(model: MLP, x, y) -> dict:
    logits = model(x)
    return {
        "loss": optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
        "accuracy": (logits.argmax(-1) == y).mean(),
    }


# %% [markdown]
# ## Gluing it to the loop
#
# `jt.train` runs `state = step_fn(state, batch)` for steps 1..N and calls the callbacks after each step with
# `state=` the current state. Here the state is the `(model, optimizer)` pair: NNX modules are pytrees, so the
# checkpoint callback can save and restore them as they are.


# %%
def batches(seed: int):
    rng = np.random.default_rng(seed)
    while True:
        picked = rng.choice(len(x_train), size=config.batch_size, replace=False)
        yield x_train[picked], y_train[picked]


def step_fn(state, batch):
    model, optimizer = state
    train_step(model, optimizer, *batch)
    return state


def eval_fn(step, state, **_):
    model, _ = state
    return evaluate(model, x_test, y_test)  # device arrays: the reporter fetches them, the loop goes on


# %% [markdown]
# ## Start the run
#
# `jt.init_tracker()` with no configuration starts the default tracker: the local run store `runs/jaxtrack.db`
# (or `$JAXTRACK_STORE`). `jt.train` would start that same tracker by itself if none were set — but it would also
# finish it when training ends. Starting it ourselves gives us the run id up front, and the run stays open
# until we call `jt.finish()`, so the hyperparameters before training and the summary after it belong to the
# same run. (A config such as `jt.init_tracker({"type": "local", "name": "quickstart"})` names the run;
# notebook 3 adds TensorBoard and W&B next to the local store.)

# %%
tracker = jt.init_tracker()
run_id = tracker.run_id
jt.log_configuration(config)  # hyperparameters, plus a config.yaml artifact kept with the run
print(f"Recording run {run_id} in {os.path.relpath(tracker.path)}")


# %% [markdown]
# ## The callbacks
#
# - `ReportMetrics` hands the train step's interval metrics to the trackers as `train/...`, with steps/s.
# - `Evaluate` runs `eval_fn` periodically (and at the end) and logs `eval/loss`, `eval/accuracy`.
# - `Checkpoint` saves the state with Orbax, asynchronously; `jt.train` restores the latest one when it starts.
#   Each run gets its own directory, so a rerun of this notebook starts fresh.
# - `ReportProgress` draws a progress bar (a widget in Jupyter, text in a terminal) from values already reported:
#   no device sync. It redraws at every report here; its default, once a second, suits longer runs than this one.
# - `TerminateOnNaN` stops training cleanly if a reported value turns NaN.
#
# A function builds them, because a second `jt.train` call (below) wants fresh ones.


# %%
def make_callbacks(num_steps: int) -> list:
    return [
        ReportMetrics(train_step, every_steps=config.report_every, prefix="train/"),
        Evaluate(eval_fn, every_steps=config.eval_every),
        Checkpoint(os.path.join("runs", "checkpoints", run_id), every_steps=config.checkpoint_every),
        ReportProgress(
            num_steps, every_steps=config.report_every, metrics=["train/loss", "train/accuracy", "eval/accuracy"]
        ),
        TerminateOnNaN(),
    ]


# %% [markdown]
# ## Train
#
# `jt.train` returns the final state.

# %%
model, optimizer = jt.train(
    step_fn, make_state(config), batches(config.seed), config.num_steps, callbacks=make_callbacks(config.num_steps)
)
print(f"step {int(optimizer.step[...])}: test accuracy {float(evaluate(model, x_test, y_test)['accuracy']):.3f}")

# %% [markdown]
# ## Train longer: resume from the checkpoint
#
# Ask for 300 steps, starting from a fresh, *untrained* model. `jt.train` finds the checkpoint of step 200,
# restores the model and optimizer from it, and goes on with step 201: the metrics continue the same curves
# in the same run (the tracker is still open). The new step count is recorded with the hyperparameters.
#
# After a crash or a preemption, the new process does the same, plus `jt.init_tracker(run_id=...)` with the old
# run id, which continues that run in the store rather than starting another.

# %%
more_steps = 300
jt.log_hyperparameters({"num_steps": more_steps})
model, optimizer = jt.train(
    step_fn, make_state(config), batches(config.seed + 1), more_steps, callbacks=make_callbacks(more_steps)
)
print(f"step {int(optimizer.step[...])}: resumed from step {config.num_steps}, not from scratch")

# %% [markdown]
# ## Summary, and the end of the run
#
# The summary holds values that describe the whole run (here the final test accuracy); `jaxtrack runs` and
# `jaxtrack show` display it. `jt.finish()` waits until everything logged has been written, then marks the run
# `finished`.

# %%
final = evaluate(model, x_test, y_test)
jt.log_summary({"eval/final_accuracy": final["accuracy"], "eval/final_loss": final["loss"]})
jt.finish()
print(f"final test accuracy {float(final['accuracy']):.3f}")

# %% [markdown]
# ## Read the run back
#
# The store is a plain SQLite file, and `RunStore` reads it: the runs, each one's config, summary and
# status, and its metrics by step. `"latest"` names the most recent run (an id, a unique prefix of one, or a
# run's name work too).

# %%
curve_keys = ["train/loss", "eval/loss", "train/accuracy", "eval/accuracy"]
with RunStore() as store:  # runs/jaxtrack.db, as the tracker wrote it
    all_runs = store.runs()
    run = store.run("latest")
    history = store.history(run.id, keys=curve_keys)
    curves = {key: store.scalars(run.id, key) for key in curve_keys}

print(f"{len(all_runs)} run(s) in the store; the latest is {run.id}")
print(f"status {run.status}, {run.last_step} steps in {run.sessions} session(s), {run.duration:.1f} s")
print("config: ", {key: run.config[key] for key in ("num_steps", "batch_size", "learning_rate")})
print("summary:", run.summary)

# %% [markdown]
# `history` has one row per step where any of the chosen keys has a value, like W&B's `scan_history`:
# train metrics every 25 steps, evaluations every 50.

# %%
print(f"{'step':>5}" + "".join(f"{key:>16}" for key in curve_keys))
for row in history:
    print(f"{row['step']:>5}" + "".join(f"{row[key]:>16.4f}" if key in row else f"{'':>16}" for key in curve_keys))

# %% [markdown]
# ## Plot it
#
# `store.scalars` gives `(steps, values)` NumPy arrays, ready for matplotlib. In Jupyter the figure appears below
# the cell; it is also saved to `runs/quickstart.png`, which is where the plain script leaves it.

# %%
fig, (ax_loss, ax_accuracy) = plt.subplots(1, 2, figsize=(10, 3.5))
for key, (steps, values) in curves.items():
    ax = ax_loss if key.endswith("loss") else ax_accuracy
    ax.plot(steps, values, marker="o" if key.startswith("eval") else None, label=key)
for ax, title in ((ax_loss, "cross-entropy loss"), (ax_accuracy, "accuracy")):
    ax.axvline(config.num_steps, color="grey", linestyle=":", label="resumed")
    ax.set(title=title, xlabel="step")
    ax.legend()
fig.tight_layout()
fig.savefig(os.path.join("runs", "quickstart.png"))


# %% [markdown]
# ## The same, from a terminal
#
# The `jaxtrack` command line reads the same store: `jaxtrack show` prints a run's config, summary and every
# metric's latest/min/max, `jaxtrack plot` draws metrics to a PNG, and `jaxtrack runs` lists the runs
# (a run can be named `latest` there too). This prints the commands for this run, runnable as they are, even
# from a virtual environment that is not activated.


# %%
def command(name: str) -> str:
    """``name`` if it is on the PATH, else its path next to this Python (a virtual environment not activated)."""
    if shutil.which(name):
        return name
    return shlex.quote(os.path.relpath(os.path.join(os.path.dirname(sys.executable), name)))


cli = command("jaxtrack")
print(f"Run {run_id} is in the local store {os.path.relpath(tracker.path)}. Look at it with:")
print(f"  {cli} show {run_id}")
print(f"  {cli} plot {run_id} 'train/*' 'eval/*' -o {run_id}.png")
print(f"  {cli} runs")
print(f"Its loss and accuracy curves are in {os.path.join('runs', 'quickstart.png')}")

# %% [markdown]
# ## Where next
#
# - [02_porting_from_clu.ipynb](02_porting_from_clu.ipynb): a Flax-examples loop written for CLU's writers and
#   periodic actions, ported step by step.
# - [03_several_backends.ipynb](03_several_backends.ipynb): TensorBoard, W&B (offline) and the local store in one run,
#   from Levanter's YAML.
# - [04_data_parallel.ipynb](04_data_parallel.ipynb): data-parallel training over several devices, with global metrics.
# - [05_your_own_tracker.ipynb](05_your_own_tracker.ipynb): a tracker of your own, registered and configured from YAML.
#
# The docs: [concepts](../docs/concepts.md), [trackers](../docs/trackers.md),
# [configuration](../docs/configuration.md), [callbacks](../docs/callbacks.md), [multi-host](../docs/multi-host.md),
# [the command line](../docs/cli.md), [migrating from CLU](../docs/migrating-from-clu.md) and
# [from Levanter](../docs/migrating-from-levanter.md).
