"""A fixed-rate load generator for the fault and soak runs: every request is counted.

A ticker schedules requests at `rate` per second; worker threads (each with its own clients) send
them. Latency is measured from the scheduled time, so a stall shows up as latency instead of as
fewer requests (no coordinated omission while the workers keep up).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Result:
    name: str
    scheduled: float  # time.monotonic() the request was due
    latency: float  # seconds from scheduled to answered
    error: str | None
    detail: str = ""  # what the call returned (e.g. the router's ROUTE)


class FixedRateLoad:
    """`calls`: name -> factory() -> call(); a factory runs once per worker thread (own client) and
    the call returns a short detail string or raises. Names take turns (round robin)."""

    def __init__(self, calls: dict[str, Callable[[], Callable[[], str]]], rate: float, workers: int = 8):
        self.calls = calls
        self.rate = rate
        self.workers = workers
        self.results: list[Result] = []
        self.unsent = 0  # due when the load stopped, never sent: a backlog means the server fell behind
        self._lock = threading.Lock()
        self._ticks: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "FixedRateLoad":
        self._threads = [threading.Thread(target=self._ticker, daemon=True)]
        self._threads += [threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _ticker(self) -> None:
        names = list(self.calls)
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            due = start + n / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._ticks.put((names[n % len(names)], due))
            n += 1
        for _ in range(self.workers):
            self._ticks.put(None)

    def _worker(self) -> None:
        calls = {name: factory() for name, factory in self.calls.items()}
        while True:
            tick = self._ticks.get()
            if tick is None:
                return
            name, due = tick
            if self._stop.is_set():  # stopping: requests still due are not sent (and not counted)
                with self._lock:
                    self.unsent += 1
                continue
            try:
                detail, error = calls[name](), None
            except Exception as err:  # every failure is a result, never lost
                detail, error = "", str(err).splitlines()[0][:300]
            with self._lock:
                self.results.append(Result(name, due, time.monotonic() - due, error, detail))

    def snapshot(self) -> list[Result]:
        with self._lock:
            return list(self.results)

    def errors(self, since: float = 0.0) -> Counter:
        return Counter(r.error for r in self.snapshot() if r.error and r.scheduled >= since)
