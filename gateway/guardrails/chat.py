"""Output rules on chat completions: a JSON answer's choices, and a stream's chunks as they come.

A stream's text deltas go through one `OutputFilter` per choice: what it releases is sent at
once, in the chunk it came in (so text that cannot begin a match arrives chunk for chunk, as
before); what it holds back goes out with a later chunk or the finish chunk. A block ends the
stream: the text before the match, then a finish chunk with `finish_reason: content_filter`,
then `[DONE]`, as providers end an answer their own filter stopped.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Sequence

import orjson

from ..providers.sse import events_of
from .matching import Rule
from .placeholders import Masker, Restorer
from .stream import Fired, OutputFilter, filter_answer

DONE = b"data: [DONE]\n\n"


class ChatGuard:
    """One request's output rules, and what they did to its answer."""

    def __init__(self, rules: Sequence[Rule], masker: Masker | None, restorer: Restorer | None):
        self.rules = rules
        self.masker = masker
        self.restorer = restorer
        self.fired: list[Fired] = []
        self.blocked: str | None = None
        self.changed = False          # something was masked, restored or cut: not the model's answer as given
        self.span: Any = None         # the check's span in the request's trace, while it runs

    def answer(self, completion: dict[str, Any]) -> dict[str, Any]:
        """The completion with each choice's content filtered (the same object when nothing changed);
        a blocked choice ends with `finish_reason: content_filter` and its text up to the match."""
        choices, changed = [], False
        for choice in completion.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str) or not content:
                choices.append(choice)
                continue
            found = filter_answer(self.rules, content, self.masker, self.restorer)
            self.fired += found.fired
            if found.text == content and not found.blocked:
                choices.append(choice)
                continue
            changed = True
            choice = {**choice, "message": {**message, "content": found.text}}
            if found.blocked:
                self.blocked = self.blocked or found.blocked
                choice["finish_reason"] = "content_filter"
            choices.append(choice)
        self.changed = self.changed or changed
        return {**completion, "choices": choices} if changed else completion

    async def stream(self, chunks: AsyncIterator[bytes], legacy: bool = False) -> AsyncIterator[bytes]:
        """A chat stream (OpenAI SSE bytes), filtered as it arrives; `legacy`: a legacy completions
        stream, whose choices carry their text as `text`, not as a `delta`."""
        filters: dict[int, OutputFilter] = {}
        self._given: list[str] = []   # the model's text, and what was sent of it: told apart at the end
        self._sent: list[str] = []
        async for _, data in events_of(chunks):
            if data == b"[DONE]":
                self._collect(filters)
                yield DONE
                return
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = None
            if not isinstance(chunk, dict) or not chunk.get("choices"):
                yield b"data: " + data + b"\n\n"   # the usage chunk, an error event: as they came
                continue
            blocked = self._filter(chunk, filters, legacy)
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            if blocked is not None:
                self._collect(filters)
                text: dict[str, Any] = {"text": ""} if legacy else {"delta": {}}
                stop = {**chunk, "choices": [{"index": blocked, **text, "logprobs": None,
                                              "finish_reason": "content_filter"}]}
                stop.pop("usage", None)
                yield b"data: " + orjson.dumps(stop) + b"\n\n" + DONE
                return
        self._collect(filters)   # the stream ended without [DONE]: the pump says so

    def _filter(self, chunk: dict[str, Any], filters: dict[int, OutputFilter], legacy: bool) -> int | None:
        """Filter a chunk's choices in place; the index of a choice that was blocked, if one was."""
        for choice in chunk["choices"]:
            index = choice.get("index", 0)
            output = filters.get(index)
            if output is None:
                output = filters[index] = OutputFilter(self.rules, masker=self.masker, restorer=self.restorer)
            delta = {} if legacy else choice.get("delta") or {}
            text = choice.get("text") if legacy else delta.get("content")
            released = output.feed(text) if isinstance(text, str) and text else ""
            if choice.get("finish_reason"):
                released += output.end()
            if isinstance(text, str) or released:
                self._given.append(text or "")
                self._sent.append(released)
                if legacy:
                    choice["text"] = released
                else:
                    choice["delta"] = {**delta, "content": released}
            if output.blocked is not None:
                self.blocked, self.changed = output.blocked, True
                choice["finish_reason"] = None
                return index
        return None

    def _collect(self, filters: dict[int, OutputFilter]) -> None:
        for output in filters.values():
            self.fired += output.fired
        if "".join(self._given) != "".join(self._sent):   # held back text came out later: not a change
            self.changed = True
