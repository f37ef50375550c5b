"""Drives reeve's /mcp endpoint with the official Python MCP SDK 2.x, as an agent would.

Run by tests/mcp_interop.rs with the environment client.py takes. The 2.x client speaks
revision 2026-07-28 (server/discover, the revision in every request, no initialize); it
connects twice: in auto mode, where it must discover that reeve speaks 2026-07-28 and stay
there, and pinned to 2026-07-28, where there is no fallback. Prints a JSON summary last.
Exits non-zero, saying why, at the first thing that is not as it should be.
"""

import asyncio
import json
import os
import sys
import urllib.request

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

URL = os.environ["REEVE_URL"]
PROJECT = os.environ["REEVE_PROJECT"]
FAILED_JOB = os.environ["REEVE_FAILED_JOB"]
MODERN = "2026-07-28"

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


async def with_client(token, mode, body):
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(f"{URL}/mcp", http_client=http)
        async with Client(transport, mode=mode) as client:
            check(
                client.protocol_version == MODERN,
                f"mode {mode}: speaks {MODERN}, got {client.protocol_version}",
            )
            # A pinned client asks nothing before its first call, so only a discovering one
            # knows the server's name.
            if mode == "auto":
                check(
                    client.server_info is not None and client.server_info.name == "reeve",
                    f"mode {mode}: the server is reeve: {client.server_info}",
                )
            return await body(client)


async def read_only_view(client):
    tools = await client.list_tools()
    return {t.name for t in tools.tools}


def agent(to_uri, restart):
    async def run(client):
        calls = []

        async def call(name, args):
            # call_tool checks structured_content against the tool's output_schema.
            result = await client.call_tool(name, args)
            calls.append(name)
            return result

        tools = await client.list_tools()
        names = {t.name for t in tools.tools}
        check("create_watch" in names and READ_TOOLS <= names, f"all tools listed: {names}")
        for t in tools.tools:
            check(t.input_schema.get("type") == "object", f"{t.name} has an object input_schema")
            check(t.output_schema is not None, f"{t.name} has an output_schema")
            check(
                t.annotations.read_only_hint == (t.name in READ_TOOLS),
                f"{t.name} read_only_hint tells the truth",
            )

        created = await call(
            "create_watch",
            {
                "project": PROJECT,
                "source": "https://example.com/docs",
                "to_uri": to_uri,
                "watch_interval": 60,
                "reason": "interop test",
            },
        )
        check(not created.is_error, f"create_watch succeeded: {created.content}")
        watch = created.structured_content
        check(watch["to_uri"] == to_uri and watch["is_active"], f"the watch is as asked: {watch}")

        listed = await call("list_watches", {"project": PROJECT})
        check(not listed.is_error, f"list_watches succeeded: {listed.content}")
        check(
            [w["id"] for w in listed.structured_content["watches"]] == [watch["id"]],
            f"the new watch is listed: {listed.structured_content}",
        )

        bad = await call(
            "create_watch",
            {"project": PROJECT, "source": "https://example.com/x", "to_uri": "viking://res/x",
             "watch_interval": 0},
        )
        check(bad.is_error, "a zero interval is a tool error")
        check("pause_watch" in bad.content[0].text, f"the error says what to do: {bad.content}")

        # Arguments the schema rejects: HTTP 400 with a JSON-RPC error on this revision, which
        # the SDK raises with its code; the client goes on.
        try:
            await client.call_tool("create_watch", {"project": PROJECT, "watch_interval": "sixty"})
            check(False, "arguments that do not fit are refused")
        except MCPError as e:
            check(e.code == -32602, f"they are invalid params: {e.error}")
            check("inputSchema" in e.message, f"the message says where to look: {e.error}")
        calls.append("create_watch")

        first = await call("cancel_watch", {"to_uri": to_uri, "project": PROJECT})
        check(not first.is_error and first.structured_content["cancelled"], f"cancelled: {first}")
        second = await call("cancel_watch", {"to_uri": to_uri, "project": PROJECT})
        check(
            not second.is_error and second.structured_content["cancelled"] is False,
            f"cancelling again says it is gone and is not an error: {second}",
        )

        if restart:
            restarted = await call("restart_job", {"project": PROJECT, "job": FAILED_JOB})
            check(not restarted.is_error, f"restart_job succeeded: {restarted.content}")
            clones = restarted.structured_content["jobs"]
            check(
                clones and clones[0]["from"] == FAILED_JOB and clones[0]["name"].endswith(".1"),
                f"the failed job was cloned: {clones}",
            )

        after = await call("list_watches", {"project": PROJECT})
        check(after.structured_content["watches"] == [], "the cancelled watch is gone")
        return calls

    return run


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
    calls = []
    for mode in ("auto", MODERN):
        ro = asyncio.run(with_client(os.environ["REEVE_MCP_RO_TOKEN"], mode, read_only_view))
        check(ro == READ_TOOLS, f"mode {mode}: a read-only token sees only the read tools: {ro}")
        # The failed job can be restarted once; the auto-mode agent does it.
        body = agent(f"viking://res/interop {mode}?lang=en", restart=mode == "auto")
        calls += asyncio.run(with_client(os.environ["REEVE_MCP_TOKEN"], mode, body))

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
    refused = [(t[1], t[3]) for t in trail if t[2] == "rejected"]
    once = [
        ("create_watch", "invalid_interval"),
        ("create_watch", "invalid_arguments"),
        ("cancel_watch", "watch_not_found"),
    ]
    check(refused == once + once, f"the refusals are recorded with their codes: {refused}")
    print(json.dumps({"calls": calls, "audited": len(trail)}))


if __name__ == "__main__":
    main()
