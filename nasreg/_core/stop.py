"""Stop requests: Ctrl-C and SIGTERM turned into a request a training loop honours between steps.

The search (:mod:`nasreg._core.search`) and the training engine (:class:`nasreg.Trainer`, used by
``[evaluate]`` and ``nasreg train``) share this one mechanism. Inside ``with StopRequests() as
stop:`` the first SIGINT or SIGTERM only sets ``stop.requested``; the loop looks at it after every
step, writes a consistent checkpoint and raises :class:`nasreg.Interrupted` (exit status 130, a
``stopped:`` line naming how to continue). A second Ctrl-C raises ``KeyboardInterrupt`` at once.

A request that arrives after a loop's last step (while a search writes its summary and figures,
say) is not lost: the context records it when it closes, and :func:`take_unhonoured` hands it to
whatever runs next in the same command (the evaluation after a search stops before it starts).
Entering a new context forgets such a request, so it never leaks into a later, unrelated run.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["StopRequests", "take_unhonoured"]

#: A request the last closed context received and no loop honoured (see :func:`take_unhonoured`).
_unhonoured = False


class StopRequests:
    """Turns the first Ctrl-C / SIGTERM into a request the loop honours between steps (so the
    checkpoint it writes is consistent); a second Ctrl-C interrupts at once.

    Handlers are installed only in the main thread (elsewhere ``requested`` stays False unless
    set by hand); the previous handlers are restored when the context closes."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame):  # noqa: ANN001
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequests":
        global _unhonoured
        _unhonoured = False
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        global _unhonoured
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()
        # closed normally with a request pending: the loop ended before it could honour it
        _unhonoured = self.requested and exc_type is None


def take_unhonoured() -> bool:
    """Whether the last closed :class:`StopRequests` received a request that no loop honoured
    (it closed normally after it); the record is cleared."""
    global _unhonoured
    pending, _unhonoured = _unhonoured, False
    return pending
