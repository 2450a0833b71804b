"""The in-memory form every data source is loaded into."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DataError(ValueError):
    """Unusable data: a missing folder, an empty domain, no readable image."""


@dataclass
class CycleData:
    """Two unpaired domains, A and B, as uint8 arrays of shape (N, H, W, 3).

    `test_a_twin[i]` is `test_a[i]` rendered in domain B (and vice versa); masks are
    (N, H, W) bool arrays marking the object whose style should change. All four are None
    for data without ground truth.
    """

    name: str
    train_a: np.ndarray
    train_b: np.ndarray
    test_a: np.ndarray
    test_b: np.ndarray
    test_a_twin: np.ndarray | None = None
    test_b_twin: np.ndarray | None = None
    test_a_mask: np.ndarray | None = None
    test_b_mask: np.ndarray | None = None

    @property
    def has_ground_truth(self) -> bool:
        return self.test_a_twin is not None and self.test_b_twin is not None

    @property
    def image_size(self) -> int:
        return int(self.train_a.shape[1])
