"""The Responses API inbound's translation (gateway/inbound/responses.py), unit by unit but with the
real `openai` SDK on the other side: its Response model and its stream-event union validate what
the gateway writes, and its `responses.create` / `responses.stream` / `responses.parse` read our
answers and streams (over an in-process transport), and build the requests `to_chat` reads."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

import httpx2
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from gateway.errors import GatewayError
from gateway.inbound import responses
from gateway.providers import shape
from gateway.providers.sse import complete_events
from gateway.upstream.sse_codec import assemble, to_sse

EVENTS = TypeAdapter(ResponseStreamEvent)
CREATED = 1_700_000_000
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
PNG_URL = "data:image/png;base64,iVBORw0KGgo="


def chat(content: str | None, calls: list[dict[str, Any]] | None = None, finish: str = "stop",
         usage: dict[str, Any] | None = None, refusal: str | None = None,
         id: str = "chatcmpl-abc123") -> dict[str, Any]:
    choice = {"index": 0, "message": shape.message(content, calls, refusal), "logprobs": None, "finish_reason": finish}
    return shape.completion(id, "claude-sonnet-4-5", [choice], usage or shape.usage(12, 7), created=CREATED)


TEXT = chat("The capital of France is Paris, a city of about two million people.")
CALLS = chat(None, [shape.tool_call("call_1", "get_weather", {"city": "Paris"}),
                    shape.tool_call("toolu_2", "get_weather", {"city": "Lyon"})], "tool_calls")
BOTH = chat("Let me look that up.", [shape.tool_call("call_9", "get_weather", {"city": "Nice"})], "tool_calls",
            shape.usage(40, 9, cache_read=30, cache_write=5))
CUT = chat("Once upon a time there was a", finish="length")
REFUSED = chat(None, refusal="I can't help with that.")


def parsed(events: list[bytes]) -> list[Any]:
    """Every event, checked against the SDK's event union; its `event:` line names its type."""
    out = []
    for name, data in complete_events(events):
        found = EVENTS.validate_json(data)
        assert found.type == name
        out.append(found)
    return out


def sdk(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai.OpenAI:
    """The real client, strict about what it reads, over an in-process transport."""
    return openai.OpenAI(api_key="sk-test", base_url="http://gateway.test/v1", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
                         _strict_response_validation=True)


def answering(body: bytes | dict[str, Any]) -> openai.OpenAI:
    """A client whose every request gets `body`: a JSON answer, or an event stream's bytes."""
    def handler(request: httpx2.Request) -> httpx2.Response:
        if isinstance(body, dict):
            return httpx2.Response(200, json=body)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return sdk(handler)


# ---- (a) the JSON answer -------------------------------------------------------------------------

def test_a_text_answer_is_a_response_the_sdk_reads() -> None:
    request = {"model": "claude", "input": "What is the capital of France?", "instructions": "Be brief.",
               "temperature": 0.2, "max_output_tokens": 100}
    body = responses.response(TEXT, request)
    found = Response.model_validate(body)
    assert found.id == "resp_abc123" and found.object == "response" and found.status == "completed"
    assert found.output_text == TEXT["choices"][0]["message"]["content"]
    assert [item.type for item in found.output] == ["message"]
    assert found.output[0].id.startswith("msg_") and found.output[0].status == "completed"
    assert found.output[0].content[0].annotations == []
    assert found.usage.input_tokens == 12 and found.usage.output_tokens == 7 and found.usage.total_tokens == 19
    assert found.usage.input_tokens_details.cached_tokens == 0
    assert found.usage.output_tokens_details.reasoning_tokens == 0
    assert (found.instructions, found.temperature, found.max_output_tokens) == ("Be brief.", 0.2, 100)
    assert (found.tools, found.tool_choice, found.parallel_tool_calls) == ([], "auto", True)
    assert found.incomplete_details is None and found.completed_at is not None and found.store is False
    # through the SDK itself: `responses.create` parses it (strictly) and gives the text
    assert answering(body).responses.create(model="claude", input="?").output_text == found.output_text


def test_a_tool_calls_are_function_call_items() -> None:
    request = {"model": "claude", "input": "Weather in Paris and Lyon?", "tools": [WEATHER],
               "tool_choice": {"type": "function", "name": "get_weather"}}
    found = Response.model_validate(responses.response(CALLS, request))
    assert found.output_text == ""
    calls = [item for item in found.output if item.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments), c.status) for c in calls] == [
        ("call_1", "get_weather", {"city": "Paris"}, "completed"),
        ("toolu_2", "get_weather", {"city": "Lyon"}, "completed")]
    assert all(c.id.startswith("fc_") for c in calls) and len({c.id for c in calls}) == 2
    assert found.tools[0].name == "get_weather" and found.tool_choice.name == "get_weather"


def test_a_text_then_a_call_and_the_prompt_cache_in_usage() -> None:
    found = Response.model_validate(responses.response(BOTH, {"model": "m", "input": "hi"}))
    assert [item.type for item in found.output] == ["message", "function_call"]
    assert found.output_text == "Let me look that up."
    assert found.usage.input_tokens == 40 and found.usage.input_tokens_details.cached_tokens == 30
    assert found.usage.input_tokens_details.cache_write_tokens == 5


@pytest.mark.parametrize("finish, reason", [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_a_cut_answer_is_incomplete(finish: str, reason: str) -> None:
    answer = chat("Once upon a", finish=finish)
    found = Response.model_validate(responses.response(answer, {"model": "m", "input": "x"}))
    assert found.status == "incomplete" and found.incomplete_details.reason == reason
    assert found.output[0].status == "incomplete" and found.completed_at is None


def test_a_refusal_is_a_refusal_part() -> None:
    found = Response.model_validate(responses.response(REFUSED, {"model": "m", "input": "x"}))
    assert found.output[0].content[0].type == "refusal"
    assert found.output[0].content[0].refusal == "I can't help with that."


def test_a_native_answer_reads_as_the_completion_it_amounts_to() -> None:
    for answer in (TEXT, CALLS, BOTH, CUT, REFUSED):
        assert responses.completion(responses.response(answer, {"model": "m", "input": "x"})) == answer
    native = {"id": "resp_68a1", "object": "response", "created_at": CREATED, "status": "completed", "model": "gpt-5",
              "output": [{"type": "reasoning", "id": "rs_1", "summary": []},
                         {"type": "web_search_call", "id": "ws_1", "status": "completed"},
                         {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": "It is sunny.", "annotations": []}]}],
              "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 64},
                        "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 32}, "total_tokens": 150}}
    found = responses.completion(native)
    assert found["id"] == "chatcmpl-68a1" and found["model"] == "gpt-5"
    assert found["choices"][0]["message"]["content"] == "It is sunny."
    assert found["choices"][0]["finish_reason"] == "stop"
    assert found["usage"] == {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                              "prompt_tokens_details": {"cached_tokens": 64},
                              "completion_tokens_details": {"reasoning_tokens": 32}}
    with pytest.raises(ValueError):
        responses.completion({"object": "chat.completion", "choices": []})


# ---- (b) the stream ------------------------------------------------------------------------------

def kinds(events: list[Any]) -> list[str]:
    return [e.type.removeprefix("response.") for e in events]


def test_b_a_text_stream_in_the_order_the_sdk_expects() -> None:
    request = {"model": "claude", "input": "?", "stream": True}
    events = parsed(responses.replay(to_sse(TEXT, True), request))
    assert kinds(events) == ["created", "in_progress", "output_item.added", "content_part.added"] + \
        ["output_text.delta"] * (len(events) - 8) + \
        ["output_text.done", "content_part.done", "output_item.done", "completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = TEXT["choices"][0]["message"]["content"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text
    assert len([e for e in events if e.type == "response.output_text.delta"]) > 1
    assert next(e for e in events if e.type == "response.output_text.done").text == text
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    done = events[-1].response
    assert done.status == "completed" and done.output_text == text and done.usage.total_tokens == 19
    assert len({e.response.id for e in (events[0], events[1], events[-1])}) == 1
    assert done.model_dump() == Response.model_validate(responses.response(TEXT, request)).model_dump(
        exclude={"completed_at"}) | {"completed_at": done.completed_at}


def test_b_tool_calls_stream_as_function_call_items() -> None:
    events = parsed(responses.replay(to_sse(BOTH, True), {"model": "m", "input": "?", "tools": [WEATHER]}))
    assert kinds(events) == ["created", "in_progress", "output_item.added", "content_part.added", "output_text.delta",
                             "output_text.done", "content_part.done", "output_item.done", "output_item.added",
                             "function_call_arguments.delta", "function_call_arguments.done", "output_item.done",
                             "completed"]
    added = events[8]
    assert (added.output_index, added.item.type, added.item.call_id, added.item.name, added.item.arguments) == \
        (1, "function_call", "call_9", "get_weather", "")
    assert added.item.status == "in_progress" and events[11].item.status == "completed"
    assert events[9].item_id == added.item.id == events[10].item_id
    assert json.loads(events[10].arguments) == {"city": "Nice"}
    assert events[-1].response.usage.input_tokens_details.cached_tokens == 30


def test_b_arguments_in_pieces_and_two_calls() -> None:
    """A translating adapter's stream (Anthropic's, say): each call's arguments in pieces."""
    chunks = shape.Chunks("chatcmpl-xyz", "claude", CREATED)
    parts = [chunks.delta({"role": "assistant", "content": ""})]
    for i, (id, city) in enumerate([("toolu_a", "Paris"), ("toolu_b", "Lyon")]):
        parts.append(chunks.delta({"tool_calls": [{"index": i, "id": id, "type": "function",
                                                   "function": {"name": "get_weather", "arguments": ""}}]}))
        for piece in ('{"ci', 'ty": "', city, '"}'):
            parts.append(chunks.delta({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    parts += [chunks.delta({}, "tool_calls"), chunks.usage(shape.usage(20, 11)), shape.DONE]
    events = parsed(responses.replay(parts, {"model": "m", "input": "?"}))
    for index, city in ((0, "Paris"), (1, "Lyon")):
        deltas = [e.delta for e in events
                  if e.type == "response.function_call_arguments.delta" and e.output_index == index]
        assert len(deltas) == 4 and json.loads("".join(deltas)) == {"city": city}
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [(d.call_id, json.loads(d.arguments)) for d in done] == [
        ("toolu_a", {"city": "Paris"}), ("toolu_b", {"city": "Lyon"})]
    # each item is closed before the next opens, as OpenAI streams them
    added = [i for i, kind in enumerate(kinds(events)) if kind == "output_item.added"]
    assert kinds(events).index("output_item.done") < added[1]


def test_b_a_cut_stream_is_incomplete_and_a_refusal_streams_as_one() -> None:
    events = parsed(responses.replay(to_sse(CUT, True)))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert next(e for e in events if e.type == "response.output_item.done").item.status == "incomplete"
    assert responses.DONE_MARK not in b"".join(responses.replay(to_sse(CUT, True)))
    assert any(mark in b"".join(responses.replay(to_sse(CUT, True))) for mark in responses.END_MARKS)
    events = parsed(responses.replay(to_sse(REFUSED, True)))
    assert "refusal.delta" in kinds(events) and "refusal.done" in kinds(events)
    assert events[-1].response.output[0].content[0].refusal == "I can't help with that."


def test_b_an_empty_answer_is_one_empty_message() -> None:
    events = parsed(responses.replay(to_sse(chat(""), True)))
    assert kinds(events) == ["created", "in_progress", "output_item.added", "content_part.added", "output_text.done",
                             "content_part.done", "output_item.done", "completed"]
    assert events[-1].response.output_text == ""


def test_b_the_sdk_streams_it_and_assembles_the_final_response() -> None:
    body = b"".join(responses.replay(to_sse(BOTH, True), {"model": "m", "input": "?", "tools": [WEATHER]}))
    client = answering(body)
    seen = [event.type for event in client.responses.create(model="m", input="?", tools=[WEATHER], stream=True)]
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    with client.responses.stream(model="m", input="?", tools=[WEATHER]) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == "Let me look that up."
    call = final.output[1]
    assert (call.type, call.call_id, json.loads(call.arguments)) == ("function_call", "call_9", {"city": "Nice"})
    assert final.usage.output_tokens == 9


async def test_b_render_stream_as_the_bytes_arrive() -> None:
    whole = b"".join(to_sse(BOTH, True))

    async def cut(size: int) -> AsyncIterator[bytes]:
        for i in range(0, len(whole), size):
            yield whole[i:i + size]

    for size in (1, 7, 100, len(whole)):
        got = [piece async for piece in responses.render_stream(cut(size), {"model": "m", "input": "?"})]
        streamed = [e.model_dump(exclude={"response": {"completed_at"}}) for e in parsed(got)]
        assert streamed == [e.model_dump(exclude={"response": {"completed_at"}})
                            for e in parsed(responses.replay([whole], {"model": "m", "input": "?"}))]


async def test_b_a_chat_stream_without_done_ends_without_a_response() -> None:
    async def broken() -> AsyncIterator[bytes]:
        for piece in to_sse(TEXT, True)[:-3]:
            yield piece

    got = b"".join([piece async for piece in responses.render_stream(broken())])
    assert parsed([got])[-1].type == "response.output_text.delta"
    assert not any(mark in got for mark in responses.END_MARKS)


async def test_b_an_error_in_the_chat_stream_is_the_error_event_the_sdk_raises() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield to_sse(TEXT, True)[0]
        yield to_sse(TEXT, True)[1]
        yield b'data: {"error": {"message": "overloaded", "type": "api_error", "code": "upstream_stream_error"}}\n\n'
        yield to_sse(TEXT, True)[2]   # not read: the error ends the stream

    got = [piece async for piece in responses.render_stream(failing())]
    events = parsed(got)
    assert events[-1].type == "error" and events[-1].message == "overloaded"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    with pytest.raises(openai.APIError, match="overloaded"):
        for _ in answering(b"".join(got)).responses.create(model="m", input="?", stream=True):
            pass


def test_b_the_pumps_error_event() -> None:
    found = parsed([responses.stream_error_event("the stream from provider 'x' broke", sequence_number=42)])[0]
    assert (found.type, found.message, found.code, found.sequence_number) == (
        "error", "the stream from provider 'x' broke", "upstream_stream_error", 42)
    body = b"".join(responses.replay(to_sse(TEXT, True))[:1]) + responses.stream_error_event("broke", sequence_number=5)
    with pytest.raises(openai.APIError, match="broke"):
        for _ in answering(body).responses.create(model="m", input="?", stream=True):
            pass


# ---- (c) the stream's chat chunks -----------------------------------------------------------------

@pytest.mark.parametrize("answer", [TEXT, CALLS, BOTH, CUT, REFUSED, chat("")], ids=["text", "calls", "both", "cut",
                                                                                     "refusal", "empty"])
def test_c_chat_chunks_round_trip(answer: dict[str, Any]) -> None:
    sse = to_sse(answer, True)
    events = responses.replay(sse, {"model": "m", "input": "?"})
    chunks = responses.chat_chunks(events, "m")
    assert chunks[-1].endswith(shape.DONE)
    assert assemble(chunks) == assemble(sse)


def test_c_chat_chunks_of_a_cut_or_failed_stream() -> None:
    events = responses.replay(to_sse(TEXT, True))
    partial = responses.chat_chunks(events[:4], "m")
    assert partial and b"[DONE]" not in b"".join(partial)
    failed = responses.chat_chunks(events[:4] + [responses.stream_error_event("broke", sequence_number=9)] + events[4:], "m")
    assert b"[DONE]" not in b"".join(failed)
    assert responses.chat_chunks([b"event: response.output_text.delta\ndata: {}\n\n"], "m") == []


def test_c_chat_chunks_of_a_native_openai_stream() -> None:
    """OpenAI's own stream: a reasoning item first, a call sent whole in its done event, the usage."""
    def ev(seq: int, data: dict[str, Any]) -> bytes:
        return f"event: {data['type']}\ndata: ".encode() + orjson.dumps({**data, "sequence_number": seq}) + b"\n\n"

    base = {"id": "resp_n1", "object": "response", "created_at": CREATED, "model": "gpt-5", "output": [],
            "tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "status": "in_progress"}
    message = {"type": "message", "id": "msg_n", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Checking the weather.", "annotations": []}]}
    call = {"type": "function_call", "id": "fc_n", "call_id": "call_n", "name": "get_weather",
            "arguments": '{"city":"Oslo"}', "status": "completed"}
    stream = [
        ev(0, {"type": "response.created", "response": base}),
        ev(1, {"type": "response.in_progress", "response": base}),
        ev(2, {"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
        ev(3, {"type": "response.output_item.done", "output_index": 0,
               "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
        ev(4, {"type": "response.output_item.added", "output_index": 1, "item": {**message, "content": []}}),
        ev(5, {"type": "response.content_part.added", "item_id": "msg_n", "output_index": 1, "content_index": 0,
               "part": {"type": "output_text", "text": "", "annotations": []}}),
        ev(6, {"type": "response.output_text.delta", "item_id": "msg_n", "output_index": 1, "content_index": 0,
               "delta": "Checking the", "logprobs": []}),
        ev(7, {"type": "response.output_item.done", "output_index": 1, "item": message}),   # " weather." only here
        ev(8, {"type": "response.output_item.done", "output_index": 2, "item": call}),
        ev(9, {"type": "response.completed", "response": {
            **base, "status": "completed", "output": [message, call],
            "usage": {"input_tokens": 80, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 20,
                      "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 100}}}),
    ]
    cut = [b"".join(stream)[i:i + 50] for i in range(0, len(b"".join(stream)), 50)]
    found = assemble(responses.chat_chunks(cut, "gpt-5"))
    assert found["id"] == "chatcmpl-n1" and found["created"] == CREATED and found["model"] == "gpt-5"
    said = found["choices"][0]
    assert said["message"]["content"] == "Checking the weather."
    assert said["message"]["tool_calls"] == [{"id": "call_n", "type": "function",
                                              "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]
    assert said["finish_reason"] == "tool_calls"
    assert found["usage"] == {"prompt_tokens": 80, "completion_tokens": 20, "total_tokens": 100,
                              "completion_tokens_details": {"reasoning_tokens": 12}}


# ---- (d) the request, in the chat form -------------------------------------------------------------

def test_d_a_string_input() -> None:
    payload = {"model": "claude", "input": "Hello", "instructions": "You are terse.", "max_output_tokens": 64,
               "temperature": 0.3, "top_p": 0.9, "user": "u-1", "stream": True, "store": False,
               "truncation": "disabled", "metadata": {"team": "a"}, "prompt_cache_key": "k",
               "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "low", "summary": "auto"}}
    responses.check(payload)
    assert responses.to_chat(payload, "anthropic") == {
        "model": "claude", "messages": [{"role": "system", "content": "You are terse."},
                                        {"role": "user", "content": "Hello"}],
        "max_tokens": 64, "temperature": 0.3, "top_p": 0.9, "user": "u-1", "metadata": {"team": "a"},
        "reasoning_effort": "low", "stream": True, "stream_options": {"include_usage": True}}
    assert responses.to_chat({"model": "m", "input": "x", "safety_identifier": "hash-1"}, "gemini")["user"] == "hash-1"


def test_d_a_function_call_round_trip() -> None:
    payload: dict[str, Any] = {"model": "claude", "tools": [WEATHER], "tool_choice": "required",
                               "parallel_tool_calls": False}
    payload["input"] = [
        {"role": "user", "content": "Weather in Paris and Lyon?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city":"Lyon"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "21C"}]},
        {"type": "function_call", "call_id": "call_3", "name": "get_weather", "arguments": "{}"},
    ]
    responses.check(payload)
    assert responses.to_chat(payload, "anthropic") == {"model": "claude", "messages": [
        {"role": "user", "content": "Weather in Paris and Lyon?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
    ], "tools": [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                                   "parameters": WEATHER["parameters"]}}],
        "tool_choice": "required", "parallel_tool_calls": False}
    choice = responses.to_chat({**payload, "tool_choice": {"type": "function", "name": "get_weather"}}, "gemini")
    assert choice["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_d_roles_images_files_and_audio() -> None:
    payload = {"model": "m", "input": [
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be kind."}]},
        {"role": "user", "content": [
            {"type": "input_text", "text": "What is in these?"},
            {"type": "input_image", "image_url": PNG_URL, "detail": "auto"},
            {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "high"},
            {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]},
        {"role": "assistant", "content": "Un chat."},
    ]}
    assert responses.to_chat(payload, "gemini")["messages"] == [
        {"role": "developer", "content": "Answer in French."},
        {"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": PNG_URL}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]},
        {"role": "assistant", "content": "Un chat."},
    ]


def test_d_text_format() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    payload = {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "place", "schema": schema,
                                                               "strict": True}, "verbosity": "medium"}}
    assert responses.to_chat(payload, "anthropic")["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}
    assert responses.to_chat({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}},
                             "bedrock")["response_format"] == {"type": "json_object"}
    plain = responses.to_chat({"model": "m", "input": "x", "text": {"format": {"type": "text"}}}, "bedrock")
    assert "response_format" not in plain and "verbosity" not in plain
    assert responses.to_chat({"model": "m", "input": "x", "text": {"verbosity": "low"}}, "gemini")["verbosity"] == "low"


def test_d_what_the_sdk_sends_and_reads_back_with_a_pydantic_format() -> None:
    """`responses.parse(text_format=Model)`: the SDK's own request body, to_chat's reading of it,
    and the SDK's parsing of the answer into the model."""
    class Place(BaseModel):
        city: str
        country: str

    answer = chat('{"city": "Paris", "country": "France"}')
    request: dict[str, Any] = {}

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        request.update(json.loads(http_request.content))
        return httpx2.Response(200, json=responses.response(answer, request))

    found = sdk(handler).responses.parse(model="claude", input=[{"role": "user", "content": "Where is the Louvre?"}],
                                         instructions="Answer as JSON.", text_format=Place)
    assert found.output_parsed == Place(city="Paris", country="France")
    responses.check(request)
    converted = responses.to_chat(request, "anthropic")
    assert converted["messages"] == [{"role": "system", "content": "Answer as JSON."},
                                     {"role": "user", "content": "Where is the Louvre?"}]
    assert converted["response_format"]["type"] == "json_schema"
    assert converted["response_format"]["json_schema"]["name"] == "Place"
    assert converted["response_format"]["json_schema"]["schema"]["required"] == ["city", "country"]
    assert converted["response_format"]["json_schema"]["strict"] is True


# ---- (e) refusals -----------------------------------------------------------------------------------

def refused(payload: dict[str, Any], provider_type: str = "anthropic") -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        responses.check(payload)
        responses.to_chat(payload, provider_type)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize("extra, param", [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"store": True}, "store"),
    ({"background": True}, "background"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"include": ["reasoning.encrypted_content", "file_search_call.results"]}, "include[1]"),
    ({"tools": [WEATHER, {"type": "web_search"}]}, "tools[1]"),
    ({"tools": [{"type": "web_search_preview"}]}, "tools[0]"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0]"),
    ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0]"),
    ({"tools": [{"type": "computer_use_preview", "display_width": 1, "display_height": 1, "environment": "linux"}]},
     "tools[0]"),
    ({"tools": [{"type": "image_generation"}]}, "tools[0]"),
    ({"tools": [{"type": "mcp", "server_label": "x", "server_url": "https://x"}]}, "tools[0]"),
    ({"tools": [{"type": "local_shell"}]}, "tools[0]"),
    ({"tools": [{"type": "custom", "name": "grammar"}]}, "tools[0]"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": [{"id": "msg_1"}]}, "input[0]"),
    ({"input": [{"role": "user", "content": "hi"}, {"type": "web_search_call", "id": "ws", "status": "completed"}]},
     "input[1]"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "what is this?"},
                                             {"type": "input_image", "file_id": "file-1", "detail": "auto"}]}]},
     "input[0].content[1].file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-2"}]}]},
     "input[0].content[0].file_id"),
])
def test_e_what_only_openai_can_answer(extra: dict[str, Any], param: str) -> None:
    payload = {"model": "claude", "input": "hi", **extra}
    assert responses.native_only(payload) == param
    assert not responses.cacheable(payload)
    error = refused(payload)
    assert (error.code, error.param) == ("unsupported_parameter", param)
    assert "(type anthropic)" in error.message


@pytest.mark.parametrize("extra, param", [
    ({"max_tool_calls": 3}, "max_tool_calls"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 5}, "top_logprobs"),
    ({"include": ["message.output_text.logprobs"]}, "include[0]"),
    ({"tools": [{**WEATHER, "defer_loading": True}]}, "tools[0].defer_loading"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]},
     "input[0].content[0].file_url"),
])
def test_e_what_has_no_chat_equivalent(extra: dict[str, Any], param: str) -> None:
    payload = {"model": "claude", "input": "hi", **extra}
    assert responses.native_only(payload) is None
    error = refused(payload, "gemini")
    assert (error.code, error.param) == ("unsupported_parameter", param)


@pytest.mark.parametrize("payload, param", [
    ({"model": "m"}, "input"),
    ({"model": "m", "input": 3}, "input"),
    ({"model": "m", "input": ["hi"]}, "input[0]"),
    ({"input": "hi"}, "model"),
    ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
    ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "m", "input": "hi", "tools": [3]}, "tools[0]"),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "detail": "auto"}]}]},
     "input[0].content[0].image_url"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
     "input[0].content[0]"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
    ({"model": "m", "input": "x", "tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "m", "input": [{"type": "reasoning", "id": "rs", "summary": []}]}, "input"),
])
def test_e_bad_requests(payload: dict[str, Any], param: str) -> None:
    error = refused(payload)
    assert error.code is None and error.param == param


def test_e_cacheable() -> None:
    assert responses.cacheable({"model": "m", "input": "hi", "store": False, "tools": [WEATHER]})
    assert responses.cacheable({"model": "m", "input": [{"role": "user", "content": "hi"}]})
    assert not responses.cacheable({"model": "m", "input": "hi", "store": True})
    assert not responses.cacheable({"model": "m", "input": "hi", "previous_response_id": "resp_1"})


# ---- errors --------------------------------------------------------------------------------------------

def test_errors_are_openais_shape() -> None:
    body = b'{"error": {"message": "Rate limit", "type": "rate_limit_error", "param": null, ' \
        b'"code": "rate_limit_exceeded"}}'
    assert responses.error_body(429, body) is body
    found = orjson.loads(responses.error_body(502, b"<html>Bad gateway</html>"))
    assert found["error"]["message"] == "<html>Bad gateway</html>" and found["error"]["type"] == "server_error"
    assert orjson.loads(responses.error_body(400, b""))["error"]["message"] == "HTTP 400"
