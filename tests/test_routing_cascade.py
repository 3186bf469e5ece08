"""Cascade: the cheapest target first, escalation when its answer fails a check, and not otherwise."""

from __future__ import annotations

import httpx
import orjson
import pytest

from .conftest import eventually
from .routing_fakes import MESSAGES, chat, fakes, fakes_started, routing_config, tap  # noqa: F401

CASCADE = {"support": {
    "strategy": "cascade",
    "targets": ["cheap-model", "mid-model", "strong-model"],
    "escalate_when": {"finish_reason": ["length"], "min_confidence": 0.70, "invalid_json": True},
}}


@pytest.fixture
def gw(start_gateway, fakes):
    return start_gateway(routing_config(fakes, CASCADE))


def finished(records, n: int = 1):
    assert eventually(lambda: len(records.records) == n)
    return records.records[-1]


def test_a_good_answer_is_accepted_from_the_cheapest(gw, fakes):
    records = tap(gw)
    raw, answer = chat(gw, "support")
    assert raw.headers["x-gateway-target"] == "cheap-model"
    assert answer.choices[0].message.content == "Echo: How long does a refund take?"
    assert answer.choices[0].logprobs is None  # asked for by the gateway, not by the client
    assert b'"logprobs":null' in raw.content and b'"token"' not in raw.content
    sent = fakes["cheap"].seen[0].body
    assert sent["logprobs"] is True and "stream" not in sent and "stream_options" not in sent
    assert (fakes["mid"].calls, fakes["strong"].calls) == (0, 0)
    record = finished(records)
    assert record.escalations == []
    assert record.baseline_model == "strong-model"  # the strongest was not needed: counted as saved


@pytest.mark.parametrize("knobs, kw, reason", [
    ({"finish_reason": "length"}, {}, "finish_reason:length"),
    ({"logprob": -2.0}, {}, "low_confidence"),   # mean token probability e^-2 = 0.14 < 0.70
    ({"reply": "Sure! Here it is: {oops"}, {"response_format": {"type": "json_object"}}, "invalid_json"),
    ({"reply": ""}, {}, "empty"),
])
def test_escalates_when_the_answer_fails_a_check(gw, fakes, knobs, kw, reason):
    records = tap(gw)
    fakes["cheap"].set(**knobs)
    fakes["mid"].set(reply='{"days": 5}')
    raw, answer = chat(gw, "support", **kw)
    assert raw.headers["x-gateway-target"] == "mid-model"
    assert answer.choices[0].message.content == '{"days": 5}'
    assert answer.choices[0].logprobs is None
    assert (fakes["cheap"].calls, fakes["mid"].calls, fakes["strong"].calls) == (1, 1, 0)
    record = finished(records)
    assert len(record.escalations) == 1
    assert record.escalations == [f"cheap-model:{reason}"]
    assert record.escalation_cost_usd > 0
    assert record.baseline_model == "strong-model"
    assert record.fallbacks == []


def test_text_that_is_not_json_is_fine_when_json_was_not_asked_for(gw, fakes):
    fakes["cheap"].set(reply="five days")
    raw, answer = chat(gw, "support")
    assert raw.headers["x-gateway-target"] == "cheap-model" and answer.choices[0].message.content == "five days"


def test_the_last_target_answers_even_when_it_fails_the_check_too(gw, fakes):
    records = tap(gw)
    for fake in fakes.values():
        fake.set(finish_reason="length")
    raw, answer = chat(gw, "support")
    assert raw.headers["x-gateway-target"] == "strong-model"
    assert answer.choices[0].finish_reason == "length"
    record = finished(records)
    assert len(record.escalations) == 2 and record.baseline_model is None


def test_logprobs_the_client_asked_for_are_kept(gw, fakes):
    raw, answer = chat(gw, "support", logprobs=True)
    assert raw.headers["x-gateway-target"] == "cheap-model"
    assert [t.token for t in answer.choices[0].logprobs.content] == ["Echo:", "How", "long", "does", "a", "refund", "take?"]


def test_a_streaming_client_gets_the_accepted_answer_as_sse(gw, fakes):
    fakes["cheap"].set(finish_reason="length")
    client = gw.client()
    stream = client.chat.completions.create(model="support", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: How long does a refund take?"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    for fake in ("cheap", "mid"):
        sent = fakes[fake].seen[0].body
        assert "stream" not in sent and "stream_options" not in sent  # every step is a whole answer
    with httpx.Client(base_url=gw.url) as http:
        r = http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-gateway-target"] == "mid-model"
    events = [line[6:] for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all("logprobs" not in orjson.loads(e)["choices"][0] or orjson.loads(e)["choices"][0]["logprobs"] is None
               for e in events[:-1] if orjson.loads(e)["choices"])


def test_a_failing_target_is_a_fallback_not_an_escalation(gw, fakes):
    records = tap(gw)
    fakes["cheap"].set(error_status=503)
    raw, _ = chat(gw, "support")
    assert raw.headers["x-gateway-target"] == "mid-model"
    record = finished(records)
    assert record.fallbacks == ["503"] and record.escalations == []
    assert record.upstream_errors == [("cheap", "http_5xx")]


def test_a_rejected_answer_beats_an_error_from_the_rest(gw, fakes):
    fakes["cheap"].set(finish_reason="length", reply="half an ans")
    fakes["mid"].set(error_status=500)
    fakes["strong"].set(error_status=500)
    raw, answer = chat(gw, "support")
    assert raw.headers["x-gateway-target"] == "cheap-model"
    assert answer.choices[0].message.content == "half an ans"


def test_a_client_error_passes_through_without_escalation(gw, fakes):
    fakes["cheap"].set(error_status=400)
    with httpx.Client(base_url=gw.url) as http:
        r = http.post("/v1/chat/completions", json={"model": "support", "messages": MESSAGES})
    assert r.status_code == 400 and "fake upstream error 400" in r.json()["error"]["message"]
    assert (fakes["mid"].calls, fakes["strong"].calls) == (0, 0)
