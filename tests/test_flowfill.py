"""Tests of the ``flowfill`` method: flows, their completion network, propagation, learning.

Tiny networks and a few steps only: the file runs in about 15 s on 2 CPU cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

import gapfill  # noqa: E402
from gapfill.cube import Cube  # noqa: E402
from gapfill.methods import get  # noqa: E402
from gapfill.methods.flowfill import FlowFill, estimate_flows, flow_losses, propagate  # noqa: E402
from gapfill.models.flow_refiner import (  # noqa: E402
    FlowRefiner,
    FlowRefinerConfig,
    PartialConv2d,
    warp,
)
from gapfill.testing import gap_mae, travelling_wave  # noqa: E402

TINY = dict(window=(4, 12, 12), features=4, hidden=8, iterations=2, batch_size=1,
            time_budget=None, progress="off", seed=1, eval_every=2)


def shifting_texture(t: int = 6, h: int = 32, w: int = 32, shift: int = 1, seed: int = 0):
    """A smooth random texture moving ``shift`` pixels right per frame, ``(1, T, H, W)``."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.standard_normal((h, w + shift * t)), 2.0, mode="wrap")
    frames = [base[:, shift * (t - i) : shift * (t - i) + w] for i in range(t)]
    return np.stack(frames)[None].astype(np.float32)


# -- pieces ------------------------------------------------------------------------------
def test_farneback_flows_find_a_known_shift():
    x = shifting_texture()
    observed = np.ones(x.shape[1:], dtype=bool)
    flows, trust = estimate_flows(x, observed)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    fwd_dx, bwd_dx = flows[:-1, 1][inner], flows[1:, 3][inner]
    assert abs(np.median(fwd_dx) - 1) < 0.2 and abs(np.median(bwd_dx) + 1) < 0.2
    assert np.abs(np.median(flows[:-1, 0][inner])) < 0.2
    assert trust[:-1, 0][inner].mean() > 0.8
    assert (trust[-1, 0] == 0).all() and (trust[0, 1] == 0).all()  # no frame beyond the ends


def test_trust_needs_both_frames_observed():
    x = shifting_texture(t=3)
    observed = np.ones(x.shape[1:], dtype=bool)
    observed[1, 10:20, 10:20] = False
    _, trust = estimate_flows(x, observed, fb_threshold=None)
    assert (trust[1, :, 10:20, 10:20] == 0).all()  # the pixel itself is missing
    assert (trust[0, 0, 10:20, 12:19] == 0).all()  # it lands on missing pixels of frame 1


def test_propagation_carries_values_along_the_flow():
    x = shifting_texture(t=5, shift=2)
    flows = np.zeros((5, 4) + x.shape[2:], dtype=np.float32)
    flows[:, 1], flows[:, 3] = 2.0, -2.0  # the exact motion (dx)
    gappy = x.copy()
    gappy[:, 2, 10:20, 10:20] = np.nan
    values, weight = propagate(gappy, flows, max_frames=3)
    hole = (slice(None), 2, slice(10, 20), slice(10, 20))
    assert (weight[2, 10:20, 10:20] > 0).all()
    np.testing.assert_allclose(values[hole], x[hole], atol=1e-5)
    assert np.isnan(values[:, 0]).all()  # observed pixels get nothing


def test_partial_conv_ignores_masked_inputs():
    torch.manual_seed(0)
    pc = PartialConv2d(3, 5)
    x = torch.randn(2, 3, 8, 8)
    m = (torch.rand(2, 1, 8, 8) > 0.5).float()
    y1, m1 = pc(x, m)
    y2, m2 = pc(torch.where(m > 0, x, torch.randn_like(x) * 100), m)
    torch.testing.assert_close(y1, y2)
    assert m1.shape == (2, 1, 8, 8) and torch.equal(m1, m2) and m1.max() <= 1


def test_warp_with_zero_flow_is_the_identity_and_shifts_with_a_flow():
    x = torch.randn(1, 3, 6, 7)
    torch.testing.assert_close(warp(x, torch.zeros(1, 2, 6, 7)), x)
    flow = torch.zeros(1, 2, 6, 7)
    flow[:, 1] = 1.0
    torch.testing.assert_close(warp(x, flow)[..., :-1], x[..., 1:])


def test_refiner_shapes_and_loss_terms():
    torch.manual_seed(0)
    net = FlowRefiner(FlowRefinerConfig(features=4, hidden=8, iterations=3, flow_scale=2.0))
    flow = torch.randn(2, 5, 4, 9, 11)
    conf = (torch.rand(2, 5, 2, 9, 11) > 0.5).float()
    with torch.no_grad():  # untrained, it returns the raw estimate
        first, _ = net(flow * conf.repeat_interleave(2, 2), conf, flow)
    torch.testing.assert_close(first[-1], flow)
    outs, m = net(flow * conf.repeat_interleave(2, 2), conf, flow)
    assert len(outs) == 3 and all(o.shape == flow.shape for o in outs)
    m = m.detach()
    assert m.shape == (2, 5, 1, 9, 11) and float(m.min()) >= 0 and float(m.max()) <= 1
    l1, tv, cons = flow_losses(outs[-1], flow, conf, 2.0)
    assert all(torch.isfinite(v) and v >= 0 for v in (l1, tv, cons))
    (l1 + tv + cons).backward()
    assert net.log_p.grad is not None  # the confidence rule's exponent is learned


# -- learning and the method ---------------------------------------------------------------
def test_it_learns_to_fill_a_travelling_wave():
    """After 30 steps on CPU the fill beats climatology (and linear), the completion its start."""
    truth, da = travelling_wave()
    cube = Cube(da)
    clim = get("climatology")()
    clim.fit(cube, np.random.default_rng(0))
    clim_mae, lin_mae = gap_mae(clim, cube, truth), gap_mae(get("linear")(), cube, truth)
    m = FlowFill(window=(8, 16, 16), steps=30, time_budget=None, eval_every=10, progress="off",
                 seed=0)
    m.fit(cube, np.random.default_rng(0))
    mae = gap_mae(m, cube, truth)
    info = m.fit_info
    assert mae < 0.5 * clim_mae, (mae, clim_mae, info)
    assert mae < 0.8 * lin_mae, (mae, lin_mae)  # following the motion beats in-place interpolation
    assert info["best_val_l1"] < info["initial_val_l1"], info


def test_the_carry_weight_is_chosen_on_hidden_observations():
    """Where the motion carries the values (a shifting texture) the carried values are used;
    where frames are unrelated (independent textures) they are not; the pair chosen is the
    one with the lowest MAE on the hidden observations."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    moving = shifting_texture(t=8, h=24, w=24, shift=1, seed=3)[0]
    unrelated = np.stack([gaussian_filter(rng.standard_normal((24, 24)), 2.0) for _ in range(8)])
    hide = gapfill.masks.Cloud(coverage=0.3, length_scale=4.0, seed=3).sample(moving.shape)
    chosen = {}
    for name, field in (("moving", moving), ("unrelated", unrelated)):
        m = FlowFill(**{**TINY, "steps": 4})
        m.fit(Cube(xr.DataArray(np.where(hide, np.nan, field), dims=("time", "y", "x"),
                                name="v")), np.random.default_rng(0))
        info = m.fit_info
        best = min(info["blend_mae"], key=info["blend_mae"].get)
        assert best == f"{info['fallback']}, {info['carry']:g}", info
        chosen[name] = info["carry"]
    assert chosen["moving"] > 0 and chosen["unrelated"] == 0, chosen


@pytest.fixture(scope="module")
def fitted():
    _, da = travelling_wave(t=8, h=12, w=12)
    cube = Cube(da)
    m = FlowFill(**{**TINY, "steps": 4})
    m.fit(cube, np.random.default_rng(0))
    return m, cube


def test_fill_is_finite_deterministic_and_keeps_observations(fitted):
    m, cube = fitted
    x = cube.values()
    x[:, :, 0, 0] = np.nan  # never observed
    a = m.fill(x, np.random.default_rng(0))
    b = m.fill(x, np.random.default_rng(5))
    assert np.isfinite(a.values).all() and a.error is None
    np.testing.assert_array_equal(a.values, b.values)
    obs = np.isfinite(x)
    np.testing.assert_array_equal(a.values[obs], x[obs])


def test_weights_only_round_trip_gives_identical_fills(fitted, tmp_path):
    m, cube = fitted
    path = tmp_path / "state.pt"
    torch.save({"state": m.state_dict()}, path)
    clone = FlowFill(**m.options_dict())
    clone.load_state_dict(torch.load(path, weights_only=True)["state"])
    x = cube.values()
    np.testing.assert_array_equal(m.fill(x, np.random.default_rng(0)).values,
                                  clone.fill(x, np.random.default_rng(0)).values)


def test_accessor_video_save_and_load(tmp_path):
    """Colour video (C=3) with a moving bar through the accessor; save/load fills identically."""
    from gapfill import masks

    x = shifting_texture(t=6, h=16, w=16)[0]
    video = np.stack([0.5 + 0.2 * x, 0.4 + 0.1 * x, 0.6 - 0.1 * x], -1).astype(np.float32)
    hidden = masks.make("moving_bar", coverage=0.25).sample((6, 16, 16), np.random.default_rng(0))
    video[hidden] = np.nan
    da = xr.DataArray(video, dims=("time", "y", "x", "channel"), name="video")
    model = da.gapfill.fit("flowfill", holdout=0.0, **{**TINY, "steps": 2})
    out = da.gapfill.fill(model)["video"].values
    assert np.isfinite(out).all()
    again = da.gapfill.fill(gapfill.load(model.save(tmp_path / "m.pt")))["video"].values
    np.testing.assert_array_equal(out, again)


def test_no_trusted_flow_still_fills():
    """Two tiny frames with no pixel observed in both: nothing to learn, the fill still works."""
    v = np.array([[[1.0, np.nan], [np.nan, 2.0]], [[np.nan, 3.0], [4.0, np.nan]]], np.float32)
    da = xr.DataArray(v, dims=("time", "y", "x"), name="v")
    model = da.gapfill.fit("flowfill", holdout=0.0, **TINY)
    assert model.method.fit_info["stopped_by"] == "no_trusted_flow"
    assert np.isfinite(da.gapfill.fill(model)["v"].values).all()


@pytest.mark.parametrize("bad", [
    {"window": (2, 0, 3)}, {"occlusion": "snow"}, {"coverage": 1.0}, {"fallback": "x"},
    {"fb_threshold": 0}, {"winsize": 1}, {"tv_weight": -1}, {"resume": True},
    {"carry": 1.5}, {"carry": "yes"}, {"carry": True},
])
def test_bad_options_are_refused(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        FlowFill(**bad)
