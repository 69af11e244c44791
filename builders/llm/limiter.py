"""Adaptive limits on calls in flight, one limiter per served model (provider, model id, endpoint).

Every recipe name and role that reaches the same model shares its limiter, so a generator and a
judge on one model never add up to more than the provider allows; different models never wait for
each other, so one model's storm of 429s does not hold up the rest.

How a limiter adapts:
- it starts at the model's `concurrency` (the ceiling) and never goes above it;
- a 429 alone is not a storm: providers answer a few of them under normal load, and the failed call
  just waits (Retry-After, or backoff) outside the limiter before trying again;
- when 429s make up half or more of the recent answers, the limit is halved (at most once per
  typical call duration) and new calls wait out the Retry-After the provider gave;
- rate-limit headers (`x-ratelimit-remaining-requests`/`-tokens` at 0, with their reset times) hold
  new calls until the window resets, before any 429;
- every success adds 1/limit to the limit, so it climbs back by about one call per round trip.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass

STORM_SHARE = 0.5  # share of 429s among recent answers that counts as a storm (10% random 429s never reach it)
MIN_WINDOW = 8  # answers needed before a share is judged


@dataclass(frozen=True)
class RateLimit:
    """What a response's rate-limit headers say: calls or tokens left in the window and when it resets."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    def wait_s(self) -> float:
        """How long new calls should wait: until the reset of a window with nothing left."""
        waits = [0.0]
        if self.remaining_requests is not None and self.remaining_requests <= 0:
            waits.append(self.reset_requests_s or 1.0)
        if self.remaining_tokens is not None and self.remaining_tokens <= 0:
            waits.append(self.reset_tokens_s or 1.0)
        return max(waits)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """Seconds from a reset header: OpenAI's `6m0s`, `1s`, `250ms`, or a bare number of seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def rate_limit(headers) -> RateLimit | None:
    """The rate-limit state in response headers (OpenAI's names, or Together's shorter ones)."""
    if headers is None:
        return None
    info = RateLimit(
        remaining_requests=_int(headers.get("x-ratelimit-remaining-requests") or headers.get("x-ratelimit-remaining")),
        remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
        reset_requests_s=parse_duration(headers.get("x-ratelimit-reset-requests") or headers.get("x-ratelimit-reset")),
        reset_tokens_s=parse_duration(headers.get("x-ratelimit-reset-tokens")),
    )
    return info if info != RateLimit() else None


class AdaptiveLimiter:
    """A semaphore whose size adapts (see the module's docstring). Waiters start in arrival order."""

    def __init__(self, ceiling: int, *, clock=time.monotonic):
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0
        self.resume_at = 0.0  # no call starts before this (monotonic seconds)
        self.storms = 0  # times the limit was cut
        self._clock = clock
        self._recent: deque[bool] = deque(maxlen=max(MIN_WINDOW, ceiling))  # True for a 429
        self._last_cut = -1e9
        self._call_s = 0.0  # running mean of a call's duration (0 until the first answer)
        self._waiters: deque[asyncio.Future] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def _free(self) -> bool:
        return self.in_flight < max(1, int(self.limit)) and self._clock() >= self.resume_at

    async def acquire(self, *, first: bool = False) -> None:
        """Wait for a slot; `first` (a retry) goes ahead of calls not yet tried, so a retried call
        does not wait behind the whole queue again."""
        if not self._waiters and self._free():
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        if first:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        self._wake()
        try:
            await waiter  # granted: in_flight already counts this call
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as it was cancelled: hand the slot on
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        wait = self.resume_at - self._clock()
        if wait > 0:
            if self._waiters and self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(wait, self._resume)
            return
        while self._waiters and self.in_flight < max(1, int(self.limit)):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _resume(self) -> None:
        self._timer = None
        self._wake()

    def succeeded(self, duration_s: float, info: RateLimit | None = None) -> None:
        self._recent.append(False)
        self._call_s = 0.9 * self._call_s + 0.1 * duration_s if self._call_s else duration_s
        self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
        if info is not None:
            self.hold(info.wait_s())
        self._wake()

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429. Cuts the limit and holds new calls only when 429s have become a storm."""
        self._recent.append(True)
        share = sum(self._recent) / len(self._recent)
        now = self._clock()
        if len(self._recent) >= MIN_WINDOW and share >= STORM_SHARE and now - self._last_cut >= self._call_s:
            self.limit = max(1.0, self.limit / 2)
            self._last_cut = now
            self.storms += 1
            self._recent.clear()
            self.hold(retry_after or 0.0)

    def hold(self, seconds: float) -> None:
        """No new call starts for `seconds` (calls in flight go on)."""
        if seconds > 0 and self._clock() + seconds > self.resume_at:
            self.resume_at = self._clock() + seconds
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
