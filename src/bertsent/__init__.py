"""bertsent: fine-tune, evaluate and serve BERT-family sentiment models, offline by default."""

from .api import evaluate, train
from .audit import audit
from .bulk import merge_parts, predict_file
from .data import TextDataset, read_data
from .errors import BertsentError, DataError, ModelError
from .estimator import SentimentClassifier
from .prediction import SentimentModel, load
from .runtime import package_version
from .training import TrainConfig

__version__ = package_version()

__all__ = [
    "BertsentError",
    "DataError",
    "ModelError",
    "SentimentClassifier",
    "SentimentModel",
    "TextDataset",
    "TrainConfig",
    "__version__",
    "audit",
    "evaluate",
    "load",
    "merge_parts",
    "predict_file",
    "read_data",
    "train",
]
