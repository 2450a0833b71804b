"""The FLOP counter against hand-computed numbers and GAN Compression's published 56.8 G MACs."""

from __future__ import annotations

import keras
import pytest
from keras import layers

from effgan.flops import count_flops, count_macs, layer_macs, model_summary
from effgan.layers import ReflectionPad2D, instance_norm


def _small_net() -> keras.Model:
    inner = keras.Sequential([keras.Input((16, 16, 4)), layers.Conv2D(6, 1, name="inner_1x1")])
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", name="conv")(inputs)  # -> 8x8x8
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)  # 8x8x16
    x = layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="tconv")(x)  # 16x16x4
    x = inner(x)  # 16x16x6
    x = layers.Conv2D(8, 3, groups=2, name="grouped")(x)  # valid: 14x14x8
    x = layers.SeparableConv2D(4, 3, padding="same", name="sep")(x)  # 14x14x4
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="dense")(x)
    return keras.Model(inputs, outputs)


# MACs by hand: kernel volume per output position x output positions.
SMALL_NET_MACS = {
    "conv": 3 * 3 * 3 * 8 * (8 * 8),
    "dw": 3 * 3 * 8 * 2 * (8 * 8),
    "tconv": 3 * 3 * 16 * 4 * (16 * 16),  # counted at output resolution, no / stride**2
    "inner_1x1": 1 * 1 * 4 * 6 * (16 * 16),
    "grouped": 3 * 3 * (6 // 2) * 8 * (14 * 14),
    "sep": (3 * 3 * 8 + 8 * 4) * (14 * 14),
    "dense": 4 * 5,
}


@pytest.fixture(scope="module")
def small_net() -> keras.Model:
    return _small_net()


def test_small_net_matches_hand_count(small_net):
    assert count_macs(small_net) == sum(SMALL_NET_MACS.values()) == 239_380
    assert count_flops(small_net) == 2 * 239_380
    for name in ("conv", "dw", "tconv", "grouped", "sep", "dense"):
        assert layer_macs(small_net.get_layer(name)) == SMALL_NET_MACS[name], name
    for free in ("bn", "relu", "pool", "gap"):
        assert layer_macs(small_net.get_layer(free)) == 0


def test_model_summary(small_net):
    summary = model_summary(small_net)
    assert summary["flops"] == count_flops(small_net)
    assert summary["macs"] == summary["flops"] // 2
    assert summary["trainable_params"] == sum(
        keras.ops.size(w) for w in small_net.trainable_weights
    )
    # BatchNorm's moving statistics are weights, not trainable.
    assert summary["total_params"] == summary["trainable_params"] + 2 * 8


def _cyclegan_resnet9_2017(ngf: int = 64, image_size: int = 256) -> keras.Model:
    """pytorch-CycleGAN-and-pix2pix `resnet_9blocks` (ngf 64): the model GAN Compression timed.

    Convs with bias (PyTorch's IN there has no affine, hence the bias); 256-channel blocks.
    """
    inputs = keras.Input((image_size, image_size, 3))
    x = ReflectionPad2D(3)(inputs)
    x = layers.Conv2D(ngf, 7)(x)
    x = instance_norm()(x)
    for mult in (2, 4):
        x = layers.Conv2D(ngf * mult, 3, strides=2, padding="same")(x)
    for _ in range(9):
        skip = x
        for _ in range(2):
            x = ReflectionPad2D(1)(x)
            x = layers.Conv2D(ngf * 4, 3)(x)
        x = layers.Add()([skip, x])
    for mult in (2, 1):
        x = layers.Conv2DTranspose(ngf * mult, 3, strides=2, padding="same")(x)
    x = ReflectionPad2D(3)(x)
    outputs = layers.Conv2D(3, 7, activation="tanh")(x)
    return keras.Model(inputs, outputs)


def test_reproduces_gan_compression_resnet9():
    model = _cyclegan_resnet9_2017()
    summary = model_summary(model)
    assert summary["macs"] == pytest.approx(56.8e9, rel=0.01)
    # 11.4 M in GAN Compression's table (its InstanceNorm has no affine parameters; ours does).
    conv_params = summary["trainable_params"] - 2 * 64
    assert conv_params == pytest.approx(11.4e6, rel=0.01)


def test_unknown_size_is_an_error():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="fixed image size"):
        count_flops(model)


def test_unknown_kernel_layer_is_not_free():
    class Odd(layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 2))

        def call(self, x):
            return keras.ops.matmul(x, self.kernel)

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, Odd(name="odd")(inputs))
    with pytest.raises(NotImplementedError, match="odd"):
        count_flops(model)
