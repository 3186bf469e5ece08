"""The first hour of a new user: `make demo` and the bundled fake upstream.

The fake's answers follow the request as OpenAI's do (tool calls, n choices, JSON content,
logprobs; streamed too) and the real `openai` SDK reads them, its own parsers and pydantic checking
them; a client that leaves mid-stream costs the fake no traceback; the demo's second identical call
(the README's examples) is an exact cache hit; and stopping the demo, by a signal to it or to
`make`, or by losing one of its servers, leaves no server running.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from .fake_upstream import free_port

ROOT = Path(__file__).resolve().parent.parent
HELLO = [{"role": "user", "content": "hello there"}]


# ---- the fake's answers, read by the openai SDK -------------------------------------------------

class Place(BaseModel):
    city: str
    country_code: str = Field(min_length=2, max_length=2)


class Forecast(BaseModel):
    place: Place                                    # a $ref into $defs
    days: int = Field(ge=3, le=10)
    unit: Literal["celsius", "fahrenheit"]
    start: datetime.date
    hourly: bool
    temperatures: list[float] = Field(min_length=2)
    note: str | None                                # anyOf [string, null]


WEATHER = {"type": "function", "function": {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
        "note": {"type": "string"},                 # not required: not filled
    }, "required": ["location", "unit", "days"]},
}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
def client(upstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream.url, api_key="sk-test", max_retries=0)


def streamed(client: openai.OpenAI, **kw) -> list:
    return list(client.chat.completions.create(model="gpt-4o-mini", stream=True, **kw))


def by_choice(chunks: list) -> dict[int, list]:
    deltas: dict[int, list] = defaultdict(list)
    for chunk in chunks:
        for choice in chunk.choices:
            deltas[choice.index].append(choice)
    return deltas


def test_the_default_answer_is_as_before(client):
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert len(answer.choices) == 1
    choice = answer.choices[0]
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason, choice.logprobs) == \
        ("Echo: hello there", None, "stop", None)
    chunks = streamed(client, messages=HELLO)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: hello there"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_parses_into_the_tools_pydantic_model(client, stream):
    tools = [openai.pydantic_function_tool(Forecast), openai.pydantic_function_tool(Place)]
    kw = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools)
    if stream:
        with client.chat.completions.stream(**kw) as events:
            completion = events.get_final_completion()
    else:
        completion = client.chat.completions.parse(**kw)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "Forecast"
    forecast = call.function.parsed_arguments                  # pydantic validated it
    assert isinstance(forecast, Forecast) and isinstance(forecast.place, Place)
    assert 3 <= forecast.days <= 10 and len(forecast.temperatures) >= 2


def test_tool_calls_stream_as_openai_streams_them(client):
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, tools=[WEATHER])
    arguments = whole.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(arguments) == {"location": "example", "unit": "celsius", "days": 1}

    chunks = streamed(client, messages=HELLO, tools=[WEATHER], stream_options={"include_usage": True})
    deltas = [c.choices[0] for c in chunks if c.choices]
    first = deltas[0].delta.tool_calls[0]
    assert deltas[0].delta.role == "assistant"
    assert (first.index, first.type, first.function.name) == (0, "function", "get_weather")
    assert first.function.arguments == ""
    assert first.id.startswith("call_")
    fragments = [d.delta.tool_calls[0] for d in deltas[1:] if d.delta.tool_calls]
    assert len(fragments) > 3
    assert all(f.id is None and f.function.name is None and f.index == 0 for f in fragments)
    assert "".join(f.function.arguments for f in fragments) == arguments
    assert deltas[-1].finish_reason == "tool_calls" and deltas[-1].delta.tool_calls is None
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_tool_choice_is_honoured(client):
    def answer(messages=HELLO, **kw):
        return client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER, TIME], **kw)

    assert answer().choices[0].message.tool_calls[0].function.name == "get_weather"   # auto: the first tool
    named = answer(tool_choice={"type": "function", "function": {"name": "get_time"}}).choices[0]
    function = named.message.tool_calls[0].function
    assert (function.name, function.arguments) == ("get_time", "{}")
    text = answer(tool_choice="none").choices[0]
    assert (text.message.content, text.message.tool_calls, text.finish_reason) == ("Echo: hello there", None, "stop")

    first = answer().choices[0].message
    after_result = [*HELLO, first, {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "18 C, sunny"}]
    assert answer(after_result).choices[0].message.content == "Echo: hello there"      # auto: answers with it
    assert answer(after_result, tool_choice="required").choices[0].finish_reason == "tool_calls"

    with pytest.raises(openai.BadRequestError) as refused:
        answer(tool_choice={"type": "function", "function": {"name": "nowhere"}})
    assert refused.value.status_code == 400 and refused.value.body["param"] == "tool_choice"


@pytest.mark.parametrize("stream", [False, True])
def test_n_gets_n_choices(client, stream):
    if not stream:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=3)
        assert [c.index for c in answer.choices] == [0, 1, 2]
        assert {c.message.content for c in answer.choices} == {"Echo: hello there"}
        assert answer.usage.completion_tokens == 3 * 3
        calls = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=2, tools=[WEATHER])
        ids = [c.message.tool_calls[0].id for c in calls.choices]
        assert [c.finish_reason for c in calls.choices] == ["tool_calls"] * 2 and len(set(ids)) == 2
        return
    deltas = by_choice(streamed(client, messages=HELLO, n=3))
    assert sorted(deltas) == [0, 1, 2]
    for choices in deltas.values():
        assert choices[0].delta.role == "assistant"
        assert "".join(c.delta.content or "" for c in choices) == "Echo: hello there"
        assert [c.finish_reason for c in choices if c.finish_reason] == ["stop"]
    calls = by_choice(streamed(client, messages=HELLO, n=2, tools=[WEATHER]))
    for choices in calls.values():
        args = "".join(c.delta.tool_calls[0].function.arguments for c in choices if c.delta.tool_calls)
        assert json.loads(args)["unit"] == "celsius"


@pytest.mark.parametrize("stream", [False, True])
def test_json_object_content_is_json(client, stream):
    kw = dict(messages=HELLO, response_format={"type": "json_object"})
    if stream:
        content = "".join(c.choices[0].delta.content or "" for c in streamed(client, **kw))
    else:
        content = client.chat.completions.create(model="gpt-4o-mini", **kw).choices[0].message.content
    assert json.loads(content) == {"answer": "Echo: hello there"}


def test_the_reply_knob_still_sets_the_text_even_when_json_was_asked_for(client):
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                            response_format={"type": "json_object"},
                                            extra_body={"fake": {"reply": "Sure! {oops"}})
    assert answer.choices[0].message.content == "Sure! {oops"


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_content_parses_into_the_pydantic_model(client, stream):
    kw = dict(model="gpt-4o-mini", messages=HELLO, response_format=Forecast)
    if stream:
        with client.chat.completions.stream(**kw) as events:
            message = events.get_final_completion().choices[0].message
    else:
        message = client.chat.completions.parse(**kw).choices[0].message
    assert isinstance(message.parsed, Forecast)
    assert Forecast.model_validate_json(message.content) == message.parsed


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_per_token_with_top_logprobs(client, stream):
    kw = dict(messages=HELLO, logprobs=True, top_logprobs=3)
    if stream:
        chunks = streamed(client, **kw)
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
        assert "".join(t.token for t in tokens) == text == "Echo: hello there"
    else:
        choice = client.chat.completions.create(model="gpt-4o-mini", **kw).choices[0]
        tokens = choice.logprobs.content
        assert [t.token for t in tokens] == choice.message.content.split()
    for token in tokens:
        assert token.logprob <= 0 and token.bytes == list(token.token.encode())
        top = token.top_logprobs
        assert len(top) == 3 and token.token in [t.token for t in top]
        assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
        assert sum(2.718281828 ** t.logprob for t in top) <= 1.0


# ---- a client leaving mid-stream -----------------------------------------------------------------

def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("tools", [None, [WEATHER]])
def test_a_client_leaving_mid_stream_prints_no_traceback(tools):
    port = free_port()
    fake = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--port", str(port),
                             "--chunk-delay", "0.02"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, fake)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        long = {"role": "user", "content": " ".join(f"w{i}" for i in range(300))}
        body = {"model": "m", "stream": True, "messages": [long], "fake": {"reply": long["content"]}}
        if tools:  # 300 required properties: a long stream of argument fragments
            names = [f"p{i}" for i in range(300)]
            body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {n: {"type": "string"} for n in names}, "required": names}}}]
        with httpx.Client(timeout=10) as http:
            with http.stream("POST", url, json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data:") and ("w3" in line or "p3" in line):
                        break  # and leave, with about 6 seconds of answer to go
        time.sleep(0.5)  # the fake writes on into the closed connection, and finds it closed
        assert httpx.post(url, json={"model": "m", "messages": HELLO}).status_code == 200  # still serving
    finally:
        fake.terminate()
        _, stderr = fake.communicate(timeout=15)
    assert "Traceback" not in stderr and "Error handling request" not in stderr, stderr


# ---- the demo ------------------------------------------------------------------------------------

BANNER = re.compile(r"demo: the gateway on \S+ \(pid (\d+)\) in front of the fake upstream on \S+ \(pid (\d+)\)")


@dataclass
class Demo:
    proc: subprocess.Popen
    port: int
    upstream_port: int
    log: Path
    gateway_pid: int = 0
    upstream_pid: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_demo(log_dir: Path, via_make: bool = False) -> Demo:
    """scripts/demo.py (or `make demo`) on free ports, returned once it says both servers are up."""
    port, upstream_port = free_port(), free_port()
    log = log_dir / f"demo-{port}.log"
    if via_make:
        make = shutil.which("make")
        assert make, "make is not installed"
        # The venv this test runs in; -o: its install stamp counts as done (no pip install here).
        command = [make, "-s", f"VENV={sys.prefix}", "-o", f"{sys.prefix}/.run-deps", "demo"]
    else:
        command = [sys.executable, "scripts/demo.py"]
    env = {**os.environ, "GATEWAY_PORT": str(port), "DEMO_UPSTREAM_PORT": str(upstream_port)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    demo = Demo(proc, port, upstream_port, log)
    deadline = time.monotonic() + 60
    while not (found := BANNER.search(demo.output())):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_demo(demo)
            raise RuntimeError(f"the demo did not start:\n{demo.output()}")
        time.sleep(0.05)
    demo.gateway_pid, demo.upstream_pid = int(found[1]), int(found[2])
    return demo


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped


def stop_demo(demo: Demo) -> None:
    """Cleanup whatever a failed test left behind."""
    if demo.proc.poll() is None:
        demo.proc.kill()
        demo.proc.wait(10)
    for pid in (demo.gateway_pid, demo.upstream_pid):
        if pid and alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)  # each server leads its own process group
            except ProcessLookupError:
                pass


def assert_stopped(demo: Demo) -> None:
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in (demo.gateway_pid, demo.upstream_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(demo.gateway_pid) and not alive(demo.upstream_pid), demo.output()
    assert not listening(demo.port) and not listening(demo.upstream_port)


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    started: list[Demo] = []

    def start(via_make: bool = False) -> Demo:
        started.append(start_demo(tmp_path, via_make))
        return started[-1]

    yield start
    for demo in started:
        stop_demo(demo)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("demo"))
    yield running
    running.proc.terminate()
    running.proc.wait(30)
    stop_demo(running)


def test_readme_curl_examples_hit_the_cache_the_second_time(demo):
    ask = {"model": "support", "messages": [{"role": "user", "content": "How long does a refund take?"}]}
    stream = {"model": "support", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    with httpx.Client(base_url=demo.base_url, timeout=30) as http:  # as curl: no Authorization
        first, second = (http.post("/chat/completions", json=ask) for _ in range(2))
        streams = [http.post("/chat/completions", json=stream) for _ in range(2)]
    assert (first.status_code, first.headers["x-gateway-cache"]) == (200, "miss")
    assert second.headers["x-gateway-cache"] == "hit-exact"
    assert second.json()["choices"][0]["message"]["content"] == "Echo: How long does a refund take?"
    assert [s.headers["x-gateway-cache"] for s in streams] == ["miss", "hit-exact"]
    assert [sse_text(s.text) for s in streams] == ["Echo: hello"] * 2


def sse_text(body: str) -> str:
    events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return "".join(choice["delta"].get("content") or "" for event in events[:-1]
                   for choice in json.loads(event)["choices"])


def test_readme_python_example_hits_the_cache_the_second_time(demo):
    client = openai.OpenAI(base_url=demo.base_url, api_key="anything", max_retries=0)
    hello = [{"role": "user", "content": "hello"}]
    raw = client.chat.completions.with_raw_response.create(model="support", messages=hello)
    assert raw.headers["x-gateway-cache"] == "miss" and raw.parse().choices[0].message.content == "Echo: hello"
    stream = client.chat.completions.with_streaming_response.create(model="support", messages=hello, stream=True)
    with stream as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        assert response.headers["x-gateway-cache"] == "hit-exact"  # stream is not in the key
    assert text == "Echo: hello"


def test_function_calling_and_structured_output_through_the_demo(demo):
    client = openai.OpenAI(base_url=demo.base_url, api_key="sk-functions", max_retries=0)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = client.chat.completions.create(model="support", messages=messages, tools=[WEATHER])
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "example", "unit": "celsius", "days": 1}
    messages += [reply.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"}]
    final = client.chat.completions.create(model="support", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == "Echo: What is the weather in Paris?"

    parsed = client.chat.completions.parse(model="support", messages=HELLO, response_format=Forecast)
    assert isinstance(parsed.choices[0].message.parsed, Forecast)
    with client.chat.completions.stream(model="support", messages=messages[:1], tools=[WEATHER]) as events:
        streamed_call = events.get_final_completion().choices[0].message.tool_calls[0]
    assert streamed_call.function.arguments == call.function.arguments


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_demo_stops_both_servers(demos, sig):
    demo = demos()
    demo.proc.send_signal(sig)
    assert demo.proc.wait(30) == 0
    assert_stopped(demo)


@pytest.mark.parametrize("which", ["gateway", "upstream"])
def test_when_one_server_dies_the_demo_stops_the_other(demos, which):
    demo = demos()
    os.kill(demo.gateway_pid if which == "gateway" else demo.upstream_pid, signal.SIGKILL)
    assert demo.proc.wait(30) == 1
    assert_stopped(demo)
    assert "exited" in demo.output()


def test_kill_of_make_demo_stops_both_servers(demos):
    demo = demos(via_make=True)
    demo.proc.send_signal(signal.SIGTERM)  # `kill <pid of make>`: make passes SIGTERM to its child
    demo.proc.wait(30)
    assert_stopped(demo)


def test_even_kill_9_of_the_demo_stops_both_servers(demos):
    demo = demos()
    demo.proc.kill()  # no chance to stop them: the kernel tells them (PR_SET_PDEATHSIG)
    demo.proc.wait(10)
    assert_stopped(demo)
