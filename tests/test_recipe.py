"""gapfill.recipe: schema, path resolution, and errors that name the offending key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from gapfill import recipe as rc

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data: dict | str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.fixture
def base(tmp_path, monkeypatch) -> dict:
    """A minimal valid recipe; the working directory is tmp_path/work."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return {
        "input": {"path": "sample:ostia", "variable": "surface_temperature"},
        "output": {"path": "outputs/out.nc"},
    }


def error_of(tmp_path: Path, data: dict | str) -> str:
    with pytest.raises(rc.RecipeError) as info:
        rc.load(write(tmp_path, data))
    return str(info.value)


# -- valid recipes -------------------------------------------------------------------------------
def test_minimal_recipe_defaults_and_paths(base, tmp_path, ostia_path):
    r = rc.load(write(tmp_path, base))
    assert r.input.path == ostia_path  # sample:ostia resolved
    assert r.output.path == str(tmp_path / "work" / "outputs" / "out.nc")  # relative to cwd
    assert r.output.format == "netcdf"
    assert (r.method.name, r.method.options) == ("eof", {})
    assert (r.holdout.fraction, r.holdout.process, r.holdout.seed) == (0.1, "auto", 0)
    assert r.fill.samples == 1 and r.punch is None
    assert set(rc.side_outputs(r)) == {"output.path", "output.diagnostics_csv", "output.figures"}
    assert rc.side_outputs(r)["output.figures"].name == "out_diagnostics.png"


def test_input_relative_to_recipe_dir(base, tmp_path, ostia_path):
    data_dir = tmp_path / "project" / "data"
    data_dir.mkdir(parents=True)
    shutil.copy(ostia_path, data_dir / "sst.nc")
    base["input"]["path"] = "data/sst.nc"
    r = rc.load(write(tmp_path / "project", base))
    assert r.input.path == str(data_dir / "sst.nc")
    base["input"]["path"] = ["data/*.nc"]
    assert rc.load(write(tmp_path / "project", base)).input.path == [str(data_dir / "*.nc")]


def test_yaml_dates_and_overrides(base, tmp_path):
    base["input"]["time_slice"] = {"start": "2006-04", "stop": "2007-03-16"}
    path = write(tmp_path, yaml.safe_dump(base).replace("'2007-03-16'", "2007-03-16"))
    r = rc.load(path, overrides={"output.path": "elsewhere.zarr", "fill.samples": 3})
    assert r.input.time_slice.stop == "2007-03-16"  # YAML date read back as text
    assert r.output.format == "zarr" and r.fill.samples == 3


def test_resolved_recipe_round_trips(base, tmp_path):
    base["punch"] = {"coverage": 0.3, "options": {"length_scale": 4}}
    base["method"] = {"name": "linear", "options": {}}
    r = rc.load(write(tmp_path, base))
    again = rc.from_dict(yaml.safe_load(r.to_yaml()))
    assert again == r


def test_bundled_recipe_is_valid_and_identical_to_repo_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundled = rc.default_recipe_path()
    assert bundled.read_text() == (ROOT / "recipes" / "ostia_sst.yaml").read_text()
    r = rc.load(bundled)
    assert r.method.name == "eof" and r.punch is not None and r.punch.coverage == 0.4
    assert r.output.path == str(tmp_path / "outputs" / "ostia_sst_eof.nc")


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_method_sections_are_valid(path):
    """Every shipped recipe's method and options pass the checks `gapfill run` makes
    before anything runs (the inputs of the HPC recipe are not shipped)."""
    data = yaml.safe_load(path.read_text())
    rc.MethodConfig(**data.get("method", {}))


def test_occlusion_options_for_another_process_are_refused_before_the_fit():
    from gapfill import methods

    with pytest.raises(ValueError, match=r"'periodic'.*'empirical'.*occlusion='auto' may use"):
        methods.get("gan")(occlusion_options={"periodic": [False, True]})
    methods.get("gan")(occlusion="cloud", occlusion_options={"periodic": [False, True]})
    with pytest.raises(ValueError, match="not taken by the 'cloud'"):
        methods.get("gan")(occlusion="cloud", occlusion_options={"seed": 1})
    with pytest.raises(ValueError, match="'flip'.*'cloud'.*occlusion='auto' may use"):
        methods.get("gan")(occlusion_options={"flip": True})
    methods.get("gan")(occlusion="empirical", occlusion_options={"flip": True})


def test_readme_documents_every_key():
    readme = (ROOT / "recipes" / "README.md").read_text()
    assert rc.docs_markdown() in readme, "regenerate with: python -m gapfill.recipe"
    for key in ("input.path", "method.options", "holdout.fraction", "punch.coverage",
                "fill.samples", "output.overwrite", "output.diagnostics_csv"):
        assert f"`{key}`" in readme


# -- errors name the key -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"extra": 1}, r"recipe key 'extra' is not allowed"),
        ({"method": {"name": "eof", "optionz": {}}},
         r"recipe key 'method.optionz' is not allowed \(did you mean 'options'\?\)"),
        ({"input": {"path": "sample:ostia", "variable": "x", "time_slice": {"begin": "2006"}}},
         r"recipe key 'input.time_slice.begin' is not allowed"),
        ({"fill": {"samples": "many"}}, r"fill.samples: Input should be a valid integer"),
        ({"holdout": {"fraction": 1.5}}, r"holdout.fraction: Input should be less than 1"),
        ({"holdout": {"process": "fog"}}, r"holdout.process: unknown process 'fog'"),
        ({"input": {"path": "missing.nc", "variable": "x"}},
         r"input.path: file not found: .*missing.nc"),
        ({"input": {"path": "sample:nope", "variable": "x"}}, r"input.path: unknown sample 'nope'"),
        ({"input": {"path": "sample:ostia"}}, r"recipe key 'input.variable' is required"),
        ({"method": {"name": "kriging"}}, r"method.name: unknown method 'kriging'; choose one of"),
        ({"method": {"name": "eof", "options": {"nmodes": 3}}},
         r"method.options: unknown option\(s\) \['nmodes'\] for method 'eof'"),
        ({"method": {"name": "eof", "options": {"max_modes": 0}}},
         r"method.options: eof option 'max_modes' must be (an integer )?>= 1"),
        ({"punch": {"process": "fog"}}, r"punch.process: unknown process 'fog'"),
        ({"punch": {"options": {"wind": 3}}}, r"punch.options: .*wind"),
        ({"output": {"path": "out.txt"}}, r"output.path: cannot tell the output format"),
        ({"output": {"path": "o.nc", "format": "grib"}},
         r"output.format: Input should be 'netcdf', 'zarr' or 'video'"),
    ],
)
def test_errors_name_the_key(base, tmp_path, change, pattern):
    msg = error_of(tmp_path, {**base, **change})
    assert re.search(pattern, msg), msg
    assert msg.startswith(str(tmp_path / "recipe.yaml"))


def test_several_errors_are_listed(base, tmp_path):
    msg = error_of(tmp_path, {**base, "fill": {"samples": 0, "seeed": 1}, "oops": True})
    assert "3 problems" in msg
    assert "fill.samples" in msg and "'fill.seeed'" in msg and "'oops'" in msg


def test_existing_output_refused_unless_overwrite(base, tmp_path):
    out = tmp_path / "work" / "outputs"
    out.mkdir()
    (out / "out.nc").write_text("")
    msg = error_of(tmp_path, base)
    assert "output.path:" in msg and "already exists" in msg and "--overwrite" in msg
    base["output"]["overwrite"] = True
    rc.load(write(tmp_path, base))
    (out / "out.nc").unlink()
    (out / "out_diagnostics.csv").write_text("")
    base["output"]["overwrite"] = False
    assert "output.diagnostics_csv:" in error_of(tmp_path, base)
    base["output"]["diagnostics_csv"] = False
    rc.load(write(tmp_path, base))


def test_output_may_not_be_a_plain_directory(base, tmp_path):
    (tmp_path / "work" / "outputs" / "out.nc").mkdir(parents=True)
    base["output"]["overwrite"] = True
    assert "is a directory (not a Zarr store)" in error_of(tmp_path, base)


def test_output_may_not_be_the_input(base, tmp_path, ostia_path):
    src = tmp_path / "in.nc"
    shutil.copy(ostia_path, src)
    base["input"]["path"] = str(src)
    base["output"] = {"path": str(src), "overwrite": True}
    assert "is an input file" in error_of(tmp_path, base)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("input: [unclosed", r"not valid YAML at line \d+"),
        ("", r"the recipe is empty"),
        ("- a\n- b\n", r"a recipe is a mapping"),
    ],
)
def test_unreadable_recipe(tmp_path, text, pattern):
    assert re.search(pattern, error_of(tmp_path, text))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(rc.RecipeError, match="recipe file not found"):
        rc.load(tmp_path / "nope.yaml")


# -- checks against the data ---------------------------------------------------------------------
def test_open_input_selects_time(base, tmp_path):
    base["input"]["time_slice"] = {"start": "2006-04", "stop": "2007-03"}
    ds = rc.open_input(rc.load(write(tmp_path, base)))
    assert ds.sizes["time"] == 12


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"variable": "sst"}, r"input.variable: 'sst' is not in the input.*surface_temperature"),
        ({"dims": {"time": "t"}}, r"input.dims: .*'t'"),
        ({"time_slice": {"start": "1990", "stop": "1991"}},
         r"input.time_slice: selects 0 time step"),
        ({"chunks": {"depth": 3}}, r"input.chunks: no dimension\(s\) \['depth'\]"),
    ],
)
def test_open_input_errors(base, tmp_path, change, pattern):
    base["input"].update(change)
    r = rc.load(write(tmp_path, base))
    with pytest.raises(rc.RecipeError, match=pattern):
        rc.open_input(r)
