"""Evaluation metrics for CycleGAN translations: ground truth, success rate, FID/KID.

- `groundtruth`: MAE / PSNR / SSIM against the exact twin, inside and outside the can mask,
  the do-nothing baseline, and the cycle error.
- `classifier`: share of translations a held-out A-vs-B classifier takes for the target.
- `fid`: FID and KID with the standard Inception weights, computed in a child process.

Names are imported lazily (PEP 562), so `python -m effgan.metrics._fid_worker` and
`from effgan.metrics import compute_fid_kid` load neither TensorFlow nor Keras.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from effgan.data.base import CycleData
    from effgan.metrics.classifier import success_rate
    from effgan.metrics.fid import compute_fid_kid, fid_available
    from effgan.metrics.groundtruth import Translate, region_metrics, translation_metrics

__all__ = [
    "compute_fid_kid",
    "evaluate_all",
    "fid_available",
    "region_metrics",
    "success_rate",
    "translation_metrics",
]

_LAZY = {
    "region_metrics": "effgan.metrics.groundtruth",
    "translation_metrics": "effgan.metrics.groundtruth",
    "success_rate": "effgan.metrics.classifier",
    "compute_fid_kid": "effgan.metrics.fid",
    "fid_available": "effgan.metrics.fid",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def evaluate_all(
    translate_ab: Translate,
    translate_ba: Translate,
    data: CycleData,
    fid: bool = True,
    inception_weights: str | Path | None = None,
    batch_size: int = 8,
    model_size: int | None = None,
) -> dict[str, float | str]:
    """Every metric of one generator pair on the test split, as one flat dict ready to log.

    Translates the test images once, then: `translation_metrics` keys; for data with ground
    truth (cans) the success-rate keys; with `fid`, the FID/KID keys (strings saying how to
    install the extra when it is missing).
    """
    from effgan.metrics.classifier import success_rate
    from effgan.metrics.fid import compute_fid_kid
    from effgan.metrics.groundtruth import translation_metrics_and_images

    metrics, fake_b, fake_a = translation_metrics_and_images(
        translate_ab, translate_ba, data, batch_size, model_size
    )
    out: dict[str, float | str] = dict(metrics)
    if data.has_ground_truth:
        out.update(success_rate(fake_b, fake_a))
    if fid:
        out.update(
            compute_fid_kid(
                fake_b,
                data.test_b,
                fake_a,
                data.test_a,
                cache_key=f"{data.name}_test",
                inception_weights=inception_weights,
            )
        )
    return out
