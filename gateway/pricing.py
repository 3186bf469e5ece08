"""What an answer cost, from the config's per-model prices (USD per 1M tokens)."""

from __future__ import annotations

from typing import Any

from .config import ModelConfig


def has_prices(model: ModelConfig) -> bool:
    return model.input_per_1m is not None or model.output_per_1m is not None


def cost_usd(model: ModelConfig, usage: dict[str, Any] | None) -> float:
    """Prompt tokens at the input price (cached ones at the cached price when the provider reports
    them and the model has one), completion tokens at the output price. No prices: 0, never a guess."""
    if not usage:
        return 0.0
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    input_price = model.input_per_1m or 0.0
    cached_price = model.cached_input_per_1m if model.cached_input_per_1m is not None else input_price
    cached = min(cached, prompt)
    return ((prompt - cached) * input_price + cached * cached_price + completion * (model.output_per_1m or 0.0)) / 1e6
