"""`gateway serve --workers 2` as a user runs it: a scrape reaching either worker reports every
worker's requests, every time. A stale socket or a stuck worker never fails a scrape, and no
counter goes down when a worker stops, is replaced or is killed. Real processes, real sockets."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml
from ddsketch import DDSketch
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import SKETCH_ACCURACY, Snapshot, merge

from .conftest import base_config, eventually, spawn_gateway_serve
from .fake_upstream import FakeUpstream

DURATION = "gateway_request_duration_seconds"


class Served:
    """A `gateway serve --workers N` process and its run directory."""

    def __init__(self, proc: subprocess.Popen[str], port: int):
        self.proc, self.url = proc, f"http://127.0.0.1:{port}"
        found = list(Path(tempfile.gettempdir()).glob(f"gateway-workers-{proc.pid}-*"))
        self.dir = found[0] if found else None

    def sockets(self) -> list[Path]:
        return sorted(self.dir.glob("*.sock")) if self.dir is not None else []

    def worker_pids(self) -> set[int]:
        return {int(p.name.split("-")[0]) for p in self.sockets()}

    def ask(self, path: Path) -> Snapshot:
        """A worker's snapshot, asked on its socket the way another worker asks."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(b"?")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        size = struct.unpack("!I", data[:4])[0]
        assert len(data) == 4 + size
        return pickle.loads(data[4:])


@pytest.fixture
def serve(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Any]:
    started: list[Served] = []

    def start(workers: int = 2) -> Served:
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(base_config(upstream, log={"level": "warning"})))  # no request lines
        served = Served(*spawn_gateway_serve(path, "--workers", str(workers)))
        started.append(served)
        if workers > 1:  # /readyz answered: one worker is up; wait for every one
            assert eventually(lambda: len(served.sockets()) == workers, 30), served.sockets()
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.send_signal(signal.SIGTERM)
            served.proc.communicate(timeout=60)


class Scrape:
    def __init__(self, response: httpx.Response):
        assert response.status_code == 200, response.text
        self.worker = response.headers.get("x-gateway-worker")
        self.samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.samples)


def scrape(url: str) -> Scrape:
    return Scrape(httpx.get(url + "/metrics", timeout=10))   # a new connection: any worker may take it


def ask_chat(url: str, n: int) -> None:
    r = httpx.post(url + "/v1/chat/completions", timeout=10,
                   json={"model": "support", "messages": [{"role": "user", "content": f"question {n}"}]})
    assert r.status_code == 200, r.text


def worker_alive(socket_path: Path) -> bool:
    """Whether the worker of a socket still runs (not a zombie: its parent reaps it)."""
    try:
        state = Path(f"/proc/{socket_path.name.split('-')[0]}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def requests_of(snapshot: Snapshot) -> float:
    return sum(snapshot.values["gateway_requests_total"].values())


def load_both_workers(gw: Served, upstream: FakeUpstream) -> int:
    """Requests, 8 at a time on new connections, until each worker has served some; how many."""
    upstream.set(latency_s=0.02)  # requests overlap, so an idle worker takes the next connection
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            list(pool.map(lambda n: ask_chat(gw.url, n), range(sent, sent + 24)))
            sent += 24
            if all(requests_of(gw.ask(p)) > 0 for p in gw.sockets()):
                return sent
    raise AssertionError(f"one worker served all {sent} requests")


def test_every_scrape_of_either_worker_counts_every_request(serve, upstream):
    gw = serve(2)
    sent = load_both_workers(gw, upstream)
    snapshots = [gw.ask(p) for p in gw.sockets()]
    per_worker = [requests_of(s) for s in snapshots]
    assert sum(per_worker) == sent and min(per_worker) > 0, per_worker
    prompt = sum(v for s in snapshots for k, v in s.values["gateway_tokens_total"].items() if k[2] == "prompt")
    answered: set[str] = set()
    for n in range(200):   # until each worker has answered a few scrapes
        m = scrape(gw.url)
        answered.add(m.worker)
        assert m.value("gateway_requests_total") == sent, (n, m.worker)
        assert m.value("gateway_requests_total", route="support", status="2xx") == sent
        assert m.value(f"{DURATION}_count") == sent
        assert m.value(f"{DURATION}_bucket", le="+Inf") == sent
        assert m.value("gateway_tokens_total", kind="prompt") == prompt > 0
        assert m.value("gateway_cache_requests_total", layer="exact", result="bypass") == sent
        assert m.value("gateway_workers") == 2 and m.value("gateway_workers_unanswered_total") == 0
        assert m.value("gateway_upstream_in_flight", provider="fake") == 0
        assert m.value("gateway_target_healthy", target="gpt-4o-mini") == 1
        assert m.value("gateway_request_duration_quantile_seconds", quantile="0.5", route="support") > 0.015
        if n >= 10 and len(answered) == 2:
            break
    assert answered == {str(pid) for pid in gw.worker_pids()}
    # The process figures are the workers' sum: more than either worker alone.
    rss = [gw.ask(p).process["process_resident_memory_bytes"] for p in gw.sockets()]
    assert m.value("process_resident_memory_bytes") > max(rss)


def test_a_stale_socket_and_a_stuck_worker_do_not_fail_a_scrape(serve, upstream):
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = Path(tempfile.mkdtemp(prefix=f"gateway-workers-{gone.pid}-"))   # a killed run's directory
    gw = serve(2)
    assert not left.exists() and gw.dir.stat().st_mode & 0o777 == 0o700
    sent = load_both_workers(gw, upstream)   # each worker has been asked: each kept its last counts
    # A socket file nothing listens on (its worker died before any scrape) ...
    stale = gw.dir / "4000000-00000000.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(stale))
    dead.close()
    # ... and a worker that cannot answer: it accepts (the kernel does) but never replies.
    stuck = next(path for path in gw.sockets() if path != stale)   # a live worker's (any pid sorts either way)
    os.kill(int(stuck.name.split("-")[0]), signal.SIGSTOP)
    try:
        started = time.monotonic()
        m = scrape(gw.url)   # the stopped worker accepts no connection: the other one answers
        took = time.monotonic() - started
        assert m.worker != stuck.name.split("-")[0]
        assert 0.9 < took < 3, took   # the stuck one had its second
        assert m.value("gateway_requests_total") == sent   # its last counts stood in
        assert m.value(f"{DURATION}_count") == sent
        assert m.value("gateway_workers") == 1 and m.value("gateway_workers_unanswered_total") == 1
        assert not stale.exists()     # removed by the scrape that found it dead
    finally:
        os.kill(int(stuck.name.split("-")[0]), signal.SIGCONT)
    m = scrape(gw.url)
    assert m.value("gateway_requests_total") == sent and m.value("gateway_workers") == 2
    assert m.value("gateway_workers_unanswered_total") == 1


def test_a_rolling_restart_keeps_the_counts(serve, upstream):
    gw = serve(2)
    sent = load_both_workers(gw, upstream)
    before = gw.worker_pids()
    gw.proc.send_signal(signal.SIGHUP)   # uvicorn replaces each worker, one after the other
    seen: list[float] = []

    def replaced() -> bool:
        seen.append(scrape(gw.url).value("gateway_requests_total"))
        return not (gw.worker_pids() & before) and len(gw.sockets()) == 2

    assert eventually(replaced, 60)
    assert set(seen) == {sent}, seen   # no scrape during the restart missed a count, none doubled one
    m = scrape(gw.url)
    assert m.value("gateway_requests_total") == sent and m.value("gateway_workers") == 2
    assert m.value(f"{DURATION}_count") == sent
    ask_chat(gw.url, 0)
    assert scrape(gw.url).value("gateway_requests_total") == sent + 1


def test_a_killed_worker_keeps_its_counts_as_of_the_last_scrape(serve, upstream):
    gw = serve(2)
    sent = load_both_workers(gw, upstream)   # and asked each worker: each kept its last counts
    victim = gw.sockets()[0]
    os.kill(int(victim.name.split("-")[0]), signal.SIGKILL)   # no shutdown: nothing retired by itself
    assert eventually(lambda: not worker_alive(victim), 10)
    m = scrape(gw.url)   # the first scrape since: the dead worker's counts are still in the sums
    assert m.value("gateway_requests_total") == sent and m.value(f"{DURATION}_count") == sent
    assert not victim.exists()                        # that scrape found it dead, removed its socket
    assert not victim.with_suffix(".last").exists()   # and moved its last counts to retired.pkl
    assert eventually(lambda: len(gw.sockets()) == 2, 60)      # uvicorn started a new worker
    for _ in range(10):
        m = scrape(gw.url)
        assert m.value("gateway_requests_total") == sent and m.value("gateway_workers") == 2
        assert m.value(f"{DURATION}_count") == sent


def test_one_worker_opens_no_socket_and_exports_as_before(serve, upstream):
    gw = serve(1)
    assert gw.dir is None
    ask_chat(gw.url, 1)
    m = scrape(gw.url)
    assert m.worker is None and not m.has("gateway_workers")
    assert m.value("gateway_requests_total") == 1 and m.has("process_cpu_seconds_total")


def test_merge_sums_counts_and_merges_gauges_and_sketches():
    def sketch(values: list[float]) -> DDSketch:
        s = DDSketch(SKETCH_ACCURACY)
        for v in values:
            s.add(v)
        return s

    fast, slow = [0.01 * i for i in range(1, 101)], [1.0 + 0.01 * i for i in range(1, 101)]
    a = Snapshot({"gateway_requests_total": {("r",): 3}, "gateway_unpriced_models_total": {("m",): 1},
                  DURATION: {("r",): [1, 2, 0.5]}},
                 in_flight={"p": 2}, healthy={"t": True, "u": True},
                 entries={"exact": (5, False), "semantic": (9, True)}, windows={"r": sketch(fast)},
                 process={"process_resident_memory_bytes": 100, "process_open_fds": 7,
                          "process_start_time_seconds": 20, "process_cpu_seconds": 1.5})
    b = Snapshot({"gateway_requests_total": {("r",): 4, ("s",): 1}, "gateway_unpriced_models_total": {("m",): 1},
                  DURATION: {("r",): [0, 5, 2.0]}},
                 in_flight={"p": 1}, healthy={"t": False, "u": True},
                 entries={"exact": (6, False), "semantic": (9, True)}, windows={"r": sketch(slow)},
                 process={"process_resident_memory_bytes": 50, "process_open_fds": 9,
                          "process_start_time_seconds": 10, "process_cpu_seconds": 0.5})
    merged = merge([a, b, b.counts_only()])   # two live workers, and one that stopped with b's counts
    assert merged.values["gateway_requests_total"] == {("r",): 11, ("s",): 2}
    assert merged.values["gateway_unpriced_models_total"] == {("m",): 1}
    assert merged.values[DURATION] == {("r",): [1, 12, 4.5]}
    assert a.values[DURATION] == {("r",): [1, 2, 0.5]}   # the inputs are not touched
    assert merged.in_flight == {"p": 3}
    assert merged.healthy == {"t": False, "u": True}
    assert merged.entries == {"exact": (11, False), "semantic": (9, True)}
    assert merged.process == {"process_resident_memory_bytes": 150, "process_open_fds": 9,
                              "process_start_time_seconds": 10, "process_cpu_seconds": 2.5}
    assert merged.workers == 2
    together = sketch(fast + slow)
    for q in (0.5, 0.95, 0.99):
        assert merged.windows["r"].get_quantile_value(q) == pytest.approx(together.get_quantile_value(q))
