"""A fake Amazon Bedrock runtime (Converse and ConverseStream) for tests, strict the way the real one is.

Written from the public Converse reference; botocore's bedrock-runtime service model is the
machine-readable copy of it, and the fake checks requests against it (unknown fields, unions with
one member, required members, minimums), then the rules the reference states in prose: the first
message is the user's, roles alternate, no blank text, a toolResult answers a toolUse of the turn
before (and every toolUse is answered), toolUse and toolResult blocks need a toolConfig, values in
their ranges and enums. What it refuses gets Bedrock's error: the status, `x-amzn-ErrorType` and a
`{"message": ...}` body.

Every request is authenticated as Bedrock does: a SigV4 signature is recomputed here with botocore
from the credentials the fake knows (a wrong secret or a changed body: 403 InvalidSignatureException;
an unknown access key or session token: 403 UnrecognizedClientException), or a bearer API key is
checked.

Answers: JSON for /converse, and for /converse-stream AWS event-stream frames (prelude, headers,
payload, CRC32s: written by a small encoder here) paced by a knob. The answer echoes the last user
turn (its images described), calls the first tool (or the one toolChoice names) unless it has just
been given a tool's result, and is JSON of the schema when outputConfig asks. Usage has cache tokens
by knob. Knobs answer any error type (N times), or send an exception frame or drop the connection
mid-stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import hmac
import itertools
import os
import re
import struct
import uuid
import zlib
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

import botocore.session
import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.validate import ParamValidator

from .fake_server import Served
from .fake_upstream import argument_fragments, placeholder

SERVICE = botocore.session.get_session().get_service_model("bedrock-runtime")
# Each exception's status, as the reference gives them (ValidationException 400, ThrottlingException 429...).
ERRORS = {s.name: s.metadata["error"]["httpStatusCode"] for s in SERVICE.operation_model("Converse").error_shapes}
# The exceptions a ConverseStream can send as a frame mid-stream (modelStreamErrorException...).
STREAM_EXCEPTIONS = [name for name, s in SERVICE.shape_for("ConverseStreamOutput").members.items()
                     if s.metadata.get("exception")]
PATH = re.compile(r"/model/([^/]+)/(converse|converse-stream)")
CREDENTIAL = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/,]+)/(\d{8})/([^/,]+)/([^/,]+)/aws4_request, ?"
                        r"SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})")
SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your "
                      "AWS Secret Access Key and signing method. Consult the service documentation for details.")


@dataclass
class Knobs:
    chunk_delay_s: float = 0.0        # between stream frames
    split_frames: bool = False        # write each frame in two writes (a frame across reads)
    error: str | None = None          # answer with this exception (a key of ERRORS)
    error_times: int = -1             # ...only for the next N requests (-1: always)
    stream_exception: str | None = None   # streams: this exception frame (one of STREAM_EXCEPTIONS)...
    exception_after: int = 1          # ...after this many text deltas
    cut_after: int = -1               # streams: drop the connection after N text deltas
    eof_after: int = -1               # streams: end cleanly after N text deltas, with no messageStop or metadata
    corrupt_after: int = -1           # streams: the text delta after N has a payload byte changed (its CRC fails)
    reply: str | None = None          # the answer's text (default: an echo of the last user turn)
    preamble: str | None = None       # text before a toolUse block
    stop_reason: str | None = None    # a stopReason of the knob's choice
    cache_read: int = 0               # usage.cacheReadInputTokens
    cache_write: int = 0              # usage.cacheWriteInputTokens


@dataclass
class Seen:
    operation: str             # "converse" | "converse-stream"
    model_id: str              # decoded from the path
    raw_path: str              # as sent
    body: dict[str, Any]
    headers: dict[str, str]    # names lower-cased
    auth: str                  # "sigv4" | "bearer"


class Refused(Exception):
    """A request Bedrock refuses: its exception name and message."""

    def __init__(self, name: str, message: str, status: int | None = None, key: str = "message"):
        super().__init__(message)
        self.name = name
        self.status = status or ERRORS.get(name, 400)
        self.key = key   # the body's field: "Message" in the answer of the API-key check


@dataclass
class FakeBedrock(Served):
    region: str = "us-east-1"
    models: set[str] = field(default_factory=set)
    credentials: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # access key -> (secret, token)
    api_keys: set[str] = field(default_factory=set)
    knobs: Knobs = field(default_factory=Knobs)

    def __post_init__(self) -> None:
        self.host, self.port, self.name = "127.0.0.1", 0, "bedrock"
        self.seen: list[Seen] = []
        self.refused: list[Refused] = []
        self._ids = itertools.count(1)

    # ---- control -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        self.knobs = Knobs()
        self.seen.clear()
        self.refused.clear()

    def set(self, **knobs: Any) -> None:
        self.knobs = replace(self.knobs, **knobs)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)  # the path is read raw: see _operation
        return app

    # ---- the server --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            operation, model_id = self._operation(request)
            auth = self._authenticate(request, raw)
            body = self._body(raw, model_id)
            self.seen.append(Seen(operation, model_id, request.raw_path, body,
                                  {k.lower(): v for k, v in request.headers.items()}, auth))
            self._knob_error()
            answer = self._answer(body)
        except Refused as refused:
            self.refused.append(refused)
            return error_response(refused)
        if operation == "converse":
            return web.Response(body=orjson.dumps(answer.json()), content_type="application/json",
                                headers={"x-amzn-RequestId": str(uuid.uuid4())})
        return await self._stream(request, answer)

    def _operation(self, request: web.Request) -> tuple[str, str]:
        # The raw path: a model id's ':' and an ARN's '/' arrive percent-encoded in one segment.
        found = PATH.fullmatch(request.raw_path)
        if request.method != "POST" or found is None:
            raise Refused("UnknownOperationException", "", 404)
        model_id = unquote(found.group(1))
        if model_id not in self.models:
            raise Refused("ValidationException", "The provided model identifier is invalid.")
        return found.group(2), model_id

    def _authenticate(self, request: web.Request, raw: bytes) -> str:
        given = request.headers.get("Authorization")
        if given is None:
            raise Refused("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
        if given.startswith("Bearer "):
            if given[7:] not in self.api_keys:
                raise Refused("AccessDeniedException", "Authentication failed: Please make sure your API Key is valid.",
                              key="Message")
            return "bearer"
        self._verify_signature(request, raw, given)
        return "sigv4"

    def _verify_signature(self, request: web.Request, raw: bytes, given: str) -> None:
        """Recompute the SigV4 signature as AWS does: the canonical request from the path as sent,
        the headers the client says it signed, and the body's SHA-256."""
        found = CREDENTIAL.fullmatch(given)
        if found is None:
            raise Refused("IncompleteSignatureException", f"Authorization header is not a SigV4 one: {given[:40]}", 403)
        access_key, day, region, service, signed, signature = found.groups()
        known = self.credentials.get(access_key)
        token = request.headers.get("X-Amz-Security-Token")
        if known is None or known[1] != token:
            raise Refused("UnrecognizedClientException", "The security token included in the request is invalid.", 403)
        if service != "bedrock" or region != self.region:
            raise Refused("InvalidSignatureException", f"Credential should be scoped to a valid region and to "
                          f"service 'bedrock', not {region}/{service}.", 403)
        stamp = request.headers.get("X-Amz-Date", "")
        names = signed.split(";")
        if "host" not in names or "x-amz-date" not in names or not stamp.startswith(day):
            raise Refused("InvalidSignatureException", SIGNATURE_MISMATCH, 403)
        try:
            when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            raise Refused("InvalidSignatureException", SIGNATURE_MISMATCH, 403) from None
        if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300:
            raise Refused("InvalidSignatureException", f"Signature expired: {stamp} is more than 5 min from now.", 403)
        headers = {name: ",".join(request.headers.getall(name, [])) for name in names}
        signer = SigV4Auth(Credentials(access_key, known[0], token), service, region)
        aws = AWSRequest("POST", f"http://{request.host}{request.raw_path}", data=raw, headers=headers)
        aws.context["timestamp"] = stamp
        expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
        if not hmac.compare_digest(expected, signature):
            raise Refused("InvalidSignatureException", SIGNATURE_MISMATCH, 403)

    def _body(self, raw: bytes, model_id: str) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Refused("ValidationException", "Malformed input request, please reformat your input and try again.")
        if not isinstance(body, dict):
            raise Refused("ValidationException", "Malformed input request, please reformat your input and try again.")
        check_request(body, model_id)
        return body

    def _knob_error(self) -> None:
        knobs = self.knobs
        if knobs.error and knobs.error_times != 0:
            if knobs.error_times > 0:
                self.knobs.error_times -= 1
            raise Refused(knobs.error, f"fake Bedrock {knobs.error}")

    def _answer(self, body: dict[str, Any]) -> "Answer":
        knobs = self.knobs
        tool = tool_to_call(body)
        if tool is not None:
            text = knobs.preamble
            use = {"toolUseId": f"tooluse_{next(self._ids):06d}{os.urandom(6).hex()}", "name": tool["name"],
                   "input": placeholder(tool["inputSchema"]["json"]) or {}}
            stop = "tool_use"
        else:
            text, use, stop = knobs.reply if knobs.reply is not None else answer_text(body), None, "end_turn"
        usage = {"inputTokens": prompt_tokens(body), "outputTokens": len((text or "").split())
                 + (len(orjson.dumps(use["input"]).split(b",")) if use else 0)}
        if knobs.cache_read:
            usage["cacheReadInputTokens"] = knobs.cache_read
        if knobs.cache_write:
            usage["cacheWriteInputTokens"] = knobs.cache_write
        usage["totalTokens"] = sum(usage.values())
        return Answer(text, use, knobs.stop_reason or stop, usage)

    async def _stream(self, request: web.Request, answer: "Answer") -> web.StreamResponse:
        knobs = self.knobs
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream",
                                               "x-amzn-RequestId": str(uuid.uuid4())})
        await response.prepare(request)

        async def send(frame: bytes) -> None:
            if knobs.chunk_delay_s:
                await asyncio.sleep(knobs.chunk_delay_s)
            if knobs.split_frames:
                await response.write(frame[:len(frame) // 2])
                await asyncio.sleep(0.001)
                frame = frame[len(frame) // 2:]
            await response.write(frame)

        try:
            await send(event_frame("messageStart", {"role": "assistant"}))
            block = 0
            if answer.text:
                words = answer.text.split(" ")
                for i, word in enumerate(words):
                    if i == knobs.cut_after:
                        request.transport.close()
                        return response
                    if i == knobs.eof_after:
                        await response.write_eof()
                        return response
                    if knobs.stream_exception and i == knobs.exception_after:
                        await send(exception_frame(knobs.stream_exception, f"fake Bedrock {knobs.stream_exception}"))
                        await response.write_eof()
                        return response
                    piece = word if i == 0 else " " + word
                    frame = event_frame("contentBlockDelta", {"contentBlockIndex": block, "delta": {"text": piece}})
                    if i == knobs.corrupt_after:
                        frame = frame[:-6] + bytes([frame[-6] ^ 1]) + frame[-5:]
                    await send(frame)
                await send(event_frame("contentBlockStop", {"contentBlockIndex": block}))
                block += 1
            if answer.use:
                start = {"toolUse": {"toolUseId": answer.use["toolUseId"], "name": answer.use["name"]}}
                await send(event_frame("contentBlockStart", {"contentBlockIndex": block, "start": start}))
                for piece in argument_fragments(orjson.dumps(answer.use["input"]).decode()):
                    await send(event_frame("contentBlockDelta", {"contentBlockIndex": block,
                                                                 "delta": {"toolUse": {"input": piece}}}))
                await send(event_frame("contentBlockStop", {"contentBlockIndex": block}))
            await send(event_frame("messageStop", {"stopReason": answer.stop}))
            await send(event_frame("metadata", {"usage": answer.usage, "metrics": {"latencyMs": 12}}))
            await response.write_eof()
        except ConnectionError:   # the gateway left mid-stream
            pass
        return response


@dataclass
class Answer:
    text: str | None
    use: dict[str, Any] | None    # a toolUse block's value
    stop: str
    usage: dict[str, int]

    def json(self) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"text": self.text}] if self.text else []
        if self.use:
            content.append({"toolUse": self.use})
        return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": self.stop,
                "usage": self.usage, "metrics": {"latencyMs": 12}}


def error_response(refused: Refused) -> web.Response:
    kind = f"{refused.name}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    return web.Response(status=refused.status, body=orjson.dumps({refused.key: str(refused)}),
                        content_type="application/json",
                        headers={"x-amzn-ErrorType": kind, "x-amzn-RequestId": str(uuid.uuid4())})


# ---- the event-stream encoding (application/vnd.amazon.eventstream) ----------------------------------

def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One frame: prelude (total length, headers length, their CRC32), headers (each: name length,
    name, type 7 = string, value length, value), payload, and the CRC32 of all that came before."""
    head = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        head += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_frame(event_type: str, event: dict[str, Any]) -> bytes:
    # Bedrock pads each event with "p" (letters, of a varying length) so sizes do not give the text away.
    padded = {**event, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: 4 + len(event_type) % 20]}
    return encode_frame({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                        orjson.dumps(padded))


def exception_frame(exception_type: str, message: str) -> bytes:
    return encode_frame({":exception-type": exception_type, ":content-type": "application/json",
                         ":message-type": "exception"}, orjson.dumps({"message": message}))


# ---- what Converse refuses -------------------------------------------------------------------------

def check_request(body: dict[str, Any], model_id: str) -> None:
    report = ParamValidator().validate({"modelId": model_id, **body}, SERVICE.operation_model("Converse").input_shape)
    if report.has_errors():
        raise Refused("ValidationException", report.generate_report())
    messages = body.get("messages") or []
    if not messages or messages[0]["role"] != "user":
        raise Refused("ValidationException", "A conversation must start with a user message. Try again with a "
                      "conversation that starts with a user message.")
    for i, message in enumerate(messages):
        _enum(message["role"], ("user", "assistant"), f"messages.{i}.member.role")
        if i and message["role"] == messages[i - 1]["role"]:
            raise Refused("ValidationException", "A conversation must alternate between user and assistant roles. "
                          "Make sure the conversation alternates between user and assistant roles and try again.")
        if not message["content"]:
            raise Refused("ValidationException", f"The content field in the Message object at messages.{i} is empty. "
                          "Add a ContentBlock object to the content field and try again.")
        for j, block in enumerate(message["content"]):
            _check_block(block, message["role"], f"messages.{i}.content.{j}")
    for j, block in enumerate(body.get("system") or []):
        if "text" in block and not block["text"].strip():
            raise Refused("ValidationException", f"The text field in the system.{j} block is blank.")
    _check_tool_turns(messages, body.get("toolConfig"))
    _check_inference(body.get("inferenceConfig") or {})
    _check_output(body.get("outputConfig"))
    if "serviceTier" in body:
        _enum(body["serviceTier"]["type"], ("priority", "default", "flex", "reserved"), "serviceTier.type")


def _check_block(block: dict[str, Any], role: str, where: str) -> None:
    if "text" in block and not block["text"].strip():
        raise Refused("ValidationException", f"The text field in the ContentBlock object at {where} is blank. Add "
                      "text to the text field, and try again.")
    if "image" in block:
        image = block["image"]
        _enum(image["format"], ("png", "jpeg", "gif", "webp"), f"{where}.image.format")
        data = image["source"].get("bytes")
        try:
            if not isinstance(data, str) or not base64.b64decode(data, validate=True):
                raise binascii.Error
        except (binascii.Error, ValueError):
            raise Refused("ValidationException", f"{where}.image.source.bytes is not base64 of an image.") from None
    if "toolUse" in block and role != "assistant" or "toolResult" in block and role != "user":
        raise Refused("ValidationException", f"{where}: toolUse blocks belong to assistant turns and toolResult "
                      "blocks to user turns.")


def _check_tool_turns(messages: list[dict[str, Any]], tool_config: dict[str, Any] | None) -> None:
    """Every toolResult answers a toolUse of the turn just before, and every toolUse is answered
    in the turn after (when there is one). Tool blocks need a toolConfig."""
    asked: list[str] = []
    for i, message in enumerate(messages):
        uses = [b["toolUse"]["toolUseId"] for b in message["content"] if "toolUse" in b]
        results = [b["toolResult"]["toolUseId"] for b in message["content"] if "toolResult" in b]
        if (uses or results) and tool_config is None:
            raise Refused("ValidationException", "The toolConfig field must be defined when using toolUse and "
                          "toolResult content blocks.")
        if message["role"] == "user":
            if len(results) > len(asked):
                raise Refused("ValidationException", f"The number of toolResult blocks at messages.{i}.content "
                              "exceeds the number of toolUse blocks of previous turn.")
            missing = [u for u in asked if u not in results]
            if missing:
                raise Refused("ValidationException", f"Expected toolResult blocks at messages.{i}.content for the "
                              f"following Ids: {', '.join(missing)}")
        asked = uses
    if tool_config is not None:
        names = [t["toolSpec"]["name"] for t in tool_config["tools"] if "toolSpec" in t]
        if len(set(names)) != len(names):
            raise Refused("ValidationException", "The tool names in toolConfig.tools must be unique.")
        chosen = (tool_config.get("toolChoice") or {}).get("tool")
        if chosen is not None and chosen["name"] not in names:
            raise Refused("ValidationException", f"The tool {chosen['name']} in toolChoice is not one of "
                          "toolConfig.tools.")


def _check_inference(config: dict[str, Any]) -> None:
    for name in ("temperature", "topP"):
        value = config.get(name)
        if value is not None and not 0 <= value <= 1:
            raise Refused("ValidationException", f"1 validation error detected: Value '{value}' at "
                          f"'inferenceConfig.{name}' failed to satisfy constraint: Member must have value less than "
                          "or equal to 1")


def _check_output(config: dict[str, Any] | None) -> None:
    text_format = (config or {}).get("textFormat")
    if text_format is None:
        return
    _enum(text_format["type"], ("json_schema",), "outputConfig.textFormat.type")
    schema = (text_format["structure"].get("jsonSchema") or {}).get("schema")
    try:
        if not isinstance(orjson.loads(schema), dict):
            raise ValueError
    except (ValueError, TypeError):
        raise Refused("ValidationException", "outputConfig.textFormat.structure.jsonSchema.schema must be a JSON "
                      "schema in a string.") from None


def _enum(value: Any, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise Refused("ValidationException", f"1 validation error detected: Value '{value}' at '{where}' failed to "
                      f"satisfy constraint: Member must satisfy enum value set: [{', '.join(allowed)}]")


# ---- what it answers ---------------------------------------------------------------------------------

def tool_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The toolSpec the answer calls: the one toolChoice names, else the first, unless the last
    turn brought tool results and the choice is auto (then the model answers in text)."""
    config = body.get("toolConfig")
    if config is None:
        return None
    specs = [t["toolSpec"] for t in config["tools"] if "toolSpec" in t]
    choice = config.get("toolChoice") or {"auto": {}}
    if "tool" in choice:
        return next(s for s in specs if s["name"] == choice["tool"]["name"])
    last = body["messages"][-1]
    if "auto" in choice and any("toolResult" in b for b in last["content"]):
        return None
    return specs[0] if specs else None


def answer_text(body: dict[str, Any]) -> str:
    output = (body.get("outputConfig") or {}).get("textFormat")
    if output is not None:
        return orjson.dumps(placeholder(orjson.loads(output["structure"]["jsonSchema"]["schema"]))).decode()
    said = []
    for block in body["messages"][-1]["content"]:
        if "text" in block:
            said.append(block["text"])
        elif "image" in block:
            size = len(base64.b64decode(block["image"]["source"]["bytes"]))
            said.append(f"[an image: {block['image']['format']}, {size} bytes]")
        elif "toolResult" in block:
            said.append("tool said: " + " ".join(c.get("text", "") for c in block["toolResult"]["content"]))
    return "Echo: " + " ".join(said)


def prompt_tokens(body: dict[str, Any]) -> int:
    words = sum(len(b.get("text", "").split()) for b in body.get("system") or [])
    for message in body["messages"]:
        words += 3 + sum(len(b.get("text", "").split()) for b in message["content"])
    return words
