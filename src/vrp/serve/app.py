"""The HTTP service: an attached :class:`vrp.Monitor` behind OpenAI-style chat completions.

    POST /v1/chat/completions   one question about one image -> the answer + a ``vrp`` object
    GET  /v1/models             the served model, with the monitor's identity
    GET  /health                200 while serving, 503 while shutting down
    GET  /metrics               Prometheus text format (vrp.serve.metrics)

Every error is ``{"error": {"message", "type", "code", "param"}}`` with a 4xx status for a
request the server refuses and a 5xx for one it could not answer; one request's error never
stops the server or the other requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from vrp.capture.records import decode_answer
from vrp.serve.batching import Batcher
from vrp.serve.config import ServeConfig
from vrp.serve.metrics import CONTENT_TYPE, Metrics
from vrp.serve.protocol import RequestError, parse_chat_request, read_image

log = logging.getLogger("vrp.serve")


def monitor_identity(info: dict) -> dict:
    """Which monitor answers: the model's identity, the probe's layer and its validation AUROC."""
    m, metrics = info["model"], info.get("metrics") or {}
    val, test = metrics.get("val") or {}, metrics.get("test") or {}
    return {
        "model_name": m.get("name"),
        "model_type": m.get("model_type"),
        "model_sha256": m.get("sha256"),
        "model_content_sha256": m.get("content_sha256"),
        "model_dtype": m.get("dtype"),
        "probe": (info.get("source") or {}).get("probe"),
        "residual_layer": info["probe"]["residual_layer"],
        "val_auroc": val.get("auroc"),
        "val_auroc_ci95": val.get("ci95"),
        "test_auroc": test.get("auroc"),
        "threshold_rule": info["threshold"].get("rule"),
        "threshold_target": info["threshold"].get("target"),
        "consistency_head": "consistency_head" in info,
        "format": info.get("format"),
    }


def served_name(monitor: Any, cfg: ServeConfig) -> str:
    """The model's name in responses: the option, else the last path component of the monitor's model name."""
    if cfg.served_model_name:
        return cfg.served_model_name
    name = str(monitor.info["model"].get("name") or monitor.info["model"]["model_type"])
    return Path(name.rstrip("/")).name or name


def create_app(monitor: Any, cfg: ServeConfig | None = None) -> FastAPI:
    """The service for an attached monitor (``Monitor.load(...).attach(...)``).

    Args:
        monitor: an attached :class:`vrp.Monitor` (anything with its ``info``, ``threshold``,
            ``adapter`` and ``ask_many``).
        cfg: the options (default ``ServeConfig()``).
    """
    cfg = cfg or ServeConfig()
    if getattr(monitor, "adapter", None) is None:
        raise ValueError("the monitor is not attached: call monitor.attach(model) before serving it")
    root = Path(cfg.allow_paths).resolve(strict=True) if cfg.allow_paths else None
    if root is not None and not root.is_dir():
        raise ValueError(f"--allow-paths {cfg.allow_paths} is not a folder")
    name = served_name(monitor, cfg)
    identity = monitor_identity(monitor.info)
    metrics = Metrics(
        cfg.metrics_window,
        cfg.max_batch_size,
        {
            "model": name,
            "model_sha256": str(identity["model_sha256"]),
            "residual_layer": str(identity["residual_layer"]),
        },
    )
    ad = monitor.adapter
    stops = set(getattr(ad, "stop_token_ids", None) or {ad.tokenizer.eos_token_id})

    def answer(images: list, questions: list[str]) -> list:
        return monitor.ask_many(images, questions, batch_size=len(images))

    batcher = Batcher(answer, cfg.max_batch_size, cfg.max_wait_ms, cfg.max_queue, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        log.info("serving %s (monitor %s) with batches of up to %d", name, monitor, cfg.max_batch_size)
        yield
        await batcher.stop()

    app = FastAPI(title="vrp serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.metrics, app.state.config = batcher, metrics, cfg

    def error(e: RequestError) -> JSONResponse:
        metrics.errors.labels(e.code).inc()
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(RequestError(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(RequestError(500, "internal_error", f"the server failed on this request: {type(exc).__name__}"))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        t = time.perf_counter()
        status = 500
        try:
            doc = _decode_json(await _read_body(request, cfg.max_request_bytes))
            req = parse_chat_request(doc, name, cfg.max_image_bytes)
            image = await run_in_threadpool(read_image, req.image, root, cfg.max_image_bytes, cfg.max_image_pixels)
            a = await batcher.submit(image, req.question)
            metrics.answered(a.p_correct, a.abstain)
            status = 200
            return JSONResponse(_completion(a, req.max_tokens, name, identity, ad.tokenizer, stops))
        except RequestError as e:
            status = e.status
            return error(e)
        except asyncio.CancelledError:  # the client hung up
            status = 499
            raise
        finally:
            metrics.requests.labels(str(status)).inc()
            metrics.latency.observe(time.perf_counter() - t)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(name, identity)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Response:
        if model_id != name:
            return error(RequestError(404, "model_not_found", f"model {model_id!r} is not served here", "model"))
        return JSONResponse(_model_card(name, identity))

    @app.get("/health")
    async def health() -> Response:
        state = "draining" if batcher.draining else "ok"
        doc = {"status": state, "model": name, "threshold": monitor.threshold, "monitor": identity}
        return JSONResponse(doc, status_code=503 if batcher.draining else 200)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    too_big = RequestError(413, "request_too_large", f"the request body is over the server's limit of {limit} bytes")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_big
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_json(body: bytes) -> Any:
    if not body.strip():
        raise RequestError(400, "malformed_json", "the request body is empty: send a JSON chat-completion request")
    try:
        return json.loads(body)
    except UnicodeDecodeError as e:
        raise RequestError(400, "malformed_json", f"the request body is not UTF-8: {e}") from None
    except json.JSONDecodeError as e:
        raise RequestError(400, "malformed_json", f"the request body is not valid JSON: {e}") from None


def _model_card(name: str, identity: dict) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "vrp", "vrp": identity}


def _completion(a: Any, max_tokens: int | None, name: str, identity: dict, tokenizer: Any, stops: set[int]) -> dict:
    """A chat completion of the answer ``a`` (a :class:`vrp.Answer`), with its ``vrp`` object.

    ``max_tokens`` below the answer's length cuts it there: with greedy decoding that is exactly
    the answer a call with that cap gives, and p_correct (read at prefill) is unchanged.
    """
    ids, text = list(a.token_ids), a.text
    if max_tokens is not None and len(ids) > max_tokens:
        ids = ids[:max_tokens]
        text = decode_answer(tokenizer, ids, stops)
    finish = "stop" if ids and ids[-1] in stops else "length"
    verdict = {
        "p_correct": a.p_correct,
        "abstain": a.abstain,
        "threshold": a.threshold,
        "predicted_consistency": getattr(a, "predicted_consistency", None),
        "monitor": identity,
    }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
        ],
        "usage": {"completion_tokens": len(ids)},
        "vrp": verdict,
    }
