"""The thesis's EfficientNet-B3 generators (ch. 4.2-4.4), on `keras.applications.EfficientNetB3`.

- `efficientnet_b3_full` (Method I): the whole B3 without top as encoder (s -> s/32, 1536
  channels) and a transpose-conv / max-pool decoder back to s. 21,287,998 trainable at 256 px.
- `efficientnet_split_v1` (Method II) and `efficientnet_split_v2` (Method III): ResNet-style
  down/upsamplers around `n_blocks` copies of one slice of B3 (`block2a_bn` through
  `block3a_expand_activation`, 144 -> 192 channels at s/4) each followed by a 1x1 back to 144.
  V1 rebuilds the slice layer by layer; V2 cuts it out of the model config with
  `split_model`. Same function, same 622,305 trainable parameters at 256 px.

Inputs are images in [-1, 1] (the project's convention). keras.applications' B3 starts with
Rescaling(1/255) + Normalization and expects [0, 255]; Method I therefore maps [-1, 1] to
[0, 255] first, so pretrained weights see the inputs they were trained on. The split blocks
start after B3's stem, so they need no such mapping.

Nothing is downloaded: `weights=None` initialises at random; a path loads a local
keras.applications EfficientNetB3 `include_top=False` weights file (`.weights.h5`, or the
legacy `efficientnetb3_notop.h5` that `weights="imagenet"` would have fetched).
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from collections.abc import Iterator
from typing import Any

import h5py
import keras
import numpy as np
from keras import layers

from effgan.layers import (
    check_upsampling,
    downsampler,
    instance_norm,
    upsample,
    upsampler,
)
from effgan.registry import register_generator

# The slice of B3 the thesis stacked (by name: keras.applications' layer indices differ from
# the `efficientnet` package's 30..71). It starts after block2a's strided depthwise conv, so
# no `*_dwconv_pad` lies inside it and it keeps the resolution.
B3_SLICE = ("block2a_bn", "block3a_expand_activation")
SPLIT_CHANNELS = 144  # the slice's input width: block2a's expanded channels

# keras.applications' B3 weight files store the ImageNet std-devs as the Normalization
# *variance* (tensorflow/tensorflow#49930); `weights="imagenet"` compensates with an extra
# Rescaling. Loading the same file from a path skips that, so we square the variance instead.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

# Method I decoder, one row per stage. `transpose`: the thesis's Conv2DTranspose (valid) and
# max-pool (2x2 with `pool_strides`, none after the last); n -> 2n -> 2n-1 -> 8n -> 4n -> 16n
# -> 8n -> 32n. `resize`: the factor of the resize-conv variant, same widths, x32 overall.
B3_DECODER_ARGS = (
    {"filters": 640, "kernel_size": 2, "strides": 2, "pool_strides": 1, "resize": 2},
    {"filters": 160, "kernel_size": 8, "strides": 4, "pool_strides": 2, "resize": 4},
    {"filters": 40, "kernel_size": 4, "strides": 4, "pool_strides": 2, "resize": 2},
    {"filters": 3, "kernel_size": 4, "strides": 4, "pool_strides": None, "resize": 2},
)

_B3_WEIGHTS_HINT = (
    "it needs a keras.applications EfficientNetB3 include_top=False weights file "
    "('.weights.h5' saved from EfficientNetB3(include_top=False), or the legacy "
    "'efficientnetb3_notop.h5')"
)


# ---------------------------------------------------------------------------------------------
# Source model and weights
# ---------------------------------------------------------------------------------------------


def _check_weights_path(weights: str | os.PathLike | None) -> None:
    """Fail before any model is built: a missing or non-HDF5 file should not cost a B3 build."""
    if weights is None:
        return
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            f"EfficientNetB3 weights file not found: {os.fspath(weights)!r} (use weights=None "
            "for random initialisation; nothing is downloaded)"
        )
    if not h5py.is_hdf5(weights):
        raise ValueError(
            f"cannot read {os.fspath(weights)!r}: not an HDF5 file; {_B3_WEIGHTS_HINT}"
        )


def b3_normalization(model: keras.Model) -> keras.layers.Normalization:
    """B3's input Normalization layer (keras.applications leaves it unnamed: normalization_N)."""
    return next(layer for layer in model.layers if isinstance(layer, layers.Normalization))


def load_b3_weights(model: keras.Model, weights: str | os.PathLike) -> None:
    """Load a local B3 no-top weights file into `model`, with errors that say what is wanted."""
    _check_weights_path(weights)
    path = os.fspath(weights)
    try:
        with warnings.catch_warnings():
            # Keras 3.15 warns once per container while loading its own B3 .weights.h5.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model.load_weights(path)
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise ValueError(f"cannot load {path!r}: {_B3_WEIGHTS_HINT}. ({err})") from err
    norm = b3_normalization(model)
    mean, variance, count = norm.get_weights()
    if np.allclose(variance, IMAGENET_STDDEV_RGB, atol=1e-4):
        norm.set_weights([mean, np.square(variance), count])


def efficientnet_b3(
    input_shape: tuple[int | None, int | None, int],
    weights: str | os.PathLike | None = None,
    name: str = "efficientnetb3",
) -> keras.Model:
    """keras.applications' B3 without top, random or loaded from a local file (never fetched)."""
    _check_weights_path(weights)
    model = keras.applications.EfficientNetB3(
        include_top=False, weights=None, input_shape=input_shape, name=name
    )
    if weights is not None:
        load_b3_weights(model, weights)
    return model


@functools.cache
def _template_b3(dtype_policy: str) -> keras.Model:
    # Random B3 used only for its graph and layer configs (never its weights): one per process.
    del dtype_policy  # part of the cache key: configs carry the policy they were built under
    return efficientnet_b3((None, None, 3))


def _source_b3(weights: str | os.PathLike | None) -> keras.Model:
    if weights is None:
        return _template_b3(keras.config.dtype_policy().name)
    return efficientnet_b3((None, None, 3), weights)


def _leaf_layers(model: keras.Model) -> Iterator[keras.Layer]:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        elif layer.weights:
            yield layer


def copy_weights(src: keras.Model, dst: keras.Model) -> int:
    """Copy every weight of `src` into the layer of the same name in `dst` (nested models
    included); both must have the same named weight layers. Returns the number of layers.

    This is what makes V1 and V2 comparable: their samplers, 1x1 convs and block layers share
    names (`eb{i}_<B3 name>`), so one generator's weights can be moved into the other.
    """
    src_layers = {layer.name: layer for layer in _leaf_layers(src)}
    dst_layers = {layer.name: layer for layer in _leaf_layers(dst)}
    if src_layers.keys() != dst_layers.keys():
        missing = sorted(src_layers.keys() - dst_layers.keys())
        extra = sorted(dst_layers.keys() - src_layers.keys())
        raise ValueError(
            f"models differ in weight layers: only in {src.name!r}: {missing[:5]}, "
            f"only in {dst.name!r}: {extra[:5]}"
        )
    for name, layer in src_layers.items():
        dst_layers[name].set_weights(layer.get_weights())
    return len(src_layers)


# ---------------------------------------------------------------------------------------------
# V1: the slice rebuilt layer by layer
# ---------------------------------------------------------------------------------------------


def _layer_range(names: list[str], first: str, last: str) -> tuple[int, int]:
    for n in (first, last):
        if n not in names:
            raise ValueError(f"layer {n!r} is not in the model")
    i, j = names.index(first), names.index(last)
    if i > j:
        raise ValueError(f"layer {first!r} comes after {last!r}")
    return i, j


def slice_layers(model: keras.Model, first: str, last: str) -> list[keras.Layer]:
    """The layers of `model` from `first` through `last` (by name), in graph order."""
    i, j = _layer_range([layer.name for layer in model.layers], first, last)
    return model.layers[i : j + 1]


def _clone_layer(layer: keras.Layer, name: str) -> keras.Layer:
    # Merge layers join two tensors; the thesis rebuilt them by hand (ch. 4.3.1).
    if isinstance(layer, layers.Multiply):
        return layers.Multiply(name=name)
    if isinstance(layer, layers.Add):
        return layers.Add(name=name)
    return layer.__class__.from_config({**layer.get_config(), "name": name})


def rebuild_slice(
    x, source: keras.Model, first: str, last: str, prefix: str, copy_source_weights: bool
):
    """Apply a copy of `source`'s layers `first`..`last` to tensor `x` (Method II).

    Each layer is cloned under `prefix` and called in turn; its inputs are found by reading
    the source graph (which layer produced each of its input tensors), so the squeeze-excite
    multiplies and residual adds are wired without hard-coded indices. Inputs from outside the
    slice must all be one tensor, which becomes `x`. Weights are copied from the source when
    `copy_source_weights`, otherwise the clones keep their own fresh initialisation.
    """
    chosen = slice_layers(source, first, last)
    producer = {
        id(t): layer.name for layer in source.layers for t in keras.tree.flatten(layer.output)
    }
    built: dict[str, Any] = {}
    external: str | None = None
    for layer in chosen:
        args = []
        for tensor in keras.tree.flatten(layer.input):
            src = producer[id(tensor)]
            if src not in built:
                if external not in (None, src):
                    raise ValueError(
                        f"slice {first!r}..{last!r} has more than one input ({external!r}, {src!r})"
                    )
                external = src
            args.append(built.get(src, x))
        clone = _clone_layer(layer, prefix + layer.name)
        built[layer.name] = clone(args if len(args) > 1 else args[0])
        if copy_source_weights:
            clone.set_weights(layer.get_weights())
    return built[chosen[-1].name]


# ---------------------------------------------------------------------------------------------
# V2: the slice cut out of the model config
# ---------------------------------------------------------------------------------------------


def _tensor_refs(obj: Any) -> Iterator[dict]:
    """Every serialised KerasTensor (`__keras_tensor__`) inside an inbound-node structure."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            yield obj
        else:
            for value in obj.values():
                yield from _tensor_refs(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _tensor_refs(value)


def split_model(
    model: keras.Model,
    first_layer_name: str,
    last_layer_name: str,
    name: str,
    *,
    input_shape: tuple[int | None, ...] | None = None,
    prefix: str = "",
    copy_weights: bool = True,
) -> keras.Model:
    """A new functional model of `model`'s layers `first_layer_name`..`last_layer_name` (Method III).

    Works on `model.get_config()` (Keras 3 format: each layer's `inbound_nodes` holds
    `__keras_tensor__` entries whose `keras_history` is `[layer, node, tensor]`): keeps the
    contiguous slice of layers, adds an InputLayer (shape `input_shape`, default the shape
    the slice saw in `model`), points every reference to the one tensor entering the slice at
    that input, renames all layers with `prefix`, rebuilds with `keras.Model.from_config` and
    copies the weights layer by layer (unless `copy_weights` is False: fresh initialisation).
    The slice must have exactly one input tensor and end in a single-output layer.
    """
    config = model.get_config()
    names = [layer_config["name"] for layer_config in config["layers"]]
    i, j = _layer_range(names, first_layer_name, last_layer_name)
    kept = copy.deepcopy(config["layers"][i : j + 1])
    kept_names = {layer_config["name"] for layer_config in kept}

    refs = [ref for lc in kept for ref in _tensor_refs(lc["inbound_nodes"])]
    histories = [tuple(ref["config"]["keras_history"]) for ref in refs]
    entering = {h for h in histories if h[0] not in kept_names}
    if len(entering) != 1:
        raise ValueError(
            f"slice {first_layer_name!r}..{last_layer_name!r} must have exactly one input "
            f"tensor, it has {len(entering)}: {sorted(entering)}"
        )
    entry_ref = refs[histories.index(next(iter(entering)))]
    if input_shape is None:
        input_shape = tuple(entry_ref["config"]["shape"][1:])
    input_name = f"{prefix}input"
    batch_shape = [None, *input_shape]

    for ref in refs:
        history = ref["config"]["keras_history"]
        if history[0] in kept_names:
            ref["config"]["keras_history"] = [prefix + history[0], *history[1:]]
        else:
            ref["config"]["keras_history"] = [input_name, 0, 0]
            ref["config"]["shape"] = batch_shape
    for layer_config in kept:
        layer_config["name"] = layer_config["config"]["name"] = prefix + layer_config["name"]

    input_layer = keras.layers.InputLayer(
        batch_shape=tuple(batch_shape), dtype=entry_ref["config"]["dtype"], name=input_name
    )
    input_config = keras.saving.serialize_keras_object(input_layer)
    input_config.update(name=input_name, inbound_nodes=[])
    split_config = {
        "name": name,
        "trainable": config.get("trainable", True),
        "layers": [input_config, *kept],
        "input_layers": [input_name, 0, 0],
        "output_layers": [prefix + last_layer_name, 0, 0],
    }
    split = keras.Model.from_config(split_config)
    if copy_weights:
        for layer in split.layers[1:]:
            layer.set_weights(model.get_layer(layer.name[len(prefix) :]).get_weights())
    return split


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------


def _split_generator(
    image_size: int,
    n_blocks: int,
    weights: str | os.PathLike | None,
    upsampling: str,
    interpolation: str,
    method: str,
    name: str,
) -> keras.Model:
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be at least 1 (got {n_blocks})")
    check_upsampling(upsampling, interpolation)
    source = _source_b3(weights)
    pretrained = weights is not None

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = downsampler(inputs, 64, 64, SPLIT_CHANNELS, gan_weights=True)
    for b in range(1, n_blocks + 1):
        prefix = f"eb{b}_"
        if method == "v1":
            x = rebuild_slice(x, source, *B3_SLICE, prefix, copy_source_weights=pretrained)
        else:
            block = split_model(
                source,
                *B3_SLICE,
                name=f"eb{b}",
                input_shape=(image_size // 4, image_size // 4, SPLIT_CHANNELS),
                prefix=prefix,
                copy_weights=pretrained,
            )
            x = block(x)
        # Back to 144 channels. A Conv2DTranspose 1x1 in both versions (as in the thesis's V1),
        # so V1 and V2 weights are interchangeable; a 1x1 transpose conv equals a 1x1 conv.
        x = layers.Conv2DTranspose(SPLIT_CHANNELS, 1, use_bias=False, name=f"{prefix}reduce")(x)
    outputs = upsampler(x, 64, 32, upsampling, interpolation, gan_weights=True)
    return keras.Model(inputs, outputs, name=name)


_SPLIT_DESCRIPTION = (
    "ResNet-style samplers around n_blocks slices of EfficientNet-B3 (block2a_bn.."
    "block3a_expand_activation + 1x1 to 144), {how}; image size a multiple of 4"
)


@register_generator(
    "efficientnet_split_v1",
    description=_SPLIT_DESCRIPTION.format(how="rebuilt layer by layer"),
    source="Thesis ch. 4.3 (Method II); Tan & Le 2019 (EfficientNet)",
    family="efficientnet_split",
    size_multiple=4,
    thesis_method="II",
)
def efficientnet_split_v1(
    image_size: int = 256,
    n_blocks: int = 5,
    weights: str | None = None,
    upsampling: str = "transpose",
    interpolation: str = "nearest",
) -> keras.Model:
    """Method II: 622,305 trainable parameters at 256 px with 5 blocks (any size: no dense)."""
    return _split_generator(
        image_size, n_blocks, weights, upsampling, interpolation, "v1", "efficientnet_split_v1"
    )


@register_generator(
    "efficientnet_split_v2",
    description=_SPLIT_DESCRIPTION.format(how="cut from the model config (split_model)"),
    source="Thesis ch. 4.4 (Method III); Tan & Le 2019 (EfficientNet)",
    family="efficientnet_split",
    size_multiple=4,
    thesis_method="III",
)
def efficientnet_split_v2(
    image_size: int = 256,
    n_blocks: int = 5,
    weights: str | None = None,
    upsampling: str = "transpose",
    interpolation: str = "nearest",
) -> keras.Model:
    """Method III: the same network as V1, each block a nested model made by `split_model`."""
    return _split_generator(
        image_size, n_blocks, weights, upsampling, interpolation, "v2", "efficientnet_split_v2"
    )


def _b3_decoder(x, upsampling: str, interpolation: str):
    """Method I's decoder: s/32 x 1536 -> s x 3, no bias, IN after every stage, no activation.

    `transpose` is the thesis's; `resize_conv` resizes by each row's `resize` factor
    (2, 4, 2, 2) and applies a 3x3 conv of the same width, so the odd kernel/stride/max-pool
    bookkeeping is not needed to land on 32n.
    """
    for i, args in enumerate(B3_DECODER_ARGS, start=1):
        name = f"dec{i}"
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(
                args["filters"],
                args["kernel_size"],
                strides=args["strides"],
                use_bias=False,
                name=f"{name}_tconv",
            )(x)
            if args["pool_strides"] is not None:
                x = layers.MaxPooling2D(2, strides=args["pool_strides"], name=f"{name}_pool")(x)
        else:
            x = upsample(
                x,
                args["filters"],
                strides=args["resize"],
                mode=upsampling,
                interpolation=interpolation,
                name=name,
            )
        x = instance_norm(f"{name}_in")(x)
    return x


@register_generator(
    "efficientnet_b3_full",
    description=(
        "Complete EfficientNet-B3 (no top) as encoder + transpose-conv/max-pool decoder; "
        "image size a multiple of 32"
    ),
    source="Thesis ch. 4.2 (Method I); Tan & Le 2019 (EfficientNet)",
    family="efficientnet_b3_full",
    size_multiple=32,
    thesis_method="I",
)
def efficientnet_b3_full(
    image_size: int = 256,
    weights: str | None = None,
    upsampling: str = "transpose",
    interpolation: str = "nearest",
) -> keras.Model:
    """Method I: 21,287,998 trainable parameters at 256 px (10,696,232 backbone + 10,591,766
    decoder). The output ends in instance norm with no tanh, as in the thesis.
    """
    check_upsampling(upsampling, interpolation)
    backbone = efficientnet_b3((image_size, image_size, 3), weights)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    # [-1, 1] -> [0, 255], what the backbone's own Rescaling(1/255) + Normalization expect.
    x = layers.Rescaling(127.5, offset=127.5, name="to_0_255")(inputs)
    x = backbone(x)
    x = _b3_decoder(x, upsampling, interpolation)
    outputs = layers.Activation("linear", name="output", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="efficientnet_b3_full")
