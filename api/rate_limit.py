"""Submissions per minute per API key: a token bucket in Redis, shared by every API process.

Each key's bucket holds up to a minute's worth of submissions and refills continuously;
one submission request takes one token. The check and the update run as one Lua script,
so concurrent requests through several API processes never overspend a bucket.
"""
from __future__ import annotations

import math

import redis

from common.errors import ErrorCode, ServiceError
from api.auth import Principal

_TAKE = """
local capacity = tonumber(ARGV[1])
local per_second = capacity / 60
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_second)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / per_second end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 61)
return tostring(wait)
"""


class RateLimited(ServiceError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SubmissionLimiter:
    def __init__(self, client: redis.Redis, default_per_minute: int, prefix: str = "m2fp:rate:") -> None:
        self._take = client.register_script(_TAKE)
        self.default = default_per_minute
        self.prefix = prefix

    def take(self, caller: Principal) -> None:
        """Spend one submission of the caller's key, or raise :class:`RateLimited`."""
        per_minute = caller.rate_per_minute if caller.rate_per_minute is not None else self.default
        if not per_minute:
            return
        wait = float(self._take(keys=[self.prefix + caller.key_id], args=[per_minute]))
        if wait > 0:
            raise RateLimited(f"this API key may submit {per_minute} times per minute; retry later",
                              retry_after=max(1, math.ceil(wait)))
