"""Chunk-wise filling of dask-backed cubes, with memory bounded by the chunk size.

Each method declares with :meth:`~gapfill.methods.Method.chunking` how its fill
can run on pieces of a cube (:class:`~gapfill.methods.Chunking`): the axes a
chunk must span entirely, a halo per axis, and whether it needs each pixel's
nearest observations outside a time chunk (:class:`~gapfill.methods.TimeEdges`).
:func:`fill_lazy` then builds one dask graph:

* only the axes the method needs whole are rechunked (channels are always
  whole); other axes keep the input chunks, and so does the output;
* a halo is added with :func:`dask.array.overlap.overlap` and trimmed after;
* pixels "never observed" are those without an observation over the *whole*
  time axis: when chunks split time, that ``(C, 1, H, W)`` mask is a dask
  reduction over an independent copy of the input's graph (:func:`independent`:
  the same tasks under new keys), so the reduction reads the input in a pass of
  its own instead of keeping every block in memory until the fill needs it;
* time edges are a scan over time blocks: per block, the last and the first
  observation of every pixel (a frame-sized summary), chained block to block
  (again on an independent copy of the input).

Nothing is computed when the graph is built.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from gapfill import core
from gapfill.methods.base import Chunking, Coords, TimeEdges

if TYPE_CHECKING:
    import dask.array as dsa

    from gapfill.fitted import FittedModel

#: Warn when a rechunked block is larger than this many times dask's ``array.chunk-size``.
LARGE_BLOCK_FACTOR = 8
#: A fill task fills its block this many bytes (as float64) at a time, when the method
#: allows time chunks: the method makes several temporaries the size of what it fills.
FILL_BLOCK_BYTES = 2**25

#: Axis of each core role in the 4-D ``(C, T, H, W)`` layout used here.
_AXIS = {"time": 1, "y": 2, "x": 3}


def plan(x4: dsa.Array, rule: Chunking, method: str = "") -> dict[int, int]:
    """The rechunking a method needs: ``{axis: -1}`` for the channel and every whole axis.

    Warns (``UserWarning``) when the resulting blocks are much larger than dask's
    ``array.chunk-size`` and larger than the input's, naming the axes to chunk instead.
    """
    import dask
    from dask.utils import parse_bytes

    target = {0: -1} | {_AXIS[name]: -1 for name in rule.whole}
    target = {ax: v for ax, v in target.items() if len(x4.chunks[ax]) > 1}
    if not target:
        return {}
    new = [((n,),) if ax in target else (c,) for ax, (n, c) in enumerate(zip(x4.shape, x4.chunks))]
    block = x4.dtype.itemsize * int(np.prod([max(c[0]) for c in new]))
    old = x4.dtype.itemsize * int(np.prod([max(c) for c in x4.chunks]))
    limit = LARGE_BLOCK_FACTOR * parse_bytes(dask.config.get("array.chunk-size"))
    if block > max(limit, old):
        free = [n for n, ax in _AXIS.items() if ax not in target] or ["none"]
        warnings.warn(
            f"method {method!r} needs whole {sorted(n for n, a in _AXIS.items() if a in target)} "
            f"axes per chunk: rechunking makes blocks of {block / 2**20:.0f} MiB (input chunks: "
            f"{old / 2**20:.0f} MiB). Chunk the input along {free} to keep memory bounded.",
            UserWarning,
            stacklevel=4,
        )
    return target


def fill_lazy(
    data: dsa.Array,
    model: FittedModel,
    *,
    coords: Coords | None,
    seed: int = 0,
    samples: int = 1,
    fill_never_observed: bool = False,
    with_error: bool = True,
    dtype: Any = np.float32,
    flags: bool = True,
) -> tuple[dsa.Array, dsa.Array | None, dsa.Array | None]:
    """Fill a dask array laid out ``(C, T, H, W)`` or ``(T, H, W)`` chunk by chunk.

    Returns
    -------
    filled, error, flag
        Dask arrays with ``data``'s shape and chunks: the filled values (``dtype``),
        the one-sigma error (``None`` unless ``with_error``) and the uint8 flags
        (``None`` unless ``flags``).
    """
    import dask
    import dask.array as dsa
    from dask.array.overlap import overlap, trim_internal

    squeeze = data.ndim == 3
    x4 = data[None] if squeeze else data
    rule = model.method.chunking()
    calibrated = with_error and model.error_model is not None
    if calibrated and not {"y", "x"} <= set(rule.whole):  # distances to the data: whole frames
        rule = dataclasses.replace(rule, whole=tuple(dict.fromkeys((*rule.whole, "y", "x"))))
    target = plan(x4, rule, model.name)

    def prepare(d: dsa.Array) -> dsa.Array:
        d = d[None] if squeeze else d
        return d.rechunk(target) if target else d

    xr_ = prepare(data)
    n_t = len(xr_.chunks[1])
    whole = {name for name, ax in _AXIS.items() if len(xr_.chunks[ax]) == 1}

    # Never-observed pixels need the whole time axis: a separate, independent pass (or the time
    # edges, which tell whether a pixel is observed before or after its chunk).
    # The error model's time features look past the chunk too: they need the edges as well.
    time_features = calibrated and model.error_model.sees_time
    use_edges = (rule.time_edges or time_features) and n_t > 1

    depth = {
        _AXIS[name]: int(w) for name, w in rule.halo.items()
        if int(w) > 0 and name not in whole
    }
    # A halo needs chunks at least as wide: merge neighbouring chunks where they are not
    # (the output goes back to the input's chunks at the end).
    grow = {ax: _at_least(xr_.chunks[ax], w) for ax, w in depth.items()
            if min(xr_.chunks[ax]) < w}

    def blocks(d: dsa.Array) -> dsa.Array:  # laid out as the blocks filled
        d = prepare(d)
        return d.rechunk(grow) if grow else d

    xr_ = blocks(data)
    obs_any = None
    if "time" not in whole and not use_edges and (flags or not fill_never_observed):
        obs_any = dsa.isfinite(blocks(independent(data))).any(axis=1, keepdims=True)
    block_src = overlap(xr_, depth, boundary="none") if depth else xr_
    extra: list[Any] = []
    if obs_any is not None:
        space = {ax: w for ax, w in depth.items() if ax != 1}
        extra.append(overlap(obs_any, space, boundary="none") if space else obs_any)
    edges = None
    if use_edges:  # two independent reads: group summaries, then the blocks' own edges
        # (a block with a time halo also holds its neighbours' observations next to it,
        # so its chunk's edges serve it; those of the halo frames are trimmed away)
        edges = _time_edges(blocks(independent(data)), blocks(independent(data, "again")))
    if edges is not None:
        extra.append(edges)

    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in xr_.chunks]
    n_out = 2 if with_error else 1
    # Big blocks are filled a few frames at a time inside their task, when the method
    # allows time chunks (and has no time halo): its temporaries stay small, and the graph
    # (and the time edges it holds) keeps the input's time chunks.
    split = 0
    if "time" not in rule.whole and 1 not in depth:
        frame = 8 * math.prod(max(c) for c in xr_.chunks[:1] + xr_.chunks[2:])
        split = max(1, FILL_BLOCK_BYTES // frame)
    # One key holds the model (e.g. an EOF basis of C·H·W × k): a distributed scheduler
    # then ships it once per worker, not once per task.
    model_key = dask.delayed(model, name=f"gapfill-model-{uuid.uuid4().hex}")
    out = dsa.map_blocks(
        _fill_block,
        block_src,
        *extra,
        model=model_key,
        seed=seed,
        coords=coords,
        samples=samples,
        fill_never_observed=fill_never_observed,
        has_never=obs_any is not None,
        has_edges=use_edges,
        with_error=with_error,
        starts=starts,
        depth=depth,
        split=split,
        out_dtype=np.dtype(dtype),
        new_axis=0,
        chunks=((n_out,), *block_src.chunks),
        dtype=dtype,
        meta=np.array((), dtype=dtype),
    )
    if depth:
        out = trim_internal(out, {ax + 1: w for ax, w in depth.items()}, boundary="none")
    flag = None
    if flags:
        flag_args = [a for a in (obs_any, edges) if a is not None]
        flag = dsa.map_blocks(
            _flag_block, xr_, *flag_args, dtype=np.uint8, meta=np.array((), dtype=np.uint8),
            edges=edges is not None,
        )
        flag = flag.rechunk(x4.chunks) if (target or grow) else flag
    if target or grow:
        out = out.rechunk(((n_out,), *x4.chunks))
    filled, error = out[0], (out[1] if with_error else None)
    if squeeze:
        filled = filled[0]
        flag = None if flag is None else flag[0]
        error = None if error is None else error[0]
    return filled, error, flag


def _at_least(chunks: tuple[int, ...], width: int) -> tuple[int, ...]:
    """``chunks`` with neighbours merged until each is at least ``width`` (if the axis is)."""
    out: list[int] = []
    acc = 0
    for c in chunks:
        acc += c
        if acc >= width:
            out.append(acc)
            acc = 0
    if acc:
        if out:
            out[-1] += acc
        else:
            out.append(acc)
    return tuple(out)


def independent(x: dsa.Array, tag: str = "") -> dsa.Array:
    """The same array computed by the same tasks under new keys: a second, separate read.

    Like :func:`dask.graph_manipulation.clone`, which this dask's task fusion cannot
    optimise (``Cannot fuse tasks with multiple outputs``) once the clone is combined
    with the original in one graph.
    """
    import dask.array as dsa
    from dask.base import tokenize

    try:
        from dask._task_spec import GraphNode  # dask >= 2024.12: tasks rename their inputs
    except ImportError:  # pragma: no cover - older dask, whose clone fuses fine
        from dask.graph_manipulation import clone

        return clone(x, seed=tag)
    token = tokenize(x, "gapfill-independent", tag)

    def rename(key: Any) -> Any:
        if isinstance(key, tuple):
            return (f"{key[0]}-independent-{token}", *key[1:])
        return f"{key}-independent-{token}"

    dsk = dict(x.__dask_graph__())
    subs = {k: rename(k) for k in dsk}
    graph = {
        subs[k]: v.substitute(subs, key=subs[k]) if isinstance(v, GraphNode) else v
        for k, v in dsk.items()
    }
    return dsa.Array(graph, rename(x.name), x.chunks, meta=x._meta)


def _fill_block(
    block: np.ndarray,
    *extra: np.ndarray,
    model: FittedModel,
    seed: int,
    coords: Coords | None,
    samples: int,
    fill_never_observed: bool,
    has_never: bool,
    has_edges: bool,
    with_error: bool,
    starts: list[np.ndarray],
    depth: dict[int, int],
    split: int,
    out_dtype: np.dtype,
    block_info: dict | None = None,
) -> np.ndarray:
    """Fill one (haloed) ``(C, T, H, W)`` block; returns ``(1 or 2, C, T, H, W)``.

    With ``split`` > 0 the block is filled ``split`` frames at a time (the method allows
    time chunks), so the method's temporaries stay small; the never-observed mask and
    the time edges of each piece come from the whole block.
    """
    loc = block_info[0]["chunk-location"] if block_info else (0, 0, 0, 0)
    # Where the block starts in the whole cube (a halo reaches back except at the first block).
    first = [
        int(starts[ax][i]) - (depth.get(ax, 0) if i > 0 else 0) for ax, i in enumerate(loc)
    ]
    extra_ = list(extra)
    if has_never:
        never = ~extra_.pop(0).astype(bool)
    edges = extra_.pop(0) if has_edges else None
    if edges is not None:
        never = _never_from_edges(block, edges)
    elif not has_never:  # the block holds the whole time axis
        never = ~np.isfinite(block).any(1, keepdims=True)
    n_time = block.shape[1]
    step = split if 0 < split < n_time else n_time
    pieces = [(a, min(n_time, a + step)) for a in range(0, n_time, step)]
    piece_edges = _piece_edges(block, edges, pieces, first[1]) if edges is not None else None
    n_out = 2 if with_error else 1
    out = np.empty((n_out, *block.shape), dtype=out_dtype)
    for k, (a, b) in enumerate(pieces):
        t = slice(first[1] + a, first[1] + b)
        sub = None if coords is None else coords.isel(
            t,
            slice(first[2], first[2] + block.shape[2]),
            slice(first[3], first[3] + block.shape[3]),
        )
        rng_seed = seed if not any(loc) and k == 0 else [seed, *map(int, loc), k]
        te = None
        if piece_edges is not None:
            e = piece_edges[k]
            norm = model.normaliser
            te = TimeEdges(
                start=first[1] + a,
                before_value=norm.normalise(e[:, 0]),
                before_index=e[:, 1],
                after_value=norm.normalise(e[:, 2]),
                after_index=e[:, 3],
                times=None if coords is None else coords.time,
            )
        raw = block[:, a:b].astype(np.float64)
        filled, error = core.run_method(
            model, raw, rng_seed, sub, samples, fill_never_observed, never=never, edges=te
        )
        out[0, :, a:b] = filled
        if with_error:
            out[1, :, a:b] = error if error is not None else np.nan
    return out


def _piece_edges(
    block: np.ndarray, edges: np.ndarray, pieces: list[tuple[int, int]], start: int
) -> list[np.ndarray]:
    """The time edges of each piece of a block, from the block's edges and its data."""
    if len(pieces) == 1:
        return [edges]
    sums = [_summary(block[:, a:b], start + a) for a, b in pieces]
    before = [edges[:, :2]]
    for k in range(1, len(pieces)):
        before.append(_merge(sums[k - 1], before[-1], 0))
    after = [edges[:, 2:]]
    for k in range(len(pieces) - 2, -1, -1):
        after.append(_merge(sums[k + 1], after[-1], 1))
    return [_edges(b, a) for b, a in zip(before, after[::-1])]


def _flag_block(block: np.ndarray, extra: np.ndarray | None = None, edges: bool = False
                ) -> np.ndarray:
    if extra is None:
        never = None
    elif edges:
        never = _never_from_edges(block, extra)
    else:
        never = ~extra.astype(bool)
    return core.flags(block, time_axis=1, never=never)


def _never_from_edges(block: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(C, 1, H, W)``: no observation in the block, nor before or after it."""
    seen = np.isfinite(block).any(1) | np.isfinite(edges[:, 1]) | np.isfinite(edges[:, 3])
    return ~seen[:, None]


# -- time edges ------------------------------------------------------------------------------
def _summary(block: np.ndarray, start: int) -> np.ndarray:
    """``(C, 4, H, W)``: last value, its time index, first value, its index (NaN if none),
    in the data's float dtype (time indices are exact in float32 up to 2**24 frames)."""
    obs = np.isfinite(block)
    n_t = block.shape[1]
    dtype = np.result_type(block.dtype, np.float32)
    out = np.full((block.shape[0], 4, *block.shape[2:]), np.nan, dtype=dtype)
    # one sweep each way, overwriting where observed: no index arrays, no gathers
    for i in range(n_t):
        np.copyto(out[:, 0], block[:, i], where=obs[:, i])
        np.copyto(out[:, 1], start + i, where=obs[:, i])
    for i in range(n_t - 1, -1, -1):
        np.copyto(out[:, 2], block[:, i], where=obs[:, i])
        np.copyto(out[:, 3], start + i, where=obs[:, i])
    return out


def _merge(summary: np.ndarray, far: np.ndarray, part: int) -> np.ndarray:
    """Per pixel, the ``(value, index)`` of a block's ``summary`` (its last observation for
    ``part`` 0, its first for 1) where it has one, else ``far``'s."""
    near = summary[:, 2 * part : 2 * part + 2]
    return np.where(np.isfinite(near[:, 1:2]), near, far)


def _edges(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``(C, 4, H, W)``: before value, before index, after value, after index."""
    return np.concatenate([before, after], axis=1)


def _combine(early: np.ndarray, late: np.ndarray) -> np.ndarray:
    """The summary of two consecutive stretches of time from theirs (``early`` first)."""
    last = np.where(np.isfinite(late[:, 1:2]), late[:, :2], early[:, :2])
    first = np.where(np.isfinite(early[:, 3:4]), early[:, 2:], late[:, 2:])
    return np.concatenate([last, first], axis=1)


def _time_edges(x4: dsa.Array, again: dsa.Array | None = None) -> dsa.Array:
    """Dask array ``(C, 4 · n_time_blocks, H, W)`` of each time block's :class:`TimeEdges`.

    A prefix scan of the blocks' last observations gives "before", a suffix scan of
    their first observations "after". Both scans run over groups of about
    ``sqrt(n_blocks)`` blocks, whose summaries come from one read of ``x4``; within a
    group, the blocks' own edges come from a second read (``again``, an independent copy
    of the same array). So the edges held at any time are those of the groups plus one
    group's blocks — ``O(sqrt(n_blocks))`` frame-sized arrays instead of ``O(n_blocks)``.
    """
    import math

    import dask
    import dask.array as dsa

    blocks = x4.to_delayed(optimize_graph=False)  # (1, n_t, n_y, n_x)
    second = blocks if again is None else again.to_delayed(optimize_graph=False)
    dtype = np.result_type(x4.dtype, np.float32)
    n_t, n_y, n_x = blocks.shape[1:]
    t0 = np.concatenate([[0], np.cumsum(x4.chunks[1])[:-1]])
    size = max(1, math.isqrt(n_t - 1) + 1) if again is not None else n_t
    groups = [range(g, min(n_t, g + size)) for g in range(0, n_t, size)]
    summary = dask.delayed(_summary, pure=True)
    combine = dask.delayed(_combine, pure=True)
    merge = dask.delayed(_merge, pure=True)
    pair = dask.delayed(_edges, pure=True)

    def scans(sums: list, none: np.ndarray, before0: Any, after_last: Any) -> tuple[list, list]:
        before = [before0]
        for i in range(1, len(sums)):
            before.append(merge(sums[i - 1], before[-1], 0))
        after = [after_last]
        for i in range(len(sums) - 2, -1, -1):
            after.append(merge(sums[i + 1], after[-1], 1))
        return before, after[::-1]

    rows = []
    for j in range(n_y):
        row = []
        for k in range(n_x):
            shape = (x4.shape[0], 2, x4.chunks[2][j], x4.chunks[3][k])
            none = np.full(shape, np.nan, dtype=dtype)
            if len(groups) == 1:
                group_before, group_after = [none], [none]
            else:  # first read: one summary per group, then the scans over groups
                group_sums = []
                for g in groups:
                    acc = None
                    for i in g:
                        sm = summary(blocks[0, i, j, k], int(t0[i]))
                        acc = sm if acc is None else combine(acc, sm)
                    group_sums.append(acc)
                group_before, group_after = scans(group_sums, none, none, none)
            col = []
            for g, gb, ga in zip(groups, group_before, group_after):
                src = second if len(groups) > 1 else blocks
                sums = [summary(src[0, i, j, k], int(t0[i])) for i in g]
                before, after = scans(sums, none, gb, ga)
                col += [
                    dsa.from_delayed(pair(b, a), (shape[0], 4, *shape[2:]), dtype)
                    for b, a in zip(before, after)
                ]
            row.append(dsa.concatenate(col, axis=1))
        rows.append(row)
    return dsa.block([[r for r in row] for row in rows]) if (n_y, n_x) != (1, 1) else rows[0][0]
