"""Datasets, resumable on-device loaders and batched augmentation."""

from layerwise.data.datasets import (DataError, Dataset, DatasetInfo, list_datasets, load_dataset,
                                     register_dataset)
from layerwise.data.loader import BatchLoader, BatchTransform, Normalize
from layerwise.data.stream import StreamLoader

# Modules that register datasets when imported.
from layerwise.data import audio, code, images, molecules, pde, ratings, tabular, text, textclass  # noqa: E402,F401  isort: skip

__all__ = ["BatchLoader", "BatchTransform", "DataError", "Dataset", "DatasetInfo", "Normalize",
           "StreamLoader", "list_datasets", "load_dataset", "register_dataset"]
