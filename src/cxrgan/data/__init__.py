"""The data layer: sources, preprocessing, splits, the prepared-dataset format and the phantom."""

from .dataset import PreparedDataset
from .prepare import SplitOptions, prepare
from .preprocess import Preprocess
from .sources import SourceOptions

__all__ = ["PreparedDataset", "Preprocess", "SourceOptions", "SplitOptions", "prepare"]
