"""Cascade: ask the cheapest target first, check the answer, and escalate to the next when it fails.

Every target is called without streaming (an answer has to be whole to be checked); a streaming
client gets the accepted answer replayed as SSE by the pipeline. Cascade trades time to first
token for cost.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence


from ..pricing import cost_usd
from ..upstream.call import JsonAnswer
from ..upstream.request import UpstreamRequest
from ..upstream.target import Target
from .checks import problem, strip_logprobs, wants_json
from .fallback import first_answer
from .route import Route

# Streaming fields: OpenAI refuses `stream_options` without `stream`.
STREAM_FIELDS = ("stream", "stream_options")


async def cascade(route: Route, targets: Sequence[Target], request: UpstreamRequest) -> JsonAnswer:
    escalate = route.policy.escalate
    payload, record = request.payload, request.record
    body = {k: v for k, v in payload.items() if k not in STREAM_FIELDS}
    added_logprobs = escalate.min_confidence is not None and not payload.get("logprobs")
    if added_logprobs:
        body["logprobs"] = True
    json_wanted = wants_json(payload)

    def check(answer: JsonAnswer) -> str | None:
        why = problem(escalate, json_wanted, answer.data)
        if why is not None:  # paid for and thrown away: worth a figure of its own
            spent = cost_usd(answer.target.pricing, answer.data.get("usage") if isinstance(answer.data.get("usage"), dict) else None)
            record.escalation_cost_usd += spent
        return why

    added = frozenset({"logprobs"}) if added_logprobs else frozenset()
    answer = await first_answer(route, targets, replace(request, payload=body, stream=False, ask_usage=False,
                                                        optional=added), check)
    assert isinstance(answer, JsonAnswer)
    if added_logprobs:
        strip_logprobs(answer.data)
        answer.raw = request.render(answer.data)
    return answer
