"""bertsent: fine-tune, evaluate and serve BERT-family sentiment models, offline by default."""

__version__ = "0.1.0"

from .api import SentimentClassifier, evaluate, train  # noqa: E402
from .data import TextDataset, read_data  # noqa: E402
from .errors import BertsentError, DataError, ModelError  # noqa: E402
from .prediction import SentimentModel, load  # noqa: E402
from .training import TrainConfig  # noqa: E402

__all__ = ["SentimentClassifier", "SentimentModel", "TextDataset", "TrainConfig", "BertsentError", "DataError",
           "ModelError", "evaluate", "load", "read_data", "train", "__version__"]
