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
# # Fill a cloudy SST cube
#
# This notebook fills the gaps of a sea-surface temperature cube with DINEOF (`eof`),
# looks at the product (the filled field, the flag of what was observed and the error
# estimate), compares it with two simpler methods, and writes it to NetCDF and Zarr.
#
# The data are the OSTIA monthly SST analyses shipped with the `iris-sample-data` package
# (54 months, 5°S–5°N, 0.83°, kelvin). OSTIA is gap-free over the ocean, so we punch
# realistic cloud-shaped gaps into it ourselves and keep the hidden values to check the fill.

# %%
import os
import tempfile
from pathlib import Path

import iris_sample_data
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

import gapfill
from gapfill import masks

plt.rcParams.update({"figure.dpi": 72, "figure.figsize": (10, 2.2)})
xr.set_options(display_expand_data=False)
FAST = os.environ.get("GAPFILL_DOCS_FAST") == "1"  # reduced mode used by the test suite

# %% [markdown]
# ## Open the cube
#
# `gapfill.open` opens NetCDF files or Zarr stores read-only. Land is NaN at every time
# step; gapfill keeps it NaN ("never observed").

# %%
ds = gapfill.open(Path(iris_sample_data.path) / "ostia_monthly.nc")
sst = ds["surface_temperature"].load()
if FAST:
    sst = sst.isel(time=slice(0, 24))
sst

# %% [markdown]
# ## Punch clouds
#
# `gapfill.masks` draws occlusion masks (`True` = hidden). The `cloud` process thresholds a
# drifting, evolving Gaussian random field; `periodic=(False, True)` lets clouds wrap
# around in longitude, since this cube spans the globe.

# %%
clouds = masks.make("cloud", coverage=0.4, seed=1, periodic=(False, True))
hidden = clouds.sample(sst.shape) & sst.notnull().values
gappy = sst.where(~hidden)
print(f"{hidden.sum() / sst.notnull().sum().item():.0%} of the ocean pixels hidden")

fig, axes = plt.subplots(2, 1, figsize=(10, 3.6), sharex=True, constrained_layout=True)
month = 10
sst[month].plot(ax=axes[0], cmap="RdYlBu_r", vmin=296, vmax=304, cbar_kwargs={"label": "K"})
gappy[month].plot(ax=axes[1], cmap="RdYlBu_r", vmin=296, vmax=304, cbar_kwargs={"label": "K"})
axes[0].set_title(f"OSTIA {str(sst.time.values[month])[:7]}")
axes[1].set_title("with clouds");

# %% [markdown]
# ## Fit and fill
#
# `fit` learns from the gappy cube itself. It first hides 10% of the observed pixels
# (the *hold-out*, in cloud-shaped patches) so that `fill` can report how well the method
# does on pixels it never saw. DINEOF chooses its number of modes by cross-validation.

# %%
model = gappy.gapfill.fit(method="eof")
model

# %%
out = gappy.gapfill.fill(model)
out

# %% [markdown]
# The product holds three variables: the filled field (observed values unchanged, bit for
# bit), a CF flag variable (0 observed, 1 filled, 2 never observed) and a one-sigma
# error estimate. The hold-out scores are in the attributes.

# %%
name = "surface_temperature"
observed = gappy.notnull().values
assert (out[name].values[observed] == gappy.values[observed]).all()  # observed values unchanged
{k: v for k, v in out.attrs.items() if k.startswith("gapfill_holdout")}

# %%
fig, axes = plt.subplots(3, 1, figsize=(10, 5.4), sharex=True, constrained_layout=True)
flag = out[f"{name}_flag"][month]
out[name][month].plot(ax=axes[0], cmap="RdYlBu_r", vmin=296, vmax=304, cbar_kwargs={"label": "K"})
flag.plot(ax=axes[1], cmap=plt.get_cmap("viridis", 3), vmin=-0.5, vmax=2.5,
          cbar_kwargs={"ticks": [0, 1, 2], "label": "flag"})
out[f"{name}_error"][month].where(flag == 1).plot(ax=axes[2], cmap="magma_r",
                                                  cbar_kwargs={"label": "K"})
axes[0].set_title("filled (land stays NaN)")
axes[1].set_title("flag: 0 observed, 1 filled, 2 never observed")
axes[2].set_title("error estimate (one sigma) of the filled pixels");

# %% [markdown]
# ## How good is it? The true error in the punched gaps
#
# We hid the clouds ourselves, so we know the truth under them. The hold-out MAE (from
# observed pixels the fit never saw) is the figure a user gets on real, gappy data;
# the error in the punched clouds is what it estimates.

# %%
truth = sst.values[hidden]
rows = {}
fills = {}
for method in ["eof", "linear", "climatology"]:
    m = model if method == "eof" else gappy.gapfill.fit(method)
    filled = out if method == "eof" else gappy.gapfill.fill(m)
    fills[method] = filled
    err = filled[name].values[hidden] - truth
    rows[method] = {
        "hold-out MAE (K)": filled.attrs["gapfill_holdout_mae"],
        "MAE in the clouds (K)": np.abs(err).mean(),
        "RMSE in the clouds (K)": np.sqrt((err ** 2).mean()),
        "fit (s)": m.info["fit_seconds"],
    }
pd.DataFrame(rows).T.round(3)

# %%
fig, axes = plt.subplots(3, 1, figsize=(10, 5.4), sharex=True, constrained_layout=True)
for ax, (method, filled) in zip(axes, fills.items()):
    abs_err = abs(filled[name][month] - sst[month]).where(hidden[month])
    abs_err.plot(ax=ax, cmap="Reds", vmin=0, vmax=1.5, cbar_kwargs={"label": "|fill - truth| (K)"})
    ax.set_title(f"{method}: error under the clouds")

# %% [markdown]
# ## Save and reopen
#
# The product is an ordinary `xarray.Dataset` with CF attributes: write it with
# `to_netcdf` or `to_zarr`, read it back with `gapfill.open` (or xarray). The fitted model
# is saved separately with `model.save` and read back with `gapfill.load`.

# %%
workdir = Path(tempfile.mkdtemp())
out.to_netcdf(workdir / "ostia_filled.nc")
out.to_zarr(workdir / "ostia_filled.zarr", mode="w", consolidated=False)
model.save(workdir / "eof.pt")

from_nc = gapfill.open(workdir / "ostia_filled.nc")
from_zarr = gapfill.open(workdir / "ostia_filled.zarr")
xr.testing.assert_identical(from_nc[name].load(), out[name])
xr.testing.assert_equal(from_zarr[f"{name}_flag"].load(), out[f"{name}_flag"])
again = gappy.gapfill.fill(gapfill.load(workdir / "eof.pt"))
print("the reloaded model gives the same fill:", again[name].equals(out[name]))
print(from_zarr[f"{name}_flag"].attrs["flag_meanings"])
sorted(p.name for p in workdir.iterdir())
