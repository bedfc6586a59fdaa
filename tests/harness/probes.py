"""A store that watches how the API reads it, behind the production ``Storage``
interface: for the batch test, how many reads of referenced objects are under way at
once."""
from __future__ import annotations

import threading
from typing import Optional

from common.storage import S3Store


class MeetingReads(S3Store):
    """Each read of a referenced object waits (up to ``timeout`` seconds) until
    ``parties`` reads are under way together, then reads for real; ``most_at_once``
    is the largest number seen under way. Reads that come one at a time never meet,
    and the first of them fails with :class:`threading.BrokenBarrierError`."""

    def __init__(self, *args, parties: int, timeout: float = 30, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._barrier = threading.Barrier(parties, timeout=timeout)
        self._lock = threading.Lock()
        self._under_way = 0
        self.most_at_once = 0

    def get_from(self, bucket: str, key: str, max_bytes: Optional[int] = None) -> bytes:
        with self._lock:
            self._under_way += 1
            self.most_at_once = max(self.most_at_once, self._under_way)
        try:
            self._barrier.wait()
            return super().get_from(bucket, key, max_bytes)
        finally:
            with self._lock:
                self._under_way -= 1
