# %% [markdown]
# # Several backends at once: TensorBoard, W&B (offline) and the local store
#
# One training run, recorded by three backends at the same time, chosen from the
# YAML config that Levanter's tracker page shows (`trainer: tracker:` with a list
# of backends). You will learn how to:
#
# - build several trackers from YAML with `jt.init_tracker`, all sharing **one run id**;
# - reach a backend by name with `jt.get_tracker` (the live W&B run, TensorBoard's directory);
# - log the configuration (credentials redacted), metrics, a histogram, an image and a summary;
# - read each backend back: TensorBoard's `EventAccumulator`, the local store's `RunStore`,
#   and the offline W&B run directory, which `wandb sync` uploads later.
#
# W&B runs **offline** here: no account, no network. Everything is written under
# `runs/` in the current directory.
#
# **Run it** from a clone of the repository, after `pip install -e '.[all,examples]'`
# (or `make demo`, which creates `.venv`): open this notebook in Jupyter, or run the
# same code as a plain script with `python examples/03_several_backends.py`.
# It takes well under a minute on a laptop CPU.

# %% [markdown]
# The imports: JAX and Optax for the model, scikit-learn only for its bundled digits,
# and jaxtrack. `wandb` and `tensorboard` are imported by jaxtrack itself, when a
# backend that needs them starts.

# %%
import dataclasses
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

import jaxtrack as jt
from jaxtrack.callbacks import ReportMetrics
from jaxtrack.store import RunStore

# %% [markdown]
# ## The trackers, from the seed's YAML
#
# This is the YAML of Levanter's "Multiple Trackers" section, as written there, with
# three changes: W&B gets `mode: offline` (so it needs no account) and `dir: runs`
# (so its files land next to the others), TensorBoard writes under `runs/`, and a
# third backend, `type: local`, keeps the run in jaxtrack's SQLite run store, which the
# `jaxtrack` command line reads. A whole training config works too: jaxtrack finds
# the `trainer: tracker:` section in it.

# %%
TRACKERS_YAML = """
trainer:
  tracker:
    - type: wandb
      project: jaxtrack-examples
      mode: offline
      dir: runs
    - type: tensorboard
      logdir: runs/tensorboard
    - type: local
      path: runs/jaxtrack.db
      project: jaxtrack-examples
"""

tracker = jt.init_tracker(TRACKERS_YAML)
print(tracker)

# %% [markdown]
# A list of backends gives a `CompositeTracker`: every `jt.log` reaches all three, at the
# same step. `init_tracker` made up **one run id** and gave it to every backend, so the
# W&B run, the TensorBoard directory (`runs/tensorboard/<run id>`) and the local store's
# run are easy to match up.
# `jt.get_tracker(name)` finds a backend inside the composite; through it you reach what
# is specific to that backend, such as the live `wandb` run object.

# %%
wandb_run = jt.get_tracker("wandb").run
tensorboard_dir = jt.get_tracker("tensorboard").logdir
local = jt.get_tracker("local")
run_id = local.run_id

print(f"run id:             {run_id}")
print(f"W&B run id:         {wandb_run.id} (offline: {wandb_run.offline})")
print(f"W&B run files:      {os.path.relpath(wandb_run.dir)}")
print(f"TensorBoard logdir: {os.path.relpath(tensorboard_dir)}")
print(f"local store:        {os.path.relpath(local.path)}")

# %% [markdown]
# ## Configuration and hyperparameters
#
# `jt.log_configuration` takes a dataclass (or an `ml_collections.ConfigDict`, or a dict)
# and gives every backend its values as hyperparameters, plus the whole config as a YAML
# artifact. Configs sometimes carry a credential, like the W&B API key below: any key that
# names one (`api_key`, `password`, `hf_token`, ...) has its value replaced by
# `"[redacted]"` **before** any backend sees it.


# %%
@dataclasses.dataclass
class Config:
    steps: int = 200
    batch_size: int = 64
    hidden: int = 64
    learning_rate: float = 3e-3
    log_every: int = 20
    seed: int = 0
    wandb_api_key: str = "not-a-real-key-0123456789"  # as a config read from a file might carry


config = Config()
jt.log_configuration(config)

# %% [markdown]
# What W&B received, read from the live run's config: the key is there, its value is not.
# A `jt.log_*` call returns before the backends have written it (each writes on a thread of
# its own), so `jt.flush()` first waits until they have.

# %%
jt.flush()
for key, value in dict(wandb_run.config).items():
    print(f"{key:>14}: {value}")

# %% [markdown]
# ## A short training
#
# The model is deliberately small (a one-hidden-layer MLP in plain JAX and Optax): the
# topic here is the backends. The step is a `jt.jit` function that collects its metrics
# in the graph with `jt.jit_log`; `ReportMetrics` hands the interval's means to the
# trackers every `log_every` steps, through the background reporter, so the loop never
# waits for a backend (see `01_quickstart.ipynb` for the details).

# %%
digits = load_digits()
images = (digits.data / 16.0).astype(np.float32)  # 8x8 pixels, flattened to 64 features in [0, 1]
labels = digits.target.astype(np.int32)
order = np.random.default_rng(config.seed).permutation(len(images))
split = int(0.8 * len(images))
x_train, y_train = images[order[:split]], labels[order[:split]]
x_test, y_test = images[order[split:]], labels[order[split:]]


def init_params(key, hidden):
    k1, k2 = jax.random.split(key)
    return {
        "hidden": {"w": jax.random.normal(k1, (64, hidden)) / 8.0, "b": jnp.zeros(hidden)},
        "out": {"w": jax.random.normal(k2, (hidden, 10)) / np.sqrt(hidden), "b": jnp.zeros(10)},
    }


def predict(params, x):
    h = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return h @ params["out"]["w"] + params["out"]["b"]


optimizer = optax.adam(config.learning_rate)


@jt.jit
def train_step(params, opt_state, x, y):
    def loss_fn(params):
        logits = predict(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    jt.jit_log({"loss": loss, "accuracy": (logits.argmax(-1) == y).mean()})
    return optax.apply_updates(params, updates), opt_state


# %%
params = init_params(jax.random.key(config.seed), config.hidden)
opt_state = optimizer.init(params)
report = ReportMetrics(train_step, every_steps=config.log_every, prefix="train/", timing=False)
rng = np.random.default_rng(config.seed)

for step in range(1, config.steps + 1):
    batch = rng.choice(len(x_train), size=config.batch_size, replace=False)
    params, opt_state = train_step(params, opt_state, x_train[batch], y_train[batch])
    report(step)  # every log_every steps: the interval's metrics go to all three backends

# %% [markdown]
# ## More than scalars: a histogram, an image and the summary
#
# An array with one or more dimensions is logged as a histogram of its elements (here the
# hidden layer's weights), and `jt.Image` marks pixels as pictures (`NHWC`: eight test
# digits). Each backend stores them its own way: TensorBoard's Histograms and Images
# dashboards, `wandb.Histogram` and `wandb.Image`, tables in the local store. The summary
# holds values that describe the whole run.

# %%
test_accuracy = float((predict(params, x_test).argmax(-1) == y_test).mean())
jt.log(
    {
        "eval/accuracy": test_accuracy,
        "weights/hidden": params["hidden"]["w"],
        "samples": jt.Image(x_test[:8].reshape(8, 8, 8, 1), caption="test digits"),
    },
    step=config.steps,
)
jt.log_summary({"eval/final_accuracy": test_accuracy})
print(f"test accuracy after {config.steps} steps: {test_accuracy:.3f}")

# %% [markdown]
# `jt.finish()` waits until every backend has written everything, then ends the run: the
# local store marks it `finished`, TensorBoard closes its event file, and W&B finishes the
# offline run (and says how to sync it). The `with tracker:` form does the same on exit.

# %%
wandb_sync_dir = os.path.relpath(wandb_run.settings.sync_dir)  # the offline run's directory
jt.finish()

# %% [markdown]
# ## Reading each backend back
#
# ### TensorBoard
#
# TensorBoard's own loader, `EventAccumulator`, reads the event files as the TensorBoard
# server does. Scalars, histograms, images and text are all "tensors" to it; the
# `_hparams_/...` tags are the HParams dashboard's.

# %%
events = EventAccumulator(tensorboard_dir, size_guidance={"tensors": 0})  # 0: keep every event
events.Reload()
print("tags:", ", ".join(sorted(events.Tags()["tensors"])))


def tensorboard_series(tag):
    return {e.step: tensor_util.make_ndarray(e.tensor_proto) for e in events.Tensors(tag)}


loss = tensorboard_series("train/loss")
accuracy = tensorboard_series("train/accuracy")
print(f"\n{'step':>5} {'train/loss':>11} {'train/accuracy':>15}")
for step in sorted(loss):
    print(f"{step:>5} {loss[step].item():>11.4f} {accuracy[step].item():>15.4f}")

(histogram,) = tensorboard_series("weights/hidden").values()
(samples,) = tensorboard_series("samples").values()
print(f"\nweights/hidden: a histogram of {histogram.shape[0]} buckets (left edge, right edge, count)")
print(f"samples: {len(samples) - 2} PNG images of {samples[0].decode()}x{samples[1].decode()} pixels")

# %% [markdown]
# ### The local run store
#
# `RunStore` (from `jaxtrack.store`) reads the SQLite file: the run's status, its configuration (with the
# credential redacted), the summary, and the history as rows, one per step.

# %%
with RunStore("runs/jaxtrack.db") as store:
    run = store.run(run_id)
    history = store.history(run_id, keys=["train/loss", "train/accuracy", "eval/accuracy"])
    weights = store.history(run_id, keys=["weights/hidden"])[0]["weights/hidden"]  # a jt.Histogram

print(f"run {run.id}: {run.status}, project {run.project}, last step {run.last_step}")
print("config: ", run.config)
print("summary:", run.summary)
print(f"\n{'step':>5} {'train/loss':>11} {'train/accuracy':>15} {'eval/accuracy':>14}")
for row in history:
    cells = [f"{row[k]:.4f}" if k in row else "" for k in ("train/loss", "train/accuracy", "eval/accuracy")]
    print(f"{row['step']:>5} {cells[0]:>11} {cells[1]:>15} {cells[2]:>14}")
print(f"\nweights/hidden: {weights.num} values, mean {weights.mean:.4f}, std {weights.std:.4f}")

# %% [markdown]
# ### The offline W&B run
#
# An offline run is a directory: the `run-<id>.wandb` file holds the history, config and
# summary, and `files/` the media (one PNG per logged image) and W&B's own files. Nothing
# left the machine.

# %%
run_files = sorted(path for path in pathlib.Path(wandb_sync_dir).rglob("*") if path.is_file())
width = max(len(str(path.relative_to(wandb_sync_dir))) for path in run_files)
for path in run_files:
    print(f"{path.relative_to(wandb_sync_dir)!s:<{width}} {path.stat().st_size:>7,} bytes")

# %% [markdown]
# ## Looking at the run, and uploading it later
#
# TensorBoard shows every run under its `--logdir`. The offline W&B run goes to your W&B
# account with `wandb sync` once you are logged in (`wandb login`), whenever you like: the
# run keeps its id, history, config and summary.
#
# A run recorded **only** in the local store (no `type: wandb` in its config) can still
# become a W&B run: `jaxtrack export RUN --to wandb` replays its hyperparameters, history
# and summary into a new W&B run, online or `--mode offline`.

# %%
print("Look at the run:")
print(f"  tensorboard --logdir {os.path.relpath(os.path.dirname(tensorboard_dir))}")
print(f"  jaxtrack show {run_id} --store runs/jaxtrack.db")
print("Upload the offline W&B run (not run here: it needs an account):")
print(f"  wandb sync {wandb_sync_dir}")
print("Or turn the local store's run into a W&B run:")
print(f"  jaxtrack export {run_id} --store runs/jaxtrack.db --to wandb")

# %% [markdown]
# ## Where next
#
# - [01_quickstart.ipynb](01_quickstart.ipynb): `jt.jit`, `jit_log` and reporting, step by step.
# - [02_porting_from_clu.ipynb](02_porting_from_clu.ipynb): a Flax example written for CLU, ported.
# - [04_data_parallel.ipynb](04_data_parallel.ipynb): metrics of a step sharded over several devices.
# - [05_your_own_tracker.ipynb](05_your_own_tracker.ipynb): writing a backend and registering its `type:`.
# - Docs: [concepts](../docs/concepts.md), [trackers](../docs/trackers.md),
#   [configuration](../docs/configuration.md), [callbacks](../docs/callbacks.md),
#   [multi-host](../docs/multi-host.md), [the command line](../docs/cli.md),
#   [migrating from CLU](../docs/migrating-from-clu.md),
#   [migrating from Levanter](../docs/migrating-from-levanter.md).
