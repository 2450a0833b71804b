"""Analytic forward-pass FLOPs, so generators can be compared without a profiler or a GPU.

The convention (one, used everywhere in EffGAN Bench):

- Batch 1, one forward pass; 1 multiply-add (MAC) = 2 FLOPs, so `flops == 2 * macs`.
- Only multiply-adds of weight layers are counted; bias adds are ignored:
  - Conv1D/2D/3D: `k_1 * ... * k_d * cin / groups * cout` MACs per output position.
  - DepthwiseConv1D/2D: `k_1 * ... * k_d * C * depth_multiplier` per output position.
  - SeparableConv1D/2D: its depthwise part plus its 1x1 pointwise part, both at the output size.
  - Conv1D/2D/3DTranspose: `k_1 * ... * k_d * cin * cout` per OUTPUT position, with no division
    by stride**d. This overstates the true work of a strided transpose conv (by stride**2 for
    k3 s2, 16x for the B3 decoder's k8 s4) but is the convention of GAN Compression (Li et al.
    2020), whose 56.8 G MACs for the 2017 CycleGAN ResNet-9 generator it reproduces exactly, so
    our numbers line up with the published ones.
  - Dense: `units_in * units_out` per position of the leading (non-feature) axes.
- Normalisation, activations, pooling, resizing, padding, element-wise adds and multiplies
  (residuals, squeeze-excite) count 0: they are linear in the number of elements and small
  next to the convolutions, and profilers such as torchprofile also leave them out.

Nested models (e.g. the EfficientNet-B3 backbone, V2's split blocks) are walked recursively.
A layer with a kernel that is not listed above raises NotImplementedError rather than being
silently counted as free.
"""

from __future__ import annotations

import math

import keras
from keras import layers

_TRANSPOSE = (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
_DEPTHWISE = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
_SEPARABLE = (layers.SeparableConv1D, layers.SeparableConv2D)
_CONV = (layers.Conv1D, layers.Conv2D, layers.Conv3D)


def _output_shapes(layer: keras.Layer) -> list[tuple]:
    """Output shape of every call of `layer` in its graph (a shared layer costs per call)."""
    nodes = getattr(layer, "_inbound_nodes", [])
    shapes = [tuple(t.shape) for node in nodes for t in keras.tree.flatten(node.output_tensors)]
    if not shapes:
        raise ValueError(f"layer {layer.name!r} has not been called; build the model first")
    return shapes


def _positions(shape: tuple, layer: keras.Layer) -> int:
    """Number of output positions (all axes but batch and channels)."""
    spatial = shape[1:-1]
    if any(d is None for d in spatial):
        raise ValueError(
            f"layer {layer.name!r} has an unknown output size {shape}; count_flops needs a "
            "model built for a fixed image size"
        )
    return math.prod(spatial)


def _n(weight) -> int:
    return math.prod(weight.shape)


def layer_macs(layer: keras.Layer) -> int:
    """Multiply-adds of one (non-model) layer for batch 1, per the module's convention."""
    if isinstance(layer, _SEPARABLE):
        per_position = _n(layer.depthwise_kernel) + _n(layer.pointwise_kernel)
    elif isinstance(layer, _TRANSPOSE + _DEPTHWISE + _CONV):
        # Kernel shapes: conv (k.., cin/groups, cout); depthwise (k.., C, mult);
        # transpose (k.., cout, cin). In each case the product is the MACs per output position.
        per_position = _n(layer.kernel)
    elif isinstance(layer, layers.Dense):
        per_position = _n(layer.kernel)
    elif hasattr(layer, "kernel"):
        raise NotImplementedError(
            f"count_flops has no rule for layer {layer.name!r} ({type(layer).__name__})"
        )
    else:
        return 0
    return sum(per_position * _positions(shape, layer) for shape in _output_shapes(layer))


def count_macs(model: keras.Model) -> int:
    """Multiply-adds of one forward pass at batch 1, walking nested models."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
        else:
            total += layer_macs(layer)
    return total


def count_flops(model: keras.Model) -> int:
    """Forward-pass FLOPs at batch 1 (2 per multiply-add; see the module docstring)."""
    return 2 * count_macs(model)


def model_summary(model: keras.Model) -> dict[str, int]:
    """Trainable and total parameter counts and forward FLOPs, for tables and MLflow."""
    trainable = sum(_n(w) for w in model.trainable_weights)
    total = sum(_n(w) for w in model.weights)
    macs = count_macs(model)
    return {
        "trainable_params": trainable,
        "total_params": total,
        "flops": 2 * macs,
        "macs": macs,
    }
