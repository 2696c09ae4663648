"""bertsent: fine-tune, evaluate and serve BERT-family sentiment models, offline by default.

The public names below are imported when first used, so that `import bertsent` and `bertsent --help` do not
import torch or transformers (bertsent.lazy)."""

from .environment import package_version
from .errors import BertsentError, DataError, ModelError
from .lazy import make_lazy

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
        "evaluate": "bertsent.api",
        "train": "bertsent.api",
        "audit": "bertsent.audit",
        "merge_parts": "bertsent.bulk",
        "predict_file": "bertsent.bulk",
        "TextDataset": "bertsent.data",
        "read_data": "bertsent.data",
        "SentimentClassifier": "bertsent.estimator",
        "SentimentModel": "bertsent.prediction",
        "load": "bertsent.prediction",
        "TrainConfig": "bertsent.training",
        "__version__": package_version,
    },
)
