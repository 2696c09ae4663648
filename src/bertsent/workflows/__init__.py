"""Work made of training and prediction: train/evaluate from data sources, seeds and comparisons, tuning, label
audits, the scikit-learn estimator.

- `audit`: Label audit: which rows of a labeled data set are most likely mislabeled.
- `estimator`: `SentimentClassifier`: training and prediction with scikit-learn's shape, for pipelines and grid
  searches.
- `experiments`: Experiments made of several training runs: the same model over seeds, several models on one split.
- `run`: The Python API behind the CLI: train and evaluate from data sources (files, archives, built-in names).
- `tune`: `tune`: a hyperparameter search over training settings, with Optuna.
"""
