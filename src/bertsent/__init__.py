"""bertsent: fine-tune, evaluate and serve BERT-family sentiment models, offline by default.

The public names below are imported when first used, so that `import bertsent` and `bertsent --help` do not
import torch or transformers (bertsent.lazy)."""

from typing import TYPE_CHECKING

from bertsent.environment import package_version
from bertsent.errors import BertsentError, DataError, ModelError
from bertsent.lazy import make_lazy

if TYPE_CHECKING:  # what type checkers and the API reference read; at run time the names load on first use
    from bertsent.data.dataset import TextDataset
    from bertsent.data.sources import read_data
    from bertsent.prediction.files import predict_file
    from bertsent.prediction.predictor import SentimentModel, load
    from bertsent.prediction.shards import merge_parts
    from bertsent.training import TrainConfig
    from bertsent.workflows.audit import audit
    from bertsent.workflows.estimator import SentimentClassifier
    from bertsent.workflows.run import evaluate, train

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

make_lazy(
    __name__,
    {
        "evaluate": "bertsent.workflows.run",
        "train": "bertsent.workflows.run",
        "audit": "bertsent.workflows.audit",
        "merge_parts": "bertsent.prediction.shards",
        "predict_file": "bertsent.prediction.files",
        "TextDataset": "bertsent.data.dataset",
        "read_data": "bertsent.data.sources",
        "SentimentClassifier": "bertsent.workflows.estimator",
        "SentimentModel": "bertsent.prediction.predictor",
        "load": "bertsent.prediction.predictor",
        "TrainConfig": "bertsent.training",
        "__version__": package_version,
    },
)
