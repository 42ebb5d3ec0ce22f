"""Tests of the ``gan`` method, its networks, the window blending and the training helpers.

Tiny configurations only: the whole file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")

from gapfill.cube import Cube  # noqa: E402
from gapfill.methods import get  # noqa: E402
from gapfill.methods.gan import GAN  # noqa: E402
from gapfill.methods.gan_data import (  # noqa: E402
    TrainingData,
    gaps_in_runs,
    mismatch,
    pool_hides,
    validation_pixels,
    validation_regions,
)
from gapfill.models import (  # noqa: E402
    FrameDiscriminator,
    FrameDiscriminatorConfig,
    Generator,
    GeneratorConfig,
    SequenceDiscriminator,
    SequenceDiscriminatorConfig,
)
from gapfill.models.layers import FrameSelfAttention  # noqa: E402
from gapfill.testing import smooth_cube  # noqa: E402
from gapfill.training import (  # noqa: E402
    CheckpointManager,
    CSVLogger,
    EarlyStopping,
    load_checkpoint,
    save_checkpoint,
)
from gapfill.windows import fill_windows, window_starts  # noqa: E402

TINY = dict(
    window=(8, 16, 16), width=8, n_res_blocks=2, d_width=8, d_layers=2, batch_size=2,
    time_budget=None, progress="off", guide="none", guide_pool=1, eval_every=10, seed=3,
    ema=None,  # raw weights: a few steps barely move a 0.99 average
)


@pytest.fixture(scope="module")
def fitted():
    """A tiny GAN fitted for 4 steps (shared by the fill tests)."""
    _, da = smooth_cube()
    cube = Cube(da)
    # no validation hold-out, so the trained (not the initial) generator is kept
    gan = GAN(**{**TINY, "steps": 4, "lr": 1e-3, "val_share": 0.0})
    gan.fit(cube, np.random.default_rng(0))
    return gan, cube


# -- networks ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 7, 9), (8, 16, 16), (1, 3, 2)])
def test_generator_passes_observed_values_through(shape):
    torch.manual_seed(0)
    cfg = GeneratorConfig(channels=2, extra_channels=1, guide=True, width=8, n_res_blocks=2)
    gen = Generator(cfg)
    with torch.no_grad():  # make the output non-trivial
        gen.head.weight.normal_()
    y = torch.randn(2, 2, *shape)
    m = (torch.rand(2, 2, *shape) > 0.4).float()
    y = torch.where(m > 0, y, torch.nan)  # NaN in the gaps must not leak
    out = gen(y, m, torch.randn(2, 1, *shape), torch.randn(2, 2, *shape))
    assert out.shape == y.shape
    assert torch.isfinite(out).all()
    assert torch.equal(out[m > 0], y[m > 0])  # G(y) m == y m exactly
    assert not torch.equal(out[m == 0], torch.zeros_like(out[m == 0]))


def test_channels_last_generator_gives_the_same_output_and_gradients():
    """Channels-last storage (and its group normalisation in the standard layout) changes
    neither the generator's output nor its gradients."""
    torch.manual_seed(0)
    cfg = GeneratorConfig(guide=True, width=8, n_res_blocks=2)
    plain = Generator(cfg).eval()  # eval: no dropout
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.1)  # the head starts at 0: give every layer a say
    last = Generator(cfg).eval()
    last.load_state_dict(plain.state_dict())
    last.use_channels_last()
    y = torch.randn(2, 1, 4, 8, 8)
    m = (torch.rand_like(y) > 0.4).float()
    guide = torch.randn_like(y)
    outs = [gen.raw(y, m, None, guide) for gen in (plain, last)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for out in outs:
        out.square().mean().backward()
    for a, b in zip(plain.parameters(), last.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5)


def test_untrained_generator_returns_the_guide():
    gen = Generator(GeneratorConfig(guide=True, width=8, n_res_blocks=1))
    y = torch.zeros(1, 1, 4, 8, 8)
    m = torch.zeros_like(y)
    guide = torch.randn_like(y)
    assert torch.allclose(gen(y, m, None, guide), guide)


def test_generator_with_a_guide_base_sees_the_observations_departure_from_it():
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(guide=True, guide_base=True, width=8, n_res_blocks=1))
    y = torch.randn(1, 1, 4, 8, 8)
    m = (torch.rand_like(y) > 0.5).float()
    guide, base = torch.where(m > 0, y, torch.randn_like(y)), torch.randn_like(y)
    both = torch.cat([guide, base], 1)
    assert torch.allclose(gen(y, m, None, both), torch.where(m > 0, y, guide))  # untrained
    with pytest.raises(ValueError, match="guide and its base"):
        gen(y, m, None, guide)
    with torch.no_grad():
        gen.head.weight.normal_()
    gen.eval()
    moved = torch.cat([guide, base + 1.0], 1)  # a different base, the same guide
    assert not torch.allclose(gen.raw(y, m, None, both), gen.raw(y, m, None, moved))
    # the departure from the base goes in in units of base_scale
    k = 0.01
    scaled = Generator(GeneratorConfig(**{**gen.config.__dict__, "base_scale": k}))
    scaled.load_state_dict(gen.state_dict())
    scaled.eval()
    torch.testing.assert_close(scaled.raw(base + k * (y - base), m, None, both),
                               gen.raw(y, m, None, both), rtol=1e-4, atol=2e-4)


def test_generator_works_in_units_of_the_guide_error():
    """Same weights, inputs ``k`` times further from the guide and ``residual_scale`` k:
    the network sees the same numbers and its correction is ``k`` times larger."""
    torch.manual_seed(0)
    k = 0.01
    cfg = GeneratorConfig(guide=True, width=8, n_res_blocks=1)
    one = Generator(cfg)
    with torch.no_grad():
        one.head.weight.normal_()
    scaled = Generator(GeneratorConfig(**{**cfg.__dict__, "residual_scale": k}))
    scaled.load_state_dict(one.state_dict())
    one.eval(), scaled.eval()
    base, anomaly = torch.randn(1, 1, 4, 8, 8), torch.randn(1, 1, 4, 8, 8)
    m = (torch.rand_like(base) > 0.5).float()
    out_one = one.raw(base + anomaly, m, None, base)
    out_k = scaled.raw(base + k * anomaly, m, None, base)
    torch.testing.assert_close(out_k - base, k * (out_one - base), rtol=1e-4, atol=1e-6)


def test_time_distances_count_frames_to_the_nearest_observations():
    from gapfill.models.generator import time_distances

    seen = torch.tensor([0, 1, 0, 0, 0, 1, 0], dtype=torch.bool).view(1, 1, 7, 1, 1)
    d = time_distances(seen, cap=4)[0, :, :, 0, 0] * 4
    assert d[0].tolist() == [4, 0, 1, 2, 3, 0, 1]  # back to the previous observation
    assert d[1].tolist() == [1, 0, 3, 2, 1, 0, 4]  # on to the next one (capped at the end)
    assert time_distances(torch.zeros(1, 1, 3, 2, 2, dtype=torch.bool)).eq(1).all()


def test_discriminators_score_every_patch():
    x = torch.randn(3, 2, 6, 16, 24)
    df = FrameDiscriminator(FrameDiscriminatorConfig(in_channels=2, width=8, n_layers=2))
    ds = SequenceDiscriminator(SequenceDiscriminatorConfig(in_channels=2, width=8, n_layers=2))
    f = df(x)
    s = ds(x)
    assert f.shape == (3, 6, 4, 6)  # one score per frame per 4x4 patch
    assert s.shape == (3, 2, 4, 6)  # one score per patch of the volume
    ds_static = SequenceDiscriminator(
        SequenceDiscriminatorConfig(in_channels=2, differences=False, width=8, n_layers=2)
    )
    assert ds_static(x).shape == s.shape
    # spectral norm on every conv
    names = [n for n, _ in df.named_parameters()] + [n for n, _ in ds.named_parameters()]
    assert all("parametrizations" in n for n in names if n.endswith("weight.original")) and any(
        "parametrizations" in n for n in names
    )


def test_frame_attention_starts_as_identity_and_mixes_positions():
    att = FrameSelfAttention(16)
    x = torch.randn(2, 16, 3, 5, 7)
    assert torch.equal(att(x), x)
    with torch.no_grad():
        att.gamma.fill_(1.0)
    y = att(x)
    x2 = x.clone()
    x2[:, :, 0, 0, 0] += 10  # a change at one position of frame 0 ...
    d = (att(x2) - y).abs().sum(1)
    assert d[:, 0, 4, 6].min() > 0  # ... reaches the far corner of that frame
    assert d[:, 1:].max() == 0  # ... but not other frames


# -- windows -------------------------------------------------------------------------------
@pytest.mark.parametrize("n,size,overlap", [(54, 24, 0.5), (10, 24, 0.5), (17, 5, 0.25), (8, 8, 0)])
def test_window_starts_cover_the_axis(n, size, overlap):
    starts = window_starts(n, size, overlap)
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s : s + min(size, n)] = True
    assert covered.all() and starts[-1] + min(size, n) == n


def test_fill_windows_identity_constant_and_no_seams():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 13, 20, 37)).astype(np.float32)
    out = fill_windows(x, lambda b: b, size=(6, 8, 16), overlap=0.5, batch_size=3)
    np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-5)
    const = fill_windows(x, lambda b: np.full_like(b, 2.5), size=(6, 8, 16))
    np.testing.assert_allclose(const, 2.5, rtol=1e-6)  # every pixel covered, no seam
    # Each window returns a different constant: the blend must ramp, not jump, between windows.
    counter = iter(range(10**6))

    def per_window(b):
        return np.stack([np.full_like(w, float(next(counter) % 2)) for w in b])

    blend = fill_windows(x[:1], per_window, size=(13, 20, 16), overlap=0.5)[0, 0, 0]
    assert np.abs(np.diff(blend)).max() < 0.35  # hard tiles would jump by 1
    assert blend.min() <= 0.01 and blend.max() >= 0.99


def test_fill_windows_output_channels_and_small_input():
    x = np.ones((1, 3, 4, 5), np.float32)
    out = fill_windows(x, lambda b: np.concatenate([b, 2 * b], 1), size=(24, 64, 64))
    assert out.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(out[1], 2.0)


# -- training helpers ------------------------------------------------------------------------
def test_checkpoints_are_atomic_and_corrupt_ones_fail_clearly(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        manager.save(step, {"step": step, "w": torch.ones(3) * step})
    assert [s for s, _ in manager.checkpoints()] == [2, 3]
    assert load_checkpoint(manager.latest())["step"] == 3
    assert not list(tmp_path.glob("*.tmp"))
    bad = tmp_path / "ckpt_00000009.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        manager.load_latest()
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "x.pt", {"a": 1})
    assert load_checkpoint(tmp_path / "x.pt") == {"a": 1}


def test_early_stopping_and_csv(tmp_path):
    stop = EarlyStopping(patience=2)
    assert stop.update(1.0, 0) and not stop.update(1.1, 1) and not stop.should_stop
    stop.update(1.2, 2)
    assert stop.should_stop and stop.best_step == 0
    log = CSVLogger(tmp_path / "log.csv", ["step", "mae"])
    log.log({"step": 1, "mae": 0.5})
    CSVLogger(tmp_path / "log.csv", ["step", "mae"], append=True).log({"step": 2})
    assert (tmp_path / "log.csv").read_text().splitlines() == ["step,mae", "1,0.5", "2,"]


def test_early_stopping_keeps_the_start_unless_clearly_beaten():
    stop = EarlyStopping(patience=None, min_gain=0.01)
    assert stop.update(1.0, 0)
    assert not stop.improves(0.995) and not stop.update(0.995, 1)  # within 1% of the start
    assert stop.best_step == 0 and stop.bad == 1
    assert stop.update(0.98, 2) and stop.update(0.979, 3)  # past it, any gain counts
    again = EarlyStopping(patience=None, min_gain=0.01)
    again.load_state_dict(stop.state_dict())
    assert again.first == 1.0 and again.best_step == 3 and again.improves(0.978)


# -- the method ------------------------------------------------------------------------------
def test_registered_and_options_validated():
    assert get("gan") is GAN
    with pytest.raises(ValueError, match="loss"):
        GAN(loss="wasserstein")
    with pytest.raises(ValueError, match="occlusion"):
        GAN(occlusion="fog")
    with pytest.raises(ValueError, match="resume"):
        GAN(resume=True)
    with pytest.raises(ValueError, match="threads"):
        GAN(threads=-1)
    gan = GAN(window=[4, 8, 8], betas=[0.5, 0.9])  # JSON gives lists back
    assert gan.options.window == (4, 8, 8) and gan.options.betas == (0.5, 0.9)
    assert GAN(**json.loads(json.dumps(gan.options_dict()))).options == gan.options


def test_training_beats_a_zero_fill():
    truth, da = smooth_cube(t=12, h=16, w=16, missing=0.3, seed=1)
    cube = Cube(da)
    x = cube.values()
    t = cube.normaliser.normalise(truth[None])
    gaps = np.isfinite(t) & ~np.isfinite(x)
    zero_mae = np.abs(t[gaps]).mean()  # zero fill = the mean; also the untrained generator
    opts = {**TINY, "steps": 40, "lr": 2e-3, "adv_weight": 0.0, "val_share": 0.0}
    gan = GAN(**opts)  # the self-supervised L1 alone (the adversarial path is run elsewhere)
    gan.fit(cube, np.random.default_rng(0))
    res = gan.fill(x, np.random.default_rng(0), coords=cube.coords())
    mae = np.abs(res.values[gaps] - t[gaps]).mean()
    assert mae < 0.7 * zero_mae, (mae, zero_mae)


def test_a_bfloat16_step_with_non_finite_gradients_is_skipped(monkeypatch):
    from gapfill import training

    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    _, da = smooth_cube(t=12, h=16, w=16, missing=0.3, seed=1)
    gan = GAN(**{**TINY, "steps": 3, "val_share": 0.0, "device": "cpu", "amp": True})
    calls = []
    real = training.Trainer.optimise

    def poisoned(self, loss, optimizer):
        calls.append(1)
        return real(self, loss * float("nan") if len(calls) == 1 else loss, optimizer)

    monkeypatch.setattr(training.Trainer, "optimise", poisoned)
    gan.fit(Cube(da), np.random.default_rng(0))
    assert len(calls) == 3 and gan.fit_info["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in gan.generator.parameters())


@pytest.mark.parametrize("native, amp, expected", [
    (True, True, "bfloat16"), (False, True, "float32"), (True, False, "float32")])
def test_cpu_training_steps_run_in_bfloat16_only_where_the_cpu_computes_it(
        monkeypatch, native, amp, expected):
    from gapfill import training

    monkeypatch.setattr(training, "cpu_has_bf16", lambda: native)
    _, da = smooth_cube(t=12, h=16, w=16, missing=0.3, seed=1)
    cube = Cube(da)
    # the adversarial path too: the discriminators' steps run under the same autocast
    gan = GAN(**{**TINY, "steps": 3, "lr": 1e-3, "val_share": 0.0, "adv_weight": 0.1,
                 "device": "cpu", "amp": amp})
    seen: dict[bool, set] = {True: set(), False: set()}  # convolution outputs' dtypes

    def record(module, args, out):
        if isinstance(module, torch.nn.Conv3d):
            seen[module.training].add(out.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        gan.fit(cube, np.random.default_rng(0))
        assert gan.fit_info["precision"] == expected
        assert seen[True] == {getattr(torch, expected)}  # the training steps
        seen[False].clear()
        x = cube.values()
        res = gan.fill(x, np.random.default_rng(0), coords=cube.coords())
        assert seen[False] == {torch.float32}  # the fill
    finally:
        hook.remove()
    weights = list(gan.generator.parameters())
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in weights)
    assert res.values.dtype == np.float32 and np.isfinite(res.values).all()
    np.testing.assert_array_equal(res.values[np.isfinite(x)], x[np.isfinite(x)])


@pytest.mark.parametrize("native, amp, width, expected", [
    (True, True, None, 16), (False, True, None, 8), (True, False, None, 8), (True, True, 4, 4)])
def test_default_width_is_wider_where_the_training_steps_run_in_mixed_precision(
        monkeypatch, native, amp, width, expected):
    from gapfill import training

    monkeypatch.setattr(training, "cpu_has_bf16", lambda: native)
    _, da = smooth_cube(t=12, h=16, w=16, missing=0.3, seed=1)
    gan = GAN(**{**TINY, "width": width, "steps": 1, "val_share": 0.0, "device": "cpu",
                 "amp": amp})
    gan.fit(Cube(da), np.random.default_rng(0))
    assert gan._meta["generator"]["width"] == expected
    assert gan.generator.config.width == expected
    assert gan.options.width == expected  # in the run's identity: resumed only alike


def test_fill_is_deterministic_and_keeps_observations(fitted):
    gan, cube = fitted
    x = cube.values()
    a = gan.fill(x, np.random.default_rng(0), coords=cube.coords())
    b = gan.fill(x, np.random.default_rng(1), coords=cube.coords())
    assert a.error is None
    np.testing.assert_array_equal(a.values, b.values)
    obs = np.isfinite(x)
    np.testing.assert_array_equal(a.values[obs], x[obs])
    assert np.isfinite(a.values).all()


def test_stochastic_fills_give_a_mean_and_a_spread(fitted):
    gan, cube = fitted
    x = cube.values()
    one = gan.fill(x, np.random.default_rng(0), coords=cube.coords())
    many = gan.fill(x, np.random.default_rng(0), samples=4, coords=cube.coords())
    other = gan.fill(x, np.random.default_rng(5), samples=4, coords=cube.coords())
    gaps = ~np.isfinite(x)
    assert many.error is not None and many.error.shape == x.shape
    assert (many.error[gaps] > 0).mean() > 0.9 and (many.error[~gaps] == 0).all()
    assert not np.array_equal(many.values[gaps], other.values[gaps])  # samples differ
    # the mean of 4 dropout samples stays near the deterministic fill
    assert np.abs(many.values - one.values)[gaps].mean() < 0.5


def test_state_dict_round_trip_gives_identical_fills(fitted, tmp_path):
    gan, cube = fitted
    path = tmp_path / "model.pt"
    torch.save({"state": gan.state_dict()}, path)
    state = torch.load(path, weights_only=True)["state"]
    clone = GAN(**gan.options_dict())
    clone.load_state_dict(state)
    x = cube.values()
    a = gan.fill(x, np.random.default_rng(0), coords=cube.coords())
    b = clone.fill(x, np.random.default_rng(0), coords=cube.coords())
    np.testing.assert_array_equal(a.values, b.values)


@pytest.mark.parametrize("ema", [None, 0.5])
def test_checkpoint_resume_continues_the_run(tmp_path, ema):
    _, da = smooth_cube()
    cube = Cube(da)
    opts = {**TINY, "checkpoint_dir": str(tmp_path), "checkpoint_every": 2, "val_share": 0.0,
            "ema": ema}
    straight = GAN(**{**opts, "steps": 6, "checkpoint_dir": str(tmp_path / "a")})
    straight.fit(cube, np.random.default_rng(0))
    first = GAN(**{**opts, "steps": 4})
    first.fit(cube, np.random.default_rng(0))
    assert first.fit_info["steps"] == 4
    resumed = GAN(**{**opts, "steps": 6, "resume": True})
    resumed.fit(cube, np.random.default_rng(123))  # the seed comes from the checkpoint
    assert resumed.fit_info["steps"] == 6
    ckpt = load_checkpoint(CheckpointManager(tmp_path).latest())
    ref = load_checkpoint(CheckpointManager(tmp_path / "a").latest())
    assert ckpt["step"] == 6
    for key in ("G", "G_avg"):  # same weights as the uninterrupted run
        for k, v in ref[key].items():
            torch.testing.assert_close(ckpt[key][k], v, rtol=1e-5, atol=1e-6)
    assert bool(ckpt["G_avg"]) == (ema is not None)
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and rows[-1].split(",")[0] == "6"


def test_pool_guides_are_redrawn_and_a_resumed_run_redraws_them_alike(tmp_path):
    _, da = smooth_cube()
    cube = Cube(da)
    opts = {**TINY, "guide": "eof", "guide_pool": 2, "guide_refresh": 2, "val_share": 0.0,
            "checkpoint_dir": str(tmp_path), "checkpoint_every": 3}
    seen = []
    real_refresh = TrainingData.refresh

    def spy(self, member, rng):
        before = self.hides[member].copy()
        real_refresh(self, member, rng)
        seen.append((member, bool((self.hides[member] != before).any())))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainingData, "refresh", spy)
        straight = GAN(**{**opts, "steps": 6, "checkpoint_dir": str(tmp_path / "a")})
        straight.fit(cube, np.random.default_rng(0))
    # steps 2 and 4 redraw guide 1 then guide 2 (not step 6: training ends there)
    assert seen == [(1, True), (2, True)]
    first = GAN(**{**opts, "steps": 3})
    first.fit(cube, np.random.default_rng(0))
    resumed = GAN(**{**opts, "steps": 6, "resume": True})
    resumed.fit(cube, np.random.default_rng(0))
    ckpt = load_checkpoint(CheckpointManager(tmp_path).latest())
    ref = load_checkpoint(CheckpointManager(tmp_path / "a").latest())
    for k, v in ref["G"].items():  # the resumed run trained on the same redrawn hides
        torch.testing.assert_close(ckpt["G"][k], v, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="guide_refresh"):
        GAN(guide_refresh=-1)


def test_ema_keeps_the_moving_average_of_the_generator(tmp_path):
    _, da = smooth_cube()
    gan = GAN(**{**TINY, "steps": 3, "lr": 1e-3, "val_share": 0.0, "ema": 0.5,
                 "checkpoint_dir": str(tmp_path), "checkpoint_every": 1})
    gan.fit(Cube(da), np.random.default_rng(0))
    (_, before), (_, last) = CheckpointManager(tmp_path).checkpoints()  # steps 2 and 3
    before, last = load_checkpoint(before), load_checkpoint(last)
    fitted = gan.generator.state_dict()
    moved = False
    for k, avg in last["G_avg"].items():
        if avg.is_floating_point():  # average = 0.5 * previous average + 0.5 * new weights
            expected = 0.5 * before["G_avg"][k] + 0.5 * last["G"][k]
            torch.testing.assert_close(avg, expected, rtol=1e-5, atol=1e-6)
            moved |= not torch.equal(avg, last["G"][k])
        torch.testing.assert_close(fitted[k], avg)  # the fitted model is the average
    assert moved


@pytest.mark.parametrize("supervision", ["paired", "unpaired"])
def test_supervised_variants_run(supervision):
    truth, da = smooth_cube(t=10, h=12, w=12)
    cube = Cube(da)
    clean = xr.DataArray(truth, dims=da.dims, coords=da.coords)
    gan = GAN(**{**TINY, "steps": 2, "supervision": supervision, "loss": "lsgan"})
    gan.fit(cube, np.random.default_rng(0), clean=clean)
    assert gan.fit_info["steps"] == 2
    with pytest.raises(ValueError, match="clean"):
        GAN(**{**TINY, "steps": 1, "supervision": supervision}).fit(cube, np.random.default_rng(0))


@pytest.mark.parametrize("supervision", ["paired", "unpaired"])
def test_clean_data_holds_nothing_at_the_validation_pixels(supervision):
    # the validation MAE (early stopping) must score pixels training never learned
    truth, da = smooth_cube(t=12, h=16, w=16, missing=0.3, seed=1)
    cube = Cube(da)
    clean = xr.DataArray(truth, dims=da.dims, coords=da.coords)
    gan = GAN(**{**TINY, "supervision": supervision, "val_share": 0.2})
    data = TrainingData.build(gan, cube, np.random.default_rng(0), clean)
    assert data.val.any()
    assert np.isnan(data.clean[data.val]).all()
    expected = cube.normaliser.normalise(np.asarray(truth)[None])[None]
    np.testing.assert_allclose(data.clean[~data.val], expected[~data.val], rtol=1e-6)


def test_tiny_cube_with_eof_guide_and_empirical_masks():
    truth, da = smooth_cube(t=4, h=5, w=6, missing=0.3, seed=2)
    cube = Cube(da)
    gan = GAN(**{**TINY, "steps": 2, "guide": "eof_interp", "occlusion": "empirical", "loss": "log",
                 "coord_channels": True, "val_share": 0.2})
    gan.fit(cube, np.random.default_rng(0))
    res = gan.fill(cube.values(), np.random.default_rng(0), coords=cube.coords())
    assert res.values.shape == (1, 4, 5, 6)
    assert np.isfinite(res.values).all()
    assert gan.fit_info["guide"]["modes"] >= 1


def test_gaps_in_runs_hide_whole_gaps_in_runs_of_frames():
    from gapfill import masks

    rng = np.random.default_rng(0)
    pattern = masks.Cloud(coverage=0.4, seed=0).sample((48, 32, 64))
    missing = np.zeros_like(pattern)
    missing[:, :4] = True  # "land"
    val = gaps_in_runs(pattern, missing, 0.05, rng, missing.shape[0] // 6)
    share = val.sum() / (~missing).sum()
    assert 0.01 < share < 0.15
    assert not (val & missing).any() and not (val & ~pattern).any()
    kept = val.any((1, 2))
    # a kept frame holds out its whole gaps (not pieces of them)
    np.testing.assert_array_equal(val[kept], (pattern & ~missing)[kept])
    assert 1 <= kept.sum() < 48 and kept.reshape(24, 2).all(1).sum() == kept.sum() // 2


def _drifting_gaps(t=40, h=24, w=48):
    """Gaps of a moving bar: a borrowed bar next to the real one makes a wider, longer gap."""
    missing = np.zeros((t, h, w), dtype=bool)
    for k in range(t):
        x0 = (2 * k) % w
        missing[k, :, x0 : x0 + 6] = True
    return missing


def test_l1_hides_and_validation_pixels_are_as_far_from_the_data_as_the_real_gaps():
    from gapfill import masks
    from gapfill.methods.gan_data import gap_distances

    missing = _drifting_gaps()
    never = np.zeros(missing.shape[1:], dtype=bool)
    seen = ~missing
    real = gap_distances(seen, missing)
    process = masks.Empirical(missing, seed=0)
    x = np.where(missing, np.nan, 1.0)[None, None]
    kept = pool_hides(process, x, seen[None, None], never[None], 3, 0.1, 4,
                      np.random.default_rng(0))
    assert len(kept) == 3 and all(h.shape == (1, *missing.shape) for h in kept)
    assert len({h.tobytes() for h in kept}) == 3  # distinct hides
    for h in kept:  # about a tenth of the observations, in runs of 4 frames
        assert not (h[0] & missing).any() and 0.03 < h.sum() / seen.sum() < 0.3
        hidden_frames = np.flatnonzero(h[0].any((1, 2)))
        assert set(hidden_frames // 4 * 4) <= set(hidden_frames)
    rng = np.random.default_rng(1)
    drawn = [mismatch(seen, gaps_in_runs(np.asarray(process.sample(missing.shape, rng), bool),
                                         missing, 0.1, rng, 4), real)
             for _ in range(12)]
    worst_kept = max(mismatch(seen, h[0], real) for h in kept)
    assert worst_kept <= np.median(drawn)
    assert worst_kept < max(drawn)
    # the validation pixels: the draw nearest the real gaps, at about the share asked
    fallback = masks.Cloud(coverage=0.3, seed=0)
    val, source = validation_pixels(missing, never, 0.05, np.random.default_rng(2), fallback)
    assert source == "empirical" and val.any() and not (val & missing).any()
    assert 0.02 < val.sum() / seen.sum() < 0.12
    plain = []
    for _ in range(12):
        pattern = np.asarray(masks.Empirical(missing, seed=int(rng.integers(99))).sample(
            missing.shape, rng, start=0), bool)
        plain.append(
            mismatch(seen, gaps_in_runs(pattern, missing, 0.05, rng, missing.shape[0] // 6), real)
        )
    assert mismatch(seen, val, real) <= np.median(plain)


def test_fill_keeps_the_share_of_the_correction_validation_chose():
    _, da = smooth_cube(t=12, h=16, w=16, missing=0.3, seed=1)
    cube = Cube(da)
    gan = GAN(**{**TINY, "steps": 20, "lr": 2e-3, "guide": "eof", "val_share": 0.1,
                 "min_gain": 0.0})  # any validation gain keeps the trained network
    gan.fit(cube, np.random.default_rng(0))
    assert gan.fit_info["correction_gain"] in (1.0, 0.75, 0.5, 0.25)
    x, coords = cube.values(), cube.coords()
    gan._meta["correction_gain"] = 1.0
    whole = gan.fill(x, np.random.default_rng(0), coords=coords).values
    gan._meta["correction_gain"] = 0.5
    half = gan.fill(x, np.random.default_rng(0), coords=coords).values
    guide = gan._guide(x)
    gaps = ~np.isfinite(x)
    np.testing.assert_allclose(half[gaps], guide[gaps] + 0.5 * (whole - guide)[gaps], atol=1e-5)
    np.testing.assert_array_equal(half[~gaps], x[~gaps])
    assert np.abs(whole - guide)[gaps].max() > 1e-3  # the network did correct the guide
    assert not gan.fills_without_training
    gan._meta["correction_gain"] = 0.0  # none of it: the guide alone, without training
    gan._fill = lambda *args: pytest.fail("the generator ran for none of its correction")
    alone = gan.fill(x, np.random.default_rng(0), samples=2, coords=coords)
    np.testing.assert_array_equal(alone.values[gaps], guide[gaps])
    np.testing.assert_array_equal(alone.values[~gaps], x[~gaps])
    assert not alone.error.any()
    assert gan.fills_without_training


def _tuning_case(guide: str) -> tuple[GAN, Cube, np.ndarray, np.ndarray, np.ndarray, object]:
    """A tiny ``gan`` fitted on a smooth cube, and pixels for :meth:`GAN.tune`.

    Returns the model, the cube, the smooth field, the validation pixels, the cube's
    values with them hidden, and the coordinates.
    """
    field, da = smooth_cube(t=12, h=16, w=16, missing=0.3, seed=1)
    cube = Cube(da)
    gan = GAN(**{**TINY, "steps": 20, "lr": 2e-3, "guide": guide, "val_share": 0.1,
                 "min_gain": 0.0})
    gan.fit(cube, np.random.default_rng(0))
    x = cube.values()
    val = np.isfinite(x) & (np.random.default_rng(5).random(x.shape) < 0.1)
    return gan, cube, field, val, np.where(val, np.nan, x), cube.coords()


def _share_case(share: float) -> tuple[GAN, np.ndarray, np.ndarray, np.ndarray, object,
                                         np.ndarray]:
    """A :func:`_tuning_case` whose truth at the validation pixels lies ``share`` of the
    way from the guide to the generator's whole correction of it.

    Returns the model (its share set to 1), the cube's values, the validation pixels, the
    values with them hidden, the coordinates and the truth.
    """
    gan, cube, _, val, x_in, coords = _tuning_case("eof")
    x = cube.values()
    gan._meta["correction_gain"] = 1.0
    whole = gan.fill(x_in, np.random.default_rng(0), coords=coords).values
    guide = gan._guide(x_in)
    assert np.abs(whole - guide)[val].max() > 1e-3  # shares that differ
    return gan, x, val, x_in, coords, np.where(val, guide + share * (whole - guide), x)


def test_tune_keeps_the_share_of_the_correction_best_on_its_pixels():
    """Keep the share of the correction best on the pixels ``tune`` is given.

    The truth is made to lie at 0.375 of the way from the guide to the fill.
    """
    from gapfill.methods.gan import TUNED_GAINS

    gan, _, val, x_in, coords, truth = _share_case(0.375)
    gan.tune(x_in, truth, val, np.random.default_rng(0), coords)
    assert gan._meta["correction_gain"] == gan.fit_info["correction_gain"] == 0.375
    scores = gan.fit_info["correction_gain_scores"]
    assert list(scores) == [str(g) for g in TUNED_GAINS]
    assert min(scores, key=scores.get) == "0.375"
    # nothing to score: the gain stays
    gan.tune(x_in, truth, np.zeros_like(val), np.random.default_rng(0), coords)
    assert gan._meta["correction_gain"] == 0.375


def test_a_share_of_the_correction_must_beat_the_guide_alone_by_min_gain():
    """A share whose MAE is less than ``min_gain`` below the guide's is noise: share 0."""
    from gapfill.methods.gan_train import choose_gain

    rng = np.random.default_rng(0)
    truth = rng.normal(size=1000)
    guide = truth + rng.choice([-1.0, 1.0], size=1000)
    fill = guide + 0.04 * (truth - guide)  # each share g lowers the MAE by 0.04 g
    gains = (1.0, 0.5, 0.0)
    assert choose_gain(guide, fill, truth, gains)[0] == 1.0
    assert choose_gain(guide, fill, truth, gains, min_gain=0.03)[0] == 1.0
    assert choose_gain(guide, fill, truth, gains, min_gain=0.05)[0] == 0.0
    assert choose_gain(guide, fill, truth, (1.0, 0.5), min_gain=0.05)[0] == 1.0  # no 0


def test_a_share_is_chosen_up_to_largest():
    """``largest`` bounds the share chosen; every share is still scored."""
    from gapfill.methods.gan_train import choose_gain

    rng = np.random.default_rng(0)
    truth = rng.normal(size=1000)
    guide = truth + rng.choice([-1.0, 1.0], size=1000)
    fill = guide + (truth - guide)  # the whole correction is best
    gains = (1.0, 0.5, 0.0)
    best, scores = choose_gain(guide, fill, truth, gains, largest=0.5)
    assert best == 0.5 and len(scores) == 3 and scores[0] < scores[1]
    assert choose_gain(guide, fill, truth, gains, largest=0.25)[0] == 0.0
    assert choose_gain(guide, fill, truth, gains, largest=1.0)[0] == 1.0


def test_tune_keeps_no_more_of_the_correction_than_training_chose():
    """On training's guide the share is at most training's, even where ``tune``'s
    pixels rate a larger share best: the fill's input is denser than training's."""
    gan, x, val, x_in, coords, truth = _share_case(0.875)
    gan._meta["guide_frames"] = x.shape[1] + 1  # only training's guide is tried
    gan._meta["correction_gain"] = 0.5  # training chose half of the correction
    gan.tune(x_in, truth, val, np.random.default_rng(0), coords)
    scores = gan.fit_info["correction_gain_scores"]
    assert min(scores, key=scores.get) == "0.875"
    assert gan._meta["correction_gain"] == gan.fit_info["correction_gain"] == 0.5
    assert gan.fit_info["correction_gain_training"] == 0.5


def test_tune_keeps_the_guide_alone_when_no_share_beats_it_by_min_gain():
    gan, cube, _, val, x_in, coords = _tuning_case("eof")
    x = cube.values()
    gan._meta["correction_gain"] = 1.0
    whole = gan.fill(x_in, np.random.default_rng(0), coords=coords).values
    guide = gan._guide(x_in)
    noise = np.random.default_rng(1).choice([-1.0, 1.0], size=x.shape) * np.abs(whole - guide)
    truth = np.where(val, guide + 0.375 * (whole - guide) + 0.2 * noise, x)
    gan.tune(x_in, truth, val, np.random.default_rng(0), coords)
    scores = gan.fit_info["correction_gain_scores"]
    best = min(scores.values())
    assert best < scores["0.0"] and gan.fit_info["correction_gain"] > 0
    gan.options.min_gain = 1 - best / scores["0.0"] + 0.01
    gan._meta["correction_gain"] = 1.0
    gan.tune(x_in, truth, val, np.random.default_rng(0), coords)
    assert gan.fit_info["correction_gain"] == gan._meta["correction_gain"] == 0.0


def test_tune_chooses_the_guide_again_on_its_pixels():
    """Replace a guide that is poor on the pixels ``tune`` is given by the one best there.

    Training is made to have chosen the linear guide on a smooth travelling wave, which
    the EOF-based guides fill far better.
    """
    from gapfill.guides import Guide

    gan, cube, field, val, x_in, coords = _tuning_case("auto")
    x = cube.values()
    truth = np.nan_to_num(
        cube.normaliser.normalise(field[None].astype(np.float64))
    ).astype(np.float32)
    gan._meta["guide"] = Guide("linear").to_dict()
    # fewer frames than training chose its guide on: training's guide stays
    gan._meta["guide_frames"] = x.shape[1] + 1
    gan.tune(x_in, truth, val, np.random.default_rng(0), coords)
    assert gan._meta["guide"]["kind"] == "linear" and len(gan.fit_info["guide_scores"]) == 1
    gan._meta["guide_frames"] = x.shape[1]
    gan.tune(x_in, truth, val, np.random.default_rng(0), coords)
    info = gan.fit_info
    assert info["guide_training"]["kind"] == "linear"
    assert info["guide"]["kind"] != "linear" and gan._meta["guide"] == info["guide"]
    scores = info["guide_scores"]
    assert len(scores) == 2 and min(scores, key=scores.get) == str(Guide.from_dict(info["guide"]))
    np.testing.assert_array_equal(gan._guide(x_in), Guide.from_dict(info["guide"]).make(x_in))
    filled = gan.fill(x_in, np.random.default_rng(0), coords=coords).values
    assert np.abs(filled - truth)[val].mean() <= scores[str(Guide("linear"))] + 1e-6


def test_tune_switches_guide_only_if_the_switch_holds_in_gap_shaped_pixels(monkeypatch):
    """A guide that wins on ``tune``'s pixels alone does not replace training's.

    On a smooth travelling wave the EOF-based guide fills far better than the linear one;
    the truth at ``tune``'s pixels is made to be the linear guide's fill, so that it wins
    there. On observed pixels hidden in the shapes of the cube's own gaps it loses.
    """
    import gapfill.methods.gan as gan_module
    from gapfill.guides import Guide

    gan, cube, _, val, x_in, coords = _tuning_case("auto")
    gan._meta["guide_frames"] = x_in.shape[1]
    trained = dict(gan._meta["guide"])
    assert trained["kind"] != "linear"
    truth = np.where(val, Guide("linear").make(x_in), cube.values()).astype(np.float32)
    chosen, default = {}, gan_module.SWITCH_TOLERANCE
    for tolerance in (default, np.inf):
        monkeypatch.setattr(gan_module, "SWITCH_TOLERANCE", tolerance)
        gan._meta["guide"], gan._meta["correction_gain"] = trained, 1.0
        gan.tune(x_in, truth, val, np.random.default_rng(0), coords)
        switch = gan.fit_info["guide_switch"]
        assert switch["guide"] == "linear" and switch["change"] > 0.5
        chosen[tolerance] = gan._meta["guide"]["kind"], switch["kept"]
    assert chosen[default] == (trained["kind"], False)
    assert chosen[np.inf] == ("linear", True)


def test_distance_weights_make_validation_pixels_as_far_from_the_data_as_the_gaps():
    from gapfill.errors import space_distance
    from gapfill.methods.gan_data import DISTANCE_EDGES, distance_weights

    seen = np.ones((1, 4, 16, 16), dtype=bool)
    gaps = np.zeros_like(seen)
    gaps[:, :2, 2:14, 2:14] = True  # one large gap: most of it far from the data
    val = np.zeros_like(seen)
    val[:, 2:, ::4, 1::4] = True  # scattered pixels next to the data ...
    val[:, 2:, 4:11, 4:11] = True  # ... and one smaller block
    seen &= ~gaps & ~val
    weights = distance_weights(seen, val, gaps)
    assert weights.shape == (val.sum(),) and np.isclose(weights.mean(), 1.0)
    d = space_distance(seen)
    edges = np.asarray(DISTANCE_EDGES)
    in_gaps = np.histogram(d[gaps], edges)[0] / gaps.sum()
    weighted = np.histogram(d[val], edges, weights=weights)[0] / weights.sum()
    assert np.histogram(d[val], edges)[0][0] / val.sum() > 1.5 * in_gaps[0]  # unweighted: near
    assert (np.histogram(d[val], edges)[0] > 0)[in_gaps > 0].all()  # every bin of the gaps
    np.testing.assert_allclose(weighted, in_gaps, atol=1e-9)
    # no bin in common (validation pixels far from the data, gaps next to it): equal weights
    block = val & (d >= 1.5)
    scattered = np.zeros_like(seen)
    scattered[:, :2, ::4, ::4] = True
    weights = distance_weights(~val & ~scattered, block, scattered)
    np.testing.assert_array_equal(weights, np.ones(block.sum()))


def test_tune_scores_its_pixels_as_far_from_the_data_as_the_real_gaps(monkeypatch):
    """Weight ``tune``'s pixels by their distance to the data, as the real gaps lie.

    Most validation pixels sit next to the data, where the truth is made to be the guide;
    the few far ones, like the real gaps (one large gap), want the whole correction.
    """
    import gapfill.methods.gan as gan_module
    from gapfill.errors import space_distance

    gan, cube, field, _, _, coords = _tuning_case("eof")
    truth = np.nan_to_num(
        cube.normaliser.normalise(field[None].astype(np.float64))).astype(np.float32)
    gaps = np.zeros(truth.shape, dtype=bool)
    gaps[:, :6, 2:14, 2:14] = True
    val = np.zeros_like(gaps)
    val[:, 6:, ::4, 1::4] = True
    val[:, 6:8, 4:11, 4:11] = True
    x_in = np.where(gaps | val, np.nan, truth).astype(np.float32)
    x_in[:, :, :3, :4] = np.nan  # the land corner
    val[:, :, :3, :4] = False
    near = val & (space_distance(np.isfinite(x_in)) < 1.5)
    guide = gan._guide(x_in)
    gan._meta["correction_gain"] = 1.0
    whole = gan.fill(x_in, np.random.default_rng(0), coords=coords).values
    truth = np.where(near, guide, np.where(val, whole, truth)).astype(np.float32)
    trained = dict(gan._meta["guide"])
    gan._meta["guide_frames"] = x_in.shape[1] + 1  # training's guide only
    chosen = {}
    for axes in ((), ("space",)):
        monkeypatch.setattr(gan_module, "TUNE_DISTANCES", axes)
        gan._meta["guide"], gan._meta["correction_gain"] = trained, 1.0
        gan.tune(x_in, truth, val, np.random.default_rng(0), coords)
        chosen[axes] = gan.fit_info["correction_gain"]
    assert chosen[()] == 0.0  # unweighted, the pixels next to the data decide
    assert chosen[("space",)] == 1.0


def test_fit_tunes_the_gain_on_the_error_models_validation_pixels():
    """Keep, through ``fit``, the gain best on the error model's validation pixels."""
    _, da = smooth_cube(t=12, h=16, w=16, missing=0.3, seed=1)
    opts = {**TINY, "steps": 20, "lr": 2e-3, "guide": "eof", "val_share": 0.1, "min_gain": 0.0}
    model = da.gapfill.fit("gan", seed=0, options=opts)
    info = model.method.fit_info
    scores = info["correction_gain_scores"]
    assert info["correction_gain"] == float(min(scores, key=scores.get))
    assert model.method._meta["correction_gain"] == info["correction_gain"]
    assert info["correction_gain_training"] in (1.0, 0.75, 0.5, 0.25)


def test_validation_regions_bound_the_validation_fill():
    val = np.zeros((2, 1, 10, 20, 30), dtype=bool)
    assert validation_regions(val, (4, 8, 8), budget=10**6) == []
    val[0, 0, 5, 3, 3] = val[1, 0, 0, 0, 0] = True  # frames a window either side
    assert validation_regions(val, (4, 8, 8), budget=10**6) == [
        (0, (slice(1, 10), slice(None), slice(None))),
        (1, (slice(0, 5), slice(None), slice(None)))]
    val[:] = False
    val[1, 0, 0:8, 0:16, 0:16] = True  # all in one region of block 1
    val[0, 0, 9, 19, 29] = True
    regions = validation_regions(val, (4, 8, 8), budget=8 * 16 * 16)
    assert regions == [(1, (slice(0, 8), slice(0, 16), slice(0, 16)))]


def test_flipped_training_windows_are_the_same_windows_reversed_alike():
    _, da = smooth_cube(t=12, h=16, w=16, missing=0.3, seed=1)
    cube = Cube(da)
    gan = GAN(**{**TINY, "guide": "eof", "val_share": 0.1, "adv_weight": 0.1})
    data = TrainingData.build(gan, cube, np.random.default_rng(0), None)
    every = ((), (-3,), (-2,), (-1,), (-3, -2), (-3, -1), (-2, -1), (-3, -2, -1))
    for flips, allowed, kinds in (("time", {(), (-3,)}, 2), ("all", set(every), 4)):
        seen = set()
        for seed in range(12):
            plain = data.batch(1, np.random.default_rng(seed), recon=True)
            flipped = data.batch(1, np.random.default_rng(seed), recon=True, flips=flips)
            assert plain.keys() == flipped.keys() and "guide" in plain and "fake_hidden" in plain
            # one set of axes reverses every array of the window (NaNs compared as equal)
            matches = [axes for axes in every
                       if all(np.array_equal(np.flip(plain[k], axes), flipped[k],
                                             equal_nan=True) for k in plain)]
            assert matches and matches[0] in allowed
            seen.add(matches[0])
        assert len(seen) >= kinds  # the flips are drawn, not fixed
