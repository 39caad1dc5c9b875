"""Loopback HTTP load for ``make bench-serve``: ``concurrency`` clients, each on its own keep-alive connection,
posting the same body; latencies of the answers that came back 200, and the errors."""

from __future__ import annotations

import http.client
import threading
import time

CONCURRENCY = (1, 4, 16)


def percentile(values, q):
    values = sorted(values)
    index = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[index]


def run_clients(client, concurrency: int) -> float:
    """``concurrency`` threads each running ``client`` at once; the wall seconds until the last ends."""
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def load(host: str, port: int, body: bytes, concurrency: int, requests: int, content_type: str = "image/jpeg") -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_thread = max(1, requests // concurrency)

    def client():
        connection = http.client.HTTPConnection(host, port, timeout=120)
        for _ in range(per_thread):
            start = time.perf_counter()
            try:
                connection.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=120)
            elapsed = time.perf_counter() - start
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors[0] += 1
        connection.close()

    wall = run_clients(client, concurrency)
    if not latencies:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "throughput": 0.0, "errors": errors[0], "requests": errors[0]}
    return {"p50_ms": 1e3 * percentile(latencies, 50), "p99_ms": 1e3 * percentile(latencies, 99),
            "throughput": len(latencies) / wall, "errors": errors[0], "requests": len(latencies) + errors[0]}


def sweep(name: str, port: int, body: bytes, content_type: str, requests: int, per_client: int = 4) -> tuple[list[list], dict]:
    """Every concurrency of :data:`CONCURRENCY`, ``requests`` timed (at least ``per_client`` per client), each after
    an untimed warm-up round that reaches every worker: (table rows, results by ``c<N>``)."""
    rows, results = [], {}
    for concurrency in CONCURRENCY:
        count = max(requests, per_client * concurrency)
        load("127.0.0.1", port, body, concurrency, max(2 * concurrency, count // 4), content_type)
        result = load("127.0.0.1", port, body, concurrency, count, content_type)
        results[f"c{concurrency}"] = result
        rows.append([name, concurrency, f"{result['p50_ms']:.1f}", f"{result['p99_ms']:.1f}", f"{result['throughput']:.2f}",
                     result["errors"]])
        print(f"{name}, concurrency {concurrency}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
              f"{result['throughput']:.2f} req/s, {result['errors']} errors", flush=True)
    return rows, results
