"""The server's Prometheus metrics (GET /metrics): requests, errors, latency, batches, texts, in flight."""


class Metrics:
    """Prometheus metrics of one app, in a registry of its own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bertsent_requests", "HTTP requests answered", ["path", "method", "status"], registry=self.registry
        )
        self.errors = Counter(
            "bertsent_errors", "requests refused or failed, by kind", ["kind"], registry=self.registry
        )
        self.latency = Histogram(
            "bertsent_request_seconds",
            "time to answer a request",
            ["path"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "bertsent_batch_texts",
            "texts scored in one model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "bertsent_batch_requests",
            "requests answered by one model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.texts = Counter("bertsent_texts", "texts scored", registry=self.registry)
        self.inflight = Gauge("bertsent_inflight_requests", "requests being answered", registry=self.registry)
        self.loaded = Gauge("bertsent_model_loaded", "1 once the model is loaded", registry=self.registry)

    def batch(self, texts: int, requests: int) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        self.texts.inc(texts)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
