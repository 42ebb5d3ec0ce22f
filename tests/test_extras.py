"""gapfill without its optional dependencies: the core runs, and a feature that needs an
extra says which one to install (``pip install 'gapfill[...]'``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gapfill.extras import EXTRAS

#: Runs with every optional dependency made unimportable.
BLOCK = textwrap.dedent(f"""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {sorted(EXTRAS)!r}:
                raise ImportError(f"blocked: {{name}}")
            return None
    sys.meta_path.insert(0, Block())
    import importlib.util
    _find = importlib.util.find_spec
    importlib.util.find_spec = (
        lambda name, *a: None if name.split(".")[0] in {sorted(EXTRAS)!r} else _find(name, *a))
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def test_the_core_needs_no_extra():
    res = _run("""
        import numpy as np
        import gapfill, gapfill.cli, gapfill.pipeline, gapfill.video, gapfill.figures
        from gapfill.testing import synthetic_sst
        da = synthetic_sst()
        out = da.gapfill.fill(da.gapfill.fit("eof", max_modes=3))
        assert np.isfinite(out["sst"].values).sum() > np.isfinite(da.values).sum()
        print("ok")
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


@pytest.mark.parametrize("code, extra", [
    ("import gapfill.video as v; v.open({clip!r})", "video"),
    ("from gapfill.methods.flowfill import _cv2; _cv2()", "video"),
    ("from gapfill.cluster import _jobqueue_class; _jobqueue_class('slurm')", "hpc"),
    ("from gapfill.recipe import sample_path; sample_path('ostia')", "samples"),
    ("from gapfill.figures import diagnostics_figure as f; f(None, 'x', None, 'y.png')", "plot"),
])
def test_a_feature_names_its_extra(code, extra, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 64)
    res = _run(code.format(clip=str(clip)))
    assert res.returncode != 0
    assert f"pip install 'gapfill[{extra}]'" in res.stderr.strip().splitlines()[-1]


def test_a_recipe_with_figures_needs_the_plot_extra(tmp_path):
    res = _run(f"""
        from gapfill.recipe import OutputConfig
        OutputConfig(path={str(tmp_path / 'o.nc')!r}, figures=True)
    """)
    assert res.returncode != 0 and "gapfill[plot]" in res.stderr
    assert "output.figures: false" in res.stderr
