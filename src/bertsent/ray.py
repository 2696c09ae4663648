"""`bertsent.ray.SentimentPredictor`, the documented path; it lives in bertsent.prediction.ray."""

from bertsent.prediction.ray import SentimentPredictor

__all__ = ["SentimentPredictor"]
