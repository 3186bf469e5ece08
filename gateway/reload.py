"""Hot reload: a new config file takes over new requests; requests in flight finish on the old one.

Triggers: the file changing (polled), SIGHUP (under `gateway serve`), `POST /admin/reload`.
A file that does not load is refused with its `PATH:LINE: message` problems and the running
config stays. A replaced runtime is retired (pools and cache the new one did not keep are closed)
once every request that may be using it is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .auth import require_admin
from .config import ConfigError, load_config
from .runtime import Runtime

log = logging.getLogger("gateway.reload")

# Set by `gateway serve`: only a process that owns its main thread and signals takes SIGHUP.
SERVE_ENV = "GATEWAY_SERVE"


@dataclass
class Outcome:
    ok: bool
    changed: bool = False
    problems: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)   # providers whose pools the new config kept
    note: str | None = None

    def fields(self) -> dict[str, Any]:
        """What the `config_reload` log event says beside its result, file and trigger."""
        if not self.ok:
            return {"problems": self.problems}
        out: dict[str, Any] = {"changed": self.changed}
        if self.changed:
            out["providers_kept"] = self.kept
        if self.note:
            out["note"] = self.note
        return out


class Reloader:
    """Owns the swap of `state.runtime`; one reload at a time."""

    def __init__(self, state: Any, path: str):
        self.state = state            # the app's state: runtime, observer
        self.path = path
        self._lock = asyncio.Lock()
        self._seen = state.runtime.loaded.text   # the file's text the watcher last acted on
        self._watcher: asyncio.Task[None] | None = None
        self._retiring: dict[asyncio.Task[None], tuple[Runtime, Runtime]] = {}
        self._last_retire: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sighup = False

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch(), name="gateway-config-watch")
        if os.environ.get(SERVE_ENV) == "1" and threading.current_thread() is threading.main_thread():
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
                self._sighup = True
            except (NotImplementedError, RuntimeError, ValueError):  # no signals here (e.g. Windows)
                pass

    async def close(self) -> None:
        """At shutdown: stop watching, and close what replaced runtimes still hold."""
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in [self._watcher, *self._tasks]:
            if task is not None:
                task.cancel()
        retiring, self._retiring = self._retiring, {}
        for task, (old, new) in retiring.items():
            task.cancel()
            await old.retire(new)

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self.reload("SIGHUP"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, trigger: str) -> Outcome:
        async with self._lock:
            outcome = await self._reload(trigger)
        self.state.observer.config_reloaded(self.path, trigger, outcome.ok, outcome.fields())
        return outcome

    async def _reload(self, trigger: str) -> Outcome:
        current: Runtime = self.state.runtime
        try:
            loaded = load_config(self.path)
        except ConfigError as exc:  # the running config stays
            return Outcome(False, problems=exc.problems)
        self._seen = loaded.text
        if loaded.text == current.loaded.text:
            return Outcome(True)
        try:
            runtime = await Runtime.start(loaded, current)
        except Exception as exc:  # e.g. a new cache backend that cannot open
            return Outcome(False, problems=[f"{self.path}:1: the new config could not start: {exc}"])
        note = None
        if loaded.config.server != current.config.server:
            note = "changes under server: take effect on the next restart"
        self.state.runtime = runtime
        self.state.observer.use(loaded.config)   # requests in flight keep the runtime they started on
        task = asyncio.create_task(self._retire(current, runtime, self._last_retire), name="gateway-retire")
        self._retiring[task] = (current, runtime)
        self._last_retire = task
        task.add_done_callback(lambda t: self._retiring.pop(t, None))
        kept = sorted(name for name, p in runtime.providers.items() if current.providers.get(name) is p)
        return Outcome(True, changed=True, kept=kept, note=note)

    async def _retire(self, old: Runtime, new: Runtime, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])   # older runtimes first (see app.Front)
        # Requests end by themselves: a stream at the latest when its provider's timeout_s is up.
        limit = max((p.config.timeout_s for p in old.providers.values()), default=60.0) + 5.0
        deadline = time.monotonic() + limit
        while old.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if old.in_flight > 0:
            log.warning("retiring the previous config with %d requests still running", old.in_flight)
        try:
            await old.retire(new)
        except Exception:
            log.exception("closing what the previous config held failed")

    async def _watch(self) -> None:
        path = Path(self.path)
        while True:
            admin = self.state.runtime.config.admin
            await asyncio.sleep(admin.watch_interval_s)
            if not admin.watch:
                continue
            text = _read(path)
            if text is None or text == self._seen:
                continue
            # Editors write in steps: act once the file has held still for a moment.
            await asyncio.sleep(min(0.1, admin.watch_interval_s))
            again = _read(path)
            if again != text:
                continue
            self._seen = text
            if text != self.state.runtime.loaded.text:
                try:
                    await self.reload("file change")
                except Exception:  # a bug here must not stop the watching
                    log.exception("config reload after a file change failed")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None  # mid-rename, or gone for now: nothing to act on


# ---- the admin endpoints ------------------------------------------------------------------------

async def admin_reload(request: Request) -> Response:
    require_admin(request)
    outcome = await request.app.state.reloader.reload("POST /admin/reload")
    if outcome.ok:
        body: dict[str, Any] = {"status": "reloaded" if outcome.changed else "unchanged", "config": str(request.app.state.reloader.path)}
        return Response(orjson.dumps(body), 200, media_type="application/json")
    body = {"error": {"message": "The new config was refused; the running config stays.\n" + "\n".join(outcome.problems),
                      "type": "invalid_request_error", "param": None, "code": "invalid_config"},
            "problems": outcome.problems}
    return Response(orjson.dumps(body), 422, media_type="application/json")
