"""A target: one model a route may call, and the provider that serves it."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig
from .client import Provider


@dataclass(frozen=True)
class Target:
    """One model a route may call: the name clients know it by, and what goes upstream."""

    model: str
    upstream_model: str
    provider: Provider
    pricing: ModelConfig
