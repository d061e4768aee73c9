"""CLU's metric writers loaded without TensorFlow (``jaxtrack.clu_writers``), in fresh processes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from jaxtrack.clu_writers import load_metric_writers

NO_TENSORFLOW = importlib.util.find_spec("tensorflow") is None

metric_writers = load_metric_writers()

# ---- loading CLU without TensorFlow ---------------------------------------------------------------


def test_jaxtrack_import_does_not_import_clu():
    code = "import sys, jaxtrack, jaxtrack.trackers.clu, jaxtrack.metric_writer, jaxtrack.clu_writers; assert 'clu' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not NO_TENSORFLOW, reason="checks the TensorFlow-free fallback")
def test_clu_writers_load_without_tensorflow():
    code = """if True:
        import sys
        try:
            import clu.metric_writers
        except ModuleNotFoundError as error:
            assert error.name == "tensorflow", error
        else:
            raise AssertionError("clu.metric_writers imported without TensorFlow")
        from jaxtrack.clu_writers import load_metric_writers
        package = load_metric_writers()
        assert load_metric_writers() is package is sys.modules["clu.metric_writers"]
        from clu.metric_writers import AsyncMultiWriter, LoggingWriter, MetricWriter, MultiWriter
        from clu.metric_writers.async_writer import AsyncMultiWriter as same
        assert same is AsyncMultiWriter and issubclass(LoggingWriter, MetricWriter)
        import clu.periodic_actions
        assert clu.periodic_actions.MetricWriter is MetricWriter
        try:
            package.SummaryWriter
        except AttributeError as error:
            assert "tensorflow" in str(error) and "SummaryWriter" in str(error), error
        else:
            raise AssertionError("SummaryWriter without TensorFlow")
        assert "tensorflow" not in sys.modules
    """
    subprocess.run([sys.executable, "-c", code], check=True)
