"""Datasets (real and synthetic), where their files are found, and client partitions."""

from fedpdmm.data.datasets import DATASETS, Dataset, load_dataset, standardized
from fedpdmm.data.locate import resolve_data_dir, user_cache_dir
from fedpdmm.data.partition import PARTITIONS, label_histogram, partition

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "Dataset",
    "label_histogram",
    "load_dataset",
    "partition",
    "resolve_data_dir",
    "standardized",
    "user_cache_dir",
]
