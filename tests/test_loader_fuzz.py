"""Fuzz load_folder with junk files: each is skipped with a warning or ends in a DataError.

Nothing else may escape (no PIL exception, no hang, no memory blow-up from a huge header).
"""

from __future__ import annotations

import io
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from effgan.data import CycleData, DataError, load_folder
from effgan.data.folder import read_image

EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG"]


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


VALID = {"png": _encoded("PNG"), "jpeg": _encoded("JPEG")}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int) -> bytes:
    """A well-formed PNG header claiming width x height RGB pixels, with almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))  # fmt: skip


@st.composite
def junk_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """(extension, content) for one hostile file."""
    kind = draw(st.sampled_from(["random", "truncated", "empty", "wrong_ext", "huge"]))
    ext = draw(st.sampled_from(EXTENSIONS))
    if kind == "random":
        return ext, draw(st.binary(min_size=1, max_size=300))
    if kind == "truncated":
        data = VALID[draw(st.sampled_from(sorted(VALID)))]
        return ext, data[: draw(st.integers(0, len(data) - 1))]
    if kind == "empty":
        return ext, b""
    if kind == "wrong_ext":  # text or HTML saved under an image name
        return ext, draw(st.sampled_from([b"<html>404 Not Found</html>", b"hello\n" * 20]))
    size = draw(st.sampled_from([(100_000, 100_000), (12_000, 9_000), (4_000, 4_000),
                                 (1, 300_000), (0, 10)]))  # fmt: skip
    return ext, huge_png(*size)


def _readable(path: Path) -> bool:
    """The oracle: can this one file be decoded on its own?"""
    try:
        read_image(path, 32)
        return True
    except Exception:
        return False


def _check(root: Path) -> None:
    """Load; unreadable files must be named in a warning, no readable file -> DataError."""
    files = sorted((root / "trainA").iterdir())
    bad = [p.name for p in files if not _readable(p)]
    n_good = len(files) - len(bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if n_good == 0:
            with pytest.raises(DataError, match="trainA"):
                load_folder(root, 32)
            return
        data = load_folder(root, 32)  # any exception but DataError fails the test
    assert isinstance(data, CycleData)
    messages = " ".join(str(w.message) for w in caught)
    for name in bad:  # at most 4 junk files: all of them are listed
        assert name in messages
    # no testA/: one held-out test image; a single image serves as both train and test
    assert len(data.train_a) + len(data.test_a) == (n_good if n_good > 1 else 2)


# database=None: no .hypothesis/ folder left in the checkout
@settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(junk=st.lists(junk_file(), min_size=1, max_size=4), with_valid=st.booleans())
def test_load_folder_survives_junk(junk: list[tuple[str, bytes]], with_valid: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "trainA").mkdir()
        (root / "trainB").mkdir()
        (root / "trainB" / "ok.png").write_bytes(VALID["png"])
        if with_valid:
            (root / "trainA" / "ok.png").write_bytes(VALID["png"])
        for i, (ext, content) in enumerate(junk):
            (root / "trainA" / f"junk{i}{ext}").write_bytes(content)
        _check(root)


@pytest.mark.parametrize("size", [(100_000, 100_000), (12_000, 9_000)])
def test_decompression_bomb_header_is_skipped(tmp_path: Path, size: tuple[int, int]) -> None:
    for sub in ("trainA", "trainB"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "ok.png").write_bytes(VALID["png"])
    (tmp_path / "trainA" / "bomb.png").write_bytes(huge_png(*size))
    with pytest.warns(UserWarning) as record:
        data = load_folder(tmp_path, 32)
    assert any("bomb.png (DecompressionBomb" in str(w.message) for w in record)
    assert len(data.train_a) + len(data.test_a) >= 1
