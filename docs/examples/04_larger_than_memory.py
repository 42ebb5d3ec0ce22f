# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A cube larger than memory
#
# A multi-year archive of daily SST does not fit in memory. gapfill never needs it to:
# opened with dask chunks (a Zarr store keeps its on-disk chunks), a cube is fitted in a
# few streaming passes, filled lazily chunk by chunk, and written region by region.
#
# The 54-month OSTIA cube stands in for such an archive here: it goes through exactly the
# same code, and it is small enough to check the result against the in-memory fill. Then
# the same job runs from a recipe with `gapfill run`, which survives an interruption.

# %%
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import iris_sample_data
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from dask.diagnostics import ProgressBar

import gapfill
from gapfill import masks

plt.rcParams.update({"figure.dpi": 72})
FAST = os.environ.get("GAPFILL_DOCS_FAST") == "1"  # reduced mode used by the test suite
workdir = Path(tempfile.mkdtemp())
os.chdir(workdir)

# %% [markdown]
# ## A chunked Zarr store
#
# We punch clouds into OSTIA and write it as a Zarr store in chunks of 3 months: each dask
# task will read one chunk.

# %%
sst = gapfill.open(Path(iris_sample_data.path) / "ostia_monthly.nc")["surface_temperature"].load()
if FAST:
    sst = sst.isel(time=slice(0, 18))
clouds = masks.make("cloud", coverage=0.4, seed=1, periodic=(False, True)).sample(sst.shape)
sst.where(~clouds).to_dataset().chunk({"time": 3}).to_zarr("gappy_sst.zarr", mode="w",
                                                            consolidated=False)

ds = gapfill.open("gappy_sst.zarr")          # lazy: dask chunks = the store's chunks
gappy = ds["surface_temperature"]
gappy

# %% [markdown]
# ## Streaming fit, lazy fill
#
# `streaming_fit=True` fits DINEOF without loading the cube (on a large dask-backed cube it
# is chosen automatically): DINEOF on a spatial subsample gives the temporal modes, then one
# blockwise pass over the chunks fits every pixel on them. `fill` on a dask-backed cube
# returns a dask-backed product with the input's chunks, and computes nothing.

# %%
model = gappy.gapfill.fit("eof", streaming_fit=True)
model

# %%
start = time.perf_counter()
out = gappy.gapfill.fill(model)
print(f"graph built in {time.perf_counter() - start:.2f} s; "
      f"{len(out.__dask_graph__())} tasks, nothing computed yet")
out["surface_temperature"].data

# %% [markdown]
# ## Compute it, with a progress bar
#
# `dask.diagnostics.ProgressBar` shows the progress of dask's local schedulers in a
# notebook or a terminal, with no dashboard or server. Writing to Zarr computes the chunks
# one by one; at most a few chunks are in memory at any time.

# %%
with ProgressBar(dt=0.5):
    out.to_zarr("filled_sst.zarr", mode="w", consolidated=False)

# %% [markdown]
# The chunked fill is the in-memory fill: each output chunk is computed from its input
# chunk plus what the method needs around it, so there are no seams.

# %%
in_memory = gappy.load().gapfill.fill(model)
filled = gapfill.open("filled_sst.zarr")["surface_temperature"]
difference = np.nanmax(np.abs(filled.values - in_memory["surface_temperature"].values))
print(f"largest difference between the chunked and the in-memory fill: {difference:.2g} K")

# %%
fig, axes = plt.subplots(2, 1, figsize=(10, 3.6), sharex=True, constrained_layout=True)
step = 6
gappy[step].plot(ax=axes[0], cmap="RdYlBu_r", vmin=296, vmax=304, cbar_kwargs={"label": "K"})
filled[step].plot(ax=axes[1], cmap="RdYlBu_r", vmin=296, vmax=304, cbar_kwargs={"label": "K"})
axes[0].set_title("the gappy store")
axes[1].set_title("filled chunk by chunk");

# %% [markdown]
# ## The same job from a recipe, resumably
#
# On a cluster the job runs from a recipe: `gapfill run` validates it, starts the dask
# cluster of its `compute` section (here dask's threads on this machine; `slurm` or `pbs`
# on an HPC system), fits, scores the hold-out and writes the product region by region
# (one time chunk per region) into `<output>.partial`, moved into place when complete.

# %%
recipe = """\
description: the gappy OSTIA store filled with DINEOF, chunk by chunk
input:
  path: gappy_sst.zarr
  variable: surface_temperature
  chunks: {time: 3}
method:
  name: eof
holdout:
  fraction: 0.1
output:
  path: outputs/filled_sst.zarr
  figures: false
compute:
  kind: threads
  n_workers: 1
"""
Path("recipe.yaml").write_text(recipe)
gapfill_cli = [sys.executable, "-m", "gapfill"]
check = subprocess.run([*gapfill_cli, "validate", "recipe.yaml"], capture_output=True, text=True)
print(check.stdout or check.stderr)

# %% [markdown]
# We start the run and interrupt it (as a wall-time limit or a node failure would) as soon
# as the first regions are on disk: a marker file per written region records the progress.

# %%
progress = Path("outputs/filled_sst.zarr.partial.progress")
run = subprocess.Popen([*gapfill_cli, "run", "recipe.yaml"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
while run.poll() is None and len(list(progress.glob("*"))) < 2:
    time.sleep(0.01)
if run.poll() is None:
    run.send_signal(signal.SIGINT)
run.wait()
written = sorted(p.name for p in progress.glob("*")) if progress.exists() else []
print(f"interrupted with {len(written)} regions written: {written}"
      if not Path("outputs/filled_sst.zarr").exists() else "the run finished before the interruption")

# %% [markdown]
# The same command again writes only the missing regions (the fit and the hold-out scores
# of the interrupted run are reused too):

# %%
again = subprocess.run([*gapfill_cli, "run", "recipe.yaml"], capture_output=True, text=True)
print("\n".join(line for line in (again.stdout + again.stderr).splitlines()
                if "resum" in line or "wrote" in line or "holdout" in line.lower()))
product = gapfill.open("outputs/filled_sst.zarr")
print(product["surface_temperature"].chunks[0], product.attrs["gapfill_holdout_mae"])
