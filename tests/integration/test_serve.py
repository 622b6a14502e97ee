"""`vrp serve` end to end: real server processes on loopback (an ephemeral port), the shipped
toy-llava and a monitor exported from a small run made here. Answers equal `Monitor.ask` alone,
batched or not; every bad input is a 4xx with a clear JSON error and the server goes on; a
request that fails inside the model fails alone; SIGTERM answers what is in flight; the
README's curl and Python examples run against the server."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
prometheus_parser = pytest.importorskip("prometheus_client.parser")

from PIL import Image  # noqa: E402

from tests.helpers import bomb_png, cli_run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # a tiny toy run

ROOT = Path(__file__).resolve().parents[2]
# The server batches concurrent requests with left padding. Greedy answers and their token ids
# equal the ones each request gets alone (asserted exactly); p_correct moves by float32 batch
# effects on the residual, which float16 rounding removes except where a unit sits on a
# rounding boundary: at most 1e-3 (tests/integration/test_monitor.py, ATOL_OTHER_BATCH).
ATOL_P_BATCHED = 1e-3
LIMITS = {"max_request_bytes": 300_000, "max_image_bytes": 100_000, "max_image_pixels": 250_000}
READY = re.compile(r"ready on (http://\S+?) ")
CLIENT_TIMEOUT = 300  # seconds: a client that waits longer means the server hung (never a timing assertion)


# ---- the monitor, the reference, the images -----------------------------------------------


@pytest.fixture(scope="module")
def monitor_dir(tmp_path_factory):
    from vrp.analysis.config import ProbeConfig
    from vrp.analysis.probing import train_probes
    from vrp.monitor import export_monitor

    base = tmp_path_factory.mktemp("serve")
    cli_run(base / "run", "--data", "shapesworld:16", "--samples", "4", "--max-new-tokens", "4", "--seed", "5")
    train_probes(base / "run", ProbeConfig(stacked_k=2, mlp_hidden=8, trees=5, max_iter=300))
    export_monitor(base / "run", base / "monitor", target_coverage=0.8)
    return base / "monitor"


@pytest.fixture(scope="module")
def reference(monitor_dir):
    """The same monitor in this process: what `Monitor.ask` answers for one request alone."""
    from vrp.models import load_adapter
    from vrp.monitor import Monitor

    return Monitor.load(monitor_dir).attach(load_adapter("toy-llava"))


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    """The --allow-paths root: fresh ShapesWorld images (the run never saw them), a link out of it."""
    import vrp

    root = tmp_path_factory.mktemp("allowed").resolve()
    items = vrp.load_items("shapesworld:4", root=root / "set", seed=11)
    Image.new("RGB", (8, 8)).save(root.parent / "outside.png")
    (root / "escape.png").symlink_to(root.parent / "outside.png")
    return root, items


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def chat(question: str, url: str, **extra) -> dict:
    content = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]
    return {"model": "toy-llava", "messages": [{"role": "user", "content": content}], **extra}


# ---- servers -------------------------------------------------------------------------------


class Server:
    """A server process on 127.0.0.1 with an ephemeral port; its log goes to a file (a full pipe would block it)."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=log.parent,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})})  # fmt: skip
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            m = READY.search(self.log_path.read_text())
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n{self.log_path.read_text()}")
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the server did not start:\n{self.log_path.read_text()}")

    def request(self, path: str, body: bytes | dict | None = None, method: str | None = None) -> tuple[int, dict | str]:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT) as r:
                status, raw, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        return status, json.loads(raw) if "json" in ctype else raw.decode()

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, parsed by prometheus_client's parser: 'name{a="b"}' -> value."""
        status, text = self.request("/metrics")
        assert status == 200
        out = {}
        for family in prometheus_parser.text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()


def serve_args(monitor_dir: Path, root: Path, **options) -> list[str]:
    opts = {"port": 0, "allow_paths": root, "log_level": "warning", **LIMITS, **options}
    args = [sys.executable, "-m", "vrp.cli", "serve", "--monitor", str(monitor_dir)]
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


@pytest.fixture(scope="module")
def server(monitor_dir, allowed, tmp_path_factory):
    """`vrp serve` as a user starts it (the CLI), batches of up to 4 gathered for 50 ms."""
    s = Server(serve_args(monitor_dir, allowed[0], max_batch_size=4, max_wait_ms=50),
               tmp_path_factory.mktemp("srv") / "server.log")  # fmt: skip
    yield s
    assert s.stop() == 0, s.log_path.read_text()


# Serves the same monitor through vrp.serve.serve with a model that runs out of memory on any batch
# holding the word EXPLODE; batches of up to 4 that wait up to 10 minutes to fill, so a batch is
# sent when it is full or when SIGTERM drains the queue: no timing decides what is batched.
FAULTY = textwrap.dedent("""
    import sys, torch
    import vrp
    from vrp.serve import ServeConfig, serve

    class Faulty:
        def __init__(self, monitor):
            self._monitor = monitor
        def __getattr__(self, name):
            return getattr(self._monitor, name)
        def ask_many(self, images, questions, batch_size=None):
            if any("EXPLODE" in q for q in questions):
                raise torch.OutOfMemoryError("CUDA out of memory (simulated by the test)")
            return self._monitor.ask_many(images, questions, batch_size)

    monitor = vrp.Monitor.load(sys.argv[1]).attach(vrp.load("toy-llava"))
    cfg = ServeConfig(port=0, max_batch_size=4, max_wait_ms=600_000)
    serve(Faulty(monitor), cfg, on_ready=lambda url: print(f"ready on {url} ", flush=True), log_level="warning",
          restore_signals=False)  # as `vrp serve`: the test's stop() may repeat SIGTERM while the process ends
    print("stopped", flush=True)
""")


@pytest.fixture(scope="module")
def faulty(monitor_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("faulty")
    (d / "faulty.py").write_text(FAULTY)
    s = Server([sys.executable, str(d / "faulty.py"), str(monitor_dir)], d / "server.log")
    yield s
    s.stop()


def fan_out(fn, jobs: list) -> list:
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(fn, jobs))


def assert_same_as_alone(reply: dict, reference, image, question: str) -> None:
    alone = reference.ask(image, question)
    v = reply["vrp"]
    assert reply["object"] == "chat.completion" and reply["model"] == "toy-llava"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": alone.text}
    assert reply["usage"]["completion_tokens"] == len(alone.token_ids)
    assert v["p_correct"] == pytest.approx(alone.p_correct, abs=ATOL_P_BATCHED)
    assert v["threshold"] == alone.threshold and v["abstain"] == (v["p_correct"] < v["threshold"])
    if alone.predicted_consistency is None:
        assert v["predicted_consistency"] is None
    else:
        assert v["predicted_consistency"] == pytest.approx(alone.predicted_consistency, abs=ATOL_P_BATCHED)


# ---- the service ---------------------------------------------------------------------------


def test_health_models_and_identity(server, monitor_dir):
    info = json.loads((monitor_dir / "monitor.json").read_text())
    status, health = server.request("/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == "toy-llava"
    ident = health["monitor"]
    assert ident["model_sha256"] == info["model"]["sha256"]
    assert ident["model_content_sha256"] == info["model"]["content_sha256"]
    assert ident["residual_layer"] == info["probe"]["residual_layer"]
    assert ident["val_auroc"] == pytest.approx(info["metrics"]["val"]["auroc"])
    assert health["threshold"] == pytest.approx(info["threshold"]["value"])
    status, models = server.request("/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["toy-llava"]
    assert models["data"][0]["vrp"] == ident
    assert server.request("/v1/models/toy-llava")[0] == 200 and server.request("/v1/models/other")[0] == 404
    assert server.metrics()[f'vrp_monitor_info{{model="toy-llava",model_sha256="{info["model"]["sha256"]}",'
                            f'residual_layer="{info["probe"]["residual_layer"]}"}}'] == 1  # fmt: skip


def test_concurrent_clients_get_the_answers_of_monitor_ask_alone(server, reference, allowed):
    root, items = allowed
    before = server.metrics()
    jobs = []
    for k, it in enumerate(items[:8]):  # questions of several lengths: left padding inside a batch
        image = Image.open(it.image)
        url = data_url(png_bytes(image)) if k % 2 else str(Path(it.image).resolve().relative_to(root))
        jobs.append((it, url))
    replies = fan_out(lambda job: server.request("/v1/chat/completions", chat(job[0].question, job[1])), jobs)
    for (it, _), (status, reply) in zip(jobs, replies, strict=True):
        assert status == 200, reply
        assert_same_as_alone(reply, reference, Image.open(it.image), it.question)
    assert len({r["id"] for _, r in replies}) == len(jobs)
    after = server.metrics()

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert grew('vrp_requests_total{status="200"}') == len(jobs) == grew("vrp_answers_total")
    assert grew("vrp_batch_size_sum") == len(jobs)  # every answer came out of exactly one batch
    assert 1 <= grew("vrp_batch_size_count") <= len(jobs)
    assert grew("vrp_abstentions_total") == sum(r["vrp"]["abstain"] for _, r in replies)
    assert grew("vrp_request_duration_seconds_count") == len(jobs)
    n = after["vrp_window_answers"]
    p = sorted(r["vrp"]["p_correct"] for _, r in replies)
    assert n >= len(jobs) and 0 <= after['vrp_p_correct_window_quantile{quantile="0.5"}'] <= 1
    if n == len(jobs):  # the window holds exactly these answers (this test ran first)
        assert after["vrp_p_correct_window_mean"] == pytest.approx(sum(p) / len(p))
        assert after["vrp_abstain_rate_window"] == pytest.approx(sum(r["vrp"]["abstain"] for _, r in replies) / n)
        assert after['vrp_p_correct_window_share_below{below="0.5"}'] == pytest.approx(sum(x < 0.5 for x in p) / n)


def test_max_tokens_cuts_the_greedy_answer(server, reference, allowed):
    it = allowed[1][0]
    alone = reference.ask(Image.open(it.image), it.question)
    status, reply = server.request("/v1/chat/completions", chat(it.question, data_url(Path(it.image).read_bytes()),
                                                                max_tokens=1, temperature=0))  # fmt: skip
    assert status == 200 and reply["usage"]["completion_tokens"] == 1
    assert reply["choices"][0]["finish_reason"] == ("stop" if len(alone.token_ids) == 1 else "length")
    assert reply["vrp"]["p_correct"] == pytest.approx(alone.p_correct, abs=ATOL_P_BATCHED)


def _bad_requests(root: Path, items) -> list[tuple[str, bytes | dict, int, str]]:
    good = Path(items[0].image)
    q = items[0].question
    png = good.read_bytes()
    noise = Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3))  # incompressible: ~120 kB as PNG
    (root / "notes.txt").write_text("not an image\n")
    (root / "half.png").write_bytes(png_bytes(Image.new("RGB", (64, 64), "red"))[:-40])
    bomb = bomb_png(root / "bomb.png", 30_000)
    return [
        ("malformed JSON", b'{"messages": [', 400, "malformed_json"),
        ("empty body", b"", 400, "malformed_json"),
        ("not an object", b"[1, 2]", 400, "invalid_request"),
        ("no image", {"messages": [{"role": "user", "content": q}]}, 400, "missing_image"),
        ("no image part", {"messages": [{"role": "user", "content": [{"type": "text", "text": q}]}]}, 400, "missing_image"),
        ("two images", {"messages": [{"role": "user", "content": [{"type": "text", "text": q}] + 2 * [
            {"type": "image_url", "image_url": {"url": data_url(png)}}]}]}, 400, "too_many_images"),
        ("no question", chat("  ", data_url(png)), 400, "missing_question"),
        ("non-image bytes", chat(q, data_url(b"%PDF-1.4 not a picture")), 400, "not_an_image"),
        ("non-image media type", chat(q, data_url(png, "text/plain")), 400, "not_an_image"),
        ("non-image file", chat(q, "notes.txt"), 400, "not_an_image"),
        ("bad base64", chat(q, "data:image/png;base64,@@@"), 400, "invalid_image_url"),
        ("truncated file", chat(q, "half.png"), 400, "corrupt_image"),
        ("truncated data URL", chat(q, data_url(png[: len(png) // 2])), 400, "corrupt_image"),
        ("too many pixels", chat(q, data_url(png_bytes(Image.new("RGB", (600, 600))))), 413, "image_too_large"),
        ("too many bytes", chat(q, data_url(png_bytes(noise))), 413, "image_too_large"),
        ("decompression bomb", chat(q, str(bomb)), 413, "image_too_large"),
        ("request too large", b'{"pad": "' + b"x" * 400_000 + b'"}', 413, "request_too_large"),
        ("path outside the root", chat(q, "../outside.png"), 403, "path_outside_root"),
        ("absolute path outside", chat(q, "/etc/hostname"), 403, "path_outside_root"),
        ("file URL outside", chat(q, "file:///etc/hostname"), 403, "path_outside_root"),
        ("symlink escaping the root", chat(q, "escape.png"), 403, "path_outside_root"),
        ("missing file", chat(q, "set/no-such.png"), 400, "image_not_found"),
        ("a folder", chat(q, "set"), 400, "image_not_found"),
        ("remote URL", chat(q, "https://example.com/cat.png"), 400, "remote_url_refused"),
        ("another model", {**chat(q, data_url(png)), "model": "gpt-4o"}, 404, "model_not_found"),
        ("streaming", chat(q, data_url(png), stream=True), 400, "unsupported_parameter"),
        ("sampling", chat(q, data_url(png), temperature=0.7), 400, "unsupported_parameter"),
        ("unknown field", chat(q, data_url(png), tools=[]), 400, "unsupported_parameter"),
        ("bad max_tokens", chat(q, data_url(png), max_tokens=0), 400, "invalid_value"),
        ("system turn", {"messages": [{"role": "system", "content": "be brief"}] + chat(q, data_url(png))["messages"]},
         400, "unsupported_messages"),
        ("audio part", {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, 400, "unsupported_content"),
    ]  # fmt: skip


def test_bad_input_is_a_clear_4xx_and_the_server_goes_on(server, reference, allowed):
    root, items = allowed
    bad = _bad_requests(root, items)
    before = server.metrics()
    replies = fan_out(lambda b: server.request("/v1/chat/completions", b[1]), bad)  # concurrently
    for (what, _, status, code), (got, reply) in zip(bad, replies, strict=True):
        assert got == status, f"{what}: {got} {reply}"
        err = reply["error"]
        assert err["code"] == code and err["message"] and err["type"] == "invalid_request_error", what
    after = server.metrics()
    for code in {b[3] for b in bad}:
        key = f'vrp_request_errors_total{{kind="{code}"}}'
        assert after[key] - before.get(key, 0) == sum(b[3] == code for b in bad), code
    # unknown routes and methods answer JSON too, and the server still answers
    status, reply = server.request("/v1/completions", {})
    assert status == 404 and reply["error"]["code"] == "not_found"
    assert server.request("/v1/chat/completions", method="GET")[0] == 405
    it = items[2]
    status, reply = server.request("/v1/chat/completions", chat(it.question, data_url(Path(it.image).read_bytes())))
    assert status == 200
    assert_same_as_alone(reply, reference, Image.open(it.image), it.question)
    assert server.request("/health")[0] == 200


def test_readme_examples_run_against_the_server(server, allowed, tmp_path):
    """The README's curl and Python client examples, with the server's address for localhost, 8000."""
    readme = (ROOT / "README.md").read_text()
    shutil.copy(allowed[1][0].image, tmp_path / "cat.png")
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    for kind in ("curl", "python"):
        m = re.search(rf"<!-- serve-example: {kind} -->\n```(\w+)\n(.*?)^```", readme, re.S | re.M)
        assert m, f"README.md has no serve example marked <!-- serve-example: {kind} -->"
        code = m.group(2).replace("localhost:8000", f"{host}:{port}").replace('"localhost", 8000', f'"{host}", {port}')
        assert code != m.group(2), f"the {kind} example does not name localhost and port 8000"
        if kind == "curl":
            if shutil.which("curl") is None:
                pytest.skip("curl is not installed")
            out = subprocess.run(["bash", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr
            reply = json.loads(out.stdout)
            assert reply["choices"][0]["message"]["content"] and 0 <= reply["vrp"]["p_correct"] <= 1
        else:
            out = subprocess.run(
                [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
            )
            assert out.returncode == 0, out.stderr
            assert "p_correct" in out.stdout and "abstain" in out.stdout


# ---- faults and shutdown -------------------------------------------------------------------


def test_a_request_failing_in_the_model_fails_alone(faulty, reference, allowed):
    items = allowed[1]
    jobs = [(it.question if k != 1 else f"EXPLODE {it.question}", it) for k, it in enumerate(items[:4])]
    replies = fan_out(lambda j: faulty.request("/v1/chat/completions",
                                               chat(j[0], data_url(Path(j[1].image).read_bytes()))), jobs)  # fmt: skip
    for k, ((question, it), (status, reply)) in enumerate(zip(jobs, replies, strict=True)):
        if k == 1:
            assert status == 500 and reply["error"]["code"] == "out_of_memory", reply
            assert reply["error"]["type"] == "server_error" and "out of memory" in reply["error"]["message"]
        else:
            assert status == 200, reply
            assert_same_as_alone(reply, reference, Image.open(it.image), question)
    m = faulty.metrics()
    assert m["vrp_batch_retries_total"] == 1 and m['vrp_request_errors_total{kind="out_of_memory"}'] == 1
    assert m["vrp_batch_size_count"] == 1 and m["vrp_batch_size_sum"] == 4  # one full batch, then one by one
    assert faulty.request("/health")[0] == 200


def test_sigterm_answers_the_requests_in_flight(faulty, reference, allowed):
    """Three requests wait in a batch that would wait 10 minutes to fill; SIGTERM sends it at once,
    all three are answered (batched together: the answers of each alone), and the process exits 0."""
    items = allowed[1][4:7]
    with ThreadPoolExecutor(len(items)) as pool:
        futures = [pool.submit(faulty.request, "/v1/chat/completions",
                               chat(it.question, data_url(Path(it.image).read_bytes()))) for it in items]  # fmt: skip
        deadline = time.monotonic() + CLIENT_TIMEOUT  # a guard against a hang, not a timing assertion
        while faulty.metrics()["vrp_queue_depth"] < len(items):  # all three wait in the batch being filled
            assert not any(f.done() for f in futures), [f.result() for f in futures if f.done()]
            assert time.monotonic() < deadline, "the requests never reached the batcher"
            time.sleep(0.05)
        faulty.proc.send_signal(signal.SIGTERM)
        replies = [f.result() for f in futures]
    for it, (status, reply) in zip(items, replies, strict=True):
        assert status == 200, reply
        assert_same_as_alone(reply, reference, Image.open(it.image), it.question)
    assert faulty.stop() == 0, faulty.log_path.read_text()
    assert "stopped" in faulty.log_path.read_text()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(faulty.url + "/health", timeout=30)
