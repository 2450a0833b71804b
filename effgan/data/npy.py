"""Load the thesis's own format: one uint8 (N, H, W, 3) array per domain in a .npy file.

The thesis stored its Coke/Pepsi photos as `train_coke.npy` and `train_pepsi.npy`; the
CycleGAN-style names `trainA.npy`/`trainB.npy` work too. Files are read with
allow_pickle=False: a .npy from elsewhere must not be able to run code.
"""

from __future__ import annotations

import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from effgan.data.base import CycleData, DataError

# Accepted file names per split, first match wins.
NAMES = {
    "train_a": ("trainA.npy", "train_coke.npy"),
    "train_b": ("trainB.npy", "train_pepsi.npy"),
    "test_a": ("testA.npy", "test_coke.npy"),
    "test_b": ("testB.npy", "test_pepsi.npy"),
}


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """Resize a uint8 (N, H, W, 3) stack to (N, size, size, 3), bilinear (area-like when
    shrinking); returned unchanged when already that size."""
    if images.shape[1:3] == (image_size, image_size):
        return images
    out = np.empty((len(images), image_size, image_size, 3), np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image).resize((image_size, image_size), Image.BILINEAR)
        out[i] = np.asarray(pil)
    return out


def _find(root: Path, split: str) -> Path | None:
    return next((root / n for n in NAMES[split] if (root / n).is_file()), None)


def _read(path: Path) -> np.ndarray:
    """Read and validate one array: uint8, (N, H, W, 3), N >= 1."""
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle; also malformed headers
        raise DataError(f"{path}: not a plain numeric .npy array ({exc})") from exc
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: unreadable .npy file ({exc})") from exc
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise DataError(f"{path}: expected a .npy array, got an archive")
    if array.dtype != np.uint8:
        raise DataError(f"{path}: expected dtype uint8 (0..255), got {array.dtype}")
    if array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(f"{path}: expected shape (N, H, W, 3), got {array.shape}")
    if array.shape[0] == 0:
        raise DataError(f"{path}: the array holds no image")
    return array


def load_npy(root: Path, image_size: int) -> CycleData:
    """Load trainA/trainB (or train_coke/train_pepsi) .npy files, optional test arrays.

    Without a test array for a domain, its last 10% of train becomes the test set (warned).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of .npy files")
    arrays: dict[str, np.ndarray] = {}
    for split in ("train_a", "train_b"):
        path = _find(root, split)
        if path is None:
            raise DataError(f"{root}: missing {' or '.join(NAMES[split])}")
        arrays[split] = resize_images(_read(path), image_size)
    for split, train in (("test_a", "train_a"), ("test_b", "train_b")):
        path = _find(root, split)
        if path is not None:
            arrays[split] = resize_images(_read(path), image_size)
            continue
        n = len(arrays[train])
        n_test = max(1, n // 10)
        warnings.warn(
            f"{root}: no {' or '.join(NAMES[split])}; using the last {n_test} of "
            f"{n} training images as the test set",
            stacklevel=2,
        )
        arrays[split] = arrays[train][-n_test:]
        if n > n_test:
            arrays[train] = arrays[train][:-n_test]
    return CycleData(name=root.name or str(root), **arrays)
