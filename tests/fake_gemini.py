"""A fake Gemini API (`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`),
written from Google's public API reference and strict where the real API is: it refuses a request
without an API key (403 PERMISSION_DENIED) or with a wrong one (400 INVALID_ARGUMENT, reason
API_KEY_INVALID), an unknown model (404), fields the API does not know (at any level: Google parses
the body as a proto), roles other than user and model, contents or parts that are empty, a part
with no data or two, a functionCall outside a model content or a functionResponse outside a user
content, a function response turn that does not follow a function call turn or answers a different
number of calls, function names or calling modes it does not allow, generationConfig values out of
range or of the wrong type, responseJsonSchema without the JSON MIME type, and, for Gemini 3 models,
a step's first function call in the current turn without the thought signature it was given.
Every refusal is in Google's shape: `{"error": {"code", "message", "status", "details"?}}`.

It answers the way the API does: candidates (candidateCount of them, `index` left out when 0 as
proto3 JSON does) with text parts (the last user text echoed, JSON from the schema when
responseMimeType asks for it, cut at maxOutputTokens with MAX_TOKENS and at a stop sequence), or
functionCall parts (args filled from the declaration's schema, a thoughtSignature on the first),
logprobsResult when asked, and usageMetadata with cachedContentTokenCount and thoughtsTokenCount
(knobs). A finishReason knob (SAFETY, say) and a blocked prompt (promptFeedback.blockReason, no
candidates). Streams with `alt=sse` are `data:` events, one GenerateContentResponse each, paced by
a knob, the finishReason and the full usage in the last; knobs break the connection, end without
the finish, or send an error event mid-stream. Error knobs answer each of Google's statuses.
(Without `alt=sse` Google streams one JSON array; the gateway never asks for that, and the fake
streams SSE either way.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import os
import re
from dataclasses import dataclass, replace
from typing import Any

import orjson
from aiohttp import web

from .fake_upstream import FakeUpstream, Seen, placeholder

API_KEY = "AIza-fake-gemini-key"

STATUS_CODES = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "UNAUTHENTICATED": 401,
                "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500,
                "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}

REQUEST_FIELDS = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings",
                  "cachedContent"}
CONTENT_FIELDS = {"role", "parts"}
DATA_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
               "codeExecutionResult"}
PART_FIELDS = DATA_FIELDS | {"thought", "thoughtSignature", "videoMetadata"}
NUMBERS = {"temperature": (0.0, 2.0), "topP": (0.0, 1.0), "presencePenalty": (-2.0, 2.0),
           "frequencyPenalty": (-2.0, 2.0)}
INTEGERS = {"topK": (1, None), "candidateCount": (1, 8), "maxOutputTokens": (1, None), "seed": (None, None),
            "logprobs": (0, 20)}
CONFIG_FIELDS = set(NUMBERS) | set(INTEGERS) | {"stopSequences", "responseMimeType", "responseSchema",
                                                "responseJsonSchema", "responseLogprobs", "thinkingConfig"}
MIME_TYPES = {"text/plain", "application/json", "text/x.enum"}
THINKING_FIELDS = {"thinkingBudget", "thinkingLevel", "includeThoughts"}
DECLARATION_FIELDS = {"name", "description", "parameters", "parametersJsonSchema", "response",
                      "responseJsonSchema", "behavior"}
FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")
MODES = {"AUTO", "ANY", "NONE", "VALIDATED"}
# What Google documents for history whose signatures were lost.
DUMMY_SIGNATURES = {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}


@dataclass
class Knobs:
    latency_s: float = 0.0
    chunk_delay_s: float = 0.0          # between stream events
    chunk_words: int = 1                # words of text per stream event
    error_status: str | None = None     # answer with this Google status (RESOURCE_EXHAUSTED, say)...
    error_times: int = -1               # ...for the next N requests (-1: always)
    invalid_json: bool = False          # 200 with a body that is not JSON
    reply: str | None = None            # the answer's text; default: "Echo: " and the last user text
    finish_reason: str | None = None    # force one (SAFETY, RECITATION...)
    block_reason: str | None = None     # the prompt is blocked: promptFeedback, no candidates
    function_calls: int = 1             # functionCall parts in an answer that calls a function
    cached_tokens: int = 0              # usageMetadata.cachedContentTokenCount
    thoughts_tokens: int = 0            # usageMetadata.thoughtsTokenCount
    logprob: float = -0.25              # each token's logProbability when logprobs are asked for
    broken_after: int = -1              # streams: drop the connection after N events
    no_finish_after: int = -1           # streams: end cleanly after N events, without the finish
    stream_error_after: int = -1        # streams: an error event after N events


class Refused(Exception):
    def __init__(self, message: str, status: str = "INVALID_ARGUMENT", details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.details = details


class FakeGemini(FakeUpstream):
    """The OpenAI fake's server (thread, loop, counts, `seen`), answering Gemini's API instead.
    `seen[i].path` has the query string (`?alt=sse`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.knobs = Knobs()  # type: ignore[assignment]
        self._responses = itertools.count(1)
        self.signatures: set[str] = set()   # the thought signatures it gave, which it takes back

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        super().reset()
        self.knobs = Knobs()  # type: ignore[assignment]

    def set(self, **knobs: Any) -> None:
        self.knobs = replace(self.knobs, **knobs)  # type: ignore[arg-type]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{version}/models/{method}", self.models)
        return app

    async def models(self, request: web.Request) -> web.StreamResponse:
        generation = self._generation
        self._track(+1, generation)
        try:
            return await self._models(request)
        finally:
            self._track(-1, generation)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.seen.append(Seen(request.path_qs, body if isinstance(body, dict) else {}, headers))
        knobs: Knobs = self.knobs  # type: ignore[assignment]
        if knobs.latency_s:
            await asyncio.sleep(knobs.latency_s)
        model, _, method = request.match_info["method"].partition(":")
        try:
            key = headers.get("x-goog-api-key") or request.query.get("key")
            if not key:
                raise Refused("Method doesn't allow unregistered callers (callers without established identity). "
                              "Please use API Key or other form of API consumer identity to call this API.",
                              "PERMISSION_DENIED")
            if key != API_KEY:
                raise Refused("API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT",
                              [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                "domain": "googleapis.com"}])
            if request.match_info["version"] not in ("v1beta", "v1") or \
                    method not in ("generateContent", "streamGenerateContent"):
                raise Refused(f"The requested URL {request.path} was not found on this server.", "NOT_FOUND")
            if not model.startswith("gemini-"):
                raise Refused(f"models/{model} is not found for API version {request.match_info['version']}, "
                              "or is not supported for generateContent.", "NOT_FOUND")
            if not isinstance(body, dict):
                raise Refused("Invalid JSON payload received. Expected an object.")
            check(body, model, self.signatures)
        except Refused as exc:
            return error(exc.status, str(exc), exc.details)
        if knobs.error_status and knobs.error_times != 0:
            if knobs.error_times > 0:
                self.set(error_times=knobs.error_times - 1)
            return error(knobs.error_status, f"fake {knobs.error_status}")
        if knobs.invalid_json:
            return web.Response(body=b"<html>not json</html>", content_type="application/json")
        answer = self.answer(body, model, knobs)
        if method == "streamGenerateContent":
            return await self.stream(request, answer, knobs)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    # ---- the answer -------------------------------------------------------------------------------

    def answer(self, body: dict[str, Any], model: str, knobs: Knobs) -> dict[str, Any]:
        config = body.get("generationConfig") or {}
        prompt = prompt_tokens(body)
        cached = min(knobs.cached_tokens, prompt)
        head = {"modelVersion": model, "responseId": f"fake-gemini-{next(self._responses):06d}"}
        if knobs.block_reason:
            return {"promptFeedback": {"blockReason": knobs.block_reason},
                    "usageMetadata": usage(prompt, 0, cached, 0), **head}
        function = function_to_call(body)
        n = config.get("candidateCount", 1)
        candidates, spoken = [], 0
        for index in range(n):
            if function is not None:
                parts = self.function_calls(function, knobs)
                finish = "STOP"
                spoken += sum(len(orjson.dumps(p["functionCall"]).split(b",")) for p in parts)
            else:
                text, finish = answer_text(body, knobs)
                parts = [{"text": text}]
                if model.startswith("gemini-3"):   # an answer without calls: its signature on the last part
                    parts[0]["thoughtSignature"] = base64.b64encode(os.urandom(24)).decode()
                spoken += len(text.split())
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts},
                                         "finishReason": knobs.finish_reason or finish}
            if knobs.finish_reason not in (None, "STOP", "MAX_TOKENS"):
                del candidate["content"]   # a blocked answer has none
                candidate["safetyRatings"] = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH",
                                               "blocked": True}]
            if config.get("responseLogprobs") and function is None and "content" in candidate:
                candidate["logprobsResult"] = logprobs_result(parts[0]["text"], config.get("logprobs", 0),
                                                              knobs.logprob)
                candidate["avgLogprobs"] = knobs.logprob
            if index:
                candidate["index"] = index   # proto3 JSON leaves a 0 out
            candidates.append(candidate)
        return {"candidates": candidates, "usageMetadata": usage(prompt, spoken, cached, knobs.thoughts_tokens), **head}

    def function_calls(self, function: dict[str, Any], knobs: Knobs) -> list[dict[str, Any]]:
        schema = function.get("parametersJsonSchema") or function.get("parameters") or {"type": "object"}
        parts: list[dict[str, Any]] = [{"functionCall": {"name": function["name"], "args": placeholder(schema) or {}}}
                                       for _ in range(knobs.function_calls)]
        # Standard base64 with + and /, as Google's bytes fields are written.
        signature = base64.b64encode(b"\xfb\xff\xbf" + os.urandom(31)).decode()
        self.signatures.add(signature)
        parts[0]["thoughtSignature"] = signature
        return parts

    async def stream(self, request: web.Request, answer: dict[str, Any], knobs: Knobs) -> web.StreamResponse:
        """The answer as Gemini streams it with `alt=sse` (the only way the gateway asks): a `data:`
        event per piece."""
        pieces = stream_pieces(answer, knobs.chunk_words)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        with self._client_may_leave():
            for i, piece in enumerate(pieces):
                if i == knobs.broken_after:
                    request.transport.close()
                    return resp
                if i == knobs.no_finish_after:
                    await resp.write_eof()
                    return resp
                if i == knobs.stream_error_after:
                    failure = {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                                         "status": "UNAVAILABLE"}}
                    await resp.write(b"data: " + orjson.dumps(failure) + b"\r\n\r\n")
                    await resp.write_eof()
                    return resp
                if i and knobs.chunk_delay_s:
                    await asyncio.sleep(knobs.chunk_delay_s)
                await resp.write(b"data: " + orjson.dumps(piece) + b"\r\n\r\n")
            await resp.write_eof()
        return resp


def stream_pieces(answer: dict[str, Any], words: int) -> list[dict[str, Any]]:
    """A whole answer in the pieces a stream sends: text a few words at a time (each candidate's in
    the same events), function calls whole; the finishReason and the full usage in the last event,
    the prompt's count in the others."""
    head = {k: answer[k] for k in ("modelVersion", "responseId")}
    usage_so_far = {k: v for k, v in answer["usageMetadata"].items() if k in ("promptTokenCount",)}
    if "candidates" not in answer:
        return [{**answer}]
    split = []
    for candidate in answer["candidates"]:
        parts = (candidate.get("content") or {}).get("parts") or []
        if parts and "text" in parts[0]:
            found = re.findall(r"\S+\s*|\s+", parts[0]["text"]) or [""]
            split.append([[{"text": "".join(found[i:i + words])}] for i in range(0, len(found), words)])
            if "thoughtSignature" in parts[0]:   # in an event of its own, after the text
                split[-1].append([{"thoughtSignature": parts[0]["thoughtSignature"]}])
        else:
            split.append([parts])
    count = max(len(s) for s in split)
    out = []
    for step in range(count):
        candidates = []
        for c, candidate in enumerate(answer["candidates"]):
            if step >= len(split[c]):
                continue
            piece: dict[str, Any] = {"content": {"role": "model", "parts": split[c][step]}} if split[c][step] else {}
            if "index" in candidate:
                piece["index"] = candidate["index"]
            if step == len(split[c]) - 1:
                piece["finishReason"] = candidate["finishReason"]
                for key in ("safetyRatings",):
                    if key in candidate:
                        piece[key] = candidate[key]
            if "logprobsResult" in candidate:
                piece["logprobsResult"] = logprobs_result(
                    "".join(p.get("text", "") for p in split[c][step]), 0, candidate["avgLogprobs"])
            candidates.append(piece)
        last = step == count - 1
        out.append({"candidates": candidates, "usageMetadata": answer["usageMetadata"] if last else usage_so_far,
                    **head})
    return out


def error(status: str, message: str, details: list[dict[str, Any]] | None = None) -> web.Response:
    code = STATUS_CODES.get(status, 500)
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if status == "RESOURCE_EXHAUSTED":
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    if details:
        body["details"] = details
    return web.Response(body=orjson.dumps({"error": body}), status=code, content_type="application/json")


def usage(prompt: int, candidates: int, cached: int, thoughts: int) -> dict[str, Any]:
    out = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
           "totalTokenCount": prompt + candidates + thoughts}
    if cached:
        out["cachedContentTokenCount"] = cached
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    return out


def prompt_tokens(body: dict[str, Any]) -> int:
    contents = list(body.get("contents") or ())
    if body.get("systemInstruction"):
        contents.append(body["systemInstruction"])
    words = 0
    for content in contents:
        words += 3
        for part in content.get("parts") or ():
            if "text" in part:
                words += len(part["text"].split())
            elif "inlineData" in part or "fileData" in part:
                words += 258   # what an image costs Gemini
            else:
                words += len(orjson.dumps(part).split(b","))
    return words


def logprobs_result(text: str, top: int, logprob: float) -> dict[str, Any]:
    tokens = re.findall(r"\S+\s*", text)
    return {"chosenCandidates": [{"token": t, "logProbability": logprob} for t in tokens],
            "topCandidates": [{"candidates": [{"token": t + "~" * k, "logProbability": logprob - k}
                                              for k in range(top)]} for t in tokens]}


def last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body["contents"]):
        texts = [p["text"] for p in content["parts"] if "text" in p]
        if content.get("role", "user") == "user" and texts:
            return " ".join(texts)
    return ""


def answer_text(body: dict[str, Any], knobs: Knobs) -> tuple[str, str]:
    """The text and its finishReason."""
    config = body.get("generationConfig") or {}
    last = body["contents"][-1]
    results = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
    if knobs.reply is not None:
        text = knobs.reply
    elif results:
        text = "Result: " + json.dumps([r["response"] for r in results], sort_keys=True)
    else:
        text = "Echo: " + last_user_text(body)
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        return json.dumps(placeholder(schema) if schema else {"answer": text}), "STOP"
    for stop in config.get("stopSequences") or ():
        if stop in text:
            return text[:text.index(stop)], "STOP"
    words = text.split(" ")
    limit = config.get("maxOutputTokens")
    if limit is not None and len(words) > limit:
        return " ".join(words[:limit]), "MAX_TOKENS"
    return text, "STOP"


def function_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The declaration the answer calls, or None for text. AUTO and VALIDATED call the first function
    unless the last content gives a function's result; ANY always calls (the first allowed)."""
    declarations = [d for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()]
    if not declarations:
        return None
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = config.get("mode", "AUTO")
    if mode == "NONE":
        return None
    allowed = config.get("allowedFunctionNames")
    if allowed:
        declarations = [d for d in declarations if d["name"] in allowed]
    answered = any("functionResponse" in p for p in body["contents"][-1]["parts"])
    if answered and mode != "ANY":
        return None
    return declarations[0]


# ---- what the API refuses ---------------------------------------------------------------------------

def unknown(fields: Any, allowed: set[str], where: str) -> None:
    for name in fields:
        if name not in allowed:
            at = f" at '{where}'" if where else ""
            raise Refused(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def check(body: dict[str, Any], model: str, signatures: set[str]) -> None:
    unknown(body, REQUEST_FIELDS, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise Refused("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        check_content(content, f"contents[{i}]")
    check_turns(contents)
    if model.startswith("gemini-3"):
        check_signatures(contents, signatures)
    if "systemInstruction" in body:
        system = body["systemInstruction"]
        check_content(system, "system_instruction")
        if any(set(p) - {"text"} for p in system["parts"]):
            raise Refused("* GenerateContentRequest.system_instruction: only text parts are allowed")
    declared = check_tools(body.get("tools"))
    check_tool_config(body.get("toolConfig"), declared)
    check_config(body.get("generationConfig"))


def check_content(content: Any, where: str) -> None:
    if not isinstance(content, dict):
        raise Refused(f"Invalid value at '{where}' (type.googleapis.com/google.ai.generativelanguage.v1beta.Content)")
    unknown(content, CONTENT_FIELDS, where)
    role = content.get("role", "user")
    if role not in ("user", "model") and where != "system_instruction":
        raise Refused(f"Please use a valid role: user, model. (role '{role}' at {where})")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise Refused(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for j, part in enumerate(parts):
        check_part(part, role, f"{where}.parts[{j}]")


def check_part(part: Any, role: str, where: str) -> None:
    if not isinstance(part, dict):
        raise Refused(f"Invalid value at '{where}' (type.googleapis.com/google.ai.generativelanguage.v1beta.Part)")
    unknown(part, PART_FIELDS, where)
    data = [name for name in part if name in DATA_FIELDS]
    if len(data) != 1:
        raise Refused(f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized "
                      "field")
    kind = data[0]
    value = part[kind]
    if kind == "text" and not isinstance(value, str):
        raise Refused(f"Invalid value at '{where}.text' (TYPE_STRING)")
    if kind == "text" and not value:
        raise Refused("Unable to submit request because it has an empty text parameter. Add a value to the "
                      "parameter and try again.")
    if kind == "inlineData":
        unknown(value, {"mimeType", "data"}, f"{where}.inline_data")
        if not isinstance(value.get("mimeType"), str) or not value["mimeType"]:
            raise Refused(f"* GenerateContentRequest.{where}.inline_data.mime_type: mime_type is not specified")
        try:
            base64.b64decode(value.get("data") or "", validate=True)
        except (binascii.Error, ValueError):
            raise Refused(f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed") from None
    if kind == "fileData":
        unknown(value, {"mimeType", "fileUri"}, f"{where}.file_data")
        if not isinstance(value.get("fileUri"), str) or not value["fileUri"]:
            raise Refused(f"* GenerateContentRequest.{where}.file_data.file_uri: file_uri is not specified")
    if kind == "functionCall":
        unknown(value, {"id", "name", "args"}, f"{where}.function_call")
        if role != "model":
            raise Refused("Please ensure that function call parts are only in model contents.")
        if not isinstance(value.get("name"), str) or not isinstance(value.get("args", {}), dict):
            raise Refused(f"* GenerateContentRequest.{where}.function_call.name: Name cannot be empty.")
    if kind == "functionResponse":
        unknown(value, {"id", "name", "response", "parts", "willContinue", "scheduling"}, f"{where}.function_response")
        if role != "user":
            raise Refused("Please ensure that function response parts are only in user contents.")
        if not isinstance(value.get("name"), str) or not value["name"]:
            raise Refused(f"* GenerateContentRequest.{where}.function_response.name: Name cannot be empty.")
        if not isinstance(value.get("response"), dict):
            raise Refused(f"Invalid value at '{where}.function_response.response' (type.googleapis.com/"
                          "google.protobuf.Struct)")


def calls_in(content: dict[str, Any]) -> list[str]:
    return [p["functionCall"]["name"] for p in content["parts"] if "functionCall" in p]


def check_turns(contents: list[dict[str, Any]]) -> None:
    """A function call turn follows a user turn; a function response turn follows the function call
    turn and answers each of its calls."""
    for i, content in enumerate(contents):
        calls = calls_in(content)
        if calls and (i == 0 or contents[i - 1].get("role", "user") != "user"):
            raise Refused("Please ensure that function call turn comes immediately after a user turn or after a "
                          "function response turn.")
        answered = [p["functionResponse"]["name"] for p in content["parts"] if "functionResponse" in p]
        if not answered:
            continue
        asked = calls_in(contents[i - 1]) if i else []
        if not asked:
            raise Refused("Please ensure that function response turn comes immediately after a function call turn.")
        if len(answered) != len(asked):
            raise Refused("Please ensure that the number of function response parts is equal to the number of "
                          "function call parts of the function call turn.")
        if sorted(answered) != sorted(asked):
            raise Refused("Please ensure that the function response names match the function call names.")


def check_signatures(contents: list[dict[str, Any]], signatures: set[str]) -> None:
    """Gemini 3: in the current turn (after the last user content with more than function
    responses), each step's first function call carries the signature it came with."""
    start = 0
    for i, content in enumerate(contents):
        if content.get("role", "user") == "user" and any("functionResponse" not in p for p in content["parts"]):
            start = i
    for position, content in enumerate(contents[start:], start + 1):
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is None:
            continue
        signature = first.get("thoughtSignature")
        if signature is None:
            raise Refused("Function call is missing a thought_signature in functionCall parts. This is required for "
                          f"tools to work correctly. Additional data, function call `{first['functionCall']['name']}`"
                          f", position {position}. Please refer to https://ai.google.dev/gemini-api/docs/"
                          "thought-signatures for more details.")
        if signature not in signatures and signature not in DUMMY_SIGNATURES:
            raise Refused("Corrupted thought signature.")


def check_tools(tools: Any) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise Refused("Invalid value at 'tools' (type.googleapis.com/google.ai.generativelanguage.v1beta.Tool)")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        unknown(tool, {"functionDeclarations", "googleSearch", "codeExecution", "urlContext"}, f"tools[{i}]")
        for j, declaration in enumerate(tool.get("functionDeclarations") or ()):
            where = f"tools[{i}].function_declarations[{j}]"
            unknown(declaration, DECLARATION_FIELDS, where)
            name = declaration.get("name")
            if not isinstance(name, str) or not FUNCTION_NAME.match(name):
                raise Refused(f"* GenerateContentRequest.{where}.name: Invalid function name. Must start with a letter "
                              "or an underscore. Must be a-z, A-Z, 0-9, or contain underscores, dots, colons and "
                              "dashes, with a maximum length of 64.")
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                raise Refused(f"* GenerateContentRequest.{where}: parameters and parameters_json_schema are mutually "
                              "exclusive")
            schema = declaration.get("parametersJsonSchema")
            if schema is not None and (not isinstance(schema, dict) or schema.get("type") != "object"):
                raise Refused(f"* GenerateContentRequest.{where}.parameters_json_schema: the schema must describe an "
                              "object")
            names.add(name)
    return names


def check_tool_config(tool_config: Any, declared: set[str]) -> None:
    if tool_config is None:
        return
    unknown(tool_config, {"functionCallingConfig", "retrievalConfig"}, "tool_config")
    config = tool_config.get("functionCallingConfig") or {}
    unknown(config, {"mode", "allowedFunctionNames"}, "tool_config.function_calling_config")
    mode = config.get("mode", "AUTO")
    if mode not in MODES:
        raise Refused(f"Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/"
                      f"google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), \"{mode}\"")
    allowed = config.get("allowedFunctionNames")
    if allowed is not None:
        if mode not in ("ANY", "VALIDATED"):
            raise Refused("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                          "allowed_function_names should only be set when the mode is ANY or VALIDATED.")
        for name in allowed:
            if name not in declared:
                raise Refused(f"* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                              f"'{name}' is not a declared function.")
    if mode != "NONE" and not declared:
        raise Refused("* GenerateContentRequest.tool_config.function_calling_config: function calling config is set "
                      "without function_declarations.")


def check_config(config: Any) -> None:
    if config is None:
        return
    unknown(config, CONFIG_FIELDS, "generation_config")
    for name, (low, high) in NUMBERS.items():
        value = config.get(name)
        if value is None:
            continue
        if type(value) not in (int, float):
            raise Refused(f"Invalid value at 'generation_config.{name}' (TYPE_FLOAT), {json.dumps(value)}")
        if not low <= value <= high or (name.endswith("Penalty") and value == high):
            raise Refused(f"* GenerateContentRequest.generation_config.{name}: {name} must be in [{low}, {high}"
                          f"{')' if name.endswith('Penalty') else ']'}")
    for name, (low, high) in INTEGERS.items():
        value = config.get(name)
        if value is None:
            continue
        if type(value) is not int:
            raise Refused(f"Invalid value at 'generation_config.{name}' (TYPE_INT32), {json.dumps(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise Refused(f"* GenerateContentRequest.generation_config.{name}: must be in [{low}, {high}]")
    stops = config.get("stopSequences")
    if stops is not None and (not isinstance(stops, list) or len(stops) > 5 or
                              not all(isinstance(s, str) for s in stops)):
        raise Refused("* GenerateContentRequest.generation_config.stop_sequences: at most 5 strings")
    mime = config.get("responseMimeType")
    if mime is not None and mime not in MIME_TYPES:
        raise Refused(f"* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are "
                      f"{', '.join(sorted(MIME_TYPES))}.")
    if "responseJsonSchema" in config:
        if "responseSchema" in config:
            raise Refused("* GenerateContentRequest.generation_config: response_schema and response_json_schema are "
                          "mutually exclusive")
        if mime != "application/json":
            raise Refused("* GenerateContentRequest.generation_config.response_mime_type: response_mime_type must be "
                          "application/json when response_json_schema is set")
    if "logprobs" in config and not config.get("responseLogprobs"):
        raise Refused("* GenerateContentRequest.generation_config.logprobs: logprobs is only valid when "
                      "response_logprobs is true")
    thinking = config.get("thinkingConfig")
    if thinking is not None:
        unknown(thinking, THINKING_FIELDS, "generation_config.thinking_config")
        if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
            raise Refused("* GenerateContentRequest.generation_config.thinking_config: thinking_budget and "
                          "thinking_level are mutually exclusive")
