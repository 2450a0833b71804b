"""Sample grids: what a person looks at to judge a translation.

Rows per direction: input, translation, cycle (translated back), and the ground-truth twin
when the data has one. Columns: a few fixed test images.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

ROW_LABEL_WIDTH = 72


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip((np.asarray(x, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def grid_image(rows: list[tuple[str, np.ndarray]]) -> Image.Image:
    """Stack labelled rows of float [-1, 1] image batches (N, H, W, 3) into one picture."""
    n, h, w = rows[0][1].shape[:3]
    canvas = Image.new("RGB", (ROW_LABEL_WIDTH + n * w, len(rows) * h), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        draw.text((4, r * h + h // 2 - 6), label, fill="black")
        for c, img in enumerate(_to_uint8(images)):
            canvas.paste(Image.fromarray(img), (ROW_LABEL_WIDTH + c * w, r * h))
    return canvas


def sample_grid(
    gan,
    images_a: np.ndarray,
    images_b: np.ndarray,
    twins_a: np.ndarray | None = None,
    twins_b: np.ndarray | None = None,
) -> Image.Image:
    """Translate float [-1, 1] test images both ways with `gan` (an effgan CycleGAN).

    `twins_a[i]` is the ground truth for translating `images_a[i]` to B, and vice versa.
    """
    rows: list[tuple[str, np.ndarray]] = []
    for tag, images, fwd, back, twins in (
        ("A", images_a, "ab", "ba", twins_a),
        ("B", images_b, "ba", "ab", twins_b),
    ):
        translated = gan.translate(images, fwd)
        rows += [
            (f"{tag} input", images),
            (f"{tag} translated", translated),
            (f"{tag} cycled", gan.translate(translated, back)),
        ]
        if twins is not None:
            rows.append((f"{tag} truth", twins))
    return grid_image(rows)
