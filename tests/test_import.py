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
        "print(sorted(m for m in ('wandb', 'tensorboard', 'orbax', 'matplotlib', 'tensorflow', 'torch', 'PIL') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


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
