"""The ``gapfill`` command.

::

    gapfill run [RECIPE] [--output PATH] [--overwrite]   # default: the bundled OSTIA recipe
    gapfill run RECIPE --dry-run                         # + where it would run, job script
    gapfill train RECIPE [--model PATH] [--overwrite]    # fit and save the model only
    torchrun --nproc_per_node=N -m gapfill train RECIPE  # the same, data-parallel (DDP)
    gapfill validate RECIPE                              # check everything, run nothing
    gapfill example                                      # print the bundled recipe

Exit status: 0 on success, 2 for a bad recipe or input (one line on stderr, no
traceback), 1 for an unexpected error (with a traceback), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("gapfill")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    from gapfill.version import __version__

    parser = argparse.ArgumentParser(
        prog="gapfill",
        description="Fill gaps in gridded geoscience fields from a YAML recipe.",
        epilog="Recipe keys are documented in recipes/README.md.",
    )
    parser.add_argument("--version", action="version", version=f"gapfill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a recipe (default: the bundled OSTIA SST recipe)")
    run.add_argument("recipe", nargs="?", help="recipe YAML file (default: bundled ostia_sst.yaml)")
    run.add_argument("--output", "-o", metavar="PATH", help="override output.path")
    run.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    run.add_argument(
        "--dry-run", action="store_true",
        help="check the recipe and input, say where it would run (print the batch job script "
             "for slurm/pbs) and what a resumed run would skip; run nothing",
    )
    _verbosity(run)

    train = sub.add_parser(
        "train",
        help="fit the recipe's method and save the model (no fill); data-parallel under torchrun",
        description="Fit the recipe's method and save the model; `gapfill run` then fills with "
                    "it when the recipe sets method.model. Under torchrun "
                    "(`torchrun --nproc_per_node=N -m gapfill train RECIPE`) the gan trains "
                    "with DistributedDataParallel (NCCL on GPUs, gloo on CPUs) and rank 0 "
                    "writes the model.",
    )
    train.add_argument(
        "recipe", nargs="?", help="recipe YAML file (default: bundled ostia_sst.yaml)"
    )
    train.add_argument("--model", "-m", metavar="PATH", help="override output.model")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model")
    _verbosity(train)

    val = sub.add_parser("validate", help="check a recipe and its input without running it")
    val.add_argument("recipe", help="recipe YAML file")
    val.add_argument("--output", "-o", metavar="PATH", help="override output.path")
    val.add_argument("--overwrite", action="store_true", help="allow existing outputs")
    _verbosity(val)

    sub.add_parser("example", help="print the bundled default recipe (a starting point)")
    return parser


def _verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    p.add_argument("--debug", action="store_true", help="debug logs and full tracebacks")


def _setup_logging(args: argparse.Namespace) -> None:
    import os

    level = logging.DEBUG if getattr(args, "debug", False) else (
        logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    )
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun, rank 0 alone tells the story
        level = max(level, logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s gapfill %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _load(args: argparse.Namespace):  # -> Recipe
    from gapfill import recipe as rc

    path = Path(args.recipe) if getattr(args, "recipe", None) else rc.default_recipe_path()
    overrides: dict[str, object] = {}
    if getattr(args, "output", None):
        overrides["output.path"] = args.output
    if getattr(args, "model", None):
        overrides["output.model"] = args.model
    if args.overwrite:
        overrides["output.overwrite"] = True
    log.info("recipe %s", path)
    return rc.load(path, overrides=overrides, command=args.command)


def _command_line(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["gapfill", *args])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gapfill`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    if args.command == "example":
        from gapfill.recipe import default_recipe_path

        sys.stdout.write(default_recipe_path().read_text())
        return EXIT_OK
    from gapfill.recipe import RecipeError, open_input

    try:
        recipe = _load(args)
        if args.command == "validate":
            from gapfill import preflight

            ds = open_input(recipe)
            preflight.check(recipe, ds)
            da = ds[recipe.input.variable]
            sizes = ", ".join(f"{k}: {v}" for k, v in da.sizes.items())
            print(f"{args.recipe}: OK ({recipe.input.variable} [{sizes}], method "
                  f"{recipe.method.name}, output {recipe.output.path})")
            return EXIT_OK
        if args.command == "train":
            return _train(recipe)
        if args.dry_run:
            return _dry_run(args, recipe)
        from gapfill.pipeline import run

        result = run(recipe, command=_command_line(argv))
        for p in (result.output, result.frames, result.preview, result.csv, result.figure,
                  result.model):
            if p is not None:
                print(p)
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"gapfill: interrupted; {_leftover(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RecipeError, FileNotFoundError, FileExistsError, ValueError) as err:
        if args.debug:
            log.exception("failed")
        print(f"gapfill: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        expected = _storage_error(err, args)
        if expected is None:  # a bug: show everything
            log.exception("unexpected error (please report it)")
            return EXIT_ERROR
        if args.debug:
            log.exception("failed")
        print(f"gapfill: error: {expected}", file=sys.stderr)
        return EXIT_USAGE


def _train(recipe) -> int:  # noqa: ANN001
    from gapfill import ddp
    from gapfill.pipeline import train

    try:
        path = train(recipe)
        if ddp.context().is_main:
            print(path)
    finally:
        ddp.shutdown()
    return EXIT_OK


def _dry_run(args: argparse.Namespace, recipe) -> int:  # noqa: ANN001
    """Print what ``gapfill run`` would do; run nothing."""
    from gapfill import cluster, preflight, zarr_regions
    from gapfill.recipe import open_input

    ds = open_input(recipe)
    preflight.check(recipe, ds)
    da = ds[recipe.input.variable]
    sizes = ", ".join(f"{k}: {v}" for k, v in da.sizes.items())
    lazy = da.chunks is not None
    print(f"{args.recipe or 'bundled recipe'}: OK ({recipe.input.variable} [{sizes}], method "
          f"{recipe.method.name}, output {recipe.output.path})")
    if lazy:
        chunks = ", ".join(f"{d}: {max(c)}" for d, c in zip(da.dims, da.chunks))
        print(f"dask chunks: {chunks}; compute: {cluster.describe(recipe.compute)}")
        partial = zarr_regions.partial_path(recipe.output.path, recipe.output.format)
        n = len(zarr_regions.written_regions(partial)) if partial.exists() else 0
        if n:
            print(f"resume: {n} region(s) already written in {partial} (kept if the recipe "
                  "is unchanged)")
    else:
        print("in-memory input (no dask chunks): runs in this process, no cluster")
    if recipe.compute.kind in ("slurm", "pbs"):
        print(f"# job script ({recipe.compute.kind}, {recipe.compute.n_jobs} job(s)):")
        print(cluster.job_script(recipe.compute))
    return EXIT_OK


def _leftover(args: argparse.Namespace) -> str:
    """What an interrupted run left: nothing, or a partial store to resume from."""
    try:
        from gapfill import zarr_regions

        recipe = _load(args)
        partial = zarr_regions.partial_path(recipe.output.path, recipe.output.format)
    except Exception:  # the recipe itself was the problem
        return "no partial output was left behind"
    if partial.exists():
        return f"the regions written so far are in {partial}; run the same command to resume"
    return "no partial output was left behind"


#: errno values of failures that are the machine's, not gapfill's: disk full, quota, file too
#: large, I/O error, permission, read-only filesystem, stale network handle.
STORAGE_ERRNOS = {"ENOSPC", "EDQUOT", "EFBIG", "EIO", "EACCES", "EPERM", "EROFS", "ESTALE",
                  "ENOTDIR", "EISDIR"}
#: Packages whose errors mean a file or store could not be read or written.
STORAGE_PACKAGES = ("numcodecs", "zarr", "netCDF4", "h5py", "h5netcdf", "blosc")


def _storage_error(err: BaseException, args: argparse.Namespace) -> str | None:
    """A one-line message for a failure of the storage (disk full, unreadable or corrupt
    data), naming the file; ``None`` for anything else (a bug)."""
    import errno
    import traceback

    try:
        recipe = _load(args)
        source, target = recipe.input.path, recipe.output.path
    except Exception:  # noqa: BLE001 - the recipe was fine a moment ago; name nothing then
        source, target = "the input", "the output"
    full = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    if isinstance(err, OSError) and errno.errorcode.get(err.errno or -1) in STORAGE_ERRNOS:
        if err.filename:
            where = f" ({err.filename})"
        elif err.errno in full:
            where = f" writing {target!r}"
        else:
            where = f" (input {source!r}, output {target!r})"
        hint = ""
        if err.errno in full:
            hint = "; free some space (or choose another output.path) and run the same " \
                   "command again: a region-by-region run resumes where it stopped"
        return f"{err.strerror or err}{where}{hint}"
    frames = traceback.extract_tb(err.__traceback__)
    if not frames or not any(p in frames[-1].filename for p in STORAGE_PACKAGES):
        return None
    reading = any(w in f.name.lower() for f in frames for w in ("decode", "decompress", "getitem"))
    what, name, why = (
        ("reading the input", source, "a chunk or file may be corrupt or truncated") if reading
        else ("writing the output", target, "is the disk full or the quota used up?"))
    return (f"{what} {name!r} failed: {_one_line(err)} ({type(err).__name__} in "
            f"{Path(frames[-1].filename).name}); {why}")


def _one_line(err: BaseException) -> str:
    """The error message; multi-problem recipe errors keep their list."""
    text = str(err).strip() or type(err).__name__
    return text if "problems:\n" in text else " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
