"""Limits shared by every replica: a per-principal GCRA rate and leased slots, on Redis.

With ``limits_backend = "local"`` each gateway process counts alone (N replicas give a principal
N times its limit). With ``"redis"`` the gate chain still applies the per-process limits, and an
allowed call must also pass :meth:`SharedLimits.admit`: one Lua script, atomic on the server,
checks the principal's concurrent calls and its rate and takes a slot, against Redis's own
clock (``TIME``), so the replicas' clocks do not matter:

* rate: GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp, the
  "theoretical arrival time"): ``rate`` per second with a burst of ``burst``;
* concurrency (calls, sessions, calls to one upstream): a sorted set of leases, one member per
  slot scored by its expiry. A replica killed mid-call never gives its slots back; its leases
  expire (``lease_s``: the longest a call may run, plus a margin), so nothing leaks for ever.

The client is :mod:`northstar.policy.resp`: RESP2 on trio over a bounded pool of connections,
in the caller's task, with a timeout on every exchange. A call costs one round trip to be
admitted; the slots calls give back are queued and released in batches by
:meth:`RedisLimits.run_releaser` (a contained child of the tree, ``limits.releaser``), one round
trip for all released meanwhile. redis-py was tried first: its synchronous client in worker
threads cost about 215 us a round trip and, under load, each call's wait for the GIL behind the
event loop halved a replica's throughput; ``redis.asyncio`` through trio-asyncio cost 290 us.

When Redis cannot be reached: ``limits_fail = "open"`` degrades to the per-process limits,
``"closed"`` refuses calls with 503 ``limits_unavailable``. Either way ``/health`` says so (the
``limits`` subsystem: ``up``, ``degraded`` or ``down``) and the log says it once per transition;
Redis is tried again at most every ``retry_s``.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import trio

from northstar.common import errors as E
from northstar.policy.resp import RedisClient, Script

log = logging.getLogger("northstar.policy.limits")

# KEYS: rate key, in-flight key. ARGV: rate/s, burst, max in flight, token, lease (us).
# Returns {status, retry_after_us}: 0 admitted, 1 too many in flight, 2 rate exceeded.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return {1, 0} end
local interval = 1000000 / rate
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then return {2, math.ceil(allow_at - now)} end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
redis.call('PEXPIRE', KEYS[2], math.ceil(lease / 1000))
return {0, 0}
"""

# KEYS: slot set. ARGV: limit, token, lease (us). Returns 1 taken, 0 full.
SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease / 1000))
return 1
"""

FailMode = Literal["open", "closed"]
RELEASE_QUEUE = 1024


@dataclass(frozen=True, slots=True)
class Slot:
    """A slot taken on the shared engine (``key`` None: none was taken, e.g. degraded open)."""

    key: str | None
    token: str


NO_SLOT = Slot(None, "")


class SharedLimits:
    """Per-process only (``limits_backend = "local"``): every check passes, nothing to give back."""

    backend = "local"

    def health(self) -> str | None:
        return None

    async def admit(self, principal: str, *, rate: float, burst: int, max_in_flight: int) -> Slot | E.NorthstarError:
        return NO_SLOT

    async def take(self, key: str, limit: int, *, lease_s: float | None = None) -> Slot | E.NorthstarError:
        return NO_SLOT

    async def give_back(self, slot: Slot) -> None:
        return None

    async def renew(self, slots: list[Slot], lease_s: float) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def run_releaser(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


class RedisLimits(SharedLimits):
    """The limits on a Redis server every replica reaches (``redis_url``)."""

    backend = "redis"

    def __init__(self, client: RedisClient, *, fail: FailMode = "open", prefix: str = "northstar",
                 lease_s: float = 150.0, retry_s: float = 1.0) -> None:
        self.client = client
        self.fail = fail
        self.prefix = prefix
        self.lease_us = int(lease_s * 1_000_000)
        self.retry_s = retry_s
        self._admit = Script(client, ADMIT)
        self._slot = Script(client, SLOT)
        self._reachable = True
        self._retry_at = -math.inf
        # Slots given back are queued and released in batches by run_releaser (one round trip for
        # many); with no releaser running, or the queue full, a slot is released inline.
        self._releases, self._to_release = trio.open_memory_channel[Slot](RELEASE_QUEUE)
        self._releaser_up = False

    @classmethod
    def connect(cls, url: str, *, fail: FailMode, prefix: str, lease_s: float, timeout_s: float = 0.5,
                pool_size: int = 16) -> RedisLimits:
        return cls(RedisClient(url, timeout_s=timeout_s, max_connections=pool_size), fail=fail, prefix=prefix,
                   lease_s=lease_s)

    # -- state ------------------------------------------------------------------------------------
    def health(self) -> str:
        if self._reachable:
            return "up"
        return "degraded" if self.fail == "open" else "down"

    def _lost(self, exc: BaseException) -> E.NorthstarError | Slot:
        self._retry_at = trio.current_time() + self.retry_s
        if self._reachable:
            self._reachable = False
            how = "per-process limits only" if self.fail == "open" else "calls refused (limits_fail = closed)"
            log.error(f"shared limits unavailable: {how}", extra={"error": type(exc).__name__})
        if self.fail == "open":
            return NO_SLOT
        return E.LimitsUnavailable(retry_after=max(1, math.ceil(self.retry_s)))

    def _back(self) -> None:
        if not self._reachable:
            self._reachable = True
            log.warning("shared limits available again")

    def _skip(self) -> bool:
        """While Redis is known unreachable, do not wait on it for every call: retry at most every retry_s."""
        return not self._reachable and trio.current_time() < self._retry_at

    # -- the checks -------------------------------------------------------------------------------
    async def admit(self, principal: str, *, rate: float, burst: int, max_in_flight: int) -> Slot | E.NorthstarError:
        if self._skip():
            return NO_SLOT if self.fail == "open" else E.LimitsUnavailable(retry_after=max(1, math.ceil(self.retry_s)))
        key = f"{self.prefix}:calls:{principal}"
        token = secrets.token_hex(8)
        try:
            status, wait_us = await self._admit([f"{self.prefix}:rate:{principal}", key],
                                                [rate, max(1, burst), max_in_flight, token, self.lease_us])
        except Exception as exc:
            return self._lost(exc)
        self._back()
        if status == 1:
            return E.RateLimited("too many concurrent calls", retry_after=1, limit=max_in_flight)
        if status == 2:
            return E.RateLimited("call rate limit exceeded", retry_after=max(1, math.ceil(int(wait_us) / 1e6)))
        return Slot(key, token)

    async def take(self, key: str, limit: int, *, lease_s: float | None = None) -> Slot | E.NorthstarError:
        """A leased slot in ``key`` (at most ``limit`` held), e.g. a session or an upstream call."""
        if self._skip():
            return NO_SLOT if self.fail == "open" else E.LimitsUnavailable(retry_after=max(1, math.ceil(self.retry_s)))
        full_key, token = f"{self.prefix}:{key}", secrets.token_hex(8)
        lease = self.lease_us if lease_s is None else int(lease_s * 1_000_000)
        try:
            taken = await self._slot([full_key], [limit, token, lease])
        except Exception as exc:
            return self._lost(exc)
        self._back()
        return Slot(full_key, token) if taken else E.RateLimited("too many at once", retry_after=1, limit=limit)

    async def give_back(self, slot: Slot) -> None:
        """Release a slot (queued for the releaser, else now); if the engine cannot be reached
        its lease expires on its own."""
        if slot.key is None:
            return
        if self._releaser_up:
            try:
                self._releases.send_nowait(slot)
                return
            except trio.WouldBlock:
                pass
        await self._release([slot])

    async def _release(self, slots: list[Slot]) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self.client.pipeline([["ZREM", slot.key, slot.token] for slot in slots if slot.key is not None])
            except Exception as exc:
                self._lost(exc)

    async def run_releaser(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Give queued slots back in batches: one round trip for every slot released meanwhile."""
        self._releaser_up = True
        task_status.started()
        try:
            while True:
                batch = [await self._to_release.receive()]
                while len(batch) < RELEASE_QUEUE:
                    try:
                        batch.append(self._to_release.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._release(batch)
        finally:
            self._releaser_up = False

    async def renew(self, slots: list[Slot], lease_s: float) -> None:
        """Extend the leases of slots still held (e.g. live sessions), in one round trip."""
        held = [s for s in slots if s.key is not None]
        if not held or self._skip():
            return

        try:
            seconds, micros = await self.client.execute("TIME")
            expiry = int(seconds) * 1_000_000 + int(micros) + int(lease_s * 1_000_000)
            commands: list[list[Any]] = []
            for slot in held:
                commands.append(["ZADD", slot.key, "XX", expiry, slot.token])
                commands.append(["PEXPIRE", slot.key, int(lease_s * 1000) + 1000])
            await self.client.pipeline(commands)
        except Exception as exc:
            self._lost(exc)

    async def aclose(self) -> None:
        await self.client.aclose()


def shared_limits_for(settings: Any) -> SharedLimits:
    """What the settings ask for: per-process only, or Redis at ``redis_url``."""
    if settings.limits_backend != "redis":
        return SharedLimits()
    lease = settings.tool_timeout_max_s + 30.0
    return RedisLimits.connect(settings.redis_url, fail=settings.limits_fail, prefix=settings.limits_prefix,
                               lease_s=lease, timeout_s=settings.redis_timeout_s)
