"""Data sets for CycleGAN training: the procedural cans, CycleGAN-layout folders, .npy arrays.

Every loader returns a `CycleData`: uint8 arrays per split and domain. Only `cans` has the
ground-truth twins and masks, and only for the test split (the training split is unpaired).
"""

from effgan.data.base import CycleData, DataError

__all__ = ["CycleData", "DataError"]
