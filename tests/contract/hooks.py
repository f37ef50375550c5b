"""What the REST contract test tells schemathesis beyond the OpenAPI document.

Two things, both narrow:

- How to read `application/x-ndjson` (the audit export), so its lines are checked against
  the document like every other answer.
- Which refusals a request can get although every part of it fits the schema. The document
  lists each of them on its operation (status and code); they depend on the server's state, on
  the clock, or on rules between fields that JSON Schema cannot state. A schema-valid request
  refused with anything else is still a failure, and so is every other check's failure.
"""

import atexit
import collections
import json
import sys

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

# (status, code) -> why a schema-valid request can get it.
STATEFUL_REFUSALS = {
    (400, "ambiguous_to_uri"): "the to_uri names watches in several of the caller's projects",
    (400, "watch_keys_conflict"): "the id and the to_uri name two different watches",
    (410, "log_pruned"): "job log retention deleted the job's output",
    (412, "precondition_failed"): "If-Match names a version the resource is no longer at",
    (422, "idempotency_key_reused"): "the key was used before, by this token, for another request",
    (422, "unknown_project"): "a token may only be scoped to projects that exist",
    (422, "no_pipeline"): "the project has no default pipeline to run",
    (422, "invalid_pipeline"): "job names must be unique and dependencies name jobs of the pipeline, without a cycle",
}

# Refusals that only some operations can give to a schema-valid request.
STATEFUL_BY_OPERATION = {
    # since_seq after until_seq: two parameters, each valid alone.
    ("GET /api/v1/audit/export", 400, "invalid_query"),
}


# What was forgiven, printed at the end so a run shows what the filter let through.
FORGIVEN = collections.Counter()


@atexit.register
def report():
    if FORGIVEN:
        lines = [f"  {count:5}  {status} {code}" for (status, code), count in FORGIVEN.most_common()]
        print("Refusals of schema-valid requests that the document lists as state-dependent:", file=sys.stderr)
        print("\n".join(lines), file=sys.stderr)


def problem(response):
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if not isinstance(failure, RejectedPositiveData):
        return True
    body = problem(response)
    if body is None:
        return True
    status, code = response.status_code, body.get("code")
    forgiven = (
        (status, code) in STATEFUL_REFUSALS
        or (case.operation.label, status, code) in STATEFUL_BY_OPERATION
        # An expiry must be in the future; one that is not a date-time is still a failure.
        or ((status, code) == (422, "invalid_expires_at") and "in the past" in body.get("detail", ""))
        # Each part of a pipeline has its limit in the schema; the whole, as stored, has one too.
        or (status, code, body.get("field")) == (422, "field_too_long", "pipeline")
    )
    if forgiven:
        FORGIVEN[(status, code)] += 1
    return not forgiven


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx, response):
    """The export as the list of its lines, which is how the document describes it."""
    return [json.loads(line) for line in response.content.splitlines() if line.strip()]
