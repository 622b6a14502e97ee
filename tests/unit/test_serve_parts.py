"""The parts of `vrp serve` without a model: request checks, image reading under a root, the
batcher (with a stand-in for Monitor.ask_many), the metrics' text format, the options."""

from __future__ import annotations

import asyncio
import base64
import io
import math

import numpy as np
import pytest
from PIL import Image

from tests.helpers import bomb_png
from vrp.config import ConfigError
from vrp.serve.config import ServeConfig
from vrp.serve.protocol import ImageRef, RequestError, parse_chat_request, read_image

prometheus_parser = pytest.importorskip("prometheus_client.parser")

MB = 2**20


def png(size=(8, 8), color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def request(*parts, **extra) -> dict:
    return {"messages": [{"role": "user", "content": list(parts)}], **extra}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def image(u: str) -> dict:
    return {"type": "image_url", "image_url": {"url": u}}


def err(fn, *args) -> RequestError:
    with pytest.raises(RequestError) as e:
        fn(*args)
    return e.value


def refused(doc, limit: int = MB) -> RequestError:
    with pytest.raises(RequestError) as e:
        parse_chat_request(doc, "toy", limit)
    return e.value


# ---- requests ------------------------------------------------------------------------------


def test_a_request_gives_its_question_image_and_cap():
    raw = png()
    r = parse_chat_request(request(text(" Is there "), image(url(raw)), text("a dog? ")), "toy", MB)
    assert r.question == "Is there a dog?" and r.image.data == raw and r.max_tokens is None
    r = parse_chat_request(request(text("q"), {"type": "image_url", "image_url": "x/y.png"}, max_tokens=3,
                                   model="toy", temperature=0, top_p=1, n=1, stream=False, seed=1), "toy", MB)  # fmt: skip
    assert (r.image.path, r.image.data, r.max_tokens) == ("x/y.png", None, 3)
    assert parse_chat_request(request(text("q"), image("file:///a/b.png")), "toy", MB).image.path == "/a/b.png"
    assert parse_chat_request(request(text("q"), image(url(raw))), "toy", MB).image.param == "messages[0].content[1]"


@pytest.mark.parametrize(
    ("doc", "status", "code"),
    [
        ([1], 400, "invalid_request"),
        ({"messages": []}, 400, "invalid_request"),
        ({"messages": ["hi"]}, 400, "invalid_request"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "missing_image"),
        (request(text("q")), 400, "missing_image"),
        (request(text("q"), image(url(png())), image(url(png()))), 400, "too_many_images"),
        (request(image(url(png()))), 400, "missing_question"),
        (request(text("q"), {"type": "video"}), 400, "unsupported_content"),
        (request(text("q"), {"type": "image_url", "image_url": {}}), 400, "invalid_request"),
        (request(text("q"), image("data:image/png,abc")), 400, "invalid_image_url"),
        (request(text("q"), image("data:image/png;base64,a b")), 400, "invalid_image_url"),
        (request(text("q"), image(url(png(), "application/pdf"))), 400, "not_an_image"),
        (request(text("q"), image("http://example.com/a.png")), 400, "remote_url_refused"),
        (request(text("q"), image(url(png())), model="other"), 404, "model_not_found"),
        (request(text("q"), image(url(png())), temperature=1.0), 400, "unsupported_parameter"),
        (request(text("q"), image(url(png())), temperature=True), 400, "unsupported_parameter"),
        (request(text("q"), image(url(png())), top_p=0.9), 400, "unsupported_parameter"),
        (request(text("q"), image(url(png())), n=2), 400, "unsupported_parameter"),
        (request(text("q"), image(url(png())), stream=True), 400, "unsupported_parameter"),
        (request(text("q"), image(url(png())), logprobs=True), 400, "unsupported_parameter"),
        (request(text("q"), image(url(png())), max_tokens=0), 400, "invalid_value"),
        (request(text("q"), image(url(png())), max_tokens=True), 400, "invalid_value"),
        (
            {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": []}]},
            400,
            "unsupported_messages",
        ),
        ({"messages": [{"role": "user", "content": []}]}, 400, "invalid_request"),
    ],
)
def test_bad_requests_are_refused_with_their_code(doc, status, code):
    e = refused(doc)
    assert (e.status, e.code) == (status, code)
    body = e.body()["error"]
    assert body["code"] == code and body["message"] and body["type"] == "invalid_request_error"


def test_an_image_over_the_byte_limit_is_refused_before_decoding():
    e = refused(request(text("q"), image(url(b"\0" * 5000))), limit=4000)
    assert (e.status, e.code) == (413, "image_too_large") and "4000" in e.message
    assert RequestError(500, "model_error", "x").body()["error"]["type"] == "server_error"


# ---- images --------------------------------------------------------------------------------


def test_read_image_decodes_as_rgb_and_checks_pixels_before_decoding(tmp_path):
    im = read_image(ImageRef(data=png((5, 4), "blue")), None, MB, 100)
    assert im.mode == "RGB" and im.size == (5, 4) and im.getpixel((0, 0)) == (0, 0, 255)
    e = err(read_image, ImageRef(data=png((20, 20))), None, MB, 399)
    assert (e.status, e.code) == (413, "image_too_large") and "20x20 = 400 pixels" in e.message
    bomb = bomb_png(tmp_path / "bomb.png", 50_000).read_bytes()
    assert err(read_image, ImageRef(data=bomb), None, MB, 10**6).code == "image_too_large"
    assert err(read_image, ImageRef(data=b"GIF89a..."), None, MB, 100).code == "not_an_image"
    assert err(read_image, ImageRef(data=b"hello"), None, MB, 100).code == "not_an_image"
    cut = png((32, 32))[:-30]
    assert err(read_image, ImageRef(data=cut), None, MB, 10**4).code == "corrupt_image"


def test_paths_stay_inside_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.png").write_bytes(png())
    (outside / "b.png").write_bytes(png())
    (root / "link.png").symlink_to(outside / "b.png")
    (root / "dirlink").symlink_to(outside)
    (root / "inner.png").symlink_to(root / "sub" / "a.png")
    (root / "big.png").write_bytes(png((300, 300)))
    root = root.resolve()

    def read(path):
        return read_image(ImageRef(path=path), root, 200, 10**6)

    assert read("sub/a.png").size == (8, 8)
    assert read(str(root / "sub" / "a.png")).size == (8, 8)
    assert read("inner.png").size == (8, 8)  # a link that stays inside is fine
    assert read("sub/../sub/a.png").size == (8, 8)
    for escape in ("../outside/b.png", str(outside / "b.png"), "link.png", "dirlink/b.png", "/etc/passwd",
                   "../outside/missing.png", "sub/../../outside/b.png"):  # fmt: skip
        e = err(read, escape)
        assert (e.status, e.code) == (403, "path_outside_root"), escape
    assert err(read, "sub/missing.png").code == "image_not_found"
    assert err(read, "sub").code == "image_not_found"
    assert err(read, "big.png").code == "image_too_large"
    e = err(read_image, ImageRef(path="sub/a.png"), None, 200, 10**6)
    assert (e.status, e.code) == (403, "paths_not_allowed")


# ---- the batcher ---------------------------------------------------------------------------


class Answer:
    def __init__(self, q: str):
        self.text, self.p_correct, self.abstain = q.upper(), 0.5, False


def run(coro):
    return asyncio.run(coro)


def make(answer_fn, **kw):
    from vrp.serve.batching import Batcher
    from vrp.serve.metrics import Metrics

    metrics = Metrics(10, kw.get("max_batch_size", 4), {"model": "m"})
    opts = {"max_batch_size": 4, "max_wait_ms": 1000.0, "max_queue": 16, **kw}
    return Batcher(answer_fn, metrics=metrics, **opts), metrics


def test_concurrent_requests_are_batched_in_order_and_the_rest_waits():
    calls = []

    def answer(images, questions):
        calls.append(list(questions))
        return [Answer(q) for q in questions]

    async def main():
        b, metrics = make(answer, max_batch_size=4, max_wait_ms=5.0)
        b.start()
        out = await asyncio.gather(*(b.submit(None, f"q{k}") for k in range(6)))
        await b.stop()
        return out, metrics

    out, metrics = run(main())
    assert [a.text for a in out] == [f"Q{k}" for k in range(6)]
    assert calls == [["q0", "q1", "q2", "q3"], ["q4", "q5"]]  # queued together: full batch, then the rest
    m = _samples(metrics.render())
    assert m["vrp_batch_size_count"] == 2 and m["vrp_batch_size_sum"] == 6


def test_a_failing_batch_is_retried_one_by_one_and_only_the_bad_request_fails():
    calls = []

    class OutOfMemoryError(RuntimeError):
        pass

    def answer(images, questions):
        calls.append(list(questions))
        if "bad" in questions:
            raise OutOfMemoryError("CUDA out of memory")
        return [Answer(q) for q in questions]

    async def main():
        b, metrics = make(answer)
        b.start()
        out = await asyncio.gather(*(b.submit(None, q) for q in ("a", "bad", "c")), return_exceptions=True)
        await b.stop()
        return out, metrics

    out, metrics = run(main())
    assert out[0].text == "A" and out[2].text == "C"
    assert isinstance(out[1], RequestError) and (out[1].status, out[1].code) == (500, "out_of_memory")
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert _samples(metrics.render())["vrp_batch_retries_total"] == 1


def test_a_full_queue_and_a_draining_server_refuse_with_503_and_stop_answers_what_is_queued():
    def answer(images, questions):
        return [Answer(q) for q in questions]

    async def main():
        b, _ = make(answer, max_queue=2, max_batch_size=8, max_wait_ms=60_000.0)
        waiting = [asyncio.ensure_future(b.submit(None, q)) for q in ("a", "b")]
        await asyncio.sleep(0)  # both queued; the batcher is not started yet
        with pytest.raises(RequestError) as full:
            await b.submit(None, "c")
        b.start()
        await asyncio.sleep(0.05)  # the batcher holds the batch, waiting for it to fill
        assert not any(w.done() for w in waiting) and b.waiting() == 2
        await b.stop()  # drains: the batch goes now, not in a minute
        with pytest.raises(RequestError) as draining:
            await b.submit(None, "d")
        return [w.result().text for w in waiting], full.value, draining.value

    answers, full, draining = run(main())
    assert answers == ["A", "B"]
    assert (full.status, full.code) == (503, "overloaded") and (draining.status, draining.code) == (
        503,
        "shutting_down",
    )


def test_a_model_answering_too_few_fails_the_request():
    async def main():
        b, _ = make(lambda images, questions: [], max_wait_ms=0.0)
        b.start()
        try:
            return await asyncio.gather(b.submit(None, "a"), return_exceptions=True)
        finally:
            await b.stop()

    (err,) = run(main())
    assert isinstance(err, RequestError) and (err.status, err.code) == (500, "model_error")


# ---- metrics -------------------------------------------------------------------------------


def _samples(text: bytes) -> dict[str, float]:
    out = {}
    for family in prometheus_parser.text_string_to_metric_families(text.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_metrics_parse_as_prometheus_text_and_the_window_rolls():
    from vrp.serve.metrics import Metrics

    m = Metrics(window=4, max_batch_size=8, identity={"model": "toy", "residual_layer": "3"})
    empty = _samples(m.render())
    assert empty["vrp_window_answers"] == 0 and math.isnan(empty["vrp_p_correct_window_mean"])
    ps = [0.05, 0.9, 0.3, 0.6, 0.8, 0.15]
    for p in ps:
        m.answered(p, p < 0.5)
    m.errors.labels("malformed_json").inc()
    m.requests.labels("200").inc(6)
    s = _samples(m.render())
    last = np.array(ps[-4:])
    assert s["vrp_window_answers"] == 4 and s["vrp_p_correct_window_mean"] == pytest.approx(last.mean())
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        assert s[f'vrp_p_correct_window_quantile{{quantile="{q}"}}'] == pytest.approx(np.quantile(last, q))
    assert s['vrp_p_correct_window_share_below{below="0.5"}'] == pytest.approx(0.5)
    assert s["vrp_abstain_rate_window"] == pytest.approx(0.5)
    assert s["vrp_answers_total"] == 6 and s["vrp_abstentions_total"] == 3  # cumulative, not windowed
    assert s['vrp_p_correct_bucket{le="0.5"}'] == 3 and s['vrp_p_correct_bucket{le="+Inf"}'] == 6
    assert s['vrp_request_errors_total{kind="malformed_json"}'] == 1 and s['vrp_requests_total{status="200"}'] == 6
    assert s['vrp_monitor_info{model="toy",residual_layer="3"}'] == 1


# ---- options -------------------------------------------------------------------------------


def test_serve_config_checks_its_values():
    assert ServeConfig().host == "127.0.0.1" and ServeConfig().loopback
    assert not ServeConfig(host="0.0.0.0").loopback and ServeConfig(host="::1").loopback
    for bad in ({"port": 70000}, {"max_batch_size": 0}, {"max_wait_ms": -1}, {"max_queue": 0},
                {"max_image_pixels": 10**9}, {"max_request_bytes": 10}, {"host": ""}, {"served_model_name": " "},
                {"max_batch_size": True}):  # fmt: skip
        with pytest.raises(ConfigError):
            ServeConfig(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        ServeConfig.from_dict({"workers": 2})


def test_serve_keeps_ignoring_a_repeated_sigterm_after_shutdown_unless_asked_to_restore(monkeypatch):
    """A supervisor may repeat SIGTERM while the process ends: `vrp serve` (restore_signals=False)
    keeps the no-op handler, so the repeat cannot end it with status -15; a library caller gets its
    own handlers back."""
    import signal
    import types

    from vrp.serve import server

    app = types.SimpleNamespace(state=types.SimpleNamespace(batcher=types.SimpleNamespace(drain=lambda: None)))
    monkeypatch.setattr(server, "create_app", lambda monitor, cfg: app)
    monkeypatch.setattr(server._Server, "run", lambda self, sockets=None: None)  # shut down at once
    mine, mine_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        server.serve(None, ServeConfig(port=0), restore_signals=False)
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        signal.signal(signal.SIGTERM, mine)
        server.serve(None, ServeConfig(port=0))
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, mine)
        signal.signal(signal.SIGINT, mine_int)


def test_the_listening_socket_gives_connections_tcp_nodelay():
    """asyncio sets TCP_NODELAY only on accepted sockets whose proto is TCP; socket.create_server's
    proto 0 left Nagle's algorithm on, and every response waited ~40 ms for the client's delayed ACK."""
    import socket

    from vrp.serve.server import bind

    async def main() -> int:
        sock = bind("127.0.0.1", 0)
        seen: list[int] = []

        async def handle(reader, writer):
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            await reader.read()
            writer.close()
        return seen[0]

    assert asyncio.run(main()) != 0
