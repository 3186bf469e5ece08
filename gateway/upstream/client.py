"""One aiohttp session per provider, and the call that turns transport trouble into a failure kind."""

from __future__ import annotations

import asyncio

import aiohttp

from ..config import ProviderConfig
from ..providers import adapter_for
from .leases import Leases
from .limiter import GlobalLimiter, Limiter


class UpstreamFailure(Exception):
    """The upstream could not give an answer: `kind` is "connect", "timeout" or "invalid"."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Provider:
    """A provider's connection pool, its concurrency limiter and its adapter (the API it speaks,
    gateway/providers/). Given `leases` (state.backend: redis), `max_concurrency` counts across
    every process."""

    def __init__(self, name: str, config: ProviderConfig, leases: Leases | None = None, on_error: str = "allow"):
        self.name = name
        self.config = config
        self.limiter = Limiter(config.max_concurrency, config.max_queue, config.queue_timeout_s) if leases is None \
            else GlobalLimiter(name, config.max_concurrency, config.max_queue, config.queue_timeout_s, leases, on_error)
        self.adapter = adapter_for(config)
        self.timeout = aiohttp.ClientTimeout(total=config.timeout_s, connect=config.connect_timeout_s)
        self.session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        # Sessions must be made inside the running loop (the app's lifespan), never at import.
        connector = aiohttp.TCPConnector(
            limit=self.config.max_concurrency, ttl_dns_cache=300, keepalive_timeout=30
        )
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=self.timeout, auto_decompress=True,
            json_serialize=None, skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        await self.limiter.close()
        if self.session is not None:
            await self.session.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """Send the request and return once the response headers are in."""
        assert self.session is not None, "provider used before the app started"
        try:
            return await self.session.post(url, data=body, headers=headers)
        except asyncio.TimeoutError:
            raise UpstreamFailure("timeout", f"no answer within {self.config.timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamFailure("connect", str(exc.os_error or exc)) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise UpstreamFailure("connect", str(exc) or type(exc).__name__) from None
        except aiohttp.ClientResponseError as exc:
            raise UpstreamFailure("invalid", exc.message) from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailure("invalid", str(exc) or type(exc).__name__) from None

    async def read(self, response: aiohttp.ClientResponse) -> bytes:
        """Read a whole (non-streamed) body, with the same failure kinds as `post`."""
        try:
            return await response.read()
        except asyncio.TimeoutError:
            raise UpstreamFailure("timeout", f"no answer within {self.config.timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailure("invalid", str(exc) or type(exc).__name__) from None
        finally:
            response.release()
