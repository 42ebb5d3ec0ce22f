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
# # Training the GAN
#
# The `gan` method is the unsupervised GAN inpainting of Yin, Pajot, de Bézenac &
# Gallinari: it learns from the gappy cube alone, with no gap-free data. Its generator
# corrects a *guide*, a DINEOF reconstruction plus an interpolation of the residuals, so it
# starts from a good field and learns what EOFs miss.
#
# This notebook trains it briefly on the first three years of the OSTIA cube (with 40%
# punched clouds), plots its training log, compares the trained fill with the EOF fill,
# saves the model and fills the following 18 months with it, without retraining.
#
# With the default options the generator trains on its self-supervised L1 term alone
# (`adv_weight=0`: on OSTIA within CPU budgets this measured best, see `docs/benchmarks.md`);
# `adv_weight=0.1` adds the frame and sequence discriminators of the paper. A short CPU
# budget is used here; `recipes/ostia_sst_gan.yaml` trains for 10 minutes, and a GPU runs
# many more steps in the same time.

# %%
import os
import tempfile
from pathlib import Path

import iris_sample_data
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import gapfill
from gapfill import masks

plt.rcParams.update({"figure.dpi": 72})
FAST = os.environ.get("GAPFILL_DOCS_FAST") == "1"  # reduced mode used by the test suite
workdir = Path(tempfile.mkdtemp())

sst = gapfill.open(Path(iris_sample_data.path) / "ostia_monthly.nc")["surface_temperature"].load()
clouds = masks.make("cloud", coverage=0.4, seed=1, periodic=(False, True)).sample(sst.shape)
gappy = sst.where(~clouds)
# the punched pixels that keep an observation at some time (the others stay NaN, like land)
hidden = sst.notnull() & gappy.isnull() & gappy.notnull().any("time")

train = slice("2006-04", "2009-03")  # fit on these 36 months ...
later = slice("2009-04", "2010-09")  # ... and fill these 18 with the saved model
if FAST:
    train, later = slice("2006-04", "2007-03"), slice("2007-04", "2007-09")
gappy.sel(time=train).sizes

# %% [markdown]
# ## A short fit, with progress
#
# `progress="log"` prints a line at each evaluation (a notebook or a batch job gets no
# progress-bar spam; `"bar"` shows a bar). Every `eval_every` steps the generator fills the
# validation pixels (observed pixels the training never sees); training stops at the time
# or step budget, or when that error stops improving, and the best generator is kept.
# `checkpoint_dir` receives checkpoints and the training log, `log.csv`.

# %%
options = dict(
    window=(24, 18, 64),    # time × lat × lon training windows: full latitude, 53° of longitude
    time_budget=300,        # seconds for the whole fit (guide set-up and training)
    guide_pool=4,           # guides precomputed with different extra-hidden pixels
    threads=1,              # one torch thread: fastest on a small shared CPU
    progress="log",
    checkpoint_dir=str(workdir / "gan"),
)
if FAST:
    options.update(window=(6, 18, 64), steps=3, time_budget=None, eval_every=1, guide_pool=1)
model = gappy.sel(time=train).gapfill.fit("gan", **options)
model

# %% [markdown]
# ## The training log

# %%
log = pd.read_csv(workdir / "gan" / "log.csv")
log.tail()

# %%
info = model.method.fit_info
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
for column in ("loss_d", "loss_g", "adv_g", "recon"):
    if column in log and log[column].abs().sum() > 0:  # the adversarial terms are 0 when off
        axes[0].plot(log["step"], log[column], label=column)
axes[0].set(xlabel="generator step", title="losses")
axes[0].legend()
axes[1].plot(log["step"], log["val_mae"], "o-", label="generator")
axes[1].axhline(info["guide_val_mae"], color="0.5", ls="--", label="the guide alone")
if "eof_val_mae" in info:
    axes[1].axhline(info["eof_val_mae"], color="0.5", ls=":", label="its EOF part alone")
axes[1].set(xlabel="generator step", ylabel="MAE (normalised units)", title="validation error")
axes[1].legend();

# %% [markdown]
# `fit_info` says how the training went: steps run, why it stopped, the validation error
# of the EOF reconstruction alone, of the guide (EOF plus interpolated residuals) alone,
# and of the best generator, which corrects the guide.

# %%
{k: info[k] for k in ("steps", "stopped_by", "eof_val_mae", "guide_val_mae", "best_val_mae",
                      "best_step", "train_seconds", "setup_seconds") if k in info}

# %% [markdown]
# ## The trained fill against the EOF fill
#
# The mean absolute error under the punched clouds of the training period, for the GAN and
# for DINEOF (`eof`, the large-scale part of the GAN's guide). Pixels clouded over in every
# month of a period stay NaN ("never observed") and are not scored.

# %%
period = gappy.sel(time=train)
truth = sst.sel(time=train)
mask = hidden.sel(time=train).values
fills = {"eof": period.gapfill.fill(period.gapfill.fit("eof")),
         "gan": period.gapfill.fill(model)}
{m: float(np.nanmean(np.abs(f["surface_temperature"].values[mask] - truth.values[mask])))
 for m, f in fills.items()}

# %%
step = 10 if not FAST else 3
fig, axes = plt.subplots(3, 1, figsize=(10, 5), sharex=True, constrained_layout=True)
truth[step].plot(ax=axes[0], cmap="RdYlBu_r", vmin=296, vmax=304, cbar_kwargs={"label": "K"})
axes[0].set_title(f"truth, {str(truth.time.values[step])[:7]}")
for ax, (m, f) in zip(axes[1:], fills.items()):
    err = (f["surface_temperature"][step] - truth[step]).where(mask[step])
    err.plot(ax=ax, cmap="RdBu_r", vmin=-1.5, vmax=1.5, cbar_kwargs={"label": "K"})
    ax.set_title(f"{m}: fill minus truth under the clouds")

# %% [markdown]
# ## Save the model, fill another period
#
# `model.save` writes the weights, options and normalisation (read back with
# `torch.load(weights_only=True)`: no pickled code). The loaded model fills months it never
# saw; the GAN computes the guide of whatever cube it fills.

# %%
path = model.save(workdir / "ostia_gan.pt")
print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
loaded = gapfill.load(path)
new = gappy.sel(time=later)
out = new.gapfill.fill(loaded)
truth_new = sst.sel(time=later).values
mask_new = hidden.sel(time=later).values
eof_new = new.gapfill.fill(new.gapfill.fit("eof"))
pd.DataFrame({
    "MAE in the clouds (K)": {
        "gan, trained on the earlier period": np.nanmean(np.abs(
            out["surface_temperature"].values[mask_new] - truth_new[mask_new])),
        "eof, fitted on this period": np.nanmean(np.abs(
            eof_new["surface_temperature"].values[mask_new] - truth_new[mask_new])),
    },
    "hold-out MAE (K)": {
        "gan, trained on the earlier period": out.attrs["gapfill_holdout_mae"],
        "eof, fitted on this period": eof_new.attrs["gapfill_holdout_mae"],
    },
}).round(3)
