"""Fine-tuning: `fit` and its settings. One module per part of the job:

config      TrainConfig: checked when built, resolved once (recipe, model, data) into the config the run uses
fit         fit(): the steps of a run, from the model folder to the published result
loop        the training loop (about 80 lines), the run's state, checkpoints
microbatch  forward/backward of a step in micro-batches, out-of-memory back-off, gradients over processes
records     metrics.jsonl, TensorBoard and the progress bar, read from the device in groups
selection   validation scores, the best evaluation, early stopping
run_folder  the partial folder, the checkpoint file, the atomic publish
finish      temperature scaling, bertsent.json, the model files and the report
"""

from typing import TYPE_CHECKING

from bertsent.lazy import make_lazy
from bertsent.training.config import RECIPES, TrainConfig, auto_lr, auto_max_length

if TYPE_CHECKING:  # what type checkers and the API reference read; at run time the names load on first use
    from bertsent.training.finish import TrainResult
    from bertsent.training.fit import fit
    from bertsent.training.records import METRICS_LOG

# config is light (the command line builds its flags from it); the rest imports torch, so when first used
make_lazy(
    __name__,
    {
        "TrainResult": "bertsent.training.finish",
        "fit": "bertsent.training.fit",
        "METRICS_LOG": "bertsent.training.records",
    },
)

__all__ = ["METRICS_LOG", "RECIPES", "TrainConfig", "TrainResult", "auto_lr", "auto_max_length", "fit"]
