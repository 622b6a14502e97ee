"""What ``GET /metrics`` exposes, in the Prometheus text format (``prometheus_client``).

Cumulative since start (counters and histograms, the Prometheus convention):

    vrp_requests_total{status}               chat-completion requests answered, by HTTP status
    vrp_request_errors_total{kind}           refused or failed requests, by error code (image_too_large, ...)
    vrp_request_duration_seconds             latency of chat-completion requests (histogram), any outcome
    vrp_batch_size                           requests per batched generate call (histogram)
    vrp_batch_duration_seconds               time of one batched generate call (histogram)
    vrp_batch_retries_total                  batches that failed and were retried one request at a time
    vrp_answers_total, vrp_abstentions_total answers given, and those flagged abstain
    vrp_p_correct                            p_correct of every answer (histogram)

Over the last ``metrics_window`` answers (gauges: a deployer watches them for drift):

    vrp_p_correct_window_quantile{quantile}  quantiles 0.05, 0.25, 0.5, 0.75, 0.95 of p_correct
    vrp_p_correct_window_mean                the mean p_correct
    vrp_p_correct_window_share_below{below}  share of the window's p_correct below 0.1, 0.2, ..., 0.9
    vrp_abstain_rate_window                  share of the window's answers flagged abstain
    vrp_window_answers                       answers in the window (fewer than the window at start)

And now: ``vrp_queue_depth`` (requests waiting for the model: queued, or in a batch still filling), ``vrp_monitor_info`` (the monitor's
identity as labels, value 1).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
EDGES = tuple(round(0.1 * k, 1) for k in range(1, 10))  # the share-below edges of the window
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
P_BUCKETS = (*EDGES, 1.0)


class _Window(Collector):
    """The rolling window of the last ``size`` answers' p_correct and abstain flags."""

    def __init__(self, size: int):
        self._p: deque[float] = deque(maxlen=size)
        self._abstain: deque[bool] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, p: float, abstain: bool) -> None:
        with self._lock:
            self._p.append(p)
            self._abstain.append(abstain)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            p, a = np.array(self._p, dtype=np.float64), np.array(self._abstain, dtype=bool)
        nan = float("nan")  # an empty window has no quantiles (Prometheus shows NaN)
        q = GaugeMetricFamily(
            "vrp_p_correct_window_quantile", "p_correct quantiles over the rolling window", labels=["quantile"]
        )
        for level in QUANTILES:
            q.add_metric([str(level)], float(np.quantile(p, level)) if p.size else nan)
        yield q
        yield GaugeMetricFamily(
            "vrp_p_correct_window_mean",
            "mean p_correct over the rolling window",
            value=float(p.mean()) if p.size else nan,
        )
        below = GaugeMetricFamily(
            "vrp_p_correct_window_share_below",
            "share of the rolling window's p_correct below each edge",
            labels=["below"],
        )
        for edge in EDGES:
            below.add_metric([str(edge)], float((p < edge).mean()) if p.size else nan)
        yield below
        yield GaugeMetricFamily(
            "vrp_abstain_rate_window",
            "share of the rolling window's answers flagged abstain",
            value=float(a.mean()) if a.size else nan,
        )
        yield GaugeMetricFamily("vrp_window_answers", "answers in the rolling window", value=float(p.size))


class Metrics:
    """The server's metrics, in a registry of their own (two apps in one process do not mix)."""

    def __init__(self, window: int, max_batch_size: int, identity: dict[str, str]):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "vrp_requests", "chat-completion requests answered, by HTTP status", ["status"], registry=r
        )
        self.errors = Counter("vrp_request_errors", "refused or failed requests, by error code", ["kind"], registry=r)
        self.latency = Histogram(
            "vrp_request_duration_seconds", "latency of chat-completion requests", buckets=LATENCY_BUCKETS, registry=r
        )
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, max_batch_size} & set(range(1, max_batch_size + 1)))
        self.batch_size = Histogram(
            "vrp_batch_size", "requests per batched generate call", buckets=[float(s) for s in sizes], registry=r
        )
        self.batch_duration = Histogram(
            "vrp_batch_duration_seconds", "time of one batched generate call", buckets=LATENCY_BUCKETS, registry=r
        )
        self.retries = Counter(
            "vrp_batch_retries", "batches that failed and were retried one request at a time", registry=r
        )
        self.answers = Counter("vrp_answers", "answers given", registry=r)
        self.abstentions = Counter("vrp_abstentions", "answers flagged abstain", registry=r)
        self.p_correct = Histogram("vrp_p_correct", "p_correct of every answer", buckets=P_BUCKETS, registry=r)
        self.queue_depth = Gauge("vrp_queue_depth", "requests waiting for the model", registry=r)
        info = Gauge("vrp_monitor_info", "the monitor's identity (labels), value 1", list(identity), registry=r)
        info.labels(**identity).set(1)
        self.window = _Window(window)
        r.register(self.window)

    def answered(self, p_correct: float, abstain: bool) -> None:
        """Count one answer and add it to the rolling window."""
        self.answers.inc()
        self.abstentions.inc(int(abstain))
        self.p_correct.observe(p_correct)
        self.window.add(p_correct, abstain)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
