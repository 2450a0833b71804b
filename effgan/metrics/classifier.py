"""Translation success rate: how often a domain classifier takes a translation for its target.

Why a classifier of our own: no pretrained network knows "cola can" from "pepsi can", and the
cans renderer can make as many labelled images as we want. The classifier is a small Keras CNN
trained once on freshly rendered scenes from seeds the benchmark never uses (render_pairs
seeds 10_000 to 10_003: two for training, two held out). Each scene is rendered in both
domains, so background, pose, lighting and occluders carry no label: only the label texture
does. Part of each set is rendered at twice the size and resized, as larger inputs will be.

It is cached on disk (`<cache>/classifier/cans_64_v2_r<render version>.weights.h5` plus a
.json with its held-out accuracy, seeds and training setup, where <cache> is `$EFFGAN_CACHE`
or ~/.cache/effgan) and reused. Every load re-checks the held-out accuracy; below
`ACCURACY_BAR` it raises `ClassifierError` instead of scoring with a bad classifier.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effgan.metrics.fid import cache_root

CLASSIFIER_SIZE = 64
CLASSIFIER_VERSION = 2
TRAIN_SEED = 10_000  # render_pairs seeds 10_000+ are reserved for the classifier
VAL_SEED = 10_001
RESIZED_SEED = 10_002  # scenes rendered at twice the size, then resized like inputs will be
RESIZED_VAL_SEED = 10_003
N_TRAIN_SCENES = 256
N_RESIZED_SCENES = 64
N_VAL_SCENES = 100
EPOCHS = 12
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
ACCURACY_BAR = 0.99


class ClassifierError(RuntimeError):
    """The domain classifier misses its accuracy bar: its success rates would mean nothing."""


def _render_version() -> int:
    from effgan.data import cans

    return int(getattr(cans, "RENDER_VERSION", 0))


def _labelled_pairs(
    n: int, size: int, seed: int, render_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Both renders of n scenes as float32 [-1, 1] at `size`, labels 0 = A, 1 = B."""
    from effgan.data.cans import render_pairs

    images_a, images_b, _ = render_pairs(n, render_size or size, seed)
    x = prepare(np.concatenate([images_a, images_b]), size)
    y = np.concatenate([np.zeros(n), np.ones(n)]).astype(np.float32)
    return x, y


def prepare(images: np.ndarray, size: int = CLASSIFIER_SIZE) -> np.ndarray:
    """uint8 images of any size -> float32 [-1, 1] at the classifier's size."""
    from effgan.metrics.groundtruth import to_model_input

    return to_model_input(images, size)


def _validation_set(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out scenes: native renders plus renders at twice the size resized down."""
    x1, y1 = _labelled_pairs(N_VAL_SCENES, size, VAL_SEED)
    x2, y2 = _labelled_pairs(N_VAL_SCENES // 2, size, RESIZED_VAL_SEED, render_size=2 * size)
    return np.concatenate([x1, x2]), np.concatenate([y1, y2])


def _render_fingerprint(size: int) -> str:
    """A hash of two reference renders: a changed renderer invalidates the cached classifier."""
    from effgan.data.cans import render_pairs

    images_a, images_b, _ = render_pairs(2, size, TRAIN_SEED)
    return hashlib.sha1(images_a.tobytes() + images_b.tobytes()).hexdigest()[:16]


def build_model(size: int = CLASSIFIER_SIZE) -> Any:
    """Four 3x3 convs with max pooling and one logit (B vs A): ~60k weights, seconds to train.

    Global max pooling rather than average: the label is a small part of the image, and an
    average lets a blue background pass for a blue can.
    """
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.GlobalMaxPooling2D()(x)
    outputs = layers.Dense(1)(x)
    return keras.Model(inputs, outputs, name="cans_domain_classifier")


@dataclass
class DomainClassifier:
    """A trained A-vs-B classifier and what is known about it (its .json record)."""

    model: Any
    accuracy: float
    info: dict[str, Any] = field(default_factory=dict)
    size: int = CLASSIFIER_SIZE

    def prob_b(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """P(domain B) for uint8 images (N, H, W, 3) of any size."""
        if len(images) == 0:
            return np.zeros((0,), np.float32)
        x = prepare(images, self.size)
        logits = np.concatenate(
            [
                np.asarray(self.model(x[i : i + batch_size], training=False)).reshape(-1)
                for i in range(0, len(x), batch_size)
            ]
        )
        return 1.0 / (1.0 + np.exp(-logits))

    def predict_b(self, images: np.ndarray) -> np.ndarray:
        """True where an image is classified as domain B."""
        return self.prob_b(images) > 0.5


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    logits = np.asarray(model.predict(x, batch_size=128, verbose=0)).reshape(-1)
    return float(((logits > 0) == (y > 0.5)).mean())


def _paths(cache_dir: Path, size: int) -> tuple[Path, Path]:
    stem = f"cans_{size}_v{CLASSIFIER_VERSION}_r{_render_version()}"
    folder = cache_dir / "classifier"
    return folder / f"{stem}.weights.h5", folder / f"{stem}.json"


def _setup(size: int) -> dict[str, Any]:
    """What defines a classifier: a cached one is reused only if all of this matches."""
    return {
        "size": size,
        "version": CLASSIFIER_VERSION,
        "render_version": _render_version(),
        "render_fingerprint": _render_fingerprint(size),
        "train_seed": TRAIN_SEED,
        "resized_seed": RESIZED_SEED,
        "val_seed": VAL_SEED,
        "resized_val_seed": RESIZED_VAL_SEED,
        "n_train_scenes": N_TRAIN_SCENES,
        "n_resized_scenes": N_RESIZED_SCENES,
        "n_val_scenes": N_VAL_SCENES,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
    }


def train_classifier(size: int = CLASSIFIER_SIZE) -> tuple[Any, float, float]:
    """Train from scratch, deterministically: (model, held-out accuracy, seconds)."""
    import keras

    start = time.perf_counter()
    keras.utils.set_random_seed(TRAIN_SEED)
    x1, y1 = _labelled_pairs(N_TRAIN_SCENES, size, TRAIN_SEED)
    x2, y2 = _labelled_pairs(N_RESIZED_SCENES, size, RESIZED_SEED, render_size=2 * size)
    x, y = np.concatenate([x1, x2]), np.concatenate([y1, y2])
    model = build_model(size)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=True, verbose=0)
    accuracy = _accuracy(model, *_validation_set(size))
    return model, accuracy, time.perf_counter() - start


def _write_atomic(path: Path, write: Any) -> None:
    """Write through a temp file in the same folder and rename: no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(weights: Path, record: Path, setup: dict[str, Any], size: int) -> Any | None:
    """The cached model if its record matches `setup`, else None (then retrain)."""
    try:
        info = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not weights.is_file() or any(info.get(k) != v for k, v in setup.items()):
        return None
    model = build_model(size)
    try:
        model.load_weights(weights)
    except (OSError, ValueError):
        return None
    return model


@functools.lru_cache(maxsize=4)
def _get(size: int, cache_dir: str, retrain: bool) -> DomainClassifier:
    weights, record = _paths(Path(cache_dir), size)
    setup = _setup(size)
    model = None if retrain else _load_cached(weights, record, setup, size)
    if model is not None:
        accuracy = _accuracy(model, *_validation_set(size))
        info = {**json.loads(record.read_text()), "accuracy": accuracy}
    else:
        model, accuracy, seconds = train_classifier(size)
        import keras

        info = {
            **setup,
            "accuracy": accuracy,
            "train_seconds": round(seconds, 2),
            "keras_version": keras.__version__,
        }
        if accuracy >= ACCURACY_BAR:
            try:
                _write_atomic(weights, model.save_weights)
                _write_atomic(record, lambda p: Path(p).write_text(json.dumps(info, indent=2)))
            except OSError:
                pass  # a read-only cache only costs retraining next time
    if accuracy < ACCURACY_BAR:
        raise ClassifierError(
            f"cans domain classifier reaches {accuracy:.3f} held-out accuracy, below the "
            f"{ACCURACY_BAR} bar: its success rates would be meaningless"
        )
    return DomainClassifier(model=model, accuracy=accuracy, info=info, size=size)


def get_classifier(
    size: int = CLASSIFIER_SIZE, cache_dir: str | Path | None = None, retrain: bool = False
) -> DomainClassifier:
    """The cached classifier (trained on first use, ~10-60 s); raises ClassifierError if bad."""
    return _get(size, str(Path(cache_dir) if cache_dir else cache_root()), retrain)


def _share(flags: np.ndarray) -> float:
    return float(np.mean(flags)) if len(flags) else float("nan")


def success_rate(
    translated_to_b: np.ndarray,
    translated_to_a: np.ndarray,
    classifier: DomainClassifier | None = None,
) -> dict[str, float]:
    """Share of A->B outputs classified as B (success_ab), of B->A as A (success_ba), mean.

    Also returns the classifier's held-out accuracy (classifier_accuracy), so a report shows
    how far the rates can be trusted.
    """
    clf = classifier or get_classifier()
    success_ab = _share(clf.predict_b(translated_to_b))
    success_ba = _share(~clf.predict_b(translated_to_a))
    return {
        "success_ab": success_ab,
        "success_ba": success_ba,
        "success": (success_ab + success_ba) / 2,
        "classifier_accuracy": clf.accuracy,
    }
