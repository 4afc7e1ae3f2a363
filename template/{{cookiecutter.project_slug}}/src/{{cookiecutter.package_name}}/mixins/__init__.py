"""Mixins of the generated LightningModule / LightningDataModule (tricks that live inside them)."""

from .preprocessing import PREPROCESS, Preprocess, PreprocessingMixin

__all__ = ["PREPROCESS", "Preprocess", "PreprocessingMixin"]
