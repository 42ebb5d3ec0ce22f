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
# # Choosing a method and trusting its errors
#
# On real data the truth under the clouds is unknown. gapfill therefore hides a share of
# the *observed* pixels from every fit (the hold-out) and scores the fill there. This
# notebook checks that those hold-out figures, and each method's error variable, tell the
# truth: on two real fields with gaps punched into them, it compares them with the true
# error under the punched gaps.
#
# - **SST**: OSTIA monthly analyses (iris-sample-data), 54 months, 5°S–5°N, global.
# - **Air temperature**: HadCM3 A1B scenario over North America (iris-sample-data),
#   240 yearly means, 37 × 49 points.

# %%
import os
from pathlib import Path

import iris_sample_data
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import gapfill
from gapfill import masks

plt.rcParams.update({"figure.dpi": 72})
FAST = os.environ.get("GAPFILL_DOCS_FAST") == "1"  # reduced mode used by the test suite
DATA = Path(iris_sample_data.path)

sst = gapfill.open(DATA / "ostia_monthly.nc")["surface_temperature"].load()
air = gapfill.open(DATA / "A1B_north_america.nc")["air_temperature"].load()
if FAST:
    sst, air = sst.isel(time=slice(0, 24)), air.isel(time=slice(0, 48))
fields = {"sst": sst, "air": air}
{k: dict(v.sizes) for k, v in fields.items()}

# %% [markdown]
# ## Punch 40% cloud-shaped gaps, keep the truth
#
# The OSTIA grid wraps around the globe, so its clouds are periodic in longitude. A pixel
# the clouds cover at every time step has no observation left: gapfill flags it "never
# observed" and leaves it NaN, like land, so it is not scored.

# %%
clouds = {
    "sst": masks.make("cloud", coverage=0.4, seed=1, periodic=(False, True)).sample(sst.shape),
    "air": masks.make("cloud", coverage=0.4, seed=2).sample(air.shape),
}
gappy = {k: fields[k].where(~clouds[k]) for k in fields}
hidden = {k: clouds[k] & fields[k].notnull().values & gappy[k].notnull().any("time").values
          for k in fields}
{k: f"{h.sum() / fields[k].notnull().sum().item():.0%} hidden" for k, h in hidden.items()}

# %% [markdown]
# ## Fit every method on both fields
#
# The classical methods fit in seconds. The GAN gets a short training budget here (a real
# run trains for minutes: see the GAN notebook); its fill starts from an EOF guide, so even
# a short training gives a sensible field.

# %%
methods = {
    "eof": {},
    "linear": {},
    "climatology": {},
    "gan": dict(time_budget=30, eval_every=5, guide_pool=2, threads=1, progress="off"),
}
if FAST:  # the GAN notebook runs the GAN in the test suite
    del methods["gan"]

results, rows = {}, []
for field, cube in gappy.items():
    truth = fields[field].values[hidden[field]]
    for method, options in methods.items():
        model = cube.gapfill.fit(method, **options)
        diag = cube.gapfill.score(model)  # the fill with the hold-out hidden, scored there
        out = cube.gapfill.fill(model, diagnostics=diag)
        results[field, method] = model, diag, out
        err = out[cube.name].values[hidden[field]] - truth
        rows.append({"field": field, "method": method,
                     "hold-out MAE": diag.summary["mae"], "true MAE in the gaps": np.abs(err).mean(),
                     "hold-out RMSE": diag.summary["rmse"],
                     "true RMSE in the gaps": np.sqrt((err ** 2).mean()),
                     "fit (s)": model.info["fit_seconds"]})
table = pd.DataFrame(rows).set_index(["field", "method"])
table.round(3)

# %% [markdown]
# Each point is a method: the hold-out MAE (x), which a user gets on real data, against
# the true MAE in the punched gaps (y). When the points keep their order along both axes,
# the hold-out is a sound way to choose a method without the truth. The hold-out tends to
# be lower than the true error: its patches are smaller than 40% cloud cover, and pixels
# near observations are easier to fill.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True)
for ax, field in zip(axes, fields):
    t = table.loc[field]
    ax.scatter(t["hold-out MAE"], t["true MAE in the gaps"])
    for method, row in t.iterrows():
        ax.annotate(method, (row["hold-out MAE"], row["true MAE in the gaps"]),
                    textcoords="offset points", xytext=(4, 4))
    top = 1.1 * t[["hold-out MAE", "true MAE in the gaps"]].to_numpy().max()
    ax.plot([0, top], [0, top], color="0.6", lw=1)
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="hold-out MAE (K)",
           ylabel="true MAE in the punched gaps (K)", title=field)

# %% [markdown]
# ## The hold-out, month by month
#
# `da.gapfill.score(model)` returns the held-out pixels with their fill;
# `to_dataframe()` gives the per-time table the CLI writes as CSV.

# %%
model, diag, out = results["sst", "eof"]
per_time = diag.to_dataframe().drop(index="all")
err = (out["surface_temperature"] - sst).where(hidden["sst"])
true_mae = abs(err).mean(("latitude", "longitude")).to_series()
fig, ax = plt.subplots(figsize=(10, 2.8), constrained_layout=True)
ax.plot(true_mae.index, true_mae.values, label="true MAE in the punched gaps")
ax.plot(pd.to_datetime(per_time.index), per_time["mae"], label="hold-out MAE")
ax.set(ylabel="K", title="eof on OSTIA, per month")
ax.legend();

# %% [markdown]
# ## Can the error variable be trusted? A reliability diagram
#
# A method's `<name>_error` is a one-sigma estimate. If it is calibrated, the pixels where it
# says 0.3 K have a root-mean-square error of 0.3 K, and about 68% of the errors are within
# one sigma. We bin the punched-gap pixels by their predicted error and compare.

# %%
def reliability(predicted: np.ndarray, errors: np.ndarray, bins: int = 10):
    """Mean predicted sigma and actual RMS error in bins of equal counts."""
    order = np.argsort(predicted)
    groups = np.array_split(order, bins)
    return (np.array([np.sqrt((predicted[g] ** 2).mean()) for g in groups]),
            np.array([np.sqrt((errors[g] ** 2).mean()) for g in groups]))


calibration = []
fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
for ax, field in zip(axes, fields):
    name = gappy[field].name
    top = 0.0
    for method in methods:
        _, _, out = results[field, method]
        if f"{name}_error" not in out:
            continue
        sigma = out[f"{name}_error"].values[hidden[field]]
        err = out[name].values[hidden[field]] - fields[field].values[hidden[field]]
        x, y = reliability(sigma, err)
        ax.plot(x, y, "o-", label=method)
        top = max(top, x.max(), y.max())
        calibration.append({"field": field, "method": method,
                            "mean predicted sigma": np.sqrt((sigma ** 2).mean()),
                            "true RMSE": np.sqrt((err ** 2).mean()),
                            "share within 1 sigma": (np.abs(err) <= sigma).mean()})
    ax.plot([0, top], [0, top], color="0.6", lw=1, label="calibrated")
    ax.set(xlabel="predicted one-sigma error (K)", ylabel="actual RMS error (K)", title=field)
    ax.legend()
pd.DataFrame(calibration).set_index(["field", "method"]).round(3)

# %% [markdown]
# Points above the diagonal mean the method is over-confident there (the error is larger
# than it says), below it under-confident; a vertical line of points means the error
# variable hardly varies from pixel to pixel, so it cannot say which pixels are worse. The hold-out gives the same check on real data, where there are no
# punched gaps: `diag.predicted_error` holds the error variable at the held-out pixels.

# %%
hold = []
for (field, method), (_, diag, _) in results.items():
    if diag.predicted_error is not None:
        hold.append({"field": field, "method": method, **{
            k: diag.summary[k] for k in ("mae", "mean_predicted_error", "within_1sigma")}})
pd.DataFrame(hold).set_index(["field", "method"]).round(3)

# %% [markdown]
# ## The methods side by side

# %%
for field, step in (("sst", 10), ("air", 30)):
    name = gappy[field].name
    panels = {"truth": fields[field][step], "with gaps": gappy[field][step]}
    panels.update({m: results[field, m][2][name][step] for m in methods})
    fig, axes = plt.subplots(len(panels) if field == "sst" else 2,
                             1 if field == "sst" else (len(panels) + 1) // 2,
                             figsize=(10, 1.5 * len(panels)) if field == "sst" else (10, 4.6),
                             sharex=True, sharey=True, constrained_layout=True)
    lo, hi = np.nanpercentile(fields[field][step], [1, 99])
    for ax, (label, da) in zip(axes.ravel(), panels.items()):
        im = ax.pcolormesh(da[da.dims[1]], da[da.dims[0]], da, cmap="RdYlBu_r", vmin=lo, vmax=hi)
        ax.set_title(label, fontsize=10)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    fig.colorbar(im, ax=axes, label="K", shrink=0.8)
    fig.suptitle(f"{field}, {str(fields[field].time.values[step])[:10]}")
