"""Options of ``vrp serve`` (light: the CLI reads their defaults without loading the web stack)."""

from __future__ import annotations

from dataclasses import dataclass

from vrp.config import Config
from vrp.data.images import MAX_IMAGE_PIXELS

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig(Config):
    """Options of ``vrp serve``: where it listens, how it batches, what it accepts.

    Attributes:
        host: address to listen on (loopback by default; anything else exposes the model to the network).
        port: TCP port to listen on (0: a free port, printed when the server is ready).
        allow_paths: a folder under which requests may name local image files (default: none,
            only base64 data URLs); paths are resolved, symlinks included, and must stay inside it.
        max_batch_size: most requests answered by one batched generate call.
        max_wait_ms: longest a request waits for others to join its batch, in milliseconds.
        max_queue: most requests waiting for the model; beyond it a request is refused with 503.
        max_request_bytes: largest request body accepted, in bytes (413 beyond it).
        max_image_bytes: largest image file accepted (decoded from base64 or read from disk), in bytes.
        max_image_pixels: largest image accepted, in pixels (width x height), checked before decoding.
        metrics_window: answers in the rolling window of the p_correct and abstain-rate metrics.
        shutdown_timeout_s: on SIGTERM, longest wait for the requests in flight, in seconds.
        served_model_name: the model's name in /v1/models and in responses (default: the
            monitor's model name, its last path component).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    allow_paths: str | None = None
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 256
    max_request_bytes: int = 20 * 2**20
    max_image_bytes: int = 10 * 2**20
    max_image_pixels: int = 16_000_000
    metrics_window: int = 1000
    shutdown_timeout_s: float = 30.0
    served_model_name: str | None = None

    def check(self) -> None:
        self.require(
            (bool(self.host), "host must not be empty"),
            (0 <= self.port <= 65535, f"port must be in [0, 65535], got {self.port}"),
            (self.allow_paths is None or bool(self.allow_paths), "allow_paths must not be empty"),
            (self.max_batch_size >= 1, f"max_batch_size must be >= 1, got {self.max_batch_size}"),
            (self.max_wait_ms >= 0, f"max_wait_ms must be >= 0, got {self.max_wait_ms}"),
            (self.max_queue >= 1, f"max_queue must be >= 1, got {self.max_queue}"),
            (self.max_request_bytes >= 1024, f"max_request_bytes must be >= 1024, got {self.max_request_bytes}"),
            (self.max_image_bytes >= 1, f"max_image_bytes must be >= 1, got {self.max_image_bytes}"),
            (
                1 <= self.max_image_pixels <= MAX_IMAGE_PIXELS,
                f"max_image_pixels must be in [1, {MAX_IMAGE_PIXELS}] (vrp's decompression-bomb limit), "
                f"got {self.max_image_pixels}",
            ),
            (self.metrics_window >= 1, f"metrics_window must be >= 1, got {self.metrics_window}"),
            (self.shutdown_timeout_s > 0, f"shutdown_timeout_s must be > 0, got {self.shutdown_timeout_s}"),
            (
                self.served_model_name is None or bool(self.served_model_name.strip()),
                "served_model_name must not be empty",
            ),
        )

    @property
    def loopback(self) -> bool:
        """Whether the server listens on the loopback interface only."""
        return self.host in LOOPBACK or self.host.startswith("127.")
