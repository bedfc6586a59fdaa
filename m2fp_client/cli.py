"""``m2fp``: the command line of m2fp-queue, on the Python client.

    m2fp submit PHOTO... [--wait] [--out DIR] [--priority interactive|backfill]
                [--webhook URL [--webhook-event EVENT]...] [--labels cihp|lip|atr|simple]
                [--labels-format grayscale|palette] [--timeout SECONDS]
    m2fp status ID...
    m2fp cancel ID...
    m2fp webhook-secret
    m2fp get ID --out DIR [--wait [--timeout SECONDS]]
    m2fp backfill SRC [options]

Every command takes ``--api-url`` (default ``$M2FP_API_URL``, else
``http://127.0.0.1:8000``), after its name or before it (``m2fp --api-url URL status ID``;
the command's own wins), and sends ``$M2FP_API_KEY`` as a bearer key when it is set.

Outputs go to ``DIR/<job id>/``, not to a folder named after the photo: photo names
collide (``a/x.jpg`` and ``b/x.jpg``, ``x.jpg`` and ``x.png``), job ids do not, and the
same content always maps to the same job and so to the same folder.

Exit status: 0 when every photo or job succeeded; 1 when some did not (a photo the API
refused, a failed job, an unknown id to ``status``); 2 when the command could not do its
work (a usage error, the API unreachable or refusing the request, an unknown id to
``get``); 3 when ``--wait`` gave up at its ``--timeout`` (the jobs go on); 130 when
interrupted.
"""
from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Optional

import click
from click.core import ParameterSource
from tqdm import tqdm

from m2fp_contract.schema import JobView, LabelProfile, LabelsFormat, Priority, WebhookEvent
from m2fp_client.client import DEFAULT_API_URL, ApiError, Client, Job, WaitTimedOut

SUCCEEDED, SOME_FAILED, FAILURE, TIMED_OUT, INTERRUPTED = 0, 1, 2, 3, 130


class Failure(click.ClickException):
    """The command cannot do its work; exit 2 with a message that names the fix."""

    exit_code = FAILURE


def explain(error: ApiError, api_url: str) -> str:
    if error.unreachable:
        return (f"{error.message}\n  Is the service running? Start it with `make run`, or point --api-url "
                f"(or M2FP_API_URL) at a running API (now {api_url}).")
    if error.status in (401, 403):
        return f"{error.code}: {error.message}\n  Set M2FP_API_KEY to a key the service accepts."
    if error.transient:
        retry = f" in {error.retry_after:.0f} s" if error.retry_after else ""
        return f"{error.code}: {error.message}\n  The service is busy or restarting; try again{retry}."
    return f"the API answered {error.status} {error.code}: {error.message}" if error.status else str(error)


api_url_option = click.option("--api-url", envvar="M2FP_API_URL", default=DEFAULT_API_URL, show_default=True,
                              show_envvar=True, help="the m2fp-queue API")


def chosen_api_url(api_url: str) -> str:
    """The command's own --api-url when given on its command line, else the group's
    (``m2fp --api-url X status``), which reads the same variable and default."""
    context = click.get_current_context()
    if context.get_parameter_source("api_url") is ParameterSource.COMMANDLINE or context.parent is None:
        return api_url
    return context.parent.params["api_url"]


def api_command(function: Callable) -> Callable:
    """A command that talks to the API: the --api-url option (also the group's), a
    Client, ApiError as exit 2."""

    @api_url_option
    @functools.wraps(function)
    def wrapper(api_url: str, **kwargs):
        api_url = chosen_api_url(api_url)
        try:
            return function(Client(api_url), **kwargs)
        except ApiError as error:
            raise Failure(explain(error, api_url)) from None

    return wrapper


def job_json(job: Job) -> str:
    """The job as the API sent it: every field it sent (nulls included), none it did not."""
    return json.dumps(job.model_dump(mode="json", by_alias=True, exclude_unset=True), indent=2)


def outcome(job: Job, out: Optional[Path]) -> str:
    """The last column of a ``submit`` or ``get`` line: where the outputs went, or why not."""
    if not isinstance(job, JobView):
        return "the job expired before it was read"
    if job.error:
        return f"{job.error.code}: {job.error.message}"
    return str(out / job.id) if out and job.result else ""


timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0), default=3600, show_default=True, metavar="SECONDS",
    help="with --wait: stop waiting after SECONDS and exit 3, the jobs going on (0: no deadline)")


def wait_with_progress(client: Client, job_ids: list[str], poll_interval: float,
                       timeout: float) -> tuple[dict[str, Job], list[str]]:
    """Poll until every job ended or ``timeout`` passed (0: no deadline), with a progress
    bar on a terminal (none in a pipe): the last answer per job, and the ids of those
    that had not ended by the deadline (a message on stderr names them)."""
    unique = list(dict.fromkeys(job_ids))
    with tqdm(total=len(unique), unit="job", desc="parsing", disable=None, file=sys.stderr) as progress:
        try:
            finished = client.wait(unique, poll_interval, on_finished=lambda job: progress.update(1),
                                   timeout=timeout or None)
            return {job.id: job for job in finished}, []
        except WaitTimedOut as timed_out:
            late = timed_out
    click.echo(f"{len(late.waiting)} job(s) had not ended after {timeout:g} s; they go on: "
               f"m2fp status {' '.join(late.waiting)}", err=True)
    return {job.id: job for job in late.jobs}, late.waiting


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@api_url_option
def main(api_url: str) -> None:
    """Submit photos to an m2fp-queue service, follow their jobs and fetch the parsing maps.

    Exit status: 0 all succeeded, 1 some photos or jobs did not, 2 usage or API error
    (the message names the fix), 3 --wait's --timeout passed, 130 interrupted.
    """


@main.command()
@click.argument("photos", nargs=-1, required=True, metavar="PHOTO...",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="wait until every job has ended (progress on stderr)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="download each job's outputs into DIR/<job id>/ (implies --wait)")
@click.option("--priority", type=click.Choice([p.value for p in Priority]), default=Priority.INTERACTIVE.value,
              show_default=True)
@click.option("--webhook", metavar="URL", help="tell URL of each job's events (a signed POST of the job's JSON)")
@click.option("--webhook-event", "webhook_events", multiple=True, type=click.Choice([e.value for e in WebhookEvent]),
              help="an event to tell the webhook of (repeatable; default: succeeded, failed, canceled)")
@click.option("--labels", type=click.Choice([p.value for p in LabelProfile]), default=LabelProfile.CIHP.value,
              show_default=True, help="the label set of the outputs (docs/api.md, \"Label sets\")")
@click.option("--labels-format", type=click.Choice([f.value for f in LabelsFormat]),
              default=LabelsFormat.GRAYSCALE.value, show_default=True, help="labels.png as grayscale or palette PNG")
@click.option("--outputs", "output_groups", metavar="GROUPS", default="",
              help="more outputs, comma-separated: keypoints, masks, garments, tryon (docs/outputs.md)")
@click.option("--person", type=click.IntRange(1, 255), help="whose try-on pack (its id in persons.png; default 1, "
              "the largest)")
@click.option("--keypoints", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="JSON",
              help="your own OpenPose JSON for the photo, used instead of the pose model's (one PHOTO)")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, help="seconds between polls")
@timeout_option
@api_command
def submit(client: Client, photos: tuple[Path, ...], wait: bool, out: Optional[Path], priority: str,
           webhook: Optional[str], webhook_events: tuple[str, ...], labels: str, labels_format: str,
           output_groups: str, person: Optional[int], keypoints: Optional[Path], poll_interval: float,
           timeout: float) -> None:
    """Parse each PHOTO; print one tab-separated line per photo:

    \b
      PHOTO  JOB-ID  STATUS  DETAIL

    STATUS is queued or running (without --wait), succeeded, failed, or refused (the
    API refused the photo: no job); DETAIL is the output folder (with --out) or the
    error code and message. Identical photos share one job. A job still queued or
    running when --wait's --timeout passes is printed so, and the exit status is 3.
    """
    if keypoints is not None and len(photos) > 1:
        raise click.UsageError("--keypoints belong to one photo: submit that photo alone")
    groups = [group.strip() for group in output_groups.split(",") if group.strip()]
    points = keypoints.read_text() if keypoints is not None else None
    submitted: list[tuple[Path, Optional[JobView], str]] = []
    for photo in photos:
        try:
            job = client.submit(photo, Priority(priority), webhook, webhook_events, LabelProfile(labels),
                                LabelsFormat(labels_format), groups, person, points)
            submitted.append((photo, job, ""))
        except ApiError as error:
            if error.status is None or error.status >= 500 or error.status in (401, 403, 429) \
                    or error.code in ("invalid_webhook", "webhooks_disabled", "unknown_output"):
                raise  # the service's trouble, not this photo's
            submitted.append((photo, None, f"{error.code}: {error.message}"))
    jobs: dict[str, Job] = {job.id: job for _, job, _ in submitted if job}
    late: list[str] = []
    if (wait or out) and jobs:
        try:
            answers, late = wait_with_progress(client, list(jobs), poll_interval, timeout)
            jobs.update(answers)
        except KeyboardInterrupt:
            click.echo(f"interrupted; the jobs go on: m2fp status {' '.join(jobs)}", err=True)
            sys.exit(INTERRUPTED)
        if out:
            for job in jobs.values():
                if isinstance(job, JobView) and job.result:
                    client.download(job, out / job.id)
    all_good = True
    for photo, job, refusal in submitted:
        final = jobs[job.id] if job else None
        status = final.status if final else "refused"
        status = getattr(status, "value", status)
        click.echo("\t".join([str(photo), final.id if final else "-", status, outcome(final, out) if final else refusal]))
        all_good &= status == "succeeded" or (status in ("queued", "running") and not (wait or out))
    sys.exit(TIMED_OUT if late else SUCCEEDED if all_good else SOME_FAILED)


@main.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="ID...")
@api_command
def status(client: Client, job_ids: tuple[str, ...]) -> None:
    """Print each job as the API describes it (JSON); exit 1 if an id is unknown or expired."""
    jobs = client.jobs(list(job_ids))
    for job in jobs:
        click.echo(job_json(job))
    sys.exit(SOME_FAILED if any(not isinstance(job, JobView) for job in jobs) else SUCCEEDED)


@main.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="ID...")
@api_command
def cancel(client: Client, job_ids: tuple[str, ...]) -> None:
    """Cancel each job; print its id and what became of it (canceled, or cancel_requested
    while it runs to its next safe point). Exit 1 if a job had already ended or is unknown."""
    refused = False
    for job_id in job_ids:
        try:
            job = client.cancel(job_id)
        except ApiError as error:
            if error.code not in ("not_cancelable", "not_found"):
                raise
            refused = True
            click.echo(f"{job_id}\t{error.code}\t{error.message}")
            continue
        click.echo(f"{job.id}\t{'cancel_requested' if job.cancel_requested else job.status.value}")
    sys.exit(SOME_FAILED if refused else SUCCEEDED)


@main.command("webhook-secret")
@api_command
def webhook_secret(client: Client) -> None:
    """Print the secret that signs your tenant's webhooks (``whsec_...``), to verify them."""
    click.echo(client.webhook_secret().secret)


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="write the outputs into DIR/<job id>/")
@click.option("--wait", is_flag=True, help="wait for a job that has not ended yet")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, help="seconds between polls")
@timeout_option
@api_command
def get(client: Client, job_id: str, out: Path, wait: bool, poll_interval: float, timeout: float) -> None:
    """Download the outputs of job ID; exit 1 if it failed or (without --wait) has not
    ended, 3 if --wait's --timeout passed first."""
    job: Job = client.job(job_id)
    if wait and not job.status.terminal:
        answers, late = wait_with_progress(client, [job_id], poll_interval, timeout)
        if late:
            sys.exit(TIMED_OUT)
        job = answers[job_id]
    if isinstance(job, JobView) and job.result:
        for path in client.download(job, out / job.id).values():
            click.echo(path)
        sys.exit(SUCCEEDED)
    if isinstance(job, JobView) and not job.status.terminal:
        click.echo(f"job {job_id} is {job.status.value}; add --wait to wait for it", err=True)
    else:
        click.echo(f"job {job_id} has no outputs: {outcome(job, None)}", err=True)
    sys.exit(SOME_FAILED)


@main.command()
@click.argument("src")
@click.option("--in-flight", type=int, default=32, show_default=True, help="jobs waiting at most at a time")
@click.option("--batch-size", type=int, default=16, show_default=True, help="images per request (max 100)")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path),
              help="state file (default var/backfill/state-<src hash>.sqlite)")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON Lines report (default next to the state file)")
@click.option("--include", multiple=True, metavar="GLOB", help="only names matching (repeatable)")
@click.option("--exclude", multiple=True, metavar="GLOB", help="skip names matching (repeatable)")
@click.option("--limit", type=int, help="at most this many images")
@click.option("--dry-run", is_flag=True, help="list what would be submitted, submit nothing")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, help="seconds between polls when idle")
@api_command
def backfill(client: Client, src: str, include: tuple[str, ...], exclude: tuple[str, ...], limit: Optional[int],
             dry_run: bool, **options) -> None:
    """Parse every image under SRC (a folder, or s3://bucket/prefix) once; resumable.

    Exit status 0 when every image succeeded, 1 when any failed (see the report), 130
    when interrupted (run the same command again to resume).
    """
    from m2fp_client import backfill as run_backfill
    from m2fp_client.sources import Source, SourceError, select

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        source = Source.parse(src)
        names = select(source.names(), list(include), list(exclude), limit)
    except SourceError as error:
        raise Failure(str(error)) from None
    if dry_run:
        for name in names:
            click.echo(name)
        click.echo(f"{len(names)} image(s) would be submitted from {source.describe()}", err=True)
        sys.exit(SUCCEEDED)
    sys.exit(run_backfill.run(client, source, names, run_backfill.Options(**options)))


if __name__ == "__main__":
    main()
