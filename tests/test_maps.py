"""Maps of the diagnostics figure on real 0–360 grids: centred on the data, in one piece.

eofs' sst_ndjfm_anom.nc covers the Pacific across the dateline (longitudes
117.5–262.5); the iris sample A1B_north_america.nc is a regional grid at
longitudes 225–315.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import gapfill  # noqa: F401
from gapfill import figures

SST = Path(__import__("eofs").__file__).parent / "examples" / "example_data" / "sst_ndjfm_anom.nc"
A1B = Path(__import__("iris_sample_data").__file__).parent / "sample_data" / "A1B_north_america.nc"


def open_real(path: Path, name: str) -> xr.DataArray:
    with xr.open_dataset(path) as ds:
        da = ds[name].isel(time=slice(0, 12)).load()
    return da.where(np.random.default_rng(0).random(da.shape) > 0.3)


def to_pm180(da: xr.DataArray) -> xr.DataArray:
    """The same data with longitudes in -180..180 (non-monotonic across the dateline)."""
    return da.assign_coords(longitude=((da["longitude"] + 180) % 360) - 180)


def draw(da: xr.DataArray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The diagnostics figure of a linear fill of ``da``; returns its map axes."""
    shown = {}

    def keep(fig, path, dpi):
        fig.canvas.draw()  # tick labels get their positions
        shown["fig"] = fig
        return path

    monkeypatch.setattr(figures, "_save", keep)
    out = da.gapfill.fill(da.gapfill.fit("linear", holdout=0), diagnostics=False)
    figures.diagnostics_figure(out, str(da.name), np.array([]), tmp_path / "d.png")
    return [ax for ax in shown["fig"].axes if getattr(ax, "_gapfill_geo", False)]


CASES = [
    ("sst", SST, "sst", 190.0 - 360.0, 150.0),
    ("sst -180..180", SST, "sst", 190.0 - 360.0, 150.0),
    ("A1B", A1B, "air_temperature", -90.0, 91.875),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_map_is_centred_on_the_data_in_one_piece(case, tmp_path, monkeypatch) -> None:
    label, path, name, centre, width = case
    da = open_real(path, name)
    if "180" in label:
        da = to_pm180(da)
    assert figures.central_longitude(da["longitude"].values) == pytest.approx(centre)
    axes = draw(da, tmp_path, monkeypatch)
    assert len(axes) == 3  # the field, the flags and the error
    for ax in axes:
        lo, hi = ax.get_xlim()
        assert hi - lo == pytest.approx(width)  # the data's span (+ half a cell each side)
        assert lo + hi == pytest.approx(0.0)  # centred on the projection's middle
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) >= 3
        boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))  # no label piled on another
        frame = ax.get_window_extent()
        assert all(frame.x0 - 20 <= b.x0 and b.x1 <= frame.x1 + 20 for b in boxes)
