"""OpenAI's Responses API inbound (`POST /v1/responses`): what the `openai` SDK's `client.responses`,
the Agents SDK and Codex send.

To a provider of type `openai` or `azure` the request goes as it came (only `model` rewritten), and
its answer and stream come back untouched: hosted tools and server-side state (`previous_response_id`,
`conversation`, `store`, stored files) work there only, and `native_only` names the first field that
needs them. To any other type the request is read into the gateway's chat form (`to_chat`), the chat
answer is written back as a `response` object (`response`), and its stream is re-emitted as
Responses events (`ChatToEvents`) in the order OpenAI sends them. Errors are OpenAI's shape already.

Either way the pipeline reads the answer in the chat form: a native JSON answer through
`completion`, a kept stream's events (native or re-emitted) through `chat_chunks`, so usage, cost,
the cache and routing's checks work the same as for chat completions.
"""

from __future__ import annotations

import re
import time
from typing import Any, AsyncIterator, Iterable

import orjson

from ..errors import bad_request, error_body as openai_error_body
from ..providers import shape
from ..providers.shape import unsupported
from ..providers.sse import complete_events, last_event_name
from .chat_events import replayed, rewritten

ENDPOINT = "responses"
GUARDS_OWN_STREAM = False   # a stream with output rules is filtered in its chat form (call.py)
GUARDED_PARAM = "input"
PATH = "/v1/responses"
# The event a completed stream ends with. A stream cut short by the token limit or a content
# filter ends with response.incomplete instead: it is finished too (see END_MARKS).
DONE_MARK = b'"response.completed"'
END_MARKS = (DONE_MARK, b'"response.incomplete"')

# A chat finish_reason that leaves the response incomplete, and why (incomplete_details.reason).
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
FINISH = {reason: finish for finish, reason in INCOMPLETE.items()}

# Request fields read into the chat form (or let go: they do not change the answer), and those
# accepted only at the value that asks for nothing.
READ = frozenset({"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
                  "max_output_tokens", "temperature", "top_p", "text", "reasoning", "user", "safety_identifier",
                  "stream", "stream_options", "metadata", "service_tier", "include", "prompt_cache_key",
                  "prompt_cache_retention"})
NEUTRAL = {"store": (False,), "background": (False,), "truncation": ("disabled",), "top_logprobs": (0,)}

# What only OpenAI's own servers can answer: state they keep, work they run in the background.
SERVER_STATE = {
    "previous_response_id": "'previous_response_id' (only OpenAI and Azure OpenAI keep past responses: "
                            "send the whole conversation in `input`)",
    "conversation": "'conversation' (only OpenAI and Azure OpenAI keep conversations: send the whole "
                    "conversation in `input`)",
    "store": "'store: true' (only OpenAI and Azure OpenAI store responses)",
    "background": "'background: true' (only OpenAI and Azure OpenAI run responses in the background)",
    "prompt": "'prompt' (prompt templates are kept by OpenAI)",
    "context_management": "'context_management' (OpenAI compacts the context on its servers)",
}
# The chat form's fields `to_chat` reads a Responses request's own into (the others keep their
# names): a provider's refusal of one names the field the client sent.
CHAT_FIELDS = {"max_tokens": "max_output_tokens", "reasoning_effort": "reasoning.effort",
               "verbosity": "text.verbosity", "response_format": "text.format"}
# What `include` may ask for of another provider: encrypted reasoning (there is none to include).
# Logprobs are not server-side, but have no place in the chat form here (`to_chat` refuses them).
LOCAL_INCLUDES = {"reasoning.encrypted_content", "message.output_text.logprobs"}
# Input items read into the chat form; any other type is OpenAI's own (an item reference, a hosted
# tool's call or output, a custom tool's, a compaction).
ITEMS = {"message", "function_call", "function_call_output", "reasoning"}
ROLES = {"user", "assistant", "system", "developer"}
FUNCTION_TOOL = {"type", "name", "description", "parameters", "strict"}


def guarded_text(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's text as chat-like messages, for the guardrails' input rules: the
    instructions first, then each input item's (a message's content, its input_text and
    output_text parts as text parts; a function call's output)."""
    out: list[dict[str, Any]] = []
    if isinstance(payload.get("instructions"), str):
        out.append({"role": "system", "content": payload["instructions"]})
    given = payload.get("input")
    if isinstance(given, str):
        out.append({"role": "user", "content": given})
    elif isinstance(given, list):
        out.extend(_item_text(item) for item in given)
    return out


def _item_text(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        return {}
    if item.get("type") == "function_call_output":
        return {"role": "tool", "content": item["output"]} if isinstance(item.get("output"), str) else {}
    content = item.get("content")
    if isinstance(content, str):
        return {"role": item.get("role"), "content": content}
    if isinstance(content, list):
        return {"role": item.get("role"), "content": [
            {"type": "text", "text": p["text"]} if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")
            and isinstance(p.get("text"), str) else {"type": "other"} for p in content]}
    return {}


def with_guarded_text(payload: dict[str, Any], masked: list[dict[str, Any]]) -> dict[str, Any]:
    """The request with the text of `guarded_text` replaced (the same positions)."""
    out, at = dict(payload), 0
    if isinstance(payload.get("instructions"), str):
        out["instructions"], at = masked[0]["content"], 1
    given = payload.get("input")
    if isinstance(given, str):
        out["input"] = masked[at]["content"]
    elif isinstance(given, list):
        out["input"] = [_with_item_text(item, text) for item, text in zip(given, masked[at:])]
    return out


def _with_item_text(item: Any, text: dict[str, Any]) -> Any:
    if not text or "content" not in text:
        return item
    if item.get("type") == "function_call_output":
        return {**item, "output": text["content"]}
    if isinstance(item.get("content"), str):
        return {**item, "content": text["content"]}
    return {**item, "content": [{**part, "text": new["text"]} if new.get("type") == "text" else part
                                for part, new in zip(item["content"], text["content"])]}


def check(payload: dict[str, Any]) -> None:
    """What every Responses request must have, whoever answers it."""
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: a non-empty string is required.", "model")
    given = payload.get("input")
    if given is None:
        # Only a stored prompt or earlier state can stand in for it (and only OpenAI has those).
        if not any(payload.get(name) is not None for name in ("prompt", "previous_response_id", "conversation")):
            raise bad_request("input: a string or an array of input items is required.", "input")
    elif isinstance(given, list):
        for i, item in enumerate(given):
            if not isinstance(item, dict):
                raise bad_request(f"input[{i}]: an input item must be an object.", f"input[{i}]")
    elif not isinstance(given, str):
        raise bad_request("input: must be a string or an array of input items.", "input")
    if payload.get("stream") is not None and not isinstance(payload["stream"], bool):
        raise bad_request("stream: must be a boolean.", "stream")
    limit = payload.get("max_output_tokens")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise bad_request("max_output_tokens: must be a positive integer.", "max_output_tokens")
    if payload.get("instructions") is not None and not isinstance(payload["instructions"], str):
        raise bad_request("instructions: must be a string.", "instructions")
    for name in ("tools", "include"):
        if payload.get(name) is not None and not isinstance(payload[name], list):
            raise bad_request(f"{name}: must be an array.", name)
    for i, tool in enumerate(payload.get("tools") or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise bad_request(f"tools[{i}]: a tool must be an object with a type.", f"tools[{i}]")


def native_only(payload: dict[str, Any]) -> str | None:
    """The first field only OpenAI or Azure OpenAI can honour (hosted tools, server-side state,
    stored files), as its param path; None when any provider can answer the request."""
    found = _native(payload)
    return found[0] if found else None


def cacheable(payload: dict[str, Any]) -> bool:
    """Whether the answer depends on the request alone (the route's own cache rules still apply):
    not when it builds on state kept upstream, runs hosted tools or stores the response."""
    return _native(payload) is None


def _native(payload: dict[str, Any]) -> tuple[str, str] | None:
    """(param, what it is) of the first thing only OpenAI's own servers can answer."""
    for name, what in SERVER_STATE.items():
        if payload.get(name) is not None and payload[name] is not False:
            return name, what
    include = payload.get("include")
    for i, name in enumerate(include if isinstance(include, list) else ()):
        if name not in LOCAL_INCLUDES:
            return f"include[{i}]", f"include '{name}' (the output of OpenAI's hosted tools and stored inputs)"
    tools = payload.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            return f"tools[{i}]", f"A '{kind}' tool (OpenAI runs its hosted tools itself; function tools work anywhere)"
    choice = payload.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools"):
        return "tool_choice", f"tool_choice '{choice.get('type')}' (a tool OpenAI hosts)"
    given = payload.get("input")
    for i, item in enumerate(given if isinstance(given, list) else ()):
        found = _native_item(item, f"input[{i}]")
        if found:
            return found
    return None


def _native_item(item: Any, where: str) -> tuple[str, str] | None:
    if not isinstance(item, dict):
        return None
    kind = _item_type(item)
    if kind not in ITEMS:
        return where, f"An input item of type '{kind}' (kept or run by OpenAI)"
    field = "content" if kind == "message" else "output" if kind == "function_call_output" else None
    parts = item.get(field) if field else None
    for j, part in enumerate(parts if isinstance(parts, list) else ()):
        if isinstance(part, dict) and part.get("file_id") is not None:
            return f"{where}.{field}[{j}].file_id", "A file_id (a file stored with OpenAI: send image_url or file_data)"
    return None


def _item_type(item: dict[str, Any]) -> str:
    """An input item's type: a message may leave it out, and so may an item reference."""
    kind = item.get("type")
    if isinstance(kind, str):
        return kind
    return "message" if "role" in item else "item_reference"


# ---- the request, in the chat form ---------------------------------------------------------------

def to_chat(payload: dict[str, Any], provider_type: str) -> dict[str, Any]:
    """The request as a chat completion request, for a provider that does not speak Responses."""
    found = _native(payload)
    if found:
        raise unsupported(provider_type, found[1], found[0])
    shape.refuse_unknown(provider_type, payload, READ, NEUTRAL)
    messages: list[dict[str, Any]] = []
    if payload.get("instructions"):
        messages.append({"role": "system", "content": payload["instructions"]})
    messages.extend(_chat_messages(payload["input"], provider_type))
    if not messages:
        raise bad_request("input: there is no message to answer.", "input")
    chat: dict[str, Any] = {"model": payload["model"], "messages": messages}
    if payload.get("max_output_tokens") is not None:
        chat["max_tokens"] = payload["max_output_tokens"]
    for name in ("temperature", "top_p", "service_tier", "metadata"):
        if payload.get(name) is not None:
            chat[name] = payload[name]
    user = payload.get("user") or payload.get("safety_identifier")
    if isinstance(user, str) and user:
        chat["user"] = user
    reasoning = payload.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]   # a summary is let go: the answer has no reasoning items
    for i, name in enumerate(payload.get("include") or ()):
        if name == "message.output_text.logprobs":
            raise unsupported(provider_type, "include 'message.output_text.logprobs'", f"include[{i}]")
    chat.update(_tools(payload, provider_type))
    chat.update(_text(payload.get("text"), provider_type))
    if payload.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}   # response.completed carries the usage
    return chat


def _chat_messages(given: str | list[Any], provider_type: str) -> list[dict[str, Any]]:
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(given):
        where = f"input[{i}]"
        kind = _item_type(item)
        if kind == "message":
            out.append(_message(item, where, provider_type))
        elif kind == "function_call":
            call = _call(item, where)
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":   # the same turn: one assistant message
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{where}.call_id: a function_call_output needs the call_id it answers.",
                                  f"{where}.call_id")
            output = item.get("output")
            content = output if isinstance(output, str) else _parts(output, f"{where}.output", provider_type)
            out.append({"role": "tool", "tool_call_id": call_id, "content": content})
        # a reasoning item: another provider cannot read OpenAI's reasoning, and needs none of it
    return out


def _message(item: dict[str, Any], where: str, provider_type: str) -> dict[str, Any]:
    role, content = item.get("role"), item.get("content")
    if role not in ROLES:
        raise bad_request(f"{where}.role: must be one of user, assistant, system, developer.", f"{where}.role")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if role != "assistant":
        return {"role": role, "content": _parts(content, f"{where}.content", provider_type)}
    if not isinstance(content, list):
        raise bad_request(f"{where}.content: must be a string or an array of content parts.", f"{where}.content")
    texts, refusals = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("output_text", "input_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            refusals.append(part["refusal"])
        else:
            raise bad_request(f"{where}.content[{j}]: an assistant message holds output_text and refusal parts.",
                              f"{where}.content[{j}]")
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if refusals:
        out["refusal"] = "".join(refusals)
    return out


def _parts(content: Any, where: str, provider_type: str) -> list[dict[str, Any]]:
    """Input content parts (of a message, or of a function's output) as chat content parts."""
    if not isinstance(content, list):
        raise bad_request(f"{where}: must be a string or an array of content parts.", where)
    out = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_text" and isinstance(part.get("text"), str):
            out.append({"type": "text", "text": part["text"]})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise bad_request(f"{at}.image_url: an input_image needs an image_url (a URL or a data URL).",
                                  f"{at}.image_url")
            image: dict[str, Any] = {"url": url}
            if part.get("detail") not in (None, "auto"):
                image["detail"] = part["detail"]
            out.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            if part.get("file_url") is not None:
                raise unsupported(provider_type, "An input_file's file_url (send file_data)", f"{at}.file_url")
            if not isinstance(part.get("file_data"), str):
                raise bad_request(f"{at}.file_data: an input_file needs file_data (a base64 data URL).",
                                  f"{at}.file_data")
            file = {"file_data": part["file_data"]}
            if isinstance(part.get("filename"), str):
                file["filename"] = part["filename"]
            out.append({"type": "file", "file": file})
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            out.append({"type": "input_audio", "input_audio": part["input_audio"]})
        else:
            raise bad_request(f"{at}: expected an input_text, input_image, input_file or input_audio part.", at)
    return out


def _call(item: dict[str, Any], where: str) -> dict[str, Any]:
    for name in ("call_id", "name"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise bad_request(f"{where}.{name}: a function_call needs its {name}.", f"{where}.{name}")
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        raise bad_request(f"{where}.arguments: a function_call's arguments are a JSON string.", f"{where}.arguments")
    return {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": arguments}}


def _tools(payload: dict[str, Any], provider_type: str) -> dict[str, Any]:
    """Function tools, tool_choice and parallel_tool_calls in the chat form (only with tools:
    the chat API refuses the other two without them)."""
    tools = payload.get("tools")
    if not tools:
        return {}
    functions = []
    for i, tool in enumerate(tools):
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise bad_request(f"tools[{i}].name: a function tool needs a name.", f"tools[{i}].name")
        for name, value in tool.items():
            if name not in FUNCTION_TOOL and value is not None:
                raise unsupported(provider_type, f"A function tool's '{name}'", f"tools[{i}].{name}")
        function = {name: tool[name] for name in ("name", "description", "parameters", "strict")
                    if tool.get(name) is not None}
        functions.append({"type": "function", "function": function})
    out: dict[str, Any] = {"tools": functions}
    choice = payload.get("tool_choice")
    if choice in ("auto", "required", "none"):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        raise unsupported(provider_type, "tool_choice 'allowed_tools'", "tool_choice")
    elif choice is not None:
        raise bad_request("tool_choice: must be auto, required, none or {\"type\": \"function\", \"name\": ...}.",
                          "tool_choice")
    if payload.get("parallel_tool_calls") is not None:
        out["parallel_tool_calls"] = payload["parallel_tool_calls"]
    return out


def _text(text: Any, provider_type: str) -> dict[str, Any]:
    """`text.format` as the chat form's response_format, `text.verbosity` as its verbosity."""
    if text is None:
        return {}
    if not isinstance(text, dict):
        raise bad_request("text: must be an object.", "text")
    out: dict[str, Any] = {}
    if text.get("verbosity") not in (None, "medium"):   # medium: the default, which asks for nothing
        out["verbosity"] = text["verbosity"]
    for name in text:
        if name not in ("format", "verbosity") and text[name] is not None:
            raise unsupported(provider_type, f"text.{name}", f"text.{name}")
    spec = text.get("format")
    kind = spec.get("type") if isinstance(spec, dict) else None
    if spec is None or kind == "text":
        return out
    if kind == "json_object":
        out["response_format"] = {"type": "json_object"}
        return out
    if kind != "json_schema":
        raise bad_request("text.format.type: must be text, json_object or json_schema.", "text.format.type")
    if not isinstance(spec.get("name"), str) or not spec["name"]:
        raise bad_request("text.format.name: a json_schema format needs a name.", "text.format.name")
    if not isinstance(spec.get("schema"), dict):
        raise bad_request("text.format.schema: a json_schema format needs a schema object.", "text.format.schema")
    json_schema = {"name": spec["name"], "schema": spec["schema"]}
    for name in ("description", "strict"):
        if spec.get(name) is not None:
            json_schema[name] = spec[name]
    out["response_format"] = {"type": "json_schema", "json_schema": json_schema}
    return out


# ---- the answer, in the Responses API's shape -----------------------------------------------------

def response(completion: dict[str, Any], request_payload: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion as a `response` object (its first choice: a response has one answer)."""
    choice = (completion.get("choices") or [{}])[0]
    said = choice.get("message") or {}
    status, incomplete = _status(choice.get("finish_reason"))
    base = _base(completion.get("id"))
    output: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    if said.get("content"):
        parts.append(_text_part(said["content"]))
    if said.get("refusal"):
        parts.append({"type": "refusal", "refusal": said["refusal"]})
    calls = said.get("tool_calls") or ()
    if parts or not calls:   # an answer with nothing in it is one empty message, as OpenAI's
        output.append(_message_item(base, 0, parts or [_text_part("")], "completed"))
    for call in calls:
        function = call.get("function") or {}
        item = _call_item(base, len(output), call.get("id"), function.get("name"), "completed")
        item["arguments"] = function.get("arguments") or ""
        output.append(item)
    if status == "incomplete":
        output[-1]["status"] = "incomplete"   # the last item is the one cut short
    head = {"base": base, "created": completion.get("created"), "model": completion.get("model")}
    return _response(head, request_payload, status, output, usage(completion.get("usage")), incomplete)


def _status(finish: str | None) -> tuple[str, dict[str, str] | None]:
    reason = INCOMPLETE.get(finish or "stop")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def _response(head: dict[str, Any], request: dict[str, Any] | None, status: str, output: list[dict[str, Any]],
              usage_now: dict[str, Any] | None, incomplete: dict[str, str] | None) -> dict[str, Any]:
    """A response object: the answer, and the request's settings echoed as OpenAI echoes them
    (the SDK's Response requires tools, tool_choice and parallel_tool_calls)."""
    request = request if isinstance(request, dict) else {}
    reasoning = request.get("reasoning") if isinstance(request.get("reasoning"), dict) else {}
    text = dict(request["text"]) if isinstance(request.get("text"), dict) else {}
    if text.get("format") is None:
        text["format"] = {"type": "text"}
    parallel = request.get("parallel_tool_calls")
    out: dict[str, Any] = {
        "id": "resp_" + head["base"], "object": "response", "created_at": head.get("created") or int(time.time()),
        "status": status, "background": False, "error": None, "incomplete_details": incomplete,
        "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None, "model": head.get("model") or request.get("model"), "output": output,
        "parallel_tool_calls": parallel if isinstance(parallel, bool) else True, "previous_response_id": None,
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"), "service_tier": request.get("service_tier"),
        "store": False, "temperature": request.get("temperature"), "text": text,
        "tool_choice": request.get("tool_choice") or "auto", "tools": request.get("tools") or [],
        "top_logprobs": request.get("top_logprobs"), "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled", "usage": usage_now, "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }
    if status == "completed":
        out["completed_at"] = int(time.time())
    return out


def _message_item(base: str, index: int, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": f"msg_{base}_{index}", "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(base: str, index: int, call_id: Any, name: Any, status: str) -> dict[str, Any]:
    return {"id": f"fc_{base}_{index}", "type": "function_call", "status": status,
            "call_id": str(call_id or f"call_{base}_{index}"), "name": str(name or ""), "arguments": ""}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _base(given: Any) -> str:
    """What a response's and its items' ids are made of: the chat answer's id, so that a cached
    answer, streamed or not, keeps its ids."""
    given = str(given or "")
    return given.removeprefix("chatcmpl-") or shape.answer_id("")


def usage(chat_usage: Any) -> dict[str, Any] | None:
    """OpenAI's chat usage as the Responses API's (input_tokens count the cached ones too, as
    prompt_tokens do)."""
    if not isinstance(chat_usage, dict):
        return None
    prompt, completion_tokens = _count(chat_usage.get("prompt_tokens")), _count(chat_usage.get("completion_tokens"))
    cache = _dict(chat_usage.get("prompt_tokens_details"))
    output = _dict(chat_usage.get("completion_tokens_details"))
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": _count(cache.get("cached_tokens")),
                                     "cache_write_tokens": _count(cache.get("cache_write_tokens"))},
            "output_tokens": completion_tokens,
            "output_tokens_details": {"reasoning_tokens": _count(output.get("reasoning_tokens"))},
            "total_tokens": _count(chat_usage.get("total_tokens")) or prompt + completion_tokens}


def chat_usage(responses_usage: Any) -> dict[str, Any] | None:
    """The Responses API's usage as the chat form's."""
    if not isinstance(responses_usage, dict):
        return None
    details = _dict(responses_usage.get("input_tokens_details"))
    out = shape.usage(_count(responses_usage.get("input_tokens")), _count(responses_usage.get("output_tokens")),
                      _count(details.get("cached_tokens")), _count(details.get("cache_write_tokens")))
    reasoning = _count(_dict(responses_usage.get("output_tokens_details")).get("reasoning_tokens"))
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def error_body(status: int, openai_body: bytes) -> bytes:
    """The Responses API's errors are OpenAI's: the body as it is when it is OpenAI-shaped (a
    refusal of a chat field `to_chat` wrote renamed to the client's: `reasoning_effort` is
    `reasoning.effort`), else written in that shape."""
    try:
        found = orjson.loads(openai_body)
    except orjson.JSONDecodeError:
        found = None
    error = found.get("error") if isinstance(found, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        param = error.get("param")
        named = CHAT_FIELDS.get(param) if isinstance(param, str) else None
        if named is None:
            return openai_body
        # A refusal of a chat field `to_chat` wrote: named as the client sent it.
        message = error["message"].replace(f"'{param}'", f"'{named}'", 1)
        return orjson.dumps({**found, "error": {**error, "message": message, "param": named}})
    message = openai_body[:500].decode("utf-8", "replace").strip() or f"HTTP {status}"
    return openai_error_body(message, "server_error" if status >= 500 else "invalid_request_error")


def stream_error_event(message: str, kept: list[bytes] | None = None, sequence_number: int | None = None,
                       code: str = "upstream_stream_error") -> bytes:
    """The Responses stream's `error` event: the documented fields (code, message, param) at the
    top, and the same under `error`, as OpenAI sends it, which is what makes the `openai` SDK
    raise APIError mid-stream. Numbered after the last of the stream's `kept` events."""
    if sequence_number is None:
        sequence_number = _next_sequence(kept or [])
    error = {"type": "api_error", "code": code, "message": message, "param": None}
    return event("error", sequence_number, {"code": code, "message": message, "param": None, "error": error})


_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


def _next_sequence(kept: list[bytes]) -> int:
    tail = b""
    for chunk in reversed(kept):
        tail = chunk + tail
        found = _SEQUENCE.findall(tail)
        if found:
            return int(found[-1]) + 1
    return 0


# ---- streams ---------------------------------------------------------------------------------------

def event(name: str, sequence_number: int, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(
        {"type": name, "sequence_number": sequence_number, **data}) + b"\n\n"


class ChatToEvents:
    """A chat stream's chunks, re-emitted as Responses events in OpenAI's order: response.created
    and response.in_progress at the first chunk; then one output item at a time (the one open is
    closed when the next opens): a message (content_part.added, output_text.delta..., .done,
    content_part.done; a refusal part likewise) or a function_call per tool call
    (function_call_arguments.delta..., .done), each between output_item.added and .done; and at
    `[DONE]` response.completed, or response.incomplete (the token limit, a content filter),
    carrying the whole response with its usage.

    `request_payload` is the client's Responses request, echoed in the response objects."""

    def __init__(self, request_payload: dict[str, Any] | None = None) -> None:
        self.request = request_payload if isinstance(request_payload, dict) else {}
        self.sequence = 0
        self.head: dict[str, Any] | None = None
        self.output: list[dict[str, Any]] = []   # the items so far, as their done events give them
        self.open: dict[str, Any] | None = None  # the item being written (the last one), if any
        self.part: dict[str, Any] | None = None  # the open message's open content part, if any
        self.pieces: list[str] = []              # the open part's text, or the open call's arguments
        self.calls: dict[int, dict[str, Any]] = {}   # a chat tool call's index -> its item
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            return self.error(str(error.get("message") or "the provider's stream failed"))
        out = [] if self.head is not None else [self._start(chunk)]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for part in chunk.get("choices") or ():
            if part.get("index", 0) != 0:
                continue   # a response has one answer
            delta = part.get("delta") or {}
            if delta.get("content"):
                out.append(self._text("output_text", delta["content"]))
            if delta.get("refusal"):
                out.append(self._text("refusal", delta["refusal"]))
            for call in delta.get("tool_calls") or ():
                out.append(self._call(call))
            if part.get("finish_reason"):
                self.finish = part["finish_reason"]
        return b"".join(out)

    def end(self) -> bytes:
        """What follows the chat stream's `[DONE]`: the last item closed, and the response."""
        out = [] if self.head is not None else [self._start({})]
        status, incomplete = _status(self.finish)
        if not self.output:   # nothing said: one empty message, as in a JSON answer
            out.append(self._open_message())
            out.append(self._open_part("output_text"))
        if self.open is not None:
            out.append(self._close("incomplete" if status == "incomplete" else "completed"))
        response_now = _response(self.head, self.request, status, self.output, usage(self.usage), incomplete)
        out.append(self._event("response.completed" if status == "completed" else "response.incomplete",
                               {"response": response_now}))
        return b"".join(out)

    def error(self, message: str) -> bytes:
        out = stream_error_event(message, sequence_number=self.sequence)
        self.sequence += 1
        return out

    def _event(self, name: str, data: dict[str, Any]) -> bytes:
        out = event(name, self.sequence, data)
        self.sequence += 1
        return out

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self.head = {"base": _base(chunk.get("id")), "created": chunk.get("created") or int(time.time()),
                     "model": chunk.get("model") or self.request.get("model")}
        started = _response(self.head, self.request, "in_progress", [], None, None)
        return self._event("response.created", {"response": started}) + \
            self._event("response.in_progress", {"response": started})

    def _text(self, kind: str, piece: str) -> bytes:
        out = b""
        if self.open is None or self.open["type"] != "message":
            out += self._open_message()
        if self.part is None or self.part["type"] != kind:
            out += self._open_part(kind)
        item, name = self.open, "response.output_text.delta" if kind == "output_text" else "response.refusal.delta"
        self.pieces.append(piece)
        data: dict[str, Any] = {"item_id": item["id"], "output_index": len(self.output) - 1,
                                "content_index": len(item["content"]) - 1, "delta": piece}
        if kind == "output_text":
            data["logprobs"] = []
        return out + self._event(name, data)

    def _call(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        function = call.get("function") or {}
        out = b""
        item = self.calls.get(index)
        if item is None:
            out += self._close("completed") if self.open is not None else b""
            item = self.calls[index] = _call_item(self.head["base"], len(self.output), call.get("id"),
                                                  function.get("name"), "in_progress")
            self.open = item
            self.output.append(item)
            out += self._event("response.output_item.added", {"output_index": len(self.output) - 1, "item": item})
        arguments = function.get("arguments")
        if arguments:
            if item is self.open:
                self.pieces.append(arguments)
                out += self._event("response.function_call_arguments.delta", {
                    "item_id": item["id"], "output_index": len(self.output) - 1, "delta": arguments})
            else:   # a call's arguments after the next item opened (no translating adapter interleaves
                item["arguments"] += arguments   # parallel calls): kept for the final response
        return out

    def _open_message(self) -> bytes:
        out = self._close("completed") if self.open is not None else b""
        self.open = _message_item(self.head["base"], len(self.output), [], "in_progress")
        self.output.append(self.open)
        return out + self._event("response.output_item.added", {"output_index": len(self.output) - 1,
                                                                "item": self.open})

    def _open_part(self, kind: str) -> bytes:
        out = self._close_part() if self.part is not None else b""
        item = self.open
        self.part = _text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
        item["content"].append(self.part)
        return out + self._event("response.content_part.added", {
            "item_id": item["id"], "output_index": len(self.output) - 1, "content_index": len(item["content"]) - 1,
            "part": self.part})

    def _close_part(self) -> bytes:
        item, part = self.open, self.part
        said, self.pieces, self.part = "".join(self.pieces), [], None
        where = {"item_id": item["id"], "output_index": len(self.output) - 1, "content_index": len(item["content"]) - 1}
        if part["type"] == "output_text":
            part["text"] = said
            out = self._event("response.output_text.done", {**where, "text": said, "logprobs": []})
        else:
            part["refusal"] = said
            out = self._event("response.refusal.done", {**where, "refusal": said})
        return out + self._event("response.content_part.done", {**where, "part": part})

    def _close(self, status: str) -> bytes:
        """The open item's done events (it is the last item)."""
        item, out = self.open, b""
        where = {"item_id": item["id"], "output_index": len(self.output) - 1}
        if item["type"] == "message":
            out = self._close_part() if self.part is not None else b""
        else:
            item["arguments"] = "".join(self.pieces)
            self.pieces = []
            out = self._event("response.function_call_arguments.done", {**where, "arguments": item["arguments"]})
        item["status"] = status
        self.open = None
        return out + self._event("response.output_item.done", {"output_index": where["output_index"], "item": item})


def render_stream(chat_sse: AsyncIterator[bytes],
                        request_payload: dict[str, Any] | None = None) -> AsyncIterator[bytes]:
    """A chat stream (OpenAI SSE bytes) as this API's events, as it arrives."""
    return rewritten(chat_sse, ChatToEvents(request_payload))


def replay(chat_sse: Iterable[bytes], request_payload: dict[str, Any] | None = None) -> list[bytes]:
    """A whole chat stream (a cached answer's) as this API's events."""
    return replayed(chat_sse, ChatToEvents(request_payload))


# ---- a Responses answer, in the chat form ------------------------------------------------------------

def chat_chunks(kept: Iterable[bytes], model: str) -> list[bytes]:
    """A Responses stream's kept events (OpenAI's own, or re-emitted here) as the chat chunks they
    amount to, for usage and the cache: text, refusals and function calls from their deltas (or
    from the item's done event, when the deltas left something out), the finish reason and usage
    from response.completed or response.incomplete. A stream that failed ends where it failed."""
    reading, out = _EventsToChat(model), []
    for name, data in complete_events(kept):
        try:
            found = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(found, dict):
            continue
        kind = found.get("type", name)
        if kind in ("error", "response.failed"):
            break
        try:
            chunk = reading.read(kind, found)
        except ValueError:
            return []
        if chunk:
            out.append(chunk)
        if kind in ("response.completed", "response.incomplete"):
            break
    return out


class _EventsToChat:
    def __init__(self, model: str):
        self.model = model
        self.chunks: shape.Chunks | None = None
        self.calls: dict[int, int] = {}        # an item's output_index -> its chat tool call index
        self.said: dict[tuple[int, str], list[str]] = {}   # (output_index, text | refusal | arguments) -> sent

    def read(self, kind: str, event: dict[str, Any]) -> bytes | None:
        if kind == "response.created":
            found = _dict(event.get("response"))
            created = found.get("created_at")
            self.chunks = shape.Chunks(_chat_id(found.get("id")), str(found.get("model") or self.model),
                                       int(created) if isinstance(created, (int, float)) and created else None)
            return self.chunks.delta({"role": "assistant", "content": ""})
        if kind == "response.queued":
            return None
        chunks = self.chunks
        if chunks is None:
            raise ValueError(f"the stream began with {kind}, not response.created")
        index = event.get("output_index")
        if kind == "response.output_item.added":
            item = _dict(event.get("item"))
            return self._call(index, item) if item.get("type") == "function_call" else None
        if kind == "response.output_text.delta":
            return self._say(index, "text", event.get("delta"))
        if kind == "response.refusal.delta":
            return self._say(index, "refusal", event.get("delta"))
        if kind == "response.function_call_arguments.delta" and index in self.calls:
            return self._say(index, "arguments", event.get("delta"))
        if kind == "response.output_item.done":
            return self._done(index, _dict(event.get("item")))
        if kind in ("response.completed", "response.incomplete"):
            found = _dict(event.get("response"))
            finished = chunks.delta({}, _finish(found, bool(self.calls)))
            usage_now = chat_usage(found.get("usage"))
            return finished + (chunks.usage(usage_now) if usage_now else b"") + shape.DONE
        return None   # in_progress, content parts, the text's done events, hosted tools' events

    def _call(self, index: Any, item: dict[str, Any]) -> bytes:
        self.calls[index] = len(self.calls)
        self.said[(index, "arguments")] = [str(item.get("arguments") or "")]
        return self.chunks.delta({"tool_calls": [{
            "index": self.calls[index], "id": item.get("call_id"), "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""}}]})

    def _say(self, index: Any, what: str, piece: Any) -> bytes | None:
        if not isinstance(piece, str) or not piece:
            return None
        self.said.setdefault((index, what), []).append(piece)
        if what == "arguments":
            return self.chunks.delta({"tool_calls": [{"index": self.calls[index], "function": {"arguments": piece}}]})
        return self.chunks.delta({"content" if what == "text" else "refusal": piece})

    def _done(self, index: Any, item: dict[str, Any]) -> bytes | None:
        """What the item's deltas left out (a server may send an item whole, in its done event)."""
        if item.get("type") == "function_call":
            if index not in self.calls:
                return self._call(index, item)
            return self._rest(index, "arguments", item.get("arguments"))
        if item.get("type") != "message":
            return None
        content = [p for p in item.get("content") or () if isinstance(p, dict)]
        text = "".join(str(p.get("text") or "") for p in content if p.get("type") == "output_text")
        refusal = "".join(str(p.get("refusal") or "") for p in content if p.get("type") == "refusal")
        return (self._rest(index, "text", text) or b"") + (self._rest(index, "refusal", refusal) or b"") or None

    def _rest(self, index: Any, what: str, whole: Any) -> bytes | None:
        said = "".join(self.said.get((index, what), ()))
        if not isinstance(whole, str) or len(whole) <= len(said) or not whole.startswith(said):
            return None
        return self._say(index, what, whole[len(said):])


def render(completion: dict[str, Any], payload: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps(response(completion, payload or {}))


def completed(kept: list[bytes]) -> bool:
    """Whether a stream (its kept bytes) ended with response.completed or response.incomplete."""
    return last_event_name(kept) in (b"response.completed", b"response.incomplete")


def completion(response_dict: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """A Responses JSON answer (OpenAI's own) as the chat.completion it amounts to, for usage and
    the cache. Raises ValueError when it is not a response object."""
    output = response_dict.get("output") if isinstance(response_dict, dict) else None
    if not isinstance(output, list) or response_dict.get("object") != "response":
        raise ValueError("the body is not a response")
    texts, refusals, calls = [], [], []
    for item in output:
        item = _dict(item)
        if item.get("type") == "message":
            for part in item.get("content") or ():
                part = _dict(part)
                if part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
        elif item.get("type") == "function_call":
            calls.append(shape.tool_call(str(item.get("call_id")), str(item.get("name")),
                                         str(item.get("arguments") or "")))
    message = shape.message("".join(texts) if texts else None, calls, "".join(refusals) if refusals else None)
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(response_dict, bool(calls))}
    created = response_dict.get("created_at")
    return shape.completion(_chat_id(response_dict.get("id")), str(response_dict.get("model") or ""), [choice],
                            chat_usage(response_dict.get("usage")),
                            int(created) if isinstance(created, (int, float)) and created else None)


def _finish(found: dict[str, Any], called: bool) -> str | None:
    """The chat finish_reason of a response's status; None when it did not finish (failed or
    cancelled part way, or still queued or in progress): what it wrote is no answer to keep."""
    status = found.get("status")
    if status == "incomplete":
        return FINISH.get(_dict(found.get("incomplete_details")).get("reason"), "length")
    if status not in (None, "completed"):
        return None
    return "tool_calls" if called else "stop"


def _chat_id(response_id: Any) -> str:
    return "chatcmpl-" + str(response_id).removeprefix("resp_") if response_id else shape.answer_id()
