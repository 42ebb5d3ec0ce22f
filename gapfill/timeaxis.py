"""The time coordinate of a cube: its order, and time as numbers methods can use.

Every path into gapfill (the accessor, :class:`~gapfill.cube.Cube`, recipe
validation and ``gapfill run``) checks the time coordinate here:

* :func:`check_order` refuses duplicate times (which time would a fill belong
  to?) and tells whether the times are out of order;
* :func:`sort_time` sorts an out-of-order cube with a :class:`TimeOrderWarning`
  and returns the permutation, so a result can be put back in the input's
  order with :func:`restore_order` (``fill`` returns its product in the
  input's order);
* :func:`days` gives the time positions in days (datetime64, cftime dates of
  any calendar, including ``360_day``, or numbers with optional CF units such
  as ``"hours since 1970-01-01"``), the distances that methods interpolating
  or smoothing in time use, so an irregular axis (a missing month) is handled
  as such rather than as equally spaced frames;
* :func:`time_of_year` gives the fraction of the (calendar's) year of dated
  times, for seasonal inputs.

Examples
--------
>>> import numpy as np, xarray as xr
>>> t = np.array(["2000-01-01", "2000-03-01", "2000-02-01"], dtype="datetime64[ns]")
>>> da = xr.DataArray(np.arange(3.0), dims="time", coords={"time": t})
>>> check_order(da["time"].values, "time")
array([0, 2, 1])
>>> days(np.sort(t)).tolist()
[0.0, 31.0, 60.0]
"""

from __future__ import annotations

import re
import warnings
from typing import TypeVar

import numpy as np
import xarray as xr

__all__ = [
    "TimeOrderWarning", "check_order", "days", "is_dated", "is_regular", "restore_order",
    "sort_time", "time_of_year",
]

T = TypeVar("T", xr.DataArray, xr.Dataset)

#: Seconds in one unit of a CF ``"<unit> since <date>"`` string.
_UNIT_SECONDS = {
    "second": 1.0, "seconds": 1.0, "sec": 1.0, "secs": 1.0, "s": 1.0,
    "minute": 60.0, "minutes": 60.0, "min": 60.0, "mins": 60.0,
    "hour": 3600.0, "hours": 3600.0, "hr": 3600.0, "hrs": 3600.0, "h": 3600.0,
    "day": 86400.0, "days": 86400.0, "d": 86400.0,
}


class TimeOrderWarning(UserWarning):
    """The time coordinate was out of order and has been sorted."""


def is_dated(values: np.ndarray) -> bool:
    """Whether ``values`` are dates (datetime64 or cftime objects), not plain numbers."""
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return True
    return values.dtype == object and values.size > 0 and hasattr(values.flat[0], "calendar")


def check_order(values: np.ndarray, name: str = "time") -> np.ndarray | None:
    """Check a time coordinate's order.

    Parameters
    ----------
    values
        The coordinate's values (datetime64, cftime dates or numbers).
    name
        The coordinate's name, for messages.

    Returns
    -------
    numpy.ndarray or None
        ``None`` when the times strictly increase; otherwise the permutation
        that sorts them (a stable argsort).

    Raises
    ------
    ValueError
        If a time occurs more than once; the message names the first repeated
        times and how to drop them.
    """
    values = np.asarray(values)
    if values.size < 2:
        return None
    if values.dtype.kind == "M" and np.isnat(values).any():
        raise ValueError(f"coordinate {name!r} holds NaT; drop those frames first")
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    same = ordered[1:] == ordered[:-1]
    if np.any(same):
        repeated = ordered[1:][same]
        shown = ", ".join(str(v) for v in repeated[:3]) + (" ..." if repeated.size > 3 else "")
        raise ValueError(
            f"coordinate {name!r} has {repeated.size} duplicate time(s) ({shown}): each frame "
            f"needs its own time. Drop the repeats, e.g. "
            f"da.drop_duplicates({name!r}), or average them, e.g. da.groupby({name!r}).mean()."
        )
    if np.all(order == np.arange(values.size)):
        return None
    return order


def sort_time(da: T, dim: str, *, warn: bool = True) -> tuple[T, np.ndarray | None]:
    """Return ``da`` sorted along ``dim`` and the permutation used.

    Duplicate times raise (see :func:`check_order`). Out-of-order times are
    sorted (lazily for dask-backed data) with a :class:`TimeOrderWarning`
    when ``warn``; the permutation is ``None`` when nothing moved. Without a
    coordinate on ``dim`` the frames' order is taken as is.
    """
    if dim not in da.coords:
        return da, None
    order = check_order(da[dim].values, dim)
    if order is None:
        return da, None
    if warn:
        warnings.warn(
            f"the {dim!r} coordinate is not in increasing order; gapfill sorts it (the "
            "filled product is returned in the input's order). Sort it yourself to silence "
            f"this: da.sortby({dim!r}).",
            TimeOrderWarning,
            stacklevel=3,
        )
    return da.isel({dim: order}), order


def restore_order(obj: T, dim: str, order: np.ndarray | None) -> T:
    """Undo :func:`sort_time`: put ``obj`` (laid out in sorted time) back in the input's order."""
    if order is None:
        return obj
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return obj.isel({dim: inverse})


def days(values: np.ndarray, units: str | None = None) -> np.ndarray:
    """Time positions in days (float64), relative to the first value.

    Parameters
    ----------
    values
        datetime64 values, cftime dates (any calendar: a ``360_day`` month is
        30 days) or numbers.
    units
        For numbers: their CF units (``"hours since 1970-01-01"``, ``"days"``,
        ...), used to convert to days. Numbers without recognised time units
        are taken as they are (one unit = one "day").

    Returns
    -------
    numpy.ndarray
        ``(T,)`` float64, ``values[0]`` at 0.
    """
    values = np.asarray(values)
    if values.size == 0:
        return np.zeros(0)
    if values.dtype.kind == "M":
        delta = (values - values[0]).astype("timedelta64[ns]").astype(np.int64)
        return delta / 86_400e9
    if values.dtype.kind == "m":
        return values.astype("timedelta64[ns]").astype(np.int64) / 86_400e9
    if is_dated(values):
        import cftime

        first = values[0]
        calendar = first.calendar
        ref = f"days since {first.strftime('%Y-%m-%d %H:%M:%S')}"
        out = cftime.date2num(list(values), ref, calendar=calendar)
        return np.asarray(out, dtype=np.float64)
    if values.dtype.kind not in "iuf":
        raise ValueError(
            f"time values of dtype {values.dtype} cannot be turned into positions: use "
            "datetime64, cftime dates or numbers"
        )
    scale = _unit_days(units)
    out = values.astype(np.float64) * scale
    return out - out[0]


def _unit_days(units: str | None) -> float:
    """Days in one unit of a CF time ``units`` string (1 when not recognised)."""
    if not units:
        return 1.0
    match = re.match(r"\s*([a-zA-Z]+)(\s+since\b|\s*$)", str(units))
    if not match:
        return 1.0
    return _UNIT_SECONDS.get(match.group(1).lower(), 86400.0) / 86400.0


def is_regular(positions: np.ndarray, rtol: float = 1e-6) -> bool:
    """Whether ``positions`` (from :func:`days`) are equally spaced."""
    steps = np.diff(np.asarray(positions, dtype=np.float64))
    if steps.size < 2:
        return True
    return bool(np.allclose(steps, steps[0], rtol=rtol, atol=0))


def time_of_year(values: np.ndarray) -> np.ndarray | None:
    """Fraction of the year in ``[0, 1)`` of each date, in the dates' own calendar.

    Day of year and time of day count, and the year's length is the
    calendar's (360 days in a ``360_day`` calendar, 366 in a leap year).
    ``None`` when ``values`` are not dates.
    """
    values = np.asarray(values)
    if not is_dated(values):
        return None
    dt = xr.DataArray(values, dims="t").dt
    doy = dt.dayofyear.values.astype(np.float64)
    hours = (dt.hour.values + dt.minute.values / 60.0 + dt.second.values / 3600.0) / 24.0
    length = dt.days_in_year.values.astype(np.float64)
    return np.mod((doy - 1.0 + hours) / length, 1.0)
