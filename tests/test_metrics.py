"""Tests of gapfill.metrics: pixel scores, Fréchet distance, FID/FVD and the I3D."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from gapfill import metrics
from gapfill.metrics import i3d_jax

torch = pytest.importorskip("torch")


# ------------------------------------------------------------------------ pixel scores
@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, (4, 16, 20, 3)).astype(np.float32)
    mask = np.zeros((4, 16, 20), dtype=bool)
    mask[:, 4:10, 5:15] = True
    mask[3] = False  # a frame with nothing hidden
    filled = truth.copy()
    filled[~mask] += 5.0  # errors outside the mask must not count
    return truth, filled, mask


def test_identical_hidden_pixels(pair):
    truth, filled, mask = pair
    assert metrics.mae(truth, filled, mask) == 0.0
    assert metrics.psnr(truth, filled, mask) == np.inf
    assert metrics.ssim(truth, truth, mask) == pytest.approx(1.0)
    s = metrics.score(truth, truth, mask)
    assert s["mae"] == 0 and s["rmse"] == 0 and s["psnr"] == np.inf
    assert s["ssim"] == pytest.approx(1.0) and s["n_hidden"] == 3 * 6 * 10 * 3


def test_hand_computed_values(pair):
    truth, filled, mask = pair
    filled[mask] = truth[mask] + 0.1
    filled[0][mask[0]] = truth[0][mask[0]] - 0.3  # frame 0 has a larger error
    per = metrics.mae(truth, filled, mask, per_frame=True)
    np.testing.assert_allclose(per[:3], [0.3, 0.1, 0.1], rtol=1e-5)
    assert np.isnan(per[3])
    assert metrics.mae(truth, filled, mask) == pytest.approx(0.5 / 3, rel=1e-5)
    assert metrics.rmse(truth, filled, mask, average="pixel") == pytest.approx(
        np.sqrt((0.09 + 0.01 + 0.01) / 3), rel=1e-5)
    psnr = metrics.psnr(truth, filled, mask, per_frame=True)
    np.testing.assert_allclose(psnr[:3], [10 * np.log10(1 / 0.09), 20.0, 20.0], rtol=1e-5)
    assert metrics.psnr(truth, filled, mask) == pytest.approx(np.mean(psnr[:3]))
    assert metrics.psnr(truth, filled, mask, data_range=255.0) == pytest.approx(
        np.mean(psnr[:3]) + 20 * np.log10(255), rel=1e-6)


def test_ssim_constant_images_closed_form():
    a, b = 0.3, 0.6
    truth = np.full((2, 12, 12), a)
    filled = np.full((2, 12, 12), b)
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: structure term is 1
    assert metrics.ssim(truth, filled) == pytest.approx(expected)
    mask = np.zeros((2, 12, 12), bool)
    mask[:, 2:5, 2:5] = True
    assert metrics.ssim(truth, filled, mask) == pytest.approx(expected)


def test_ssim_only_hidden_region_and_dataarray_order():
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 1, (3, 40, 40))
    filled = truth.copy()
    filled[:, :, 25:] = rng.uniform(0, 1, (3, 40, 15))  # wrong only on the right
    mask = np.zeros_like(truth, dtype=bool)
    mask[:, :, :10] = True  # hidden far on the left
    assert metrics.ssim(truth, filled, mask) == pytest.approx(1.0)
    assert metrics.ssim(truth, filled) < 0.8
    da_t = xr.DataArray(truth, dims=("time", "y", "x"))
    da_f = xr.DataArray(filled, dims=("time", "y", "x")).transpose("x", "time", "y")
    da_m = xr.DataArray(mask, dims=("time", "y", "x")).transpose("y", "x", "time")
    assert metrics.mae(da_t, da_f, da_m) == 0.0
    assert metrics.mae(da_t, da_f) == pytest.approx(metrics.mae(truth, filled))


def test_nan_truth_left_out_and_unfilled_warns():
    truth = np.full((2, 8, 8), 0.5)
    truth[:, 0, 0] = np.nan  # land
    filled = np.full((2, 8, 8), 0.6)
    assert metrics.mae(truth, filled) == pytest.approx(0.1)
    assert np.isfinite(metrics.ssim(truth, filled))
    filled[0, 3, 3] = np.nan
    with pytest.warns(UserWarning, match="not filled"):
        metrics.mae(truth, filled)
    with pytest.raises(ValueError, match="shape"):
        metrics.mae(truth, filled[:1])
    with pytest.raises(ValueError, match="boolean"):
        metrics.mae(truth, filled, np.ones((2, 8, 8)))


# ------------------------------------------------------------------------ Fréchet distance
def test_frechet_one_dimensional():
    m1, s1, m2, s2 = 0.5, 2.0, -1.0, 0.5
    expected = (m1 - m2) ** 2 + s1 + s2 - 2 * np.sqrt(s1 * s2)
    got = metrics.frechet_distance([m1], [[s1]], [m2], [[s2]])
    assert got == pytest.approx(expected)
    assert metrics.frechet_distance(m1, s1, m2, s2) == pytest.approx(expected)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-5, 5), st.floats(0, 4), st.floats(-5, 5), st.floats(0, 4)),
             min_size=1, max_size=6)
)
def test_frechet_diagonal_closed_form(rows):
    m1, s1, m2, s2 = (np.array(c, dtype=float) for c in zip(*rows))
    expected = np.sum((m1 - m2) ** 2 + s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = metrics.frechet_distance(m1, np.diag(s1), m2, np.diag(s2))
    assert got == pytest.approx(expected, abs=1e-8 * (1 + expected))


def test_frechet_commuting_covariances():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    l1, l2 = rng.uniform(0, 3, 5), rng.uniform(0, 3, 5)
    s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(l1 + l2 - 2 * np.sqrt(l1 * l2))
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_identical_and_singular():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(500, 64)) @ rng.normal(size=(64, 64))
    mu, sigma = metrics.gaussian_stats(feats)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) < 1e-6 * np.trace(sigma)
    # Fewer samples than dims: rank-deficient covariances.
    a, b = rng.normal(size=(5, 40)), rng.normal(size=(7, 40)) + 0.5
    mu_a, s_a = metrics.gaussian_stats(a)
    mu_b, s_b = metrics.gaussian_stats(b)
    assert np.linalg.matrix_rank(s_a) == 4
    d = metrics.frechet_distance(mu_a, s_a, mu_b, s_b)
    assert np.isfinite(d) and d > 0
    assert metrics.frechet_distance(mu_a, s_a, mu_a, s_a) < 1e-8 * np.trace(s_a)
    zero = np.zeros((40, 40))
    assert metrics.frechet_distance(mu_a, zero, mu_b, zero) == pytest.approx(
        np.sum((mu_a - mu_b) ** 2))


def test_frechet_matches_scipy_sqrtm_when_well_conditioned():
    from scipy import linalg

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + np.eye(8), b @ b.T + np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    ref = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
           - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_frechet_and_stats_errors():
    with pytest.raises(ValueError, match="shapes"):
        metrics.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance([np.nan], [[1.0]], [0.0], [[1.0]])
    with pytest.raises(ValueError, match="2 samples"):
        metrics.gaussian_stats(np.ones((1, 3)))


# ------------------------------------------------------------------------ FID / FVD
class TinyFrameNet(torch.nn.Module):
    """(B, 3, H, W) -> (B, 6) features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3)

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean((2, 3))


class TinyClipNet(torch.nn.Module):
    """(B, 3, T, H, W) -> (B, 5) features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(3, 5, 3)

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean((2, 3, 4))


def test_fid_with_tiny_net():
    rng = np.random.default_rng(5)
    real = rng.uniform(0, 1, (40, 12, 12, 3)).astype(np.float32)
    fake = np.clip(real * 0.5 + 0.4, 0, 1)
    net = TinyFrameNet()
    assert metrics.fid(real, real.copy(), feature_net=net) == pytest.approx(0.0, abs=1e-9)
    assert metrics.fid(real, fake, feature_net=net) > 1e-3
    video = xr.DataArray(real, dims=("time", "y", "x", "channel"))
    assert metrics.fid(video, real, feature_net=net) == pytest.approx(0.0, abs=1e-9)
    gray = real[..., :1]
    assert metrics.fid(gray, gray, feature_net=net, batch_size=7) == pytest.approx(0.0, abs=1e-9)
    holes = real.copy()
    holes[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.fid(holes, real, feature_net=net)


def test_fvd_with_tiny_net():
    rng = np.random.default_rng(6)
    real = rng.uniform(0, 1, (6, 5, 10, 10, 3)).astype(np.float32)
    fake = real[:, ::-1] * 0.5  # darker, time-reversed
    net = TinyClipNet()
    assert metrics.fvd(real, real.copy(), feature_net=net) == pytest.approx(0.0, abs=1e-9)
    assert metrics.fvd(real, fake, feature_net=net) > 1e-3
    as_list = [xr.DataArray(v, dims=("time", "y", "x", "channel")) for v in real]
    assert metrics.fvd(as_list, real, feature_net=net) == pytest.approx(0.0, abs=1e-9)
    long = xr.DataArray(real.reshape(30, 10, 10, 3), dims=("time", "y", "x", "channel"))
    assert metrics.fvd(long, real, feature_net=net, clip_len=5) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="clips"):
        metrics.fvd(long, real, feature_net=net, clip_len=16)


def test_missing_weights_error(monkeypatch, tmp_path):
    monkeypatch.delenv(metrics.FID_ENV, raising=False)
    monkeypatch.delenv(metrics.FVD_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    frames = np.zeros((2, 8, 8, 3), np.float32)
    with pytest.raises(FileNotFoundError, match=metrics.FID_ENV) as err:
        metrics.fid(frames, frames)
    assert "never downloads" in str(err.value) and "inception-2015-12-05.pt" in str(err.value)
    with pytest.raises(FileNotFoundError, match="convert_i3d_jax") as err:
        metrics.fvd(frames[None].repeat(2, 0), frames[None].repeat(2, 0))
    assert metrics.FVD_ENV in str(err.value) and "i3d-jax" in str(err.value)
    monkeypatch.setenv(metrics.FVD_ENV, str(tmp_path / "nowhere.pt"))
    with pytest.raises(FileNotFoundError, match="nowhere.pt does not exist"):
        metrics.load_fvd_net()


def test_fid_loads_torchscript_file(tmp_path, monkeypatch):
    class NvidiaStyle(torch.nn.Module):
        def forward(self, x, return_features: bool = False):
            assert return_features
            return x.mean((2, 3)) / 255.0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(NvidiaStyle()).save(str(tmp_path / "incep.pt"))
    monkeypatch.setenv(metrics.FID_ENV, str(tmp_path / "incep.pt"))
    net = metrics.load_fid_net()
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(net(x), x.mean((2, 3)))
    rng = np.random.default_rng(7)
    a = rng.uniform(0, 1, (10, 4, 4, 3)).astype(np.float32)
    assert metrics.fid(a, a) == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------------ I3D
def test_i3d_random_weights_shapes():
    from gapfill.models.i3d import I3DConfig, I3DFeatures, InceptionI3d

    torch.set_num_threads(1)
    net = InceptionI3d().eval()
    x = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        assert net(x).shape == (2, 400)
        assert net(x, features="pool").shape == (2, 1024)
        feats = I3DFeatures(net, size=32)(torch.rand(1, 3, 9, 20, 24))
    assert feats.shape == (1, 400)
    assert InceptionI3d(I3DConfig(num_classes=7))(x[:1]).shape == (1, 7)
    with pytest.raises(ValueError):
        I3DConfig(num_classes=0)
    with pytest.raises(ValueError, match="clips"):
        net(torch.rand(1, 3, 32, 32))


def _fake_jax_checkpoint(state: dict) -> dict:
    """Write a torch I3D state dict the way the i3d-jax pickle stores it."""
    branches = {v: k for k, v in i3d_jax._JAX_BRANCHES.items()}
    tree: dict = {"params": {}, "batch_stats": {}}

    def put(group, path, value):
        node = tree[group]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value

    for key, value in state.items():
        v = value.numpy()
        if key.startswith("logits."):
            leaf = "kernel" if key.endswith("weight") else "bias"
            v = v.transpose(2, 3, 4, 1, 0) if leaf == "kernel" else v
            put("params", ["Logits/Conv3d_0c_1x1", "Conv_0", leaf], v)
            continue
        *layer, module, field = key.split(".")
        layer = (["/".join([layer[1], branches[layer[2]]])] if layer[0] == "mixed"
                 else layer)
        if (module, field) == ("conv", "weight"):
            put("params", [*layer, "Conv_0", "kernel"], v.transpose(2, 3, 4, 1, 0))
        elif (module, field) == ("bn", "bias"):
            put("params", [*layer, "BatchNorm_0", "bias"], v)
        elif field in ("running_mean", "running_var"):
            put("batch_stats", [*layer, "BatchNorm_0", field[8:]], v.reshape(1, 1, 1, 1, -1))
    return tree


def test_convert_i3d_jax_round_trip(tmp_path):
    from gapfill.models.i3d import I3DConfig, InceptionI3d, load_i3d

    torch.manual_seed(0)
    src = InceptionI3d(I3DConfig(num_classes=10)).eval()
    with torch.no_grad():
        for name, buf in src.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
        for name, p in src.named_parameters():
            if name.endswith("bn.bias"):
                p.normal_(0, 0.1)
    ckpt = tmp_path / "fake.ckpt"
    ckpt.write_bytes(pickle.dumps(_fake_jax_checkpoint(src.state_dict())))
    out = metrics.convert_i3d_jax(ckpt, tmp_path / "w" / "i3d.pt")
    net = load_i3d(out)
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), src(x))
    # weights_only loading: the file holds plain tensors only.
    assert all(isinstance(v, torch.Tensor)
               for v in torch.load(out, weights_only=True).values())


def test_convert_refuses_non_numpy_pickle(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"params": {"x": os.system}}))  # a global beyond NumPy
    with pytest.raises(pickle.UnpicklingError, match="only NumPy"):
        metrics.convert_i3d_jax(bad, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_realism_is_one_for_the_truth_and_below_one_for_a_smooth_fill():
    from scipy.ndimage import gaussian_filter

    from gapfill.metrics import realism

    rng = np.random.default_rng(0)
    truth = gaussian_filter(rng.standard_normal((6, 48, 48)), (0, 1, 1))
    hidden = np.zeros(truth.shape, dtype=bool)
    hidden[:, 12:36, 12:36] = True
    same = realism(truth, truth, hidden)
    assert same["gradient"] == pytest.approx(1.0) and same["spectrum"] == pytest.approx(1.0)
    smooth = np.where(hidden, gaussian_filter(truth, (0, 3, 3)), truth)
    r = realism(truth, smooth, hidden)
    assert r["gradient"] < 0.6 and r["spectrum"] < 0.2
    noisy = np.where(hidden, truth + 0.5 * rng.standard_normal(truth.shape), truth)
    assert realism(truth, noisy, hidden)["spectrum"] > 1.5
    assert np.isnan(realism(truth, truth, np.zeros_like(hidden))["gradient"])
