"""gapfill.figures: the diagnostics PNG, written atomically, never downloading map data."""

from __future__ import annotations

import numpy as np
import pytest

import gapfill  # noqa: F401
from gapfill import figures
from gapfill.testing import synthetic_sst

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def no_downloads(monkeypatch):
    """Fail if cartopy tries to fetch Natural Earth data."""
    from cartopy.io import Downloader

    def refuse(*args, **kwargs):
        raise AssertionError("cartopy tried to download map data")

    monkeypatch.setattr(Downloader, "acquire_resource", refuse)


def filled(da):
    model = da.gapfill.fit("eof", holdout=0.15)
    diag = da.gapfill.score(model)
    return da.gapfill.fill(model, diagnostics=diag), diag


def test_figure_lonlat(tmp_path, no_downloads):
    out, diag = filled(synthetic_sst(t=8, h=10, w=24))
    path = figures.diagnostics_figure(out, "sst", diag.errors, tmp_path / "fig" / "d.png",
                                      punched_errors=diag.errors * 1.5)
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 20_000
    assert sorted(p.name for p in path.parent.iterdir()) == ["d.png"]  # no temporary left


def test_figure_plain_grid_no_holdout(tmp_path, no_downloads):
    da = synthetic_sst(t=6, h=8, w=12).rename(lat="row", lon="col").drop_vars(["row", "col"])
    model = da.gapfill.fit("linear", holdout=0)
    out = da.gapfill.fill(model, diagnostics=False)
    path = figures.diagnostics_figure(out, "sst", np.array([]), tmp_path / "d.png", time_index=2)
    assert path.read_bytes()[:8] == PNG


def test_coastline_file_only_when_on_disk(tmp_path, monkeypatch):
    import cartopy

    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", tmp_path / "pre")
    monkeypatch.setitem(cartopy.config, "data_dir", tmp_path / "data")
    assert figures.coastline_file() is None
    shp = tmp_path / "data" / "shapefiles" / "natural_earth" / "physical" / "ne_110m_coastline.shp"
    shp.parent.mkdir(parents=True)
    shp.write_bytes(b"")
    assert figures.coastline_file() == shp
