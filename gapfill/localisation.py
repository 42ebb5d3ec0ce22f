"""Covariance localisation: a covariance estimated from few frames, cut off with distance.

A sample covariance of ``n`` frames has rank below ``n`` and spurious correlations between
distant pixels. Multiplying it element by element by a compactly supported correlation
function of the pixels' distance (a Schur product, which keeps it a covariance) removes
them and raises its rank, as ensemble data assimilation does (Houtekamer and Mitchell
2001; Hamill et al. 2001). The function here is Gaspari and Cohn's (1999, eq. 4.10), a
fifth-order piecewise rational function that is 1 at distance 0 and 0 from twice the
length on, and the distance is the chordal distance on the sphere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

#: Earth's mean radius (km).
EARTH_RADIUS_KM = 6371.0


def gaspari_cohn(r: np.ndarray) -> np.ndarray:
    """Gaspari and Cohn's correlation at ``r`` = distance / length (1 at 0, 0 from 2 on)."""
    r = np.abs(np.asarray(r, dtype=np.float64))
    out = np.zeros_like(r)
    near, far = r <= 1, (r > 1) & (r < 2)
    x = r[near]
    out[near] = -0.25 * x**5 + 0.5 * x**4 + 0.625 * x**3 - 5 / 3 * x**2 + 1
    x = r[far]
    out[far] = x**5 / 12 - 0.5 * x**4 + 0.625 * x**3 + 5 / 3 * x**2 - 5 * x + 4 - 2 / (3 * x)
    return out


def chordal_km(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Chordal distances (km) between every pair of the points ``(lat[i], lon[i])`` (degrees)."""
    la, lo = np.deg2rad(np.asarray(lat, np.float64)), np.deg2rad(np.asarray(lon, np.float64))
    xyz = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=1)
    squared = (xyz * xyz).sum(1)
    gram = squared[:, None] + squared[None] - 2 * xyz @ xyz.T
    return EARTH_RADIUS_KM * np.sqrt(np.maximum(gram, 0.0))


def grid_distances(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Chordal distances (km) between the pixels of a ``lat`` × ``lon`` grid (degrees),
    ordered row by row (as ``reshape`` flattens a ``(lat, lon)`` frame)."""
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    return chordal_km(lat2.ravel(), lon2.ravel())


def is_lonlat(da: xr.DataArray, dims: Any) -> bool:
    """Whether the y and x dims of ``da`` are latitude and longitude in degrees (by their
    units, or by their names ``lat``/``latitude`` and ``lon``/``longitude``)."""
    def units(d: str) -> str:
        return str(da[d].attrs.get("units", "")).lower() if d in da.coords else ""

    lon = units(dims.x).startswith("degree") or dims.x.lower() in ("lon", "longitude")
    lat = units(dims.y).startswith("degree") or dims.y.lower() in ("lat", "latitude")
    return lon and lat and dims.x in da.coords and dims.y in da.coords
