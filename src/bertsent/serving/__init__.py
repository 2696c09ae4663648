"""`bertsent serve`: a trained model behind an HTTP API in the shape Hugging Face's inference servers use.

- `app`: `create_app`, the FastAPI app: its routes and every error as `{"error", "error_type"}` (web/: its page).
- `requests`: the request bodies (Pydantic models, which the OpenAPI document shows), read within bounds and checked.
- `responses`: what the server answers: `RequestError`, the error body, a prediction's labels and scores.
- `guard`: the defences before a route: the API key, body and header deadlines, connections per address.
- `service`: the model service (background load, state, in-flight count, explainer, /info).
- `limits`: `Limits`, what one server accepts, and the API key's environment variable (light: for --help).
- `batcher`: the batching worker (concurrent requests scored together), its watchdog and arrivals count.
- `metrics`: the Prometheus metrics.
- `server`: running it: `serve()` (what `bertsent serve` calls), uvicorn's settings, the socket, SIGTERM.
"""
