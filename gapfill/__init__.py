"""gapfill: fill gaps in gridded geoscience fields through xarray.

``import gapfill`` registers the ``.gapfill`` accessor on DataArray and
Dataset::

    model = da.gapfill.fit(method="eof")
    out = da.gapfill.fill(model)      # filled field, flag, error, hold-out scores

The public API is small: the accessors, :func:`open`, :func:`load`,
:mod:`gapfill.methods` (the registry) and :mod:`gapfill.masks`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gapfill")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

from gapfill import accessor as _accessor  # noqa: E402,F401  (registers .gapfill)
from gapfill import methods  # noqa: E402
from gapfill.model import FittedModel, load  # noqa: E402


def open(*args, **kwargs):  # noqa: A001 - mirrors xarray.open_dataset
    """Open NetCDF file(s) or a Zarr store; see :func:`gapfill.io.open`."""
    from gapfill.io import open as _open

    return _open(*args, **kwargs)


__all__ = ["FittedModel", "__version__", "load", "methods", "open"]
