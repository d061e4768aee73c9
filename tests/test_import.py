"""`import jaxtrack` stays light, and a missing backend package names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_import_does_not_pull_heavy_backends():
    result = _run(
        "import sys, jaxtrack\n"
        "print(sorted(m for m in ('wandb', 'tensorboard', 'orbax', 'matplotlib', 'tensorflow', 'torch', 'PIL', 'tqdm', 'clu', 'optax', 'flax') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_import_and_the_core_work_without_any_optional_package():
    """Only jax, numpy and PyYAML are dependencies: the local store and the callbacks need nothing else."""
    blocked = ("optax", "flax", "tqdm", "orbax", "clu", "wandb", "tensorboard", "matplotlib")
    result = _run(
        "import sys, tempfile, os\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import jax.numpy as jnp, jaxtrack as jt\n"
        "from jaxtrack.callbacks import LearningRateMonitor, ReportMetrics\n"
        "@jt.jit\n"
        "def step(x):\n"
        "    jt.jit_log({'x': x})\n"
        "    return x + 1\n"
        "os.environ['JAXTRACK_STORE'] = store = os.path.join(tempfile.mkdtemp(), 'runs.db')\n"
        "LearningRateMonitor(every_steps=2)  # made without optax; it looks for optax's states when it runs\n"
        "state = jt.train(lambda x, _: step(x), jnp.float32(0), iter(range(4)), 4, callbacks=[ReportMetrics(step, every_steps=2)])\n"
        "with jt.RunStore(store) as runs:\n"
        "    print(int(state), runs.history(runs.run('latest').id, keys=['x']))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "4 [{'step': 2, 'x': 0.5}, {'step': 4, 'x': 2.5}]"


@pytest.mark.parametrize(
    ("module", "make", "extra"),
    [
        ("wandb", "jt.WandbTracker(mode='offline')", "jaxtrack[wandb]"),
        ("tensorboard", "jt.TensorboardTracker(tempfile.mkdtemp())", "jaxtrack[tensorboard]"),
        (
            "tensorboard",
            "jt.init_tracker({'type': 'tensorboard', 'logdir': tempfile.mkdtemp()})",
            "jaxtrack[tensorboard]",
        ),
        ("tqdm", "jt.callbacks.ReportProgress(10)", "jaxtrack[progress]"),
        ("orbax", "jt.callbacks.Checkpoint(tempfile.mkdtemp(), every_steps=1).all_steps()", "jaxtrack[checkpoint]"),
    ],
)
def test_missing_backend_package_names_the_extra(module, make, extra):
    script = f"""
import sys, tempfile
sys.modules[{module!r}] = None  # as if the package were not installed
import jaxtrack as jt
try:
    {make}
except jt.MissingExtraError as error:
    assert isinstance(error, ImportError)
    print(error)
"""
    result = _run(script)
    assert result.returncode == 0, result.stderr
    assert f"pip install '{extra}'" in result.stdout
