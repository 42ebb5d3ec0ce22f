"""gapfill: fill gaps in gridded geoscience fields through xarray.

``import gapfill`` registers the ``.gapfill`` accessor on DataArray and
Dataset::

    model = da.gapfill.fit(method="eof")
    out = da.gapfill.fill(model)      # filled field, flag, error, hold-out scores

The public API is small: the accessors, :func:`open`, :func:`load`,
:mod:`gapfill.methods` (the registry) and :mod:`gapfill.masks`.
"""

from gapfill import accessor as _accessor  # noqa: F401  (registers .gapfill)
from gapfill import methods
from gapfill.fitted import FittedModel, load
from gapfill.version import __version__


def open(*args, **kwargs):  # noqa: A001 - mirrors xarray.open_dataset
    """Open NetCDF file(s) or a Zarr store; see :func:`gapfill.io.open`."""
    from gapfill.io import open as _open

    return _open(*args, **kwargs)


__all__ = ["FittedModel", "__version__", "load", "methods", "open"]
