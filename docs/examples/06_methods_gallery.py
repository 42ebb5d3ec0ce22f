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
# # Methods gallery
#
# Every registered method (`gapfill.methods.available()`) on the same task: two years of
# OSTIA SST over the tropical Pacific (120°E–80°W) with 40% cloud-shaped gaps punched into
# it. One figure per method: the truth, the gappy month, the fill and its error under the
# clouds, with the mean absolute error in the punched gaps.
#
# The learned methods get the same short CPU budget here (20 s of training), far from
# what they get in a real run; `docs/benchmarks.md` has the figures of full runs.

# %%
import dataclasses
import os
from pathlib import Path

import iris_sample_data
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

import gapfill
from gapfill import masks

plt.rcParams.update({"figure.dpi": 72})
FAST = os.environ.get("GAPFILL_DOCS_FAST") == "1"  # reduced mode used by the test suite

sst = gapfill.open(Path(iris_sample_data.path) / "ostia_monthly.nc")["surface_temperature"]
sst = sst.sel(time=slice("2008-01", "2009-12"), longitude=slice(120, 280)).load()
if FAST:
    sst = sst.isel(time=slice(0, 8), longitude=slice(0, 64))
clouds = masks.make("cloud", coverage=0.4, seed=3).sample(sst.shape)
gappy = sst.where(~clouds)
hidden = (sst.notnull() & gappy.isnull() & gappy.notnull().any("time")).values
sst.sizes

# %% tags=["hide-input"]
BUDGET = dict(time_budget=20, progress="off")
if FAST:
    BUDGET = dict(steps=2, time_budget=None, eval_every=1, progress="off")


def budget(method: str) -> dict:
    """The short training budget, for the methods that train."""
    fields = {f.name for f in dataclasses.fields(gapfill.methods.get(method).Options)}
    return {k: v for k, v in BUDGET.items() if k in fields} if "time_budget" in fields else {}


step = 5
summary = {}
for method in gapfill.methods.available():
    model = gappy.gapfill.fit(method, **budget(method))
    out = gappy.gapfill.fill(model)
    filled = out["surface_temperature"]
    mae = float(np.nanmean(np.abs(filled.values[hidden] - sst.values[hidden])))
    summary[method] = {"MAE in the gaps (K)": mae,
                       "hold-out MAE (K)": out.attrs["gapfill_holdout_mae"],
                       "fit (s)": model.info["fit_seconds"],
                       "error variable": "surface_temperature_error" in out}
    doc = (gapfill.methods.get(method).__doc__ or "").strip().splitlines()[0]
    display(Markdown(f"**`{method}`**: {doc}"))
    fig, axes = plt.subplots(2, 2, figsize=(10, 3.2), sharex=True, sharey=True,
                             constrained_layout=True)
    panels = [(sst[step], "truth"), (gappy[step], "with clouds"),
              (filled[step], f"{method} fill"),
              ((filled[step] - sst[step]).where(hidden[step]), "fill minus truth")]
    for ax, (da, title) in zip(axes.ravel(), panels):
        diff = title.startswith("fill minus")
        im = ax.pcolormesh(da.longitude, da.latitude, da, cmap="RdBu_r" if diff else "RdYlBu_r",
                           vmin=-1.5 if diff else 296, vmax=1.5 if diff else 304)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, label="K")
    fig.suptitle(f"{method}: MAE in the gaps {mae:.3f} K, fit {model.info['fit_seconds']:.0f} s")
    plt.show()

# %% [markdown]
# ## Summary

# %%
pd.DataFrame(summary).T.sort_values("MAE in the gaps (K)").round(3)
