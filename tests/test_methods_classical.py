"""The classical methods: eof (DINEOF), linear (time interpolation) and climatology."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from gapfill import methods
from gapfill.cube import Cube
from gapfill.localisation import chordal_km, gaspari_cohn, grid_distances
from gapfill.masks import Cloud
from gapfill.methods import eof as eof_module
from gapfill.methods import regem as regem_module
from gapfill.methods.climatology import Climatology
from gapfill.methods.eof import EOF, cloud_cv_mask
from gapfill.methods.linear import Linear
from gapfill.methods.regem import conditional, projections

RNG = np.random.default_rng
ALL = ["eof", "linear", "climatology", "regem"]


# -- synthetic data ---------------------------------------------------------------------
def low_rank(
    t: int = 40, h: int = 12, w: int = 16, rank: int = 3, noise: float = 0.01, channels: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """``(C, T, H, W)``: ``rank`` smooth spatial modes × temporal signals, plus white noise."""
    rng = RNG(seed)
    yy, xx = np.meshgrid(np.linspace(0, np.pi, h), np.linspace(0, 2 * np.pi, w), indexing="ij")
    tt = np.arange(t)
    field = np.zeros((channels, t, h, w))
    for k in range(rank):
        space = np.cos((k + 1) * yy) * np.sin((k + 1) * xx + k) + 0.3 * k * np.cos(xx)
        amp = 2.0 / (k + 1)
        time = amp * np.sin(2 * np.pi * tt / (12 + 5 * k) + k) + 0.3 * rng.standard_normal(t)
        for c in range(channels):
            field[c] += (1 + 0.5 * c) * time[:, None, None] * np.roll(space, c, axis=1)
    field += noise * rng.standard_normal(field.shape)
    return field.astype(np.float32)


def random_mask(shape: tuple[int, ...], p: float, seed: int = 1) -> np.ndarray:
    """Independent Bernoulli(p) gaps, ``True`` = missing."""
    return RNG(seed).random(shape) < p


def blob_mask(shape: tuple[int, ...], p: float, seed: int = 1) -> np.ndarray:
    """Cloud-shaped gaps shared by all channels, ``True`` = missing."""
    c, t, h, w = shape
    hidden = Cloud(coverage=p, seed=seed, length_scale=2.0).sample((t, h, w))
    return np.broadcast_to(hidden, shape)


def gappy(field: np.ndarray, mask: np.ndarray, land: bool = True) -> np.ndarray:
    """``field`` with NaN at ``mask`` and (optionally) a never-observed corner."""
    x = np.where(mask, np.nan, field).astype(np.float32)
    if land:
        x[:, :, :2, :3] = np.nan
    return x


def as_cube(x: np.ndarray) -> Cube:
    """A Cube around a ``(C, T, H, W)`` array (no channel dim when C == 1)."""
    c, t, h, w = x.shape
    coords = {"time": np.arange(t), "y": np.arange(h), "x": np.arange(w)}
    if c == 1:
        return Cube(xr.DataArray(x[0], dims=("time", "y", "x"), coords=coords, name="v"))
    da = xr.DataArray(x, dims=("band", "time", "y", "x"), coords=coords, name="v")
    return Cube(da, dims={"channel": "band"})


def fit_fill(name: str, x: np.ndarray, **options):
    """Fit ``name`` on ``x`` (through a Cube) and fill the cube's normalised values."""
    cube = as_cube(x)
    method = methods.get(name)(**options)
    method.fit(cube, RNG(0))
    z = cube.values()
    return method, cube, z, method.fill(z, RNG(0))


def assert_filled(z: np.ndarray, values: np.ndarray) -> None:
    """Every missing value of a pixel observed at least once is finite."""
    observed = np.isfinite(z)
    need = ~observed & observed.any(1, keepdims=True)
    assert values.shape == z.shape and values.dtype == np.float32
    assert np.isfinite(values[need]).all()


# -- every method ------------------------------------------------------------------------
def test_registry_names() -> None:
    assert methods.get("eof") is EOF
    assert methods.get("linear") is Linear
    assert methods.get("climatology") is Climatology


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("masker", [random_mask, blob_mask])
def test_fills_every_missing_pixel(name: str, masker) -> None:
    field = low_rank()
    x = gappy(field, masker(field.shape, 0.4))
    x[:, 5] = np.nan  # a frame with no observation at all
    x[:, :, 6, 7] = np.nan
    x[:, 0, 6, 7] = field[:, 0, 6, 7]  # a pixel observed once, at the first frame
    _, _, z, result = fit_fill(name, x)
    assert_filled(z, result.values)
    if result.error is not None:
        need = ~np.isfinite(z) & np.isfinite(z).any(1, keepdims=True)
        assert np.isfinite(result.error[need]).all() and (result.error[need] > 0).all()


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name: str) -> None:
    field = low_rank(channels=2)
    x = gappy(field, blob_mask(field.shape, 0.3))
    method, _, z, result = fit_fill(name, x, **({"max_modes": 6} if name == "eof" else {}))
    state = {k: torch.as_tensor(v) for k, v in method.state_dict().items()}
    again = methods.get(name)(**method.options_dict())
    again.load_state_dict(state)
    other = again.fill(z, RNG(5))
    np.testing.assert_array_equal(other.values, result.values)
    if result.error is not None:
        np.testing.assert_array_equal(other.error, result.error)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("eof", {"max_modes": 0}),
        ("eof", {"max_modes": 2.5}),
        ("eof", {"tol": 0}),
        ("eof", {"tol": 2.0}),
        ("eof", {"max_iter": 0}),
        ("eof", {"cv_fraction": 0.7}),
        ("eof", {"patience": 0}),
        ("eof", {"center": "median"}),
        ("eof", {"alpha": -0.1}),
        ("eof", {"alpha": 1.0}),
        ("eof", {"alpha": "strong"}),
        ("eof", {"numit": 0}),
        ("eof", {"ridge": -1.0}),
        ("eof", {"ridge": float("nan")}),
        ("eof", {"modes": 3}),
        ("linear", {"sigma": 0}),
        ("climatology", {"by": "month"}),
        ("regem", {"ridge": 0}),
        ("regem", {"fill_ridge": -0.1}),
        ("regem", {"max_iter": 0}),
        ("regem", {"max_pixels": 1.5}),
    ],
)
def test_bad_options_raise(name: str, options: dict) -> None:
    with pytest.raises(ValueError):
        methods.get(name)(**options)


# -- eof ---------------------------------------------------------------------------------
def test_eof_recovers_low_rank_field() -> None:
    field = low_rank(rank=3, noise=0.01)
    mask = random_mask(field.shape, 0.3)
    x = gappy(field, mask, land=False)
    # 3 modes, plus at most one for the pixel offsets that centering on the means of
    # gappy observations leaves (a mode constant in time).
    for center in ("pixel", "global"):
        method, cube, z, result = fit_fill("eof", x, alpha=0.0, center=center)
        assert method.fit_info["modes"] in (3, 4)
        filled = cube.normaliser.denormalise(result.values)
        assert np.sqrt(np.mean((filled - field)[mask] ** 2)) < 0.05 * field.std()
    # The default temporal filter smooths these white-noise time series a little.
    _, cube, _, result = fit_fill("eof", x)
    filled = cube.normaliser.denormalise(result.values)
    assert np.sqrt(np.mean((filled - field)[mask] ** 2)) < 0.1 * field.std()


def test_eof_multivariate_and_blob_gaps() -> None:
    field = low_rank(rank=2, noise=0.02, channels=2)
    mask = blob_mask(field.shape, 0.35)
    method, cube, _, result = fit_fill("eof", gappy(field, mask))
    assert 2 <= method.fit_info["modes"] <= 4
    filled = cube.normaliser.denormalise(result.values)
    hidden = mask & np.isfinite(gappy(field, mask)).any(1, keepdims=True)
    assert np.sqrt(np.mean((filled - field)[hidden] ** 2)) < 0.15 * field.std()


def test_eof_fill_of_fit_data_is_the_dineof_reconstruction() -> None:
    field = low_rank(rank=3, noise=0.1)
    x = gappy(field, blob_mask(field.shape, 0.4))
    z = as_cube(x).values()
    method = EOF(alpha=0.0, ridge=0.0, tol=1e-6, max_iter=3000)
    res = method.fit_array(z, RNG(0))
    filled = method.fill(z, RNG(0)).values
    X = z.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])
    rows = np.isfinite(X).any(1)
    dineof = (res.filled + res.mean[:, None]).reshape(-1)
    ours = filled.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])[rows].reshape(-1)
    missing = ~np.isfinite(X[rows]).reshape(-1)
    np.testing.assert_allclose(ours[missing], dineof[missing], atol=2e-3)
    # With the filter and the prior (the defaults) it stays close.
    method = EOF(max_modes=res.info["modes"], cv_fraction=0.01)
    res = method.fit_array(z, RNG(0))
    ours = method.fill(z, RNG(0)).values.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])[rows]
    dineof = res.filled + res.mean[:, None]
    gap = ~np.isfinite(X[rows])
    assert np.sqrt(np.mean((ours - dineof)[gap] ** 2)) < 0.1 * np.sqrt(np.mean(dineof[gap] ** 2))


def test_eof_error_grows_with_fewer_observations() -> None:
    field = low_rank(rank=3, noise=0.05)
    c, t, h, w = field.shape
    p = np.where(np.arange(t) < t // 2, 0.2, 0.8)[None, :, None, None]
    mask = RNG(3).random(field.shape) < p
    mask[:, -1] = True  # one empty frame: the prior error
    method, _, z, result = fit_fill("eof", gappy(field, mask, land=False))
    err = result.error
    assert (err > 0).all() and np.isfinite(err).all()
    few, many = err[:, t // 2 : -1][mask[:, t // 2 : -1]], err[:, : t // 2][mask[:, : t // 2]]
    assert few.mean() > many.mean()
    assert err[:, -1].mean() > few.mean()


def test_eof_fills_new_times_and_checks_the_grid() -> None:
    field = low_rank(t=50)
    x = gappy(field, random_mask(field.shape, 0.3))
    cube = as_cube(x[:, :30])
    method = EOF()
    method.fit(cube, RNG(0))
    new = cube.normaliser.normalise(x[:, 30:])
    result = method.fill(new, RNG(0))
    assert_filled(new, result.values)
    truth = cube.normaliser.normalise(field[:, 30:])
    hidden = ~np.isfinite(new) & np.isfinite(new).any(1, keepdims=True)
    assert np.sqrt(np.mean((result.values - truth)[hidden] ** 2)) < 0.1
    with pytest.raises(ValueError, match="grid"):
        method.fill(new[:, :, :-1], RNG(0))


@pytest.mark.parametrize("name", ["eof", "regem", "climatology"])
def test_a_per_pixel_method_refuses_frames_of_another_grid(name: str) -> None:
    """A fill on another grid says which grids differ and what to do, for each method
    that learns per pixel."""
    field = low_rank(t=30)
    cube = as_cube(gappy(field, random_mask(field.shape, 0.3)))
    method = methods.get(name)()
    method.fit(cube, RNG(0))
    other = cube.normaliser.normalise(gappy(field, random_mask(field.shape, 0.3)))[:, :, :-1]
    with pytest.raises(ValueError, match=rf"{name}: fitted on a .* grid, got .*fit again"):
        method.fill(other, RNG(0))


def test_eof_fills_a_pixel_the_fit_never_saw_observed_from_its_own_observations() -> None:
    """A pixel observed only in frames the fit did not have follows the field, not the mean."""
    field = low_rank(t=50, noise=0.02)
    x = gappy(field, random_mask(field.shape, 0.3))
    fit_part = x[:, :30].copy()
    fit_part[:, :, 6, 8] = np.nan  # never observed while fitting
    cube = as_cube(fit_part)
    method = EOF()
    method.fit(cube, RNG(0))
    new = cube.normaliser.normalise(x[:, 30:])
    new[:, 1::2, 6, 8] = np.nan  # half of its frames observed here
    result = method.fill(new, RNG(0))
    truth = cube.normaliser.normalise(field[:, 30:])
    gap = np.isnan(new[0, :, 6, 8])
    err = np.abs(result.values[0, gap, 6, 8] - truth[0, gap, 6, 8])
    flat = np.abs(truth[0, gap, 6, 8] - truth[0, ~gap, 6, 8].mean())  # its own mean
    assert err.mean() < 0.3 * flat.mean()
    assert (result.error[0, gap, 6, 8] > err.mean()).all()  # not overconfident


def test_eof_randomized_svd_path(monkeypatch: pytest.MonkeyPatch) -> None:
    field = low_rank(rank=3, noise=0.01)
    mask = random_mask(field.shape, 0.3)
    monkeypatch.setattr(eof_module, "GRAM_MAX_T", 4)
    method, cube, _, result = fit_fill("eof", gappy(field, mask, land=False), alpha=0.0)
    assert method.fit_info["modes"] in (3, 4)
    filled = cube.normaliser.denormalise(result.values)
    assert np.sqrt(np.mean((filled - field)[mask] ** 2)) < 0.05 * field.std()


def test_eof_center_pixel_takes_any_sign_and_offset() -> None:
    field = low_rank(rank=2) - 7.0 + np.linspace(-3, 3, 16)[None, None, None, :]
    mask = random_mask(field.shape, 0.3)
    for center in ("pixel", "global"):
        _, cube, _, result = fit_fill("eof", gappy(field, mask, land=False), center=center)
        filled = cube.normaliser.denormalise(result.values)
        assert np.sqrt(np.mean((filled - field)[mask] ** 2)) < 0.1 * field.std()


def test_cloud_cv_mask_is_reproducible_and_cloud_shaped() -> None:
    field = low_rank()
    mask = blob_mask(field.shape, 0.4)[0]
    observed = ~mask.transpose(1, 2, 0).reshape(-1, mask.shape[0])
    grid = np.ones(mask.shape[1:], dtype=bool)[None]
    a = cloud_cv_mask(observed, 0.1, RNG(7), grid)
    b = cloud_cv_mask(observed, 0.1, RNG(7), grid)
    np.testing.assert_array_equal(a, b)
    assert not (a & ~observed).any()
    assert 0.03 < a.sum() / observed.sum() < 0.25
    # Gap-free data: random blocks instead.
    full = np.ones_like(observed)
    c = cloud_cv_mask(full, 0.1, RNG(7), grid)
    assert 0.02 < c.mean() < 0.3


def test_eof_fit_info_is_json_serialisable() -> None:
    import json

    method, *_ = fit_fill("eof", gappy(low_rank(), random_mask((1, 40, 12, 16), 0.3)))
    info = json.loads(json.dumps(method.fit_info))
    assert 1 <= info["modes"] <= len(info["cv_rmse"])
    assert info["cv_points"] > 0


@pytest.mark.parametrize("name", ["eof", "climatology", "regem"])
def test_time_chunks_fill_like_the_whole(name: str) -> None:
    """They fill frame by frame, so any time chunks give the whole-cube fill."""
    field = low_rank()
    x = gappy(field, blob_mask(field.shape, 0.4))
    method, _, z, whole = fit_fill(name, x)
    assert "time" not in method.chunking().whole
    for sl in (slice(0, 7), slice(7, 30), slice(30, None)):
        part = method.fill(z[:, sl], RNG(0))
        np.testing.assert_allclose(part.values, whole.values[:, sl], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(part.error, whole.error[:, sl], rtol=1e-5, atol=1e-5)


# -- regem -------------------------------------------------------------------------------
def gaussian_field(t: int = 80, h: int = 10, w: int = 12, scale: float = 2.5, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(C, T, H, W)`` frames drawn independently from a Gaussian random field with a
    squared-exponential covariance (many modes of slowly falling variance), and that
    covariance (pixels × pixels)."""
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pts = np.column_stack([yy.ravel(), xx.ravel()]).astype(float)
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    cov = np.exp(-d2 / (2 * scale**2)) + 1e-3 * np.eye(h * w)
    frames = RNG(seed).multivariate_normal(np.zeros(h * w), cov, size=t)
    return frames.reshape(1, t, h, w).astype(np.float32), cov


def test_regem_beats_truncated_eofs_on_a_field_of_many_modes() -> None:
    """On a Gaussian field with many modes, RegEM's fill from the gappy frames alone
    beats DINEOF's truncated EOFs by far; kriging with the true covariance bounds it, and
    its conditional standard deviation is of the size of its errors."""
    field, cov = gaussian_field()
    mask = blob_mask(field.shape, 0.4)
    x = gappy(field, mask, land=False)
    with threadpool_limits(1):
        method, cube, z, result = fit_fill("regem", x)
        _, _, _, dineof = fit_fill("eof", x)
    truth = cube.normaliser.normalise(field)
    std = float(np.ravel(cube.normaliser.std)[0])
    zero = cube.normaliser.normalise(np.zeros_like(field))[0, 0].ravel().astype(np.float64)
    precision = np.linalg.inv(cov / std**2)
    oracle = truth.copy()
    for t in range(field.shape[1]):
        y = truth[0, t].ravel().astype(np.float64)
        seen = ~mask[0, t].ravel()
        row = projections(y[None], seen[None], zero, precision)[0]
        oracle[0, t].reshape(-1)[~seen] = conditional(seen, zero, precision, 0.0, row)[0]

    def mae(v: np.ndarray) -> float:
        return float(np.abs(v - truth)[mask].mean())

    assert method.fit_info["converged"]
    assert mae(oracle) < mae(result.values) < 0.75 * mae(dineof.values)
    error = np.abs(result.values - truth)[mask]
    assert 0.5 < (error <= result.error[mask]).mean() < 0.85
    assert 0.8 < (error <= 2 * result.error[mask]).mean() < 0.99


def test_regem_ridge_shrinks_with_the_observations_per_pixel() -> None:
    """The default EM ridge is 20 over the mean count of a pixel's observations, so a cube
    with half its values hidden gets twice the ridge; a ridge given is kept."""
    field = low_rank(t=80)
    counts = {}
    for name, mask in (("dense", random_mask(field.shape, 0.1)),
                       ("sparse", random_mask(field.shape, 0.55))):
        x = gappy(field, mask)
        seen = np.isfinite(x[0])
        counts[name] = seen.sum(0)[seen.any(0)].mean()
        with threadpool_limits(1):
            method = fit_fill("regem", x, ridge=None, max_iter=2)[0]
        assert method.fit_info["ridge"] == pytest.approx(20 / counts[name], rel=1e-4)
    assert counts["dense"] > 1.8 * counts["sparse"]
    with threadpool_limits(1):
        assert fit_fill("regem", gappy(field, random_mask(field.shape, 0.1)), ridge=0.3,
                        max_iter=2)[0].fit_info["ridge"] == 0.3


def test_calibration_copies_make_the_fitted_methods_choices() -> None:
    """The error model's copy of a fitted method makes its choices: ``eof`` keeps its
    number of modes and noise variance, ``regem`` the ridge it validated."""
    field = low_rank(t=40)
    x = gappy(field, random_mask(field.shape, 0.3))
    with threadpool_limits(1):
        eof = fit_fill("eof", x, max_modes=5)[0]
        copy = eof.calibration_copy()
        copy.fit(as_cube(np.where(random_mask(x.shape, 0.1, seed=5), np.nan, x)), RNG(1))
        validated = fit_fill("regem", x, ridge="validate", max_iter=2)[0]
    assert copy.fit_info["modes"] == eof.fit_info["modes"]
    np.testing.assert_array_equal(copy.state_dict()["noise_var"], eof.state_dict()["noise_var"])
    assert isinstance(validated.options.ridge, float)  # the fitted model keeps its choice
    assert validated.calibration_copy().options.ridge == validated.options.ridge


def test_regem_trace_sees_the_moments_after_every_step() -> None:
    """``regem``'s ``trace`` sees the moments after every round (three E-steps when
    accelerated, plain steps when fewer are left), with its change, and the last moments
    it sees are the ones returned."""
    field = low_rank(t=30)
    y = gappy(field, random_mask(field.shape, 0.3))[0].reshape(30, -1)
    y = y[:, np.isfinite(y).any(0)]  # the fitted pixels
    start = np.where(np.isfinite(y), y, np.nanmean(y, 0))
    for accelerate, rounds in ((False, [0, 1, 2, 3, 4]), (True, [0, 3, 4])):
        seen = []
        with threadpool_limits(1):
            mean, cov, iterations, change = regem_module.regem(
                y, start, 0.1, tol=1e-12, max_iter=4, accelerate=accelerate,
                trace=lambda k, mu, c, ch: seen.append((k, mu.copy(), c.copy(), ch)))
        assert [k for k, *_ in seen] == rounds and iterations == 4
        assert seen[0][3] == np.inf and seen[-1][3] == change
        assert np.array_equal(seen[-1][1], mean) and np.array_equal(seen[-1][2], cov)
        assert not np.array_equal(seen[0][2], cov)


def test_regem_acceleration_reaches_the_fixed_point_in_fewer_steps() -> None:
    """With half the values missing EM creeps towards its fixed point; SQUAREM's rounds
    get nearer to it in 15 E-steps than plain EM in 45, 100 times nearer in 45, and keep
    the covariance positive semi-definite."""
    field, _ = gaussian_field(t=40, h=8, w=9)
    y = gappy(field, blob_mask(field.shape, 0.5), land=False)[0].reshape(40, -1)
    y = y.astype(np.float64)
    start = np.where(np.isfinite(y), y, 0.0)

    def em(steps: int, accelerate: bool) -> np.ndarray:
        return regem_module.regem(y, start, 0.2, tol=1e-12, max_iter=steps,
                                  accelerate=accelerate)[1]

    with threadpool_limits(1):
        fixed = em(600, False)
        plain, fast, faster = em(45, False), em(15, True), em(45, True)
    off = np.abs(plain - fixed).max()
    assert np.abs(fast - fixed).max() < off and np.abs(faster - fixed).max() < off / 100
    assert np.linalg.eigvalsh(fast)[0] > -1e-10


def test_regem_started_from_another_ridges_moments_is_nearer_its_fixed_point() -> None:
    """EM started from the moments of a fit with another ridge (as ``ridge="validate"``
    starts each candidate and the final fit) gets nearer the fixed point in the same
    E-steps than EM started from a first guess in the gaps, and its first E-step counts."""
    field, _ = gaussian_field(t=40, h=8, w=9)
    y = gappy(field, blob_mask(field.shape, 0.5), land=False)[0].reshape(40, -1)
    y = y.astype(np.float64)
    start = np.where(np.isfinite(y), y, 0.0)
    with threadpool_limits(1):
        fixed = regem_module.regem(y, start, 0.2, tol=1e-12, max_iter=300)[1]
        other = regem_module.regem(y, start, 0.8, tol=1e-12, max_iter=300)[:2]
        cold = regem_module.regem(y, start, 0.2, tol=1e-12, max_iter=9)
        warm = regem_module.regem(y, other, 0.2, tol=1e-12, max_iter=9)
    assert cold[2] == warm[2] == 9
    assert np.abs(warm[1] - fixed).max() < np.abs(cold[1] - fixed).max() / 2


def test_regem_validate_chooses_the_ridge_that_fills_the_gaps_best() -> None:
    """``ridge="validate"`` keeps the candidate that filled its hidden observations best,
    records every candidate's error, and on a smooth field (few modes, where the default
    ridge over-shrinks) picks the ridge that is best in the real gaps too."""
    field, _ = gaussian_field(t=60, h=8, w=9, scale=4.0)
    mask = blob_mask(field.shape, 0.4)
    x = gappy(field, mask, land=False)
    errors = {}
    with threadpool_limits(1):
        for ridge in ("validate", None, *regem_module.VALIDATION_RIDGES):
            method, cube, _, result = fit_fill("regem", x, ridge=ridge)
            truth = cube.normaliser.normalise(field)
            errors[ridge] = float(np.abs(result.values - truth)[mask].mean())
            if ridge == "validate":
                chosen = method
    scores = chosen.fit_info["validation_mae"]
    ridges = {float(k.split(",")[1].split("=")[1]) for k in scores}
    assert ridges == set(regem_module.VALIDATION_RIDGES)
    assert f"ridge={chosen.options.ridge:g}," in min(scores, key=scores.get)
    assert chosen.options.ridge == chosen.fit_info["ridge"]
    best = min(errors[r] for r in regem_module.VALIDATION_RIDGES)
    assert errors["validate"] <= 1.01 * best < 0.9 * errors[None]
    with pytest.raises(ValueError, match="ridge"):
        methods.get("regem")(ridge="cross-validate")


def lonlat_field(t: int, scale_km: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """``(C, T, H, W)`` frames of a Gaussian random field on a 2° grid (10 latitudes from
    30°N, 12 longitudes) with a squared-exponential covariance of ``scale_km``, and the
    grid's latitudes and longitudes."""
    lat, lon = 30.0 + 2.0 * np.arange(10), 2.0 * np.arange(12)
    dist = grid_distances(lat, lon)
    cov = np.exp(-dist**2 / (2 * scale_km**2)) + 1e-3 * np.eye(len(dist))
    frames = RNG(seed).multivariate_normal(np.zeros(len(dist)), cov, size=t)
    return frames.reshape(1, t, 10, 12).astype(np.float32), lat, lon


def lonlat_cube(x: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> Cube:
    """A Cube around a one-channel ``(1, T, H, W)`` array on a latitude/longitude grid."""
    coords = {"time": np.arange(x.shape[1]), "lat": lat, "lon": lon}
    return Cube(xr.DataArray(x[0], dims=("time", "lat", "lon"), coords=coords, name="v"))


def test_gaspari_cohn_and_chordal_distances() -> None:
    """The taper is 1 at 0, 0 from twice the length on, continuous at the length, and a
    correlation (positive semi-definite) on a grid; chordal distances on the sphere."""
    r = np.array([0.0, 1 - 1e-9, 1.0, 1 + 1e-9, 2.0, 3.0])
    g = gaspari_cohn(r)
    assert g[0] == 1.0 and g[4] == g[5] == 0.0 and abs(g[1] - g[3]) < 1e-6
    assert 0 < g[2] < 1
    taper = gaspari_cohn(grid_distances(np.arange(-60.0, 61.0, 10.0), np.arange(0, 360.0, 15))
                         / 1500.0)
    assert np.linalg.eigvalsh(taper).min() > -1e-9
    d = chordal_km(np.array([0.0, 0.0, 90.0, -90.0]), np.array([0.0, 90.0, 0.0, 0.0]))
    np.testing.assert_allclose([d[0, 1], d[2, 3], d[0, 0]], [6371 * np.sqrt(2), 2 * 6371, 0],
                               atol=1e-6)


def test_regem_localisation_beats_the_sample_covariance_of_few_frames() -> None:
    """With fewer frames than pixels, the localised covariance fills a short-range field
    far better than the unlocalised one (same ridges); ``length="validate"`` picks a
    length at least as good as the unlocalised fit, and its choice survives a refit."""
    field, lat, lon = lonlat_field(t=30, scale_km=400.0)
    mask = blob_mask(field.shape, 0.4)
    x = gappy(field, mask, land=False)
    cube = lonlat_cube(x, lat, lon)
    z = cube.values()
    truth = cube.normaliser.normalise(field)
    errors, fitted = {}, {}
    with threadpool_limits(1):
        for length in (None, 1000.0, "validate"):
            fixed = {} if length == "validate" else {"ridge": 0.01, "fill_ridge": 0.003}
            method = methods.get("regem")(length=length, **fixed)
            method.fit(cube, RNG(0))
            errors[length] = float(np.abs(method.fill(z, RNG(0)).values - truth)[mask].mean())
            fitted[length] = method
    assert errors[1000.0] < 0.9 * errors[None]
    chosen = fitted["validate"]
    scores = chosen.fit_info["validation_mae"]
    tried = {float(k.split(",")[0].split("=")[1]) for k in scores}
    assert len(tried) >= 2 and tried <= set(regem_module.VALIDATION_LENGTHS)
    best = min(scores, key=scores.get)
    assert best == f"length={chosen.options.length:g},ridge={chosen.options.ridge:g}," \
        f"fill_ridge={chosen.options.fill_ridge:g}"
    assert chosen.options.length in regem_module.VALIDATION_LENGTHS
    assert errors["validate"] < errors[None]
    copy = chosen.calibration_copy()
    assert copy.options.length == chosen.options.length and copy._sigma_scale == \
        chosen._sigma_scale
    restored = methods.get("regem")(**chosen.options_dict())
    restored.load_state_dict(chosen.state_dict())
    np.testing.assert_array_equal(restored.fill(z, RNG(0)).error, chosen.fill(z, RNG(0)).error)


def test_regem_length_needs_latitude_and_longitude() -> None:
    """A localisation length on a grid without latitude/longitude says what to do;
    ``"validate"`` there fits without localisation."""
    x = gappy(low_rank(t=20), random_mask((1, 20, 12, 16), 0.3))
    with pytest.raises(ValueError, match="length=None"):
        fit_fill("regem", x, length=2000.0)
    with threadpool_limits(1):
        method = fit_fill("regem", x, max_iter=2)[0]
    assert method.options.length is None and method.fit_info["length"] is None
    with pytest.raises(ValueError, match="length"):
        methods.get("regem")(length=-5.0)


def test_regem_sigma_scale_calibrates_the_conditional_spread() -> None:
    """The spread of the validated fit, scaled on its hidden observations, holds about
    68% of the errors in the real gaps (the unscaled spread of a small ridge, far less)."""
    field, _ = gaussian_field()
    mask = blob_mask(field.shape, 0.4)
    x = gappy(field, mask, land=False)
    with threadpool_limits(1):
        method, cube, _, result = fit_fill("regem", x)
    truth = cube.normaliser.normalise(field)
    error = np.abs(result.values - truth)[mask]
    scale = method.fit_info["sigma_scale"]
    assert scale > 1.2
    assert (error <= result.error[mask] / scale).mean() < 0.55
    assert 0.6 < (error <= result.error[mask]).mean() < 0.8


def test_regem_too_many_pixels_says_what_to_do() -> None:
    x = gappy(low_rank(), blob_mask((1, 40, 12, 16), 0.3))
    with pytest.raises(ValueError, match=r"max_pixels=50.*method='eof'"):
        fit_fill("regem", x, max_pixels=50)


# -- linear ------------------------------------------------------------------------------
def test_linear_is_exact_on_a_field_linear_in_time() -> None:
    t, h, w = 20, 6, 7
    rng = RNG(0)
    a, b = rng.normal(size=(h, w)), rng.normal(size=(h, w))
    field = (a + b * np.arange(t)[:, None, None])[None].astype(np.float32)
    mask = random_mask(field.shape, 0.5)
    mask[:, 0] = mask[:, -1] = False  # ends observed: time reaches every gap
    x = np.where(mask, np.nan, field).astype(np.float32)
    result = Linear().fill(x, RNG(0))
    np.testing.assert_allclose(result.values[mask], field[mask], rtol=1e-5, atol=1e-5)
    assert result.error is None


def test_linear_fills_series_ends_spatially() -> None:
    x = np.full((1, 5, 4, 4), np.nan, dtype=np.float32)
    x[0, :, :, :2] = 1.0  # left half always observed
    x[0, 2:, :, 2:] = 3.0  # right half observed from t = 2 on
    values = Linear().fill(x, RNG(0)).values
    assert np.isfinite(values).all()
    assert (values[0, :2, :, 2:] >= 1.0).all() and (values[0, :2, :, 2:] <= 3.0).all()
    np.testing.assert_allclose(values[0, 2:], x[0, 2:])



def test_spatial_fill_by_tiles_equals_whole_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    from gapfill.methods import linear as linear_module

    rng = RNG(3)
    x = rng.normal(size=(3, 90, 130)).astype(np.float32)
    x[Cloud(coverage=0.8, seed=2).sample(x.shape)] = np.nan
    x[1, :50, 10:60] = np.nan  # a hole wider than the first scales' margins
    targets = np.zeros(x.shape, dtype=bool)  # in a few tiles only, so that tiles are used
    targets[:, 10:40, 20:50] = targets[:, 60:80, 90:120] = True
    monkeypatch.setattr(linear_module, "SPATIAL_TILE", 1000)  # one tile: whole frames
    whole = linear_module.spatial_fill(x, targets)
    monkeypatch.setattr(linear_module, "SPATIAL_TILE", 16)
    tiled = linear_module.spatial_fill(x, targets)
    np.testing.assert_array_equal(tiled, whole)  # bit for bit, NaN where unreachable
    assert (np.isfinite(whole) & np.isnan(x)).sum() > 1000

# -- climatology -------------------------------------------------------------------------
def test_climatology_is_the_pixel_mean_and_std() -> None:
    field = low_rank()
    x = gappy(field, random_mask(field.shape, 0.3))
    method, cube, z, result = fit_fill("climatology", x)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        mean, std = np.nanmean(z, axis=1), np.nanstd(z, axis=1)
    seen = np.isfinite(mean)
    np.testing.assert_allclose(result.values[:, 3][seen], mean[seen], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.error[:, 3][seen], std[seen], rtol=1e-4, atol=1e-6)


def test_climatology_of_a_pixel_the_fit_never_saw() -> None:
    """Its own observations in the array filled when it has some there, else the frame mean."""
    x = np.ones((1, 4, 3, 3), dtype=np.float32)
    x[0, :, 0, 0] = x[0, :, 2, 2] = np.nan  # never observed when fitting
    method = Climatology()
    method.fit_array(x)
    new = x.copy()
    new[0, 1, 0, 0], new[0, 3, 0, 0] = 5.0, 7.0  # ... but observed in the data to fill
    new[0, 1, 1, 1] = 3.0
    result = method.fill(new, RNG(0))
    np.testing.assert_allclose(result.values[0, [0, 2], 0, 0], 6.0)  # its own mean
    np.testing.assert_allclose(result.error[0, [0, 2], 0, 0], 1.0)  # and its own std
    np.testing.assert_allclose(result.values[0, 2, 2, 2], 1.0)  # frame 2: its frame mean
    np.testing.assert_allclose(result.values[0, 1, 2, 2], new[0, 1][np.isfinite(new[0, 1])].mean())
    np.testing.assert_allclose(result.error[0, :, 2, 2], 1.0)


# -- properties --------------------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    c=st.integers(1, 2),
    t=st.integers(2, 12),
    h=st.integers(2, 6),
    w=st.integers(2, 6),
    p=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**16),
)
def test_property_every_method_fills_every_gap(
    c: int, t: int, h: int, w: int, p: float, seed: int
) -> None:
    rng = RNG(seed)
    field = rng.normal(size=(c, t, h, w)).astype(np.float32) + np.arange(t)[:, None, None]
    mask = rng.random(field.shape) < p
    mask[:, rng.integers(t), rng.integers(h), rng.integers(w)] = False  # >= 1 observation
    x = np.where(mask, np.nan, field).astype(np.float32)
    cube = as_cube(x)
    z = cube.values()
    for name in ALL:
        method = methods.get(name)()
        method.fit(cube, RNG(seed))
        result = method.fill(z, RNG(seed))
        assert_filled(z, result.values)
        if result.error is not None:
            need = ~np.isfinite(z) & np.isfinite(z).any(1, keepdims=True)
            assert np.isfinite(result.error[need]).all() and (result.error[need] > 0).all()
