"""Turn results.json into the Markdown table, the target check, the printed summary and PNG charts."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path

ORDER = ["upstream", "bare", "gateway", "gateway-w2", "portkey", "litellm"]
SCEN_LABEL = {
    "passthrough-1": "1. pass-through JSON, 1 in flight (instant upstream)",
    "passthrough-32": "1. pass-through JSON, 32 in flight (instant upstream)",
    "miss-1": "1. cacheable misses, 1 in flight (instant upstream; every request distinct)",
    "miss-32": "1. cacheable misses, 32 in flight (instant upstream; every request distinct)",
    "slow-256": "2. 256 in flight, 50 ms upstream",
    "exact-32": "4. exact-cache hits, 32 in flight",
}


def f(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def rows_by(results: dict) -> dict:
    out: dict = {}
    for r in results["rows"]:
        out.setdefault(r["scenario"], {})[r["target"]] = r
    return out


def stream_by(results: dict, ramp: float = 0.0) -> dict:
    return {s["target"]: s for s in results["streams"] if s.get("ramp_s", 0.0) == ramp}


def label_of(results: dict, target: str) -> str:
    """The target's own name (a row's label may add how the gateway was asked: bypass, miss, hit)."""
    for r in results["rows"] + results["streams"]:
        if r["target"] == target:
            return r.get("target_label", r["label"])
    return {"upstream": "upstream alone (nginx)", "bare": "bare Starlette+aiohttp", "gateway": "gateway",
            "gateway-w2": "gateway --workers 2", "portkey": "Portkey", "litellm": "LiteLLM"}.get(target, target)


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


# ---- targets -------------------------------------------------------------------------------------

def targets(results: dict) -> list[tuple[str, str, bool | None, str]]:
    """(target, measured, met?, note) for each target: issue 6's, with those a later issue made
    stricter in their new form (bypass, cacheable misses, peers, exact hits, streams over 1 s, open
    loop, RSS)."""
    by = rows_by(results)
    st = stream_by(results)
    out = []

    def row(s, t):
        return by.get(s, {}).get(t)

    up1, gw1 = row("passthrough-1", "upstream"), row("passthrough-1", "gateway")
    if up1 and gw1:
        d = gw1["p50"] - up1["p50"]
        out.append(("pass-through, 1 in flight: P50 overhead <= 0.6 ms", f"{d:.2f} ms", d <= 0.6, ""))
    bare32, gw32 = row("passthrough-32", "bare"), row("passthrough-32", "gateway")
    if bare32 and gw32:
        r = ratio(gw32["rps"], bare32["rps"])
        out.append(("bypass (not cacheable), 32 in flight: >= 90% of bare", f"{100 * r:.0f}%", r >= 0.90,
                    f"{gw32['rps']:,.0f} vs {bare32['rps']:,.0f} req/s"))
        for peer, need in (("portkey", 5), ("litellm", 50)):
            p = row("passthrough-32", peer)
            if p and p["rps"]:
                r = gw32["rps"] / p["rps"]
                out.append((f"32 in flight: >= {need}x {peer} (req/s)", f"{r:.1f}x", r >= need,
                            f"gateway bypass {gw32['rps']:,.0f} vs {p['rps']:,.0f} req/s"))
            else:
                out.append((f"32 in flight: >= {need}x {peer} (req/s)", "not measured", None,
                            results["skipped"].get(f"{peer}/passthrough-32", "")))
    barem, gwm = row("miss-32", "bare"), row("miss-32", "gateway")
    if barem and gwm:
        r = ratio(gwm["rps"], barem["rps"])
        out.append(("cacheable miss, 32 in flight: >= 85% of bare", f"{100 * r:.0f}%", r >= 0.85,
                    f"{gwm['rps']:,.0f} vs {barem['rps']:,.0f} req/s"))
        out.append(("cacheable miss, 32 in flight: P99 no worse than bare's", f"{gwm['p99']:.2f} ms",
                    gwm["p99"] <= barem["p99"], f"bare {barem['p99']:.2f} ms"))
    bare256, gw256 = row("slow-256", "bare"), row("slow-256", "gateway")
    if bare256 and gw256:
        r = ratio(gw256["rps"], bare256["rps"])
        out.append(("256 in flight, 50 ms: >= 85% of bare", f"{100 * r:.0f}%", r >= 0.85, ""))
        out.append(("256 in flight, 50 ms: no errors", f"{gw256['errors']} errors", gw256["errors"] == 0, ""))
        out.append(("256 in flight, 50 ms: P99 <= 300 ms", f"{gw256['p99']:.1f} ms", gw256["p99"] <= 300, ""))
    if "upstream" in st and "gateway" in st:
        g = st["gateway"]
        out.append(("1,000 streams: all complete", f"{g['completed']}/{g['streams']}", g["completed"] == g["streams"], ""))
    ramped = stream_by(results, 1.0)
    g1, u1 = ramped.get("gateway"), ramped.get("upstream")
    if g1 and u1 and g1["ttft_ms"]["p99"] is not None and u1["ttft_ms"]["p99"] is not None:
        d = g1["ttft_ms"]["p99"] - u1["ttft_ms"]["p99"]
        note = f"TTFT P99 {g1['ttft_ms']['p99']:.1f} ms through the gateway vs {u1['ttft_ms']['p99']:.1f} ms from nginx alone"
        g0, u0 = st.get("gateway"), st.get("upstream")
        if g0 and u0 and g0["ttft_ms"]["p99"] is not None and u0["ttft_ms"]["p99"] is not None:
            note += f"; all at once: overhead {g0['ttft_ms']['p99'] - u0['ttft_ms']['p99']:.1f} ms"
        out.append((f"{g1['streams']:,} streams over 1 s: TTFT overhead P99 <= 10 ms", f"{d:.1f} ms", d <= 10, note))
    ex = row("exact-32", "gateway")
    if ex:
        hit = (results.get("exact_check") or {}).get("gateway", [None])[-1]
        note = "" if hit == "hit-exact" else f"requests were not hits ({hit})"
        if bare32:
            r = ex["rps"] / bare32["rps"]
            out.append(("exact hits, 32 in flight: >= 1.8x the bare pass-through's req/s", f"{r:.2f}x",
                        r >= 1.8 and not note, note or f"{ex['rps']:,.0f} vs {bare32['rps']:,.0f} req/s"))
        out.append(("exact hits: P99 <= 3 ms", f"{ex['p99']:.2f} ms", ex["p99"] <= 3 and not note, note))
    ol = results.get("openloop")
    if ol and ol.get("rates"):
        out += openloop_targets(results, ol)
    sem = results.get("semantic")
    if sem:
        out += semantic_targets(sem)
    plain = next((m for m in results.get("memory") or [] if not m["semantic"]), None)
    if plain:
        out.append(("RSS without the semantic layer, idle: <= 80 MiB", f"{plain['idle_mb']:.1f} MiB",
                    plain["idle_mb"] <= 80, ""))
        if len(plain["checkpoints"]) >= 2:
            a, b = plain["checkpoints"][0], plain["checkpoints"][-1]
            g = 100 * (b["rss_mb"] - a["rss_mb"]) / a["rss_mb"]
            out.append((f"RSS without the semantic layer grows <= 5% from {a['target']:,} to {b['target']:,} requests",
                        f"{g:+.1f}%", g <= 5, f"{a['rss_mb']:.1f} -> {b['rss_mb']:.1f} MiB"
                        + ("" if b["target"] >= 1_000_000 else "; short mode: LONG=1 runs to 1M")))
    return out


def open_rows(ol: dict) -> dict:
    """(target, mode, rate) -> the open-loop row."""
    return {(r["target"], r["mode"], r["rate"]): r for r in ol["open"]}


def openloop_targets(results: dict, ol: dict) -> list[tuple]:
    """At half the bare pass-through's capacity: latency added over nginx alone at the same rate."""
    rate = dict(zip(results["settings"]["openloop_fractions"], ol["rates"])).get(0.5)
    if rate is None:
        return []
    rows = open_rows(ol)
    up = rows.get(("upstream", "bypass", rate))
    out = []
    for mode, name in (("bypass", "bypass"), ("miss", "cacheable miss")):
        gw = rows.get(("gateway", mode, rate))
        for key, label, limit in (("p99", "P99", 2), ("p999", "P99.9", 5)):
            what = f"open loop at 50% of bare ({rate:,}/s), 50 ms upstream, {name}: added {label} <= {limit} ms"
            if not up or not gw or gw["latency_ms"][key] is None or up["latency_ms"][key] is None:
                out.append((what, "not measured", None, ol["skipped"].get(f"gateway/{mode}/{rate}", "")))
                continue
            d = gw["latency_ms"][key] - up["latency_ms"][key]
            errors = f"; {gw['errors']} errors" if gw["errors"] else ""
            out.append((what, f"{d:+.2f} ms", d <= limit and not gw["errors"],
                        f"{gw['latency_ms'][key]:.2f} vs nginx alone {up['latency_ms'][key]:.2f} ms; answered "
                        f"{gw['achieved_rps']:,.0f}/s; send lag P99 {gw['lag_ms']['p99']:.2f} ms{errors}"))
    return out


def semantic_targets(sem: dict) -> list[tuple]:
    """Issue 10's targets for the semantic layer (one worker, this 2-core machine)."""
    out: list[tuple] = []
    n = f"{sem['entries']:,} entries"
    lat = sem["lookup"]["latency_ms"].get("hit-semantic")
    if lat and lat["p50"] is not None:
        note = f"{lat['n']} hits measured"
        out.append((f"semantic lookup P50 <= 5 ms ({n})", f"{lat['p50']:.1f} ms", lat["p50"] <= 5, note))
        out.append((f"semantic lookup P99 <= 15 ms ({n})", f"{lat['p99']:.1f} ms", lat["p99"] <= 15, note))
    else:
        out.append((f"semantic lookup P50 <= 5 ms ({n})", "no semantic hits", False,
                    f"layers seen: {sem['lookup']['layers']}"))
    checked, wrong = sem["lookup"]["semantic_checked"], sem["lookup"]["semantic_wrong"]
    if checked:
        precision = 1 - wrong / checked
        out.append(("semantic served-hit precision >= 0.99", f"{precision:.3f}", precision >= 0.99,
                    f"{wrong} wrong in {checked}"))
    fill = sem["fill"]
    rate = fill["requests"] / max(fill["wall_s"], 1e-9)
    out.append(("semantic fill >= 500 stores/s", f"{rate:.0f}/s", rate >= 500, f"{fill.get('concurrency')} in flight"))
    filled_hits = fill["layers"].get("hit-semantic", 0)
    out.append(("no semantic hit while filling distinct questions", f"{filled_hits} hits", filled_hits == 0, ""))
    beside = sem.get("beside")
    if beside:
        rise = beside["beside"]["p99"] - beside["alone"]["p99"]
        control = beside.get("control")
        vs = (f"; control: the layer's {beside['embedder_cpu']:.0%} of a core burnt in another process gives "
              f"{control['p99'] - beside['alone']['p99']:+.2f} ms" if control else "")
        out.append(("pass-through P99 rise beside full-speed lookups <= 2 ms", f"{rise:+.2f} ms", rise <= 2,
                    f"{beside['alone']['p99']:.2f} -> {beside['beside']['p99']:.2f} ms, {beside['lookups']} lookups{vs}"))
    return out


# ---- markdown ------------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    by = rows_by(results)
    L = ["# Gateway benchmark", ""]
    m, v, s = results["machine"], results["versions"], results["settings"]
    L += [f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}, kernel {m['kernel']}, "
          f"Python {m['python']}",
          f"- load average before/after: {fmt_load(results.get('load_before'))} / {fmt_load(results.get('load_after'))}",
          f"- gateway {v['gateway']}; " + ", ".join(f"{k} {v[k]}" for k in
          ("aiohttp", "uvicorn", "starlette", "uvloop", "httptools", "orjson", "qdrant-client", "sentence-transformers", "torch")),
          f"- {v['nginx']}; {v['wrk']}; node {v['node']}; LiteLLM {v['litellm']}; Portkey {v['portkey']}",
          f"- gateway process environment: OMP_NUM_THREADS={s.get('embedder_threads') or 'unset'} (torch threads of the "
          f"local embedder); semantic timeout_ms {s.get('semantic_timeout_ms') or 'default (200)'}",
          f"- settings: {s['duration']:g}s per measurement after {s['warmup']:g}s warm-up, wrk 1 thread closed loop; "
          f"one uvicorn worker unless marked; every target's pool sized 1024 connections; "
          f"scenarios {', '.join(s['scenarios'])}; nice {s.get('nice', 0)}; wall time {results.get('wall_s', 0):.0f}s",
          "- *others' cores*: CPU that none of the bench's processes used during a measurement (other work on "
          "this shared machine); well above zero means the row was disturbed",
          ""]
    L += ["## Targets", "", "| target | measured | met | note |", "|---|---|---|---|"]
    for name, measured, met, note in targets(results):
        L.append(f"| {name} | {measured} | {'yes' if met else ('–' if met is None else '**no**')} | {note} |")
    L.append("")
    sections: dict[str, list[str]] = {}
    for scen in SCEN_LABEL:
        if scen not in by and not any(k.endswith("/" + scen) for k in results["skipped"]):
            continue
        start = len(L)
        rows = by.get(scen, {})
        up, bare, gw = (rows.get(t) for t in ("upstream", "bare", "gateway"))
        L += [f"## {SCEN_LABEL[scen]}", "",
              "| | req/s | P50 ms | P95 ms | P99 ms | errors | CPU % | others' cores | gateway ÷ this (req/s) | "
              "P50 − upstream's |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for t in ORDER:
            r = rows.get(t)
            if r is None:
                why = results["skipped"].get(f"{t}/{scen}")
                if why:
                    L.append(f"| {label_of(results, t)} | – | – | – | – | – | – | – | – | {why} |")
                continue
            if not r["requests"]:  # wrk saw no answer at all within the run
                L.append(f"| {r['label']} | 0 | – | – | – | {r['errors']} | {f(r.get('cpu_pct'), 0)} | "
                         f"{f(r.get('other_cores'))} | – | no answer within {results['settings']['duration']:g} s |")
                continue
            L.append(f"| {r['label']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | "
                     f"{r['errors']} | {f(r.get('cpu_pct'), 0)} | {f(r.get('other_cores'))} | "
                     f"{f(ratio(gw['rps'], r['rps']) if gw else None)} | "
                     f"{f(r['p50'] - up['p50'] if up else None)} |")
        if scen == "exact-32":
            L.append("")
            checks = results.get("exact_check") or {}
            L.append("Cache check before the load (two identical requests; per worker for --workers 2): "
                     + "; ".join(f"{label_of(results, t)}: {', '.join(map(str, v))}" for t, v in checks.items()
                                 if "/" not in t)
                     + ". The upstream alone and the bare pass-through have no cache; their rows are the same "
                     "requests passed through. LiteLLM runs with its in-memory cache (`cache: true, "
                     "cache_params: {type: local}`); Portkey gets `x-portkey-config: {\"cache\": {\"mode\": "
                     "\"simple\"}}`, which its open-source build answers with `x-portkey-cache-status: DISABLED` "
                     "(the cache is a feature of its hosted version), so its row is pass-through.")
        if scen.startswith("miss-"):
            checks = results.get("miss_check") or {}
            L += ["", "Every request has `temperature: 0` and a number no other request of the run has (`Ticket "
                  "<run>-<n>`), so the gateway misses, leads the key's single flight, calls the upstream and stores "
                  f"the answer. Its exact cache holds {results['exact_max_entries']:,} entries (LRU): "
                  "past the first that many misses of a run each store also evicts the least recently used entry, "
                  "the steady state of a full cache. The upstream alone and the bare pass-through pass the same "
                  "bodies through; the peers run with their caches on. Cache check before the load (one such "
                  "request, asked twice): " + "; ".join(f"{label_of(results, t)}: {', '.join(map(str, v))}"
                                                        for t, v in checks.items() if "/" not in t) + "."]
        L.append("")
        sections[scen] = L[start:]
        del L[start:]
    for scen in ("passthrough-1", "passthrough-32", "miss-1", "miss-32", "slow-256"):
        L += sections.get(scen, [])
    ramps = sorted({s.get("ramp_s", 0.0) for s in results["streams"]})
    if ramps or any(k.endswith("/streams") for k in results["skipped"]):
        L += ["## 3. concurrent SSE streams, 20 chunks 20 ms apart (nginx echo pacing)", "",
              "| | started | streams | completed | errors | TTFT P50 ms | TTFT P95 | TTFT P99 | TTFT P99 − upstream's | "
              "stream total P50 ms | P99 | peak in flight | CPU % | others' cores |",
              "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes: list[str] = []
    for ramp in ramps or []:
        st = stream_by(results, ramp)
        up = st.get("upstream")
        started = "all at once" if not ramp else f"over {ramp:g} s"
        for t in ORDER:
            r = st.get(t)
            if r is None:
                why = results["skipped"].get(f"{t}/streams")
                if why and not ramp:
                    L.append(f"| {label_of(results, t)} | | – | – | {why} | | | | | | | | | |")
                continue
            tt, tot = r["ttft_ms"], r["total_ms"]
            d = tt["p99"] - up["ttft_ms"]["p99"] if up and tt["p99"] is not None and up["ttft_ms"]["p99"] is not None else None
            L.append(f"| {r['label']} | {started} | {r['streams']} | {r['completed']} | {r['errors'] or 0} | {f(tt['p50'])} | "
                     f"{f(tt['p95'])} | {f(tt['p99'])} | {f(d)} | {f(tot['p50'])} | {f(tot['p99'])} | "
                     f"{r['peak_in_flight']} | {f(r.get('cpu_pct'), 0)} | {f(r.get('other_cores'))} |")
            if r.get("note"):
                notes.append(f"{r['label']}: {r['note']}.")
    if ramps:
        L += ["", "TTFT: from the connection's request write to the first `data:` event, measured by a raw-socket "
              "client (bench/streamclient.py), one connection per stream. *All at once*: the issue's scenario, "
              "1,000 streams opened together. *Over 1 s*: the same 1,000 started evenly over a second (1,000 new "
              "streams/s). Total: to the end of the stream (ideal 400 ms).", *notes, ""]
    L += sections.get("exact-32", [])
    if results.get("openloop", {}).get("rates"):
        L += openloop_md(results, results["openloop"])
    if results.get("guardrails", {}).get("runs"):
        L += guardrails_md(results["guardrails"])
    sem = results.get("semantic")
    if sem:
        L += semantic_md(sem)
    mix = results.get("mix")
    if mix:
        L += mix_md(mix)
    if results.get("keys", {}).get("runs"):
        L += keys_md(results["keys"])
    if results.get("instructions"):
        L += instructions_md(results["instructions"])
    if results.get("providers", {}).get("runs"):
        L += providers_md(results["providers"])
    if results.get("tracing", {}).get("runs"):
        L += tracing_md(results["tracing"])
    if results.get("soak"):
        L += soak_md(results["soak"])
    if results.get("memory"):
        L += memory_md(results["memory"], results["exact_max_entries"])
    if any(t == "gateway-w2" for r in results["rows"] for t in [r["target"]]):
        L += ["## --workers 2", "", "| scenario | 1 worker req/s | 2 workers req/s | scaling | 2 workers P99 ms |",
              "|---|---:|---:|---:|---:|"]
        for scen, rows in by.items():
            if "gateway-w2" in rows and "gateway" in rows:
                a, b = rows["gateway"], rows["gateway-w2"]
                L.append(f"| {SCEN_LABEL[scen]} | {a['rps']:,.0f} | {b['rps']:,.0f} | {b['rps'] / a['rps']:.2f}x | {b['p99']:.2f} |")
        L += ["", "Two cores in all, shared by wrk, nginx and the gateway's workers.", ""]
    if results.get("profiles"):
        L += ["## Profiles (py-spy, gateway process, self time)", ""]
        for key, prof in results["profiles"].items():
            L += [f"### {key} ({prof['samples']} samples)", "", "| self % | total % | function |", "|---:|---:|---|"]
            for fn, self_pct, total_pct in prof["top"][:15]:
                L.append(f"| {self_pct:.1f} | {total_pct:.1f} | `{fn}` |")
            L.append("")
    if results["skipped"] or results["errors"]:
        L += ["## Not measured / problems", ""]
        reasons = Counter(results["skipped"].values())
        for why, n in reasons.items():
            who = sorted({k.split("/")[0] for k, v in results["skipped"].items() if v == why})
            L.append(f"- {', '.join(who)}: {why}")
        for e in results["errors"]:
            L.append(f"- {e}")
        L.append("")
    if results.get("charts"):
        L += ["## Charts", ""] + [f"![{c}]({c})" for c in results["charts"]] + [""]
    return "\n".join(L)


def memory_md(memory: list[dict], max_entries: int) -> list[str]:
    first = memory[0]
    L = ["## Memory (leak check)", "",
         f"Load: 32 in flight, cacheable requests over {first['vary']:,} distinct bodies (exact cache of "
         f"{max_entries:,} entries, LRU: misses, hits and evictions all the time). Idle: after start-up (the local embedder loaded "
         "where the semantic layer is on; the load never asks it).", "",
         "| gateway | idle RSS MiB | " + " | ".join(f"after {c['target']:,} requests" for c in first["checkpoints"])
         + " | growth first → last checkpoint | errors |",
         "|---|---:|" + "---:|" * len(first["checkpoints"]) + "---:|---:|"]
    for mem in memory:
        cps = mem["checkpoints"]
        growth = (f"{100 * (cps[-1]['rss_mb'] - cps[0]['rss_mb']) / cps[0]['rss_mb']:+.1f}%" if len(cps) >= 2 else "–")
        cells = [f"{c['rss_mb']:.1f} ({c['requests']:,})" for c in cps] + ["–"] * (len(first["checkpoints"]) - len(cps))
        L.append(f"| {'with' if mem['semantic'] else 'without'} the semantic layer | {mem['idle_mb']:.1f} | "
                 + " | ".join(cells) + f" | {growth} | {mem.get('errors', 0)} |")
        if mem.get("incomplete"):
            L.append(f"\n({'with' if mem['semantic'] else 'without'} the semantic layer: the run hit its time bound "
                     "before the last checkpoint)\n")
    L += ["", "A checkpoint's RSS is read at the first chunk boundary past it (the request count in brackets).", ""]
    return L


OPEN_ORDER = [("upstream", "bypass"), ("bare", "bypass"), ("gateway", "bypass"), ("gateway", "miss"),
              ("gateway", "hit"), ("portkey", "bypass"), ("litellm", "bypass")]


def openloop_md(results: dict, ol: dict) -> list[str]:
    """Open-loop rates and the closed-loop 1 / 16 / 64, each against nginx alone on the same 50 ms location."""
    cap = ol["capacity"]
    fractions = dict(zip(ol["rates"], results["settings"]["openloop_fractions"]))
    rows = open_rows(ol)
    L = ["## Open loop, 50 ms upstream: latency added over the upstream alone", "",
         f"The bare pass-through's capacity: **{cap['rps']:,.0f} req/s** ({cap['source']}; 256 in flight cannot go "
         f"past 256 / 50 ms = 5,120/s). Requests go out on a fixed schedule (bench/openloop.py, its own process: "
         "raw sockets on uvloop, keep-alive, a new connection when none is free), whether or not the earlier ones "
         "were answered, for the measured seconds after a warm-up at the same rate. Latency runs from each "
         "request's *due* time, so a stall counts for every request that should have gone out during it. "
         "*Added*: the target's percentile minus nginx alone's at the same rate (nginx's own includes the "
         "generator's lag on this machine). *Send lag*: how late the generator wrote a request; *answered*: "
         "answers per second of the measured window. An exact hit makes no upstream call: its added columns "
         "are empty, its latency is its own.", "",
         "| rate asked | target | answered/s | errors | P50 ms | P99 ms | P99.9 ms | added P50 | added P99 | added P99.9 | "
         "send lag P99 ms | connections | CPU % | others' cores |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rate in ol["rates"]:
        up = rows.get(("upstream", "bypass", rate))
        asked = f"{rate:,}/s ({100 * fractions.get(rate, 0):.0f}%)"
        for t, mode in OPEN_ORDER:
            r = rows.get((t, mode, rate))
            if r is None:
                why = ol["skipped"].get(f"{t}/{mode}/{rate}") or results["skipped"].get(f"{t}/openloop")
                if why:
                    L.append(f"| {asked} | {label_of(results, t)} | – | – | – | – | – | – | – | – | – | – | – | {why} |")
                continue
            lat = r["latency_ms"]
            added = ["–"] * 3
            if up and mode != "hit":
                added = [f(lat[k] - up["latency_ms"][k]) if lat[k] is not None and up["latency_ms"][k] is not None
                         else "–" for k in ("p50", "p99", "p999")]
            errs = f"{r['errors']:,}" + (f" ({', '.join(f'{k} {v:,}' for k, v in r['error_kinds'].items())})"
                                         if r["errors"] else "")
            L.append(f"| {asked} | {r['label']} | {r['achieved_rps']:,.0f} | {errs} | {f(lat['p50'])} | {f(lat['p99'])} | "
                     f"{f(lat['p999'])} | {' | '.join(added)} | {f(r['lag_ms']['p99'])} | {r['connections']:,} | "
                     f"{f(r.get('cpu_pct'), 0)} | {f(r.get('other_cores'))} |")
    closed = {(r["target"], r["mode"], r["in_flight"]): r for r in ol["closed"]}
    if closed:
        L += ["", "### Closed loop, 50 ms upstream: 1 / 16 / 64 in flight", "",
              "LiteLLM's published cross-gateway method: a fixed number of requests in flight (wrk), the upstream "
              "answering in 50 ms, the latency each gateway adds over the upstream alone.", "",
              "| in flight | target | req/s | P50 ms | P99 ms | added P50 | added P99 | errors | CPU % | others' cores |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for conns in results["settings"]["openloop_closed"]:
            up = closed.get(("upstream", "bypass", conns))
            for t, mode in OPEN_ORDER:
                r = closed.get((t, mode, conns))
                if r is None:
                    continue
                added = (f"{f(r['p50'] - up['p50'])} | {f(r['p99'] - up['p99'])}" if up and mode != "hit" else "– | –")
                L.append(f"| {conns} | {r['label']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {added} | "
                         f"{r['errors']} | {f(r.get('cpu_pct'), 0)} | {f(r.get('other_cores'))} |")
    return L + [""]


def guardrails_md(g: dict) -> list[str]:
    """A route with output guardrails against the same route without: streams and JSON, medians of the runs."""
    cols = [("streams", "ttft_ms", "p50"), ("streams", "ttft_ms", "p99"), ("streams", "first_text_ms", "p50"),
            ("streams", "first_text_ms", "p99"), ("streams", "total_ms", "p50"), ("streams", "total_ms", "p99"),
            ("json", "rps"), ("json", "p50"), ("json", "p99")]

    def med(runs: list[dict], path: tuple) -> float | None:
        vals = [r[path[0]] if len(path) == 1 else r[path[0]][path[1]] for r in runs]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def cell(col: tuple, v, signed: bool = False) -> str:
        if v is None:
            return "–"
        return (f"{v:+,.0f}" if signed else f"{v:,.0f}") if col[-1] == "rps" else (f"{v:+.2f}" if signed else f"{v:.2f}")

    L = ["## Guardrails: what output filtering costs", "",
         f"One gateway, two routes to the same upstream: one with `guardrails: {{output: [{', '.join(g['rules']['output'])}]}}` "
         "(`no-leaks`: `(?i)internal use only` and `sk-[A-Za-z0-9]{20,}`, block; `pii`: email, phone, credit_card, "
         "cn_id, cn_mobile, iban, api_key, mask), one without. The answer matches no rule, so this is the cost of "
         f"looking. Streams: {g['streams']:,} started over {g['ramp_s']:g} s from the paced upstream (20 chunks 20 ms "
         "apart); TTFT to the first `data:` event (the role's, no text), first text to the first event with text "
         "(what a rule that holds back the end of the text delays: `email` holds a trailing word until the next "
         "chunk shows it is no address), total to the stream's end. JSON: 32 in flight from the instant upstream, "
         f"not cacheable. The medians of {len(g['runs'].get('plain', {}).get('json', []))} runs, alternated.", "",
         "| route | streams completed | TTFT P50 ms | TTFT P99 ms | first text P50 ms | first text P99 ms | "
         "total P50 ms | total P99 ms | JSON req/s | JSON P50 ms | JSON P99 ms |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    values = {}
    for variant, label in (("plain", "without guardrails"), ("guarded", "with output guardrails")):
        run = g["runs"].get(variant)
        if not run:
            continue
        values[variant] = [med(run[c[0]], c[1:]) for c in cols]
        errors = sum(sum((s["errors"] or {}).values()) for s in run["streams"]) + sum(j["errors"] for j in run["json"])
        done = (f"{min(s['completed'] for s in run['streams'])}/{run['streams'][0]['streams']}"
                + (f" ({errors} errors, streams and JSON)" if errors else ""))
        L.append(f"| {label} | {done} | " + " | ".join(cell(c, v) for c, v in zip(cols, values[variant])) + " |")
    if len(values) == 2:
        d = [b - a if a is not None and b is not None else None for a, b in zip(values["plain"], values["guarded"])]
        L.append("| difference | | " + " | ".join(cell(c, v, signed=True) for c, v in zip(cols, d)) + " |")
    return L + [""]


def semantic_md(sem: dict) -> list[str]:
    fill, lk = sem["fill"], sem["lookup"]
    L = ["## 5. semantic-cache lookups", "",
         f"Filled with {fill['requests']:,} distinct support questions through the `faq` route "
         f"(layers {fill['layers']}, errors {fill['errors'] or 0}, {fill['wall_s']:.0f}s, "
         f"{fill['requests'] / max(fill['wall_s'], 1e-9):.0f} req/s at {fill.get('concurrency', '?')} in flight). Then paraphrases of stored "
         f"questions, one at a time, for {lk['wall_s']:.0f}s:", "",
         "| answered by | requests | P50 ms | P95 ms | P99 ms |", "|---|---:|---:|---:|---:|"]
    for layer, d in sorted(lk["latency_ms"].items()):
        L.append(f"| {layer} | {d['n']} | {f(d['p50'])} | {f(d['p95'])} | {f(d['p99'])} |")
    L += ["", f"Semantic hits checked against the question they answered: {lk['semantic_checked']} checked, "
          f"{lk['semantic_wrong']} wrong (served another question's answer). Errors: {lk['errors'] or 0}. "
          f"By wording (rephrased: other words; retyped: same words, greeting or lower case): "
          f"{lk.get('by_wording')}.", ""]
    for ex in lk.get("semantic_wrong_examples", [])[:6]:
        L.append(f"- wrong hit: asked “{ex['asked']}”, served the answer to “{ex['answered']}”")
    if lk.get("semantic_wrong_examples"):
        L.append("")
    beside = sem.get("beside")
    if beside:
        L += ["A pass-through route on the same gateway (8 in flight), alone and while semantic lookups run "
              f"at 4 in flight ({beside['lookups']} lookups, hit P50 {f(beside['lookup_p50_ms'])} ms):", "",
              "| pass-through | req/s | P50 ms | P99 ms |", "|---|---:|---:|---:|"]
        for name in ("alone", "beside", "control"):
            r = beside.get(name)
            if r:
                L.append(f"| {name} | {r['rps']:,.0f} | {f(r['p50'])} | {f(r['p99'])} |")
        if beside.get("control"):
            L += ["", f"The embedder thread and the Qdrant helper were busy {beside['embedder_cpu']:.0%} of a core "
                  "beside the lookups; "
                  "*control* is the pass-through beside another process that burns that CPU share in the same "
                  "encoder and nothing else (no lookups, the gateway's loop untouched): what the pass-through "
                  "loses to a busy 2-core machine rather than to a blocked event loop."]
        L.append("")
    probe = sem.get("embedder_alone")
    if probe:
        L += ["The bundled embedders alone (each in its own process, one thread, outside the gateway, same "
              "machine right after the lookups):", "",
              "| embedder | load s | RSS MiB | one question P50 ms | P95 ms | min ms | batch of 16 ms |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        for name, e in (probe.get("embedders") or {}).items():
            L.append(f"| {name} ({e['kind']}) | {e['load_s']:.2f} | {e['rss_mib']:.0f} | {e['single_ms']['p50']:.1f} | "
                     f"{e['single_ms']['p95']:.1f} | {e['single_ms']['min']:.1f} | {e['batch16_ms']:.1f} |")
        L.append("")
    if fill.get("metrics"):
        L += ["Gateway metrics after the fill: " + ", ".join(f"`{k}` {v:g}" for k, v in fill["metrics"].items()), ""]
    if sem.get("metrics"):
        L += ["Gateway metrics after the run: " + ", ".join(f"`{k}` {v:g}" for k, v in sem["metrics"].items()), ""]
    return L


def instructions_md(result: dict) -> list[str]:
    """Instructions per request (callgrind): the bound a target's req/s has against the bare's."""
    from instructions import table   # noqa: PLC0415 - bench/ is on the path when the report is made
    L = ["## Instructions per request (callgrind)", ""]
    if "skipped" in result:
        return L + [f"Skipped: {result['skipped']}.", ""]
    L += [f"User-space instructions of the target's process per request, {result['n']} requests one after "
          "another on one keep-alive connection (bench/instructions.py). Repeatable to a few hundredths of a "
          "percent where req/s is not; `bare / target` is the req/s the target could reach against the bare "
          "pass-through if a request's cost were its instructions alone (the kernel's socket work is the same "
          "for both and is not in it).", ""]
    return L + table(result) + [""]


def keys_md(keys: dict) -> list[str]:
    """What the limits cost per request: a provider's global slot, a key's rpm/tpm and budget, in
    memory and in Redis."""
    L = ["## Keys and limits: what the global slot, rpm, tpm and budget cost", "",
         "The same pass-through (8 in flight, instant upstream), each variant run twice, alternating; the "
         "medians. With `state.backend: redis` every request takes a provider slot (one script) and gives it "
         "back (one script, not waited for); a key adds one check-and-count of its rpm, tpm and budget before "
         "the call (one script for all three) and, after it, a tpm correction and a budget charge (one "
         "pipeline, not waited for). The added columns are against `no key` (memory).", "",
         "| variant | req/s | P50 ms | P99 ms | P50 added | P99 added |", "|---|---:|---:|---:|---:|---:|"]
    med = {name: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")}
           for name, runs in keys["runs"].items()}
    base = med.get("no key")
    for name, m in med.items():
        add = (f"{m['p50'] - base['p50']:+.2f} | {m['p99'] - base['p99']:+.2f}" if base and name != "no key" else "| ")
        L.append(f"| {name} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {add} |")
    return L + [""]


def providers_md(providers: dict) -> list[str]:
    """What translating costs: a provider adapter's and an inbound API's, each against its baseline."""
    L = ["## Providers and inbound APIs: what translating costs", "",
         "One gateway; the same answer from an OpenAI-compatible location and from an Anthropic-shaped one "
         "(nginx, at once). The first three rows: chat completions to Anthropic against chat completions passed "
         "through (the adapter builds the Messages request, parses the answer and writes a chat.completion; a "
         "stream's events are parsed and written as OpenAI chunks one by one). Then the inbound APIs: Anthropic's "
         "Messages in, to the OpenAI-compatible location, against chat completions passed through; the Responses "
         "API in, to the Anthropic location, against chat completions to it (so only the inbound side differs). "
         "Each pair run twice, alternating; the medians.", "",
         "| case | baseline req/s | translated req/s | baseline P50 ms | translated P50 ms | P50 added | P99 added |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    for case, sides in providers["runs"].items():
        med = {side: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")}
               for side, runs in sides.items()}
        o, c = med.get("baseline"), med.get("translated")
        if not o or not c:
            continue
        L.append(f"| {case} | {o['rps']:,.0f} | {c['rps']:,.0f} | {o['p50']:.3f} | {c['p50']:.3f} | "
                 f"{c['p50'] - o['p50']:+.3f} | {c['p99'] - o['p99']:+.3f} |")
    return L + [""]


def tracing_md(tracing: dict) -> list[str]:
    """What tracing costs: the same pass-through without and with OpenTelemetry spans exported."""
    L = ["## Tracing: what the spans cost", "",
         "The same pass-through (8 in flight, instant upstream) with no `tracing:` section and exporting over "
         "OTLP/HTTP to a local receiver at three sampling ratios; each variant twice, alternating; the medians. "
         f"Spans received: {tracing.get('spans_received', 0):,}.", "",
         "| variant | req/s | P50 ms | P99 ms | P50 added |", "|---|---:|---:|---:|---:|"]
    med = {name: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")}
           for name, runs in tracing["runs"].items()}
    base = med.get("off")
    for name, m in med.items():
        added = f"{m['p50'] - base['p50']:+.3f}" if base and name != "off" else ""
        L.append(f"| {name} | {m['rps']:,.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {added} |")
    return L + [""]


def mix_cost(mix: dict) -> dict:
    price = mix["price"]

    def cost(tokens):
        return tokens[0] * price["input_per_1m"] / 1e6 + tokens[1] * price["output_per_1m"] / 1e6
    total = sum(cost(t) for t in mix["tokens"].values())
    saved = sum(cost(t) for layer, t in mix["tokens"].items() if layer.startswith("hit"))
    return {"no_cache": total, "with_cache": total - saved, "saved": saved}


def mix_md(mix: dict) -> list[str]:
    n = sum(mix["layers"].values()) or 1
    c = mix_cost(mix)
    L = ["## 6. a day of support traffic in miniature (Zipf mix)", "",
         f"{mix['requests']:,} requests at 8 in flight, questions drawn Zipf(s=1.1) from a pool; each ask is the "
         f"canonical wording (repeat), a paraphrase, or a question never asked before: {mix['kinds']}. "
         f"Upstream: the Python fake upstream, which echoes the question (so a wrong semantic hit shows).", "",
         "| answered by | share | P50 ms | P99 ms |", "|---|---:|---:|---:|"]
    for layer, k in sorted(mix["layers"].items()):
        d = mix["latency_ms"].get(layer, {})
        L.append(f"| {layer} | {100 * k / n:.1f}% | {f(d.get('p50'))} | {f(d.get('p99'))} |")
    L += ["", "| by kind of ask → layer | requests |", "|---|---:|"]
    for k, v in sorted(mix["kind_layers"].items()):
        L.append(f"| {k} | {v} |")
    L += ["", f"Cost at gpt-4o-mini prices: **${c['no_cache']:.4f} without a cache, ${c['with_cache']:.4f} with it: "
          f"{100 * c['saved'] / max(c['no_cache'], 1e-12):.1f}% saved** (wrong semantic hits counted as saved, "
          f"as the gateway counts them). Semantic hits checked: {mix['semantic_checked']}, wrong: "
          f"{mix['semantic_wrong']} ({100 * mix['semantic_wrong'] / max(1, mix['semantic_checked']):.1f}%). "
          f"Errors: {mix['errors'] or 0}.", ""]
    for ex in mix.get("semantic_wrong_examples", [])[:6]:
        L.append(f"- wrong hit: asked “{ex['asked']}”, served the answer to “{ex['answered']}”")
    if mix.get("semantic_wrong_examples"):
        L.append("")
    if mix.get("metrics"):
        L += ["Gateway metrics after the run: " + ", ".join(f"`{k}` {v:g}" for k, v in mix["metrics"].items()), ""]
    return L


def soak_md(soak: dict) -> list[str]:
    s, res, st = soak["settings"], soak["resources"], soak["settle"]
    n = len(soak["minutes"])
    L = [f"## Soak: {n} minute{'s' if n != 1 else ''} of mixed traffic, a fault every minute", "",
         f"One gateway (one worker; exact cache in a local redis-server, `cache.exact.backend: redis`; provider "
         f"`timeout_s: {s['timeout_s']:g}`, "
         + ("the circuit breaker at its defaults" if s.get("circuit", True) else "**the circuit breaker off**")
         + ") in front of `tests/fake_upstream.py` "
         f"(20 ms to answer, 20 ms a stream chunk). {s['in_flight']} clients, one request at a time each, at most one "
         f"per {s['cycle_ms']:g} ms: 35% JSON, 25% streams, 25% 16 repeated `temperature: 0` questions (half streamed: "
         f"exact-cache hits), 15% streams left after 1-3 chunks. Each minute's fault starts {s['fault_at_s']:g} s into "
         f"it and lasts {s['fault_s']:g} s ({s['period_s']:g} s a minute). Errors are counted when the client saw them.",
         "",
         f"**{soak['requests']:,} requests** ({soak['rps']:.0f}/s): {soak['errors']:,} errors, {soak['left']:,} left "
         f"by the client on purpose. Provider slots in flight after the traffic stopped: **{f(st['at_stop'], 0)}**, "
         f"{f(st['final'], 0)} after {f(st.get('zero_after_s'), 1)} s (queued {f(st.get('queued'), 0)}; the upstream "
         f"still serving {st.get('upstream_in_flight')}).", ""]
    L += ["Findings (what looks wrong in the gateway):", ""]
    L += [f"- {x}" for x in soak["findings"]] or ["- none"]
    L += ["", "### Requests by outcome", "", "| status class | outcome, as the client saw it | requests | share |",
          "|---|---|---:|---:|"]
    for cls, outcome, n in soak["outcomes"]:
        L.append(f"| {cls} | {outcome} | {n:,} | {100 * n / max(1, soak['requests']):.1f}% |")
    L += ["", "| kind | ok | errors | left by the client |", "|---|---:|---:|---:|"]
    for kind, c in soak["kinds"].items():
        L.append(f"| {kind} | {c.get('ok', 0):,} | {c.get('error', 0):,} | {c.get('left', 0):,} |")
    L += ["", f"Repeated questions by cache layer: {', '.join(f'{k} {v:,}' for k, v in soak['cache'].items())}; "
          "not hits, leaving out each question's first ask and the redis-down minutes: "
          + (", ".join(f"{n:,} {k}" for k, n in soak.get("repeats_not_hit", {}).items()) or "none") + ".", ""]
    L += ["### Errors by fault", "",
          "| minute | fault | done (s into the minute) | a client should see | requests | errors before / during / after | "
          "during the fault | after it | last error, s after the fault | first upstream answer, s after | "
          "repeats during the fault |",
          "|---:|---|---|---|---:|---|---|---|---:|---:|---|"]
    for p in soak["phases"]:
        done = "; ".join(f"{at:g}: {what}" for at, what in p["steps"])
        kinds = {seg: ", ".join(f"{n:,} {k}" for k, n in p[seg]["kinds"].items()) or "–" for seg in ("during", "after")}
        reps = ", ".join(f"{n} {k}" for k, n in p["repeats_in_fault"].items()) or "–"
        L.append(f"| {p['minute']} | {p['fault']} | {done} | {p.get('expected', '')} | {p['requests']:,} | {p['before']['errors']} / "
                 f"{p['during']['errors']} / {p['after']['errors']} | {kinds['during']} | {kinds['after']} | "
                 f"{f(p['last_error_after_fault_s'], 1)} | {f(p['upstream_back_after_s'], 1)} | {reps} |")
    L += ["", "### Latency per minute (every request but those the client left)", "",
          "| minute | fault | requests | errors | P50 ms | P99 ms | P99 of the ok JSON ms | P99 of the ok streams ms | "
          "max ms |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in soak["minutes"]:
        L.append(f"| {m['minute']} | {m['fault']} | {m['requests']:,} | {m['errors']:,} | {f(m['p50_ms'], 1)} | "
                 f"{f(m['p99_ms'], 1)} | {f(m['p99_ok_json_ms'], 1)} | {f(m['p99_ok_stream_ms'], 1)} | "
                 f"{f(m['max_ms'], 0)} |")
    L += ["", "A stream's time is to its end: 12-13 chunks 20 ms apart from a healthy upstream.", ""]
    L += ["", "### The gateway process", "", "| | start | end | max |", "|---|---:|---:|---:|",
          f"| RSS MiB | {f(res.get('rss_start_mb'), 1)} | {f(res.get('rss_end_mb'), 1)} | {f(res.get('rss_max_mb'), 1)} |",
          f"| open file descriptors | {res.get('fds_start')} | {res.get('fds_end')} | {res.get('fds_max')} |", "",
          f"Sampled every {s['sample_s']:g} s from /proc (the process and its children) and /metrics; CPU "
          f"{f(res.get('cpu_pct'), 0)}% of a core on average; most provider slots in flight in a sample: "
          f"{f(res.get('in_flight_max'), 0)}; a /metrics scrape took {f(res.get('metrics_ms_p50'), 1)} ms (P50), "
          f"{f(res.get('metrics_ms_max'), 0)} ms at most. Config reloads counted: {soak['reloads']['failure']:g} refused, "
          f"{soak['reloads']['success']:g} taken. The gateway's log (level error): "
          + (", ".join(f"{k} x{v:,}" for k, v in soak["gateway_log"].get("lines", {}).items()) or "empty")
          + f"; Redis errors logged (at most one per 10 s): "
          + (", ".join(f"{k} x{v}" for k, v in soak["gateway_log"].get("redis", {}).items()) or "none")
          + f"; tracebacks: {soak['gateway_log'].get('tracebacks', 0)}. The upstream's writes to a connection the "
          f"gateway had already closed (it gave up on the answer): {soak.get('upstream_late_writes', 0):,}.", ""]
    if soak.get("metrics_end"):
        L += ["Counters at the end (/metrics):", "", "| counter | value |", "|---|---:|"]
        L += [f"| `{k}` | {v:,.0f} |" for k, v in soak["metrics_end"].items()]
        L.append("")
    return L


def fmt_load(load) -> str:
    return "–" if not load else " ".join(f"{x:.2f}" for x in load)


# ---- summary ------------------------------------------------------------------------------------

def summary(results: dict) -> str:
    L = ["== benchmark summary =="]
    by = rows_by(results)
    for scen in SCEN_LABEL:
        if scen in by:
            L.append(SCEN_LABEL[scen])
            for t in ORDER:
                r = by[scen].get(t)
                if r:
                    L.append(f"  {r['label']:30s} {r['rps']:9,.0f} req/s  p50 {r['p50']:7.2f}  p99 {r['p99']:8.2f} ms  errors {r['errors']}")
    for s in results["streams"]:
        L.append(f"streams{' over %gs' % s.get('ramp_s') if s.get('ramp_s') else ''}  {s['label']:30s} "
                 f"{s['completed']}/{s['streams']} complete, TTFT p50 {f(s['ttft_ms']['p50'])} p99 {f(s['ttft_ms']['p99'])} ms")
    ol = results.get("openloop")
    if ol and ol.get("rates"):
        rows = open_rows(ol)
        L.append(f"open loop, 50 ms upstream (capacity {ol['capacity']['rps']:,.0f} req/s): added P50 / P99 / P99.9 ms "
                 "over nginx alone at the same rate")
        for rate in ol["rates"]:
            up = rows.get(("upstream", "bypass", rate))
            for t, mode in OPEN_ORDER[1:]:
                r = rows.get((t, mode, rate))
                if not r or not up:
                    continue
                lat = r["latency_ms"]
                added = (" / ".join(f(lat[k] - up["latency_ms"][k]) if lat[k] is not None and up["latency_ms"][k] is not None
                                    else "–" for k in ("p50", "p99", "p999"))
                         if mode != "hit" else f"latency {f(lat['p50'])} / {f(lat['p99'])} / {f(lat['p999'])}")
                L.append(f"  {rate:6,}/s {r['label']:34s} answered {r['achieved_rps']:7,.0f}/s  {added}  errors {r['errors']}")
    g = results.get("guardrails")
    if g:
        for variant, run in g["runs"].items():
            def p99(key: str):
                vals = [x[key]["p99"] for x in run["streams"] if x[key]["p99"] is not None]
                return statistics.median(vals) if vals else None
            L.append(f"guardrails {variant:8s} streams p99: TTFT {f(p99('ttft_ms'))}, first text {f(p99('first_text_ms'))}, "
                     f"total {f(p99('total_ms'))} ms; JSON {statistics.median(x['rps'] for x in run['json']):,.0f} req/s")
    for name, measured, met, note in targets(results):
        L.append(f"[{'MET ' if met else ('n/a ' if met is None else 'MISS')}] {name}: {measured}" + (f" ({note})" if note else ""))
    sk = results.get("soak")
    if sk:
        r = sk["resources"]
        L.append(f"soak {len(sk['minutes'])} min: {sk['requests']:,} requests, {sk['errors']:,} errors, "
                 f"rss {r.get('rss_start_mb')} -> {r.get('rss_end_mb')} MiB, fds {r.get('fds_start')} -> "
                 f"{r.get('fds_end')}, slots in flight at the end {sk['settle']['final']}")
        L += [f"  finding: {x}" for x in sk["findings"]]
    for e in results["errors"]:
        L.append(f"problem: {e}")
    return "\n".join(L)


# ---- profiles and metrics ------------------------------------------------------------------------

def top_functions(collapsed: Path, n: int = 25) -> dict:
    """Self and total sample shares per function from py-spy's raw (collapsed stack) output."""
    self_c: Counter = Counter()
    total_c: Counter = Counter()
    samples = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        samples += k
        frames = [_short(fr) for fr in stack.split(";")]
        frames = [fr for fr in frames if fr]
        if not frames:
            continue
        self_c[frames[-1]] += k
        for fr in set(frames):
            total_c[fr] += k
    top = [(fn, 100 * c / samples, 100 * total_c[fn] / samples) for fn, c in self_c.most_common(n)] if samples else []
    by_total = [(fn, 100 * c / samples) for fn, c in total_c.most_common(60)] if samples else []
    return {"samples": samples, "top": top, "by_total": by_total}


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py:123)"; process/thread frames dropped
    m = re.match(r"(.*) \((.*?):(\d+)\)$", frame.strip())
    if not m:
        return "" if frame.startswith(("process ", "thread ")) else frame.strip()
    fn, path, lineno = m.groups()
    parts = path.split("/")
    short = "/".join(parts[-2:]) if parts[-2:-1] and parts[-2] in ("gateway", "upstream", "cache", "routing") else parts[-1]
    return f"{fn} ({short})"


def cache_metrics(text: str) -> dict:
    """Cache and cost counters from the gateway's /metrics, whatever their exact names."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{")[0].split(" ")[0]
        if any(w in name for w in ("cache", "saved", "cost")) and not name.endswith(("_created", "_bucket")):
            try:
                val = float(line.rsplit(" ", 1)[1])
            except ValueError:
                continue
            key = line.rsplit(" ", 1)[0]
            out[key] = val
    return dict(list(out.items())[:30])


# ---- charts -------------------------------------------------------------------------------------

def charts(results: dict, out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = rows_by(results)
    made = []
    points = [("passthrough-1", "1"), ("passthrough-32", "32"), ("slow-256", "256\n(50 ms upstream)")]
    points = [(s, lbl) for s, lbl in points if s in by]
    if points:
        fig, ax = plt.subplots(figsize=(8, 5))
        for t in ORDER:
            xs = [i for i, (s, _) in enumerate(points) if t in by[s]]
            if not xs:
                continue
            p50 = [by[points[i][0]][t]["p50"] for i in xs]
            p99 = [by[points[i][0]][t]["p99"] for i in xs]
            line, = ax.plot(xs, p50, marker="o", label=f"{label_of(results, t)} P50")
            ax.plot(xs, p99, marker="x", linestyle="--", color=line.get_color(), label=f"{label_of(results, t)} P99")
        ax.set_xticks(range(len(points)), [lbl for _, lbl in points])
        ax.set_xlabel("requests in flight")
        ax.set_ylabel("latency, ms (log)")
        ax.set_yscale("log")
        ax.set_title("Latency vs concurrency")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "latency_vs_concurrency.png", dpi=120)
        plt.close(fig)
        made.append("latency_vs_concurrency.png")
    scen = [s for s in SCEN_LABEL if s in by]
    if scen:
        targets_present = [t for t in ORDER if any(t in by[s] for s in scen)]
        fig, ax = plt.subplots(figsize=(9, 5))
        width = 0.8 / max(1, len(targets_present))
        for j, t in enumerate(targets_present):
            vals = [by[s].get(t, {}).get("rps", 0) for s in scen]
            bars = ax.bar([i + j * width for i in range(len(scen))], vals, width, label=label_of(results, t))
            for b, v in zip(bars, vals):
                if v:
                    ax.text(b.get_x() + b.get_width() / 2, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=6, rotation=90)
        ax.set_xticks([i + width * (len(targets_present) - 1) / 2 for i in range(len(scen))],
                      [SCEN_LABEL[s].split(". ", 1)[1].split(" (")[0].replace(", ", "\n", 1) for s in scen],
                      fontsize=7)
        ax.set_ylabel("requests / s")
        ax.set_yscale("log")
        ax.set_title("Requests per second per gateway (one process each)")
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "rps_per_gateway.png", dpi=120)
        plt.close(fig)
        made.append("rps_per_gateway.png")
    memory = [m for m in results.get("memory") or [] if m.get("curve")]
    if memory:
        fig, ax = plt.subplots(figsize=(7, 4))
        top = 0.0
        for mem in memory:
            rss = [mem["idle_mb"]] + [c["rss_mb"] for c in mem["curve"]]
            top = max(top, *rss)
            ax.plot([0] + [c["requests"] for c in mem["curve"]], rss, marker=".",
                    label=f"{'with' if mem['semantic'] else 'without'} the semantic layer")
        ax.set_xlabel("requests served")
        ax.set_ylabel("RSS, MiB")
        ax.set_title("Gateway RSS over the leak check")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_ylim(0, top * 1.15)
        fig.tight_layout()
        fig.savefig(out / "rss.png", dpi=120)
        plt.close(fig)
        made.append("rss.png")
    if results.get("soak", {}).get("samples"):
        soak_chart(plt, results["soak"], out / "soak.png")
        made.append("soak.png")
    return made


def soak_chart(plt, soak: dict, path: Path) -> None:
    """P99 per minute (and errors per 5 s), RSS, and open fds with slots in flight, over the soak."""
    t0, period = soak["t0"], soak["settings"]["period_s"]
    mins = lambda t: (t - t0) / 60  # noqa: E731
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for p in soak["phases"]:
        a = mins(t0 + (p["minute"] - 1) * period + soak["settings"]["fault_at_s"])
        for ax in (ax1, ax2, ax3):
            ax.axvspan(a, a + soak["settings"]["fault_s"] / 60, color="tab:red", alpha=0.12, lw=0)
        ax1.text(a, 1.0, p["fault"], transform=ax1.get_xaxis_transform(), fontsize=7, rotation=30, va="bottom")
    starts = [(x["minute"] - 1) * period / 60 for x in soak["minutes"]]
    for key, label, color in (("p99_ms", "P99, every request", "tab:blue"),
                              ("p99_ok_json_ms", "P99, the ok JSON", "tab:cyan"),
                              ("p99_ok_stream_ms", "P99, the ok streams", "tab:olive")):
        ys = [float("nan") if x[key] is None else x[key] for x in soak["minutes"]]
        ax1.hlines(ys, starts, [a + period / 60 for a in starts], colors=color, label=label, lw=2)
    ax1.set_ylabel("ms, per minute")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=7, loc="upper left")
    ax1.grid(True, which="both", alpha=0.3)
    s = soak["samples"]
    ax2.plot([mins(x["t"]) for x in s], [x["rss_mb"] for x in s], color="tab:purple")
    ax2.set_ylabel("RSS, MiB")
    ax2.set_ylim(0, max(x["rss_mb"] for x in s) * 1.15)
    ax2.grid(True, alpha=0.3)
    ax3.plot([mins(x["t"]) for x in s], [x["fds"] for x in s], color="tab:green", label="open fds")
    ax3.plot([mins(x["t"]) for x in s], [x["in_flight"] or 0 for x in s], color="tab:orange",
             label="provider slots in flight")
    ax3.set_ylabel("count")
    ax3.set_xlabel("minutes since the traffic started (red: a fault)")
    ax3.legend(fontsize=7, loc="upper left")
    ax3.grid(True, alpha=0.3)
    fig.suptitle("Soak: one gateway, a fault every minute", y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
