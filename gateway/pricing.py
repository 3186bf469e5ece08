"""What an answer cost, from the config's per-model prices (USD per 1M tokens)."""

from __future__ import annotations

from typing import Any

from .config import ModelConfig


def has_prices(model: ModelConfig) -> bool:
    return model.input_per_1m is not None or model.output_per_1m is not None


def cost_usd(model: ModelConfig, usage: dict[str, Any] | None) -> float:
    """Prompt tokens at the input price (those read from the provider's prompt cache at the cache
    read price, those written to it at the cache write price, when the provider reports them and
    the model has those prices), completion tokens at the output price. No prices: 0, never a guess.

    The usage is OpenAI's shape: `prompt_tokens` counts every prompt token, cached or not;
    `prompt_tokens_details.cached_tokens` the cache reads, `.cache_write_tokens` the writes (what
    the Anthropic, Gemini and Bedrock adapters fill in from their providers' figures)."""
    if not usage:
        return 0.0
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    if not isinstance(details, dict):
        details = {}
    input_price = model.input_per_1m or 0.0
    read_price = model.cache_read_per_1m if model.cache_read_per_1m is not None else model.cached_input_per_1m
    write_price = model.cache_write_per_1m if model.cache_write_per_1m is not None else input_price
    cached = min(int(details.get("cached_tokens") or 0), prompt)
    written = min(int(details.get("cache_write_tokens") or 0), prompt - cached)
    return ((prompt - cached - written) * input_price + cached * (input_price if read_price is None else read_price)
            + written * write_price + completion * (model.output_per_1m or 0.0)) / 1e6
