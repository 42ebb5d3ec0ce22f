"""Tests of the guides (:mod:`gapfill.guides`) and of gan's validation pixels and budget."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import xarray as xr

from gapfill import masks
from gapfill.guides import (
    REGEM_FILL_RIDGES,
    REGEM_FIRST_START_RIDGE,
    REGEM_FIRST_START_STEPS,
    REGEM_RIDGES,
    REGEM_START_STEPS,
    REGEM_STARTED_STEPS,
    REGEM_STEPS,
    Guide,
    RegemStart,
    choose_guide,
    eof_guide,
    harmonic_interpolation,
    regem_seconds,
    regem_start,
    time_distance,
)
from gapfill.methods.gan_data import gaps_in_runs, validation_pattern


def _cube(t: int = 40, h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    """Three smooth modes plus small, fast-moving blobs that no few EOFs represent."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    modes = np.stack([np.sin(np.pi * yy), np.cos(2 * np.pi * xx), yy * xx])
    amps = rng.standard_normal((t, 3)) * [2.0, 1.0, 0.5]
    field = np.einsum("tk,khw->thw", amps, modes)
    y0, x0 = rng.uniform(0, h, 12), rng.uniform(0, w, 12)
    for k in range(t):  # blobs advected one pixel per frame along x
        d2 = (yy[None] * (h - 1) - y0[:, None, None]) ** 2 + (
            (xx[None] * (w - 1) - (x0[:, None, None] + k) % w) ** 2)
        field[k] += 0.5 * np.exp(-d2 / 4).sum(0)
    return field[None].astype(np.float32)


def _gappy(t: int, h: int, w: int, seed: int = 0, coverage: float = 0.35,
           length_scale: float = 3, cycle: float = 0.0) -> xr.DataArray:
    """:func:`_cube` (plus a seasonal cycle of amplitude ``cycle``) under clouds."""
    truth = _cube(t=t, h=h, w=w, seed=seed)[0]
    if cycle:
        truth = truth + cycle * np.sin(np.arange(t) * np.pi / 6)[:, None, None]
    hidden = masks.Cloud(coverage=coverage, seed=3, length_scale=length_scale).sample(truth.shape)
    return xr.DataArray(np.where(hidden, np.nan, truth), dims=("time", "lat", "lon"),
                        coords={"lat": np.arange(float(h)), "lon": np.arange(float(w))})


def test_guide_is_never_worse_than_eof_or_linear():
    truth = _cube()
    hidden = masks.Cloud(coverage=0.35, seed=1, length_scale=3).sample(truth.shape[1:])[None]
    x = np.where(hidden, np.nan, truth)
    val = gaps_in_runs(masks.Cloud(coverage=0.3, seed=2, length_scale=3).sample(
        truth.shape[1:]), hidden[0], 0.1, np.random.default_rng(0), truth.shape[1] // 6)[None]
    xv = np.where(val, np.nan, x)
    guide, field, base = choose_guide(xv, val, x, "auto")
    for item in guide.make_with_base(xv):  # the base chosen with the field, and both rebuilt
        assert item.shape == field.shape
    np.testing.assert_allclose(Guide.from_dict(guide.to_dict()).make_with_base(xv)[1], base,
                               atol=1e-2)
    best = guide.scores[min(guide.scores, key=guide.scores.get)]
    assert best <= min(guide.scores["eof"], guide.scores["linear"])
    assert np.abs(field[val] - x[val]).mean() == pytest.approx(best, rel=1e-6)
    # in the real gaps too (not the pixels it was chosen on), with the full input
    eof = eof_guide(x)[0]
    full = guide.make(x)
    mae = lambda f: np.abs(f[hidden] - truth[hidden]).mean()  # noqa: E731
    assert mae(full) <= 1.02 * mae(eof), (str(guide), mae(full), mae(eof))
    # the recipe round-trips and rebuilds the same field
    again = Guide.from_dict(guide.to_dict()).make(xv)
    np.testing.assert_allclose(again, field, atol=1e-2)  # same modes, no CV pass


def test_auto_tries_the_interpolation_of_the_values_only_when_asked():
    """Frames with no structure shared in time (independent smooth fields) under a bar
    that hides each column for many frames: no few EOFs hold them and time interpolation
    reaches across the bar, so interpolating each frame's values is the best guide."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    t, h, w = 24, 20, 24
    truth = ndimage.gaussian_filter(rng.standard_normal((t, h, w)), (0, 3, 3))[None]
    truth = (truth / truth.std()).astype(np.float32)
    bar = np.zeros((t, h, w), dtype=bool)
    for k in range(t):  # a bar 6 columns wide, moving one column every two frames
        bar[k, :, (k // 2) % w: (k // 2) % w + 6] = True
    x = np.where(bar[None], np.nan, truth)
    val = np.zeros_like(bar)
    for k in range(t):  # the validation pixels: a bar of the same kind elsewhere
        val[k, :, (k // 2 + 12) % w: (k // 2 + 12) % w + 6] = True
    val = val[None] & np.isfinite(x)
    xv = np.where(val, np.nan, x)
    plain = choose_guide(xv, val, x, "auto")[0]
    assert "harmonic" not in plain.scores and plain.kind != "harmonic"
    guide, field, base = choose_guide(xv, val, x, "auto", values=True)
    assert guide.kind == "harmonic" and np.all(base == 0)
    assert guide.scores[str(guide)] < min(plain.scores.values())
    mae = lambda f: np.abs(f[bar[None]] - truth[bar[None]]).mean()  # noqa: E731
    assert mae(guide.make(x)) < 0.95 * mae(plain.make(x))  # in the real gaps too


def test_guide_base_is_what_the_residual_interpolation_spreads():
    truth = _cube(t=20, h=12, w=16)
    x = np.where(np.random.default_rng(0).random(truth.shape) < 0.3, np.nan, truth)
    obs = np.isfinite(x)
    guide = Guide("eof_interp", modes=3, screen=0.0)
    field, base = guide.make_with_base(x)
    np.testing.assert_array_equal(field, guide.make(x))
    np.testing.assert_array_equal(base, eof_guide(x, 3)[0])
    np.testing.assert_allclose(field[obs], x[obs], atol=1e-5)  # through the observations
    assert np.abs(base[obs] - x[obs]).mean() > 0.01  # the base is not
    for kind in ("eof", "linear"):
        field, base = Guide(kind).make_with_base(x)
        assert base is field
    assert np.all(Guide("harmonic", screen=0.0).make_with_base(x)[1] == 0)


def test_eof_guide_is_the_eof_method():
    from gapfill.methods.eof import EOF

    truth = _cube(t=20, h=12, w=16)
    x = np.where(np.random.default_rng(0).random(truth.shape) < 0.3, np.nan, truth)
    guide, k = eof_guide(x)
    eof = EOF()
    eof.fit_array(x, np.random.default_rng(0))
    np.testing.assert_array_equal(guide, eof.fill(x, np.random.default_rng(0)).values)
    assert k == eof.fit_info["modes"]


def test_taper_shrinks_the_smaller_modes_and_is_a_candidate():
    from gapfill.methods.eof import EOF

    truth = _cube(t=30, h=12, w=16)
    x = np.where(np.random.default_rng(0).random(truth.shape) < 0.3, np.nan, truth)
    eof = EOF()
    eof.fit_array(x, np.random.default_rng(0), modes=3)
    plain = eof.fill(x, np.random.default_rng(0)).values
    eof.options.taper = 1.0
    tapered = eof.fill(x, np.random.default_rng(0)).values
    st = eof._state
    fitted, gaps = st["fitted"], np.isnan(x).reshape(x.shape[1], -1)  # (T, pixels)
    U, mean = st["U"].astype(np.float64), st["mean"].astype(np.float64)
    for t in range(x.shape[1]):  # in each frame's gaps: mean + U c, with c tapered
        g = gaps[t] & fitted
        c_plain, c_taper = (
            np.linalg.lstsq(U[g], f.reshape(x.shape[1], -1)[t, g] - mean[g], rcond=None)[0]
            for f in (plain, tapered))
        np.testing.assert_allclose(c_taper, c_plain * [1, 2 / 3, 1 / 3], atol=1e-3)
    with pytest.raises(ValueError, match="taper"):
        EOF(taper=1.5)
    # both tapers are candidates of eof_interp, from one DINEOF fit, and the guide rebuilds
    val = np.isfinite(x) & (np.random.default_rng(1).random(x.shape) < 0.1)
    xv = np.where(val, np.nan, x)
    guide, field, _ = choose_guide(xv, val, x, "eof_interp", modes=3)
    assert any("taper=1.0" in name for name in guide.scores)
    assert any("taper" not in name and name.startswith("eof_interp") for name in guide.scores)
    np.testing.assert_allclose(Guide.from_dict(guide.to_dict()).make(xv), field, atol=1e-5)


def _smooth_lonlat_cube() -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray,
                                    tuple[np.ndarray, np.ndarray]]:
    """``(rng, truth, hidden, x, grid)``: a field of many smooth modes (60 × 14 × 18, one
    channel) under clouds on a 1° latitude/longitude grid."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    t, h, w = 60, 14, 18
    truth = ndimage.gaussian_filter(rng.standard_normal((t, h, w)), (0, 2.5, 2.5))[None]
    truth = (truth / truth.std()).astype(np.float32)
    hidden = masks.Cloud(coverage=0.35, seed=1, length_scale=3).sample(truth.shape[1:])[None]
    grid = (np.arange(30.0, 30.0 + h), np.arange(-40.0, -40.0 + w))
    return rng, truth, hidden, np.where(hidden, np.nan, truth), grid


def test_regem_guide_is_a_candidate_on_a_latitude_longitude_grid():
    """A field of many smooth modes (more than DINEOF keeps) on a 1° grid: the conditional
    expectation with a localised covariance (``"regem"``) is tried, chosen, better than
    ``eof`` in the real gaps, and rebuilt by its recipe; without a grid it is not tried."""
    rng, truth, hidden, x, grid = _smooth_lonlat_cube()
    val = np.isfinite(x) & (rng.random(x.shape) < 0.1)
    xv = np.where(val, np.nan, x)
    plain = choose_guide(xv, val, x, "auto")[0]
    assert not any(name.startswith("regem") for name in plain.scores)
    guide, field, base = choose_guide(xv, val, x, "auto", grid=grid)
    assert guide.kind == "regem", guide.scores
    assert guide.scores[str(guide)] < 0.9 * min(plain.scores.values())
    tried = {name.split("em_ridge=")[1].split(",")[0] for name in guide.scores
             if name.startswith("regem")}
    assert tried == {str(r) for r in REGEM_RIDGES}  # each EM ridge is validated
    assert guide.steps == REGEM_STEPS[0]
    np.testing.assert_array_equal(base, eof_guide(xv)[0])  # its base is DINEOF's
    np.testing.assert_allclose(field[np.isfinite(xv)], xv[np.isfinite(xv)], atol=1e-5)
    mae = lambda f: np.abs(f[hidden] - truth[hidden]).mean()  # noqa: E731
    assert mae(guide.make(x)) < 0.9 * mae(eof_guide(x)[0])  # in the real gaps too
    # the recipe rebuilds the field from a DINEOF fit with the same modes (no CV pass)
    assert np.abs(Guide.from_dict(guide.to_dict()).make(xv) - field).mean() < 0.02
    # a recipe without EM ridge and E-steps takes the first of each
    bare = {k: v for k, v in guide.to_dict().items() if k not in ("em_ridge", "steps")}
    first = dataclasses.replace(guide, em_ridge=REGEM_RIDGES[0], steps=REGEM_STEPS[0])
    np.testing.assert_array_equal(Guide.from_dict(bare).make(xv), first.make(xv))
    # more E-steps fit the field's covariance better (closer to EM's fixed point)
    longer = choose_guide(xv, val, x, "regem", grid=grid, regem_steps=REGEM_STEPS[-1])[0]
    assert longer.steps == REGEM_STEPS[-1]
    assert longer.scores[str(longer)] < guide.scores[str(guide)]
    with pytest.raises(ValueError, match="latitude and longitude"):
        choose_guide(xv, val, x, "regem")
    with pytest.raises(ValueError, match="at most 4000 ever-observed pixels"):
        choose_guide(np.tile(xv, (1, 1, 1, 20)), np.tile(val, (1, 1, 1, 20)),
                     np.tile(x, (1, 1, 1, 20)), "regem",
                     grid=(grid[0], np.linspace(-40.0, 40.0, 20 * x.shape[-1])))


def test_harmonic_interpolation_fills_planes_exactly_and_keeps_coasts():
    t, h, w = 3, 12, 20
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    plane = (0.3 * yy - 0.2 * xx + 1.0)[None, None].repeat(t, 1).astype(np.float32)
    rng = np.random.default_rng(0)
    gaps = np.zeros(plane.shape, dtype=bool)  # gaps off the edges and the coast (no-flux there)
    gaps[..., 1:-1, 5:-1] = rng.random((1, t, h - 2, w - 6)) < 0.4
    gaps[:, 1, 3:9, 6:15] = True  # a large gap
    gaps[:, 0] = False  # every sea pixel observed at least once
    land = np.zeros((h, w), dtype=bool)
    land[:4, :4] = True
    x = np.where(gaps | land, np.nan, plane)
    base = np.full(x.shape, 5.0, dtype=np.float32)
    out = harmonic_interpolation(x, base)
    sea = ~land[None, None] & np.ones(x.shape, dtype=bool)
    # a plane is harmonic: reproduced in every gap, the large one too, whatever the base
    np.testing.assert_allclose(out[sea], plane[sea], atol=1e-4)
    obs = np.isfinite(x)
    np.testing.assert_array_equal(out[obs], x[obs])  # observations pass through
    assert (out[~sea] == 5.0).all()  # never-observed pixels keep the base
    # screening pulls the residual back to the base deep in the large gap
    screened = harmonic_interpolation(x, base, screen=1.0)
    assert abs(screened[0, 1, 6, 10] - 5.0) < abs(out[0, 1, 6, 10] - 5.0)
    # a frame with no observation keeps the base
    x[:, 2] = np.nan
    np.testing.assert_array_equal(harmonic_interpolation(x, base)[:, 2], base[:, 2])


def test_guide_recipes_of_the_gaussian_interpolation_are_refused():
    with pytest.raises(ValueError, match="fit the model again"):
        Guide.from_dict({"kind": "eof_interp", "modes": 3, "sigma": [0, 2, 4], "shrink": 0.1,
                         "tau": None, "scores": {}})


def test_time_distance():
    x = np.array([np.nan, 1.0, np.nan, np.nan, np.nan, 2.0, np.nan])[None, :, None, None]
    np.testing.assert_array_equal(time_distance(x)[0, :, 0, 0], [1, 0, 1, 2, 1, 0, 1])
    assert np.isinf(time_distance(np.full((1, 3, 1, 1), np.nan))).all()


def test_validation_pixels_have_the_data_gap_shapes():
    rng = np.random.default_rng(0)
    t, h, w = 30, 32, 48
    # the data's gaps: 8 x 8 squares drifting one pixel per frame, unlike any cloud
    missing = np.zeros((t, h, w), dtype=bool)
    for k in range(t):
        for y0, x0 in ((2, 3), (14, 20), (22, 5)):
            missing[k, y0 : y0 + 8, (x0 + k) % w : (x0 + k) % w + 8] = True
    never = np.zeros((h, w), dtype=bool)
    fallback = masks.Cloud(coverage=0.3, seed=0)
    pattern, source = validation_pattern(missing, never, 0.05, rng, fallback)
    assert source == "empirical"
    val = gaps_in_runs(pattern, missing, 0.05, rng, missing.shape[0] // 6)
    assert val.any() and not (val & missing).any()
    lags = [lag for lag in range(1, t) if not (val & ~np.roll(missing, -lag, 0)).any()]
    assert lags, "validation pixels are not the data's own gaps at another time"
    # nearly gap-free data: the occlusion process's shapes instead
    _, source = validation_pattern(np.zeros_like(missing), never, 0.05, rng, fallback)
    assert source == "cloud"


class _Clock:
    """A stand-in for :func:`time.monotonic` in gan's modules whose time passes only
    when charged work runs: so a test of the time budget says the same on any machine."""

    STEP = 0.5  # a training step
    WINDOW = 0.02  # one window of a generator fill
    ELEMENT = 2e-6  # one element of a guide primitive (EOF, interpolation)
    LINEAR = ELEMENT / 8  # one element of linear's fill, a cheap one as on real cubes

    def __init__(self) -> None:
        self.now = self.trained = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """Gan's fit on a :class:`_Clock`: training steps, generator windows and guide
    primitives each advance it by a fixed cost; nothing else takes time."""
    import types

    from gapfill import guides, trainloop
    from gapfill.methods import gan, gan_data, gan_train
    from gapfill.methods.linear import Linear
    from gapfill.windows import count_windows

    fake = _Clock()
    for module in (gan, gan_data, gan_train, trainloop):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(monotonic=fake.monotonic))

    def charged(fn, cost):
        def run(*args, **kwargs):
            fake.now += cost(*args, **kwargs)
            return fn(*args, **kwargs)
        return run

    def elements(x, *args, **kwargs):
        return fake.ELEMENT * x.size

    for name in ("eof_guide", "harmonic_interpolation", "regem_fields"):
        monkeypatch.setattr(guides, name, charged(getattr(guides, name), elements))
    # linear's fill: the linear guide, and the error model's control draws
    monkeypatch.setattr(Linear, "fill",
                        charged(Linear.fill, lambda self, x, *a, **k: fake.LINEAR * x.size))
    monkeypatch.setattr(gan_train.GANTrainer, "train_step",
                        charged(gan_train.GANTrainer.train_step, lambda *a: fake.STEP))

    def windows(self, x, guide, extras, samples, seed):
        n = count_windows(x.shape[1:], tuple(self._meta["window"]), self.options.overlap)
        return fake.WINDOW * n * samples

    monkeypatch.setattr(gan.GAN, "_fill", charged(gan.GAN._fill, windows))
    trained = gan.GAN.fit

    def fit(self, *args, **kwargs):  # the clock when training (GAN.fit) returns
        trained(self, *args, **kwargs)
        fake.trained = fake.now

    monkeypatch.setattr(gan.GAN, "fit", fit)
    return fake


def test_gan_validates_on_the_data_gap_shapes_and_keeps_the_time_budget(clock):
    pytest.importorskip("torch")
    from gapfill.cube import Cube
    from gapfill.methods.gan import GAN

    da = _gappy(24, 16, 24)
    budget = 20.0
    gan = GAN(window=(8, 16, 16), width=8, n_res_blocks=1, batch_size=2, steps=10**6,
              time_budget=budget, eval_every=5, progress="off", seed=0, guide_pool=50)
    t0 = clock.now
    gan.fit(Cube(da), np.random.default_rng(0))
    info = gan.fit_info
    assert info["validation_shapes"] == ["empirical"]
    assert info["stopped_by"] == "time" and info["steps"] > 10, info
    # the guide pool, the steps, the last validation and the reserve for what fit does
    # after training all fit in the budget (a step may overrun it)
    assert clock.now - t0 + info["reserved_seconds"] <= budget + clock.STEP, info


#: Options of a small gan whose training beats its guide on the cube below, and of one
#: that keeps its guide alone unless training lowers its error by 90% (it does not).
LEARNS = {True: {"attention": False, "lr": 3e-3, "ema": None, "guide": "eof",
                 "time_channels": False, "eval_every": 10},
          False: {"eval_every": 5, "min_gain": 0.9}}


@pytest.mark.parametrize("learns", [False, True])
def test_time_budget_bounds_the_whole_fit_through_the_accessor(clock, learns):
    """``da.gapfill.fit`` chooses the guide and share again and fills for the error model
    after training: the budget leaves their time, so the whole call keeps to it, with
    some of the generator's correction or none."""
    pytest.importorskip("torch")
    import gapfill  # noqa: F401  (the accessor)

    da = _gappy(48, 32, 48, seed=int(learns), coverage=0.35 - 0.05 * learns,
                length_scale=3 - learns)
    budget = 60.0
    t0 = clock.now
    model = da.gapfill.fit("gan", window=(8, 16, 16), width=8, n_res_blocks=1, batch_size=2,
                           steps=10**6, time_budget=budget, progress="off", seed=0, threads=1,
                           **LEARNS[learns])
    info = model.method.fit_info
    assert info["stopped_by"] == "time" and info["steps"] > 10, info
    assert (info["correction_gain"] > 0) == learns, info["correction_gain"]
    after = clock.now - clock.trained
    # what fit does after training (tune, the error model's fills) took time, and the
    # reserve held it: the whole call is inside the budget (a step may overrun it)
    assert 0 < after <= info["reserved_seconds"], (after, info["reserved_seconds"])
    assert clock.now - t0 <= budget + clock.STEP, (clock.now - t0, info)


def test_a_budget_that_leaves_training_little_time_warns(clock):
    pytest.importorskip("torch")
    import gapfill  # noqa: F401  (the accessor)

    da = _gappy(48, 32, 48)
    options = dict(window=(8, 16, 16), width=8, n_res_blocks=1, batch_size=2, steps=10**6,
                   progress="off", seed=0, threads=1, **LEARNS[False])
    with pytest.warns(UserWarning, match="Raise time_budget"):
        model = da.gapfill.fit("gan", time_budget=30.0, **options)
    assert model.method.fit_info["steps"] <= 2
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*Raise time_budget")
        da.gapfill.fit("gan", time_budget=60.0, **options)


def test_a_regem_guide_gives_gan_its_conditional_spread_as_the_error():
    """Under a ``regem`` guide ``gan``'s fill carries the guide's conditional spread (0
    where observed, positive in the gaps), whatever share of the correction it keeps, and
    the error model takes it as the method's own spread; under an EOF guide it has none."""
    pytest.importorskip("torch")
    import gapfill  # noqa: F401  (the accessor)
    from gapfill.cube import Cube
    from gapfill.methods.gan import GAN

    options = dict(window=(8, 16, 16), width=8, n_res_blocks=1, attention=False,
                   batch_size=2, steps=4, eval_every=2, progress="off", seed=0, guide_pool=2,
                   time_budget=None)
    da = _gappy(24, 16, 24)
    cube = Cube(da)
    x, coords = cube.values(), cube.coords()
    seen = np.isfinite(x)
    gaps = ~seen & seen.any(1, keepdims=True)
    gan = GAN(**options, guide="regem")
    gan.fit(cube, np.random.default_rng(0))
    assert gan.provides_error
    field, _, spread = Guide.from_dict(gan._meta["guide"]).make_with_spread(x, gan._guide_start)
    np.testing.assert_array_equal(field, gan._guide(x))
    assert np.all(spread[seen] == 0) and np.all(spread[gaps] > 0)
    for share in (0.0, 0.5):
        gan._meta["correction_gain"] = share
        one = gan.fill(x, np.random.default_rng(0), coords=coords)
        np.testing.assert_array_equal(one.values[seen], x[seen])
        np.testing.assert_allclose(one.error[gaps], spread[gaps], rtol=1e-6)
        assert np.all(one.error[seen] == 0)
        many = gan.fill(x, np.random.default_rng(0), samples=3, coords=coords)
        assert np.all(many.error[gaps] >= spread[gaps] * (1 - 1e-6))  # and the generator's
    eof = GAN(**options, guide="eof")
    eof.fit(cube, np.random.default_rng(0))
    assert not eof.provides_error
    assert eof.fill(x, np.random.default_rng(0), coords=coords).error is None
    model = da.gapfill.fit("gan", guide="regem", **options)
    assert model.error_model.uses_native


def test_regem_guide_starting_from_a_converged_fit_is_near_em_fixed_point():
    """E-steps from the moments of a converged fit of fewer values (:func:`regem_start`)
    reach EM's fixed point for ``x`` far sooner than as many from the DINEOF fill; a start
    fitted with another EM ridge is not used; the moments survive a model's state."""
    from gapfill.methods.regem import embed_moments

    rng, truth, hidden, x, grid = _smooth_lonlat_cube()
    t = x.shape[1]
    less = np.where(np.isfinite(x) & (rng.random(x.shape) < 0.1), np.nan, x)
    ridge = REGEM_RIDGES[-1]
    start = regem_start(less, eof_guide(less)[0], grid, ridge)
    assert start is not None and 3 < start.steps <= REGEM_START_STEPS
    recipe = Guide("regem", em_ridge=ridge, steps=3, grid=[list(g) for g in grid])
    fixed = dataclasses.replace(recipe, steps=REGEM_START_STEPS).make(x)[hidden]
    warm, cold = recipe.make(x, start)[hidden], recipe.make(x)[hidden]
    assert np.abs(warm - fixed).mean() < 0.5 * np.abs(cold - fixed).mean()
    other = dataclasses.replace(recipe, em_ridge=REGEM_RIDGES[0])
    np.testing.assert_array_equal(other.make(x, start), other.make(x))
    back = RegemStart.from_state(start.state_dict())
    np.testing.assert_array_equal(recipe.make(x, back), recipe.make(x, start))
    # choosing from a start: the regem candidates take its EM ridge only, and start there
    val = np.isfinite(x) & ~np.isfinite(less)  # never seen by the start
    guide, field, _ = choose_guide(less, val, x, "regem", grid=grid, regem_steps=1,
                                   start=start)
    assert {name for name in guide.scores if name.startswith("regem")} == {
        str(Guide("regem", modes=guide.modes, fill_ridge=f, em_ridge=ridge, steps=1))
        for f in REGEM_FILL_RIDGES}
    np.testing.assert_array_equal(field, guide.make(less, start))
    # a pixel the earlier fit lacked starts from its own mean and variance, uncorrelated
    y = x.reshape(t, -1).astype(np.float64)
    fitted = start.fitted
    some = fitted.copy()
    some[np.flatnonzero(fitted)[0]] = False
    mean, cov = embed_moments(fitted, start.mean, start.cov, some, y)  # fewer pixels
    np.testing.assert_array_equal(cov, start.cov[1:, 1:])
    mean, cov = embed_moments(some, mean, cov, fitted, y)  # that pixel back
    first = np.flatnonzero(fitted)[0]
    assert mean[0] == pytest.approx(np.nanmean(y[:, first]))
    assert cov[0, 0] == pytest.approx(np.nanvar(y[:, first]))
    assert not cov[0, 1:].any() and not cov[1:, 0].any()
    np.testing.assert_array_equal(cov[1:, 1:], start.cov[1:, 1:])


def test_regem_seconds_grows_with_e_steps_pixels_and_gaps():
    """The cost estimate is (E-steps + 1) times a cost per step that grows with the
    ever-observed pixels and with each frame's gaps; pixels never observed cost nothing."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 20, 12, 12))
    gappy = np.where(rng.random(x.shape) < 0.3, np.nan, x)
    steps = [regem_seconds(gappy, s) for s in (3, 6, 9)]
    np.testing.assert_allclose(np.array(steps) / steps[0], [1, 7 / 4, 10 / 4])
    gappier = np.where(rng.random(x.shape) < 0.3, np.nan, gappy)
    assert regem_seconds(gappier, 3) > steps[0]
    bigger = np.where(rng.random((1, 20, 24, 24)) < 0.3, np.nan, 0.0)
    assert regem_seconds(bigger, 3) > steps[0]
    land = gappy.copy()
    land[..., :6] = np.nan  # never observed: outside the fit
    assert regem_seconds(land, 3) < steps[0]


def test_gan_tries_a_regem_guide_on_a_latitude_longitude_grid_it_can_afford(monkeypatch,
                                                                           tmp_path):
    pytest.importorskip("torch")
    from gapfill.checkpoints import load_checkpoint, save_checkpoint
    from gapfill.cube import Cube
    from gapfill.fitted import _to_tensor
    from gapfill.methods import gan_data
    from gapfill.methods.gan import GAN

    options = dict(window=(8, 16, 16), width=8, n_res_blocks=1, attention=False,
                   batch_size=2, steps=4, eval_every=2, progress="off", seed=0, guide_pool=2)

    def fit(da: xr.DataArray, **more) -> GAN:
        gan = GAN(**options, **more)
        gan.fit(Cube(da), np.random.default_rng(0))
        return gan

    da = _gappy(24, 16, 24)  # lat/lon in degrees
    gan = fit(da, time_budget=None)
    assert gan._meta["guide_grid"] == [list(da.lat.values), list(da.lon.values)]
    assert gan._meta["guide_regem_steps"] == REGEM_STEPS[-1]  # the most it can afford
    assert any(name.startswith("regem") for name in gan._meta["guide"]["scores"])
    # the recipe holds the grid: a copy fills alike from its state alone (with the EM fit
    # a regem guide starts from)
    assert ("guide_start" in gan.state_dict()) == (gan._meta["guide"]["kind"] == "regem")
    cube = Cube(da)
    x = cube.values()
    copy = GAN(**options)
    path = save_checkpoint(tmp_path / "gan.pt", _to_tensor(gan.state_dict()))
    copy.load_state_dict(load_checkpoint(path))  # as a saved model is read: weights_only
    np.testing.assert_array_equal(
        copy.fill(x, np.random.default_rng(0), coords=cube.coords()).values,
        gan.fill(x, np.random.default_rng(0), coords=cube.coords()).values)
    # a guide that would take more than its share of the time budget (of the default one
    # without a budget) is not tried
    monkeypatch.setattr(gan_data, "REGEM_BUDGET_SHARE", 1e-9)
    monkeypatch.setattr(gan_data, "REGEM_FIRST_START_SHARES", (1e-9, 1e-9))
    for budget in (600.0, None):
        tight = fit(da, time_budget=budget)
        assert tight._meta["guide_grid"] is None
        assert not any(name.startswith("regem") for name in tight._meta["guide"]["scores"])
    monkeypatch.undo()
    # one that costs too much from the DINEOF fill, but not from a fit made first: the
    # candidates start from that fit, and the fill's guides too
    monkeypatch.setattr(gan_data, "regem_seconds", lambda x, steps=3: (steps + 1) * 5.0)
    auto = fit(da, time_budget=600.0)  # 3 E-steps: 20 s > 600 / 40; 1: 10 s <= 600 / 20
    assert auto._meta["guide_first_start"]
    assert {name for name in auto._meta["guide"]["scores"] if name.startswith("regem")}
    assert all(f"em_ridge={REGEM_FIRST_START_RIDGE}, steps={REGEM_STARTED_STEPS}," in name
               for name in auto._meta["guide"]["scores"] if name.startswith("regem"))
    assert not fit(da, time_budget=150.0)._meta["guide_first_start"]  # 10 s > 150 / 20
    first = fit(da, time_budget=150.0, guide="regem")  # asked for: whatever the cost
    assert first._meta["guide_first_start"]
    assert first._meta["guide"]["em_ridge"] == REGEM_FIRST_START_RIDGE
    assert first._meta["guide"]["steps"] == REGEM_STARTED_STEPS
    assert first._guide_start.em_ridge == REGEM_FIRST_START_RIDGE
    assert 1 <= first._meta["guide_start_steps"] <= REGEM_FIRST_START_STEPS
    cold = Guide.from_dict(first._meta["guide"]).make(x)  # 1 E-step from the DINEOF fill
    assert not np.array_equal(first._guide(x), cold)
    monkeypatch.undo()
    # nor on a grid without latitudes and longitudes
    plain = fit(da.rename(lat="y", lon="x"), time_budget=None)
    assert plain._meta["guide_grid"] is None


@pytest.mark.parametrize("cycle", [0.0, 40.0])
def test_training_lowers_the_validation_mae_below_the_guide(cycle):
    """Small blobs advected one pixel per frame: a 3D convolution can learn to carry
    them into the gaps; a few EOFs plus smoothed residuals cannot represent them.
    With a large seasonal cycle (``cycle``) the blobs are a tiny share of the
    field's variance, as weather is in a monthly air-temperature cube: the
    generator works in units of the guide's error, so it learns all the same."""
    pytest.importorskip("torch")
    from gapfill.cube import Cube
    from gapfill.methods.gan import GAN

    da = _gappy(16, 16, 16, seed=1, coverage=0.3, length_scale=2, cycle=cycle)
    gan = GAN(window=(8, 16, 16), width=8, n_res_blocks=1, attention=False, batch_size=2,
              steps=60, time_budget=None, eval_every=10, progress="off", seed=0, guide_pool=2,
              lr=3e-3, ema=None, guide="eof", val_share=0.1, time_channels=False)
    gan.fit(Cube(da), np.random.default_rng(0))
    info = gan.fit_info
    assert info["initial_val_mae"] == pytest.approx(info["guide_val_mae"], rel=1e-4)
    assert info["best_val_mae"] < 0.9 * info["guide_val_mae"], info
    assert info["best_step"] > 0 and not gan.fills_without_training
    # the generator's unit is the guide's error on pixels it did not see
    scale = gan._meta["generator"]["residual_scale"]
    assert 0.5 < scale / info["guide_val_mae"] < 5, (scale, info["guide_val_mae"])


def test_gan_keeps_its_guide_unless_training_beats_it_by_min_gain():
    pytest.importorskip("torch")
    from gapfill.cube import Cube
    from gapfill.methods.gan import GAN

    da = _gappy(16, 16, 16, seed=1, coverage=0.3, length_scale=2)
    cube = Cube(da)
    gan = GAN(window=(8, 16, 16), width=8, n_res_blocks=1, attention=False, batch_size=2,
              steps=30, time_budget=None, eval_every=10, progress="off", seed=0, guide_pool=2,
              lr=3e-3, ema=None, guide="eof", val_share=0.1, time_channels=False,
              min_gain=0.9)  # no training beats the guide by 90%
    gan.fit(cube, np.random.default_rng(0))
    assert gan.fit_info["best_step"] == 0
    assert gan.fills_without_training  # its weights are the untrained ones
    x = cube.values()
    out = gan.fill(x, np.random.default_rng(0), coords=cube.coords()).values
    gaps = np.isnan(x)
    np.testing.assert_allclose(out[gaps], gan._guide(x)[gaps], atol=1e-5)
