"""The tf.data training pipeline of the thesis: flip, resize to 286/256, random crop, [-1, 1].

Reproducibility: the shuffle order and every augmentation draw are pure functions of
(seed, epoch, domain, position), independent of TensorFlow's global seed, so a run resumed at
epoch k sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from effgan.data.base import CycleData

_DOMAIN_IDS = {"A": 0, "B": 1}

# Fixed parallelism, autotuner off: with tf.data's autotuner on, tearing down an epoch's
# finished iterator stalled for 4-40 s on this 2-core machine (measured at epoch boundaries),
# time that landed in the next epoch's wall time. A cached in-memory pipeline needs no tuning:
# it still delivers >100x what a training step consumes.
PARALLEL_CALLS = 2
PREFETCH = 2
_OPTIONS = tf.data.Options()
_OPTIONS.autotune.enabled = False


def _seed(seed: int, epoch: int, domain: str) -> int:
    """A 31-bit seed for (seed, epoch, domain); different inputs give unrelated seeds."""
    entropy = [int(seed) & (2**64 - 1), int(epoch), _DOMAIN_IDS[domain]]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


def crop_from(image_size: int) -> int:
    """The size images are resized to before the random crop (the thesis: 286 for 256)."""
    return round(image_size * 286 / 256)


def _domain_dataset(
    images: np.ndarray, image_size: int, batch_size: int, seed: int, epoch: int, domain: str
) -> tf.data.Dataset:
    """One domain: shuffled, augmented, batched."""
    domain_seed = _seed(seed, epoch, domain)
    # Shuffling in numpy rather than Dataset.shuffle: its order would depend on tf's global seed.
    order = np.random.default_rng(domain_seed).permutation(len(images))
    big = crop_from(image_size)

    def augment(index: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
        flip_seed, crop_seed = tf.unstack(
            tf.random.experimental.stateless_split(
                tf.stack([tf.constant(domain_seed, tf.int64), index]), num=2
            )
        )
        x = tf.cast(image, tf.float32)
        x = tf.image.stateless_random_flip_left_right(x, flip_seed)
        x = tf.image.resize(x, [big, big], method="bilinear")
        x = tf.image.stateless_random_crop(x, [image_size, image_size, 3], crop_seed)
        return x / 127.5 - 1.0

    ds = tf.data.Dataset.from_tensor_slices(images[order]).enumerate()
    ds = ds.map(augment, num_parallel_calls=PARALLEL_CALLS, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True)


def train_dataset(
    data: CycleData,
    image_size: int,
    batch_size: int = 1,
    seed: int = 0,
    epoch: int = 0,
    steps: int | None = None,
) -> tf.data.Dataset:
    """One epoch of (a, b) float32 batches in [-1, 1], (batch, size, size, 3) each.

    The epoch stops at the shorter domain (zip), as in the thesis; `steps` cuts it shorter.
    """
    a = _domain_dataset(data.train_a, image_size, batch_size, seed, epoch, "A")
    b = _domain_dataset(data.train_b, image_size, batch_size, seed, epoch, "B")
    ds = tf.data.Dataset.zip(a, b)
    if steps is not None:
        ds = ds.take(steps)
    return ds.prefetch(PREFETCH).with_options(_OPTIONS)


def test_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """Test-time input: resize only (no augmentation), float32 in [-1, 1]."""
    x = tf.convert_to_tensor(np.asarray(images, np.uint8))
    x = tf.cast(x, tf.float32)
    if tuple(x.shape[1:3]) != (image_size, image_size):
        x = tf.image.resize(x, [image_size, image_size], method="bilinear", antialias=True)
    return (x / 127.5 - 1.0).numpy().astype(np.float32)


test_images.__test__ = False  # a library function, not a pytest test despite its name


def to_uint8(x: np.ndarray | tf.Tensor) -> np.ndarray:
    """The inverse of the [-1, 1] scaling, rounded and clipped to uint8."""
    x = np.asarray(x, np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
