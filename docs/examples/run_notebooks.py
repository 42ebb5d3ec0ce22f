"""Execute the example notebooks from their jupytext sources.

Each example is written as a percent-format Python file (``NN_name.py``, the
source to edit) and committed as an executed notebook (``NN_name.ipynb``, what
the documentation site shows). This script turns the sources into notebooks
and executes them::

    python docs/examples/run_notebooks.py               # all, full mode: rewrite the .ipynb files
    python docs/examples/run_notebooks.py 03_train_gan   # one of them
    GAPFILL_DOCS_FAST=1 python docs/examples/run_notebooks.py --check   # reduced mode, write nothing

``GAPFILL_DOCS_FAST=1`` is the reduced mode of the test suite (fewer frames,
tiny training budgets); the committed notebooks are executed in full mode.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Seconds one cell may run before the execution fails.
CELL_TIMEOUT = 900


def sources() -> list[Path]:
    """The notebook sources, in reading order."""
    return sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))


def as_notebook(source: Path):
    """The notebook of a jupytext source, without outputs."""
    import jupytext

    nb = jupytext.read(source)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    return nb


def execute(source: Path, timeout: int = CELL_TIMEOUT):
    """Execute the notebook of ``source`` in a fresh kernel, in a scratch directory.

    Returns the executed notebook. Raises ``nbclient.exceptions.CellExecutionError``
    when a cell fails.
    """
    from nbclient import NotebookClient

    nb = as_notebook(source)
    repo = str(HERE.parents[1])
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "TMPDIR")}
    try:
        with tempfile.TemporaryDirectory(prefix="gapfill-nb-") as work:
            # The kernel imports gapfill from this checkout, whatever is installed, and
            # its temporary files (tempfile.mkdtemp in the notebooks) go away with `work`.
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, saved["PYTHONPATH"]]))
            os.environ["TMPDIR"] = work
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": work}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    for cell in nb.cells:  # keep committed notebooks free of run-specific metadata
        cell.metadata.pop("execution", None)
    return nb


def main(argv: list[str] | None = None) -> int:
    """Command line: execute the named (default: all) notebooks."""
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all)")
    parser.add_argument("--check", action="store_true", help="execute only; write nothing")
    args = parser.parse_args(argv)
    chosen = [s for s in sources() if not args.names or s.stem in args.names]
    if args.names and len(chosen) != len(args.names):
        parser.error(f"unknown notebook among {args.names}; have {[s.stem for s in sources()]}")
    for source in chosen:
        start = time.perf_counter()
        nb = execute(source)
        seconds = time.perf_counter() - start
        if not args.check:
            target = source.with_suffix(".ipynb")
            tmp = target.with_name(target.name + ".tmp")
            nbformat.write(nb, tmp)
            os.replace(tmp, target)
        print(f"{source.stem}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
