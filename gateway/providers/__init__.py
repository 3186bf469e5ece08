"""Provider adapters: one module a provider `type` (see base.py for what an adapter does)."""

from __future__ import annotations

from ..config import ProviderConfig
from .base import Adapter, OpenAIAdapter


def adapter_for(config: ProviderConfig) -> Adapter:
    # Imported when a provider of that type is configured: bedrock's brings botocore.
    if config.type == "anthropic":
        from .anthropic import AnthropicAdapter
        return AnthropicAdapter(config)
    if config.type == "azure":
        from .azure import AzureAdapter
        return AzureAdapter(config)
    if config.type == "gemini":
        from .gemini import GeminiAdapter
        return GeminiAdapter(config)
    if config.type == "bedrock":
        from .bedrock import BedrockAdapter
        return BedrockAdapter(config)
    return OpenAIAdapter(config)
