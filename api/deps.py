"""What the API's views need, built once by the app factory and replaceable in tests."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flask import current_app

from common.jobs import JobStore
from common.settings import Settings
from common.storage import Storage


@dataclass
class ApiDeps:
    settings: Settings
    storage: Storage
    jobs: JobStore
    enqueue: Callable[[str, str], None]  # hand (job id, priority) to the workers


def deps() -> ApiDeps:
    return current_app.extensions["m2fp"]
