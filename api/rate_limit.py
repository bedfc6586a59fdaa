"""Submissions per minute per API key: a token bucket in Redis, shared by every API process.

Each key's bucket holds up to a minute's worth of submissions and refills continuously;
a request takes one token per photo it submits (a batch, one per item), so batches do
not multiply a key's rate. A batch larger than the whole bucket could never be admitted
and is refused outright (413 batch_too_large, naming the largest batch the key may
send) rather than told to retry. The check and the update run as one Lua script, so
concurrent requests through several API processes never overspend a bucket.
"""
from __future__ import annotations

import math

import redis

from m2fp_contract.errors import ErrorCode, ServiceError
from api.auth import Principal

_TAKE = """
local capacity = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local per_second = capacity / 60
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_second)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / per_second end
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

    def take(self, caller: Principal, cost: int = 1) -> None:
        """Spend ``cost`` submissions of the caller's key, or raise :class:`RateLimited`
        (nothing spent); a ``cost`` above the key's whole minute can never be spent:
        :class:`ServiceError` batch_too_large."""
        per_minute = caller.rate_per_minute if caller.rate_per_minute is not None else self.default
        if not per_minute:
            return
        if cost > per_minute:
            raise ServiceError(f"this batch submits {cost} photos, but this API key may submit {per_minute} per "
                               f"minute: send batches of at most {per_minute}", ErrorCode.BATCH_TOO_LARGE)
        wait = float(self._take(keys=[self.prefix + caller.key_id], args=[per_minute, cost]))
        if wait > 0:
            raise RateLimited(f"this API key may submit {per_minute} photos per minute; retry later",
                              retry_after=max(1, math.ceil(wait)))
