"""The benchmark: the gateway side by side with the upstream alone, a bare pass-through and peers.

  make bench [SCENARIO=passthrough,streams] [DURATION=10] [LONG=1] [PEERS=0] [PROFILE=1]
  .venv/bin/python bench/run.py --help

Scenarios: passthrough (1 and 32 in flight, not cacheable and cacheable misses), slow (256 in
flight, 50 ms upstream), streams (1,000 concurrent SSE streams), exact (exact-cache hits), openloop
(fixed request rates and closed-loop 1 / 16 / 64 in flight on the 50 ms upstream: latency added
over the upstream alone), guardrails (what output filtering costs a stream and a JSON answer),
semantic (lookups against 10,000 stored entries), mix (Zipf support traffic), memory (RSS idle /
100k / 1M, with and without the semantic layer), workers (--workers 2), keys (what the limits
cost), providers (what translating to Anthropic's API costs), tracing (what OpenTelemetry spans
cost). Not in `all`: soak (30 minutes of mixed traffic with a fault a minute; `--scenario soak`,
`--soak-minutes`).
Results: bench/results/<timestamp>/ (results.md, results.json, PNG charts, logs). Loopback only;
every load is bounded in time and count.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (BENCH, ROOT, LOOPBACK, VENV_BIN, Busy, Proc, free_port, need, run_json,  # noqa: E402
                    venv_python, wait_port)
import peers as P  # noqa: E402
import instructions as I  # noqa: E402
import report  # noqa: E402
import soak as S  # noqa: E402
from targets import (EXACT_MAX_ENTRIES, MODELS, PRICE, Bare, Gateway, PeerTarget, RouteView,  # noqa: E402
                     UpstreamAlone, body_for, gateway_config, mode_body)
from upstream import Nginx  # noqa: E402

ALL = ["passthrough", "slow", "streams", "exact", "openloop", "guardrails", "semantic", "mix", "memory", "workers",
       "keys", "providers", "tracing"]
# Asked for by name only: `all` would take 30 minutes longer with the soak (the smoke test runs it
# briefly); instructions needs valgrind, and is the A/B measure for a change rather than a table row.
EXTRA = ["soak", "instructions"]
# What a request asks of a cache: "bypass" (not cacheable: no temperature 0), "miss" (temperature 0,
# every request distinct: it misses, leads its single flight, goes upstream and is stored), "hit"
# (one temperature-0 request, stored before the load). The upstream alone and the bare pass-through
# pass each body through.
MODES = {"bypass": "bypass", "miss": "cacheable miss", "hit": "exact hit"}  # mode -> its name in the tables
WRK_SCENARIOS = {  # name -> (upstream kind, in flight, mode)
    "passthrough-1": ("instant", 1, "bypass"),
    "passthrough-32": ("instant", 32, "bypass"),
    "miss-1": ("instant", 1, "miss"),
    "miss-32": ("instant", 32, "miss"),
    "slow-256": ("slow", 256, "bypass"),
    "exact-32": ("instant", 32, "hit"),
}
# The guardrails scenario's rules, as the README's "Guardrails" section writes them.
GUARDRAILS = {
    "pii": {"kind": "pii", "entities": ["email", "phone", "credit_card", "cn_id", "cn_mobile", "iban", "api_key"],
            "action": "mask"},
    "no-leaks": {"kind": "pattern", "patterns": ["(?i)internal use only", "sk-[A-Za-z0-9]{20,}"], "action": "block"},
}
OUTPUT_RULES = {"output": ["no-leaks", "pii"]}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def inbound_body(kind: str, model: str, stream: bool) -> dict:
    """The pass-through's question in one of the inbound APIs' shapes: chat, messages, responses."""
    chat = body_for(model, False)
    system, question = chat["messages"][0]["content"], chat["messages"][1]["content"]
    if kind == "messages":
        body = {"model": model, "max_tokens": 128, "system": system, "messages": [{"role": "user", "content": question}]}
    elif kind == "responses":
        body = {"model": model, "max_output_tokens": 128, "instructions": system, "input": question}
    else:
        body = chat
    return {**body, "stream": True} if stream else body


def mode_label(target, mode: str) -> str:
    """A gateway is asked in three ways (its label says which); the others pass every body through."""
    return f"{target.label} ({MODES[mode]})" if target.name.startswith("gateway") else target.label


class Shared:
    """The smoke test's one gateway, lent to each scenario: stopping it is left to the end."""

    def __init__(self, gw: Gateway, name: str):
        self._gw = gw
        self.name = name  # the scenario's name for it, as in a full run

    def __getattr__(self, name):
        return getattr(self._gw, name)

    def stop(self) -> None:
        pass


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out: Path = args.out
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.results: dict = {"rows": [], "streams": [], "semantic": None, "mix": None, "memory": None,
                              "skipped": {}, "errors": [], "notes": [], "profiles": {}, "startup_s": {}}
        self.nginx: Nginx | None = None
        self.echo: Proc | None = None
        self.echo_url: str | None = None
        self.shared: dict[bool, Gateway] = {}

    # ---- load generators --------------------------------------------------------------------

    def body_file(self, body: dict, unique: bool = False) -> Path:
        """The body as a file for a load generator. unique: `@N@` gets a prefix of its own, so that the
        requests numbered from it repeat none of another run's (wrk's count starts again at each run)."""
        raw = json.dumps(body).encode()
        if unique:
            raw = raw.replace(b"@N@", os.urandom(4).hex().encode() + b"-@N@")
        path = self.work / f"body-{hashlib.sha1(raw).hexdigest()[:10]}.json"
        path.write_bytes(raw)
        return path

    def wrk(self, url: str, conns: int, duration: float, body: dict, headers: list[str],
            vary: int | str = 0, timeout_s: float = 10) -> dict:
        """vary: N numbers the requests modulo N; "unique" numbers them so that none repeats."""
        path = self.body_file(body, unique=vary == "unique")
        env = {"BENCH_BODY": str(path), "BENCH_HEADERS": "\n".join(headers), "BENCH_VARY": str(vary)}
        argv = [need("wrk"), "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", f"--timeout={timeout_s:g}s",
                "-s", str(BENCH / "wrk" / "post.lua"), url]
        r = run_json(argv, duration + timeout_s + 30, env)
        secs = r["duration_us"] / 1e6
        lat = {k: v / 1000 for k, v in r["latency_us"].items()}
        return {"requests": r["requests"], "rps": r["requests"] / secs if secs else 0.0,
                "p50": lat["p50"], "p95": lat["p95"], "p99": lat["p99"], "max": lat["max"],
                "errors": sum(r["errors"].values()), "error_kinds": {k: v for k, v in r["errors"].items() if v}}

    def measure(self, scenario: str, target, kind: str, conns: int, mode: str) -> dict:
        """One closed-loop row (wrk): warm-up, then the measurement, with the CPU it took."""
        body = mode_body(target.model(kind), mode)
        vary = "unique" if mode == "miss" else 0
        headers = target.headers(kind)
        url = target.url(kind)
        if self.args.warmup > 0:
            self.wrk(url, conns, self.args.warmup, body, headers, vary)
        profiler = self.start_profile(scenario, target)
        busy = Busy(target.pid(), self.nginx.proc.pid)
        res = self.wrk(url, conns, self.args.duration, body, headers, vary)
        res.update(busy.done())
        self.stop_profile(profiler, scenario)
        res.update(scenario=scenario, target=target.name, label=mode_label(target, mode), target_label=target.label,
                   in_flight=conns, kind=kind, mode=mode)
        log(f"  {scenario:15s} {res['label']:28s} {res['rps']:9.0f} req/s  p50 {res['p50']:7.2f} ms  "
            f"p99 {res['p99']:8.2f} ms  errors {res['errors']}  cpu {res['cpu_pct']:3.0f}%  "
            f"others {res['other_cores']:.2f} cores")
        return res

    def streams(self, target, n: int, ramp: float = 0.0) -> dict:
        """n SSE streams from the paced upstream through `target`, their starts spread over `ramp` s."""
        def argv(count: int) -> list[str]:
            out = [venv_python(), str(BENCH / "streamclient.py"), "--url", target.url("paced"), "--n", str(count),
                   "--model", target.model("paced"), "--timeout", str(self.args.stream_timeout),
                   "--ramp", str(ramp * count / n)]
            for h in target.headers("paced"):
                out += ["--header", h]
            return out
        if self.args.warmup > 0:  # a first wave opens the target's upstream connections
            run_json(argv(min(n, 100)), self.args.stream_timeout + 60)
        busy = Busy(target.pid(), self.nginx.proc.pid)
        res = run_json(argv(n), self.args.stream_timeout + 60)
        res.update(busy.done())
        res.update(target=target.name, label=target.label, ramp_s=ramp)
        if target.name == "portkey" and res["completed"] == 0 and any(k.startswith("status 5") for k in res["errors"]):
            res["note"] = ("Portkey 1.15.2 on Node answers every streamed request with 500: TypeError: immutable in "
                           "updateHeaders (Portkey-AI/gateway issues 1389, 1550)")
        t = res["ttft_ms"]
        when = "at once" if not ramp else f"over {ramp:g}s"
        log(f"  streams x{n} {when:8s} {target.label:28s} completed {res['completed']}/{n}  "
            f"TTFT p50 {fmt(t['p50'])} ms p99 {fmt(t['p99'])} ms  errors {res['errors']}")
        return res

    # ---- profiling ----------------------------------------------------------------------------

    def start_profile(self, scenario: str, target):
        if not self.args.profile or not target.name.startswith("gateway") or scenario not in self.args.profile_at:
            return None
        pyspy = VENV_BIN / "py-spy"
        if not pyspy.exists():
            self.results["errors"].append("--profile: py-spy is not installed in the venv")
            return None
        out = self.out / f"profile-{target.name}-{scenario}.collapsed"
        argv = [str(pyspy), "record", "--pid", str(target.pid()), "--duration", str(max(1, int(self.args.duration))),
                "--rate", "250", "--format", "raw", "--output", str(out), "--subprocesses", "--nonblocking",
                "--threads"]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out, target.name

    def stop_profile(self, profiler, scenario: str) -> None:
        if profiler is None:
            return
        proc, out, name = profiler
        try:
            proc.wait(self.args.duration + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if out.exists():
            self.results["profiles"][f"{name}/{scenario}"] = report.top_functions(out)

    # ---- targets ----------------------------------------------------------------------------

    def start_echo(self) -> str:
        """The Python fake upstream from the tests: it echoes the question, so semantic hits can be checked."""
        if self.echo_url is None:
            port = free_port()
            self.echo = Proc("echo", [venv_python(), str(ROOT / "tests" / "fake_upstream.py"), "--port", str(port),
                                      "--latency", str(self.args.echo_latency)], self.work / "echo.log").start()
            wait_port(port, 30, self.echo.popen)
            self.echo_url = f"http://{LOOPBACK}:{port}/v1"
        return self.echo_url

    def gateway(self, tag: str = "gateway", workers: int = 1, semantic: bool = True) -> Gateway:
        if self.args.smoke and workers == 1:
            # The smoke test shares two gateways: one with the semantic layer for its scenarios
            # (loading the local embedder takes 15-25 s, so it starts first, in the background) and
            # one without for the rest.
            semantic = tag in ("gateway-semantic", "gateway-mix")
            if semantic not in self.shared:
                self.shared[semantic] = self._start_gateway(f"gateway-{'semantic' if semantic else 'plain'}",
                                                            1, semantic, wait=False)
            gw = self.shared[semantic].wait()
            self.results["startup_s"].setdefault(gw.name, gw.startup_s)
            return Shared(gw, tag)
        return self._start_gateway(tag, workers, semantic)

    def _start_gateway(self, tag: str, workers: int, semantic: bool, wait: bool = True) -> Gateway:
        cfg = gateway_config(self.nginx, self.start_echo(), free_port(), semantic=semantic,
                             semantic_timeout_ms=self.args.semantic_timeout_ms)
        env = None
        if self.args.embedder_threads:  # torch's (and BLAS's) intra-op threads in the gateway process
            env = {"OMP_NUM_THREADS": str(self.args.embedder_threads), "MKL_NUM_THREADS": str(self.args.embedder_threads)}
        gw = Gateway(self.work, cfg, workers=workers, tag=tag, wait=wait, env=env)
        if not wait:
            return gw
        self.results["startup_s"][tag] = gw.startup_s
        log(f"{gw.label} up in {gw.startup_s:.1f}s (rss {gw.rss_mb():.0f} MiB)")
        return gw

    def peer(self, name: str, cache: bool):
        nginx = self.nginx
        if name == "litellm":
            p = P.LiteLLM(self.work, {m: nginx.url(k) for k, m in MODELS.items()}, cache=cache)
            return PeerTarget(p, f"LiteLLM {p.version}")
        p = P.Portkey(self.work, nginx.url("instant"), cache=cache)

        def headers(kind: str) -> list[str]:
            h = ["x-portkey-provider: openai", f"x-portkey-custom-host: {nginx.url(kind)}",
                 "Authorization: Bearer sk-bench"]
            if cache:
                h.append('x-portkey-config: {"cache": {"mode": "simple"}}')
            return h
        return PeerTarget(p, f"Portkey {p.version}", headers)

    # ---- scenarios ----------------------------------------------------------------------------

    def selected(self, name: str) -> bool:
        return name in self.args.scenarios

    def wrk_scenarios(self, cache_phase: bool) -> list[str]:
        """The closed-loop rows asked for; cache_phase: those whose requests are cacheable (the peers run
        them with their caches on)."""
        out = []
        if not cache_phase:
            if self.selected("passthrough"):
                out += ["passthrough-1", "passthrough-32"]
            if self.selected("slow"):
                out.append("slow-256")
            return out
        if self.selected("passthrough"):
            out += ["miss-1", "miss-32"]
        if self.selected("exact"):
            out.append("exact-32")
        return out

    def start_target(self, make, name: str, what: list[str]):
        """The target `make` starts, or None when it cannot start: its rows (`what`) say why."""
        try:
            return make()
        except Exception as exc:  # noqa: BLE001 - a target that cannot start leaves its column empty
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log(f"{name}: skipped: {reason}")
            for s in what:
                self.results["skipped"][f"{name}/{s}"] = reason
            return None

    def run_target(self, make, name: str, scenarios: list[str], streams: bool) -> None:
        if not scenarios and not streams:
            return
        target = self.start_target(make, name, scenarios + (["streams"] if streams else []))
        if target is None:
            return
        try:
            for s in scenarios:
                kind, conns, mode = WRK_SCENARIOS[s]
                try:
                    if mode != "bypass":
                        self.check_cache(target, kind, mode)
                    self.results["rows"].append(self.measure(s, target, kind, conns, mode))
                except Exception as exc:  # noqa: BLE001
                    self.fail(f"{name}/{s}", exc)
            if streams:
                ramps = self.args.stream_ramps if name in ("upstream", "bare", "gateway") else [0.0]
                for ramp in ramps:
                    try:
                        self.results["streams"].append(self.streams(target, self.args.streams, ramp))
                    except Exception as exc:  # noqa: BLE001
                        self.fail(f"{name}/streams", exc)
        finally:
            target.stop()

    def check_cache(self, target, kind: str, mode: str) -> None:
        """Ask one request twice (per worker) and record what each target says about its cache: for
        "hit" the load's own request, which is then stored; for "miss" one of its kind (temperature 0,
        a number of its own), which must miss and then hit (it was stored)."""
        import urllib.request
        body = body_for(target.model(kind), True, vary=mode == "miss")
        raw = json.dumps(body).replace("@N@", "check-" + os.urandom(4).hex()).encode()
        headers = {"content-type": "application/json"}
        headers.update(h.split(": ", 1) for h in target.headers(kind))
        seen = []
        for _ in range(2 * getattr(target, "workers", 1)):  # each worker has its own memory cache
            req = urllib.request.Request(target.url(kind), raw, headers)
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
                if target.name.startswith("gateway"):
                    seen.append(r.headers.get("x-gateway-cache"))
                elif target.name == "litellm":  # it names the cache key on hits only
                    seen.append("hit" if r.headers.get("x-litellm-cache-key") else "miss")
                elif target.name == "portkey":
                    seen.append(f"x-portkey-cache-status: {r.headers.get('x-portkey-cache-status')}")
                else:
                    seen.append("no cache")
        checks = self.results.setdefault("exact_check" if mode == "hit" else "miss_check", {})
        checks[target.name if kind == "instant" else f"{target.name}/{kind}"] = seen
        if not target.name.startswith("gateway"):
            return
        if mode == "hit" and "hit-exact" not in seen:
            self.results["errors"].append(f"{target.name}: the exact scenario's request was not a hit "
                                          f"(x-gateway-cache: {seen}); the numbers are not cache hits")
        if mode == "miss" and seen[:1] + seen[-1:] != ["miss", "hit-exact"]:
            self.results["errors"].append(f"{target.name}: a cacheable miss's request was not a miss, then stored "
                                          f"and a hit (x-gateway-cache: {seen}); the numbers are not cacheable misses")

    def fail(self, what: str, exc: Exception) -> None:
        msg = f"{what}: {type(exc).__name__}: {str(exc).strip()[:400]}"
        log("FAILED " + msg)
        self.results["errors"].append(msg)
        if self.args.verbose:
            traceback.print_exc()

    def main_targets(self) -> None:
        plain, cached = self.wrk_scenarios(False), self.wrk_scenarios(True)
        streams = self.selected("streams")
        a = self.args
        self.run_target(lambda: UpstreamAlone(self.nginx), "upstream", plain + cached, streams)
        self.run_target(lambda: Bare(self.nginx, self.work), "bare", plain + cached, streams)
        self.run_target(lambda: self.gateway("gateway", semantic=not a.no_semantic_in_main), "gateway",
                        plain + cached, streams)
        if a.peers:
            for name in ("portkey", "litellm"):
                self.run_target(lambda n=name: self.peer(n, cache=False), name, plain,
                                streams and not (name == "litellm" and a.skip_litellm_streams))
                if cached:
                    self.run_target(lambda n=name: self.peer(n, cache=True), name, cached, False)
        else:
            for name in ("portkey", "litellm"):
                for s in plain + cached + (["streams"] if streams else []):
                    self.results["skipped"][f"{name}/{s}"] = "peers not requested (PEERS=0)"

    def workers2(self) -> None:
        if not self.selected("workers"):
            return
        scen = ["passthrough-32", "slow-256", "exact-32"]
        # (the smoke test leaves the semantic layer out here: two workers loading the embedder take 20 s)
        semantic = not (self.args.no_semantic_in_main or self.args.smoke)
        self.run_target(lambda: self.gateway("gateway-w2", workers=2, semantic=semantic),
                        "gateway-w2", scen, False)

    def openloop(self) -> None:
        """Latency added over the upstream alone (nginx's 50 ms location asked directly), two ways.
        Open loop: requests on a fixed schedule (bench/openloop.py) at fractions of the bare
        pass-through's capacity, latency from each request's due time. The capacity is the bare's
        closed-loop rate at 256 in flight on the same upstream: its slow-256 row when this run has
        one, else measured here first (or --openloop-capacity). Closed loop: wrk at 1, 16 and 64 in
        flight, as LiteLLM's published cross-gateway comparison does. Per target, the closed-loop rows
        first, then the rates from the lowest; a target that falls behind a rate (answers fewer than
        90% of its requests or more than 1% errors) is not asked for the higher ones: its backlog would
        be what they measure."""
        if not self.selected("openloop"):
            return
        a = self.args
        out: dict = {"open": [], "closed": [], "skipped": {}}
        self.results["openloop"] = out
        try:
            out["capacity"] = self.openloop_capacity()
        except Exception as exc:  # noqa: BLE001
            return self.fail("openloop/capacity", exc)
        out["rates"] = [max(1, round(out["capacity"]["rps"] * x)) for x in a.openloop_fractions]
        log(f"  open loop: capacity {out['capacity']['rps']:,.0f} req/s ({out['capacity']['source']}); "
            f"rates {out['rates']}")
        targets = [("upstream", lambda: UpstreamAlone(self.nginx), ["bypass"]),
                   ("bare", lambda: Bare(self.nginx, self.work), ["bypass"]),
                   ("gateway", lambda: self.gateway("gateway", semantic=not a.no_semantic_in_main), list(MODES))]
        if a.peers:
            targets += [(name, lambda n=name: self.peer(n, cache=False), ["bypass"]) for name in ("portkey", "litellm")]
        else:
            for name in ("portkey", "litellm"):
                self.results["skipped"][f"{name}/openloop"] = "peers not requested (PEERS=0)"
        for name, make, modes in targets:
            target = self.start_target(make, name, ["openloop"])
            if target is None:
                continue
            try:
                for mode in modes:
                    try:
                        self.openloop_rows(target, mode, out)
                    except Exception as exc:  # noqa: BLE001
                        self.fail(f"openloop/{name}/{mode}", exc)
            finally:
                target.stop()

    def openloop_capacity(self) -> dict:
        a = self.args
        if a.openloop_capacity:
            return {"rps": a.openloop_capacity, "source": "given: --openloop-capacity"}
        for r in self.results["rows"]:
            if r["scenario"] == "slow-256" and r["target"] == "bare" and r["requests"]:
                return {"rps": r["rps"], "p99": r["p99"], "source": "the bare pass-through's slow-256 row"}
        bare = Bare(self.nginx, self.work)
        try:
            r = self.measure("capacity", bare, "slow", 256, "bypass")
        finally:
            bare.stop()
        return {"rps": r["rps"], "p99": r["p99"], "source": "the bare pass-through, 256 in flight, 50 ms upstream"}

    def openloop_rows(self, target, mode: str, out: dict) -> None:
        a = self.args
        if mode != "bypass":
            self.check_cache(target, "slow", mode)
        for conns in a.openloop_closed:
            out["closed"].append(self.measure(f"50ms-{conns}", target, "slow", conns, mode))
        argv = [venv_python(), str(BENCH / "openloop.py"), "--url", target.url("slow"),
                "--body", str(self.body_file(mode_body(target.model("slow"), mode))),
                "--duration", str(a.duration), "--warmup", str(a.warmup)] + (["--unique"] if mode == "miss" else [])
        for h in target.headers("slow"):
            argv += ["--header", h]
        for i, rate in enumerate(out["rates"]):
            busy = Busy(target.pid(), self.nginx.proc.pid)
            r = run_json(argv + ["--rate", str(rate)], a.warmup + a.duration + 60)
            r.update(busy.done())
            r.update(target=target.name, label=mode_label(target, mode), mode=mode)
            out["open"].append(r)
            lat, lag = r["latency_ms"], r["lag_ms"]
            log(f"  open loop {rate:6,}/s {r['label']:28s} answered {r['achieved_rps']:7,.0f}/s  "
                f"p50 {fmt(lat['p50'])} p99 {fmt(lat['p99'])} p99.9 {fmt(lat['p999'])} ms  errors {r['errors']}  "
                f"lag p99 {fmt(lag['p99'])} ms  cpu {r['cpu_pct']:3.0f}%")
            if r["achieved_rps"] < 0.9 * rate or r["errors"] > 0.01 * r["scheduled"]:
                for higher in out["rates"][i + 1:]:
                    out["skipped"][f"{target.name}/{mode}/{higher}"] = f"fell behind at {rate:,}/s"
                break

    def guardrails(self) -> None:
        """What output guardrails cost: one gateway, the same upstream through two routes, one with the
        README's output rules (`no-leaks`: two patterns that block; `pii`: every built-in detector,
        masking) and one without. 1,000 streams started over 1 s from the paced upstream (time to the
        first event, to the first text and to the stream's end), and JSON at 32 in flight from the instant one (not
        cacheable, so every answer is filtered, none served from a cache). The answer matches no rule:
        what is measured is the cost of looking. Each pair run twice, alternating (once in the smoke)."""
        if not self.selected("guardrails"):
            return
        a = self.args
        cfg = gateway_config(self.nginx, None, free_port(), semantic=False)
        cfg["guardrails"] = GUARDRAILS
        for kind in ("instant", "paced"):
            cfg["routes"][f"plain-{kind}"] = {"targets": [MODELS[kind]]}
            cfg["routes"][f"guarded-{kind}"] = {"targets": [MODELS[kind]], "guardrails": OUTPUT_RULES}
        out: dict = {"runs": {}, "streams": a.streams, "ramp_s": 1.0, "rules": OUTPUT_RULES, "guardrails": GUARDRAILS}
        try:
            gw = Gateway(self.work, cfg, tag="gateway-guardrails")
        except Exception as exc:  # noqa: BLE001
            return self.fail("guardrails", exc)
        labels = {"plain": "route without guardrails", "guarded": "route with output guardrails"}
        try:
            for _ in range(1 if a.smoke else 2):
                for variant, label in labels.items():
                    route = RouteView(gw, {kind: f"{variant}-{kind}" for kind in ("instant", "paced")}, label)
                    run = out["runs"].setdefault(variant, {"streams": [], "json": []})
                    run["streams"].append(self.streams(route, a.streams, 1.0))
                    run["json"].append(self.measure("guardrails-32", route, "instant", 32, "bypass"))
        except Exception as exc:  # noqa: BLE001
            self.fail("guardrails", exc)
        finally:
            gw.stop()
        self.results["guardrails"] = out

    def instructions(self) -> None:
        """Instructions per request under callgrind (bench/instructions.py): the bare pass-through,
        and the gateway as bypass, cacheable miss and exact hit."""
        if not self.selected("instructions"):
            return
        try:
            self.results["instructions"] = I.run(self.nginx, self.work / "instructions", self.args.instructions_n,
                                                 list(I.MODES))
        except Exception as exc:  # noqa: BLE001
            self.fail("instructions", exc)

    def keys(self) -> None:
        """What the limits cost per request, counted in memory and in Redis (a local redis-server):
        the same pass-through (8 in flight) with no key; with the provider's concurrency slots in
        Redis (`state.backend: redis` makes `max_concurrency` global); with a key's rpm and tpm,
        its budget, and all three, on top. Every variant alternated twice, so that drift of the
        machine falls on all alike."""
        if not self.selected("keys"):
            return
        a = self.args
        key = "sk-bench-key"
        rate = {"rpm": 10**8, "tpm": 10**12}
        budget = {"budget": {"usd": 10**9, "period": "day"}}
        limits = {"name": "bench", "key": key, **rate, **budget}
        redis_port = free_port()
        redis = Proc("redis", [need("redis-server"), "--port", str(redis_port), "--bind", LOOPBACK, "--save", "",
                               "--appendonly", "no"], self.work / "redis.log").start()
        out: dict = {"runs": {}}
        try:
            wait_port(redis_port, 10, redis.popen)
            in_redis = {"state": {"backend": "redis", "redis_url": f"redis://{LOOPBACK}:{redis_port}/0"}}
            bearer = [f"Authorization: Bearer {key}"]

            def keyed(**only):
                return {"auth": {"keys": [{"name": "bench", "key": key, **only}]}}

            variants = {"no key": ({}, []),
                        "key, state in memory": (keyed(**rate, **budget), bearer),
                        "no key, slots in Redis": (in_redis, []),
                        "key rpm+tpm, Redis": ({**keyed(**rate), **in_redis}, bearer),
                        "key budget, Redis": ({**keyed(**budget), **in_redis}, bearer),
                        "key, state in Redis": ({**keyed(**rate, **budget), **in_redis}, bearer)}
            gateways = {}
            for name, (extra, _) in variants.items():
                cfg = gateway_config(self.nginx, None, free_port(), semantic=False)
                cfg.update(extra)
                gateways[name] = Gateway(self.work, cfg, tag="gateway-" + name.replace(" ", "-").replace(",", ""))
            for _ in range(2):
                for name, (_, headers) in variants.items():
                    gw = gateways[name]
                    r = self.wrk(gw.url("instant"), 8, a.duration, body_for(gw.model("instant"), False), headers)
                    out["runs"].setdefault(name, []).append(r)
                    log(f"  keys: {name}: {r['rps']:,.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                        f"errors {r['errors']}")
            for gw in gateways.values():
                gw.stop()
        except Exception as exc:  # noqa: BLE001
            self.fail("keys", exc)
        finally:
            redis.stop()
        self.results["keys"] = out

    def providers(self) -> None:
        """What translating costs per request: one gateway, the same answer from an OpenAI-compatible
        location and from an Anthropic-shaped one (nginx, instant). A provider adapter's (chat
        completions to Anthropic against chat completions passed through: JSON at 1 and 32 in
        flight, a 20-chunk stream at 1) and an inbound API's (Anthropic's Messages in, to the
        OpenAI-compatible location, against chat completions passed through; the Responses API in,
        to the Anthropic one, against chat completions to it). Each pair run twice, alternating."""
        if not self.selected("providers"):
            return
        a = self.args
        base = f"http://{LOOPBACK}:{self.nginx.port}"
        cfg = gateway_config(self.nginx, None, free_port(), semantic=False)
        pool = {"max_concurrency": 1024, "max_queue": 4096, "timeout_s": 60}
        cfg["providers"]["sse"] = {"base_url": self.nginx.url("sse"), "api_key": "sk-bench", **pool}
        for name in ("anthropic", "anthropic-sse"):
            cfg["providers"][name] = {"type": "anthropic", "base_url": f"{base}/{name}", "api_key": "sk-bench", **pool}
        cfg["models"].update({
            "openai-sse": {"provider": "sse", "name": "gpt-4o-mini", **PRICE},
            "claude": {"provider": "anthropic", "name": "claude-bench", "max_tokens": 128, **PRICE},
            "claude-sse": {"provider": "anthropic-sse", "name": "claude-bench", "max_tokens": 128, **PRICE}})
        chat = "/v1/chat/completions"
        # case -> in flight, then (the baseline, the translated path): (path, model, stream, body's shape) each
        pairs = {"json, 1 in flight": (1, (chat, "gpt-4o-mini", False, "chat"), (chat, "claude", False, "chat")),
                 "json, 32 in flight": (32, (chat, "gpt-4o-mini", False, "chat"), (chat, "claude", False, "chat")),
                 "stream, 1 in flight": (1, (chat, "openai-sse", True, "chat"), (chat, "claude-sse", True, "chat")),
                 "messages in, OpenAI-compatible out, json": (1, (chat, "gpt-4o-mini", False, "chat"),
                                                              ("/v1/messages", "gpt-4o-mini", False, "messages")),
                 "messages in, OpenAI-compatible out, stream": (1, (chat, "openai-sse", True, "chat"),
                                                                ("/v1/messages", "openai-sse", True, "messages")),
                 "responses in, Anthropic out, json": (1, (chat, "claude", False, "chat"),
                                                       ("/v1/responses", "claude", False, "responses"))}
        out: dict = {"runs": {}}
        try:
            gw = Gateway(self.work, cfg, tag="gateway-providers")
        except Exception as exc:  # noqa: BLE001
            return self.fail("providers", exc)
        try:
            base_url = f"http://{LOOPBACK}:{gw.port}"
            for _ in range(2):
                for case, (conns, *sides) in pairs.items():
                    for side, (path, model, stream, kind) in zip(("baseline", "translated"), sides):
                        r = self.wrk(base_url + path, conns, a.duration, inbound_body(kind, model, stream), [])
                        out["runs"].setdefault(case, {}).setdefault(side, []).append(r)
                        log(f"  providers: {case}, {path} {model}: {r['rps']:,.0f} req/s, p50 {r['p50']:.2f} ms, "
                            f"p99 {r['p99']:.2f} ms, errors {r['errors']}")
        except Exception as exc:  # noqa: BLE001
            self.fail("providers", exc)
        finally:
            gw.stop()
        self.results["providers"] = out

    def tracing(self) -> None:
        """What tracing costs per request: the same pass-through (8 in flight, instant upstream)
        with no `tracing:` section, and exporting over OTLP/HTTP to a local receiver (the tests'
        OTLP receiver, in this process) at sample_ratio 0, 0.1 and 1.0; each variant twice,
        alternating."""
        if not self.selected("tracing"):
            return
        sys.path.insert(0, str(ROOT))
        from tests.otlp_receiver import OtlpReceiver

        a = self.args
        out: dict = {"runs": {}}
        receiver = OtlpReceiver().start()
        gateways: dict = {}
        try:
            variants = {"off": None, "sample 0": 0.0, "sample 0.1": 0.1, "sample 1.0": 1.0}
            for name, ratio in variants.items():
                cfg = gateway_config(self.nginx, None, free_port(), semantic=False)
                if ratio is not None:
                    cfg["tracing"] = {"endpoint": receiver.endpoint, "sample_ratio": ratio}
                gateways[name] = Gateway(self.work, cfg, tag="gateway-tracing-" + name.replace(" ", "-"))
            for _ in range(2):
                for name, gw in gateways.items():
                    r = self.wrk(gw.url("instant"), 8, a.duration, body_for(gw.model("instant"), False), [])
                    out["runs"].setdefault(name, []).append(r)
                    log(f"  tracing: {name}: {r['rps']:,.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                        f"errors {r['errors']}")
            out["spans_received"] = len(receiver.snapshot())
        except Exception as exc:  # noqa: BLE001
            self.fail("tracing", exc)
        finally:
            for gw in gateways.values():
                gw.stop()
            receiver.stop()
        self.results["tracing"] = out

    def soak(self) -> None:
        """N minutes of mixed traffic against one gateway, a fault every minute (bench/soak.py)."""
        if not self.selected("soak"):
            return
        try:
            res = S.run(self.work, S.settings_from(self.args), log)
        except Exception as exc:  # noqa: BLE001
            return self.fail("soak", exc)
        self.results["soak"] = res
        self.results["errors"].extend(res["problems"])
        r, st = res["resources"], res["settle"]
        log(f"  soak: {res['requests']} requests, {res['errors']} errors, {res['left']} left by the client; "
            f"rss {r.get('rss_start_mb')} -> {r.get('rss_end_mb')} MiB, fds {r.get('fds_start')} -> {r.get('fds_end')}; "
            f"slots in flight at the end {st['final']}")
        for finding in res["findings"]:
            log(f"  soak finding: {finding}")

    def semantic(self) -> None:
        if not self.selected("semantic"):
            return
        a = self.args
        try:
            gw = self.gateway("gateway-semantic")
        except Exception as exc:  # noqa: BLE001
            return self.fail("semantic", exc)
        try:
            base = [venv_python(), str(BENCH / "client.py")]
            t0 = time.monotonic()
            fill = run_json(base + ["fill", "--url", gw.url("instant"), "--model", "faq", "--n", str(a.entries),
                                    "--concurrency", str(a.fill_concurrency), "--timeout", str(a.fill_timeout)],
                            a.fill_timeout + 90)
            fill["rss_mb"] = gw.rss_mb()
            fill["concurrency"] = a.fill_concurrency
            fill["metrics"] = report.cache_metrics(gw.metrics())
            log(f"  semantic fill: {fill['requests']} asked in {time.monotonic() - t0:.0f}s, layers {fill['layers']}, "
                f"errors {fill['errors']}")
            lookup = run_json(base + ["lookup", "--url", gw.url("instant"), "--model", "faq",
                                      "--stored", str(a.entries), "--duration", str(a.duration),
                                      "--concurrency", "1", "--timeout", str(a.duration + 30)], a.duration + 120)
            lat = lookup["latency_ms"].get("hit-semantic", {})
            log(f"  semantic lookup: layers {lookup['layers']}, hit-semantic p50 {fmt(lat.get('p50'))} ms "
                f"p99 {fmt(lat.get('p99'))} ms, wrong {lookup['semantic_wrong']}/{lookup['semantic_checked']}")
            self.results["semantic"] = {"entries": a.entries, "fill": fill, "lookup": lookup,
                                        "metrics": report.cache_metrics(gw.metrics())}
            self.results["semantic"]["beside"] = self.passthrough_beside_lookups(gw, base)
            gw.stop()
            if not a.smoke:  # the embedder alone, on the now quiet machine: the floor of a lookup
                try:
                    probe = run_json([venv_python(), str(BENCH / "embed_probe.py"), "200"], 300)
                    self.results["semantic"]["embedder_alone"] = probe
                    log(f"  embedder alone: one question p50 {probe['single_ms']['p50']:.1f} ms")
                except Exception as exc:  # noqa: BLE001
                    self.fail("semantic/embedder probe", exc)
        except Exception as exc:  # noqa: BLE001
            self.fail("semantic", exc)
        finally:
            gw.stop()

    def passthrough_beside_lookups(self, gw, base: list[str]) -> dict:
        """Does the semantic layer stall the event loop? A pass-through route's latency (8 in flight)
        alone, then while semantic lookups run at full speed (4 in flight) in the same process, then
        (the control) beside a process that only burns the CPU share that the semantic layer's embedder
        thread and Qdrant helper used meanwhile: what the pass-through loses to a busy machine rather
        than to a blocked loop."""
        a = self.args
        body, url = body_for(gw.model("instant"), False), gw.url("instant")
        alone = self.wrk(url, 8, a.duration, body, [])
        found: dict = {}
        ready = self.work / "lookups-ready"
        ready.unlink(missing_ok=True)

        def lookups() -> None:
            found.update(run_json(base + ["lookup", "--url", url, "--model", "faq", "--stored", str(a.entries),
                                          "--duration", str(a.duration + 3), "--concurrency", "4", "--seed", "12",
                                          "--ready-file", str(ready), "--timeout", str(a.duration + 60)],
                                  a.duration + 120))

        thread = threading.Thread(target=lookups)
        thread.start()
        deadline = time.monotonic() + 30
        while not ready.exists() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the lookups are under way
        profiler = self.start_profile("semantic-beside", gw)
        layer = ("gateway-embed", "gateway-qdrant")
        cpu0, t0 = gw.thread_cpu_s(*layer), time.monotonic()
        beside = self.wrk(url, 8, a.duration, body, [])
        embed_share = (gw.thread_cpu_s(*layer) - cpu0) / (time.monotonic() - t0)
        self.stop_profile(profiler, "semantic-beside")
        thread.join()
        out = {"alone": alone, "beside": beside, "lookups": found.get("requests"), "embedder_cpu": embed_share,
               "lookup_p50_ms": found.get("latency_ms", {}).get("hit-semantic", {}).get("p50")}
        log(f"  pass-through beside lookups: p99 {alone['p99']:.2f} -> {beside['p99']:.2f} ms "
            f"({found.get('requests')} lookups meanwhile, the embedder and Qdrant busy {embed_share:.0%} of a core)")
        if embed_share > 0.02:
            burner = subprocess.Popen([venv_python(), str(BENCH / "embed_probe.py"), "--burn", str(a.duration + 8),
                                       f"{min(embed_share, 1.0):.3f}"], cwd=BENCH,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(5)  # the model is loaded and burning
                out["control"] = self.wrk(url, 8, a.duration, body, [])
            finally:
                burner.kill()
                burner.wait()
            log(f"  control, the same CPU share burnt in another process: p99 {out['control']['p99']:.2f} ms")
        return out

    def mix(self) -> None:
        if not self.selected("mix"):
            return
        a = self.args
        try:
            gw = self.gateway("gateway-mix")
        except Exception as exc:  # noqa: BLE001
            return self.fail("mix", exc)
        try:
            res = run_json([venv_python(), str(BENCH / "client.py"), "mix", "--url", gw.url("instant"),
                            "--model", "faq", "--n", str(a.mix_requests), "--pool", str(a.mix_pool),
                            "--concurrency", "8", "--timeout", str(a.mix_timeout)], a.mix_timeout + 90)
            res["price"] = PRICE
            res["metrics"] = report.cache_metrics(gw.metrics())
            self.results["mix"] = res
            log(f"  mix: {res['requests']} requests, layers {res['layers']}, errors {res['errors']}")
        except Exception as exc:  # noqa: BLE001
            self.fail("mix", exc)
        finally:
            gw.stop()

    def memory(self) -> None:
        """The leak check, on a gateway without the semantic layer (the RSS targets are about it) and on
        one with it (the embedder loaded; the load never asks it: no route of it is semantic). The
        smoke test's shared gateway has no semantic layer: it runs the first only."""
        if not self.selected("memory"):
            return
        self.results["memory"] = []
        for semantic in (False,) if self.args.smoke else (False, True):
            self.leak_check(semantic)

    def leak_check(self, semantic: bool) -> None:
        a = self.args
        checkpoints = [int(x) for x in a.memory_checkpoints.split(",")]
        name = "gateway-memory" + ("" if semantic else "-plain")
        try:
            gw = self.gateway(name, semantic=semantic)
        except Exception as exc:  # noqa: BLE001
            return self.fail(name, exc)
        try:
            time.sleep(1)
            mem = {"semantic": semantic, "idle_mb": gw.rss_mb(), "checkpoints": [], "curve": [], "vary": a.memory_vary,
                   "mode": "long" if a.long else "short"}
            body = body_for(gw.model("instant"), True, vary=True)
            total, errors = 0, 0
            t_end = time.monotonic() + a.memory_timeout
            todo = list(checkpoints)
            while todo and time.monotonic() < t_end:
                left = todo[0] - total
                chunk = min(a.memory_chunk_s, max(1.0, left / max(1.0, (total / max(1e-9, sum(
                    c["seconds"] for c in mem["curve"]))) if mem["curve"] else 1500.0)))
                r = self.wrk(gw.url("instant"), 32, chunk, body, [], vary=a.memory_vary)
                total += r["requests"]
                errors += r["errors"]
                mem["curve"].append({"requests": total, "rss_mb": gw.rss_mb(), "seconds": chunk, "rps": r["rps"]})
                while todo and total >= todo[0]:
                    mem["checkpoints"].append({"target": todo.pop(0), "requests": total, "rss_mb": gw.rss_mb()})
                    log(f"  memory{'' if semantic else ', no semantic layer'}: {total} requests, "
                        f"rss {gw.rss_mb():.1f} MiB")
            mem["errors"] = errors
            mem["incomplete"] = bool(todo)
            self.results["memory"].append(mem)
        except Exception as exc:  # noqa: BLE001
            self.fail(name, exc)
        finally:
            gw.stop()

    # ---- run ----------------------------------------------------------------------------------

    def run(self) -> dict:
        a = self.args
        started = time.time()
        self.results["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
        self.results["machine"] = machine()
        self.results["versions"] = versions()
        self.results["load_before"] = os.getloadavg()
        self.results["exact_max_entries"] = EXACT_MAX_ENTRIES
        try:
            self.nginx = Nginx(self.work / "nginx").start()
            log(f"nginx upstream on {self.nginx.url('instant')}")
            if a.smoke and (self.selected("semantic") or self.selected("mix")):
                self.shared[True] = self._start_gateway("gateway-semantic", 1, True, wait=False)
            self.main_targets()
            self.openloop()
            self.guardrails()
            self.workers2()
            self.semantic()
            self.mix()
            self.memory()
            self.keys()
            self.providers()
            self.tracing()
            self.instructions()
            self.soak()
        finally:
            for gw in self.shared.values():
                gw.stop()
            if self.echo:
                self.echo.stop()
            if self.nginx:
                self.nginx.stop()
        self.results["load_after"] = os.getloadavg()
        self.results["wall_s"] = time.time() - started
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))
        try:
            self.results["charts"] = report.charts(self.results, self.out)
        except ImportError as exc:  # `make test` has no matplotlib; `make bench` installs it
            self.results["notes"].append(f"no charts: {exc}")
        except Exception as exc:  # noqa: BLE001 - a broken chart must not lose the numbers
            self.results["errors"].append(f"charts: {type(exc).__name__}: {exc}")
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))
        (self.out / "results.md").write_text(report.markdown(self.results))
        return self.results


def fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = next(l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "python": platform.python_version(), "os": _os_name()}


def _os_name() -> str:
    try:
        return next(l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME"))
    except (OSError, StopIteration):
        return platform.system()


def _cmd(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "missing"


def versions() -> dict:
    import importlib.metadata as md
    out = {}
    for pkg in ("aiohttp", "uvicorn", "starlette", "uvloop", "httptools", "orjson", "qdrant-client",
                "sentence-transformers", "torch", "cachetools", "prometheus-client"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "missing"
    out["nginx"] = _cmd([need("nginx"), "-v"])
    out["wrk"] = _cmd(["wrk", "-v"])
    out["node"] = _cmd(["node", "--version"])
    out["litellm"] = P.installed_litellm() or "not installed"
    out["portkey"] = P.installed_portkey() or "not installed"
    commit = _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "gateway"],
                           capture_output=True, text=True).stdout.strip()
    out["gateway"] = commit + (" + uncommitted changes in gateway/" if dirty else "")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="all",
                   help=f"comma list of {','.join(ALL + EXTRA)} (default all: every one but {','.join(EXTRA)})")
    p.add_argument("--duration", type=float, default=10, help="seconds per measurement (default 10)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before each measurement")
    p.add_argument("--peers", type=int, default=1, help="1: run the installed peers; 0: skip them")
    p.add_argument("--instructions-n", type=int, default=500,
                   help="instructions: requests counted per mode under callgrind (default 500)")
    p.add_argument("--long", action="store_true", help="memory: go to 1M requests (default stops at 200k)")
    p.add_argument("--smoke", action="store_true", help="every scenario for about a second (the smoke test)")
    p.add_argument("--profile", action="store_true", help="py-spy the gateway during its measurements")
    p.add_argument("--profile-at", default="passthrough-32,slow-256,exact-32")
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--stream-timeout", type=float, default=60)
    p.add_argument("--stream-ramps", default="0,1",
                   help="spread the streams' starts over these seconds: 0 is all at once (the issue's "
                        "scenario); 1 is 1,000 new streams a second, for the upstream, bare and gateway")
    p.add_argument("--skip-litellm-streams", action="store_true")
    p.add_argument("--openloop-capacity", type=float, default=0,
                   help="open loop: the bare pass-through's req/s on the 50 ms upstream that the rates are fractions "
                        "of (default 0: its slow-256 row of this run, else measured first)")
    p.add_argument("--openloop-fractions", default="0.25,0.5,0.7", help="open loop: the rates, as fractions of it")
    p.add_argument("--openloop-closed", default="1,16,64", help="open loop's closed-loop rows: in flight")
    p.add_argument("--entries", type=int, default=10000, help="semantic: stored entries")
    p.add_argument("--fill-timeout", type=float, default=900)
    p.add_argument("--semantic-timeout-ms", type=float, default=1000,
                   help="the semantic layer's timeout_ms in the bench's config (the gateway's default is 200; "
                        "0 keeps it): a lookup slower than this is a miss and the layer cools down for 5 s")
    p.add_argument("--embedder-threads", type=int, default=1,
                   help="OMP_NUM_THREADS for the gateway processes (torch's threads for the local embedder; "
                        "default 1: with torch's default of one per core, embeds on this 2-core machine under "
                        "load took 200+ ms and the semantic layer spent the run in its timeout cooldown); "
                        "0 leaves the gateway's default")
    p.add_argument("--fill-concurrency", type=int, default=4,
                   help="semantic fill: in flight (more makes the embedder miss its 200 ms timeout)")
    p.add_argument("--mix-requests", type=int, default=3000)
    p.add_argument("--mix-pool", type=int, default=1000)
    p.add_argument("--mix-timeout", type=float, default=300)
    p.add_argument("--echo-latency", type=float, default=0.0, help="the Python fake upstream's delay (s)")
    p.add_argument("--memory-checkpoints", default=None, help="request counts (default 100000,200000; --long: 100000,1000000)")
    p.add_argument("--memory-vary", type=int, default=50000, help="distinct requests in the leak check")
    p.add_argument("--memory-chunk-s", type=float, default=10)
    p.add_argument("--memory-timeout", type=float, default=None)
    p.add_argument("--no-semantic-in-main", action="store_true",
                   help="start the pass-through gateway without the semantic layer configured")
    p.add_argument("--nice", type=int, default=0,
                   help="run the bench and everything it starts at this nice level (negative needs root): "
                        "on a shared machine, -5 keeps others' work from disturbing the numbers")
    p.add_argument("--soak-minutes", type=int, default=30, help="soak: minutes, one fault each (default 30)")
    p.add_argument("--soak-faults", default=",".join(S.FAULTS),
                   help="soak: the faults, one a minute in this order, repeated (default all of them)")
    p.add_argument("--soak-period-s", type=float, default=60, help="soak: seconds per fault (a 'minute')")
    p.add_argument("--soak-fault-at-s", type=float, default=15, help="soak: the fault starts this far into its minute")
    p.add_argument("--soak-fault-s", type=float, default=12, help="soak: how long each fault lasts")
    p.add_argument("--soak-in-flight", type=int, default=12, help="soak: clients, each one request at a time")
    p.add_argument("--soak-cycle-ms", type=float, default=50,
                   help="soak: each client starts a request at most this often (errors come fast: the rate stays steady)")
    p.add_argument("--soak-timeout-s", type=float, default=3, help="soak: the provider's timeout_s")
    p.add_argument("--soak-circuit", type=int, default=1,
                   help="soak: 1 keeps the gateway's circuit breaker (its defaults); 0 turns it off, so that every "
                        "request of a fault reaches the faulty upstream")
    p.add_argument("--soak-sample-s", type=float, default=2, help="soak: seconds between RSS / fd / metrics samples")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--verbose", "-v", action="store_true")
    a = p.parse_args(argv)
    a.scenarios = list(ALL) if a.scenario in ("all", "") else [s.strip() for s in a.scenario.split(",")]
    unknown = set(a.scenarios) - set(ALL + EXTRA)
    if unknown:
        p.error(f"unknown scenario {sorted(unknown)}; known: {', '.join(ALL + EXTRA)}")
    if a.smoke and a.scenario in ("all", ""):
        a.scenarios += ["soak"]   # instructions has a test of its own (tests/test_bench_instructions.py)
    if a.smoke:
        a.duration, a.warmup, a.peers = 1, 0, 0
        a.streams, a.stream_timeout, a.stream_ramps = min(a.streams, 50), 20, "0"
        a.openloop_fractions, a.openloop_closed = "0.5", "16"
        a.entries, a.fill_timeout = 40, 60
        a.mix_requests, a.mix_pool, a.mix_timeout = 60, 20, 60
        a.memory_checkpoints = a.memory_checkpoints or "500,1000"
        a.memory_chunk_s = 1
        # One fault (the first, a slow upstream) in a 6 s "minute".
        a.soak_minutes, a.soak_period_s, a.soak_fault_at_s, a.soak_fault_s = 1, 6, 1.5, 2.5
        a.soak_in_flight, a.soak_timeout_s, a.soak_sample_s = 4, 1, 0.5
    if a.memory_checkpoints is None:
        a.memory_checkpoints = "100000,1000000" if a.long else "100000,200000"
    if a.memory_timeout is None:
        a.memory_timeout = 3600 if a.long else (60 if a.smoke else 900)
    if a.out is None:
        a.out = BENCH / "results" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    a.out = a.out.resolve()
    a.profile_at = [s.strip() for s in a.profile_at.split(",")]
    a.stream_ramps = [float(x) for x in str(a.stream_ramps).split(",") if x.strip()]
    a.openloop_fractions = [float(x) for x in str(a.openloop_fractions).split(",") if x.strip()]
    a.openloop_closed = [int(x) for x in str(a.openloop_closed).split(",") if x.strip()]
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    # SIGTERM (a timeout, `kill`) ends the run through its `finally`s, which stop the servers it
    # started: each runs in a session of its own and would outlive a killed bench.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    need("nginx")
    need("wrk")
    if "soak" in a.scenarios:
        need("redis-server")
        try:
            S.settings_from(a)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    if a.nice:
        os.nice(a.nice)  # inherited by nginx, the targets, wrk and the clients
    a.out.mkdir(parents=True, exist_ok=True)
    log(f"results in {a.out}; scenarios {','.join(a.scenarios)}; {a.duration:g}s per measurement")
    results = Bench(a).run()
    print()
    print(report.summary(results))
    print(f"\nfull table: {a.out / 'results.md'}")
    return 1 if results["errors"] and a.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
