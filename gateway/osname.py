"""The name a thread shows in `top -H` and /proc/PID/task/*/comm (Linux), so an operator (and the
benchmark) can tell what burns the CPU: the embedder's thread, the Qdrant helper process.
Standard library only: the helper process imports it."""

from __future__ import annotations


def name_this_thread(name: str) -> None:
    """At most 15 bytes (the kernel's limit); does nothing where there is no prctl (not glibc)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
