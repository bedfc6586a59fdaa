"""The tests' own parts, plugged in behind production interfaces (never inside them)."""

# The Celery app module a test starts its workers with to be able to hold jobs, and the
# variable naming the hold file (see holding_engine.py).
HARNESS_APP = "tests.harness.worker_app"
HOLD_FILE_VARIABLE = "M2FP_TEST_HOLD_FILE"
