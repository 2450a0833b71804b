"""Data sets for CycleGAN training: the procedural cans, CycleGAN-layout folders, .npy arrays.

Every loader returns a `CycleData`: uint8 arrays per split and domain. Only `cans` has the
ground-truth twins and masks, and only for the test split (the training split is unpaired).
The tf.data pipeline lives in `effgan.data.pipeline` (not imported here: it pulls TensorFlow).
"""

from effgan.data.base import CycleData, DataError
from effgan.data.cans import load_cans, render_pairs, render_scene, save_preview, write_cans_folder
from effgan.data.folder import load_folder
from effgan.data.load import load_data
from effgan.data.npy import load_npy

__all__ = [
    "CycleData",
    "DataError",
    "load_cans",
    "load_data",
    "load_folder",
    "load_npy",
    "render_pairs",
    "render_scene",
    "save_preview",
    "write_cans_folder",
]
