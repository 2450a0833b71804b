"""CycleGAN losses as in the thesis (ch. 3.2): adversarial, cycle (L1) and identity (L1).

The thesis adds the TOTAL cycle loss of both directions to each generator's loss; we follow it.
"""

from __future__ import annotations

import tensorflow as tf

ADVERSARIAL_LOSSES = ("bce", "lsgan")


def check_loss(kind: str) -> None:
    if kind not in ADVERSARIAL_LOSSES:
        raise ValueError(f"unknown adversarial loss {kind!r}; choose one of {ADVERSARIAL_LOSSES}")


def _adversarial(logits: tf.Tensor, target: float, kind: str) -> tf.Tensor:
    logits = tf.cast(logits, tf.float32)
    labels = tf.fill(tf.shape(logits), target)
    if kind == "bce":  # vanilla GAN: binary cross-entropy on logits
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
    return tf.reduce_mean(tf.square(logits - labels))  # LSGAN


def generator_adversarial_loss(fake_logits: tf.Tensor, kind: str = "bce") -> tf.Tensor:
    """The generator wants the discriminator to call its output real."""
    return _adversarial(fake_logits, 1.0, kind)


def discriminator_loss(
    real_logits: tf.Tensor, fake_logits: tf.Tensor, kind: str = "bce"
) -> tf.Tensor:
    """0.5 x (real + fake), as in the thesis."""
    return 0.5 * (_adversarial(real_logits, 1.0, kind) + _adversarial(fake_logits, 0.0, kind))


def l1(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))
