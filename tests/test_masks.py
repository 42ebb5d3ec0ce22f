"""Tests of the occlusion processes in :mod:`gapfill.masks`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gapfill import masks
from gapfill.masks import (
    PROCESSES,
    Cloud,
    Empirical,
    MovingBar,
    OcclusionProcess,
    Raindrops,
    RemovePixels,
    make,
)

SYNTHETIC = ["cloud", "raindrops", "moving_bar", "remove_pixels"]


def _data_mask(shape=(6, 8, 8), p=0.4, seed=0) -> np.ndarray:
    """A random missing pattern whose frames are all distinct."""
    return np.random.default_rng(seed).random(shape) < p


def _build(name: str, coverage: float | None = None, **kwargs) -> OcclusionProcess:
    if name == "empirical":
        return Empirical(_data_mask((10, 16, 16)), coverage, **kwargs)
    if coverage is None:
        return make(name, **kwargs)
    return make(name, coverage=coverage, **kwargs)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ----------------------------------------------------------------- contract
def test_registry_and_flags():
    assert set(PROCESSES) == {"cloud", "raindrops", "moving_bar", "remove_pixels", "empirical"}
    for name, cls in PROCESSES.items():
        assert cls.name == name
        assert issubclass(cls, OcclusionProcess)
        assert cls.moving is True
    assert isinstance(make("cloud", coverage=0.3, length_scale=4), Cloud)
    assert isinstance(make("empirical", missing=_data_mask()), Empirical)


def test_make_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="nope") as err:
        make("nope")
    for name in PROCESSES:
        assert name in str(err.value)


@pytest.mark.parametrize("name", [*SYNTHETIC, "empirical"])
@pytest.mark.parametrize("shape", [(8, 32, 32), (1, 1, 1), (2, 3, 5), (3, 1, 7), (2, 9, 1)])
def test_shape_and_dtype(name, shape):
    proc = _build(name, 0.4, seed=0)
    mask = proc.sample(shape)
    assert mask.shape == shape
    assert mask.dtype == bool
    batch = proc.sample_batch(3, shape)
    assert batch.shape == (3, *shape) and batch.dtype == bool


def test_sample_batch_zero_and_bad_n():
    proc = RemovePixels(0.3, seed=0)
    assert proc.sample_batch(0, (2, 3, 4)).shape == (0, 2, 3, 4)
    with pytest.raises(ValueError, match="n"):
        proc.sample_batch(-1, (2, 3, 4))


@pytest.mark.parametrize("shape", [(0, 4, 4), (2, 3), (2, 3, 4, 5), (2.5, 3, 4)])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        Cloud(seed=0).sample(shape)


@pytest.mark.parametrize("name", [*SYNTHETIC, "empirical"])
@pytest.mark.parametrize("coverage", [-0.1, 1.0, 1.5, float("nan"), "a", True])
def test_bad_coverage(name, coverage):
    with pytest.raises(ValueError, match="coverage"):
        _build(name, coverage)


@pytest.mark.parametrize(
    "cls, kwargs, param",
    [
        (Cloud, {"length_scale": 0}, "length_scale"),
        (Cloud, {"evolution": -1}, "evolution"),
        (Cloud, {"velocity": (1, 2, 3)}, "velocity"),
        (Cloud, {"match": "pixel"}, "match"),
        (Cloud, {"coverage_spread": 0.6}, "coverage_spread"),
        (Raindrops, {"radius": -1}, "radius"),
        (Raindrops, {"lifetime": 0.5}, "lifetime"),
        (Raindrops, {"streak_width": 2}, "streak_width"),
        (MovingBar, {"orientation": "diagonal"}, "orientation"),
        (MovingBar, {"motion": "teleport"}, "motion"),
    ],
)
def test_bad_process_parameters(cls, kwargs, param):
    with pytest.raises(ValueError, match=param):
        cls(**kwargs)


def test_empirical_bad_inputs():
    with pytest.raises(ValueError, match="missing"):
        Empirical(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="missing"):
        Empirical(np.zeros((2, 4, 4)))  # float, e.g. the data itself
    with pytest.raises(ValueError, match="missing"):
        Empirical(np.full((2, 4, 4), 2))
    assert Empirical(np.eye(4, dtype=np.uint8)[None], seed=0).sample((1, 4, 4)).dtype == bool
    with pytest.raises(ValueError, match="exclude"):
        Empirical(_data_mask(), exclude=np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="exclude"):
        Empirical(_data_mask((2, 4, 4)), exclude=np.ones((4, 4), dtype=bool))


@pytest.mark.parametrize("name", [*SYNTHETIC, "empirical"])
def test_repr_shows_parameters(name):
    text = repr(_build(name, 0.25, seed=7))
    assert "coverage=0.25" in text and "seed=7" in text
    assert "length_scale" in repr(Cloud()) and "radius" in repr(Raindrops())


def test_no_torch_import():
    code = "import sys, gapfill.masks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------- coverage and seeds
@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("coverage", [0.1, 0.4, 0.8])
def test_coverage_matches_target(name, coverage):
    proc = make(name, coverage=coverage, seed=1)
    measured = proc.sample_batch(12, (10, 32, 40)).mean()
    assert abs(measured - coverage) < 0.05


@pytest.mark.parametrize("name", SYNTHETIC)
def test_coverage_unbiased_on_tiny_frames(name):
    proc = make(name, coverage=0.3, seed=2)
    assert abs(proc.sample_batch(400, (2, 2, 3)).mean() - 0.3) < 0.06


@pytest.mark.parametrize("name", [*SYNTHETIC, "empirical"])
def test_zero_coverage_hides_nothing(name):
    assert not _build(name, 0.0, seed=0).sample((4, 8, 9)).any()


@pytest.mark.parametrize("name", [*SYNTHETIC, "empirical"])
def test_seed_reproducibility(name):
    shape = (6, 16, 16)
    a, b, c = (_build(name, 0.4, seed=s) for s in (3, 3, 4))
    first_a, second_a = a.sample(shape), a.sample(shape)
    assert np.array_equal(first_a, b.sample(shape))
    assert np.array_equal(second_a, b.sample(shape))
    assert not np.array_equal(first_a, c.sample(shape))
    # An explicit generator overrides the process's own stream.
    x = a.sample(shape, np.random.default_rng(11))
    y = c.sample(shape, np.random.default_rng(11))
    assert np.array_equal(x, y)


# ----------------------------------------------------------------- Cloud
def test_cloud_is_spatially_correlated():
    def neighbour_agreement(m):
        return np.mean(np.concatenate([(m[..., 1:] == m[..., :-1]).ravel(),
                                       (m[:, 1:] == m[:, :-1]).ravel()]))

    shape = (8, 48, 48)
    cloud = neighbour_agreement(Cloud(0.4, seed=0).sample_batch(4, shape)[0])
    pixels = neighbour_agreement(RemovePixels(0.4, seed=0).sample(shape))
    assert cloud > 0.9
    assert pixels < 0.6


def test_cloud_moves_and_evolves_smoothly():
    m = Cloud(0.4, seed=0).sample_batch(4, (30, 48, 48)).reshape(-1, 48, 48)
    lag1 = np.mean([_iou(m[t], m[t + 1]) for t in range(len(m) - 1) if (t + 1) % 30])
    lag10 = np.mean([_iou(m[t], m[t + 10]) for t in range(len(m) - 10) if t % 30 < 20])
    assert lag1 > 0.75
    assert lag10 < lag1 - 0.25
    assert not np.array_equal(m[0], m[1])


def test_cloud_frozen_shapes_drift_by_velocity():
    m = Cloud(0.4, seed=0, velocity=(0.0, 2.0), evolution=0.0, match="expected").sample(
        (3, 16, 48)
    )
    assert np.array_equal(m[1][:, 2:], m[0][:, :-2])
    assert np.array_equal(m[2][:, 2:], m[1][:, :-2])


def test_cloud_edges_wrap_only_when_periodic():
    def edge_agreement(**kw):
        m = Cloud(0.4, seed=0, **kw).sample_batch(40, (2, 24, 24))
        return (m[..., 0] == m[..., -1]).mean()

    assert edge_agreement(periodic=(False, True)) > 0.85
    assert edge_agreement() < 0.65  # chance level is 0.52


def test_cloud_per_frame_and_per_sequence_coverage():
    frames = Cloud(0.3, seed=0).sample((5, 20, 20)).mean(axis=(1, 2))
    assert np.allclose(frames, 0.3, atol=1 / 400 + 1e-9)
    spread = Cloud(0.3, seed=0, coverage_spread=0.15).sample_batch(40, (3, 16, 16))
    per_sequence = spread.mean(axis=(1, 2, 3))
    assert per_sequence.std() > 0.08
    assert abs(per_sequence.mean() - 0.3) < 0.06


def test_cloud_field_has_unit_variance():
    proc = Cloud(seed=0, length_scale=2.0)
    fields = np.stack([proc.field((3, 24, 24)) for _ in range(40)])
    assert fields.dtype == np.float32
    assert abs(float(np.mean(fields.astype(float) ** 2)) - 1) < 0.1


def test_cloud_random_direction():
    proc = Cloud(0.4, seed=0, velocity=1.5)
    assert proc.sample((4, 16, 16)).shape == (4, 16, 16)
    assert isinstance(proc.velocity, float)


# ----------------------------------------------------------------- MovingBar, Raindrops
def test_moving_bar_is_a_moving_bar():
    m = MovingBar(0.25, seed=0).sample((10, 12, 40))
    # Whole columns hidden, bar width = coverage * width, position changes.
    assert (m == m[:, :1, :]).all()
    assert np.allclose(m[:, 0].sum(axis=1), 10, atol=1)
    cols = [np.flatnonzero(f[0]).mean() for f in m]
    assert np.ptp(cols) > 10
    assert np.mean(np.abs(np.diff(cols)) > 0) > 0.7


def test_moving_bar_horizontal_and_wrap():
    m = MovingBar(0.2, seed=0, orientation="horizontal", motion="wrap", speed=3).sample(
        (6, 30, 8)
    )
    assert (m == m[:, :, :1]).all()
    assert (m[:, :, 0].sum(axis=1) == 6).all()
    assert not np.array_equal(m[0], m[1])


def test_raindrops_fall():
    m = Raindrops(0.2, seed=0).sample_batch(4, (12, 48, 48)).reshape(-1, 48, 48)

    def overlap_after_shift(dy):
        a, b = m[:-1], m[1:]  # includes a few pairs across sequences: noise only
        if dy > 0:
            return (a[:, :-dy] & b[:, dy:]).sum()
        return (a[:, -dy:] & b[:, :dy]).sum()

    down, up = overlap_after_shift(2), overlap_after_shift(-2)
    assert down > 1.2 * up


def test_raindrops_streaks_are_vertical():
    m = Raindrops(0.2, seed=0, speed=3, lifetime=8, trail=20).sample((10, 64, 64))
    vertical = (m[:, 1:] & m[:, :-1]).sum()
    horizontal = (m[:, :, 1:] & m[:, :, :-1]).sum()
    assert vertical > horizontal


# ----------------------------------------------------------------- Empirical
def _find_frame(frame: np.ndarray, data: np.ndarray) -> list[int]:
    return [t for t in range(len(data)) if np.array_equal(frame, data[t])]


def test_empirical_same_grid_uses_other_times():
    data = _data_mask((6, 8, 8))
    proc = Empirical(data, seed=0)
    for _ in range(20):
        m = proc.sample((4, 8, 8))
        idx = [_find_frame(f, data) for f in m]
        assert all(len(i) == 1 for i in idx)
        idx = [i[0] for i in idx]
        assert idx[0] != 0  # never the target's own first frame
        assert all((b - a) % 6 == 1 for a, b in zip(idx, idx[1:]))  # consecutive, wrapping
        m = proc.sample((6, 8, 8), start=3)
        assert _find_frame(m[0], data)[0] != 3
    # The whole cube is never masked by its own pattern.
    assert not np.array_equal(proc.sample(data.shape), data)


def test_empirical_crops_come_from_data():
    data = _data_mask((5, 10, 12))
    proc = Empirical(data, seed=1, flip=False)
    for _ in range(10):
        m = proc.sample((3, 4, 5))
        hits = {
            (t, y, x)
            for t in range(5)
            for y in range(10 - 4 + 1)
            for x in range(12 - 5 + 1)
            if np.array_equal(m[0], data[t, y : y + 4, x : x + 5])
        }
        assert hits
        t, y, x = hits.pop()
        assert np.array_equal(m[1], data[(t + 1) % 5, y : y + 4, x : x + 5])


def test_empirical_larger_shapes_mirror_tile_the_data():
    data = _data_mask((4, 5, 6))
    tiled = np.pad(data, ((0, 0), (0, 20), (0, 24)), mode="symmetric")
    m = Empirical(data, seed=2).sample((2, 9, 14))
    found = any(
        np.array_equal(m[0], tiled[t, y : y + 9, x : x + 14])
        for t in range(4)
        for y in range(10)
        for x in range(12)
    )
    assert found


def test_empirical_flips_are_flipped_patterns():
    data = _data_mask((4, 6, 6))
    variants = {
        v[t].tobytes()
        for t in range(4)
        for v in (data, data[:, ::-1], data[:, :, ::-1], data[:, ::-1, ::-1])
    }
    m = Empirical(data, seed=3, flip=True).sample_batch(10, (1, 6, 6))
    assert all(f[0].tobytes() in variants for f in m)


def test_empirical_respects_exclude():
    data = _data_mask((8, 12, 12), p=0.3)
    land = np.zeros((12, 12), dtype=bool)
    land[:, :4] = True
    data[:, land] = True  # never observed
    proc = Empirical(data, seed=0, exclude=land)
    assert abs(proc.coverage - 0.3) < 0.05  # land does not count
    m = proc.sample_batch(5, (8, 12, 12))
    assert not m[..., land].any()
    assert m[..., ~land].any()
    assert proc.sample_batch(5, (3, 5, 5)).mean() < 0.5


def test_empirical_coverage_selects_nearest_windows():
    # Frame t hides about t/20 of the pixels: a low target should pick early frames.
    rng = np.random.default_rng(0)
    data = rng.random((20, 16, 16)) < (np.arange(20) / 20)[:, None, None]
    for shape in [(2, 16, 16), (2, 10, 12)]:  # whole frames, crops
        free = Empirical(data, seed=0).sample_batch(30, shape).mean()
        low = Empirical(data, coverage=0.1, seed=0, n_candidates=8).sample_batch(30, shape)
        assert abs(low.mean() - 0.1) < 0.05 < abs(free - 0.1)


def test_empirical_single_frame_data():
    data = _data_mask((1, 6, 6))
    m = Empirical(data, seed=0).sample((3, 6, 6))
    assert all(np.array_equal(f, data[0]) for f in m)


# ----------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from([*SYNTHETIC, "empirical"]),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 20), st.integers(1, 20)),
    coverage=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_any_shape_and_coverage(name, shape, coverage, seed):
    if name == "empirical":
        data = np.random.default_rng(seed).random((5, 7, 9)) < 0.5
        proc: OcclusionProcess = Empirical(data, coverage, seed=seed)
    else:
        proc = masks.make(name, coverage=coverage, seed=seed)
    m = proc.sample(shape)
    assert m.shape == shape and m.dtype == bool
    if coverage == 0.0:
        assert not m.any()
    again = type(proc)(data, coverage, seed=seed) if name == "empirical" else make(
        name, coverage=coverage, seed=seed
    )
    assert np.array_equal(m, again.sample(shape))


def test_own_gap_hides_take_observed_pixels_only():
    """Hides for choosing between fills: observed pixels only, reproducible from the seed;
    none for a cube without gaps to borrow."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 12, 16, 16)).astype(np.float32)
    gaps = masks.Cloud(coverage=0.3, length_scale=3.0, seed=2).sample(x.shape[1:])
    gappy = np.where(gaps[None], np.nan, x)
    hide = masks.own_gap_hides(gappy, seed=5)
    assert hide is not None and hide.sum() >= 10
    assert not (hide & np.isnan(gappy)).any()
    np.testing.assert_array_equal(hide, masks.own_gap_hides(gappy, seed=5))
    assert masks.own_gap_hides(x, seed=5) is None  # no gap to borrow
