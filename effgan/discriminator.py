"""The thesis's PatchGAN discriminator (pix2pix / CycleGAN, thesis ch. 4.1).

conv 4x4 s2 same 64 + LReLU; conv 4x4 s2 valid 128, IN, LReLU; conv 4x4 s2 valid 256, IN,
LReLU; conv 4x4 s1 valid 512, IN, LReLU; conv 4x4 s1 same 1. 256 px -> 27x27 logits.

Below 64 px the three valid convs would shrink the map to nothing, so there they are
same-padded instead (parameter count unchanged); this only serves tiny test runs.
"""

from __future__ import annotations

import keras
from keras import layers

from effgan.layers import instance_norm


def build_discriminator(
    image_size: int = 256, filters: int = 64, name: str = "patchgan"
) -> keras.Model:
    """PatchGAN returning a map of real/fake logits (no sigmoid)."""
    if image_size < 16:
        raise ValueError(f"the PatchGAN needs images of at least 16 px (got {image_size})")
    padding = "valid" if image_size >= 64 else "same"
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Conv2D(filters, 4, 2, padding="same", name="c1_conv")(inputs)
    x = layers.LeakyReLU(0.2, name="c1_lrelu")(x)
    for i, (mult, stride) in enumerate(((2, 2), (4, 2), (8, 1)), start=2):
        x = layers.Conv2D(filters * mult, 4, stride, padding=padding, name=f"c{i}_conv")(x)
        x = instance_norm(f"c{i}_in")(x)
        x = layers.LeakyReLU(0.2, name=f"c{i}_lrelu")(x)
    x = layers.Conv2D(1, 4, 1, padding="same", name="logits_conv")(x)
    outputs = layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
