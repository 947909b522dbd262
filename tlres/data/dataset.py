"""The one in-memory dataset type every loader returns (`tlres.data.loaders`, `tlres.data.imagefolder`).

A leaf module, so the loaders can share it without importing each other.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    files: tuple = ()  # an image folder's (split, index, class, path) rows: the run's split.csv
    record: dict | None = None  # extra facts for config.json's dataset record

    @property
    def num_classes(self):
        return len(self.class_names)
