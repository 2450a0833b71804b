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


# ---- the sampler shared by the ResNet, split-EfficientNet and EffGAN generators ----------
def gan_init() -> keras.Initializer:
    """N(0, 0.02), a new instance per layer (one unseeded instance would repeat its values)."""
    return keras.initializers.RandomNormal(0.0, GAN_INIT_STDDEV)


def conv_in_relu(
    x, filters: int, kernel: int, strides: int, name: str, pad: int = 0, gan_weights: bool = False
):
    """(reflect pad) conv without bias, instance norm, ReLU.

    `gan_weights` draws the kernel and the norm's gamma from N(0, 0.02), as the thesis's
    split generators did (the version that gave 622,305 parameters).
    """
    if pad:
        x = ReflectionPad2D(pad, name=f"{name}_pad")(x)
    x = layers.Conv2D(
        filters,
        kernel,
        strides,
        padding="valid" if pad else "same",
        use_bias=False,
        kernel_initializer=gan_init() if gan_weights else "glorot_uniform",
        name=f"{name}_conv",
    )(x)
    x = instance_norm(f"{name}_in", gamma_init=gan_init() if gan_weights else "ones")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def downsampler(x, stem: int, down1: int, down2: int, gan_weights: bool = False):
    """Reflect-padded 7x7 stem, then two stride-2 3x3 convs: s x s x 3 -> s/4 x s/4 x down2."""
    x = conv_in_relu(x, stem, 7, 1, "stem", pad=3, gan_weights=gan_weights)
    x = conv_in_relu(x, down1, 3, 2, "down1", gan_weights=gan_weights)
    return conv_in_relu(x, down2, 3, 2, "down2", gan_weights=gan_weights)


def upsampler(
    x,
    up1: int,
    up2: int,
    mode: str = "transpose",
    interpolation: str = "nearest",
    gan_weights: bool = False,
):
    """Two x2 upsamplers (each IN + ReLU), reflect-padded 7x7 conv to RGB, tanh (float32)."""
    for i, filters in enumerate((up1, up2), start=1):
        init = gan_init() if gan_weights else "glorot_uniform"
        x = upsample(
            x,
            filters,
            mode=mode,
            interpolation=interpolation,
            kernel_initializer=init,
            name=f"up{i}",
        )
        x = instance_norm(f"up{i}_in", gamma_init=gan_init() if gan_weights else "ones")(x)
        x = layers.Activation("relu", name=f"up{i}_relu")(x)
    x = ReflectionPad2D(3, name="head_pad")(x)
    x = layers.Conv2D(3, 7, name="head_conv")(x)
    return layers.Activation("tanh", name="head_tanh", dtype="float32")(x)
