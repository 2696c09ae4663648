"""What one server accepts (`Limits`) and where it reads its API key: plain settings, without asyncio or
FastAPI, so that `bertsent serve --help` shows them without importing the server."""

from dataclasses import asdict, dataclass

from bertsent.checks import flag, number

API_KEY_ENV = "BERTSENT_API_KEY"  # where `bertsent serve` reads the key when --api-key is not given


@dataclass
class Limits:
    """What one server accepts. A request over `max_batch_tokens` on its own is scored alone."""

    max_texts: int = 64  # texts per request
    max_chars: int = 20_000  # characters per text
    max_inflight: int = 256  # requests being answered at once (more: 429)
    max_batch_tokens: int = 16_384  # tokens scored together, at most (each text counted to max_length)
    max_wait_ms: float = 5.0  # how long a batch waits for requests still on their way
    max_explain_texts: int = 4  # texts per /explain request
    max_explain_steps: int = 256  # n_steps of /explain, at most
    # Slow or half-sent requests (slowloris): the headers must arrive within header_timeout_s of the connection
    # (or of the previous answer), the whole body within body_timeout_s of the headers; else 408 and closed.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_client_connections: int = 128  # open connections from one address (more: 429, closed); 0: no cap

    def check(self) -> None:
        for name, value in asdict(self).items():
            least = {"max_wait_ms": 0, "max_client_connections": 0}.get(name, 0.01 if name.endswith("_s") else 1)
            rule = f"must be a number of at least {least}"
            number(name, value, least, named=flag(name.removesuffix("_s")), rule=rule)
