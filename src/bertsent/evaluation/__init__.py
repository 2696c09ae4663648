"""How good a model is and why: metrics, baselines, the report, word attributions.

- `baselines`: What a model must beat: the majority-class baseline, a uniform random guess and (on request) TF-IDF
  with logistic regression, scored on the same data as the model, and the warnings for a model that does not beat
  them.
- `explain`: Why a model called a text what it did: word attributions by layer integrated gradients (Captum).
- `metrics`: Scores of a model on labeled data: one pipeline from logits to probabilities, labels and metrics.
- `report`: The evaluation report: metrics.json, errors.csv, PNG charts and one self-contained report.html.
"""
