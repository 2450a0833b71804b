"""ResNet generators: the thesis's baseline (ch. 4.1) and its depthwise-separable mobile form.

Layout (thesis_facts.md): reflect-pad 3, conv 7x7 64, IN, ReLU; two stride-2 3x3 convs
(64, 128); `n_blocks` residual blocks at 128 channels; two stride-2 upsamplers (64, 3),
each IN + ReLU; reflect-pad 3, conv 7x7 3 with bias, tanh. Only the last conv has a bias.
"""

from __future__ import annotations

import keras
from keras import layers

from effgan.layers import (
    ReflectionPad2D,
    check_upsampling,
    downsampler,
    instance_norm,
    upsampler,
)
from effgan.registry import register_generator


def residual_block(x, name: str, separable: bool = False):
    """Two reflect-padded 3x3 convs with instance norm, added to the input.

    With `separable`, each 3x3 conv becomes depthwise 3x3 -> IN -> pointwise 1x1 (GAN
    Compression's mobile generator).
    """
    channels = x.shape[-1]
    skip = x
    for i in (1, 2):
        x = ReflectionPad2D(1, name=f"{name}_pad{i}")(x)
        if separable:
            x = layers.DepthwiseConv2D(3, use_bias=False, name=f"{name}_dw{i}")(x)
            x = instance_norm(f"{name}_dw{i}_in")(x)
            x = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_pw{i}")(x)
        else:
            x = layers.Conv2D(channels, 3, use_bias=False, name=f"{name}_conv{i}")(x)
        x = instance_norm(f"{name}_in{i}")(x)
        if i == 1:
            x = layers.Activation("relu", name=f"{name}_relu")(x)
    return layers.Add(name=f"{name}_add")([skip, x])


def _resnet(
    image_size: int,
    n_blocks: int,
    filters: int,
    upsampling: str,
    interpolation: str,
    separable: bool,
    name: str,
) -> keras.Model:
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be at least 1 (got {n_blocks})")
    check_upsampling(upsampling, interpolation)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = downsampler(inputs, filters, filters, filters * 2)
    for b in range(n_blocks):
        x = residual_block(x, f"res{b + 1}", separable=separable)
    # The thesis's second upsampler ends in 3 channels (+ IN + ReLU) before the 7x7 head.
    outputs = upsampler(x, filters, 3, upsampling, interpolation)
    return keras.Model(inputs, outputs, name=name)


@register_generator(
    "resnet",
    description="Thesis baseline: CycleGAN ResNet generator, 128-channel residual blocks",
    source="Zhu et al. 2017 (CycleGAN); thesis ch. 4.1",
    family="resnet",
    thesis_method="baseline",
)
def resnet(
    image_size: int = 256,
    n_blocks: int = 9,
    filters: int = 64,
    upsampling: str = "transpose",
    interpolation: str = "nearest",
) -> keras.Model:
    return _resnet(image_size, n_blocks, filters, upsampling, interpolation, False, "resnet")


@register_generator(
    "mobile_resnet",
    description="ResNet baseline with depthwise-separable residual convs",
    source="Li et al. 2020 (GAN Compression), mobile generator",
    family="mobile_resnet",
)
def mobile_resnet(
    image_size: int = 256,
    n_blocks: int = 9,
    filters: int = 64,
    upsampling: str = "transpose",
    interpolation: str = "nearest",
) -> keras.Model:
    return _resnet(image_size, n_blocks, filters, upsampling, interpolation, True, "mobile_resnet")
