"""The calibrated error model and the gap-shaped hold-out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import gapfill
from gapfill import errors, masks
from gapfill.diagnostics import (
    HOLDOUT_STREAM,
    TIME_BLOCKS,
    VALIDATION_STREAM,
    block_bootstrap_se,
    borrowed_gaps,
    holdout_mask,
    resolve_process,
)
from gapfill.fitted import Holdout


def noisy_cube(noise: float = 0.3, t: int = 48, h: int = 24, w: int = 32, seed: int = 0):
    """A smooth travelling field plus white noise of known ``noise`` std, and cloud gaps.

    Returns ``(truth, gappy)``; the noise is part of the truth, so no method can
    predict it and the fill's error in the gaps is at least ``noise``.
    """
    rng = np.random.default_rng(seed)
    tt, yy, xx = np.meshgrid(np.arange(t), np.linspace(-1, 1, h), np.linspace(0, 2 * np.pi, w),
                             indexing="ij")
    field = 290 + 2 * np.cos(1.5 * yy) + np.sin(xx - 0.4 * tt) + 0.5 * np.cos(2 * np.pi * tt / 12)
    truth = (field + noise * rng.standard_normal(field.shape)).astype(np.float64)
    coords = {"time": pd.date_range("2001-01-01", periods=t, freq="MS"),
              "lat": np.linspace(-5, 5, h), "lon": np.linspace(100, 130, w)}
    truth = xr.DataArray(truth, dims=("time", "lat", "lon"), coords=coords, name="sst")
    hidden = masks.Cloud(coverage=0.4, seed=seed).sample((t, h, w))
    return truth, truth.where(~hidden)


# -- features -------------------------------------------------------------------------
def test_space_distance_is_the_exact_euclidean_distance():
    rng = np.random.default_rng(1)
    observed = rng.random((3, 9, 11)) < 0.1
    observed[:, 0, 0] = True
    got = errors.space_distance(observed, cap=50)
    for f in range(3):
        ys, xs = np.nonzero(observed[f])
        yy, xx = np.mgrid[:9, :11]
        brute = np.sqrt((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(-1)
        np.testing.assert_allclose(got[f], brute, rtol=1e-6)


def test_fill_gradient_is_exact_on_a_plane_and_one_sided_at_coasts():
    yy, xx = np.mgrid[:8, :10]
    plane = np.broadcast_to(0.3 * yy - 0.2 * xx, (1, 2, 8, 10)).astype(np.float32).copy()
    plane[:, :, 4, 5] = np.nan  # a coast pixel: its neighbours use their other side
    got = errors.fill_gradient(plane)
    sea = np.isfinite(plane)
    np.testing.assert_allclose(got[sea], np.hypot(0.3, 0.2), rtol=1e-5)  # edges included
    features = errors.gap_features(np.zeros(plane.shape, bool), filled=plane)
    np.testing.assert_allclose(features[errors.GRADIENT][sea], np.log(np.hypot(0.3, 0.2)),
                               rtol=1e-5)
    assert (errors.gap_features(np.zeros(plane.shape, bool))[errors.GRADIENT] == 0).all()


def test_error_model_widens_the_error_on_fronts():
    """Errors that scale with the fill's steepness, at equal distance from the data: the
    model learns it, and the shares within 1σ are right on flat and steep pixels alike."""
    rng = np.random.default_rng(0)
    n = 20000
    features = np.zeros((len(errors.FEATURES), n))
    features[0] = np.log1p(rng.integers(1, 6, n))  # distance to the data
    gradient = np.exp(rng.uniform(-4, 0, n))
    features[errors.GRADIENT] = np.log(gradient)
    sigma = 0.1 * np.expm1(features[0]) ** 0.5 * (0.02 + gradient)
    abs_error = np.abs(rng.standard_normal(n) * sigma)
    model = errors.ErrorModel.fit(abs_error, features)
    assert model.coef[1 + errors.GRADIENT] > 0.3
    predicted = model.predict(features)
    for part in (gradient < np.quantile(gradient, 0.3), gradient > np.quantile(gradient, 0.7)):
        one, two = errors.within_shares(abs_error[part], predicted[part])
        assert 0.6 < one < 0.76 and 0.9 < two < 0.99, (one, two)
    blind = errors.ErrorModel.fit(abs_error, np.where(
        np.arange(len(errors.FEATURES))[:, None] == errors.GRADIENT, 0.0, features))
    steep = gradient > np.quantile(gradient, 0.7)
    assert errors.within_shares(abs_error[steep], blind.predict(features)[steep])[0] < 0.6


def test_beyond_adjacent_features_are_0_next_to_an_observation_and_1_from_two_steps():
    observed = np.zeros((1, 4, 5, 5), dtype=bool)
    observed[0, 0, 2, 2] = True
    features = errors.gap_features(observed)
    space = features[errors.SPACE_BEYOND, 0, 0]
    assert space[2, 3] == 0 and space[2, 4] == 1 and space[2, 2] == 0
    np.testing.assert_allclose(space[1, 1], np.sqrt(2) - 1, rtol=1e-6)  # the diagonal
    time = features[errors.TIME_BEYOND, 0, :, 2, 2]
    np.testing.assert_array_equal(time, [0, 0, 1, 1])


def test_error_model_learns_that_a_pixel_next_to_the_data_is_easier():
    """Errors much smaller one pixel from an observation than ``log1p(distance)`` says, in
    pixels of every variability: with the beyond-adjacent features the shares are right
    on both sides of the step; without them the error next to the data is too wide."""
    rng = np.random.default_rng(0)
    n = 20000
    distance = rng.integers(1, 9, n).astype(float)
    features = np.zeros((len(errors.FEATURES), n))
    features[0] = np.log1p(distance)
    features[errors.SPACE_BEYOND] = np.clip(distance - 1, 0, 1)
    variability = rng.uniform(-1.5, 1.5, n)  # mixes the distances in every bin of the scale
    features[errors.VARIABILITY] = variability
    sigma = np.where(distance == 1, 0.3, 1.0) * distance**0.3 * np.exp(variability)
    abs_error = np.abs(rng.standard_normal(n) * sigma)
    model = errors.ErrorModel.fit(abs_error, features)
    predicted = model.predict(features)
    for part in (distance == 1, distance > 1):
        one, two = errors.within_shares(abs_error[part], predicted[part])
        assert 0.63 < one < 0.73 and 0.92 < two < 0.98, (one, two)
    blind = errors.ErrorModel.fit(abs_error, np.where(
        np.arange(len(errors.FEATURES))[:, None] == errors.SPACE_BEYOND,
        0.0, features))
    near = distance == 1
    assert errors.within_shares(abs_error[near], blind.predict(features)[near])[0] > 0.8


def test_time_features_use_the_observations_outside_a_chunk():
    observed = np.zeros((1, 4, 1, 1), dtype=bool)
    inside = errors.gap_features(observed)
    edged = errors.gap_features(observed, before=np.ones((1, 1, 1)), after=np.full((1, 1, 1), 2))
    # distances to the nearer observation: 1, 2, 3 (before) and 2 (after the last frame)
    np.testing.assert_allclose(np.expm1(edged[1, 0, :, 0, 0]), [1, 2, 3, 2])
    assert (inside[1] >= edged[1]).all()


def test_time_variability_is_the_rms_step_of_each_pixel():
    z = np.full((1, 5, 1, 3), np.nan, np.float32)
    z[0, :, 0, 0] = [0, 1, 0, 1, 0]  # steps of 1
    z[0, :, 0, 1] = [0, 2, np.nan, 2, 0]  # two observed pairs, steps of 2
    z[0, :, 0, 2] = [0, np.nan, 1, np.nan, 0]  # no observed pair: the median of the others
    np.testing.assert_allclose(errors.time_variability(z)[0, 0], [1, 2, 1.5])


def test_error_follows_how_much_each_pixel_changes():
    """Half the cube changes ten times as much from one step to the next as the other:
    the error of a time interpolation does too, and each half gets its own calibrated
    error (a model that sees only the distances to the observations gives both halves
    the same error: the quiet half ends near 100% within 1σ, the restless one far below)."""
    rng = np.random.default_rng(0)
    t, h, w = 96, 16, 32
    spread = np.where(np.arange(w) < w // 2, 0.05, 0.5)
    truth = xr.DataArray(290 + spread * rng.standard_normal((t, h, w)), dims=("time", "y", "x"),
                         name="sst")
    gappy = truth.where(~masks.Cloud(coverage=0.4, seed=0).sample((t, h, w)))
    out = gappy.gapfill.fill(gappy.gapfill.fit("linear", seed=0), diagnostics=False)
    gap = (gappy.isnull() & truth.notnull()).values
    err, sigma = np.abs(out["sst"].values - truth.values), out["sst_error"].values
    for half in (np.arange(w) < w // 2, np.arange(w) >= w // 2):
        inside = gap & half
        one, two = errors.within_shares(err[inside], sigma[inside])
        assert 0.58 <= one <= 0.78 and 0.9 <= two <= 0.99, (one, two)


def test_error_model_recovers_a_known_error_law():
    """|error| ~ N(0, 0.1·(1 + d)): slopes positive, shares within 1σ / 2σ as a Gaussian's."""
    rng = np.random.default_rng(0)
    n = 20_000
    d = rng.integers(0, 20, n).astype(float)
    feats = np.zeros((len(errors.FEATURES), n))
    feats[0] = np.log1p(d)
    sigma = 0.1 * (1 + d)
    e = np.abs(sigma * rng.standard_normal(n))
    model = errors.ErrorModel.fit(e, feats)
    assert model.coef[1] > 0.5
    fresh = np.abs(sigma * rng.standard_normal(n))
    one, two = errors.within_shares(fresh, model.predict(feats))
    assert 0.65 < one < 0.71 and 0.93 < two < 0.97
    again = errors.ErrorModel.from_state(model.state_dict())
    np.testing.assert_array_equal(again.predict(feats), model.predict(feats))


def test_error_model_slopes_never_negative():
    rng = np.random.default_rng(0)
    feats = rng.random((len(errors.FEATURES), 5000))
    e = np.exp(-2 * feats[0] + 0.3 * rng.standard_normal(5000))  # error shrinking with distance
    model = errors.ErrorModel.fit(e, feats)
    assert (model.coef[1:] >= 0).all() and (model.coef[1:] <= errors.MAX_SLOPE).all()


# -- calibration end to end --------------------------------------------------------------
def test_error_is_calibrated_on_a_cube_with_known_noise():
    """In the punched gaps of a noisy cube, the true errors fall within 1σ and 2σ of the
    error variable about as often as a Gaussian's: 63–73 % and 92–98 % on average over
    the classical methods, and no method far off; the hold-out MAE is within 15 % of the
    true MAE."""
    truth, gappy = noisy_cube(noise=0.5)
    hidden = (gappy.isnull() & truth.notnull()).values
    shares = []
    for method, options in [("linear", {}), ("climatology", {}), ("eof", {"max_modes": 6}),
                            ("regem", {})]:
        out = gappy.gapfill.fill(gappy.gapfill.fit(method, seed=1, **options))
        err = np.abs(out["sst"].values - truth.values)[hidden]
        shares.append(errors.within_shares(err, out["sst_error"].values[hidden]))
        assert 0.85 <= out.attrs["gapfill_holdout_mae"] / err.mean() <= 1.15, method
        assert 0.5 < out.attrs["gapfill_holdout_within_1sigma"] < 0.85
        assert 0.85 < out.attrs["gapfill_holdout_within_2sigma"] <= 1.0
    one, two = np.mean(shares, axis=0)
    assert 0.63 <= one <= 0.73 and 0.92 <= two <= 0.98, shares
    assert all(0.55 <= a <= 0.8 and 0.88 <= b <= 0.99 for a, b in shares), shares


def test_error_model_survives_save_and_load(tmp_path):
    _, gappy = noisy_cube(t=24, h=12, w=16)
    model = gappy.gapfill.fit("linear")
    assert model.error_model is not None and "calibration_seconds" in model.info
    again = gapfill.load(model.save(tmp_path / "m.pt"))
    stamps = ("history", "date_created")  # the fill's clock time
    a, b = (gappy.gapfill.fill(m, diagnostics=False) for m in (model, again))
    for out in (a, b):
        out.attrs = {k: v for k, v in out.attrs.items() if k not in stamps}
    xr.testing.assert_identical(a, b)


def test_reliability_table_compares_expected_and_observed_shares():
    _, gappy = noisy_cube(t=24, h=12, w=16)
    diag = gappy.gapfill.score(gappy.gapfill.fit("climatology"))
    table = diag.reliability()
    assert list(table.columns) == ["k", "expected", "observed"]
    assert table["expected"].is_monotonic_increasing and table["observed"].is_monotonic_increasing
    assert table.loc[table["k"] == 1.0, "expected"].item() == pytest.approx(0.6827, abs=1e-3)


# -- the hold-out ------------------------------------------------------------------------
def test_holdout_mae_standard_error_is_the_spread_of_its_mean():
    """Independent errors: σ/√n. Errors shared by stretches of time (the hold-out is a few
    drifting patches): the spread of the stretches' means over √(number of stretches).
    Too few stretches hold errors, or none: NaN."""
    rng = np.random.default_rng(0)
    n_time, n = 100, 20000
    t = rng.integers(0, n_time, n)
    noise = rng.standard_normal(n)
    assert block_bootstrap_se(t, noise, n_time) == pytest.approx(1 / np.sqrt(n), rel=0.15)
    stretch = t * TIME_BLOCKS // n_time
    shared = rng.standard_normal(TIME_BLOCKS)[stretch] + 0.1 * noise
    means = np.array([shared[stretch == b].mean() for b in range(TIME_BLOCKS)])
    expected = means.std() / np.sqrt(TIME_BLOCKS)
    assert block_bootstrap_se(t, shared, n_time) == pytest.approx(expected, rel=0.1)
    assert expected > 10 / np.sqrt(n)  # far above what independent pixels would say
    two = stretch < 2
    assert np.isnan(block_bootstrap_se(t[two], shared[two], n_time))
    assert np.isnan(block_bootstrap_se(t[:0], shared[:0], n_time))


def test_holdout_is_never_inside_gaps_punched_with_the_same_seed():
    """Gaps punched with gapfill.masks seed 0, then a seed-0 fit: the hold-out is not empty."""
    truth, _ = noisy_cube(t=24, h=16, w=24)
    hidden = masks.Cloud(coverage=0.4, seed=0).sample(truth.shape)
    gappy = truth.where(~hidden)
    model = gappy.gapfill.fit("linear", seed=0, holdout_process="cloud")
    out = gappy.gapfill.fill(model)
    assert out.attrs["gapfill_holdout_n"] > 0.05 * np.isfinite(gappy.values).sum()
    assert np.isfinite(out.attrs["gapfill_holdout_mae"])


def test_holdout_and_punch_draws_are_independent():
    """On a gap-free cube, a seed-0 hold-out overlaps a seed-0 punch as chance would."""
    shape = (24, 32, 48)
    punch = masks.Cloud(coverage=0.4, seed=0).sample(shape)
    observed = np.ones((1, *shape), dtype=bool)
    held = holdout_mask(observed, Holdout(0.1, "cloud", 0))[0]
    share_inside = (held & punch).sum() / held.sum()
    assert 0.25 < share_inside < 0.55  # 0.4 by chance; 1.0 when the streams coincide
    validation = holdout_mask(observed, Holdout(0.1, "cloud", 0), stream=VALIDATION_STREAM)[0]
    assert 0.02 < (held & validation).sum() / held.sum() < 0.25
    assert HOLDOUT_STREAM != VALIDATION_STREAM


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_repeated_holdout_draws_refit_without_their_pixels():
    """Each extra draw of the score refits the method without its own hold-out and
    validation pixels, and is independent of the model's own hold-out."""
    from gapfill.cube import Cube
    from gapfill.diagnostics import fit_masks, refit

    _, gappy = noisy_cube(t=24, h=12, w=16)
    model = gappy.gapfill.fit("climatology", seed=2)
    observed = np.isfinite(gappy.values)[None]
    own, _ = fit_masks(observed, model.holdout, draw=0)
    hide, validation = fit_masks(observed, model.holdout, draw=1)
    assert hide.any() and 0.02 < (own & hide).sum() / hide.sum() < 0.4
    again = refit(model, Cube(gappy, normaliser=model.normaliser), hide | validation, 1)
    seen = np.where(hide | validation, np.nan, gappy.values[None])
    expected = model.normaliser.normalise(np.nanmean(seen, axis=1))
    np.testing.assert_allclose(again.method.state_dict()["mean"], expected, rtol=1e-5, atol=1e-5)


def test_holdout_too_small_to_hide_anything_is_an_error():
    observed = np.zeros((1, 2, 3, 3), dtype=bool)
    observed[0, 0, 1, 1] = True
    with pytest.raises(ValueError, match="too few to hold out"):
        holdout_mask(observed, Holdout(0.1, "cloud", 0))
    assert not holdout_mask(observed, Holdout(0.0, "cloud", 0)).any()  # holdout=0 is fine
    many = np.ones((1, 4, 8, 8), dtype=bool)  # a tiny fraction: redrawn until not empty
    assert holdout_mask(many, Holdout(0.001, "cloud", 0)).any()


def test_bundled_recipe_holdout_predicts_the_error_in_its_punched_gaps(tmp_path, monkeypatch):
    """The bundled recipe holds out pixels in the shapes of the cube's own (punched) gaps, so
    its hold-out MAE is within 15% of the MAE in the punched gaps. Clouds drawn at the
    hold-out's 10% cover are smaller than the punched 40% cover clouds: their pixels sit
    nearer the observations, and their MAE was 20% lower than the punched gaps'."""
    from gapfill import pipeline
    from gapfill import recipe as rc

    monkeypatch.chdir(tmp_path)
    recipe = rc.load(rc.default_recipe_path(), overrides={
        "output.figures": False, "output.diagnostics_csv": False})
    result = pipeline.run(recipe, progress=False)
    assert 0.85 <= result.holdout["mae"] / result.punched["mae"] <= 1.15


def test_auto_holdout_borrows_the_cubes_gap_shapes():
    _, gappy = noisy_cube(t=24, h=16, w=24)
    observed = np.isfinite(gappy.values)[None]
    assert resolve_process("auto", observed) == "empirical"
    assert resolve_process("auto", np.ones_like(observed)) == "cloud"
    model = gappy.gapfill.fit("linear", holdout=0.1)
    assert model.holdout.process == "empirical"
    held = borrowed_gaps(~observed[0], observed[0], 0.1, np.random.default_rng(0))
    assert not (held & ~observed[0]).any()
    assert 0.03 < held.sum() / observed.sum() < 0.25


def test_diagnostics_figure_maps_the_error_and_draws_its_reliability(tmp_path):
    from gapfill.figures import diagnostics_figure

    _, gappy = noisy_cube(t=12, h=12, w=16)
    model = gappy.gapfill.fit("linear")
    diag = gappy.gapfill.score(model)
    out = gappy.gapfill.fill(model, diagnostics=diag)
    path = diagnostics_figure(out, "sst", diag.errors, tmp_path / "d.png",
                              predicted_error=diag.predicted_error)
    import matplotlib.image

    image = matplotlib.image.imread(path)
    without = diagnostics_figure(out.drop_vars("sst_error"), "sst", diag.errors,
                                 tmp_path / "e.png")
    assert image.shape[0] > matplotlib.image.imread(without).shape[0]  # the extra row


def test_borrowed_gaps_hide_their_share_at_high_cloud_cover():
    """At 50 % cover of large drifting clouds a whole gap spans most of a time slab; the
    hold-out still hides about its share (a slab's excess carries over), and the tiled
    draw of the validation pixels hides it in every stretch of time, in many pieces."""
    from scipy import ndimage

    shape = (120, 37, 49)
    missing = masks.Cloud(
        coverage=0.5, length_scale=12.0, velocity=(1.0, 2.0), seed=3
    ).sample(shape)
    observed = ~missing
    for seed in range(4):
        held = borrowed_gaps(missing, observed, 0.1, np.random.default_rng(seed))
        assert not (held & missing).any()
        assert 0.07 < held.sum() / observed.sum() < 0.13
        tiled = borrowed_gaps(missing, observed, 0.1, np.random.default_rng(seed), tiled=True)
        assert not (tiled & missing).any() and ndimage.label(tiled)[1] >= 10
        assert 0.085 < tiled.sum() / observed.sum() < 0.115
        for quarter in np.array_split(np.arange(shape[0]), 4):
            assert 0.05 < tiled[quarter].sum() / observed[quarter].sum() < 0.2


def test_chunked_error_sees_the_observations_outside_a_time_chunk():
    """A method that needs no time edges (climatology) still gets them in a chunked fill
    when its error grows with the time to the nearest observation."""
    _, gappy = noisy_cube(t=24, h=12, w=16)
    model = gappy.gapfill.fit("climatology")
    model.error_model.coef[1 + errors.FEATURES.index("time_distance")] = 0.5
    assert model.error_model.sees_time
    eager = gappy.gapfill.fill(model, diagnostics=False)["sst_error"].values
    lazy = gappy.chunk({"time": 5}).gapfill.fill(model)["sst_error"].values
    np.testing.assert_allclose(lazy, eager, rtol=1e-6, atol=1e-6)


def test_climatology_fills_spatial_chunks_like_the_whole_cube():
    """Every pixel has a fitted climatology: chunks in space get the whole frames (the fill
    takes the fitted grid, and the error's distances to the observations look across
    chunks)."""
    truth, _ = noisy_cube(t=24, h=12, w=16)
    gappy = truth.where(np.random.default_rng(0).random(truth.shape) > 0.3)
    model = gappy.gapfill.fit("climatology")
    model.error_model.coef[1 + errors.FEATURES.index("space_distance")] = 0.5
    eager = gappy.gapfill.fill(model, diagnostics=False)
    lazy = gappy.chunk({"lat": 5, "lon": 7}).gapfill.fill(model).compute()
    for name in ("sst", "sst_error"):
        np.testing.assert_allclose(lazy[name].values, eager[name].values, rtol=1e-6, atol=1e-6)


def test_cheap_methods_fill_with_the_validation_pixels_of_their_error_model():
    """The error model's validation pixels are hidden from a first fit only: eof is
    fitted again with them, so with no hold-out its fill is a fit on every observation."""
    from gapfill.cube import Cube
    from gapfill.methods.eof import EOF

    _, da = noisy_cube()
    model = da.gapfill.fit("eof", holdout=0.0, seed=0)
    filled = da.gapfill.fill(model)[da.name].values
    cube = Cube(da)
    direct = EOF()
    direct.fit(cube, np.random.default_rng(0))
    x = cube.values()
    z = direct.fill(x, np.random.default_rng(0)).values
    want = cube.normaliser.denormalise(np.where(np.isfinite(x), x, z))[0]
    np.testing.assert_allclose(filled, want, rtol=1e-5, atol=1e-5)


def test_eof_error_model_learns_from_a_fit_with_the_products_modes_and_noise(monkeypatch):
    """The product is fitted on every observation but the hold-out; the error model learns
    from a fit without the validation pixels that keeps the product's number of modes and
    noise variance (the floor of the posterior spread, the error model's input)."""
    from gapfill import accessor
    from gapfill.cube import Cube
    from gapfill.diagnostics import fit_masks
    from gapfill.methods.eof import EOF

    learned_from = []
    real = accessor.validation_errors

    def spy(model, *args, **kwargs):
        learned_from.append(model.method)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(accessor, "validation_errors", spy)
    _, gappy = noisy_cube(t=24, h=12, w=16)
    model = gappy.gapfill.fit("eof", seed=0)
    cube = Cube(gappy)
    observed = np.isfinite(gappy.values)[None]
    hide, validation = fit_masks(observed, model.holdout, cube.missing_pattern())
    product = EOF()
    product.fit(cube.with_hide(hide), np.random.default_rng(0))
    for name in ("U", "noise_var"):
        np.testing.assert_array_equal(model.method.state_dict()[name], product.state_dict()[name])
    first = learned_from[0]
    assert first.fit_info["modes"] == product.fit_info["modes"]
    np.testing.assert_array_equal(first.state_dict()["noise_var"],
                                  product.state_dict()["noise_var"])
    fixed = EOF()
    fixed.fit_array(cube.with_hide(hide | validation).values(), np.random.default_rng(0),
                    cube.coords().time, modes=product.fit_info["modes"])
    np.testing.assert_array_equal(first.state_dict()["U"], fixed.state_dict()["U"])
    assert not np.array_equal(first.state_dict()["U"], product.state_dict()["U"])


def test_cheap_fit_with_few_validation_pixels_pools_more_draws(monkeypatch):
    """On a small cube the error model of a cheap fit learns from the validation pixels of
    several draws, each draw's model refitted without its own hold-out and validation
    pixels; the product is still the first draw's model."""
    from gapfill import accessor
    from gapfill.cube import Cube
    from gapfill.diagnostics import MAX_VALIDATION_DRAWS, MIN_VALIDATION_PIXELS, fit_masks

    _, gappy = noisy_cube(t=24, h=12, w=16)
    seen, refits = [], []
    real_errors, real_refit = accessor.validation_errors, accessor.refit

    def spy_errors(model, raw, validation, *args, **kwargs):
        seen.append(validation.copy())
        return real_errors(model, raw, validation, *args, **kwargs)

    def spy_refit(model, cube, hidden, draw, *args, **kwargs):
        refits.append((draw, np.asarray(hidden).copy()))
        return real_refit(model, cube, hidden, draw, *args, **kwargs)

    monkeypatch.setattr(accessor, "validation_errors", spy_errors)
    monkeypatch.setattr(accessor, "refit", spy_refit)
    model = gappy.gapfill.fit("eof", seed=0, max_modes=4)
    assert seen[0].sum() < MIN_VALIDATION_PIXELS
    # one fill per draw, then the first draw's pixels again with the hold-out hidden too
    # (the hold-out's scale)
    assert len(seen) == MAX_VALIDATION_DRAWS + 1
    assert MAX_VALIDATION_DRAWS == model.info["validation_draws"]
    np.testing.assert_array_equal(seen[-1], seen[0])
    observed = np.isfinite(gappy.values)[None]
    missing = Cube(gappy).missing_pattern()
    for draw, hidden in refits:
        hide, validation = fit_masks(observed, model.holdout, missing, draw=draw)
        np.testing.assert_array_equal(hidden, hide | validation)
        np.testing.assert_array_equal(seen[draw], validation)
    assert [d for d, _ in refits] == list(range(1, MAX_VALIDATION_DRAWS))
    assert all((seen[0] != other).any() for other in seen[1:-1])


#: Tiny training runs of the learned methods that may fill without their network.
UNTRAINED_FILLS = {
    "stgconvnet": dict(widths=(4, 4), kernels=((3, 3, 3), (3, 3, 3)),
                       strides=((1, 2, 2), (1, 1, 1)), window=(4, 8, 8), batch_size=1,
                       n_chains=1, recover_steps=1, synth_steps=1, fill_average=1, steps=2,
                       time_budget=None, progress="off"),
    "flowfill": dict(window=(4, 12, 12), features=4, hidden=8, iterations=2, batch_size=1,
                     steps=2, time_budget=None, progress="off"),
}


@pytest.mark.parametrize(("method", "options", "reuse"), [
    ("stgconvnet", {"fill_steps": 0}, True), ("stgconvnet", {"fill_steps": 3}, False),
    ("flowfill", {"carry": 0.0}, True), ("flowfill", {"carry": 0.5}, False)])
def test_a_model_that_fills_without_training_pools_draws_without_refits(
        method, options, reuse, monkeypatch):
    """A learned model whose fill is its untrained start (``stgconvnet``'s chain of length
    0, ``flowfill``'s fallback alone) fills every draw's pixels as a model trained without
    them would: its error model and its score pool the draws of ``linear``, reusing it; one
    whose fill uses the network trains once and scores one draw."""
    from gapfill import diagnostics, methods
    from gapfill.diagnostics import MAX_VALIDATION_DRAWS

    _, gappy = noisy_cube(t=16, h=12, w=16)
    scored, fits = [], []
    real_fill = diagnostics.core.run_method
    cls = methods.get(method)
    real_fit = cls.fit

    def spy_fit(self, *args, **kwargs):
        fits.append(self)
        return real_fit(self, *args, **kwargs)

    def spy_fill(method, *args, **kwargs):
        scored.append(method)
        return real_fill(method, *args, **kwargs)

    monkeypatch.setattr(cls, "fit", spy_fit)
    model = gappy.gapfill.fit(method, seed=0, **UNTRAINED_FILLS[method], **options)
    draws = MAX_VALIDATION_DRAWS if reuse else 1
    assert model.method.fills_without_training is reuse
    assert model.info["validation_draws"] == diagnostics.holdout_draws(model.method) == draws
    monkeypatch.setattr(diagnostics.core, "run_method", spy_fill)
    diag = diagnostics.score(gappy, model)
    assert len(fits) == 1, "a model that fills without training is not fitted again"
    assert len(scored) == draws and np.isfinite(diag.summary["mae"])
    assert diag.summary["draws"] == draws


def test_a_model_that_trains_rescales_its_error_by_linears_draws(monkeypatch):
    """A model that trains learns its error model from one draw of validation pixels; its
    errors are rescaled by what that draw does to ``linear``'s error model: the median,
    over the real gaps, of ``linear``'s error learned from four draws over that learned
    from the first (the two models ``fit("linear")`` makes with four draws and with one),
    to the power of how much the two fills' errors go together. A model that pools draws
    is not rescaled."""
    from gapfill import accessor
    from gapfill.diagnostics import MAX_VALIDATION_DRAWS

    _, gappy = noisy_cube(t=16, h=12, w=16)
    seen = []
    real_errors = accessor.validation_errors

    def spy_errors(model, *args, **kwargs):
        out = real_errors(model, *args, **kwargs)
        seen.append((model.method.name, out))
        return out

    monkeypatch.setattr(accessor, "validation_errors", spy_errors)
    options = {**UNTRAINED_FILLS["flowfill"], "carry": 0.5}
    model = gappy.gapfill.fit("flowfill", seed=0, **options)
    assert model.info["validation_draws"] == 1
    linear = [out for name, out in seen if name == "linear"]
    assert len(linear) == MAX_VALIDATION_DRAWS + 1  # each draw, then the real gaps
    features = linear[-1][1]
    seen = np.isfinite(gappy.values)
    assert features.shape[1] == (~seen & seen.any(0)).sum()  # land is no gap
    monkeypatch.setattr(accessor, "validation_errors", real_errors)
    pooled = gappy.gapfill.fit("linear", seed=0)
    monkeypatch.setattr(accessor, "validation_draws", lambda *args, **kwargs: 1)
    one = gappy.gapfill.fit("linear", seed=0)
    assert pooled.info["validation_draws"] == MAX_VALIDATION_DRAWS
    ok = np.isfinite(features).all(0)
    chance = np.median(pooled.error_model.predict(features[:, ok])
                       / one.error_model.predict(features[:, ok]))
    slope = model.info["validation_control_slope"]
    assert 0.0 < slope <= 1.0
    assert model.info["validation_control"] == pytest.approx(chance**slope, rel=1e-5)
    assert model.info["validation_control"] != 1.0
    for fitted in (pooled, one):
        assert fitted.info["validation_control"] == 1.0
    monkeypatch.setattr(accessor, "_draw_control", lambda *args, **kwargs: (1.0, 0.0))
    plain = gappy.gapfill.fit("flowfill", seed=0, **options)
    np.testing.assert_allclose(model.error_model.factor,
                               model.info["validation_control"] * plain.error_model.factor)


def test_control_slope_is_how_much_two_fills_errors_go_together():
    from gapfill.accessor import _log_slope

    rng = np.random.default_rng(0)
    x = rng.lognormal(size=2000)
    assert _log_slope(x, x) == pytest.approx(1.0)
    assert _log_slope(np.sqrt(x), x) == pytest.approx(0.5, abs=0.01)
    assert _log_slope(x**2, x) == 1.0  # at most 1: a draw's chance is not amplified
    assert _log_slope(1.0 / x, x) == 0.0
    assert abs(_log_slope(rng.lognormal(size=2000), x)) < 0.05
    assert _log_slope(x[:2], x[:2]) == 0.0


def test_validation_draws_only_for_small_validation_sets_of_cheap_fits():
    from gapfill import methods
    from gapfill.diagnostics import MAX_VALIDATION_DRAWS, MIN_VALIDATION_PIXELS, validation_draws

    eof, linear, gan = (methods.get(name)() for name in ("eof", "linear", "gan"))
    assert validation_draws(eof, MIN_VALIDATION_PIXELS) == 1
    assert validation_draws(eof, MIN_VALIDATION_PIXELS // 2) == 2
    assert validation_draws(eof, 10) == MAX_VALIDATION_DRAWS
    assert validation_draws(eof, 10, stream=True) == 1  # a streaming fit reads the disk
    assert validation_draws(gan, 10) == 1  # a fit of minutes is not repeated
    assert validation_draws(linear, 10 * MIN_VALIDATION_PIXELS) == linear.holdout_draws


def test_validation_pixels_are_filled_with_the_holdout_observed(monkeypatch):
    """The error model learns from fills as dense as the product's.

    The validation pixels are hidden; the hold-out (kept out of the fit) is observed, as
    it is when filling.
    """
    from gapfill import accessor
    from gapfill.cube import Cube
    from gapfill.diagnostics import fit_masks

    _, gappy = noisy_cube(t=24, h=12, w=16)
    inputs = []
    real = accessor.validation_errors

    def spy(model, raw, validation, *args, **kwargs):
        inputs.append((raw.copy(), validation.copy()))
        return real(model, raw, validation, *args, **kwargs)

    monkeypatch.setattr(accessor, "validation_errors", spy)
    model = gappy.gapfill.fit("linear", seed=0)
    observed = np.isfinite(gappy.values)[None]
    hide, validation = fit_masks(observed, model.holdout, Cube(gappy).missing_pattern())
    raw, val = inputs[0]
    frames = raw.shape[1]
    assert hide[:, :frames].any()
    np.testing.assert_array_equal(val, validation[:, :frames])
    assert np.isfinite(raw[hide[:, :frames]]).all()  # the hold-out is observed
    assert not (val & hide[:, :frames]).any()


def test_holdout_never_takes_every_observation_of_a_pixel():
    """A pixel seen only a few times keeps an observation: a fill without any observation of
    a pixel is not what the product (which gets the hold-out back) faces."""
    observed = ~masks.Cloud(coverage=0.3, seed=2).sample((30, 20, 24))[None]
    observed[:, :, 5:15, 6:18] = False
    observed[:, 10:13, 5:15, 6:18] = True  # a block seen in three frames only
    for process in ("cloud", "empirical"):
        hidden = holdout_mask(observed, Holdout(0.3, process, 0))
        assert hidden.any()
        twice = observed.sum(1) >= 2
        assert (observed & ~hidden).any(1)[twice].all()
        import dask.array

        lazy = holdout_mask(dask.array.from_array(observed, chunks=(1, 10, 20, 24)),
                            Holdout(0.3, process, 0))
        np.testing.assert_array_equal(lazy.compute(), hidden)


def test_holdout_mae_is_scaled_to_the_product_by_the_validation_pixels(monkeypatch):
    """The hold-out is scored in a fill without its observations; the product has them.
    ``fit`` fills the validation pixels with the hold-out observed and hidden: the ratio of
    the two MAEs (at most 1) scales the reported MAE, and the scored one is kept."""
    from gapfill import accessor

    _, gappy = noisy_cube(noise=0.0, t=24, h=12, w=16)
    calls = []
    real = accessor.validation_errors

    def spy(model, raw, validation, *args, **kwargs):
        out = real(model, raw, validation, *args, **kwargs)
        calls.append((raw.copy(), out[0]))
        return out

    monkeypatch.setattr(accessor, "validation_errors", spy)
    model = gappy.gapfill.fit("linear", seed=0)
    (seen, with_holdout), (hidden, without) = calls[0], calls[-1]
    assert np.isnan(hidden).sum() > np.isnan(seen).sum()  # the last fill hides the hold-out
    ok = np.isfinite(with_holdout) & np.isfinite(without)
    expected = min(1.0, with_holdout[ok].mean() / without[ok].mean())
    assert model.info["holdout_scale"] == pytest.approx(expected)
    assert model.info["holdout_scale"] < 1  # larger gaps, larger errors on a smooth field
    diag = gappy.gapfill.score(model)
    s = diag.summary
    assert s["scale"] == pytest.approx(expected)
    assert s["mae"] == pytest.approx(s["scored_mae"] * expected * s["transfer"])
    assert s["scored_mae"] == pytest.approx(np.abs(diag.errors).mean())
    assert diag.to_dataframe().loc["all", "mae"] == pytest.approx(s["scored_mae"])
    out = gappy.gapfill.fill(model, diagnostics=diag)
    assert out.attrs["gapfill_holdout_mae"] == pytest.approx(s["mae"])
    assert out.attrs["gapfill_holdout_scored_mae"] == pytest.approx(s["scored_mae"])


def test_observation_gain_is_what_observations_do_beyond_the_features():
    """The validation pixels are scored in a fill without them; the product has them. The
    error shrinks by what the hold-out's observations do to the validation errors, less
    what the error model's features already say of them, shrunk towards 1 as far as it is
    uncertain; it never grows."""
    from gapfill.accessor import _observation_gain
    from gapfill.errors import FEATURES, ErrorModel

    rng = np.random.default_rng(0)
    coef = np.zeros(1 + len(FEATURES))
    coef[1] = 1.0  # the error doubles with log1p(distance) up by log 2
    model = ErrorModel(coef, np.zeros(1), np.ones(1))
    n, frames = 500, 20
    times = rng.integers(0, frames, n)
    e0 = rng.lognormal(size=n)
    f0 = np.zeros((len(FEATURES), n))
    f0[0] = rng.uniform(1.0, 2.0, n)
    same = f0.copy()
    nearer = f0.copy()
    nearer[0] -= np.log(2.0)  # the model predicts half the error

    def gain(e1, f1, without=(e0, f0)):
        return _observation_gain(model, (e1, f1), without, times, frames)

    assert gain(0.5 * e0, same) == pytest.approx(0.5)  # exact: no uncertainty
    assert gain(0.5 * e0, nearer) == pytest.approx(1.0)
    assert gain(0.25 * e0, nearer) == pytest.approx(0.5)
    assert gain(2.0 * e0, same) == 1.0
    assert gain(0.5 * e0, same, None) == 1.0
    noisy = 0.9 * e0 * rng.lognormal(-0.5, 1.0, size=n)  # a change measured with noise
    raw = noisy.mean() / e0.mean()
    assert raw < gain(noisy, same) < 1.0
    strong = 0.5 * e0 * rng.lognormal(sigma=0.1, size=n)
    assert gain(strong, same) == pytest.approx(strong.mean() / e0.mean(), rel=0.01)


def test_error_is_scaled_by_the_observation_gain_and_the_holdout_scored_without_it(
        monkeypatch):
    """``fit`` measures the gain from the validation pixels filled with the hold-out
    observed and hidden, and multiplies the error by it; the hold-out, scored in a fill
    without its observations, is scored against the error without the gain."""
    from gapfill import accessor

    _, gappy = noisy_cube(noise=0.0, t=24, h=12, w=16)
    calls = []
    real = accessor.validation_errors

    def spy(model, raw, validation, *args, **kwargs):
        out = real(model, raw, validation, *args, **kwargs)
        calls.append((validation, out))
        return out

    monkeypatch.setattr(accessor, "validation_errors", spy)
    model = gappy.gapfill.fit("linear", seed=0)
    (validation, (e1, f1)), (_, (e0, f0)) = calls[0], calls[-1]
    em = model.error_model  # the gain rescales it, which leaves the ratio of its means
    ok = np.isfinite(e1) & np.isfinite(e0)
    raw = e1[ok].mean() / e0[ok].mean() / (em.predict(f1[:, ok]).mean()
                                             / em.predict(f0[:, ok]).mean())
    gain = model.info["observation_gain"]
    assert gain == pytest.approx(accessor._observation_gain(
        em, (e1, f1), (e0, f0), np.nonzero(validation)[1], validation.shape[1]), rel=1e-5)
    assert raw <= gain < 1.0
    monkeypatch.setitem(model._run, "observation_gain", 1.0)
    plain = gappy.gapfill.score(model).predicted_error
    monkeypatch.setitem(model._run, "observation_gain", 0.5)
    np.testing.assert_allclose(gappy.gapfill.score(model).predicted_error, 2.0 * plain,
                               rtol=1e-6)


def test_resumed_run_keeps_the_holdout_scale(tmp_path):
    """A resumed recipe run reuses the saved hold-out scores, scale, transfer and number of
    draws included."""
    from gapfill.diagnostics import Diagnostics
    from gapfill.resume import RunCache

    rng = np.random.default_rng(0)
    diag = Diagnostics(truth=rng.normal(size=50), predicted=rng.normal(size=50),
                       predicted_error=None, time_index=np.arange(50) % 5,
                       times=np.arange(5), method="gan", scale=0.8, transfer=1.25, draws=4)
    cache = RunCache(tmp_path / "out.nc.partial", "key")
    cache.save_diagnostics(diag)
    again = RunCache(tmp_path / "out.nc.partial", "key").load_diagnostics()
    assert (again.scale, again.transfer, again.draws) == (0.8, 1.25, 4)
    assert again.summary["mae"] == pytest.approx(0.8 * 1.25 * again.summary["scored_mae"])
    assert again.summary == pytest.approx(diag.summary, nan_ok=True)


def test_holdout_transfer_carries_the_holdout_to_gaps_farther_from_the_data():
    """The transfer is the error model's mean relative error over the gaps over that over
    the held-out pixels, in the fill without the hold-out: 1 when the held-out piece is
    shaped and placed like the gap, above 1 when the gap is wider; the method's own
    spread is left out; 1 without an error model."""
    from types import SimpleNamespace

    from gapfill.diagnostics import holdout_transfer

    coef = np.zeros(1 + len(errors.FEATURES))
    coef[1 + errors.FEATURES.index("space_distance")] = 1.0
    coef[1 + errors.NATIVE] = 1.0
    em = errors.ErrorModel(coef, np.zeros(1), np.full(1, 3.0), uses_native=True)
    model = SimpleNamespace(error_model=em, normaliser=SimpleNamespace(normalise=lambda x: x))
    observed = np.ones((1, 1, 20, 40), dtype=bool)
    observed[..., 6:14, 4:12] = False  # the gap, 8 x 8
    hide = np.zeros_like(observed)
    hide[..., 6:14, 26:34] = True  # a held-out piece of the same size, away from it
    filled = np.zeros(observed.shape)
    ever = np.ones((1, 1, 20, 40), dtype=bool)
    assert holdout_transfer(model, observed, hide, filled, ever) == pytest.approx(1.0)

    thin = np.zeros_like(observed)
    thin[..., 6:14, 26:27] = True  # a one-pixel strip: every pixel next to the data
    distance = errors.space_distance(~(~observed | thin))
    expected = (1 + distance[~observed]).mean() / (1 + distance[thin]).mean()
    assert holdout_transfer(model, observed, thin, filled, ever) == pytest.approx(expected)
    assert expected > 1.4  # the gap holds pixels up to 4 from the data, the strip none beyond 1

    assert holdout_transfer(SimpleNamespace(error_model=None), observed, thin, filled,
                            ever) == 1.0


def test_localised_regem_does_not_diverge_on_a_noisy_cube():
    """With a localised covariance SQUAREM can overshoot round after round (on this cube its
    change grew from 0.3 to 0.5 over 30 E-steps); the fit then goes on with plain EM steps,
    whose change keeps falling."""
    from threadpoolctl import threadpool_limits

    from gapfill.cube import Cube
    from gapfill.localisation import gaspari_cohn, grid_distances
    from gapfill.methods import regem

    _, gappy = noisy_cube(noise=0.5)
    cube = Cube(gappy)
    y = cube.values()[0].reshape(gappy.shape[0], -1).astype(np.float64)
    coords = cube.coords()
    taper = gaspari_cohn(grid_distances(coords.y, coords.x) / 4000.0)
    changes = []
    with threadpool_limits(1):
        regem.regem(y, np.where(np.isfinite(y), y, 0.0), 0.01, 1e-9, 30, taper=taper,
                    trace=lambda steps, mean, cov, change: changes.append(change))
    assert changes[-1] < 0.5 * changes[1] and changes[-1] < 0.05, changes
