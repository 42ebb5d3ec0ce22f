"""Tests of the ``stgconvnet`` method (Xie, Zhu & Wu's spatial-temporal generative ConvNet).

Tiny networks and a few iterations only: the file runs in about 20 s on 2 CPU cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")

import gapfill  # noqa: E402
from gapfill import masks  # noqa: E402
from gapfill.cube import Cube  # noqa: E402
from gapfill.methods import get  # noqa: E402
from gapfill.methods.stgconvnet import STGConvNet, initial_guess  # noqa: E402
from gapfill.models.stgconvnet_energy import Langevin, STEnergy, STEnergyConfig  # noqa: E402
from gapfill.testing import gap_mae, travelling_wave  # noqa: E402
from gapfill.training import CheckpointManager, load_checkpoint  # noqa: E402

TINY = dict(
    widths=(8, 8), kernels=((3, 3, 3), (3, 3, 3)), strides=((1, 2, 2), (1, 1, 1)),
    window=(6, 12, 12), batch_size=2, n_chains=2, recover_steps=2, synth_steps=2,
    fill_steps=4, fill_average=2, time_budget=None, progress="off", seed=1, eval_every=5,
)


@pytest.fixture(scope="module")
def fitted():
    """A tiny model fitted for 6 iterations on the wave (shared by the fill tests)."""
    _, da = travelling_wave()
    cube = Cube(da)
    m = STGConvNet(**{**TINY, "steps": 6})
    m.fit(cube, np.random.default_rng(0))
    return m, cube


# -- the model ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 2, 2), (5, 7, 9), (12, 16, 16)])
def test_energy_takes_any_size(shape):
    net = STEnergy(STEnergyConfig(channels=3))
    x = torch.randn(2, 3, *shape)
    f = net(x)
    assert f.shape == (2,)
    g = net.score(x)
    assert g.shape == x.shape and torch.isfinite(g).all()
    assert all(p.grad is None for p in net.parameters())  # df/dI leaves the weights alone


def test_langevin_clamps_observed_pixels():
    torch.manual_seed(0)
    net = STEnergy(STEnergyConfig(channels=1, widths=(4,), kernels=((3, 3, 3),),
                                  strides=((1, 1, 1),)))
    x = torch.randn(1, 1, 4, 6, 6)
    free = torch.rand(x.shape) < 0.5
    out, mean, var = Langevin(0.1, 1.0).run(net, x, 5, free, torch.Generator().manual_seed(0), 3)
    assert torch.equal(out[~free], x[~free])
    torch.testing.assert_close(mean[~free], x[~free])
    assert (var[~free] < 1e-10).all()
    assert not torch.equal(out[free], x[free])


def test_langevin_samples_the_reference_when_f_is_flat():
    """With f = 0, p = q = N(0, sigma^2): the update rule must sample it."""
    net = STEnergy(STEnergyConfig(channels=1, widths=(2,), kernels=((1, 1, 1),),
                                  strides=((1, 1, 1),)))
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 1, 4, 32, 32)
    out, _, _ = Langevin(step_size=0.3 * 0.5, sigma=0.5).run(net, x, 300, None, gen)
    assert abs(float(out.std()) - 0.5) < 0.05 and abs(float(out.mean())) < 0.05


def test_initial_guesses_are_finite_and_keep_observations():
    _, da = travelling_wave(t=5, h=6, w=7, missing=0.6)
    x = Cube(da).values()
    x[:, :, 0, 0] = np.nan  # never observed
    for kind in ("linear", "spatial", "mean"):
        g = initial_guess(x, kind)
        assert np.isfinite(g).all()
        obs = np.isfinite(x)
        np.testing.assert_array_equal(g[obs], x[obs])


def test_the_start_is_chosen_on_hidden_observations():
    """``init="auto"`` takes the start with the lowest MAE on observed pixels hidden in the
    data's own gaps: a spatial fill where frames are unrelated in time, linear in time
    where every pixel changes slowly and the frames are rough in space."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(4)
    t = np.linspace(0, 1, 12)[:, None, None]
    cases = {
        "spatial": np.stack([gaussian_filter(rng.standard_normal((16, 16)), 2.0)
                             for _ in range(12)]),
        "linear": rng.standard_normal((16, 16))[None] * (1 + t),
    }
    hide = masks.Cloud(coverage=0.3, length_scale=3.0, seed=4).sample((12, 16, 16))
    for expected, field in cases.items():
        m = STGConvNet(**{**TINY, "steps": 2, "init": "auto"})
        m.fit(Cube(xr.DataArray(np.where(hide, np.nan, field), dims=("time", "y", "x"),
                                name="v")), np.random.default_rng(0))
        scores = m.fit_info["init_mae"]
        assert m.fit_info["init"] == min(scores, key=scores.get) == expected, scores


# -- learning ------------------------------------------------------------------------------
def test_it_learns_to_fill_a_travelling_wave():
    """After 30 iterations on CPU the fill beats climatology and the untrained model."""
    truth, da = travelling_wave()
    cube = Cube(da)
    clim = get("climatology")()
    clim.fit(cube, np.random.default_rng(0))
    clim_mae = gap_mae(clim, cube, truth)
    m = STGConvNet(widths=(16, 16, 16), kernels=((3, 5, 5), (3, 3, 3), (3, 3, 3)),
                   window=(8, 16, 16), recover_steps=5, synth_steps=5, steps=30,
                   time_budget=None, val_share=0.1, eval_every=5, progress="off", seed=0)
    m.fit(cube, np.random.default_rng(0))
    mae = gap_mae(m, cube, truth)
    info = m.fit_info
    assert mae < 0.75 * clim_mae, (mae, clim_mae, info)
    assert info["best_val_mae"] < info["untrained_val_mae"], info


def test_the_chain_length_may_be_zero_so_the_fill_is_never_worse_than_its_start():
    """The chain lengths tried after training include 0 (the start itself), scored like the
    others on the validation pixels, and the best is kept; a fill of 0 steps is the start."""
    _, da = travelling_wave()
    cube = Cube(da)
    m = STGConvNet(**{**TINY, "fill_steps": None, "steps": 4, "val_share": 0.1})
    m.fit(cube, np.random.default_rng(0))
    scores, info = m.fit_info["fill_steps_val_mae"], m.fit_info
    assert "0" in scores and scores["0"] == pytest.approx(info["init_val_mae"], rel=1e-6)
    assert info["fill_steps"] == int(min(scores, key=scores.get)), scores
    x = cube.values()
    start = STGConvNet(**{**TINY, "fill_steps": 0})
    start.load_state_dict(m.state_dict())
    out = start.fill(x, np.random.default_rng(0), samples=2)
    gaps = ~np.isfinite(x)
    np.testing.assert_array_equal(out.values[gaps], initial_guess(x, start._init())[gaps])
    np.testing.assert_array_equal(out.values[~gaps], x[~gaps])
    assert (out.error == 0).all()


# -- filling and state ---------------------------------------------------------------------
def test_fill_is_finite_keeps_observations_and_samples_give_error(fitted):
    m, cube = fitted
    x = cube.values()
    one = m.fill(x, np.random.default_rng(0))
    gaps = ~np.isfinite(x)
    assert np.isfinite(one.values).all() and one.error is None
    np.testing.assert_array_equal(one.values[~gaps], x[~gaps])
    many = m.fill(x, np.random.default_rng(0), samples=3)
    assert many.error is not None and np.isfinite(many.error).all()
    assert (many.error[gaps] > 0).mean() > 0.9 and (many.error[~gaps] == 0).all()
    again = m.fill(x, np.random.default_rng(0))
    np.testing.assert_array_equal(one.values, again.values)  # seeded by the rng


def test_weights_only_round_trip_gives_identical_fills(fitted, tmp_path):
    m, cube = fitted
    path = tmp_path / "state.pt"
    torch.save({"state": m.state_dict()}, path)
    clone = STGConvNet(**m.options_dict())
    clone.load_state_dict(torch.load(path, weights_only=True)["state"])
    x = cube.values()
    a = m.fill(x, np.random.default_rng(3))
    b = clone.fill(x, np.random.default_rng(3))
    np.testing.assert_array_equal(a.values, b.values)


def test_synthesize_new_sequences(fitted):
    m, _ = fitted
    out = m.synthesize(2, (4, 8, 8), steps=5, rng=np.random.default_rng(0))
    assert out.shape == (2, 1, 4, 8, 8) and out.dtype == np.float32 and np.isfinite(out).all()


def test_accessor_video_save_and_load(tmp_path):
    """Colour video (C=3) through the accessor; saved and reloaded models fill identically."""
    rng = np.random.default_rng(0)
    t, h, w = 6, 10, 12
    base = np.sin(np.arange(w)[None, None, :] / 3 - np.arange(t)[:, None, None] / 2)
    video = np.stack([0.5 + 0.3 * base * k for k in (1.0, 0.8, 0.6)], -1)
    video = np.broadcast_to(video, (t, h, w, 3)).astype(np.float32).copy()
    video[rng.random((t, h, w)) < 0.3] = np.nan
    da = xr.DataArray(video, dims=("time", "y", "x", "channel"), name="video")
    model = da.gapfill.fit("stgconvnet", holdout=0.0, **{**TINY, "steps": 3})
    out = da.gapfill.fill(model)["video"].values
    assert np.isfinite(out).all()
    path = model.save(tmp_path / "m.pt")
    again = da.gapfill.fill(gapfill.load(path))["video"].values
    np.testing.assert_array_equal(out, again)


def test_checkpoints_and_resume(tmp_path):
    _, da = travelling_wave(t=8, h=12, w=12)
    cube = Cube(da)
    opts = {**TINY, "checkpoint_dir": str(tmp_path), "checkpoint_every": 2}
    first = STGConvNet(**{**opts, "steps": 4})
    first.fit(cube, np.random.default_rng(0))
    resumed = STGConvNet(**{**opts, "steps": 6, "resume": True})
    resumed.fit(cube, np.random.default_rng(99))
    assert resumed.fit_info["steps"] == 6
    ckpt = load_checkpoint(CheckpointManager(tmp_path).latest())
    assert ckpt["step"] == 6 and ckpt["format"] == "gapfill-stgconvnet-checkpoint"
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and rows[-1].split(",")[0] == "6"


@pytest.mark.parametrize("bad", [
    {"window": (0, 4, 4)}, {"sigma": 0}, {"step_size": -1}, {"init": "zeros"},
    {"widths": (4, 4), "kernels": ((3, 3, 3),)}, {"synth_init": "x"}, {"fill_noise": -1},
    {"resume": True}, {"fill_steps": -1},
])
def test_bad_options_are_refused(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        STGConvNet(**bad)
