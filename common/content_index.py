"""The content index: (tenant, content key) -> the job that parses that content.

The same image submitted twice by one tenant (a re-run backfill, a retrying client)
is parsed once, and no tenant learns what another one submitted. A claim is written
only together with its job's record, in one transaction of
:meth:`common.job_store.JobStore.create_for_content`, so no submission can ever see a
claim whose job does not exist yet; and nothing deletes a claim: one whose job failed,
was canceled or expired is simply taken over by the next submission.
"""
from __future__ import annotations

from typing import Optional

import redis


class ContentIndex:
    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl_seconds

    def key(self, tenant: str, content: str) -> str:
        return f"{self.prefix}{tenant}:{content}"

    def owner(self, tenant: str, content: str) -> Optional[str]:
        """The id of the job that last claimed this content, if any (it may have ended)."""
        job_id = self.client.get(self.key(tenant, content))
        return job_id.decode() if job_id else None
