//! The `reeve` client commands, run as the built binary against a real server over HTTP:
//! output (tables and `--json`), exit codes, watch keys, the token fallback, the `cli` plane
//! in the audit trail, completions. Also the `Reeve-Plane` header on the REST routes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long any one CLI run may take before the test gives up on it (not an assertion on
/// speed: only a guard against a hang).
const GUARD: Duration = Duration::from_secs(60);

/// What one run of the binary did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        &self.stdout
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Exit 1 with the problem's code and detail on stderr.
    #[track_caller]
    fn refused(&self, code: &str) {
        assert_eq!(self.code, 1, "expected exit 1 ({code}): {self:?}");
        assert!(
            self.stderr.starts_with("error: ") && self.stderr.contains(&format!("(code: {code})")),
            "stderr must carry the detail and code {code}: {self:?}"
        );
    }

    /// Exit 2 with a message containing `needle`.
    #[track_caller]
    fn usage(&self, needle: &str) {
        assert_eq!(self.code, 2, "expected a usage error: {self:?}");
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}: {self:?}"
        );
    }
}

/// How to run the binary: a clean environment (no REEVE_*, proxies or NO_COLOR from the
/// machine running the tests), the server and token as given.
#[derive(Clone)]
struct Cli {
    server: String,
    token: Option<String>,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Cli {
    fn of(s: &TestServer) -> Cli {
        Cli {
            server: s.base.clone(),
            token: Some(s.admin.clone()),
            cwd: None,
            env: Vec::new(),
        }
    }

    fn token(&self, t: Option<&str>) -> Cli {
        Cli {
            token: t.map(str::to_string),
            ..self.clone()
        }
    }

    fn server(&self, s: &str) -> Cli {
        Cli {
            server: s.to_string(),
            ..self.clone()
        }
    }

    fn cwd(&self, dir: &Path) -> Cli {
        Cli {
            cwd: Some(dir.to_path_buf()),
            ..self.clone()
        }
    }

    fn env(&self, k: &str, v: &str) -> Cli {
        let mut c = self.clone();
        c.env.push((k.to_string(), v.to_string()));
        c
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_reeve"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REEVE_SERVER", &self.server)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(t) = &self.token {
            cmd.env("REEVE_TOKEN", t);
        }
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    async fn run(&self, args: &[&str]) -> Out {
        let out = tokio::time::timeout(GUARD, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("reeve {args:?} did not finish"))
            .expect("running reeve");
        Out {
            code: out.status.code().expect("reeve exited by a signal"),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }
}

/// The header line and the rows of a table, split on runs of two or more spaces.
#[track_caller]
fn table(stdout: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let split = |l: &str| -> Vec<String> {
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut lines = stdout.lines();
    let header = split(
        lines
            .next()
            .unwrap_or_else(|| panic!("no table in {stdout:?}")),
    );
    (header, lines.map(split).collect())
}

/// The row whose first column is `id`.
#[track_caller]
fn row<'a>(rows: &'a [Vec<String>], id: &str) -> &'a Vec<String> {
    rows.iter()
        .find(|r| r.first().is_some_and(|c| c == id))
        .unwrap_or_else(|| panic!("no row {id} in {rows:?}"))
}

/// `key: value` views: the value of `key`.
#[track_caller]
fn field(stdout: &str, key: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key:?} in {stdout:?}"))
}

async fn watch_count(s: &TestServer) -> usize {
    s.all_watches(&s.admin).await.len()
}

// ---------------------------------------------------------------------------
// The Reeve-Plane header, over HTTP.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_plane_header_puts_rest_requests_on_the_cli_plane_and_refuses_other_values() {
    let s = TestServer::start().await;
    let with =
        |m: Method, path: &str, plane: &str| s.call(m, &s.admin, path).header("Reeve-Plane", plane);

    // A read with cli is served; any other value is refused and leaves no commit.
    let head = s.audit_head().await;
    let r = fetch(with(Method::GET, "/watches", "cli")).await;
    r.expect(200);
    for bad in ["rest", "CLI", "mcp", ""] {
        let r = fetch(with(Method::GET, "/projects", bad)).await;
        assert_problem(&r, 400, "invalid_header");
    }
    assert_eq!(s.audit_head().await, head, "reads leave no commit");

    // A mutation with cli is accepted and audited on the cli plane, on the plain routes and
    // on the build routes (which carry their plane as an extension).
    let r = fetch(with(Method::POST, "/projects", "cli").json(&json!({"id": "docs"}))).await;
    r.expect(201);
    let r = fetch(
        with(Method::POST, &builds_path("docs"), "cli")
            .json(&json!({"pipeline": pipeline(&[("a", &[])])})),
    )
    .await;
    r.expect(201);
    let entries = s.audit_entries(head).await;
    let planes: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["command"]
                    .as_object()
                    .and_then(|o| o.keys().next())
                    .map_or("", |k| k.as_str()),
                e["plane"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        planes,
        [("create_project", "cli"), ("trigger_build", "cli")],
        "{entries:?}"
    );

    // A mutation with another value is one refused commit (plane rest) and changes nothing.
    let head = s.audit_head().await;
    let r = fetch(with(Method::POST, "/projects", "bogus").json(&json!({"id": "web"}))).await;
    assert_problem(&r, 400, "invalid_header");
    let entries = s.audit_entries(head).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["outcome"], "rejected");
    assert_eq!(entries[0]["code"], "invalid_header");
    assert_eq!(entries[0]["plane"], "rest");
    assert_eq!(s.get(&s.admin, "/projects/web").await.status, 404);

    // Without the header nothing changes: plane rest.
    let head = s.audit_head().await;
    s.create_project(&s.admin, "web").await;
    let entries = s.audit_entries(head).await;
    assert_eq!(entries[0]["plane"], "rest");
}

// ---------------------------------------------------------------------------
// Watches.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn watch_commands_work_by_id_and_by_uri_with_tables_and_json() {
    let s = TestServer::start().await;
    let cli = Cli::of(&s);
    let head = s.audit_head().await;

    let out = cli
        .run(&["project", "create", "docs", "--name", "Documentation"])
        .await;
    assert_eq!(field(out.ok(), "id"), "docs");
    assert_eq!(field(&out.stdout, "name"), "Documentation");

    // A target with characters that must be encoded in a query string.
    let uri = "viking://res/my docs?lang=en&v=2#top";
    let added = cli
        .run(&[
            "watch",
            "add",
            "https://git.example.com/docs",
            "--to",
            uri,
            "--every",
            "600",
            "--project",
            "docs",
            "--reason",
            "nightly refresh",
            "--instruction",
            "sync it",
            "--json",
        ])
        .await
        .json();
    let id = str_field(&added, "id");
    assert_eq!(added["to_uri"], uri);
    assert_eq!(added["watch_interval"], 600.0);
    assert_eq!(added["is_active"], true);
    assert_eq!(added["reason"], "nightly refresh");
    assert_eq!(added["instruction"], "sync it");
    // A watch whose target is a prefix of the first: the encoded key must not match it.
    let other = s.watch(&s.admin, "docs", "viking://res/my docs").await;

    // ls: a table with the promised headers and the watch's row; --json is the API's page.
    let out = cli.run(&["watch", "ls", "--project", "docs"]).await;
    let (header, rows) = table(out.ok());
    assert_eq!(
        header,
        [
            "ID", "PROJECT", "TO_URI", "EVERY", "STATE", "NEXT RUN", "LAST RUN"
        ]
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let r = row(&rows, &id);
    assert_eq!(r[1..5], ["docs", uri, "600m", "active"]);
    assert!(
        !out.stdout.contains('\x1b'),
        "no colour on a pipe: {:?}",
        out.stdout
    );
    let page = cli
        .run(&["watch", "ls", "--json", "--active-only"])
        .await
        .json();
    assert_eq!(page["total"], 2);
    assert_eq!(page["watches"].as_array().unwrap().len(), 2);

    // show by id and by URI find the same watch; the URI finds exactly that one.
    let by_id = cli.run(&["watch", "show", &id, "--json"]).await.json();
    let by_uri = cli.run(&["watch", "show", uri, "--json"]).await.json();
    assert_eq!(by_id["id"], id.as_str());
    assert_eq!(by_uri["id"], id.as_str());
    let out = cli.run(&["watch", "show", uri]).await;
    assert_eq!(field(out.ok(), "to_uri"), uri);
    assert_eq!(field(&out.stdout, "state"), "active");

    // pause (with a reason), resume, update, trigger — by URI and by id.
    let out = cli
        .run(&["watch", "pause", uri, "--reason", "migration"])
        .await;
    assert_eq!(field(out.ok(), "state"), "paused");
    let w = s.watch_now(&id).await;
    assert_eq!(w["is_active"], false);
    assert_eq!(w["reason"], "migration");
    assert!(w["next_run_at"].is_null());
    let out = cli.run(&["watch", "ls", "--project", "docs"]).await;
    assert_eq!(row(&table(out.ok()).1, &id)[4], "paused");
    let resumed = cli.run(&["watch", "resume", &id, "--json"]).await.json();
    assert_eq!(resumed["is_active"], true);
    let updated = cli
        .run(&[
            "watch",
            "update",
            uri,
            "--interval",
            "30.5",
            "--instruction",
            "",
            "--reason",
            "faster",
        ])
        .await;
    assert_eq!(field(updated.ok(), "every"), "30.5m");
    let w = s.watch_now(&id).await;
    assert_eq!(w["watch_interval"], 30.5);
    assert!(w["instruction"].is_null(), "\"\" clears: {w}");
    assert_eq!(w["reason"], "faster");
    let paused = cli
        .run(&["watch", "update", &id, "--active", "false", "--json"])
        .await
        .json();
    assert_eq!(paused["is_active"], false);

    let out = cli.run(&["watch", "trigger", uri]).await;
    assert!(
        out.ok().contains(&format!("triggered watch {id}")),
        "{out:?}"
    );
    let triggered = cli.run(&["watch", "trigger", &id, "--json"]).await.json();
    assert_eq!(triggered["id"], id.as_str());
    assert_eq!(triggered["scheduled"], true);

    // rm by URI deletes that watch and no other.
    let out = cli.run(&["watch", "rm", uri]).await;
    assert!(out.ok().contains(&format!("deleted watch {id}")), "{out:?}");
    assert_eq!(s.get_watch(&s.admin, &id).await.status, 404);
    s.watch_now(&str_field(&other, "id")).await;
    cli.run(&["watch", "rm", &str_field(&other, "id")])
        .await
        .ok();
    assert_eq!(watch_count(&s).await, 0);

    // Every change above went through the cli plane.
    let entries = s.audit_entries(head).await;
    let cli_ops: Vec<String> = entries
        .iter()
        .filter(|e| e["plane"] == "cli")
        .filter_map(|e| e["command"].as_object()?.keys().next().cloned())
        .collect();
    assert_eq!(
        cli_ops,
        [
            "create_project",
            "create_watch",
            "update_watch",
            "update_watch",
            "update_watch",
            "update_watch",
            "trigger_watch",
            "trigger_watch",
            "delete_watch",
            "delete_watch",
        ],
        "{entries:?}"
    );
    let page = s.audit("?plane=cli&limit=1000").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), cli_ops.len());
}

#[tokio::test]
async fn a_uri_in_several_projects_needs_project() {
    let s = TestServer::start().await;
    let cli = Cli::of(&s);
    s.create_project(&s.admin, "a").await;
    s.create_project(&s.admin, "b").await;
    let uri = "viking://res/shared";
    s.watch(&s.admin, "a", uri).await;
    let in_b = s.watch(&s.admin, "b", uri).await;

    cli.run(&["watch", "show", uri])
        .await
        .refused("ambiguous_to_uri");
    let w = cli
        .run(&["watch", "show", uri, "--project", "b", "--json"])
        .await
        .json();
    assert_eq!(w["id"], in_b["id"]);
    cli.run(&["watch", "pause", uri])
        .await
        .refused("ambiguous_to_uri");
    let out = cli.run(&["watch", "pause", uri, "--project", "b"]).await;
    assert_eq!(field(out.ok(), "state"), "paused");
    assert_eq!(
        s.watch_now(&str_field(&in_b, "id")).await["is_active"],
        false
    );
}

#[tokio::test]
async fn refusals_exit_1_with_code_and_detail_and_change_nothing() {
    let s = TestServer::start().await;
    let cli = Cli::of(&s);
    s.create_project(&s.admin, "docs").await;
    let w = s.watch(&s.admin, "docs", "viking://res/docs").await;
    let id = str_field(&w, "id");
    let before = s.watch_now(&id).await;

    // An interval the server refuses (beyond a year): exit 1, its detail and code.
    let out = cli
        .run(&["watch", "update", &id, "--interval", "600000"])
        .await;
    out.refused("invalid_interval");
    assert!(out.stderr.contains("525600"), "{out:?}");
    assert_eq!(s.watch_now(&id).await, before);
    let out = cli
        .run(&[
            "watch",
            "add",
            "https://x.example.com",
            "--to",
            "viking://res/other",
            "--every",
            "600000",
            "--project",
            "docs",
        ])
        .await;
    out.refused("invalid_interval");
    assert_eq!(watch_count(&s).await, 1);

    // Unknown watches: by URI and by id, for a read and for changes.
    let ghost = uuid::Uuid::now_v7().to_string();
    cli.run(&["watch", "show", "viking://res/nope"])
        .await
        .refused("watch_not_found");
    cli.run(&["watch", "rm", &ghost])
        .await
        .refused("watch_not_found");
    cli.run(&["watch", "trigger", "viking://res/nope"])
        .await
        .refused("watch_not_found");
    cli.run(&[
        "watch",
        "add",
        "https://x.example.com",
        "--to",
        "viking://res/docs",
        "--every",
        "5",
        "--project",
        "docs",
    ])
    .await
    .refused("to_uri_taken");
    cli.run(&[
        "watch",
        "add",
        "https://x.example.com",
        "--to",
        "viking://res/y",
        "--every",
        "5",
        "--project",
        "nope",
    ])
    .await
    .refused("project_not_found");
    assert_eq!(watch_count(&s).await, 1);
    assert_eq!(s.watch_now(&id).await, before);

    // With --json, the problem itself is on stdout for scripts.
    let out = cli.run(&["watch", "rm", &ghost, "--json"]).await;
    out.refused("watch_not_found");
    let problem: Value = serde_json::from_str(&out.stdout).expect("problem JSON on stdout");
    assert_eq!(problem["code"], "watch_not_found");
    assert_eq!(problem["status"], 404);

    // A read-only token is refused a change.
    let (_, reader) = s.create_token("api", json!({}), false).await;
    cli.token(Some(&reader))
        .run(&["watch", "pause", &id])
        .await
        .refused("trigger_not_allowed");
    assert_eq!(s.watch_now(&id).await, before);

    // An unknown token.
    cli.token(Some("reeve_not_a_token"))
        .run(&["watch", "ls"])
        .await
        .refused("unauthorized");
}

#[tokio::test]
async fn usage_errors_exit_2_and_send_nothing() {
    let s = TestServer::start().await;
    let cli = Cli::of(&s);
    s.create_project(&s.admin, "docs").await;
    let w = s.watch(&s.admin, "docs", "viking://res/docs").await;
    let id = str_field(&w, "id");
    let before = s.watch_now(&id).await;
    let head = s.audit_head().await;

    for verb in ["show", "rm", "pause", "resume", "trigger"] {
        cli.run(&["watch", verb, "docs"])
            .await
            .usage("is not a watch key");
        cli.run(&["watch", verb, "res/docs"])
            .await
            .usage("contains ://");
    }
    cli.run(&["watch", "update", "docs", "--interval", "5"])
        .await
        .usage("is not a watch key");
    cli.run(&["watch", "update", &id])
        .await
        .usage("at least one of --interval");
    for bad in ["0", "-1", "NaN", "inf"] {
        cli.run(&["watch", "update", &id, "--interval", bad])
            .await
            .usage("reeve watch pause");
        cli.run(&[
            "watch",
            "add",
            "https://x.example.com",
            "--to",
            "viking://res/z",
            "--every",
            bad,
            "--project",
            "docs",
        ])
        .await
        .usage("reeve watch pause");
    }
    // clap's own usage errors.
    cli.run(&[
        "watch",
        "add",
        "https://x.example.com",
        "--every",
        "5",
        "--project",
        "docs",
    ])
    .await
    .usage("--to");
    cli.run(&["watch", "update", &id, "--active", "maybe"])
        .await
        .usage("--active");
    cli.run(&["watch", "frobnicate"]).await.usage("frobnicate");
    // Ids checked locally for the other nouns.
    cli.run(&["build", "show", "nope", "--project", "docs"])
        .await
        .usage("not a build id");
    cli.run(&["build", "abort", "nope", "--project", "docs"])
        .await
        .usage("not a build id");
    cli.run(&["job", "restart", "nope", "--project", "docs"])
        .await
        .usage("not a job id");
    cli.run(&["token", "revoke", "nope"])
        .await
        .usage("not a token id");
    cli.run(&["watch", "pause", &id, "--idempotency-key", "has space"])
        .await
        .usage("--idempotency-key");
    cli.run(&["watch", "ls", "--server", "https://reeve.example.com"])
        .await
        .usage("http://");

    assert_eq!(s.audit_head().await, head, "no usage error reaches the log");
    assert_eq!(s.watch_now(&id).await, before);

    // A bad key is refused before any connection: with a server that is not there it is
    // still exit 2, not a connection failure.
    cli.server("http://127.0.0.1:1")
        .run(&["watch", "rm", "docs"])
        .await
        .usage("is not a watch key");
}

// ---------------------------------------------------------------------------
// Connection: token fallback, unreachable server.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_local_server_needs_no_token_when_its_admin_token_file_is_readable() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "docs").await;
    let anon = Cli::of(&s).token(None);

    // REEVE_DATA_DIR names the data dir.
    let out = anon
        .env("REEVE_DATA_DIR", s.data_dir().to_str().unwrap())
        .run(&["project", "ls", "--json"])
        .await;
    assert_eq!(out.json()["projects"][0]["id"], "docs");

    // The default data dir, ./reeve-data, relative to where the command runs.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("reeve-data")).unwrap();
    std::fs::copy(
        s.data_dir().join("admin.token"),
        cwd.path().join("reeve-data/admin.token"),
    )
    .unwrap();
    let out = anon.cwd(cwd.path()).run(&["project", "ls"]).await;
    assert_eq!(row(&table(out.ok()).1, "docs")[1], "docs");
    // ... and with it, changes are made (and audited) as that admin on the cli plane.
    let head = s.audit_head().await;
    anon.cwd(cwd.path())
        .run(&["project", "create", "web"])
        .await
        .ok();
    let entries = s.audit_entries(head).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["plane"], "cli");
    assert_eq!(
        entries[0]["principal"],
        format!("token:{}", s.admin_token_id().await)
    );

    // No token anywhere: exit 2, and the message says how to give one.
    let empty = tempfile::tempdir().unwrap();
    let out = anon.cwd(empty.path()).run(&["project", "ls"]).await;
    out.usage("--token");
    assert!(out.stderr.contains("REEVE_TOKEN"), "{out:?}");

    // A server elsewhere never gets the local admin token.
    anon.server("http://192.0.2.1:8080")
        .env("REEVE_DATA_DIR", s.data_dir().to_str().unwrap())
        .run(&["project", "ls"])
        .await
        .usage("only used for a server on this machine");

    // --token wins over the file.
    anon.env("REEVE_DATA_DIR", s.data_dir().to_str().unwrap())
        .run(&["project", "ls", "--token", "reeve_wrong"])
        .await
        .refused("unauthorized");
}

#[tokio::test]
async fn an_unreachable_server_is_exit_1_naming_its_url() {
    let s = TestServer::start().await;
    let out = Cli::of(&s)
        .run(&["watch", "ls", "--server", "http://127.0.0.1:1"])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("http://127.0.0.1:1"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

// ---------------------------------------------------------------------------
// Projects, builds, jobs.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn project_commands() {
    let s = TestServer::start().await;
    let cli = Cli::of(&s);
    let created = cli
        .run(&["project", "create", "docs", "--json"])
        .await
        .json();
    assert_eq!(created["id"], "docs");
    assert_eq!(created["name"], "docs");
    cli.run(&["project", "create", "docs"])
        .await
        .refused("project_exists");
    cli.run(&["project", "create", "Not A Slug"])
        .await
        .refused("invalid_project_id");

    let out = cli.run(&["project", "ls"]).await;
    let (header, rows) = table(out.ok());
    assert_eq!(header, ["ID", "NAME", "DEFAULT PIPELINE", "CREATED", "BY"]);
    assert_eq!(rows.len(), 1);
    assert_eq!(row(&rows, "docs")[2], "-");
    let out = cli.run(&["project", "show", "docs"]).await;
    assert_eq!(field(out.ok(), "name"), "docs");
    assert_eq!(
        cli.run(&["project", "show", "docs", "--json"]).await.json(),
        created
    );
    cli.run(&["project", "show", "nope"])
        .await
        .refused("project_not_found");

    // Idempotency: a retry with the same key is answered once and commits once.
    let head = s.audit_head().await;
    let first = cli
        .run(&[
            "project",
            "create",
            "web",
            "--idempotency-key",
            "k-1",
            "--json",
        ])
        .await
        .json();
    let again = cli
        .run(&[
            "project",
            "create",
            "web",
            "--idempotency-key",
            "k-1",
            "--json",
        ])
        .await
        .json();
    assert_eq!(first, again);
    assert_eq!(s.audit_entries(head).await.len(), 1);
}

#[tokio::test]
async fn build_and_job_commands() {
    let s = TestServer::start().await;
    let cli = Cli::of(&s);
    s.create_project(&s.admin, "docs").await;
    let runner = s.runner_token().await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.json");
    std::fs::write(
        &file,
        pipeline(&[("compile", &[]), ("test", &["compile"])]).to_string(),
    )
    .unwrap();
    let file = file.to_str().unwrap();

    // trigger: the build with its jobs, in a table and as JSON.
    let out = cli
        .run(&[
            "build",
            "trigger",
            "--project",
            "docs",
            "--pipeline",
            file,
            "--env",
            "TARGET=prod",
        ])
        .await;
    let build = field(out.ok(), "id");
    assert_eq!(field(&out.stdout, "build"), "#1.1");
    assert_eq!(field(&out.stdout, "state"), "running");
    let shown = s.build_now("docs", &build).await;
    assert_eq!(shown["env"]["TARGET"], "prod");
    let compile = job_id(&shown, "compile");
    let test = job_id(&shown, "test");
    assert!(out.stdout.contains("JOB"), "{out:?}");
    assert!(out.stdout.contains(&compile), "{out:?}");

    let second = cli
        .run(&[
            "build",
            "trigger",
            "--project",
            "docs",
            "--pipeline",
            file,
            "--json",
        ])
        .await
        .json();
    assert_eq!(second["number"], 2);
    // Out of the runner's way: only build 1's jobs are claimable below.
    let out = cli
        .run(&[
            "build",
            "abort",
            &str_field(&second, "id"),
            "--project",
            "docs",
        ])
        .await;
    assert!(out.ok().starts_with("aborted 2 job(s)"), "{out:?}");
    cli.run(&["build", "trigger", "--project", "docs"])
        .await
        .refused("no_pipeline");
    cli.run(&[
        "build",
        "trigger",
        "--project",
        "docs",
        "--pipeline",
        "/nonexistent.json",
    ])
    .await
    .usage("could not read the pipeline file");

    // ls and show.
    let out = cli.run(&["build", "ls", "--project", "docs"]).await;
    let (header, rows) = table(out.ok());
    assert_eq!(header, ["ID", "BUILD", "STATE", "TRIGGER", "CREATED", "BY"]);
    assert_eq!(rows.len(), 2);
    assert_eq!(row(&rows, &build)[1..4], ["#1.1", "running", "api"]);
    assert_eq!(
        row(&rows, &str_field(&second, "id"))[1..3],
        ["#2.1", "killed"]
    );
    let page = cli
        .run(&["build", "ls", "--project", "docs", "--limit", "1", "--json"])
        .await
        .json();
    assert_eq!(page["builds"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
    let b = cli
        .run(&["build", "show", &build, "--project", "docs", "--json"])
        .await
        .json();
    assert_eq!(b["id"], build.as_str());
    assert_eq!(b["jobs"].as_array().unwrap().len(), 3);
    cli.run(&["build", "show", &build, "--project", "nope"])
        .await
        .refused("project_not_found");

    // A runner takes compile and writes output; `job log --follow` streams until it ends.
    let claim = s.claim(&runner).await.expect("compile is claimable");
    assert_eq!(claim["job"]["id"], compile.as_str());
    let lease = str_field(&claim, "lease_id");
    let append = |text: &'static str| {
        let s = &s;
        let runner = runner.clone();
        let lease = lease.clone();
        let compile = compile.clone();
        async move {
            let r = fetch(
                s.call(
                    Method::POST,
                    &runner,
                    &format!("/runner/jobs/{compile}/log?lease_id={lease}"),
                )
                .body(text),
            )
            .await;
            r.expect(200);
        }
    };
    append("first line\n").await;
    let mut follow = cli
        .command(&["job", "log", &compile, "--project", "docs", "--follow"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(GUARD, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("first line"));
    append("second line\n").await;
    s.finish(&runner, &compile, &lease, "finished")
        .await
        .expect(200);
    let rest = tokio::time::timeout(GUARD, async {
        let mut rest = Vec::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            rest.push(l);
        }
        rest
    })
    .await
    .expect("job log --follow ends when the job does");
    assert_eq!(rest, ["second line"]);
    let status = tokio::time::timeout(GUARD, follow.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    let out = cli
        .run(&["job", "log", &compile, "--project", "docs"])
        .await;
    assert_eq!(out.ok(), "first line\nsecond line\n");
    let out = cli
        .run(&["job", "log", &compile, "--project", "docs", "--tail", "1"])
        .await;
    assert_eq!(out.ok(), "second line\n");

    // test fails; show it, rerun it, restart compile, abort.
    let claim = s.claim(&runner).await.expect("test is claimable");
    assert_eq!(claim["job"]["id"], test.as_str());
    s.finish(&runner, &test, &str_field(&claim, "lease_id"), "failure")
        .await
        .expect(200);
    let out = cli.run(&["job", "show", &test, "--project", "docs"]).await;
    assert_eq!(field(out.ok(), "state"), "failure");
    assert_eq!(field(&out.stdout, "name"), "test");
    let j = cli
        .run(&["job", "show", &test, "--project", "docs", "--json"])
        .await
        .json();
    assert_eq!(j["state"], "failure");
    let out = cli
        .run(&["build", "show", &build, "--project", "docs"])
        .await;
    assert_eq!(field(out.ok(), "state"), "failure");

    let rerun = cli
        .run(&["job", "rerun", &test, "--project", "docs", "--json"])
        .await
        .json();
    assert_eq!(rerun["job"]["name"], "test.1");
    cli.run(&["job", "rerun", &test, "--project", "docs"])
        .await
        .refused("job_superseded");
    let restarted = cli
        .run(&["job", "restart", &compile, "--project", "docs", "--json"])
        .await
        .json();
    let names: Vec<&str> = restarted["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["compile.1", "test.2"]);
    let compile1 = restarted["jobs"][0]["to"].as_str().unwrap().to_string();
    let out = cli
        .run(&["job", "abort", &compile1, "--project", "docs"])
        .await;
    assert!(out.ok().contains(&compile1), "{out:?}");
    assert_eq!(s.job_now("docs", &compile1).await["state"], "killed");

    // Build restart makes generation 2; build abort kills what is left of it.
    let out = cli
        .run(&["build", "restart", &build, "--project", "docs"])
        .await;
    assert_eq!(field(out.ok(), "build"), "#1.2");
    let gen2 = field(&out.stdout, "id");
    let aborted = cli
        .run(&["build", "abort", &gen2, "--project", "docs", "--json"])
        .await
        .json();
    assert!(
        !aborted["aborted"].as_array().unwrap().is_empty(),
        "{aborted}"
    );
    let out = cli
        .run(&["build", "abort", &gen2, "--project", "docs"])
        .await;
    assert!(out.ok().contains("nothing to abort"), "{out:?}");
    assert_eq!(s.build_now("docs", &gen2).await["state"], "killed");
    cli.run(&[
        "job",
        "show",
        &uuid::Uuid::now_v7().to_string(),
        "--project",
        "docs",
    ])
    .await
    .refused("job_not_found");
}

// ---------------------------------------------------------------------------
// Tokens and completions.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_commands() {
    let s = TestServer::start().await;
    let cli = Cli::of(&s);
    s.create_project(&s.admin, "docs").await;

    // create: the secret alone on stdout, the warning on stderr.
    let out = cli
        .run(&[
            "token",
            "create",
            "--kind",
            "api",
            "--projects",
            "docs",
            "--allow-trigger",
            "--expires",
            "30d",
            "--description",
            "docs bot",
        ])
        .await;
    let secret = out.ok().trim_end_matches('\n');
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert!(
        secret.starts_with("reeve_") && !secret.contains(' '),
        "{out:?}"
    );
    assert!(out.stderr.contains("shown only this once"), "{out:?}");

    // The secret works: it may see docs and change it, and nothing else.
    let bot = cli.token(Some(secret));
    let out = bot
        .run(&[
            "watch",
            "add",
            "https://x.example.com",
            "--to",
            "viking://res/d",
            "--every",
            "600",
            "--project",
            "docs",
        ])
        .await;
    out.ok();
    bot.run(&["token", "ls"]).await.refused("admin_required");

    // ls: the row, as a table and as JSON; no secrets.
    let out = cli.run(&["token", "ls"]).await;
    let (header, rows) = table(out.ok());
    assert_eq!(
        header,
        [
            "ID",
            "KIND",
            "DESCRIPTION",
            "PROJECTS",
            "TRIGGER",
            "EXPIRES",
            "STATE"
        ]
    );
    let listed = cli.run(&["token", "ls", "--json"]).await.json();
    let t = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["description"] == "docs bot")
        .expect("the new token is listed")
        .clone();
    assert!(!contains_key(&listed, "secret"));
    let id = str_field(&t, "id");
    assert_eq!(t["kind"], "api");
    assert_eq!(t["allow_trigger"], true);
    assert!(ts(&t["expires_at"]) > jiff::Timestamp::now() + secs(29 * 86_400));
    assert_eq!(row(&rows, &id)[1..5], ["api", "docs bot", "docs", "yes"]);
    assert_eq!(row(&rows, &id)[6], "active");

    // --json prints the API's answer, secret included.
    let made = cli
        .run(&["token", "create", "--kind", "runner", "--json"])
        .await
        .json();
    assert!(
        made["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("reeve_"))
    );
    assert_eq!(made["kind"], "runner");
    cli.run(&["token", "create", "--kind", "api", "--projects", "nope"])
        .await
        .refused("unknown_project");
    cli.run(&["token", "create", "--kind", "wizard"])
        .await
        .usage("--kind");
    cli.run(&["token", "create", "--kind", "api", "--expires", "someday"])
        .await
        .usage("--expires");

    // A retry of a create is answered from the first answer, which cannot show the secret
    // again: exit 1 and nothing on stdout, rather than an empty "secret" for `$(...)`.
    let args = [
        "token",
        "create",
        "--kind",
        "api",
        "--idempotency-key",
        "tok-1",
    ];
    let first = cli.run(&args).await;
    assert!(first.ok().starts_with("reeve_"), "{first:?}");
    let again = cli.run(&args).await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stdout.is_empty(), "{again:?}");
    assert!(again.stderr.contains("shown only then"), "{again:?}");

    // revoke: the secret stops working.
    let out = cli.run(&["token", "revoke", &id]).await;
    assert!(out.ok().contains(&format!("revoked token {id}")), "{out:?}");
    bot.run(&["watch", "ls"]).await.refused("unauthorized");
    cli.run(&["token", "revoke", &id])
        .await
        .refused("token_already_revoked");
    let out = cli.run(&["token", "ls"]).await;
    assert_eq!(row(&table(out.ok()).1, &id)[6], "revoked");
}

#[tokio::test]
async fn completions_for_each_shell() {
    let s = TestServer::start().await;
    let cli = Cli::of(&s).server("http://127.0.0.1:1");
    for shell in ["bash", "zsh", "fish"] {
        let out = cli.run(&["completions", shell]).await;
        let script = out.ok();
        assert!(script.len() > 200, "{shell}: {out:?}");
        for word in ["watch", "trigger", "completions"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    cli.run(&["completions", "cmd.exe"]).await.usage("cmd.exe");
}
