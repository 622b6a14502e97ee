"""`vrp serve` under load on loopback (issue 26): throughput against sequential `Monitor.ask`,
p50 / p99 latency, and no answer lost or duplicated.

One run, side by side: the same fixed set of R requests (ShapesWorld images, each a PNG data
URL, and their questions) answered

    sequential   Monitor.ask one request at a time in this process (the model in memory, images
                 already decoded: the best a single caller can do), before and after the server
                 runs (the mean of both passes, so the machine's drift hits both sides alike)
    served       POST /v1/chat/completions to a `vrp serve` process on 127.0.0.1 (an ephemeral
                 port), by N concurrent clients for each N of --clients, each client with its own
                 keep-alive connection, taking requests from the shared list until it is empty

The load is bounded: R requests per N, each client stops when the list is empty, and the
whole run stops at --max-seconds whatever is left. Every request carries its index in the
question's list; the script checks that each is answered exactly once (no lost, no duplicated
answer, every completion id distinct) with the greedy text `Monitor.ask` gives it alone and its
p_correct within 1e-3 (batch effects, docs/serve.md), and that the server's answer counter
grew by R. The monitor's probe weights are random (the cost does not depend on them); it is
attached to the model like a real one.

    python bench/serve_bench.py [--model toy-llava] [--requests 64] [--clients 1,4,16]
                                [--max-batch-size 8] [--max-wait-ms 10] [--threads 1]

Only loopback traffic: the server binds 127.0.0.1 and the clients connect nowhere else.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _models import long_context_model
from monitor_bench import make_monitor

HOST = "127.0.0.1"


def requests_for(n: int, size: int) -> tuple[list, list[str], list[bytes]]:
    """n (image, question) pairs from ShapesWorld, and each request's JSON body."""
    from vrp.world.dataset import generate
    from vrp.world.scene import WorldConfig, render

    data, _ = generate(max(1, n // 3 + 1), seed=7)
    pairs = [(render(d.scene, WorldConfig()).resize((size, size)), q.question) for d in data for q in d.questions]
    pairs = pairs[:n]
    bodies = []
    for image, question in pairs:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        content = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]
        bodies.append(json.dumps({"messages": [{"role": "user", "content": content}]}).encode())
    return [p[0] for p in pairs], [p[1] for p in pairs], bodies


def sequential(monitor, images, questions) -> tuple[float, list]:
    t = time.perf_counter()
    answers = [monitor.ask(im, q) for im, q in zip(images, questions, strict=True)]
    return time.perf_counter() - t, answers


def start_server(monitor_dir: Path, model: str, args, log: Path) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "vrp.cli", "serve", "--monitor", str(monitor_dir), "--model", model,
           "--host", HOST, "--port", "0", "--max-batch-size", str(args.max_batch_size),
           "--max-wait-ms", str(args.max_wait_ms), "--max-queue", str(max(256, args.requests)),
           "--device", args.device, "--log-level", "warning", "--force"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        m = re.search(r"ready on http://127\.0\.0\.1:(\d+)", log.read_text())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def answers_total(port: int) -> float:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    m = re.search(r"^vrp_answers_total (\S+)$", text, re.M)
    b = re.search(r"^vrp_batch_size_count (\S+)$", text, re.M)
    return float(m.group(1)), float(b.group(1)) if b else 0.0


def load(port: int, bodies: list[bytes], clients: int, stop_at: float) -> tuple[float, dict, dict, int]:
    """N clients send every body once; returns wall time, replies and latencies by index, and errors."""
    todo = list(range(len(bodies)))[::-1]
    lock = threading.Lock()
    replies: dict[int, list] = {}
    latency: dict[int, float] = {}
    errors = [0]

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=300)
        while time.monotonic() < stop_at:
            with lock:
                if not todo:
                    break
                k = todo.pop()
            t = time.perf_counter()
            try:
                conn.request("POST", "/v1/chat/completions", bodies[k], {"Content-Type": "application/json"})
                r = conn.getresponse()
                doc = json.loads(r.read())
                ok = r.status == 200
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=300)
                ok, doc = False, None
            with lock:
                latency[k] = time.perf_counter() - t
                replies.setdefault(k, []).append(doc)
                errors[0] += not ok
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t, replies, latency, errors[0]


def check(replies: dict, reference: list, n: int) -> tuple[int, int, int]:
    """(lost, duplicated, wrong) answers against Monitor.ask alone."""
    lost = sum(1 for k in range(n) if k not in replies or replies[k][0] is None)
    dup = sum(len(v) - 1 for v in replies.values())
    ids = [d["id"] for v in replies.values() for d in v if d]
    dup += len(ids) - len(set(ids))
    wrong = 0
    for k, v in replies.items():
        d = v[0]
        if d is None or "choices" not in d:
            continue
        a = reference[k]
        same_text = d["choices"][0]["message"]["content"] == a.text
        wrong += not (same_text and abs(d["vrp"]["p_correct"] - a.p_correct) <= 1e-3)
    return lost, dup, wrong


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy-llava", help="a shipped toy, or long-llava (576 image tokens, random)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, here and in the server")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="the whole load stops by then")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from vrp.models import load_adapter

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="vrp-servebench-") as d:
        tmp = Path(d)
        model, size = args.model, 48
        if model.startswith("long-"):
            model, size = long_context_model(tmp / model, model[5:]), 336
        ad = load_adapter(model, device=args.device)
        monitor = make_monitor(ad, tmp / "monitor", args.new_tokens, args.max_batch_size)
        images, questions, bodies = requests_for(args.requests, size)
        monitor.ask(images[0], questions[0])  # warm-up
        t_seq1, reference = sequential(monitor, images, questions)
        proc, port = start_server(tmp / "monitor", model, args, tmp / "server.log")
        stop_at = time.monotonic() + args.max_seconds
        rows = []
        try:
            load(port, bodies[:2], 1, stop_at)  # warm-up of the server
            for n in (int(c) for c in args.clients.split(",")):
                before, batches0 = answers_total(port)
                wall, replies, latency, errors = load(port, bodies, n, stop_at)
                after, batches1 = answers_total(port)
                lost, dup, wrong = check(replies, reference, len(bodies))
                lat = list(latency.values())
                rows.append((n, wall, pct(lat, 50), pct(lat, 99), (after - before) / max(1, batches1 - batches0),
                             lost, dup, wrong, errors, after - before))  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=120)
        t_seq2, _ = sequential(monitor, images, questions)
    seq = (t_seq1 + t_seq2) / 2
    r = len(bodies)
    print(f"{args.model}: {r} requests; sequential Monitor.ask {r / seq:.1f} req/s "
          f"({t_seq1:.2f} s and {t_seq2:.2f} s; {1e3 * seq / r:.1f} ms each); "
          f"server --max-batch-size {args.max_batch_size} --max-wait-ms {args.max_wait_ms:g}, {args.threads} thread(s)")  # fmt: skip
    print(
        "| clients | req/s | vs sequential ask | p50 latency | p99 latency | mean batch | lost | duplicated | wrong | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, wall, p50, p99, batch, lost, dup, wrong, errors, counted in rows:
        print(f"| {n} | {r / wall:.1f} | {seq / wall:.2f}x | {1e3 * p50:.0f} ms | {1e3 * p99:.0f} ms | {batch:.1f} | "
              f"{lost} | {dup} | {wrong} | {errors} |")  # fmt: skip
        if counted != r:
            print(f"  the server counted {counted:.0f} answers for {r} requests")


if __name__ == "__main__":
    main()
