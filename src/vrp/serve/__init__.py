"""The reliability monitor as an HTTP service: ``vrp serve`` (docs/serve.md).

Example::

    import vrp
    from vrp.serve import ServeConfig, serve

    monitor = vrp.Monitor.load("monitors/llava").attach(vrp.load("/models/llava-1.5-7b-hf"))
    serve(monitor, ServeConfig(port=8000))   # POST /v1/chat/completions, GET /health, /v1/models, /metrics

Names are imported on first use, so reading :mod:`vrp.serve.config` loads neither torch nor
the web stack (FastAPI, uvicorn, prometheus_client: ``pip install 'vrp[serve]'``).
"""

from vrp._lazy import lazy_dir, lazy_getattr

_EXPORTS = {
    "Batcher": "vrp.serve.batching",
    "RequestError": "vrp.serve.protocol",
    "ServeConfig": "vrp.serve.config",
    "create_app": "vrp.serve.app",
    "monitor_identity": "vrp.serve.app",
    "serve": "vrp.serve.server",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
