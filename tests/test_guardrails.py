"""Guardrails through the real gateway: input rules mask or stop a request before anything else
(the provider sees placeholders), output rules mask or stop an answer, JSON or streamed as it
streams, a stopped answer is never cached and a cached one meets the rules at serve time,
placeholders the model echoes are given back, and what fired is counted and logged by name."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from .conftest import base_config, eventually
from .test_metrics import scrape, settled

CARD = "4111 1111 1111 1111"
RULES = {
    "pii": {"kind": "pii", "entities": ["email", "credit_card", "cn_id", "cn_mobile"], "action": "mask"},
    "pii-restore": {"kind": "pii", "entities": ["email"], "action": "mask", "restore": True},
    "no-leaks": {"kind": "pattern", "patterns": ["(?i)internal use only", "sk-[A-Za-z0-9]{20,}"], "action": "block"},
    "topics": {"kind": "pattern", "patterns": ["(?i)\\b(lawsuit|attorney)\\b"], "action": "flag"},
}


def config(upstream: Any, **route: Any) -> dict[str, Any]:
    cfg = base_config(upstream, guardrails=RULES, cache={"cacheable": "always"})
    cfg["routes"] = {"support": {"targets": ["gpt-4o-mini"], "guardrails": route}}
    return cfg


def ask(http: httpx.Client, text: str, **body: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": "support", "messages": [{"role": "user", "content": text}],
                                                   **body})


def streamed(r: httpx.Response) -> tuple[str, list[str | None]]:
    chunks = [orjson.loads(line[6:]) for line in r.text.split("\n") if line.startswith("data: {")]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    return text, [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]


def test_input_rules_mask_what_the_provider_sees(start_gateway, upstream):
    gw = start_gateway(config(upstream, input=["pii"]))
    r = ask(gw.http(), f"my card is {CARD}, mail jo@example.com, 手机 13812345678")
    assert r.status_code == 200
    sent = upstream.seen[-1].body["messages"][0]["content"]
    assert sent == "my card is <CREDIT_CARD_1>, mail <EMAIL_1>, 手机 <CN_MOBILE_1>"
    assert CARD not in str(upstream.seen[-1].body)


def test_an_input_rule_that_blocks_answers_400_content_filter(start_gateway, upstream):
    gw = start_gateway(config(upstream, input=["no-leaks"]))
    r = ask(gw.http(), "this memo is INTERNAL USE ONLY")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "content_filter" and "no-leaks" in error["message"] and error["param"] == "messages"
    assert "INTERNAL" not in error["message"] and upstream.calls == 0


def test_embeddings_inputs_are_masked_or_stopped_before_the_provider_sees_them(start_gateway, upstream):
    gw = start_gateway(config(upstream, input=["no-leaks", "pii"], output=["no-leaks"]))
    r = gw.http().post("/v1/embeddings", json={"model": "support", "input": [
        "mail jo@example.com", [1, 2, 3], "no secrets here"]})
    assert r.status_code == 200 and len(r.json()["data"]) == 3
    assert upstream.seen[-1].body["input"] == ["mail <EMAIL_1>", [1, 2, 3], "no secrets here"]
    r = gw.http().post("/v1/embeddings", json={"model": "support", "input": "card " + CARD})
    assert r.status_code == 200 and upstream.seen[-1].body["input"] in ("card <CREDIT_CARD_1>", ["card <CREDIT_CARD_1>"])
    calls = upstream.calls
    r = gw.http().post("/v1/embeddings", json={"model": "support", "input": ["fine", "INTERNAL USE ONLY memo"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter" and upstream.calls == calls
    assert r.json()["error"]["param"] == "input"   # where an embeddings request's text is


def test_a_json_answer_is_masked_or_cut(start_gateway, upstream):
    gw = start_gateway(config(upstream, output=["no-leaks", "pii"]))
    upstream.set(reply=f"Your card {CARD} is on file.")
    answer = ask(gw.http(), "card?").json()["choices"][0]
    assert answer["message"]["content"] == "Your card <CREDIT_CARD_1> is on file." and answer["finish_reason"] == "stop"
    upstream.set(reply="Sure, the roadmap (internal use only) says Q3.")
    answer = ask(gw.http(), "roadmap?").json()["choices"][0]
    assert answer["message"]["content"] == "Sure, the roadmap (" and answer["finish_reason"] == "content_filter"


@pytest.mark.parametrize("words", [1, 2, 3])
def test_a_stream_is_stopped_before_the_match_reaches_the_client(start_gateway, upstream, words):
    gw = start_gateway(config(upstream, output=["no-leaks"]))
    upstream.set(reply="The plan is internal use only and secret.", chunk_words=words)
    r = ask(gw.http(), "plan?", stream=True)
    text, finishes = streamed(r)
    assert text == "The plan is " and finishes[-1] == "content_filter"
    assert "internal" not in r.text.lower() and r.text.endswith("data: [DONE]\n\n")


@pytest.mark.parametrize("chars", [1, 3, 7])
def test_matches_split_at_every_offset_are_masked_or_stopped_exactly(start_gateway, upstream, chars):
    """The provider streams `chars` characters a chunk; a pad before the answer moves the card number
    and the banned phrase across every offset of a chunk boundary."""
    gw = start_gateway(config(upstream, output=["no-leaks", "pii"]))
    for pad in range(chars):
        upstream.set(reply="." * pad + f"Card {CARD} and the INTERNAL use only part.", chunk_chars=chars)
        r = ask(gw.http(), f"pad {pad}", stream=True)
        text, finishes = streamed(r)
        assert text == "." * pad + "Card <CREDIT_CARD_1> and the " and finishes[-1] == "content_filter", (chars, pad)
        assert "1111" not in r.text and "INTERNAL" not in r.text and r.text.endswith("data: [DONE]\n\n")


def test_a_stream_is_masked_as_it_streams_and_unmatched_text_is_not_held(start_gateway, upstream):
    gw = start_gateway(config(upstream, output=["pii"]))
    upstream.set(reply=f"Card {CARD} saved. Thanks for waiting, have a good day.")
    r = ask(gw.http(), "x", stream=True)
    text, finishes = streamed(r)
    assert text == "Card <CREDIT_CARD_1> saved. Thanks for waiting, have a good day." and finishes[-1] == "stop"
    upstream.set(reply="Nothing to hide in this answer at all")
    plain = ask(start_gateway(base_config(upstream)).http(), "x", stream=True, model="gpt-4o-mini")
    guarded = ask(gw.http(), "x", stream=True)
    assert streamed(guarded)[0] == streamed(plain)[0]
    count = lambda r: sum(1 for line in r.text.split("\n") if '"content":"' in line)  # noqa: E731
    assert count(guarded) >= count(plain) - 2   # chunk for chunk, give or take what a rule's tail holds


def test_placeholders_the_model_echoes_are_given_back(start_gateway, upstream):
    gw = start_gateway(config(upstream, input=["pii-restore"], output=["pii-restore"]))
    for stream in (False, True):
        r = ask(gw.http(), "send it to jo@example.com please", stream=stream)
        text = streamed(r)[0] if stream else r.json()["choices"][0]["message"]["content"]
        assert text == "Echo: send it to jo@example.com please"        # the fake echoes the prompt it got
        assert upstream.seen[-1].body["messages"][0]["content"] == "send it to <EMAIL_1> please"


def test_a_blocked_answer_is_not_cached_and_a_cached_one_meets_the_rules_when_served(start_gateway, upstream):
    gw = start_gateway(config(upstream, output=["no-leaks", "pii"]))
    upstream.set(reply="internal use only")
    assert ask(gw.http(), "same question").json()["choices"][0]["finish_reason"] == "content_filter"
    assert ask(gw.http(), "same question").headers["x-gateway-cache"] == "miss" and upstream.calls == 2
    upstream.set(reply=f"card {CARD}")
    first = ask(gw.http(), "card question")
    assert eventually(lambda: ask(gw.http(), "card question").headers["x-gateway-cache"] == "hit-exact")
    hit = ask(gw.http(), "card question")
    assert hit.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"] \
        == "card <CREDIT_CARD_1>"


def test_what_fired_is_counted_and_never_what_it_matched(start_gateway, upstream):
    gw = start_gateway(config(upstream, input=["pii", "topics"], output=["no-leaks"]))
    ask(gw.http(), "my attorney has jo@example.com")
    upstream.set(reply="internal use only")
    ask(gw.http(), "again")
    m = settled(gw, 2)
    events = "gateway_guardrail_events_total"
    assert m.value(events, rule="pii", stage="input", action="mask") == 1
    assert m.value(events, rule="topics", stage="input", action="flag") == 1
    assert m.value(events, rule="no-leaks", stage="output", action="block") == 1
    assert "jo@example.com" not in scrape(gw).text


def test_check_config_refuses_a_pattern_that_matches_nothing_or_everything(tmp_path):
    from .test_config import check_config

    cfg = base_config_dict()
    cfg["guardrails"] = {"bad": {"kind": "pattern", "patterns": ["(?i)x*"], "action": "block"},
                         "broken": {"kind": "pattern", "patterns": ["(unclosed"], "action": "flag"}}
    path = tmp_path / "gateway.yaml"
    path.write_text(__import__("yaml").safe_dump(cfg, sort_keys=False))
    result = check_config(path)
    assert result.returncode == 1
    assert "guardrail 'bad'" in result.stderr and "empty string" in result.stderr
    assert "guardrail 'broken'" in result.stderr and "not a valid regular expression" in result.stderr


def base_config_dict() -> dict[str, Any]:
    return {"providers": {"p": {"base_url": "http://127.0.0.1:9/v1"}}, "models": {"m": {"provider": "p"}}}


# ---- Anthropic's Messages API in ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def claude_api():
    from .fake_anthropic import FakeAnthropic

    fake = FakeAnthropic(name="anthropic").start()
    yield fake
    fake.stop()


def messages_config(upstream: Any, claude_api: Any) -> dict[str, Any]:
    from .fake_anthropic import API_KEY

    cfg = config(upstream, input=["pii"], output=["no-leaks", "pii"])
    cfg["providers"]["anthropic"] = {"type": "anthropic", "base_url": claude_api.url, "api_key": API_KEY}
    cfg["models"]["claude"] = {"provider": "anthropic", "name": "claude-sonnet-4-5"}
    cfg["routes"]["native"] = {"targets": ["claude"], "guardrails": {"input": ["pii"], "output": ["no-leaks", "pii"]}}
    return cfg


def test_a_messages_request_is_masked_system_and_all(start_gateway, upstream, claude_api):
    import anthropic

    claude_api.reset()
    gw = start_gateway(messages_config(upstream, claude_api))
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-x", max_retries=0)
    client.messages.create(model="support", max_tokens=50, system="The customer is jo@example.com",
                           messages=[{"role": "user", "content": f"charge {CARD}"}])
    sent = upstream.seen[-1].body["messages"]   # translated to chat completions
    assert sent == [{"role": "system", "content": "The customer is <EMAIL_1>"},
                    {"role": "user", "content": "charge <CREDIT_CARD_1>"}]
    client.messages.create(model="native", max_tokens=50, system="The customer is jo@example.com",
                           messages=[{"role": "user", "content": f"charge {CARD}"}])
    native = claude_api.seen[-1].body   # as it came, masked
    assert native["system"] == "The customer is <EMAIL_1>" and native["messages"][0]["content"] == "charge <CREDIT_CARD_1>"


@pytest.mark.parametrize("route", ["support", "native"])
def test_a_messages_answer_is_masked_and_a_stream_stopped(start_gateway, upstream, claude_api, route):
    import anthropic

    claude_api.reset()
    gw = start_gateway(messages_config(upstream, claude_api))
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-x", max_retries=0)
    for fake in (upstream, claude_api):
        fake.set(reply=f"Your card {CARD} is on file.")
    answer = client.messages.create(model=route, max_tokens=50, messages=[{"role": "user", "content": "card?"}])
    assert answer.content[0].text == "Your card <CREDIT_CARD_1> is on file."
    for fake in (upstream, claude_api):
        fake.set(reply="The plan is internal use only and secret.")
    with client.messages.stream(model=route, max_tokens=50, messages=[{"role": "user", "content": "plan?"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "The plan is " and final.stop_reason == "refusal"


# ---- the Responses API in ----------------------------------------------------------------------------

def test_a_responses_request_is_masked_and_its_answer_filtered(start_gateway, upstream):
    gw = start_gateway(config(upstream, input=["pii"], output=["no-leaks", "pii"]))
    client = gw.client()
    client.responses.create(model="support", instructions="The customer is jo@example.com",
                            input=[{"role": "user", "content": [{"type": "input_text", "text": f"charge {CARD}"}]}])
    sent = upstream.seen[-1].body   # natively, to the fake's /v1/responses
    assert upstream.seen[-1].path.endswith("/responses")
    assert sent["instructions"] == "The customer is <EMAIL_1>"
    assert sent["input"][0]["content"][0] == {"type": "input_text", "text": "charge <CREDIT_CARD_1>"}
    upstream.set(reply=f"Your card {CARD} is on file.")
    assert client.responses.create(model="support", input="card?").output_text == "Your card <CREDIT_CARD_1> is on file."
    upstream.set(reply="The plan is internal use only and secret.")
    events = list(client.responses.create(model="support", input="plan?", stream=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "The plan is " and events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "content_filter"
