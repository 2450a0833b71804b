"""One entry point for every data source, so the CLI and benchmarks take a single string."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effgan.data.base import CycleData, DataError
from effgan.data.cans import load_cans
from effgan.data.folder import load_folder
from effgan.data.npy import NAMES, load_npy

ACCEPTED = (
    "accepted data sources: 'cans' (the procedural cans); a folder with trainA/ and trainB/ "
    "(CycleGAN layout); a folder with trainA.npy and trainB.npy (or train_coke.npy and "
    "train_pepsi.npy)"
)


def load_data(source: str | Path, image_size: int, seed: int = 0, **cans_options: Any) -> CycleData:
    """Load `source`: "cans", a CycleGAN-layout folder, or a folder of .npy arrays.

    `seed` and `cans_options` (n_train_a, n_train_b, n_test, cache_dir) only apply to cans.
    """
    if isinstance(source, str) and source.strip().lower() == "cans":
        return load_cans(image_size=image_size, seed=seed, **cans_options)
    root = Path(source).expanduser()
    if not root.exists():
        raise DataError(f"{root} does not exist; {ACCEPTED}")
    if root.is_dir() and (root / "trainA").is_dir():
        return load_folder(root, image_size)
    npy_names = [n for split in ("train_a", "train_b") for n in NAMES[split]]
    if root.is_dir() and any((root / n).is_file() for n in npy_names):
        return load_npy(root, image_size)
    raise DataError(f"{root} is not a recognised data source; {ACCEPTED}")
