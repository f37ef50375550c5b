"""Drives reeve's /mcp endpoint with the official Python MCP SDK, as an agent would.

Run by tests/mcp_interop.rs, which starts the server and passes, in the environment:
REEVE_URL, REEVE_ADMIN_TOKEN (for the audit only), REEVE_MCP_TOKEN (allow_trigger),
REEVE_MCP_RO_TOKEN (read-only), REEVE_PROJECT, REEVE_FAILED_JOB (a job that failed).
Exits non-zero, saying why, at the first thing that is not as it should be.
"""

import asyncio
import json
import os
import sys
import urllib.request

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

URL = os.environ["REEVE_URL"]
PROJECT = os.environ["REEVE_PROJECT"]
FAILED_JOB = os.environ["REEVE_FAILED_JOB"]
TO_URI = "viking://res/interop docs?lang=en"

READ_TOOLS = {
    "list_projects",
    "list_watches",
    "get_watch",
    "list_builds",
    "get_build",
    "get_job",
    "get_job_log",
}


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


async def session_for(token, body):
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(f"{URL}/mcp", http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                return await body(session)


async def read_only_view(session):
    init = await session.initialize()
    check(
        init.protocolVersion in ("2025-11-25", "2025-06-18"),
        f"negotiated a revision reeve speaks, got {init.protocolVersion}",
    )
    tools = await session.list_tools()
    return {t.name for t in tools.tools}


async def agent(session):
    init = await session.initialize()
    check(init.serverInfo.name == "reeve", f"server is reeve: {init.serverInfo}")
    calls = []

    async def call(name, args):
        # call_tool validates structuredContent against the tool's outputSchema.
        result = await session.call_tool(name, args)
        calls.append(name)
        return result

    tools = await session.list_tools()
    names = {t.name for t in tools.tools}
    check("create_watch" in names and READ_TOOLS <= names, f"all tools listed: {names}")
    for t in tools.tools:
        check(t.inputSchema.get("type") == "object", f"{t.name} has an object inputSchema")
        check(t.outputSchema is not None, f"{t.name} has an outputSchema")
        check(
            t.annotations.readOnlyHint == (t.name in READ_TOOLS),
            f"{t.name} readOnlyHint tells the truth",
        )

    created = await call(
        "create_watch",
        {
            "project": PROJECT,
            "source": "https://example.com/docs",
            "to_uri": TO_URI,
            "watch_interval": 60,
            "reason": "interop test",
        },
    )
    check(not created.isError, f"create_watch succeeded: {created.content}")
    watch = created.structuredContent
    check(watch["to_uri"] == TO_URI and watch["is_active"], f"the watch is as asked: {watch}")

    listed = await call("list_watches", {"project": PROJECT})
    check(not listed.isError, f"list_watches succeeded: {listed.content}")
    check(
        [w["id"] for w in listed.structuredContent["watches"]] == [watch["id"]],
        f"the new watch is listed: {listed.structuredContent}",
    )
    text = listed.content[0].text
    check(f"- {TO_URI}  every 60m  active  next " in text, f"one line per watch: {text!r}")

    bad = await call(
        "create_watch",
        {"project": PROJECT, "source": "https://example.com/x", "to_uri": "viking://res/x",
         "watch_interval": 0},
    )
    check(bad.isError, "a zero interval is a tool error")
    check("pause_watch" in bad.content[0].text, f"the error says what to do: {bad.content}")

    # Arguments the schema rejects are a JSON-RPC error the SDK raises, and the session
    # goes on (reeve answers this revision's clients with HTTP 200: this SDK drops the
    # connection on a 4xx answer to a request).
    try:
        await session.call_tool("create_watch", {"project": PROJECT, "watch_interval": "sixty"})
        check(False, "arguments that do not fit are refused")
    except McpError as e:
        check(e.error.code == -32602, f"they are invalid params: {e.error}")
        check("inputSchema" in e.error.message, f"the message says where to look: {e.error}")
    calls.append("create_watch")

    first = await call("cancel_watch", {"to_uri": TO_URI, "project": PROJECT})
    check(not first.isError and first.structuredContent["cancelled"], f"cancelled: {first}")
    second = await call("cancel_watch", {"to_uri": TO_URI, "project": PROJECT})
    check(
        not second.isError and second.structuredContent["cancelled"] is False,
        f"cancelling again says it is gone and is not an error: {second}",
    )

    restarted = await call("restart_job", {"project": PROJECT, "job": FAILED_JOB})
    check(not restarted.isError, f"restart_job succeeded: {restarted.content}")
    clones = restarted.structuredContent["jobs"]
    check(
        clones and clones[0]["from"] == FAILED_JOB and clones[0]["name"].endswith(".1"),
        f"the failed job was cloned: {clones}",
    )

    after = await call("list_watches", {"project": PROJECT})
    check(after.structuredContent["watches"] == [], "the cancelled watch is gone")
    return calls


def audit_calls(principal):
    req = urllib.request.Request(
        f"{URL}/api/v1/audit?plane=mcp&limit=1000",
        headers={"Authorization": f"Bearer {os.environ['REEVE_ADMIN_TOKEN']}"},
    )
    with urllib.request.urlopen(req) as resp:
        entries = json.load(resp)["entries"]
    out = []
    for e in entries:
        if e["principal"] != principal:
            continue
        (kind, body), = e["command"].items()
        out.append((kind, body["tool"], e["outcome"], e["code"]))
    return out


def main():
    ro_tools = asyncio.run(session_for(os.environ["REEVE_MCP_RO_TOKEN"], read_only_view))
    check(ro_tools == READ_TOOLS, f"a read-only token sees only the read tools: {ro_tools}")

    calls = asyncio.run(session_for(os.environ["REEVE_MCP_TOKEN"], agent))

    principal = f"token:{os.environ['REEVE_MCP_TOKEN_ID']}"
    trail = audit_calls(principal)
    check(
        [tool for (_, tool, _, _) in trail] == calls,
        f"the audit has every call, in order: {trail} vs {calls}",
    )
    kinds = {(tool, outcome, code): kind for (kind, tool, outcome, code) in trail}
    check(kinds[("list_watches", "accepted", None)] == "mcp_call", "reads are recorded as mcp_call")
    check(kinds[("create_watch", "accepted", None)] == "mcp_write", "writes are recorded as mcp_write")
    check(
        kinds[("create_watch", "rejected", "invalid_arguments")] == "mcp_call",
        "a write whose arguments do not fit is recorded as mcp_call: it made no command",
    )
    refused = [t for t in trail if t[2] == "rejected"]
    check(
        [(t[1], t[3]) for t in refused]
        == [
            ("create_watch", "invalid_interval"),
            ("create_watch", "invalid_arguments"),
            ("cancel_watch", "watch_not_found"),
        ],
        f"the refusals are recorded with their codes: {refused}",
    )
    print(json.dumps({"calls": calls, "audited": len(trail)}))


if __name__ == "__main__":
    main()
