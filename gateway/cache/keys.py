"""Cache keys: a hash of canonical JSON of everything that changes the answer.

Every request field is in the key except the few known not to change the answer. A denylist, not
an allowlist: a parameter OpenAI adds next year changes the key instead of causing a wrong hit.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any

import orjson

# Fields that never change what the model answers. `model` is replaced by the resolved route.
NOT_IN_KEY = frozenset({"model", "stream", "stream_options", "user", "metadata", "store", "service_tier"})

KEY_PREFIX = "gw:v1:"


def _digest(material: dict[str, Any]) -> str:
    canonical = orjson.dumps(material, option=orjson.OPT_SORT_KEYS)
    if not canonical.isascii():
        # NFC over the whole document equals NFC of each string in it: every string is preceded by
        # a quote, a starter that composes with no combining mark. ASCII text is already NFC.
        text = canonical.decode()
        if not unicodedata.is_normalized("NFC", text):
            canonical = unicodedata.normalize("NFC", text).encode()
    return hashlib.blake2b(canonical, digest_size=20).hexdigest()


def exact_key(route: str, targets: list[str], tenant: str, payload: dict[str, Any], api: str | None = None) -> str:
    """`api`: the inbound API when not chat completions ("messages"): each has a key space of its own."""
    params = {k: v for k, v in payload.items() if k not in NOT_IN_KEY}
    material = {"route": route, "targets": targets, "tenant": tenant, "request": params}
    if api is not None:
        material["api"] = api
    return KEY_PREFIX + _digest(material)


def semantic_partition(route: str, targets: list[str], tenant: str, payload: dict[str, Any],
                       api: str | None = None) -> str:
    """Everything but the last user message: only requests equal in all of it may share a hit."""
    params = {k: v for k, v in payload.items() if k not in NOT_IN_KEY}
    params["messages"] = params["messages"][:-1]
    material = {"route": route, "targets": targets, "tenant": tenant, "request": params, "layer": "semantic"}
    if api is not None:
        material["api"] = api
    return _digest(material)


def tenant_of(key_name: str | None, authorization: str | None) -> str:
    """The gateway key's name, else a hash of the client's bearer token, else "" (anonymous)."""
    if key_name is not None:
        return "key:" + key_name
    if authorization:
        return "token:" + hashlib.sha256(authorization.encode()).hexdigest()[:32]
    return ""
