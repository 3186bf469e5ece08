"""Amazon Bedrock's Converse API (type `bedrock`): chat completions in OpenAI's shape go out as
Converse requests, and Converse answers, event streams and errors come back in OpenAI's shapes.

A request is `POST {base_url}/model/{modelId}/converse` (or `/converse-stream`), the model id
percent-encoded into one path segment (ids carry ':', ARNs '/'). With the provider's `api_key` it
carries a Bedrock API key (`Authorization: Bearer`); without, it is signed with SigV4 by botocore
(service "bedrock", the provider's region) with the credentials botocore's usual chain finds (the
environment, ~/.aws, a profile's credential_process or SSO, a container or instance role), looked up
once when the provider is built and refreshed by botocore when they are temporary.

A stream comes back as AWS event-stream frames (application/vnd.amazon.eventstream), decoded with
botocore's parser, each event turned into OpenAI chunks as it arrives; an exception frame mid-stream
is a StreamFailed. Embeddings are not served (Converse has none).
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Mapping
from urllib.parse import quote

import aiohttp
import botocore.session
import orjson
import yarl
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from ..config import ProviderConfig
from ..errors import GatewayError, bad_request
from . import shape
from .base import CHAT, Adapter, Call, Outgoing, StreamFailed, openai_error
from .shape import unsupported

log = logging.getLogger("gateway.providers")

TYPE = "bedrock"
EVENT_STREAM = "application/vnd.amazon.eventstream"

# Converse's stopReason as OpenAI's finish_reason. malformed_model_output and malformed_tool_use
# are not here: such an answer is no answer (the target failed), not one to hand to the client.
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}

# Bedrock's error statuses (one per exception: ValidationException 400, AccessDeniedException and the
# signature errors 403, ResourceNotFoundException 404, ModelTimeoutException 408, ModelErrorException
# 424, ThrottlingException and ModelNotReadyException 429, InternalServerException 500,
# ServiceUnavailableException 503) as OpenAI's status, type and code. 408 and 424 are statuses
# OpenAI clients do not know as the model's failure: they become a gateway timeout and a bad gateway.
ERRORS = {
    400: (400, "invalid_request_error", None),
    403: (403, "invalid_request_error", "permission_denied"),
    404: (404, "invalid_request_error", "model_not_found"),
    408: (504, "api_error", "upstream_timeout"),
    424: (502, "api_error", "upstream_error"),
    429: (429, "rate_limit_error", "rate_limit_exceeded"),
    500: (500, "api_error", "upstream_error"),
    503: (503, "api_error", "upstream_error"),
}

# The request fields Converse has a place for (or, `stream_options`, the gateway handles itself).
MAPPED = frozenset({"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
                    "temperature", "top_p", "stop", "tools", "tool_choice", "response_format", "user",
                    "metadata", "service_tier"})
# Fields Converse has no place for, accepted only at the value that asks for nothing.
AT_DEFAULT: dict[str, tuple[Any, ...]] = {
    "n": (1,), "logprobs": (False,), "top_logprobs": (0,), "seed": (), "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0), "logit_bias": ({},), "parallel_tool_calls": (True,), "store": (False,),
    "modalities": (["text"],),
}
SERVICE_TIERS = {"auto": None, "default": None, "flex": "flex", "priority": "priority"}


class BedrockAdapter(Adapter):
    type = TYPE
    translates = True
    endpoints = frozenset({CHAT})

    def __init__(self, config: ProviderConfig):
        super().__init__(config)   # with api_key, self.headers carries it as `Authorization: Bearer`
        self.credentials = None if config.api_key else _aws_credentials()

    # ---- the request --------------------------------------------------------------------------

    def request(self, call: Call) -> Outgoing:
        self.check(call.path)
        body = orjson.dumps(converse_request(call))
        operation = "converse-stream" if call.stream else "converse"
        url = f"{self.config.base_url}/model/{quote(call.model, safe='')}/{operation}"
        # A client's own Authorization (passed on in open mode) is no credential for AWS.
        headers = {k: v for k, v in call.headers.items() if k != "authorization"}
        headers.update(self.headers)
        if self.config.api_key is None:
            headers = self.signed(url, body, headers)
        # encoded=True: yarl would otherwise decode the %3A of the path, and send what was not signed.
        return Outgoing(yarl.URL(url, encoded=True), body, headers)

    def signed(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """The headers with SigV4's (Authorization, X-Amz-Date, X-Amz-Security-Token), signed now:
        each attempt signs again, so a retry is never refused as a replay of an old date."""
        if self.credentials is None:
            raise GatewayError(500, "This model's provider (type bedrock) has no api_key and botocore found no AWS "
                               "credentials (environment, ~/.aws, role) when the gateway started.",
                               "server_error", "provider_credentials_missing")
        try:
            # Frozen: a refreshable set refreshes here if due, and the three parts come from one set.
            credentials = self.credentials.get_frozen_credentials()
        except Exception as exc:   # botocore passes on whatever failed in a due refresh (STS, a role, a process)
            raise GatewayError(502, f"This model's provider (type bedrock) could not refresh its AWS credentials: "
                               f"{exc}", "api_error", "provider_credentials_failed") from None
        request = AWSRequest("POST", url, data=body, headers=headers)
        SigV4Auth(credentials, "bedrock", self.config.region).add_auth(request)
        return dict(request.headers.items())

    def is_stream(self, content_type: str) -> bool:
        return content_type.startswith(EVENT_STREAM)

    # ---- the answer ---------------------------------------------------------------------------

    def answer(self, path: str, data: dict[str, Any], call_model: str) -> dict[str, Any]:
        try:
            blocks = data["output"]["message"]["content"]
            stop, usage = data["stopReason"], data["usage"]
        except (KeyError, TypeError):
            raise ValueError("the Converse answer has no output.message.content, stopReason or usage") from None
        if not isinstance(blocks, list):
            raise ValueError("the Converse answer's content is not a list")
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in blocks:
            if not isinstance(block, dict):
                raise ValueError("a Converse content block is not an object")
            if isinstance(block.get("text"), str):
                text.append(block["text"])
            elif isinstance(block.get("toolUse"), dict):
                calls.append(_tool_call(block["toolUse"]))
            # Other blocks (reasoningContent, citationsContent) have no place in a chat.completion,
            # and come only from features the gateway never asks for.
        message = shape.message("".join(text) if text or not calls else None, calls)
        choice = {"index": 0, "message": message, "finish_reason": finish_reason(stop), "logprobs": None}
        return shape.completion(shape.answer_id(), call_model, [choice], converse_usage(usage))

    async def stream(self, response: aiohttp.ClientResponse, call_model: str) -> AsyncIterator[bytes]:
        events = StreamEvents(shape.Chunks(shape.answer_id(), call_model))
        frames = EventStreamBuffer()
        async for data in response.content.iter_any():
            frames.add_data(data)
            try:
                for frame in frames:
                    out = events.frame(frame)
                    if out:
                        yield out
            except (ParserError, ValueError) as exc:  # a frame that fails its CRC, or an event not as promised
                raise aiohttp.ClientPayloadError(f"invalid Bedrock event stream: {exc}") from None
        if events.complete:
            yield shape.DONE
        # Else the stream ended before messageStop and metadata: no [DONE], the gateway says it broke.

    def error(self, status: int, raw: bytes, content_type: str, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        ours, kind, code = ERRORS.get(status, (status, "api_error" if status >= 500 else "invalid_request_error", None))
        # `x-amzn-ErrorType: ThrottlingException:http://internal.amazon.com/...` names the exception
        named = headers.get("x-amzn-errortype", "").split(":", 1)[0]
        return openai_error(ours, f"Amazon Bedrock answered {status}: {_error_message(raw)}", kind, named or code)


# ---- credentials ------------------------------------------------------------------------------------

def _aws_credentials() -> Credentials | None:
    """botocore's usual chain, once: a refreshable set refreshes itself when signing asks for it."""
    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        log.warning("a bedrock provider has no api_key and botocore found no AWS credentials: its requests will "
                    "fail until the gateway restarts with some")
    return credentials


# ---- OpenAI's request as Converse's ----------------------------------------------------------------

def converse_request(call: Call) -> dict[str, Any]:
    payload = call.payload
    shape.refuse_unknown(TYPE, payload, MAPPED, AT_DEFAULT, call.optional)
    system, messages = conversation(payload["messages"])
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    inference = inference_config(payload, call.pricing.max_tokens)
    if inference:
        body["inferenceConfig"] = inference
    tools = tool_config(payload, messages)
    if tools is not None:
        body["toolConfig"] = tools
    output = output_config(payload)
    if output is not None:
        body["outputConfig"] = output
    metadata = request_metadata(payload)
    if metadata:
        body["requestMetadata"] = metadata
    tier = service_tier(payload)
    if tier is not None:
        body["serviceTier"] = {"type": tier}
    return body


def conversation(given: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI's messages as Converse's `system` blocks and `messages` turns. Converse wants turns
    that alternate user/assistant: consecutive ones of one role (a tool result, then the user's
    text) become one turn, their blocks in order. System and developer messages go to `system`."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(given):
        where = f"messages[{i}]"
        role = message["role"]
        if role in ("system", "developer"):
            text = shape.text_of(message.get("content"), where)
            if text:
                system.append({"text": text})
            continue
        if role == "user":
            blocks = user_blocks(message, where)
        elif role == "assistant":
            blocks = assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [tool_result(message, where)]
        else:
            raise unsupported(TYPE, f"The '{role}' role", f"{where}.role")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def user_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(shape.parts(message.get("content"), where)):
        here = f"{where}.content[{j}]"
        if part["type"] == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request(f"{here}.text must be a string.", here)
            if text:   # Converse refuses a blank text block; an empty part says nothing
                blocks.append({"text": text})
        elif part["type"] == "image_url":
            blocks.append(image_block(part, here))
        else:
            raise unsupported(TYPE, f"A '{part['type']}' content part", here)
    return blocks


def image_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    media_type, data = shape.image(part, where)
    if media_type == "url":
        raise unsupported(TYPE, "An image by URL (Converse takes the image's bytes: send it as a data URL)",
                          f"{where}.image_url")
    image_format = IMAGE_FORMATS.get(media_type)
    if image_format is None:
        raise unsupported(TYPE, f"An image of type {media_type} (Converse takes png, jpeg, gif and webp)",
                          f"{where}.image_url")
    # The JSON protocol carries a blob as base64: the data URL's own text, already checked.
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _assistant_text(message.get("content"), where)
    if text:
        blocks.append({"text": text})
    for id, name, arguments in shape.tool_calls(message, where):
        blocks.append({"toolUse": {"toolUseId": id, "name": name, "input": arguments}})
    return blocks


def _assistant_text(content: Any, where: str) -> str:
    """An assistant message's text: its text parts (a refusal part is what it said, too)."""
    out = []
    for j, part in enumerate(shape.parts(content, where)):
        value = part.get(part["type"]) if part["type"] in ("text", "refusal") else None
        if not isinstance(value, str):
            raise bad_request(f"{where}.content[{j}] must be a text part here.", f"{where}.content[{j}]")
        out.append(value)
    return "".join(out)


def tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{where}.tool_call_id is required for a tool message.", f"{where}.tool_call_id")
    text = shape.text_of(message.get("content"), where)
    return {"toolResult": {"toolUseId": call_id, "content": [{"text": text}] if text else []}}


def inference_config(payload: dict[str, Any], model_max_tokens: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    limit = shape.max_tokens(payload) or model_max_tokens
    if limit is not None:
        out["maxTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        value = payload.get(ours)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad_request(f"'{ours}' must be a number.", ours)
            out[theirs] = value   # Converse takes 0..1 and says so itself when a value is outside
    stop = shape.stop_sequences(payload)
    if stop:
        out["stopSequences"] = stop
    return out


def tool_config(payload: dict[str, Any], turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    functions = shape.tools(payload)
    choice = shape.tool_choice(payload)
    if not functions:
        if choice not in (None, "auto", "none"):
            raise bad_request("'tool_choice' needs 'tools'.", "tool_choice")
        return None
    if choice == "none":
        # Converse has no "none": without toolConfig the model cannot call a tool. But a
        # conversation that has tool calls in it needs the toolConfig that declares them.
        if _has_tool_blocks(turns):
            raise unsupported(TYPE, "tool_choice 'none' in a conversation that has tool calls", "tool_choice")
        return None
    config: dict[str, Any] = {"tools": [{"toolSpec": tool_spec(f, i)} for i, f in enumerate(functions)]}
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice is not None:
        config["toolChoice"] = {"tool": {"name": choice}}
    return config


def tool_spec(function: dict[str, Any], i: int) -> dict[str, Any]:
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise bad_request(f"tools[{i}].function.parameters must be a JSON schema object.", f"tools[{i}]")
    spec: dict[str, Any] = {"name": function["name"], "inputSchema": {"json": parameters}}
    description = function.get("description")
    if isinstance(description, str) and description:   # Converse refuses an empty description
        spec["description"] = description
    if function.get("strict") is True:
        spec["strict"] = True
    return spec


def _has_tool_blocks(turns: list[dict[str, Any]]) -> bool:
    return any("toolUse" in block or "toolResult" in block for turn in turns for block in turn["content"])


def output_config(payload: dict[str, Any]) -> dict[str, Any] | None:
    """response_format json_schema as Converse's structured output (outputConfig.textFormat: the
    schema as a JSON string). json_object has no Converse equivalent: a schema is required."""
    given = payload.get("response_format")
    if given is None:
        return None
    kind = given.get("type") if isinstance(given, dict) else None
    if kind == "text":
        return None
    if kind != "json_schema":
        if not isinstance(kind, str):
            raise bad_request("'response_format' must be an object with a 'type'.", "response_format")
        raise unsupported(TYPE, f"response_format '{kind}' (Converse takes a json_schema)", "response_format")
    spec = given.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise bad_request("'response_format.json_schema.schema' must be a JSON schema object here.",
                          "response_format")
    definition: dict[str, Any] = {"schema": orjson.dumps(spec["schema"]).decode()}
    for name in ("name", "description"):
        if isinstance(spec.get(name), str) and spec[name]:
            definition[name] = spec[name]
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


def request_metadata(payload: dict[str, Any]) -> dict[str, str]:
    """`user` and `metadata` as Converse's requestMetadata (what its invocation logs are filtered by)."""
    out: dict[str, str] = {}
    metadata = payload.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise bad_request("'metadata' must be an object of strings.", "metadata")
        out.update(metadata)
    user = payload.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise bad_request("'user' must be a string.", "user")
        out["user"] = user
    return out


def service_tier(payload: dict[str, Any]) -> str | None:
    tier = payload.get("service_tier")
    if tier is None:
        return None
    if not isinstance(tier, str) or tier not in SERVICE_TIERS:
        raise unsupported(TYPE, f"service_tier {orjson.dumps(tier).decode()[:40]}", "service_tier")
    return SERVICE_TIERS[tier]


# ---- Converse's answer as OpenAI's ------------------------------------------------------------------

def finish_reason(stop: Any) -> str:
    found = FINISH.get(stop) if isinstance(stop, str) else None
    if found is None:
        raise ValueError(f"the model stopped with {stop!r}, which is no answer")
    return found


def converse_usage(usage: Any) -> dict[str, Any]:
    """Converse's TokenUsage in OpenAI's shape: inputTokens leaves out the prompt-cache reads and
    writes, OpenAI's prompt_tokens counts them."""
    if not isinstance(usage, dict):
        raise ValueError("the Converse usage is not an object")
    counts = [usage.get(k, 0) for k in ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens")]
    if not all(type(n) is int and n >= 0 for n in counts):
        raise ValueError("the Converse usage has counts that are not integers")
    prompt, completion, read, write = counts
    return shape.usage(prompt + read + write, completion, read, write)


def _tool_call(use: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(use.get("toolUseId"), str) or not isinstance(use.get("name"), str):
        raise ValueError("a Converse toolUse block has no toolUseId or name")
    return shape.tool_call(use["toolUseId"], use["name"], use.get("input"))


def _error_message(raw: bytes) -> str:
    """The message of Bedrock's error body ({"message": ...}; {"Message": ...} from the API-key check)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        for name in ("message", "Message"):
            if isinstance(data.get(name), str):
                return data[name]
    return raw[:500].decode("utf-8", "replace") or "(no message)"


class StreamEvents:
    """ConverseStream's events, one frame at a time, as OpenAI chunk bytes."""

    def __init__(self, chunks: shape.Chunks):
        self.chunks = chunks
        self.tool_index: dict[int, int] = {}   # a toolUse's contentBlockIndex -> its OpenAI tool call index
        self.finished = False
        self.complete = False                   # messageStop and metadata both came
        self.handlers = {"messageStart": self.message_start, "contentBlockStart": self.block_start,
                         "contentBlockDelta": self.block_delta, "messageStop": self.message_stop,
                         "metadata": self.metadata}

    def frame(self, frame: EventStreamMessage) -> bytes | None:
        headers = frame.headers
        kind = headers.get(":message-type")
        if kind == "exception":   # throttlingException, modelStreamErrorException, validationException...
            raise StreamFailed(f"{headers.get(':exception-type')}: {_error_message(frame.payload)}")
        if kind == "error":
            raise StreamFailed(f"{headers.get(':error-code')}: {headers.get(':error-message')}")
        event = orjson.loads(frame.payload)
        if not isinstance(event, dict):
            raise ValueError("an event's payload is not an object")
        # contentBlockStop says nothing OpenAI's chunks need; an event type new to this adapter neither.
        handle = self.handlers.get(headers.get(":event-type"))
        return handle(event) if handle is not None else None

    def message_start(self, event: dict[str, Any]) -> bytes:
        return self.chunks.delta({"role": "assistant", "content": ""})

    def block_start(self, event: dict[str, Any]) -> bytes | None:
        start = event.get("start")
        use = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(use, dict):
            return None
        call = _tool_call(use)
        index = self.tool_index[event.get("contentBlockIndex")] = len(self.tool_index)
        return self.chunks.delta({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                                  "function": {"name": call["function"]["name"], "arguments": ""}}]})

    def block_delta(self, event: dict[str, Any]) -> bytes | None:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            raise ValueError("a contentBlockDelta without its delta")
        if isinstance(delta.get("text"), str):
            return self.chunks.delta({"content": delta["text"]})
        use = delta.get("toolUse")
        if isinstance(use, dict):
            index = self.tool_index.get(event.get("contentBlockIndex"))
            if index is None or not isinstance(use.get("input"), str):
                raise ValueError("a toolUse delta without its contentBlockStart")
            return self.chunks.delta({"tool_calls": [{"index": index, "function": {"arguments": use["input"]}}]})
        return None   # reasoningContent, citation: not in a chat.completion.chunk

    def message_stop(self, event: dict[str, Any]) -> bytes:
        try:
            finish = finish_reason(event.get("stopReason"))
        except ValueError as exc:
            raise StreamFailed(str(exc)) from None
        self.finished = True
        return self.chunks.delta({}, finish)

    def metadata(self, event: dict[str, Any]) -> bytes:
        self.complete = self.finished
        return self.chunks.usage(converse_usage(event.get("usage")))
