"""EffGAN: a CycleGAN generator built natively from MBConv blocks, scaled like EfficientNet.

The thesis's future work (ch. 5.2) asks for EfficientNet's compound scaling applied to a
custom generator instead of borrowing a classifier's layers. This is that: the ResNet
baseline's layout (reflect-pad 7x7 stem, two stride-2 3x3 convs, a block stack at s/4, two
stride-2 upsamplers, reflect-pad 7x7 head with tanh) with MBConv blocks in the stack
(1x1 expansion, IN, swish; depthwise kxk, IN, swish; squeeze-excite; 1x1 projection, IN;
residual add). Instance norm replaces EfficientNet's batch norm everywhere, as usual for
image translation at batch 1.

Compound scaling (Tan & Le 2019): for coefficient `phi`, depth (blocks per row of
DEFAULT_BLOCKS_ARGS) is multiplied by ALPHA**phi and rounded up like EfficientNet's
`round_repeats`; every width (BASE_WIDTHS) by BETA**phi and rounded to a multiple of 8 like
`round_filters`. ALPHA = 1.2 and BETA = 1.1 are EfficientNet's constants; its resolution
factor (gamma = 1.15) is not used, since a generator's resolution is the data's, so FLOPs grow
about ALPHA * BETA**2 = 1.45x per step of phi.

Base network (phi = 0, effgan_b0): stem 32, down 64 then 64, 4 MBConv blocks at 64 channels
(one 3x3, three 5x5; expand 6, SE 0.25), up 64 then 32, head 3. phi = 0..3 give
4/6/7/8 blocks at 64/72/80/88 channels.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from effgan.layers import check_upsampling, downsampler, instance_norm, upsampler
from effgan.registry import register_generator

ALPHA = 1.2  # depth coefficient
BETA = 1.1  # width coefficient
DEPTH_DIVISOR = 8

# Widths of the base network (phi = 0), before scaling.
BASE_WIDTHS = {"stem": 32, "down1": 64, "blocks": 64, "up1": 64, "up2": 32}

# The MBConv stack at s/4, one row per stage (all at the "blocks" width, so every block has
# its residual). Repeats are scaled by ALPHA**phi.
DEFAULT_BLOCKS_ARGS = (
    {"kernel_size": 3, "repeats": 1},
    {"kernel_size": 5, "repeats": 3},
)


def round_filters(filters: float, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Scale a width and round it to a multiple of `divisor`, never more than 10% down."""
    filters *= width
    new_filters = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new_filters < 0.9 * filters:
        new_filters += divisor
    return int(new_filters)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a number of blocks, rounding up."""
    return int(math.ceil(depth * repeats))


def scaled_config(phi: int) -> tuple[dict[str, int], list[dict[str, int]]]:
    """The widths and block rows of EffGAN-B`phi`."""
    widths = {k: round_filters(v, BETA**phi) for k, v in BASE_WIDTHS.items()}
    rows = [
        {**row, "repeats": round_repeats(row["repeats"], ALPHA**phi)} for row in DEFAULT_BLOCKS_ARGS
    ]
    return widths, rows


def _conv_init() -> keras.Initializer:
    # EfficientNet's conv initialiser; a new instance per layer (unseeded instances repeat).
    return keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")


def mbconv_block(
    x, kernel_size: int, expand_ratio: int, se_ratio: float, name: str, activation="swish"
):
    """Inverted residual block with squeeze-excite, instance norm, same width in and out."""
    filters_in = x.shape[-1]
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = layers.Conv2D(
            filters, 1, use_bias=False, kernel_initializer=_conv_init(), name=f"{name}_expand"
        )(x)
        x = instance_norm(f"{name}_expand_in")(x)
        x = layers.Activation(activation, name=f"{name}_expand_act")(x)
    x = layers.DepthwiseConv2D(
        kernel_size,
        padding="same",
        use_bias=False,
        depthwise_initializer=_conv_init(),
        name=f"{name}_dwconv",
    )(x)
    x = instance_norm(f"{name}_dw_in")(x)
    x = layers.Activation(activation, name=f"{name}_dw_act")(x)
    if se_ratio > 0:
        filters_se = max(1, int(filters_in * se_ratio))
        se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(x)
        se = layers.Conv2D(
            filters_se,
            1,
            activation=activation,
            kernel_initializer=_conv_init(),
            name=f"{name}_se_reduce",
        )(se)
        se = layers.Conv2D(
            filters,
            1,
            activation="sigmoid",
            kernel_initializer=_conv_init(),
            name=f"{name}_se_expand",
        )(se)
        x = layers.Multiply(name=f"{name}_se_excite")([x, se])
    x = layers.Conv2D(
        filters_in, 1, use_bias=False, kernel_initializer=_conv_init(), name=f"{name}_project"
    )(x)
    x = instance_norm(f"{name}_project_in")(x)
    return layers.Add(name=f"{name}_add")([inputs, x])


def effgan(
    image_size: int = 256,
    phi: int = 0,
    upsampling: str = "transpose",
    interpolation: str = "nearest",
    expand_ratio: int = 6,
    se_ratio: float = 0.25,
) -> keras.Model:
    """EffGAN-B`phi`: the MBConv generator at compound-scaling step `phi` (see module doc)."""
    if not isinstance(phi, int) or phi < 0:
        raise ValueError(f"phi must be a non-negative integer (got {phi!r})")
    if not isinstance(expand_ratio, int) or expand_ratio < 1:
        raise ValueError(f"expand_ratio must be an integer >= 1 (got {expand_ratio!r})")
    if not 0 <= se_ratio <= 1:
        raise ValueError(f"se_ratio must be in [0, 1] (got {se_ratio!r})")
    check_upsampling(upsampling, interpolation)
    widths, rows = scaled_config(phi)

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = downsampler(inputs, widths["stem"], widths["down1"], widths["blocks"])
    b = 0
    for row in rows:
        for _ in range(row["repeats"]):
            b += 1
            x = mbconv_block(x, row["kernel_size"], expand_ratio, se_ratio, name=f"mb{b}")
    outputs = upsampler(x, widths["up1"], widths["up2"], upsampling, interpolation)
    return keras.Model(inputs, outputs, name=f"effgan_b{phi}")


for _phi in range(4):
    _widths, _rows = scaled_config(_phi)
    register_generator(
        f"effgan_b{_phi}",
        description=(
            f"Native MBConv generator, compound scaling phi={_phi}: "
            f"{sum(r['repeats'] for r in _rows)} blocks at {_widths['blocks']} channels"
        ),
        source="Tan & Le 2019 (EfficientNet MBConv + compound scaling); thesis ch. 5.2",
        family="effgan",
        size_multiple=4,
        phi=_phi,
    )(effgan)
del _phi, _widths, _rows
