"""Datasets: the built-in Fashion-MNIST pair and image folders, as uint8 CHW tensors."""
from models.data.base import DatasetError, ImageSet, to_model_range, to_uint8
from models.data.factory import open_dataset

__all__ = ["DatasetError", "ImageSet", "open_dataset", "to_model_range", "to_uint8"]
