"""`bertsent serve`: the HTTP API, its batching worker and its page.

- `app`: `bertsent serve`: a trained model behind an HTTP API in the shape Hugging Face's inference servers use.
"""
