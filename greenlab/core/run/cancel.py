"""One cancel for a grid and its runs, shared by the grid driver, the run supervisor and every face.

`cancel()` stops the run in progress (stored `interrupted`) and every run after it; `cancel_current()`
stops only the run in progress, and the grid goes on. Whoever holds a child registers `on_cancel` to stop
it at once; waits (an idle baseline, a cool-down, the host lock) use `wait` or `stop_event`. Safe from any
thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

CANCELLED_BY_USER = "cancelled by the user"


# Reasons of SignalInterrupts raised in this process and not yet read by `interrupt_reason`.
_signalled: list[str] = []


class SignalInterrupt(KeyboardInterrupt):
    """A signal (SIGTERM: a CI job cancelled, `kill`) stopping a grid as Ctrl-C does; the run in progress is
    stored as interrupted with the signal's name, not as cancelled by the user."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.reason = f"stopped by signal {signal_name}"
        _signalled.append(self.reason)


def interrupt_reason(exc: BaseException) -> str | None:
    """Why a KeyboardInterrupt stopped the grid: a signal's name, or None for the user's Ctrl-C. Ray's wait
    runs the signal handler inside its C++ loop and raises a plain KeyboardInterrupt in place of the
    handler's SignalInterrupt, so the reason is also kept where the SignalInterrupt was made; reading it
    clears it, so a later Ctrl-C in this process is the user's again."""
    remembered = _signalled[-1] if _signalled else None
    _signalled.clear()
    return getattr(exc, "reason", None) or remembered


class CancelToken:
    def __init__(self) -> None:
        self.reason: str | None = None  # why, when not the user: a signal's name
        self._all = threading.Event()
        self._current = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self, reason: str | None = None) -> None:
        """Stop the run in progress and every run after it; `reason` when it is not the user's doing."""
        if reason is not None and self.reason is None:
            self.reason = reason
        self._all.set()
        self._fire()

    def cancel_current(self) -> None:
        """Stop only the run in progress; the grid goes on with the next run."""
        self._current.set()
        self._fire()

    @property
    def cancelled(self) -> bool:
        return self._all.is_set()

    @property
    def why(self) -> str:
        """Why the grid was cancelled, as a run's row says it: the user, or the signal that stopped it."""
        return self.reason or CANCELLED_BY_USER

    @property
    def current_cancelled(self) -> bool:
        return self._current.is_set()

    def clear_current(self) -> None:
        """ "This run only" is spent once the run is stored: the next run starts clean."""
        self._current.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds for a cancel of the whole grid; True when it came."""
        return self._all.wait(timeout)

    @property
    def stop_event(self) -> threading.Event:
        """The event a whole-grid cancel sets (for waits that take one: the host lock)."""
        return self._all

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on every cancel from now on; returns the function that stops it."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def _fire(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()


class Cancellable:
    """`cancel()`, `cancel_current()` and `cancelled` for whatever holds a grid's token: the session, the
    drivers and the one-run supervisor all answer the same way."""

    token: CancelToken

    def cancel(self) -> None:
        """Stop the run in progress (stored as interrupted) and every run after it."""
        self.token.cancel()

    def cancel_current(self) -> None:
        """Stop only the run in progress (stored as interrupted); the grid goes on with the next run."""
        self.token.cancel_current()

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled
