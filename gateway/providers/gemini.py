"""The `gemini` type: Google's Gemini API (generativelanguage.googleapis.com) behind OpenAI's chat
completions.

The request goes to `{base_url}/{api_version}/models/{model}:generateContent` (a stream to
`:streamGenerateContent?alt=sse`) with the key in `x-goog-api-key`. System and developer messages
become `systemInstruction`; user, assistant and tool messages become `contents` of role user and
model (consecutive contents of one role merged: a turn's tool results are one user content, as the
API requires); text, images (a data URL inline, an https URL as `fileData`), audio and file parts;
the sampling fields, the token limit, stop, n, seed, penalties, logprobs and `response_format` go
to `generationConfig` (a JSON schema as `responseJsonSchema`, checked against the keywords Gemini
honours); tools to `functionDeclarations` and tool_choice to `functionCallingConfig`;
`reasoning_effort` to `thinkingConfig`. What Gemini has no place for is refused with a 400 that
names it.

The answer: each candidate is a choice; its text parts are the content, its function calls the
tool calls. A function call's `thoughtSignature` (which Gemini 3 requires back with the call in the
next request) rides in the tool call's id, so that a client that sends its history back as OpenAI's
tool calls sends the signature too. A stream's events become OpenAI chunks as they arrive; it is
complete when every candidate has its finishReason. Google's errors come back in OpenAI's shape with
their status (an invalid key, 400 from Google, as 401).
"""

from __future__ import annotations

import math
import mimetypes
import re
from typing import Any, AsyncIterator, Mapping

import aiohttp
import orjson

from ..auth import bearer_token
from ..errors import bad_request
from . import shape
from .base import CHAT, Adapter, Call, Outgoing, StreamFailed, openai_error
from .shape import unsupported
from .sse import events

TYPE = "gemini"
VERSION = "v1beta"

FINISH = {"STOP": "stop", "MAX_TOKENS": "length",
          **dict.fromkeys(("SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                           "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"), "content_filter")}
# Finish reasons that say the model failed to give an answer at all: the target failed (an empty
# "stop" answer would be served, and cached, as if it were one).
FAILED = {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MISSING_THOUGHT_SIGNATURE"}

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 429: "rate_limit_error"}

# OpenAI fields mapped below, and those with no effect on the answer that are let go.
MAPPED = {"model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens",
          "max_completion_tokens", "stop", "n", "seed", "presence_penalty", "frequency_penalty",
          "response_format", "logprobs", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls",
          "reasoning_effort"}
IGNORED = {"user", "store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier"}

# The JSON Schema keywords Gemini's responseJsonSchema and parametersJsonSchema honour (its
# reference lists them); annotations, which constrain nothing, are left out; any other keyword
# would be ignored by Gemini, so it is refused.
SCHEMA_KEYWORDS = {"$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum", "items",
                   "prefixItems", "minItems", "maxItems", "minimum", "maximum", "anyOf", "oneOf", "properties",
                   "additionalProperties", "required", "propertyOrdering"}
ANNOTATIONS = {"$schema", "$comment", "default", "examples", "deprecated", "readOnly", "writeOnly"}

# reasoning_effort as a Gemini 2.x thinking budget (Google's own OpenAI-compatible mapping); Gemini 3
# takes the effort's name as its thinkingLevel.
THINKING_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
THINKING_LEVELS = {"minimal", "low", "medium", "high"}
# What Google documents for a function call whose signature was lost (history from another model):
# Gemini 3 skips the check instead of refusing the request.
NO_SIGNATURE = "skip_thought_signature_validator"

# A tool call id: "call_", 24 hex digits (shape.answer_id's 12 random bytes), then "_" and the signature
# (URL-safe base64) when it has one.
_ID_HEAD = len("call_") + 24


class GeminiAdapter(Adapter):
    type = TYPE
    translates = True
    endpoints = frozenset({CHAT})

    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.config.api_key} if self.config.api_key else {}

    def request(self, call: Call) -> Outgoing:
        self.check(call.path)
        headers = {k: v for k, v in call.headers.items() if k != "authorization"}
        headers.update(self.headers)
        token = bearer_token(call.headers.get("authorization"))
        if "x-goog-api-key" not in headers and token:
            headers["x-goog-api-key"] = token   # open mode: the client's own key, in Google's header
        method = "streamGenerateContent?alt=sse" if call.stream else "generateContent"
        url = f"{self.config.base_url}/{self.config.api_version or VERSION}/{model_path(call.model)}:{method}"
        return Outgoing(url, orjson.dumps(generate_request(call)), headers)

    def answer(self, path: str, data: dict[str, Any], call_model: str) -> dict[str, Any]:
        candidates = array(data.get("candidates"), "candidates")
        if candidates:
            choices = [choice_of(c) for c in candidates]
        elif blocked(data):
            choices = [{"index": 0, "message": shape.message(None), "logprobs": None,
                        "finish_reason": "content_filter"}]
        else:
            raise ValueError("no candidates, and no promptFeedback.blockReason")
        return shape.completion(completion_id(data), str(data.get("modelVersion") or call_model), choices,
                                usage_of(data.get("usageMetadata")))

    def stream(self, response: aiohttp.ClientResponse, call_model: str) -> AsyncIterator[bytes]:
        return StreamTranslation(call_model).run(response)

    def retry_after(self, status: int, raw: bytes, headers: Mapping[str, str]) -> str | None:
        # Google says how long to wait in the 429's body (RetryInfo), not in a header.
        return headers.get("retry-after") or retry_delay(raw)

    def error(self, status: int, raw: bytes, content_type: str, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        try:
            error = orjson.loads(raw).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            error = None
        kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        if not isinstance(error, dict):
            message = raw[:500].decode("utf-8", "replace") or f"HTTP {status}"
            return openai_error(status, f"Gemini answered {status}: {message}", kind)
        message = str(error.get("message") or error.get("status") or f"HTTP {status}")
        if "API_KEY_INVALID" in reasons(error):   # Google says 400; OpenAI clients know a bad key as 401
            return openai_error(401, message, "authentication_error", "invalid_api_key")
        google_status = error.get("status")
        return openai_error(status, message, kind, google_status.lower() if isinstance(google_status, str) else None)


def retry_delay(raw: bytes) -> str | None:
    """A 429's RetryInfo.retryDelay ("12s", "0.5s") as a Retry-After value in whole seconds."""
    try:
        details = orjson.loads(raw).get("error", {}).get("details")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(max(1, math.ceil(float(delay[:-1]))))
            except ValueError:
                return None
    return None


def model_path(model: str) -> str:
    """The model's resource name: `models/{model}`, or the name as given when it has its own
    collection (`tunedModels/...`)."""
    return model if "/" in model else f"models/{model}"


def reasons(error: dict[str, Any]) -> list[str]:
    """The `reason` of each ErrorInfo in a Google error's details."""
    details = error.get("details")
    return [str(d.get("reason")) for d in details if isinstance(d, dict)] if isinstance(details, list) else []


# ---- the request ----------------------------------------------------------------------------------

def generate_request(call: Call) -> dict[str, Any]:
    # What the gateway added on its own (a cascade's logprobs) is left out: not every Gemini model
    # takes logprobs, and a refusal would fail the call for a figure the client never asked for.
    payload = {k: v for k, v in call.payload.items() if k not in call.optional} if call.optional else call.payload
    shape.refuse_unknown(TYPE, payload, MAPPED | IGNORED, hints={"functions": " (use 'tools')",
                                                                 "function_call": " (use 'tools')"})
    if payload.get("parallel_tool_calls") is False:
        raise unsupported(TYPE, "'parallel_tool_calls': false (Gemini may call several functions at once)",
                          "parallel_tool_calls")
    system, contents = conversation(payload["messages"], call.model)
    if not contents:
        raise bad_request("'messages' needs a user message: Gemini answers contents, and system messages "
                          "are only its instruction.", "messages")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = generation_config(payload, call)
    if config:
        body["generationConfig"] = config
    body.update(tools_of(payload))
    return body


def conversation(messages: list[dict[str, Any]], model: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system instruction's parts, and the contents (role user or model, never two of one role
    in a row)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}   # tool call id -> the function it called, for the tool's result
    for i, message in enumerate(messages):
        role, where = message["role"], f"messages[{i}]"
        if message.get("name") is not None and role != "tool":   # a tool's is its call's, read from the call
            raise unsupported(TYPE, "A message's 'name'", f"{where}.name")
        if role in ("system", "developer"):
            text = shape.text_of(message.get("content"), where)
            if text:
                system.append({"text": text})
            continue
        if role == "user":
            parts, turn = user_parts(message.get("content"), where), "user"
        elif role == "assistant":
            parts, turn = model_parts(message, where, names, needs_signatures(model)), "model"
        elif role == "tool":
            parts, turn = [function_response(message, where, names)], "user"
        else:
            raise bad_request(f"{where}.role '{role}' is not one of system, developer, user, assistant, tool.",
                              f"{where}.role")
        if not parts:
            continue   # nothing said (an empty text): Gemini refuses a content without parts
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return system, contents


def user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    out = []
    for i, part in enumerate(shape.parts(content, where)):
        kind, part_where = part["type"], f"{where}.content[{i}]"
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{part_where}.text must be a string.", part_where)
            if part["text"]:
                out.append({"text": part["text"]})
        elif kind == "image_url":
            out.append(image_part(part, part_where))
        elif kind == "input_audio":
            out.append(audio_part(part, part_where))
        elif kind == "file":
            out.append(file_part(part, part_where))
        else:
            raise unsupported(TYPE, f"A '{kind}' content part", part_where)
    return out


def image_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    detail = (part.get("image_url") or {}).get("detail") if isinstance(part.get("image_url"), dict) else None
    if detail not in (None, "auto"):
        raise unsupported(TYPE, f"An image's detail '{detail}' (leave it out, or auto)", f"{where}.image_url.detail")
    media_type, data = shape.image(part, where)
    if media_type != "url":
        return {"inlineData": {"mimeType": media_type, "data": data}}
    if not data.startswith("https://"):
        raise unsupported(TYPE, "An http:// image URL (Gemini fetches https URLs only: send an https URL or a "
                                "data URL)", f"{where}.image_url")
    # Gemini fetches the URL itself; the type is told when the name says it, else Gemini reads it.
    guessed = mimetypes.guess_type(data.split("?", 1)[0])[0]
    return {"fileData": {"fileUri": data, **({"mimeType": guessed} if guessed else {})}}


def audio_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    audio = part.get("input_audio") if isinstance(part.get("input_audio"), dict) else {}
    if audio.get("format") not in ("wav", "mp3") or not isinstance(audio.get("data"), str):
        raise bad_request(f"{where}.input_audio must have base64 'data' and a 'format' of wav or mp3.", where)
    return {"inlineData": {"mimeType": f"audio/{audio['format']}", "data": audio["data"]}}


def file_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    file = part.get("file") if isinstance(part.get("file"), dict) else {}
    if file.get("file_id") is not None:
        raise unsupported(TYPE, "A file part's file_id (OpenAI's stored files; send file_data)", f"{where}.file")
    found = re.fullmatch(r"data:([\w.+-]+/[\w.+-]+);base64,(.+)", str(file.get("file_data") or ""), re.S)
    if found is None:
        raise bad_request(f"{where}.file.file_data must be a base64 data URL (data:application/pdf;base64,...).",
                          f"{where}.file")
    return {"inlineData": {"mimeType": found.group(1), "data": found.group(2)}}


def model_parts(message: dict[str, Any], where: str, names: dict[str, str], signed: bool) -> list[dict[str, Any]]:
    """An assistant message as a model content's parts: its text, then its function calls (each
    with the thought signature its id carries)."""
    for field in ("audio", "function_call"):
        if message.get(field) is not None:
            raise unsupported(TYPE, f"An assistant message's '{field}'", f"{where}.{field}")
    out: list[dict[str, Any]] = []
    text = shape.text_of(message.get("content"), where) + str(message.get("refusal") or "")
    if text:
        out.append({"text": text})
    for j, (id, name, arguments) in enumerate(shape.tool_calls(message, where)):
        names[id] = name
        part: dict[str, Any] = {"functionCall": {"name": name, "args": arguments}}
        signature = signature_of(id)
        if signature is None and signed and j == 0:
            signature = NO_SIGNATURE   # each step's first call must carry one on Gemini 3
        if signature is not None:
            part["thoughtSignature"] = signature
        out.append(part)
    return out


def function_response(message: dict[str, Any], where: str, names: dict[str, str]) -> dict[str, Any]:
    """A tool message as a functionResponse: named after the call it answers. Gemini takes an
    object: a JSON object result is sent as it is, any other result as {"output": result} (the key
    Google documents for a function's output)."""
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise bad_request(f"{where}.tool_call_id is required for a tool message.", f"{where}.tool_call_id")
    if call_id not in names:
        raise bad_request(f"{where}.tool_call_id '{call_id[:64]}' answers no tool call of an earlier assistant "
                          "message.", f"{where}.tool_call_id")
    text = shape.text_of(message.get("content"), where)
    try:
        value: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    return {"functionResponse": {"name": names[call_id],
                                 "response": value if isinstance(value, dict) else {"output": value}}}


def generation_config(payload: dict[str, Any], call: Call) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name, gemini in (("temperature", "temperature"), ("top_p", "topP"),
                         ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        value = payload.get(name)
        if value is not None:
            if type(value) not in (int, float):
                raise bad_request(f"'{name}' must be a number.", name)
            config[gemini] = value
    for name, gemini in (("n", "candidateCount"), ("seed", "seed")):
        value = payload.get(name)
        if value is not None:
            if type(value) is not int:
                raise bad_request(f"'{name}' must be an integer.", name)
            config[gemini] = value
    limit = shape.max_tokens(payload) or call.pricing.max_tokens
    if limit:
        config["maxOutputTokens"] = limit
    stop = shape.stop_sequences(payload)
    if stop:
        config["stopSequences"] = stop
    config.update(output_format(payload))
    config.update(logprobs_config(payload))
    thinking = thinking_config(payload.get("reasoning_effort"), call.model)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def output_format(payload: dict[str, Any]) -> dict[str, Any]:
    response_format = payload.get("response_format")
    if response_format is None:
        return {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request("response_format.json_schema.schema must be an object.", "response_format")
        # Gemini always holds the answer to the schema: `strict` asks for nothing more.
        return {"responseMimeType": "application/json",
                "responseJsonSchema": json_schema(schema, "response_format.json_schema.schema")}
    raise bad_request("response_format.type must be text, json_object or json_schema.", "response_format")


def json_schema(schema: Any, where: str) -> Any:
    """A JSON schema as Gemini takes it: its keywords checked (one Gemini would ignore is refused),
    annotations left out, `const` as a one-value `enum`."""
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, dict):
        raise bad_request(f"{where} must be a JSON schema (an object).", where)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        at = f"{where}.{key}"
        if key in ANNOTATIONS:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("properties", "$defs"):
            if not isinstance(value, dict):
                raise bad_request(f"{at} must be an object.", at)
            out[key] = {name: json_schema(sub, f"{at}.{name}") for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = json_schema(value, at)
        elif key in ("anyOf", "oneOf", "prefixItems"):
            if not isinstance(value, list):
                raise bad_request(f"{at} must be an array.", at)
            out[key] = [json_schema(sub, f"{at}[{i}]") for i, sub in enumerate(value)]
        elif key in SCHEMA_KEYWORDS:
            out[key] = value
        else:
            raise unsupported(TYPE, f"The JSON schema keyword '{key}' (at {where})", where)
    return out


def logprobs_config(payload: dict[str, Any]) -> dict[str, Any]:
    wanted, top = payload.get("logprobs"), payload.get("top_logprobs")
    if wanted is not None and type(wanted) is not bool:
        raise bad_request("'logprobs' must be a boolean.", "logprobs")
    if top is not None:
        if type(top) is not int or not 0 <= top <= 20:
            raise bad_request("'top_logprobs' must be an integer from 0 to 20.", "top_logprobs")
        if not wanted:
            raise bad_request("'top_logprobs' needs 'logprobs': true.", "top_logprobs")
    if not wanted:
        return {}
    return {"responseLogprobs": True, **({"logprobs": top} if top else {})}


def thinking_config(effort: Any, model: str) -> dict[str, Any] | None:
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in THINKING_BUDGETS:
        raise bad_request("'reasoning_effort' must be none, minimal, low, medium or high.", "reasoning_effort")
    generation = model_generation(model)
    if generation is not None and generation < 3:
        return {"thinkingBudget": THINKING_BUDGETS[effort]}
    if effort not in THINKING_LEVELS:
        raise unsupported(TYPE, "reasoning_effort 'none' (Gemini 3 models always think; use minimal)",
                          "reasoning_effort")
    return {"thinkingLevel": effort}


def model_generation(model: str) -> int | None:
    """3 for gemini-3-flash, 2 for gemini-2.5-pro; None for a name that does not say."""
    found = re.match(r"gemini-(\d+)", model.rsplit("/", 1)[-1])
    return int(found.group(1)) if found else None


def needs_signatures(model: str) -> bool:
    """Gemini 3 refuses a step's function call without its thought signature."""
    generation = model_generation(model)
    return generation is not None and generation >= 3


def tools_of(payload: dict[str, Any]) -> dict[str, Any]:
    """`tools` and `toolConfig` in Gemini's shape (nothing when the client sent no tools)."""
    functions = shape.tools(payload)
    choice = shape.tool_choice(payload)
    if not functions:
        if choice not in (None, "none"):
            raise bad_request("'tool_choice' needs 'tools'.", "tool_choice")
        return {}
    declarations = []
    for i, function in enumerate(functions):
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = str(function["description"])
        if function.get("parameters") is not None:
            declaration["parametersJsonSchema"] = json_schema(function["parameters"], f"tools[{i}].function.parameters")
        declarations.append(declaration)
    # OpenAI's strict tools: Gemini's VALIDATED mode holds every call to its schema.
    strict = any(function.get("strict") is True for function in functions)
    if choice is None and not strict:
        return {"tools": [{"functionDeclarations": declarations}]}
    config: dict[str, Any]
    if choice in (None, "auto"):
        config = {"mode": "VALIDATED" if strict else "AUTO"}
    elif choice == "required":
        config = {"mode": "ANY"}
    elif choice == "none":
        config = {"mode": "NONE"}
    else:
        if all(function["name"] != choice for function in functions):
            raise bad_request(f"tool_choice names '{choice}', which is not one of the tools.", "tool_choice")
        config = {"mode": "ANY", "allowedFunctionNames": [choice]}
    return {"tools": [{"functionDeclarations": declarations}], "toolConfig": {"functionCallingConfig": config}}


# ---- the answer -----------------------------------------------------------------------------------

def completion_id(data: dict[str, Any]) -> str:
    response_id = data.get("responseId")
    return f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id else shape.answer_id()


def blocked(data: dict[str, Any]) -> bool:
    """A prompt Gemini refused to answer (no candidates): an answer with finish_reason content_filter."""
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def choice_of(candidate: Any) -> dict[str, Any]:
    if not isinstance(candidate, dict):
        raise ValueError("a candidate is not an object")
    texts, calls = [], []
    for part in parts_of(candidate):
        if "text" in part:
            texts.append(part["text"])
        else:
            calls.append(tool_call_of(part))
    return {"index": index_of(candidate), "message": shape.message("".join(texts) if texts else None, calls),
            "logprobs": logprobs_of(candidate.get("logprobsResult")),
            "finish_reason": finish_of(candidate, bool(calls)) or "stop"}


def index_of(candidate: dict[str, Any]) -> int:
    index = candidate.get("index", 0)   # proto3 JSON leaves out a 0
    if type(index) is not int or index < 0:
        raise ValueError("a candidate's index is not a number")
    return index


def parts_of(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    """A candidate's text and functionCall parts; thoughts (never asked for) are not the answer."""
    content = candidate.get("content") or {}
    if not isinstance(content, dict):
        raise ValueError("a candidate's content is not an object")
    out = []
    for part in array(content.get("parts"), "parts"):
        if not isinstance(part, dict):
            raise ValueError("a part is not an object")
        if part.get("thought") or set(part) <= {"thoughtSignature"}:
            continue   # a signature alone (a stream may end with one) says nothing to the client
        if isinstance(part.get("text"), str) or isinstance(part.get("functionCall"), dict):
            out.append(part)
        else:
            kinds = ", ".join(k for k in part if k != "thoughtSignature") or "nothing"
            raise ValueError(f"a part the gateway cannot give in OpenAI's shape ({kinds})")
    return out


def tool_call_of(part: dict[str, Any]) -> dict[str, Any]:
    call = part["functionCall"]
    if not isinstance(call.get("name"), str) or not isinstance(call.get("args") or {}, dict):
        raise ValueError("a functionCall without a name, or with args that are not an object")
    return shape.tool_call(tool_call_id(part.get("thoughtSignature")), call["name"], call.get("args") or {})


def tool_call_id(signature: Any) -> str:
    """A new tool call id, carrying the call's thought signature (URL-safe, so that any client or
    provider takes the id) for the request that sends the call back."""
    head = shape.answer_id("call_")
    if not isinstance(signature, str) or not signature:
        return head
    return head + "_" + signature.rstrip("=").replace("+", "-").replace("/", "_")


def signature_of(call_id: str) -> str | None:
    """The thought signature a tool call id of ours carries, as Gemini sent it."""
    if len(call_id) <= _ID_HEAD + 1 or not call_id.startswith("call_") or call_id[_ID_HEAD] != "_":
        return None
    signature = call_id[_ID_HEAD + 1:].replace("-", "+").replace("_", "/")
    return signature + "=" * (-len(signature) % 4)


def finish_of(candidate: dict[str, Any], called: bool) -> str | None:
    """The candidate's finish_reason, None while it has not finished."""
    reason = candidate.get("finishReason")
    if not reason or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    if not isinstance(reason, str):
        raise ValueError("a finishReason that is not a string")
    if reason in FAILED:
        raise ValueError(f"the model gave no answer: {reason} {candidate.get('finishMessage') or ''}".rstrip())
    finish = FINISH.get(reason, "stop")
    return "tool_calls" if called and finish == "stop" else finish


def logprobs_of(result: Any) -> dict[str, Any] | None:
    if not isinstance(result, dict):
        return None
    chosen = array(result.get("chosenCandidates"), "chosenCandidates")
    top = array(result.get("topCandidates"), "topCandidates")
    content = []
    for i, token in enumerate(chosen):
        alternatives = top[i].get("candidates") if i < len(top) and isinstance(top[i], dict) else None
        content.append({**token_logprob(token),
                        "top_logprobs": [token_logprob(t) for t in array(alternatives, "candidates")]})
    return {"content": content, "refusal": None}


def token_logprob(token: Any) -> dict[str, Any]:
    logprob = token.get("logProbability", 0.0) if isinstance(token, dict) else None
    if type(logprob) not in (int, float):
        raise ValueError("a logprobs candidate without its logProbability")
    text = str(token.get("token", ""))
    return {"token": text, "logprob": float(logprob), "bytes": list(text.encode())}


def array(value: Any, name: str) -> list[Any]:
    """A list from Google's JSON, where proto3 leaves an empty one out."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{name} is not an array")
    return value


def usage_of(metadata: Any) -> dict[str, Any] | None:
    """OpenAI's usage from usageMetadata: the prompt counts its cached part (cachedContentTokenCount,
    the cache reads); the completion counts the thinking tokens, billed as output."""
    if not isinstance(metadata, dict):
        return None
    thoughts = _count(metadata, "thoughtsTokenCount")
    usage = shape.usage(_count(metadata, "promptTokenCount"), _count(metadata, "candidatesTokenCount") + thoughts,
                        _count(metadata, "cachedContentTokenCount"))
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def _count(metadata: dict[str, Any], name: str) -> int:
    value = metadata.get(name, 0)
    if type(value) is not int or value < 0:
        raise ValueError(f"usageMetadata.{name} is not a count")
    return value


class StreamTranslation:
    """One stream's GenerateContentResponse events, as OpenAI chunks: kept per stream, read as the
    events arrive. Gemini's stream has no end event: it is complete when every candidate that
    appeared has its finishReason (then the usage chunk and [DONE] follow)."""

    def __init__(self, model: str):
        self.model = model
        self.chunks: shape.Chunks | None = None
        self.calls: dict[int, int] = {}        # a candidate's index -> its tool calls so far
        self.finished: dict[int, bool] = {}    # a candidate's index -> whether it has finished
        self.usage: dict[str, Any] | None = None

    async def run(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        async for _, data in events(response):
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise StreamFailed("an event that is not JSON") from None
            if not isinstance(event, dict):
                raise StreamFailed("an event that is not a GenerateContentResponse")
            error = event.get("error")
            if isinstance(error, dict):
                raise StreamFailed(f"{error.get('status', 'error')}: {error.get('message', '')}")
            try:
                out = self.translate(event)
            except ValueError as exc:
                raise StreamFailed(str(exc)) from None
            if out:
                yield out
        if self.finished and all(self.finished.values()):
            yield (self.chunks.usage(self.usage) if self.usage else b"") + shape.DONE

    def translate(self, event: dict[str, Any]) -> bytes:
        if self.chunks is None:
            self.chunks = shape.Chunks(completion_id(event), str(event.get("modelVersion") or self.model))
        if event.get("usageMetadata") is not None:
            self.usage = usage_of(event["usageMetadata"])   # each event's counts so far: the last is the total
        candidates = array(event.get("candidates"), "candidates")
        if not candidates and blocked(event) and not self.finished:
            self.finished[0] = True
            return self.chunks.delta({"role": "assistant", "content": ""}) + self.chunks.delta({}, "content_filter")
        return b"".join(self.candidate(c) for c in candidates)

    def candidate(self, candidate: Any) -> bytes:
        if not isinstance(candidate, dict):
            raise ValueError("a candidate is not an object")
        chunks, index = self.chunks, index_of(candidate)
        out = []
        if index not in self.finished:
            self.finished[index], self.calls[index] = False, 0
            out.append(chunks.delta({"role": "assistant", "content": ""}, index=index))
        logprobs = logprobs_of(candidate.get("logprobsResult"))
        for part in parts_of(candidate):
            if "text" in part:
                if part["text"]:
                    out.append(chunks.event([{"index": index, "delta": {"content": part["text"]},
                                              "logprobs": logprobs, "finish_reason": None}]))
                    logprobs = None   # this event's tokens go with its first text
                continue
            call = tool_call_of(part)
            out.append(chunks.delta({"tool_calls": [{"index": self.calls[index], **call}]}, index=index))
            self.calls[index] += 1
        finish = finish_of(candidate, self.calls[index] > 0)
        if finish is not None and not self.finished[index]:
            self.finished[index] = True
            out.append(chunks.delta({}, finish, index=index))
        return b"".join(out)
