"""``python -m scripts.backfill SRC [options]``: kept so commands written for earlier
releases go on working. The backfill itself is ``m2fp backfill`` (m2fp_client/backfill.py),
with the same options, state file, report and exit statuses.
"""
from m2fp_client.cli import backfill

if __name__ == "__main__":
    backfill.main(prog_name="python -m scripts.backfill")
