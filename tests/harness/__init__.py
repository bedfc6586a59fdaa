"""The tests' own parts, plugged in behind production interfaces (never inside them)."""

# The Celery app module a test starts its workers with to be able to hold jobs, and the
# variable naming the hold file (see holding_engine.py).
HARNESS_APP = "tests.harness.worker_app"
HOLD_FILE_VARIABLE = "M2FP_TEST_HOLD_FILE"
# Names a marker file: while it exists, each job's parse raises and the worker's first
# attempt to record that failure meets a Redis error (worker_app.py; the file is removed
# at that first attempt, so the failure is recorded when the message comes back).
UNRECORDABLE_FAILURE_VARIABLE = "M2FP_TEST_UNRECORDABLE_FAILURE"
# Set (to anything): the worker stops fetching from its queues once ready, connected as
# ever: the state Celery/kombu's reconnect bug leaves a worker in (worker/consumption_guard.py).
STOP_CONSUMING_VARIABLE = "M2FP_TEST_STOP_CONSUMING"
# Names label maps (8-bit PNGs of CIHP ids, joined by os.pathsep): a photo of a map's size
# parses to that map, with the persons of its person map (one person, without one), instead
# of the model's (scripted_engine.py): a hand-made parse of a real photo.
SCRIPTED_PARSE_VARIABLE = "M2FP_TEST_SCRIPTED_PARSE"
