"""Building blocks shared by every generator: reflection padding, instance norm, upsampling.

Instance norm is `GroupNormalization(groups=-1)`: one group per channel, which is exactly
tensorflow-addons' InstanceNormalization (centre and scale, 2*C parameters).
"""

from __future__ import annotations

import keras
from keras import layers

# The one place the instance-norm epsilon is written down (tfa's default was 1e-3).
INSTANCE_NORM_EPSILON = 1e-3

UPSAMPLING_MODES = ("transpose", "resize_conv")
RESIZE_INTERPOLATIONS = ("nearest", "bilinear")

# Kernel/gamma initialiser of the thesis's split generators (N(0, 0.02)).
GAN_INIT_STDDEV = 0.02


@keras.saving.register_keras_serializable(package="effgan")
class ReflectionPad2D(layers.Layer):
    """Pads height and width by mirroring the border (no learnable weights)."""

    def __init__(self, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, x):
        p = self.padding
        return keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        p = 2 * self.padding
        return (n, None if h is None else h + p, None if w is None else w + p, c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


def instance_norm(name: str | None = None, gamma_init: str | keras.Initializer = "ones"):
    """Instance normalisation as GroupNormalization with one group per channel."""
    return layers.GroupNormalization(
        groups=-1, epsilon=INSTANCE_NORM_EPSILON, gamma_initializer=gamma_init, name=name
    )


def check_upsampling(mode: str, interpolation: str = "nearest") -> None:
    """Raise a clear error for an unknown upsampling mode or interpolation."""
    if mode not in UPSAMPLING_MODES:
        raise ValueError(
            f"unknown upsampling mode {mode!r}; choose one of {', '.join(UPSAMPLING_MODES)}"
        )
    if interpolation not in RESIZE_INTERPOLATIONS:
        raise ValueError(
            f"unknown resize interpolation {interpolation!r}; "
            f"choose one of {', '.join(RESIZE_INTERPOLATIONS)}"
        )


def upsample(
    x,
    filters: int,
    *,
    kernel_size: int = 3,
    strides: int = 2,
    mode: str = "transpose",
    interpolation: str = "nearest",
    use_bias: bool = False,
    kernel_initializer: str | keras.Initializer = "glorot_uniform",
    name: str,
):
    """Double (or `strides`-fold) the resolution.

    `transpose` is the thesis's transpose convolution; `resize_conv` resizes then applies a
    3x3 convolution, which avoids the checkerboard artefacts the thesis reported (ch. 5.2).
    """
    check_upsampling(mode, interpolation)
    if mode == "transpose":
        return layers.Conv2DTranspose(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            name=f"{name}_tconv",
        )(x)
    x = layers.UpSampling2D(size=strides, interpolation=interpolation, name=f"{name}_resize")(x)
    return layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=kernel_initializer,
        name=f"{name}_conv",
    )(x)
