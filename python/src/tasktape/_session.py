"""Small pieces the worker's loops share: a session's settings as the
registration answered them, and a jittered exponential backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Backoff", "Session"]


@dataclass
class Backoff:
    """Pauses that double from `first` up to `cap`, each moved by ±25 %."""

    first: float = 0.1
    cap: float = 5.0
    tries: int = 0

    def next(self) -> float:
        pause = min(self.cap, self.first * float(2 ** min(self.tries, 10)))
        self.tries += 1
        return pause * (0.75 + 0.5 * random.random())

    def reset(self) -> None:
        self.tries = 0


@dataclass
class Session:
    """One registration: its session token, an epoch that grows with every
    registration, and the server's settings (in seconds)."""

    session: str
    epoch: int
    lease_ttl_s: float
    lease_interval_s: float
    cancel_grace_s: float
    max_batch: int
    answer: dict[str, Any] = field(default_factory=dict)
