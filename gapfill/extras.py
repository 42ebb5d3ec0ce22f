"""Optional dependencies: import them where a feature needs them, with a message naming
the extra that installs them.

============  ==========================================  ===============================
extra         packages                                     for
============  ==========================================  ===============================
``plot``      matplotlib, cartopy                          diagnostics figures (maps)
``video``     av (PyAV), scikit-video, opencv, pillow      video in and out, ``flowfill``
``hpc``       dask-jobqueue                                SLURM/PBS clusters (``compute:``)
``samples``   iris-sample-data                             ``sample:ostia``
``all``       every one of the above
============  ==========================================  ===============================
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "missing_message", "require"]

#: import name -> (pip package, extra that installs it)
EXTRAS = {
    "matplotlib": ("matplotlib", "plot"),
    "cartopy": ("cartopy", "plot"),
    "av": ("av", "video"),
    "skvideo": ("scikit-video", "video"),
    "cv2": ("opencv-python-headless", "video"),
    "PIL": ("pillow", "video"),
    "dask_jobqueue": ("dask-jobqueue", "hpc"),
    "iris_sample_data": ("iris-sample-data", "samples"),
}


def missing_message(module: str, feature: str) -> str:
    """What to install for ``feature``, which needs the module ``module``."""
    package, extra = EXTRAS[module.split(".")[0]]
    return (f"{feature} needs {package}, an optional dependency: "
            f"pip install 'gapfill[{extra}]' (or pip install {package})")


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (a key of :data:`EXTRAS`, or one of its submodules) for ``feature``.

    Raises
    ------
    ImportError
        If it is not installed; the message names the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(missing_message(module, feature)) from None
