"""Prometheus metrics, request ids and structured JSON logs.

Metric names follow the Prometheus conventions: counters end in ``_total``, durations are
histograms in seconds, and labels have low cardinality (the route template, never the raw path
or an id). Each app has its own registry, so several apps in one process (tests) never clash.

Every request gets an id: the client's ``X-Request-ID`` when it sends a sane one, else a new one;
it is echoed in the response and attached to every log line written while the request runs.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Metrics:
    """The service's metrics in one registry; `StateCollector` adds the gauges read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "newsdesk_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "newsdesk_http_request_duration_seconds",
            "Time from request start to response end, by route template.",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "newsdesk_encoder_batch_size",
            "Articles per micro-batched encoder call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "newsdesk_encoder_queue_wait_seconds",
            "Time a request's articles waited for the micro-batcher.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.rejected = Counter(
            "newsdesk_rejected_inputs_total",
            "Requests refused before any work, by reason.",
            ["reason"],
            registry=self.registry,
        )


class StateCollector(Collector):
    """Gauges that describe the live state, computed when Prometheus scrapes."""

    def __init__(self, state: Any) -> None:
        self.state = state  # a service.state.ServiceState (not imported: state imports this module)

    def collect(self) -> Iterator[Any]:
        state = self.state
        model = state.model
        info = InfoMetricFamily("newsdesk_model", "The served bundle.")
        info.add_metric([], {"version": model.version if model is not None else "none"})
        yield info
        index = GaugeMetricFamily("newsdesk_index_articles", "Articles in the similarity index.")
        index.add_metric([], len(model.index) if model is not None else 0)
        yield index
        stories = GaugeMetricFamily("newsdesk_stories", "Stories known to the story clusterer.")
        stories.add_metric([], len(model.stories) if model is not None else 0)
        yield stories
        stored = GaugeMetricFamily("newsdesk_articles_stored", "Articles in the durable store.")
        try:
            count = state.store.count() if state.store is not None else 0
        except Exception:  # a scrape must never fail because the store is down; readyz says why
            count = 0
        stored.add_metric([], count)
        yield stored
        restore = GaugeMetricFamily(
            "newsdesk_restore_progress_ratio", "Share of stored articles restored into the index at start."
        )
        progress = state.progress
        restore.add_metric([], 1.0 if progress.stored == 0 else min(1.0, progress.restored / progress.stored))
        yield restore
        pending = state.pending
        for name, help_text, value in (
            ("done", "Stored articles the pending bundle's vector generation holds.", "done"),
            ("total", "Stored articles the pending bundle's vector generation must hold.", "total"),
            (
                "story_merges",
                "Stories the pending bundle's encoder joins (found before its switch).",
                "merges",
            ),
        ):
            gauge = GaugeMetricFamily(f"newsdesk_reembed_{name}", help_text)
            gauge.add_metric([], getattr(pending, value) if pending is not None else 0)
            yield gauge
        seconds = GaugeMetricFamily(
            "newsdesk_reembed_seconds", "Seconds the background re-embedding has run (0: none under way)."
        )
        info_now = pending.as_dict() if pending is not None else {}
        seconds.add_metric([], float(info_now.get("seconds", 0.0)))
        yield seconds
        estimate = GaugeMetricFamily(
            "newsdesk_reembed_estimate_seconds", "Seconds the background re-embedding still needs (estimate)."
        )
        estimate.add_metric([], float(info_now.get("estimate_s") or 0.0))
        yield estimate
        sizes = GaugeMetricFamily(
            "newsdesk_vector_generation_bytes",
            "Bytes of vectors each vector generation of the store holds (its disk cost).",
            labels=["generation", "vectors_id", "state"],
        )
        for row in state.generation_info:
            sizes.add_metric([str(row["id"]), str(row["vectors_id"]), str(row["state"])], row["vector_bytes"])
        yield sizes
        ready = GaugeMetricFamily("newsdesk_ready", "1 when a model is served.")
        ready.add_metric([], 1.0 if model is not None else 0.0)
        yield ready


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestContext:
    """ASGI middleware: request id in and out, request metrics, and a 500 that keeps the connection.

    An exception no handler took becomes a JSON 500 here, inside Starlette's error middleware, so
    the server never sees it and keeps the client's connection open.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.logger = logging.getLogger("service.requests")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE_ID.match(given) else uuid.uuid4().hex[:16]
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            self.logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not response_started:
                await _send_json(
                    send_with_id,
                    500,
                    {"detail": "internal error; the service log has the details", "request_id": request_id},
                )
        finally:
            route = _route_template(scope)
            method = str(scope.get("method", "?"))
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(elapsed)
            if status >= 400 and status != 404:
                self.metrics.rejected.labels(_reason(status)).inc()
            self.logger.info(
                "%s %s -> %d",
                method,
                route,
                status,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 2), "path_template": route},
            )
            request_id_var.reset(token)


def _reason(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        409: "conflict",
        413: "too_large",
        422: "invalid",
        429: "rate_limited",
        503: "unavailable",
    }.get(status, f"status_{status}")


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    import json

    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str, *, json_logs: bool) -> None:
    """Root logging for the service process: JSON lines (default) or plain text, with request ids."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if json_logs:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log repeats what service.requests logs, without the request id.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
