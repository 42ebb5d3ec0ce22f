"""Tests of the ``combcn`` and ``tgfnet`` methods, their networks and their shared training loop.

Tiny configurations on one torch thread: the file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")

import gapfill  # noqa: E402
from gapfill.cube import Cube  # noqa: E402
from gapfill.methods import get  # noqa: E402
from gapfill.methods.climatology import Climatology  # noqa: E402
from gapfill.methods.combcn import CombCN  # noqa: E402
from gapfill.methods.tgfnet import TGFNet  # noqa: E402
from gapfill.models.combcn import CombCN as CombCNNet  # noqa: E402
from gapfill.models.combcn import CombCNConfig  # noqa: E402
from gapfill.models.tgfnet import TGFNet as TGFNetNet  # noqa: E402
from gapfill.models.tgfnet import TGFNetConfig, VGG16Features, warp  # noqa: E402
from gapfill.testing import gap_mae, smooth_cube  # noqa: E402
from gapfill.training import CheckpointManager, load_checkpoint  # noqa: E402

METHODS = {"combcn": CombCN, "tgfnet": TGFNet}
#: Tiny networks; the time axis of a window is short and frames are 16 x 16.
TINY = {
    "combcn": dict(window=(6, 16, 16), width3d=6, width2d=6, batch_size=2),
    "tgfnet": dict(window=(6, 16, 16), width=6, align_width=6, batch_size=4),
}
COMMON = dict(time_budget=None, progress="off", seed=3, val_share=0.0)


def make(name: str, **extra):
    return METHODS[name](**{**TINY[name], **COMMON, **extra})


@pytest.fixture(scope="module")
def fitted():
    """Each method fitted for 3 steps on the wave (shared by the fill tests)."""
    _, da = smooth_cube(w=16)
    cube = Cube(da)
    out = {}
    for name in METHODS:
        m = make(name, steps=3)
        m.fit(cube, np.random.default_rng(0))
        out[name] = m
    return out, cube


# -- registry and options ----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(METHODS))
def test_registered_and_options_validated(name):
    cls = METHODS[name]
    assert get(name) is cls and name in gapfill.methods.available()
    with pytest.raises(ValueError, match="guide"):
        cls(guide="kriging")
    with pytest.raises(ValueError, match="occlusion"):
        cls(occlusion="fog")
    with pytest.raises(ValueError, match="resume"):
        cls(resume=True)
    with pytest.raises(ValueError, match="unknown option"):
        cls(colour=True)
    m = cls(window=[4, 8, 8])  # JSON gives lists back
    assert m.options.window == (4, 8, 8)
    assert cls(**json.loads(json.dumps(m.options_dict()))).options == m.options


def test_method_specific_options():
    with pytest.raises(ValueError, match="dilations"):
        CombCN(dilations=())
    with pytest.raises(ValueError, match="ref_offsets"):
        TGFNet(ref_offsets=(-1, 0, 1))
    with pytest.raises(ValueError, match="kernels"):
        TGFNet(kernels=(3, 4))
    with pytest.raises(ValueError, match="pyramid_weights"):
        TGFNet(pyramid_weights=(1, 1))
    assert TGFNet(ref_offsets=[-1, 1]).options.ref_offsets == (-1, 1)


# -- networks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 7, 9), (2, 2, 3), (4, 16, 16)])
def test_combcn_network_shapes_and_guide_start(shape):
    torch.manual_seed(0)
    net = CombCNNet(CombCNConfig(channels=2, guide=True, width3d=4, width2d=4))
    y = torch.randn(2, 2, *shape)
    m = (torch.rand_like(y) > 0.4).float()
    y = torch.where(m > 0, y, torch.nan)  # NaN in the gaps must not leak
    guide = torch.randn_like(y)
    full, low, low_mask = net(y, m, guide)
    assert full.shape == y.shape and torch.isfinite(full).all()
    assert low.shape[:3] == y.shape[:3] and low.shape == low_mask.shape
    assert low.shape[-2] * 2 >= shape[1] and low.shape[-1] * 2 >= shape[2]
    torch.testing.assert_close(full, guide)  # zero-initialised heads: untrained, it gives the guide


@pytest.mark.parametrize("shape", [(7, 9), (2, 3), (16, 16)])
def test_tgfnet_network_shapes_attention_and_guide_start(shape):
    torch.manual_seed(0)
    k, c = 3, 2
    net = TGFNetNet(TGFNetConfig(channels=c, n_refs=k, width=4, align_width=4))
    tgt = torch.randn(2, c, *shape)
    tm = (torch.rand_like(tgt) > 0.4).float()
    refs = torch.randn(2, k, c, *shape)
    rm = (torch.rand_like(refs) > 0.4).float()
    guide = torch.randn_like(tgt)
    res = net(torch.where(tm > 0, tgt, torch.nan), tm, refs, rm, torch.zeros_like(refs), guide)
    full, half, quarter, eighth = res["out"]
    assert full.shape == tgt.shape and torch.isfinite(full).all()
    assert half.shape[-1] * 2 == quarter.shape[-1] * 4 == eighth.shape[-1] * 8 >= shape[1]
    assert res["warped"].shape == refs.shape
    for att in res["attention"]:  # softmax over the groups at every pixel
        assert att.shape[1] == k
        torch.testing.assert_close(att.sum(1), torch.ones_like(att[:, 0]))
    torch.testing.assert_close(full, guide)


def test_warp_moves_an_image_by_the_flow():
    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 3, 2] = 1.0
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = 2.0  # sample two pixels to the right
    out = warp(img, flow)
    assert out[0, 0, 3, 0] == 1.0 and out.sum() == 1.0
    torch.testing.assert_close(warp(img, torch.zeros_like(flow)), img)


# -- learning ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,steps,lr", [("combcn", 100, 2e-3), ("tgfnet", 80, 1e-3)])
def test_training_beats_climatology_on_a_travelling_wave(name, steps, lr):
    """Without a guide, a few steps of self-supervised training fill better than climatology."""
    truth, da = smooth_cube(t=12, h=16, w=16, missing=0.3, seed=1)
    cube = Cube(da)
    clim = Climatology()
    clim.fit(cube, np.random.default_rng(0))
    m = make(name, guide="none", steps=steps, lr=lr)  # margins over seeds 0-4: ratio <= 0.73
    m.fit(cube, np.random.default_rng(0))
    mae, clim_mae = gap_mae(m, cube, truth), gap_mae(clim, cube, truth)
    assert mae < 0.8 * clim_mae, (mae, clim_mae)


# -- filling and state -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(METHODS))
def test_fill_is_deterministic_and_keeps_observations(fitted, name):
    models, cube = fitted
    m = models[name]
    x = cube.values()
    a = m.fill(x, np.random.default_rng(0))
    b = m.fill(x, np.random.default_rng(1), samples=3)
    assert a.error is None
    np.testing.assert_array_equal(a.values, b.values)
    obs = np.isfinite(x)
    np.testing.assert_array_equal(a.values[obs], x[obs])
    assert np.isfinite(a.values).all()
    with pytest.raises(ValueError, match="C=1"):
        m.fill(np.zeros((2, 4, 8, 8), np.float32), np.random.default_rng(0))


def test_tgfnet_fills_frames_in_order_with_filled_references(fitted):
    models, cube = fitted
    m = models["tgfnet"]
    inner = m.net
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = self.inner(*args)
            calls.append(([a.clone() for a in args[:5]], out["out"][0].clone()))
            return out

    x = cube.values()[:, :5]
    m.net = Recorder()
    try:
        m.fill(x, np.random.default_rng(0))
    finally:
        m.net = inner
    assert len(calls) == 5  # one window spans the whole (short) sequence: one call per frame
    obs = torch.from_numpy(np.isfinite(x)).float()
    offsets = m.options.ref_offsets
    for tau, ((_, t_mask, refs, r_mask, r_filled), _) in enumerate(calls):
        torch.testing.assert_close(t_mask[0], obs[:, tau])
        for k, j in enumerate(np.clip(tau + np.asarray(offsets), 0, 4)):
            if j < tau:  # an earlier frame: filled, flagged, and it holds the fill of frame j
                assert (r_mask[0, k] == 1).all()
                torch.testing.assert_close(r_filled[0, k], 1 - obs[:, j])
                fill_j = calls[j][1][0]
                gaps = obs[:, j] == 0
                torch.testing.assert_close(refs[0, k][gaps], fill_j[gaps])
            else:  # the target itself or a later frame: still gappy
                torch.testing.assert_close(r_mask[0, k], obs[:, j])
                assert (r_filled[0, k] == 0).all()


@pytest.mark.parametrize("name", list(METHODS))
def test_weights_only_round_trip_gives_identical_fills(fitted, name, tmp_path):
    models, cube = fitted
    m = models[name]
    path = tmp_path / "model.pt"
    torch.save({"state": m.state_dict()}, path)
    clone = METHODS[name](**m.options_dict())
    clone.load_state_dict(torch.load(path, weights_only=True)["state"])
    x = cube.values()
    np.testing.assert_array_equal(
        m.fill(x, np.random.default_rng(0)).values, clone.fill(x, np.random.default_rng(0)).values
    )


@pytest.mark.parametrize("name", list(METHODS))
def test_video_through_the_accessor_and_saved_model(name, tmp_path):
    """RGB video (C=3) with raindrops: fit, save, load, fill through the public path."""
    import gapfill.video as gv

    rng = np.random.default_rng(0)
    t, h, w = 6, 12, 14
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    frames = np.stack([np.stack([np.sin(3 * xx + 0.3 * i + c) * yy for c in range(3)], -1)
                       for i in range(t)])
    clip = xr.DataArray((0.5 + 0.4 * frames + 0.02 * rng.standard_normal(frames.shape))
                        .astype(np.float32), dims=("time", "y", "x", "channel"), name="video")
    gappy, mask = gv.occlude(clip, "raindrops", seed=1, coverage=0.3)
    opts = {**TINY[name], **COMMON, "steps": 2, "window": (4, 8, 8)}
    del opts["seed"]  # the accessor's seed seeds the fit
    model = gappy.gapfill.fit(name, holdout=0.0, seed=0, **opts)
    model.save(tmp_path / "m.pt")
    loaded = gapfill.load(tmp_path / "m.pt")
    a = gappy.gapfill.fill(model, fill_never_observed=True)["video"].values
    b = gappy.gapfill.fill(loaded, fill_never_observed=True)["video"].values
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()
    obs = np.isfinite(gappy.values)
    assert a[obs].tobytes() == gappy.values[obs].tobytes()


@pytest.mark.parametrize("name", list(METHODS))
def test_eof_guide_and_validation(name):
    _, da = smooth_cube(t=8, h=10, w=12, seed=2)
    cube = Cube(da)
    m = make(name, steps=2, guide="eof", guide_pool=2, val_share=0.1, eval_every=1)
    m.fit(cube, np.random.default_rng(0))
    info = m.fit_info
    assert info["guide_modes"] >= 1 and info["best_val_mae"] is not None
    assert info["best_val_mae"] <= info["initial_val_mae"]
    res = m.fill(cube.values(), np.random.default_rng(0))
    assert np.isfinite(res.values).all()


def test_checkpoint_resume_continues_the_run(tmp_path):
    _, da = smooth_cube(w=16)
    cube = Cube(da)
    opts = {"checkpoint_every": 2, "occlusion": "empirical"}
    straight = make("combcn", steps=4, checkpoint_dir=str(tmp_path / "a"), **opts)
    straight.fit(cube, np.random.default_rng(0))
    make("combcn", steps=2, checkpoint_dir=str(tmp_path / "b"), **opts).fit(
        cube, np.random.default_rng(0))
    resumed = make("combcn", steps=4, checkpoint_dir=str(tmp_path / "b"), resume=True, **opts)
    resumed.fit(cube, np.random.default_rng(99))  # the seed comes from the checkpoint
    assert resumed.fit_info["steps"] == 4
    ref = load_checkpoint(CheckpointManager(tmp_path / "a").latest())
    got = load_checkpoint(CheckpointManager(tmp_path / "b").latest())
    for k, v in ref["net"].items():
        torch.testing.assert_close(got["net"][k], v, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "b" / "log.csv").read_text().splitlines()[0].startswith("step,")
    with pytest.raises(ValueError, match="not written by tgfnet"):
        make("tgfnet", steps=1, checkpoint_dir=str(tmp_path / "b"), resume=True).fit(
            cube, np.random.default_rng(0))


# -- tgfnet's VGG losses ---------------------------------------------------------------------------
def test_vgg_losses_from_a_local_file_only(tmp_path):
    _, da = smooth_cube(t=6, h=16, w=16)
    cube = Cube(da)
    with pytest.raises(FileNotFoundError, match="vgg_weights"):
        make("tgfnet", steps=1, vgg_weights=str(tmp_path / "missing.pt")).fit(
            cube, np.random.default_rng(0))
    torch.manual_seed(0)
    state = dict(VGG16Features().state_dict())  # random weights, torchvision-style keys
    state["classifier.0.weight"] = torch.zeros(2, 2)  # a full torchvision file has more keys
    torch.save(state, tmp_path / "vgg16.pt")
    m = make("tgfnet", steps=1, vgg_weights=str(tmp_path / "vgg16.pt"))
    m.fit(cube, np.random.default_rng(0))
    assert m.fit_info["steps"] == 1 and m._vgg is None  # dropped after training
    assert "vgg" not in " ".join(m.state_dict()["net"])  # not part of the saved weights
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="lacks VGG16 layers"):
        VGG16Features.from_file(tmp_path / "bad.pt")
