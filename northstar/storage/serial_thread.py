"""One OS thread that runs blocking jobs one at a time, in arrival order, for trio callers.

The SQLite writer connection lives on it. ``trio.to_thread.run_sync`` behind a
``CapacityLimiter(1)`` does the same job, but pays on every call for the limiter's checkpoints,
the thread cache's hand-off and a fresh job record: about 150 us per write here, on a commit
whose own CPU cost is about 40 us. A governed call waits for one such write, so that overhead
was a third of the c=1 latency. Here a job is one ``SimpleQueue.put``; the thread wakes,
runs it, and hands the outcome back with ``TrioToken.run_sync_soon``, which reschedules the
waiting task directly.

:meth:`SerialThread.run_here` runs a job on the caller's own thread instead, when the thread
has nothing queued or running: no hand-off at all, for a caller that may block its event loop
for the job's length (the audit log's lone commits; see :mod:`.audit`).

A waiting caller cannot be cancelled out of the wait (as ``abandon_on_cancel=False``): the
job it submitted runs to completion either way, so whatever it wrote is committed or rolled
back whole, and its outcome is observable afterwards. Cancellation is seen before a job is
submitted and at the caller's next checkpoint after it finished.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")
_Job = tuple[Callable[..., Any], tuple[Any, ...], trio.lowlevel.TrioToken, trio.lowlevel.Task]
_STOP = None


class ThreadStopped(RuntimeError):
    """A job was submitted after :meth:`SerialThread.stop`."""


class SerialThread:
    """Runs ``fn(*args)`` jobs one after the other on its own daemon thread."""

    def __init__(self, name: str, *, nice: int = 0) -> None:
        """``nice`` > 0 lowers the thread's CPU priority (Linux: per thread) for background work."""
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stopped = False
        # Jobs submitted and not yet answered. Counted on the trio thread alone (up at the put,
        # down when the answer reschedules the caller), so it needs no lock: at 0 the thread is
        # idle in its queue's get and the connection it serves is free for ``run_here``.
        self._unfinished = 0
        self._nice = nice
        self.niced = False  # True once the thread runs at the lower priority
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the thread after every job submitted before it; its result or exception."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._stopped:
            raise ThreadStopped(self._thread.name)
        self._jobs.put((fn, args, trio.lowlevel.current_trio_token(), trio.lowlevel.current_task()))
        self._unfinished += 1
        try:
            result: T = await trio.lowlevel.wait_task_rescheduled(_never_abort)
        finally:
            self._unfinished -= 1
        return result

    @property
    def idle(self) -> bool:
        """Nothing queued or running (as seen from the trio thread that submits every job)."""
        return self._unfinished == 0 and not self._stopped

    def run_here(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` now, on the calling thread, in the place of a job (the thread is idle).

        Call it from the trio thread that submits this thread's jobs, and only when :attr:`idle`:
        no job can start meanwhile, since only that thread submits them and it is busy here.
        """
        if not self.idle:
            raise RuntimeError("run_here needs an idle thread")
        self._unfinished += 1  # a run() meanwhile (from a signal handler, say) would queue behind us
        try:
            return fn(*args)
        finally:
            self._unfinished -= 1

    def stop(self) -> None:
        """Run what is queued, then end the thread; later :meth:`run` calls raise ``ThreadStopped``."""
        if not self._stopped:
            self._stopped = True
            self._jobs.put(_STOP)

    def _serve(self) -> None:
        if self._nice > 0:
            try:  # lowering one's own priority needs no privilege; where it is unsupported, run as is
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
                self.niced = True
            except (AttributeError, OSError):
                pass
        while (job := self._jobs.get()) is not _STOP:
            fn, args, token, task = job
            result = outcome.capture(fn, *args)
            del job, fn, args  # hold nothing of a finished job while waiting for the next
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            except trio.RunFinishedError:  # the caller's run is gone; nobody is waiting
                pass
            del task, result, token


def _never_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED
