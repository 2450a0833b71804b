"""Ground-truth errors of a translation, split into the can ("in") and the rest ("out").

Why: the cans data set renders every test scene in both domains, so a translation can be
scored against the exact image it should have produced, without any pretrained network.
The mask splits the score into "did the style change correctly" (inside the can) and "was
the scene kept" (outside it).

Conventions, shared by every key:
- Images are uint8 (or float in [0, 255]) batches (N, H, W, 3); masks are bool (N, H, W).
- Errors are pooled over all pixels of the region in the whole batch (not per image, then
  averaged), so small regions weigh by their size and one perfect image does not make the
  batch's PSNR infinite.
- PSNR uses max 255 and is capped at `PSNR_CAP` dB (identical regions give the cap, not inf,
  so the value stays loggable).
- SSIM is `tf.image.ssim`'s formula (11x11 Gaussian window, sigma 1.5, k1 0.01, k2 0.03,
  VALID filtering, mean over channels), reimplemented in numpy float64 to get the per-pixel
  map. The map has no value for the 5-pixel border, so the masked SSIM averages the map over
  the mask cropped the same way.
- A region with no pixel (an empty mask, or a mask that lies only in the border for SSIM)
  gives NaN for its keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from effgan.data.base import CycleData

PSNR_CAP = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_MAX = 255.0

Translate = Callable[[np.ndarray], Any]
"""A translation: float32 [-1, 1] batch (N, H, W, 3) -> array-like of the same shape."""


# ----------------------------------------------------------------------------- region metrics


def _as_batch(images: np.ndarray) -> np.ndarray:
    """float64 (N, H, W, C), accepting a single (H, W, C) image."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W, C), got {x.shape}")
    return x


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """tf.image.ssim's window is the outer product of this normalised 1-D Gaussian."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable VALID Gaussian filter over axes 1 and 2 of (N, H, W, C), by shifted sums.

    Shifted sums rather than sliding windows keep memory at a few image copies at any size.
    """
    k = len(g)
    h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
    rows = sum(g[i] * x[:, i : i + h] for i in range(k))
    return sum(g[j] * rows[:, :, j : j + w] for j in range(k))


def ssim_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (N, H - 10, W - 10), averaged over channels, as tf.image.ssim computes it.

    The window shrinks to the image side for images smaller than 11 pixels, as TF would refuse.
    """
    x, y = _as_batch(pred), _as_batch(target)
    size = min(SSIM_WINDOW, x.shape[1], x.shape[2])
    g = _gaussian_1d(size, SSIM_SIGMA)
    c1, c2 = (_SSIM_K1 * _MAX) ** 2, (_SSIM_K2 * _MAX) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    num0 = 2.0 * mu_x * mu_y
    den0 = mu_x**2 + mu_y**2
    luminance = (num0 + c1) / (den0 + c1)
    num1 = 2.0 * _filter_valid(x * y, g)
    den1 = _filter_valid(x * x + y * y, g)
    contrast_structure = (num1 - num0 + c2) / (den1 - den0 + c2)
    return (luminance * contrast_structure).mean(axis=-1)


def _psnr(mse: float) -> float:
    if math.isnan(mse):
        return math.nan
    if mse <= _MAX**2 * 10.0 ** (-PSNR_CAP / 10.0):
        return PSNR_CAP
    return float(10.0 * math.log10(_MAX**2 / mse))


def _region_mean(values: np.ndarray, region: np.ndarray) -> float:
    """Mean of `values` (N, H, W) over a bool region; NaN for an empty region."""
    count = int(region.sum())
    return float(values[region].sum() / count) if count else math.nan


def region_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE ([0, 255] units), PSNR (dB) and SSIM over the whole image, inside and outside `mask`.

    Keys: mae, mae_in, mae_out, psnr, psnr_in, psnr_out, ssim, ssim_in, ssim_out.
    """
    x, y = _as_batch(pred), _as_batch(target)
    if x.shape != y.shape:
        raise ValueError(f"pred {x.shape} and target {y.shape} differ in shape")
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 2:
        m = m[None]
    if m.shape != x.shape[:3]:
        raise ValueError(f"mask {m.shape} does not match images {x.shape[:3]}")

    abs_err = np.abs(x - y).mean(axis=-1)  # per pixel, over channels
    sq_err = ((x - y) ** 2).mean(axis=-1)
    smap = ssim_map(x, y)
    border_h = (x.shape[1] - smap.shape[1]) // 2
    border_w = (x.shape[2] - smap.shape[2]) // 2
    m_valid = m[:, border_h : border_h + smap.shape[1], border_w : border_w + smap.shape[2]]

    out: dict[str, float] = {}
    regions = {"": np.ones_like(m), "_in": m, "_out": ~m}
    for suffix, region in regions.items():
        out[f"mae{suffix}"] = _region_mean(abs_err, region)
        out[f"psnr{suffix}"] = _psnr(_region_mean(sq_err, region))
    valid_regions = {"": np.ones_like(m_valid), "_in": m_valid, "_out": ~m_valid}
    for suffix, region in valid_regions.items():
        out[f"ssim{suffix}"] = _region_mean(smap, region)
    order = [f"{k}{s}" for k in ("mae", "psnr", "ssim") for s in ("", "_in", "_out")]
    return {k: out[k] for k in order}


# ----------------------------------------------------------------------------- translations


def to_model_input(images: np.ndarray, size: int | None = None) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1] (x / 127.5 - 1), resized to `size` if it differs."""
    x = np.asarray(images, dtype=np.float32) / 127.5 - 1.0
    return resize(x, size) if size is not None else x


def to_uint8(outputs: Any) -> np.ndarray:
    """float [-1, 1] -> uint8, clip((y + 1) * 127.5) rounded: the image as it would be saved."""
    y = np.asarray(outputs, dtype=np.float32)
    return np.clip(np.rint((y + 1.0) * 127.5), 0, 255).astype(np.uint8)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float (N, H, W, C) batch to size x size; antialiased when shrinking.

    TF is imported only here, so the metrics of data at the model's size never load it.
    """
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import tensorflow as tf

    shrink = size < images.shape[1] or size < images.shape[2]
    out = tf.image.resize(images, (size, size), method="bilinear", antialias=shrink)
    return out.numpy().astype(images.dtype, copy=False)


def _model_size(translate: Translate) -> int | None:
    """The fixed input side of a Keras model (or its bound method), if the model declares one."""
    owner = getattr(translate, "__self__", translate)
    shape = getattr(owner, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 4 and isinstance(shape[1], int):
        return int(shape[1])
    return None


def run_translation(translate: Translate, x: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Apply `translate` batch by batch to a float32 [-1, 1] array; float32 outputs."""
    if len(x) == 0:
        return np.zeros_like(x, dtype=np.float32)
    outs = [
        np.asarray(translate(x[i : i + batch_size]), dtype=np.float32)
        for i in range(0, len(x), batch_size)
    ]
    y = np.concatenate(outs, axis=0)
    if y.shape != x.shape:
        raise ValueError(f"translation changed the batch shape {x.shape} -> {y.shape}")
    return y


def translate_and_cycle(
    translate: Translate,
    translate_back: Translate,
    images: np.ndarray,
    batch_size: int = 8,
    model_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(translated uint8, cycled-back uint8), both at the data's size.

    The cycle feeds the float output (not the rounded image) back, as in training.
    """
    data_size = images.shape[1]
    size = model_size or data_size
    fake = run_translation(translate, to_model_input(images, size), batch_size)
    back = run_translation(translate_back, fake, batch_size)
    return to_uint8(resize(fake, data_size)), to_uint8(resize(back, data_size))


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def translation_metrics_and_images(
    translate_ab: Translate,
    translate_ba: Translate,
    data: CycleData,
    batch_size: int = 8,
    model_size: int | None = None,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """`translation_metrics`, plus the translated test images (fake B from A, fake A from B).

    Why: the success rate and FID need the same translations; computing them once is cheaper.
    """
    size = model_size or _model_size(translate_ab) or data.image_size
    fake_b, cyc_a = translate_and_cycle(translate_ab, translate_ba, data.test_a, batch_size, size)
    fake_a, cyc_b = translate_and_cycle(translate_ba, translate_ab, data.test_b, batch_size, size)

    metrics: dict[str, float] = {}
    if data.has_ground_truth:
        if data.test_a_mask is None or data.test_b_mask is None:
            raise ValueError(f"data {data.name!r} has twins but no masks")
        runs = {
            "gt": {
                "ab": (fake_b, data.test_a_twin, data.test_a_mask),
                "ba": (fake_a, data.test_b_twin, data.test_b_mask),
            },
            "identity": {
                "ab": (data.test_a, data.test_a_twin, data.test_a_mask),
                "ba": (data.test_b, data.test_b_twin, data.test_b_mask),
            },
        }
        for prefix, directions in runs.items():
            per_dir = {d: region_metrics(*args) for d, args in directions.items()}
            for d, values in per_dir.items():
                metrics.update({f"{prefix}_{d}_{k}": v for k, v in values.items()})
            for k in per_dir["ab"]:
                metrics[f"{prefix}_{k}"] = float((per_dir["ab"][k] + per_dir["ba"][k]) / 2)

    metrics["cycle_mae_a"] = _mae(cyc_a, data.test_a)
    metrics["cycle_mae_b"] = _mae(cyc_b, data.test_b)
    metrics["cycle_mae"] = (metrics["cycle_mae_a"] + metrics["cycle_mae_b"]) / 2
    return metrics, fake_b, fake_a


def translation_metrics(
    translate_ab: Translate,
    translate_ba: Translate,
    data: CycleData,
    batch_size: int = 8,
    model_size: int | None = None,
) -> dict[str, float]:
    """Ground-truth and cycle errors of both translation directions on the test split.

    `translate_*` map float32 [-1, 1] batches to the same (e.g. `model.predict_on_batch`).
    Inputs are resized to `model_size` (default: a Keras model's fixed input side, else the
    data's size) and outputs back to the data's size. Keys, for data with ground truth:
    gt_ab_<m>, gt_ba_<m> and their mean gt_<m>; identity_ab_<m>, identity_ba_<m>, identity_<m>
    (the do-nothing baseline), where <m> is each `region_metrics` key; always cycle_mae_a,
    cycle_mae_b and cycle_mae (A->B->A vs A etc., [0, 255] units).
    """
    metrics, _, _ = translation_metrics_and_images(
        translate_ab, translate_ba, data, batch_size, model_size
    )
    return metrics
