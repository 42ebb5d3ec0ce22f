"""The interface every filling method implements.

A method sees only normalised numpy arrays laid out as ``(channel, time, y, x)``
with NaN where a value is missing. Everything about xarray, dims, dask,
normalisation, observed-value pass-through and the CF product is handled
outside the method (see :mod:`gapfill.cube` and :mod:`gapfill.fitted`), so a
method is a small class with ``fit``, ``fill`` and a weights-only state.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gapfill.cube import Coords, Cube

if TYPE_CHECKING:
    import torch


@dataclass
class FillResult:
    """What a method returns from :meth:`Method.fill`.

    Attributes
    ----------
    values
        ``(C, T, H, W)`` float32 array in normalised units. Missing pixels that
        the method could fill hold finite values; observed pixels may hold
        anything (they are replaced by the observations afterwards).
    error
        Optional ``(C, T, H, W)`` one-sigma error estimate in normalised units,
        or ``None`` when the method gives none.
    """

    values: np.ndarray
    error: np.ndarray | None = None


#: The core axes a :class:`Chunking` talks about.
AXES = ("time", "y", "x")


@dataclass(frozen=True)
class Chunking:
    """How :meth:`Method.fill` can run on chunks of a dask-backed cube.

    The fill of a chunk must equal (up to float round-off) the same pixels of
    the whole-cube fill; :mod:`gapfill.chunked` rechunks only the axes in
    ``whole`` to one chunk and keeps the input chunks on the others.

    Attributes
    ----------
    whole
        Axes (``"time"``, ``"y"``, ``"x"``) each chunk must span entirely. The
        default, all three, is always right (one block, not memory-bounded).
        The channel axis is always whole.
    halo
        Pixels of neighbouring chunks added on each side along an axis (dask
        ``overlap``), and trimmed from the output.
    time_edges
        The method needs, for each pixel, its nearest observation before and
        after the chunk along time (value and time index): :meth:`Method.fill_chunk`
        receives them as :class:`TimeEdges`. It is the exact form of an
        unbounded time halo (e.g. linear interpolation across a long gap).
    """

    whole: tuple[str, ...] = AXES
    halo: dict[str, int] = field(default_factory=dict)
    time_edges: bool = False

    def __post_init__(self) -> None:
        bad = sorted(set(self.whole) - set(AXES)) + sorted(set(self.halo) - set(AXES))
        if bad:
            raise ValueError(f"Chunking: unknown axes {bad}; use {AXES}")
        if any(int(v) < 0 for v in self.halo.values()):
            raise ValueError("Chunking: halo widths must be >= 0")
        if self.time_edges and ("time" in self.whole or any(self.halo.values())):
            raise ValueError(
                "Chunking: time_edges replaces a whole time axis or a time halo, and goes "
                "without halos"
            )


@dataclass
class TimeEdges:
    """The nearest observations outside a time chunk, per pixel.

    Attributes
    ----------
    start
        Time index of the chunk's first frame in the whole cube.
    before_value, before_index
        ``(C, H, W)``: the last observation before the chunk and its time
        index (NaN where there is none).
    after_value, after_index
        ``(C, H, W)``: the first observation after the chunk and its time index.
    times
        ``(T_total,)`` time positions in days of the whole series (indexed by
        the time indices above), or ``None`` for equally spaced frames.
    """

    start: int
    before_value: np.ndarray
    before_index: np.ndarray
    after_value: np.ndarray
    after_index: np.ndarray
    times: np.ndarray | None = None


#: Below this many values (of a cube, or a chunk being filled), ``threads=None`` runs
#: BLAS on one thread: small matrix products lose more to thread start-up and to
#: contention with other processes than they gain.
AUTO_THREADS_VALUES = 2**24


@dataclass
class Options:
    """Base class of a method's options (a dataclass; subclass it per method).

    Attributes
    ----------
    threads
        BLAS threads used during ``fit`` and ``fill`` (every method has it).
        ``None``: one thread for cubes (or fill chunks) under
        ``AUTO_THREADS_VALUES`` values, BLAS's own default above; ``0``:
        BLAS's own default always. PyTorch's threads are not changed.
    """

    threads: int | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when a value is out of range."""


def _check_threads(threads: Any) -> None:
    ok = threads is None or (
        isinstance(threads, (int, np.integer)) and not isinstance(threads, bool) and threads >= 0
    )
    if not ok:
        raise ValueError(f"option 'threads' must be None or an integer >= 0, got {threads!r}")


@contextmanager
def limit_threads(threads: int | None, values: int) -> Iterator[None]:
    """Run the block with BLAS limited to ``threads`` (see :class:`Options`).

    ``values`` is the size of the work (values of the cube or chunk), for
    ``threads=None``.
    """
    if threads is None:
        threads = 1 if values < AUTO_THREADS_VALUES else 0
    if threads == 0:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(threads), user_api="blas"):
        yield


class Method(ABC):
    """A gap-filling method.

    Subclasses set ``name`` and ``Options`` (a dataclass of the method's
    options with defaults) and implement :meth:`fit`, :meth:`fill`,
    :meth:`state_dict` and :meth:`load_state_dict`.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    #: Whether :meth:`fill` returns an error estimate even with ``samples=1``.
    provides_error: ClassVar[bool] = False
    #: Whether ``fill(samples > 1)`` draws different fills (and so gives their spread as
    #: the error); deterministic methods ignore ``samples``.
    stochastic: ClassVar[bool] = False
    #: Whether ``fit`` trains data-parallel under ``torchrun`` (see :mod:`gapfill.ddp`).
    distributed: ClassVar[bool] = False
    #: Whether ``fit`` learns along time and so needs at least 2 frames; a method with
    #: ``False`` also fills a single 2-D frame (without a time dim).
    needs_time: ClassVar[bool] = True
    #: Independent hold-out draws :func:`gapfill.diagnostics.score` pools: the model's
    #: own, and for each other one the method fitted again without it. More than 1 only
    #: for methods whose fit costs about as little as their fill.
    holdout_draws: ClassVar[int] = 1
    #: Whether ``fit`` (the accessor's) fits the method on the validation pixels of the
    #: error model too, and its :meth:`calibration_copy` without them for the error model:
    #: for methods whose fit is cheap, so their fill loses none of the observations (the
    #: hold-out stays hidden); never for a streaming fit. Such a method does not
    #: :meth:`tune`.
    refit_with_validation: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        fields = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - fields)
        if unknown:
            close = {u: difflib.get_close_matches(u, sorted(fields), n=1) for u in unknown}
            hints = [f"{c[0]!r} for {u!r}" if len(unknown) > 1 else repr(c[0])
                     for u, c in close.items() if c]
            hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise ValueError(
                f"unknown option(s) {unknown} for method {self.name!r}{hint}; "
                f"valid options are {sorted(fields)}"
            )
        try:
            self.options = self.Options(**options)
        except TypeError as err:  # pragma: no cover - dataclass signature errors
            raise ValueError(f"bad options for method {self.name!r}: {err}") from None
        self.options.validate()
        _check_threads(self.options.threads)
        #: JSON-serialisable facts learned by ``fit`` (chosen modes, losses, ...).
        self.fit_info: dict[str, Any] = {}

    @abstractmethod
    def fit(self, cube: Cube, rng: np.random.Generator) -> None:
        """Learn from the gappy cube (its observed pixels only)."""

    @abstractmethod
    def fill(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        samples: int = 1,
        coords: Coords | None = None,
    ) -> FillResult:
        """Fill the NaNs of a normalised ``(C, T, H, W)`` float32 array.

        ``samples`` > 1 asks stochastic methods for that many fills (their mean
        is the field, their spread the error); deterministic methods ignore it.
        ``coords`` are the coordinates of ``x`` for methods that use them.
        """

    def tune(
        self,
        x: np.ndarray,
        truth: np.ndarray,
        validation: np.ndarray,
        rng: np.random.Generator,
        coords: Coords | None = None,
    ) -> None:
        """Choose what the fit left open on validation pixels it never saw (default: nothing).

        ``fit`` (the accessor's) calls it once, after :meth:`fit` and before the
        error model learns: ``x`` is every observation (normalised ``(C, T, H, W)``,
        NaN = missing) but the ``validation`` pixels, and ``truth`` the same with their
        observed values. It includes the hold-out, which the fit never saw and which is
        never scored here, so its gaps are as dense as those :meth:`fill` meets, less the
        validation pixels.
        """

    @property
    def fills_without_training(self) -> bool:
        """Whether the fitted method fills without anything it trained: a learned method
        whose validation never beat its untrained weights (``best_step`` 0 in its
        ``_meta``), or that chose its untrained start (e.g. its first guess without the
        network). Its fill then depends on the fit's data only through discrete choices,
        and the repeated hold-out and validation draws reuse it instead of training again
        (:func:`gapfill.diagnostics.holdout_draws`)."""
        return getattr(self, "_meta", {}).get("best_step") == 0

    def calibration_copy(self) -> Method:
        """An unfitted copy of this fitted method that makes its choices, for the error model.

        For a method fitted on every observation but the hold-out
        (:attr:`refit_with_validation`), ``fit`` (the accessor's) fits this copy once more
        without the validation pixels and learns the error model from its errors there.
        The default copy has the same options and chooses again; a method whose fit
        chooses something from the data (the number of EOF modes) fixes it here, so the
        error model learns the error of a fit like the product's.
        """
        return type(self)(**self.options_dict())

    def fit_streaming(self, cube: Cube, rng: np.random.Generator) -> None:
        """Learn from a dask-backed cube too large for memory, in a few passes over its blocks.

        Optional: a method that can fit this way overrides it (see
        :mod:`gapfill.streaming`); ``fit(..., streaming_fit=None)`` then uses it
        for large dask-backed cubes.
        """
        raise NotImplementedError(f"method {self.name!r} has no streaming fit")

    @classmethod
    def has_streaming_fit(cls) -> bool:
        """Whether the method overrides :meth:`fit_streaming`."""
        return cls.fit_streaming is not Method.fit_streaming

    def gives_error(self, samples: int) -> bool:
        """Whether :meth:`fill` returns an error for this many samples."""
        return self.provides_error or (self.stochastic and samples > 1)

    def chunking(self) -> Chunking:
        """How :meth:`fill` can run per chunk of a dask-backed cube (default: one block).

        Override it when the fill of a chunk (plus a halo) equals the
        whole-cube fill on that chunk; see :class:`Chunking`.
        """
        return Chunking()

    def fill_chunk(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        samples: int = 1,
        coords: Coords | None = None,
        edges: TimeEdges | None = None,
    ) -> FillResult:
        """Fill one chunk; ``edges`` is given when :meth:`chunking` asks for ``time_edges``.

        The default ignores ``edges`` and calls :meth:`fill`.
        """
        return self.fill(x, rng, samples=samples, coords=coords)

    def state_dict(self) -> dict[str, Any]:
        """Arrays (numpy or torch) that, with the options, rebuild the fitted method."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (values arrive as torch tensors)."""

    def _check_fill(
        self, x: np.ndarray, samples: int, fitted: bool, channels: int | None = None
    ) -> None:
        """Raise unless the method is ``fitted``, ``x`` is ``(C, T, H, W)`` (with
        ``C == channels`` when given) and ``samples >= 1``."""
        if not fitted:
            raise RuntimeError(
                f"the {self.name} method is not fitted: call fit() or load_state_dict()")
        if x.ndim != 4 or (channels is not None and x.shape[0] != channels):
            with_c = "" if channels is None else f" with C={channels}"
            raise ValueError(f"expected a (C, T, H, W) array{with_c}, got shape {x.shape}")
        if samples < 1:
            raise ValueError("samples must be >= 1")

    def options_dict(self) -> dict[str, Any]:
        """The options as a JSON-serialisable dict."""
        return dataclasses.asdict(self.options)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options_dict().items())
        return f"{type(self).__name__}({opts})"


class NetworkMethod(Method):
    """A method whose fitted state is one torch network, ``self.net``, with the JSON
    ``self._meta`` that rebuilds it (its config).

    Subclasses implement :meth:`_rebuild`; ``state_dict`` holds the weights under
    :attr:`network_key` and the meta (:func:`network_state`).
    """

    #: The key of the network's weights in :meth:`state_dict` (and in checkpoints).
    network_key: ClassVar[str] = "net"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.net: Any = None
        self._meta: dict[str, Any] = {}

    def _rebuild(self) -> torch.nn.Module:
        """The (untrained) network that ``self._meta`` describes."""
        raise NotImplementedError

    def _place(self, net: torch.nn.Module) -> torch.nn.Module:
        """Where a loaded network goes (default: the CPU, in evaluation mode)."""
        return net.eval()

    def state_dict(self) -> dict[str, Any]:
        """The network's weights and the configuration needed to rebuild it."""
        return network_state(self.network_key, self.net, self._meta)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the network from :meth:`state_dict`'s output."""

        def build(meta: dict[str, Any]) -> Any:
            self._meta = meta  # what _rebuild reads
            return self._rebuild()

        _, net = load_network(state, self.network_key, build)
        self.net = self._place(net)


def check_grid(method: str, fitted: np.ndarray | tuple[int, ...], x: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``x`` (``(C, T, H, W)``) has the ``fitted`` ``(C, H, W)``
    grid: a method that learns per pixel fills frames of the grid it was fitted on."""
    grid = (x.shape[0], *x.shape[2:])
    if tuple(int(n) for n in fitted) != grid:
        raise ValueError(
            f"{method}: fitted on a (C, H, W) = {tuple(int(n) for n in fitted)} grid, got "
            f"{grid}; it fills frames of the grid it was fitted on (fit again on this one)"
        )


def as_numpy(value: Any) -> np.ndarray:
    """Turn a torch tensor or array-like from a state dict into a numpy array."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def network_state(key: str, net: torch.nn.Module | None, meta: dict[str, Any]) -> dict[str, Any]:
    """The state dict of a method with one network: ``{key: CPU weights, "meta": JSON}``.

    ``meta`` holds what rebuilding the network needs (its config); an unfitted
    method (``net`` is ``None``) gives ``{}``.
    """
    if net is None:
        return {}
    weights = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return {key: weights, "meta": json.dumps(meta)}


def load_network(
    state: dict[str, Any], key: str, build: Callable[[dict[str, Any]], torch.nn.Module]
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Read what :func:`network_state` wrote: the meta, and the network ``build(meta)``
    made with the weights of ``state[key]`` loaded (torch tensors or arrays)."""
    import torch

    meta = state["meta"]
    meta = json.loads(meta if isinstance(meta, str) else str(meta))
    net = build(meta)
    net.load_state_dict({k: torch.as_tensor(as_numpy(v)) for k, v in state[key].items()})
    return meta, net
