"""Datasets, resumable on-device loaders and batched augmentation."""

from layerwise.data.datasets import (DataError, Dataset, DatasetInfo, list_datasets, load_dataset,
                                     register_dataset)
from layerwise.data.loader import BatchLoader, Normalize

__all__ = ["BatchLoader", "DataError", "Dataset", "DatasetInfo", "Normalize", "list_datasets",
           "load_dataset", "register_dataset"]
