"""The soak: one gateway for N minutes under mixed traffic, with a fault every minute.

The gateway (one worker, `gateway serve`) sends to the Python fake upstream (tests/fake_upstream.py,
run in this process in a thread, so its knobs change at run time) and keeps its exact cache in a
redis-server the soak starts (`cache.exact.backend: redis`). bench/soakload.py sends the traffic
(JSON, streams, repeated questions, cancels). Minute i gets fault i of `FAULTS`, in turn, from
`fault_at_s` into the minute for `fault_s`; then the upstream is healthy again:

  slow            the upstream answers 2 s after the provider's timeout_s
  429             every answer is 429 with Retry-After: 2
  5xx             every answer is 500
  invalid-json    200 with a body that is not JSON
  broken-streams  streams drop the connection after 2 chunks, and end without [DONE], a second each
  upstream-down   the upstream is stopped (connection refused) and started again on its port
  redis-down      the exact cache's redis-server is stopped and started again (empty)
  disconnects     half of the clients' requests are dropped at a random moment of their first 300 ms
  bad-reload      the config file is replaced by a truncated one, then by one that fails validation,
                  then the good one goes back with a comment added (the gateway watches its file, and
                  reloads: its runtime is swapped under traffic)

Sampled every `sample_s` from /proc and /metrics: the gateway's RSS, open file descriptors and CPU,
provider slots in flight and queued, the circuit. After the traffic stops, the slots in flight must
come back to 0. `analyse` turns the request rows and the samples into the figures report.py prints.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from common import BENCH, LOOPBACK, ROOT, Proc, cpu_seconds, descendants, free_port, need, venv_python, wait_port
from stats import pct
from targets import PRICE, Gateway

sys.path.insert(0, str(ROOT))
from tests.fake_upstream import FakeUpstream, Knobs  # noqa: E402

FAULTS = ["slow", "429", "5xx", "invalid-json", "broken-streams", "upstream-down", "redis-down", "disconnects",
          "bad-reload"]
# Faults the client should not see at all: Redis fails open, a bad config is refused and the running
# one stays, and a client that leaves is its own business (its dropped requests are not errors).
SILENT = {"redis-down", "bad-reload", "disconnects"}
LEFT = {"cancelled", "disconnected"}  # outcomes the client chose
MODEL = "gpt-4o-mini-soak"
BASE = Knobs(latency_s=0.02, chunk_delay_s=0.02)  # a healthy upstream: 20 ms to answer, 20 ms a chunk


@dataclass
class Settings:
    minutes: int = 30
    period_s: float = 60           # one fault per period ("minute")
    fault_at_s: float = 15         # the fault starts this far into its minute...
    fault_s: float = 12            # ...and lasts this long
    faults: list[str] = field(default_factory=lambda: list(FAULTS))
    in_flight: int = 12
    cycle_ms: float = 50           # each client starts a request at most this often
    timeout_s: float = 3           # the provider's timeout_s
    circuit: bool = True           # the gateway's circuit breaker (health.enabled)
    client_timeout_s: float = 30   # a request slower than this is a stall
    sample_s: float = 2
    cooldown_s: float = 15         # the gateway's health.cooldown_s (its default), for the recovery check


@dataclass
class Phase:
    minute: int
    fault: str
    start: float        # epoch seconds
    fault_start: float
    fault_end: float
    end: float
    steps: list = field(default_factory=list)  # (seconds into the minute, what was done)


def soak_config(upstream_url: str, redis_url: str, port: int, timeout_s: float, circuit: bool = True) -> dict:
    provider = {"base_url": upstream_url, "api_key": "sk-bench", "max_concurrency": 64, "max_queue": 256,
                "queue_timeout_s": 10, "timeout_s": timeout_s, "connect_timeout_s": 2}
    return {
        "server": {"host": LOOPBACK, "port": port},
        "providers": {"soak": provider},
        "models": {MODEL: {"provider": "soak", "name": "gpt-4o-mini", **PRICE}},
        "cache": {"exact": {"backend": "redis", "redis_url": redis_url, "ttl_s": 3600},
                  "semantic": {"enabled": False}, "cacheable": "deterministic"},
        "health": {"enabled": circuit},
        # Only 5xx request lines and failed reloads reach the log: the soak keeps it.
        "log": {"level": "error"},
    }


class Redis:
    """A redis-server on a fixed port that can be stopped and started again."""

    def __init__(self, work: Path):
        self.port = free_port()
        self.work = work
        self.proc: Proc | None = None
        self.url = f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        argv = [need("redis-server"), "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
        self.proc = Proc("redis", argv, self.work / "redis-soak.log").start()
        wait_port(self.port, 10, self.proc.popen)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


class Count(logging.Handler):
    """Counts the fake upstream's "Error handling request" logs instead of printing their tracebacks:
    under the slow fault, the upstream answers after the gateway gave up on it and closed the socket."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1


def open_fds(pid: int) -> int:
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return total


def metric(text: str, name: str, **labels: str) -> float | None:
    """The sum of a metric's samples whose labels include `labels`; None when it has none."""
    found = None
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name):len(name) + 1] not in ("{", " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            found = (found or 0.0) + float(value)
    return found


class Sampler(threading.Thread):
    """The gateway's RSS, open fds, CPU and gauges every `every` seconds, until stopped."""

    def __init__(self, gw: Gateway, upstream: FakeUpstream, every: float):
        super().__init__(name="soak-sampler", daemon=True)
        self.gw, self.upstream, self.every = gw, upstream, every
        self.samples: list[dict] = []
        self.halt = threading.Event()

    def sample(self) -> dict:
        t = time.time()
        text = self.gw.metrics()  # how long it takes: the gateway's event loop was free, or not
        return {"t": time.time(), "rss_mb": round(self.gw.rss_mb(), 1), "fds": open_fds(self.gw.pid()),
                "cpu_s": cpu_seconds(self.gw.pid()),
                "in_flight": metric(text, "gateway_upstream_in_flight"),
                "queued": metric(text, "gateway_upstream_queue_depth"),
                "healthy": metric(text, "gateway_target_healthy"),
                "cache_errors": metric(text, "gateway_cache_requests_total", layer="exact", result="error"),
                "metrics_ms": round(1000 * (time.time() - t), 1),
                "upstream_in_flight": self.upstream.in_flight}

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append(self.sample())
            self.halt.wait(self.every)


class Injector:
    """What each fault does at its start, every second (`tick_`, some), half-way (some) and end."""

    def __init__(self, upstream: FakeUpstream, redis: Redis, gw: Gateway, s: Settings):
        self.upstream, self.redis, self.gw, self.s = upstream, redis, gw, s
        self.good_config = gw.config_path.read_text()
        self.reloads = 0

    def step(self, when: str, fault: str) -> str | None:
        do = getattr(self, f"{when}_{fault.replace('-', '_')}", None)
        return do() if do else None

    def heal(self) -> None:
        self.upstream.knobs = replace(BASE)

    def begin_slow(self):
        self.upstream.set(latency_s=self.s.timeout_s + 2)
        return f"upstream latency {self.s.timeout_s + 2:g}s (timeout_s {self.s.timeout_s:g})"

    def begin_429(self):
        self.upstream.set(error_status=429, retry_after="2")
        return "upstream 429, Retry-After: 2"

    def begin_5xx(self):
        self.upstream.set(error_status=500)
        return "upstream 500"

    def begin_invalid_json(self):
        self.upstream.set(invalid_json=True)
        return "upstream 200 with a body that is not JSON"

    def begin_broken_streams(self):
        self.upstream.set(broken_after=2)
        return "streams drop the connection after 2 chunks, and end without [DONE], a second each in turn"

    def tick_broken_streams(self):
        broken = self.upstream.knobs.broken_after >= 0
        self.upstream.set(broken_after=-1 if broken else 2, no_done=broken)

    def begin_upstream_down(self):
        self.upstream.stop()
        return "upstream stopped"

    def end_upstream_down(self):
        self.upstream.start()
        return f"upstream started again on port {self.upstream.port}"

    def begin_redis_down(self):
        self.redis.stop()
        return "redis-server stopped"

    def end_redis_down(self):
        self.redis.start()
        return f"redis-server started again on port {self.redis.port}"

    def begin_disconnects(self):
        return "clients drop half their requests (soakload --disconnect)"

    def begin_bad_reload(self):
        self.gw.config_path.write_text(self.good_config[: len(self.good_config) // 2])
        return "config file truncated"

    def middle_bad_reload(self):
        cfg = json.loads(self.good_config)
        cfg["providers"]["soak"]["timeout_s"] = "three"
        self.gw.config_path.write_text(json.dumps(cfg, indent=1))
        return "config file with timeout_s: \"three\""

    def end_bad_reload(self):
        # The same config with a comment added: a text the gateway has not run yet, so it reloads
        # (the very same text would be "unchanged", no reload) and swaps its runtime under traffic.
        self.reloads += 1
        self.gw.config_path.write_text(self.good_config + f"\n# soak: the good config back ({self.reloads})\n")
        return "the good config file back (a comment added: the gateway reloads it)"


def schedule(s: Settings, t0: float) -> list[Phase]:
    out = []
    for i in range(s.minutes):
        start = t0 + i * s.period_s
        out.append(Phase(i, s.faults[i % len(s.faults)], start, start + s.fault_at_s, start + s.fault_at_s + s.fault_s,
                         start + s.period_s))
    return out


def sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.5))


def run(work: Path, s: Settings, log) -> dict:
    """Start everything, run the traffic and the faults, stop everything; the figures."""
    need("redis-server")
    redis = Redis(work)
    redis.start()
    upstream = FakeUpstream(name="soak", knobs=replace(BASE)).start()
    upstream.seen = _Forget()
    server_log = logging.getLogger("aiohttp.server")
    late = Count()
    server_log.addHandler(late)
    server_log.propagate = False
    gw = sampler = load = None
    try:
        cfg = soak_config(upstream.url, redis.url, free_port(), s.timeout_s, s.circuit)
        gw = Gateway(work, cfg, tag="gateway-soak", request_log=True)
        text = gw.metrics()
        reloads0 = {r: metric(text, "gateway_config_reloads_total", result=r) or 0 for r in ("success", "failure")}
        log(f"soak: {gw.label} up in {gw.startup_s:.1f}s, rss {gw.rss_mb():.0f} MiB; {s.minutes} x {s.period_s:g}s, "
            f"faults {', '.join(s.faults)}")
        t0 = time.time() + 1
        phases = schedule(s, t0)
        t_end = t0 + s.minutes * s.period_s
        windows = [[p.fault_start, p.fault_end] for p in phases if p.fault == "disconnects"]
        rows = work / "soak-requests.csv"
        load = Proc("soakload", [venv_python(), str(BENCH / "soakload.py"), "--url", gw.url("json"), "--model", MODEL,
                                 "--start", f"{t0:.3f}", "--end", f"{t_end:.3f}", "--out", str(rows),
                                 "--in-flight", str(s.in_flight), "--cycle-ms", str(s.cycle_ms),
                                 "--timeout", str(s.client_timeout_s), "--disconnect", json.dumps(windows)],
                    work / "soakload.log", cwd=BENCH).start()
        sampler = Sampler(gw, upstream, s.sample_s)
        sampler.start()
        injector = Injector(upstream, redis, gw, s)
        problems: list[str] = []
        for p in phases:
            ticks = [(p.fault_start + k, "tick") for k in range(1, int(s.fault_s) + 1) if p.fault_start + k < p.fault_end]
            for at, when in sorted([(p.fault_start, "begin"), ((p.fault_start + p.fault_end) / 2, "middle"),
                                    (p.fault_end, "end"), *ticks]):
                sleep_until(at)
                if when == "end":
                    injector.heal()
                try:
                    note = injector.step(when, p.fault) or ("fault over" if when == "end" else None)
                except Exception as exc:  # noqa: BLE001 - a step that fails is reported, the soak goes on
                    note = f"FAILED {when}: {type(exc).__name__}: {exc}"
                    problems.append(f"soak minute {p.minute + 1} ({p.fault}): {note}")
                if note and when != "tick":
                    p.steps.append((round(time.time() - p.start, 2), note))
                    log(f"  soak minute {p.minute + 1}/{s.minutes} {p.fault}: {note}")
            sleep_until(p.end)
        load.popen.wait(s.client_timeout_s + 60)
        stopped = time.time()
        settle = settle_in_flight(gw, upstream, stopped)
        sampler.halt.set()
        sampler.join(10)
        text = gw.metrics()
        reloads = {r: (metric(text, "gateway_config_reloads_total", result=r) or 0) - reloads0[r]
                   for r in ("success", "failure")}
        out = analyse(read_rows(rows), phases, sampler.samples, s)
        out["cache_errors_redis_up"] = cache_errors_with_redis_up(sampler.samples, phases)
        out.update(settings=asdict(s), t0=t0, stopped=stopped, settle=settle, reloads=reloads,
                   metrics_end=end_metrics(text), gateway_log=gateway_log(gw.proc.log),
                   load=tail_json(load), startup_s=gw.startup_s, problems=problems, upstream_late_writes=late.n)
        out["findings"] = findings(out, s)
        return out
    finally:
        if sampler is not None:
            sampler.halt.set()
        if load is not None:
            load.stop()
        if gw is not None:
            gw.stop()
        upstream.stop()
        redis.stop()
        server_log.removeHandler(late)
        server_log.propagate = True


class _Forget(list):
    """The fake upstream's `seen`, kept empty: the soak sends too many requests to remember them."""

    def append(self, item) -> None:
        pass


def settle_in_flight(gw: Gateway, upstream: FakeUpstream, stopped: float, within: float = 15) -> dict:
    """Provider slots in flight right after the traffic stopped, and until they are 0 (or `within` s)."""
    first = metric(gw.metrics(), "gateway_upstream_in_flight")
    last, at = first, 0.0
    while last and time.time() - stopped < within:
        time.sleep(0.5)
        last = metric(gw.metrics(), "gateway_upstream_in_flight")
        at = time.time() - stopped
    return {"at_stop": first, "final": last, "zero_after_s": at if last == 0 else None,
            "queued": metric(gw.metrics(), "gateway_upstream_queue_depth"), "upstream_in_flight": upstream.in_flight}


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{"t": float(r["t_end"]), "kind": r["kind"], "stream": r["stream"] == "1", "status": int(r["status"]),
                 "outcome": r["outcome"], "ms": float(r["latency_ms"]), "cache": r["cache"], "question": r["question"]}
                for r in csv.DictReader(f)]


def status_class(row: dict) -> str:
    if row["outcome"] in LEFT:
        return "left by the client"
    if not row["status"]:
        return "no answer"
    return f"{row['status'] // 100}xx" + (", error in the stream" if row["status"] == 200 and row["outcome"] != "ok" else "")


def analyse(rows: list[dict], phases: list[Phase], samples: list[dict], s: Settings) -> dict:
    outcomes = Counter((status_class(r), r["outcome"]) for r in rows)
    kinds: dict = defaultdict(Counter)
    for r in rows:
        kinds[r["kind"]]["ok" if r["outcome"] == "ok" else "left" if r["outcome"] in LEFT else "error"] += 1
    per_phase = []
    for p in phases:
        seg = {"before": (p.start, p.fault_start), "during": (p.fault_start, p.fault_end), "after": (p.fault_end, p.end)}
        mine = [r for r in rows if p.start <= r["t"] < p.end]
        errors = [r for r in mine if r["outcome"] not in ("ok", *LEFT)]
        entry = {"minute": p.minute + 1, "fault": p.fault, "expected": expected(p.fault, s.circuit), "steps": p.steps,
                 "requests": len(mine),
                 "left": sum(r["outcome"] in LEFT for r in mine)}
        for name, (a, b) in seg.items():
            errs = [r for r in errors if a <= r["t"] < b]
            entry[name] = {"requests": sum(a <= r["t"] < b for r in mine), "errors": len(errs),
                           "kinds": dict(Counter(r["outcome"] for r in errs).most_common())}
        after = [r["t"] for r in errors if r["t"] >= p.fault_end]
        entry["last_error_after_fault_s"] = round(max(after) - p.fault_end, 1) if after else None
        back = [r["t"] for r in mine if r["t"] >= p.fault_end and r["outcome"] == "ok" and r["cache"] != "hit-exact"]
        entry["upstream_back_after_s"] = round(min(back) - p.fault_end, 1) if back else None
        # The repeated questions: answered from the cache while the upstream is down?
        rep = [r for r in mine if r["kind"] == "repeat" and p.fault_start <= r["t"] < p.fault_end]
        entry["repeats_in_fault"] = dict(Counter((r["cache"] or "no cache header") + (" ok" if r["outcome"] == "ok" else " error")
                                                 for r in rep).most_common())
        entry["max_ms"] = max((r["ms"] for r in mine), default=None)
        per_phase.append(entry)
    minutes = []
    for p in phases:
        mine = [r for r in rows if p.start <= r["t"] < p.end and r["outcome"] not in LEFT]
        lat = [r["ms"] for r in mine]
        ok = [r for r in mine if r["outcome"] == "ok"]
        minutes.append({"minute": p.minute + 1, "fault": p.fault, "requests": len(mine),
                        "errors": len(mine) - len(ok), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                        "p99_ok_json_ms": pct([r["ms"] for r in ok if not r["stream"]], 99),
                        "p99_ok_stream_ms": pct([r["ms"] for r in ok if r["stream"]], 99),
                        "max_ms": max(lat, default=None)})
    wall = (phases[-1].end - phases[0].start) if phases else 0
    return {"repeats_not_hit": repeats_not_hit(rows, phases), "requests": len(rows), "rps": len(rows) / wall if wall else 0.0,
            "errors": sum(1 for r in rows if r["outcome"] not in ("ok", *LEFT)),
            "left": sum(1 for r in rows if r["outcome"] in LEFT),
            "outcomes": [[cls, outcome, n] for (cls, outcome), n in outcomes.most_common()],
            "kinds": {k: dict(v) for k, v in kinds.items()},
            "cache": dict(Counter(r["cache"] or "-" for r in rows if r["kind"] == "repeat").most_common()),
            "phases": per_phase, "minutes": minutes, "samples": samples,
            "resources": resources(samples)}


def repeats_not_hit(rows: list[dict], phases: list[Phase]) -> dict:
    """The repeated questions that were not exact-cache hits, but for each one's first ask and the
    minutes of the redis-down fault (Redis comes back empty): the cache was skipped, by outcome."""
    away = [(p.start, p.end) for p in phases if p.fault == "redis-down"]
    asked: set[str] = set()
    out: Counter = Counter()
    for r in sorted((r for r in rows if r["kind"] == "repeat"), key=lambda r: r["t"] - r["ms"] / 1000):
        first = r["question"] not in asked
        asked.add(r["question"])
        if first or r["cache"] == "hit-exact" or any(a <= r["t"] < b for a, b in away):
            continue
        out[r["outcome"]] += 1
    return dict(out.most_common())


def cache_errors_with_redis_up(samples: list[dict], phases: list[Phase]) -> list[tuple[float, int]]:
    """(minutes since the start, how many) of the exact cache's Redis errors outside redis-down minutes
    (a redis-down minute ends 33 s after redis-server is back)."""
    away = [(p.start, p.end) for p in phases if p.fault == "redis-down"]
    out, last = [], None
    for x in samples:
        n = x.get("cache_errors")
        if n is None:
            continue
        if last is not None and n > last and not any(a <= x["t"] < b for a, b in away):
            out.append((round((x["t"] - phases[0].start) / 60, 2), int(n - last)))
        last = n
    return out


def resources(samples: list[dict]) -> dict:
    if not samples:
        return {}
    first, last = samples[:3], samples[-3:]
    lag = sorted(x["metrics_ms"] for x in samples)

    def mid(xs, key):
        vals = sorted(x[key] for x in xs)
        return vals[len(vals) // 2]
    wall = samples[-1]["t"] - samples[0]["t"]
    return {"rss_start_mb": mid(first, "rss_mb"), "rss_end_mb": mid(last, "rss_mb"),
            "rss_max_mb": max(x["rss_mb"] for x in samples), "fds_start": mid(first, "fds"),
            "fds_end": mid(last, "fds"), "fds_max": max(x["fds"] for x in samples),
            "cpu_pct": 100 * (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / wall if wall else None,
            "in_flight_max": max((x["in_flight"] or 0) for x in samples),
            "metrics_ms_p50": pct(lag, 50), "metrics_ms_max": lag[-1]}


def end_metrics(text: str) -> dict:
    """The gateway's counters of what went wrong upstream, and of its cache, at the end."""
    out = {}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in ("gateway_upstream_errors_total", "gateway_fallbacks_total", "gateway_cache_requests_total",
                    "gateway_state_errors_total", "gateway_upstream_rejected_total", "gateway_config_reloads_total"):
            head, _, value = line.rpartition(" ")
            if float(value):
                out[head] = float(value)
    return out


def gateway_log(path: Path) -> dict:
    """What the gateway logged (level error: 5xx request lines, failed reloads), and any traceback."""
    lines: Counter = Counter()
    redis: Counter = Counter()  # "redis cache unavailable (why)": logged at most once per 10 s
    tracebacks, other = 0, []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                tracebacks += 1
            elif line.startswith("redis cache unavailable ("):
                redis[line[len("redis cache unavailable ("):].split(")", 1)[0].rstrip(": ")] += 1
            elif line.strip() and len(other) < 20:
                other.append(line[:300])
            continue
        if not isinstance(rec, dict):
            continue
        if rec.get("event") == "request":
            lines[f"request: status {rec.get('status')}, error {rec.get('error')}"] += 1
        else:
            lines[f"{rec.get('event')}: {rec.get('result', '')}"] += 1
    return {"lines": dict(lines.most_common()), "tracebacks": tracebacks, "redis": dict(redis.most_common()),
            "other": other}


def tail_json(proc: Proc) -> dict:
    for line in reversed(proc.tail(5).splitlines()):
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    return {"error": f"soakload gave no result (exit {proc.popen.returncode}): {proc.tail(8)}"}


def findings(out: dict, s: Settings) -> list[str]:
    """What looks wrong in the gateway's behaviour under the faults, in words."""
    found = []
    settle = out["settle"]
    if settle["final"] != 0:
        found.append(f"provider slots in flight after the traffic stopped: {settle['at_stop']} at once, "
                     f"{settle['final']} 15 s later (must be 0)")
    stalls = [(p["minute"], p["fault"], n) for p in out["phases"] for seg in ("before", "during", "after")
              for k, n in p[seg]["kinds"].items() if k == "client timeout"]
    if stalls:
        found.append(f"requests with no answer within {s.client_timeout_s:g} s: "
                     + ", ".join(f"{n} in minute {m} ({f})" for m, f, n in stalls))
    for p in out["phases"]:
        if p["fault"] in SILENT:
            errs = {k: v for seg in ("during", "after") for k, v in p[seg]["kinds"].items()}
            if errs:
                found.append(f"minute {p['minute']} ({p['fault']}, which clients should not notice): "
                             + ", ".join(f"{n} x {k}" for k, n in errs.items()))
        if p["minute"] > 1 and p["before"]["errors"]:
            found.append(f"minute {p['minute']}: {p['before']['errors']} errors in the healthy seconds before its fault "
                         f"({', '.join(p['before']['kinds'])}), {s.period_s - s.fault_at_s - s.fault_s:g} s or more "
                         "after the previous fault ended")
        late = p["last_error_after_fault_s"]
        if late is not None and late > s.cooldown_s + 5:
            found.append(f"minute {p['minute']} ({p['fault']}): errors went on {late:g} s after the fault ended "
                         f"(the circuit's cooldown is {s.cooldown_s:g} s)")
    for cls, outcome, n in out["outcomes"]:
        if outcome in ("stream ended without [DONE] or an error event", "200 with a body that is not a completion"):
            found.append(f"{n} x {outcome}")
        if outcome.startswith("http 500") and "(upstream's)" not in outcome:
            found.append(f"{n} x {outcome}: the gateway's own 500")
    timeouts = out["cache_errors_redis_up"]
    if timeouts:
        served = out["repeats_not_hit"]
        why = "; ".join(f"{k} x{n}" for k, n in out["gateway_log"].get("redis", {}).items()) or "not logged"
        n = sum(n for _, n in timeouts)
        found.append(f"the exact cache's Redis calls failed {n} time{'s' if n != 1 else ''} while redis-server was up "
                     f"(at minute {', '.join(f'{m:g}' for m, _ in timeouts)}), and each time the cache is skipped for "
                     "cooldown_s: repeated questions asked again upstream meanwhile: "
                     + (", ".join(f"{n} {k}" for k, n in served.items()) or "none")
                     + f". The gateway's reasons over the whole run (logged at most once per 10 s): {why}")
    if out["gateway_log"].get("tracebacks"):
        found.append(f"{out['gateway_log']['tracebacks']} tracebacks in the gateway's log")
    res = out["resources"]
    if res and res["fds_end"] > res["fds_start"] + max(16, res["fds_start"] // 4):
        found.append(f"open fds grew from {res['fds_start']} to {res['fds_end']}")
    if "bad-reload" in [p["fault"] for p in out["phases"]]:
        n = sum(p["fault"] == "bad-reload" for p in out["phases"])
        if out["reloads"]["failure"] < 2 * n:
            found.append(f"the gateway refused {out['reloads']['failure']:g} reloads of {2 * n} bad config files")
        if out["reloads"]["success"] < n:
            found.append(f"the gateway took {out['reloads']['success']:g} reloads of the {n} good config files put back")
    return found


def settings_from(args) -> Settings:
    s = Settings(minutes=args.soak_minutes, period_s=args.soak_period_s, fault_at_s=args.soak_fault_at_s,
                 fault_s=args.soak_fault_s, in_flight=args.soak_in_flight, cycle_ms=args.soak_cycle_ms,
                 timeout_s=args.soak_timeout_s, sample_s=args.soak_sample_s, circuit=bool(args.soak_circuit),
                 faults=[f.strip() for f in args.soak_faults.split(",") if f.strip()])
    unknown = set(s.faults) - set(FAULTS)
    if unknown or not s.faults:
        raise ValueError(f"--soak-faults: unknown {sorted(unknown)}; known: {', '.join(FAULTS)}")
    if s.fault_at_s + s.fault_s > s.period_s:
        raise ValueError("--soak-fault-at-s + --soak-fault-s must fit in --soak-period-s")
    return s


def expected(fault: str, circuit: bool = True) -> str:
    """What a client should see during the fault, in words, for the report."""
    seen = {"slow": "504", "429": "429 with Retry-After", "5xx": "the upstream's 500", "invalid-json": "502",
            "broken-streams": "an SSE error event ends the stream", "upstream-down": "502",
            "redis-down": "nothing: the cache fails open", "disconnects": "nothing but the dropped requests",
            "bad-reload": "nothing: the running config stays"}[fault]
    return seen + ("; then 503 while the circuit is open" if circuit and fault not in SILENT else "")
