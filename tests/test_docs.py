"""Documentation that cannot drift from the code.

- Every example notebook executes (in the reduced mode ``GAPFILL_DOCS_FAST=1``), and
  the committed, executed ``.ipynb`` holds the cells of its jupytext source.
- The README's method table lists exactly the registered methods, and its Python
  examples run on real data.
- The signatures in ``docs/api.md`` and the names of its API reference exist in the code.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

import gapfill

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
README = (ROOT / "README.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()
#: Seconds after which a notebook cell is stopped (the reduced mode's cells take seconds on
#: 2 idle cores; a cell that ran its full fit would not end before it).
NOTEBOOK_LIMIT = 240


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", EXAMPLES / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCES = sorted(EXAMPLES.glob("[0-9][0-9]_*.py"))


def test_there_are_example_notebooks():
    assert len(SOURCES) >= 5, [s.name for s in SOURCES]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_is_its_executed_source(source):
    """The .ipynb has the cells of its .py source, every code cell executed, no error."""
    pytest.importorskip("jupytext")
    import nbformat

    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    expected = _runner().as_notebook(source)
    cells = [(c.cell_type, c.source) for c in committed.cells]
    assert cells == [(c.cell_type, c.source) for c in expected.cells], (
        f"{source.name} changed since {source.stem}.ipynb was executed: "
        f"run python docs/examples/run_notebooks.py {source.stem}"
    )
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "not executed"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 1, "a notebook the reader can look at has figures"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_executes_in_reduced_mode(source, monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("jupytext")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("GAPFILL_DOCS_FAST", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = _runner().execute(source, timeout=NOTEBOOK_LIMIT)
    assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code")


# -- README ----------------------------------------------------------------------------------
def _readme_methods() -> list[str]:
    table = README.split("Methods (`gapfill.methods.available()`):", 1)[1].split("\n\n")[1]
    return re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)


def test_readme_method_table_lists_exactly_the_registered_methods():
    # A fresh interpreter: other tests register methods of their own in this one.
    code = "import gapfill; print(' '.join(gapfill.methods.available()))"
    shipped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout.split()
    listed = _readme_methods()
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(shipped)


def _python_block(after: str) -> str:
    block = re.search(re.escape(after) + r".*?```python\n(.*?)```", README, flags=re.S)
    assert block, f"no Python example after {after!r} in the README"
    return block.group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch, ostia):
    """The "From Python" example, on the OSTIA cube with clouds saved as ``sst.nc``."""
    from gapfill import masks

    cube = ostia.isel(time=slice(0, 18), longitude=slice(0, 144))
    hidden = masks.make("cloud", coverage=0.4, seed=0).sample(cube.shape)
    cube.where(~hidden).rename("analysed_sst").to_dataset().to_netcdf(tmp_path / "sst.nc")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_block("## From Python"), "README.md", "exec"), namespace)
    out = namespace["out"]
    assert {"analysed_sst", "analysed_sst_flag", "analysed_sst_error"} <= set(out.data_vars)
    assert int(out["analysed_sst"].isnull().sum()) < int(namespace["sst"].isnull().sum())
    assert (tmp_path / "eof.pt").exists()
    assert gapfill.load(tmp_path / "eof.pt").name == "eof"


def test_readme_video_example_runs(tmp_path, monkeypatch):
    from gapfill.recipe import sample_path

    shutil.copy(sample_path("bikes"), tmp_path / "clip.mp4")
    monkeypatch.chdir(tmp_path)
    code = _python_block("## Video").replace("max_frames=64", "max_frames=12")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["out"]["video"].notnull().all()
    assert (tmp_path / "preview.mp4").stat().st_size > 0


# -- docs/api.md -----------------------------------------------------------------------------
@pytest.mark.parametrize("call, accessor", [
    ("da.gapfill.fit", xr.DataArray), ("da.gapfill.fill", xr.DataArray),
    ("da.gapfill.score", xr.DataArray), ("ds.gapfill.fit", xr.Dataset),
    ("ds.gapfill.fill", xr.Dataset),
])
def test_api_page_signatures_match_the_code(call, accessor):
    match = re.search(r"^\| `" + re.escape(call) + r"\((.*?)\)` \|", API, flags=re.M)
    assert match, f"{call} is not in the table of docs/api.md"
    documented = ast.parse(f"def f(self, {match.group(1)}): pass").body[0].args
    method = getattr(accessor.gapfill, call.rsplit(".", 1)[1])
    actual = inspect.signature(method).parameters
    names = [a.arg for a in documented.args + documented.kwonlyargs]
    if documented.vararg:
        names.append(documented.vararg.arg)
    if documented.kwarg:
        names.append(documented.kwarg.arg)
    assert names == list(actual), f"docs/api.md: {call}{tuple(names[1:])}, code: {list(actual)[1:]}"
    defaults = documented.defaults + [d for d in documented.kw_defaults if d is not None]
    documented_defaults = [ast.literal_eval(d) for d in defaults]
    actual_defaults = [p.default for p in actual.values() if p.default is not p.empty]
    assert documented_defaults == actual_defaults, call


def _reference_names() -> list[str]:
    names, module = [], None
    for line in API.splitlines():
        if m := re.match(r"\.\. currentmodule:: (\S+)", line):
            module = m.group(1)
        elif m := re.match(r"   ([A-Za-z_][\w.]*)$", line):
            names.append(f"{module}.{m.group(1)}")
    return names


def test_api_reference_names_exist():
    names = _reference_names()
    assert "xarray.DataArray.gapfill.fit" in names and "gapfill.load" in names
    for name in names:
        parts = name.split(".")
        obj = importlib.import_module(parts[0])
        for i, part in enumerate(parts[1:], 1):
            if not hasattr(obj, part) and inspect.ismodule(obj):
                importlib.import_module(".".join(parts[: i + 1]))
            assert hasattr(obj, part), f"docs/api.md names {name}, which does not exist"
            obj = getattr(obj, part)

