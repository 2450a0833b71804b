"""Load a CycleGAN-layout folder: trainA/ trainB/ [testA/ testB/] [testA_twin/ ... masks].

Real folders hold junk: truncated downloads, zero-byte files, HTML saved as .jpg, giant images.
Such files are skipped with one warning per folder rather than failing a long run; only a
missing layout or a domain with nothing readable is an error (`DataError`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from effgan.data.base import CycleData, DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
# Our own decompression-bomb limit (about 9500 x 9500), checked from the header before
# decoding, so it holds even if other code changed Image.MAX_IMAGE_PIXELS.
MAX_PIXELS = 90_000_000
LAYOUT = "expected layout: ROOT/trainA/, ROOT/trainB/ and optionally ROOT/testA/, ROOT/testB/"
_SHOWN = 5  # skipped file names listed in a warning


def _image_files(folder: Path) -> list[Path]:
    """Image files in a folder (by extension, not hidden), sorted by name."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block must not cost a readable image."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # EXIF parsing raises many types on bad data
        return im


def read_image(path: Path, image_size: int, mode: str = "RGB") -> np.ndarray:
    """Decode one file to a uint8 (size, size, 3) array, or (size, size) for mode "L".

    Raises whatever the decoder raises; the caller decides to skip. Warnings from the decoder
    are silenced, except that a decompression bomb warning becomes an error.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise Image.DecompressionBombError(
                    f"{im.width}x{im.height} pixels is over the limit of {MAX_PIXELS}"
                )
            if im.format == "JPEG":
                im.draft("RGB", (image_size, image_size))  # decode big JPEGs at reduced scale
            im.load()
            im = _upright(im)
            if mode == "RGB" and im.mode != "RGB":
                # via RGBA so palette transparency is honoured; alpha is then dropped
                im = im.convert("RGBA") if im.mode in ("P", "PA", "LA") else im
                im = im.convert("RGB")
            elif mode == "L" and im.mode != "L":
                im = im.convert("L")
            resample = Image.NEAREST if mode == "L" else Image.BILINEAR
            im = im.resize((image_size, image_size), resample)
            return np.asarray(im, np.uint8).copy()


def _load_domain(
    folder: Path, image_size: int, mode: str = "RGB"
) -> tuple[np.ndarray | None, list[str]]:
    """Read every image in a folder: (stacked array or None if none readable, kept names)."""
    images, names, skipped = [], [], []
    for path in _image_files(folder):
        try:
            images.append(read_image(path, image_size, mode))
            names.append(path.name)
        except Exception as exc:  # any decoder failure means: skip this file
            skipped.append(f"{path.name} ({type(exc).__name__})")
    if skipped:
        shown = ", ".join(skipped[:_SHOWN]) + (", ..." if len(skipped) > _SHOWN else "")
        warnings.warn(f"{folder}: skipped {len(skipped)} unreadable file(s): {shown}", stacklevel=3)
    return (np.stack(images) if images else None), names


def _require_domain(folder: Path, image_size: int) -> tuple[np.ndarray, list[str]]:
    images, names = _load_domain(folder, image_size)
    if images is None:
        raise DataError(
            f"no readable image in {folder} (accepted: {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return images, names


def _split_off_test(
    train: np.ndarray, names: list[str], folder: Path
) -> tuple[np.ndarray, np.ndarray]:
    """No test folder: hold out the last 10% of train (at least one image)."""
    n_test = max(1, len(train) // 10)
    keep = len(train) - n_test if len(train) > n_test else len(train)
    warnings.warn(
        f"{folder} is missing or empty: using the last {n_test} of {len(names)} "
        "training images as the test set",
        stacklevel=3,
    )
    return train[:keep], train[-n_test:]


def _load_twins(
    root: Path, domain: str, names: list[str], image_size: int
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Ground truth for test{domain}: the twin of each kept test image, matched by file name.

    None (with a warning) if any twin is missing or unreadable; masks are optional.
    """
    twin_dir, mask_dir = root / f"test{domain}_twin", root / f"test{domain}_mask"
    try:
        twins = np.stack([read_image(twin_dir / n, image_size) for n in names])
    except Exception as exc:  # ground truth is optional: drop it, say why
        warnings.warn(
            f"{twin_dir}: ground truth not used ({type(exc).__name__}: {exc})", stacklevel=3
        )
        return None
    masks = None
    if mask_dir.is_dir():
        try:
            masks = np.stack([read_image(mask_dir / n, image_size, "L") > 127 for n in names])
        except Exception as exc:  # masks are optional too
            warnings.warn(f"{mask_dir}: masks not used ({type(exc).__name__}: {exc})", stacklevel=3)
    return twins, masks


def load_folder(root: Path, image_size: int) -> CycleData:
    """Load a CycleGAN-layout folder, every image resized to image_size x image_size RGB."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; {LAYOUT}")
    for domain in ("A", "B"):
        if not (root / f"train{domain}").is_dir():
            raise DataError(f"{root / f'train{domain}'} is missing; {LAYOUT}")

    split: dict[str, np.ndarray] = {}
    test_names: dict[str, list[str] | None] = {}
    for domain in ("A", "B"):
        train, train_names = _require_domain(root / f"train{domain}", image_size)
        test_dir = root / f"test{domain}"
        if test_dir.is_dir() and _image_files(test_dir):
            test, test_names[domain] = _require_domain(test_dir, image_size)
        else:
            train, test = _split_off_test(train, train_names, test_dir)
            test_names[domain] = None
        split[f"train_{domain.lower()}"], split[f"test_{domain.lower()}"] = train, test

    truth: dict[str, np.ndarray | None] = {}
    if all((root / f"test{d}_twin").is_dir() and test_names[d] for d in ("A", "B")):
        loaded = {d: _load_twins(root, d, test_names[d], image_size) for d in ("A", "B")}
        if all(loaded.values()):
            for d, (twins, masks) in loaded.items():
                truth[f"test_{d.lower()}_twin"] = twins
                truth[f"test_{d.lower()}_mask"] = masks
    return CycleData(name=root.name or str(root), **split, **truth)
