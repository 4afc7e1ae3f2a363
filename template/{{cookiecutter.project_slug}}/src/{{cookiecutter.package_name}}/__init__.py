"""Image classification with PyTorch Lightning; every CNN-training trick is a recipe away."""

from .datamodule import ImageDataModule
from .module import ImageClassifier

__all__ = ["ImageClassifier", "ImageDataModule"]
__version__ = "0.1.0"
