//! `reeve audit verify|replay|log|export` run as the real binary, against a real server on
//! port 0 (`--server`) and against real data dirs (`--data-dir`), plus the two endpoints it
//! reads: `GET /api/v1/state/digest` and the streamed `GET /api/v1/audit/export`.

mod common;

use std::path::Path;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success; stderr: {}", self.stderr);
        &self.stdout
    }

    /// The value printed after `key` at the start of a line (`key   value`).
    #[track_caller]
    fn field(&self, key: &str) -> String {
        self.stdout
            .lines()
            .find_map(|l| {
                let mut parts = l.split_whitespace();
                (parts.next() == Some(key)).then(|| parts.next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| panic!("no {key:?} line in: {}", self.stdout))
    }
}

async fn reeve(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_reeve"))
        .arg("audit")
        .args(args)
        .env_remove("REEVE_SERVER")
        .env_remove("REEVE_TOKEN")
        .output()
        .await
        .expect("running reeve");
    Run {
        code: out.status.code().expect("reeve was killed by a signal"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// `reeve audit <verb> --server <s> --token <admin> <extra>`.
async fn online(s: &TestServer, verb: &str, extra: &[&str]) -> Run {
    let base = s.base.clone();
    let mut args = vec![verb, "--server", &base, "--token", &s.admin];
    args.extend_from_slice(extra);
    reeve(&args).await
}

/// `reeve audit <verb> --data-dir <dir> <extra>`.
async fn offline(dir: &Path, verb: &str, extra: &[&str]) -> Run {
    let dir = dir.display().to_string();
    let mut args = vec![verb, "--data-dir", &dir];
    args.extend_from_slice(extra);
    reeve(&args).await
}

async fn live_digest(s: &TestServer) -> Value {
    s.get(&s.admin, "/state/digest").await.expect(200).clone()
}

/// Everything the tool has to fold: projects, tokens (one revoked), watches created, paused,
/// triggered and deleted, builds triggered and restarted, jobs claimed, finished, restarted
/// and aborted through the runner API, and a few refusals.
struct Workload {
    deleted_watch: String,
    kept_watch: String,
    /// The head right after the deleted watch was created.
    seq_with_deleted_watch: u64,
}

async fn workload(s: &TestServer) -> Workload {
    s.create_project(&s.admin, "docs").await;
    s.create_project(&s.admin, "web").await;
    let dup = s.post(&s.admin, "/projects", json!({"id": "docs"})).await;
    assert_problem(&dup, 409, "project_exists");
    let (api_id, api) = s.create_token("api", json!({"docs": null}), true).await;
    let (gone_id, _) = s.create_token("api", json!({}), false).await;
    s.delete(&s.admin, &format!("/tokens/{gone_id}"))
        .await
        .expect(200);

    let kept = s.watch(&api, "docs", "viking://res/kept").await;
    let kept_watch = str_field(&kept, "id");
    let doomed = s.watch(&s.admin, "web", "viking://res/doomed").await;
    let deleted_watch = str_field(&doomed, "id");
    let seq_with_deleted_watch = live_digest(s).await["seq"].as_u64().unwrap();
    s.patch(
        &api,
        &format!("/watches/{kept_watch}"),
        json!({"is_active": false, "reason": "holiday"}),
    )
    .await
    .expect(200);
    s.post(&api, &format!("/watches/{kept_watch}/trigger"), json!({}))
        .await
        .expect(202);
    s.delete(&s.admin, &format!("/watches/{deleted_watch}"))
        .await
        .expect(200);
    let refused = s
        .post(&api, "/watches", watch_body("web", "viking://x"))
        .await;
    assert_eq!(refused.status, 404, "{}", refused.text);

    let runner = s.runner_token().await;
    let b1 = s
        .trigger_build(
            &api,
            "docs",
            pipeline(&[("build", &[]), ("test", &["build"]), ("deploy", &["test"])]),
        )
        .await;
    s.drain(&runner, |name| {
        if name == "test" {
            "failure"
        } else {
            "finished"
        }
    })
    .await;
    let test = job_id(&s.build_now("docs", &str_field(&b1, "id")).await, "test");
    s.post(
        &api,
        &format!("{}/restart", job_path("docs", &test)),
        json!({}),
    )
    .await
    .expect(201);
    let claimed = s
        .claim(&runner)
        .await
        .expect("the restarted job is claimable");
    s.heartbeat(
        &runner,
        &str_field(&claimed["job"], "id"),
        &str_field(&claimed, "lease_id"),
    )
    .await
    .expect(200);
    s.delete(
        &api,
        &format!(
            "{}/abort",
            job_path("docs", &str_field(&claimed["job"], "id"))
        ),
    )
    .await
    .expect(200);
    s.post(
        &api,
        &format!("{}/restart", build_path("docs", &str_field(&b1, "id"))),
        json!({}),
    )
    .await
    .expect(201);
    s.drain(&runner, |_| "finished").await;

    // An agent's calls over MCP: a write (a watch created) and a read, both commits.
    let (_, agent) = s.create_token("mcp", json!({"docs": null}), true).await;
    for (id, name, arguments) in [
        (
            1,
            "create_watch",
            json!({"project": "docs", "source": "https://example.com/a",
                   "to_uri": "viking://res/agent", "watch_interval": 30}),
        ),
        (2, "list_watches", json!({"project": "docs"})),
    ] {
        let r = s
            .client
            .post(format!("{}/mcp", s.base))
            .bearer_auth(&agent)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": name, "arguments": arguments}}))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["result"]["isError"], false, "{name}: {body}");
    }
    let _ = api_id;
    Workload {
        deleted_watch,
        kept_watch,
        seq_with_deleted_watch,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_digest_equals_the_online_and_the_offline_replay_after_a_mixed_workload() {
    let mut s = TestServer::start().await;
    workload(&s).await;
    let live = live_digest(&s).await;
    assert_eq!(live["algorithm"], "sha256");
    let seq = live["seq"].as_u64().unwrap();
    assert!(seq >= 25, "the workload made only {seq} commits");
    let digest = str_field(&live, "digest");
    assert_eq!(digest.len(), 64);

    let on = online(&s, "replay", &["--digest"]).await;
    on.ok();
    assert_eq!(on.field("digest"), digest, "{}", on.stdout);
    assert_eq!(on.field("seq"), seq.to_string());
    assert_eq!(on.field("head_hash"), str_field(&live, "head_hash"));
    assert!(on.stdout.contains("(matches)"), "{}", on.stdout);

    let on_json = online(&s, "replay", &["--digest", "--json", "--show", "all"]).await;
    let doc: Value = serde_json::from_str(on_json.ok()).unwrap();
    assert_eq!(doc["digest"], json!(digest));
    assert_eq!(doc["live_digest"], json!(digest));
    assert_eq!(doc["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(doc["builds"].as_array().unwrap().len(), 2);

    let export_online = online(&s, "export", &["--format", "jsonl"]).await;
    let log_online = online(&s, "log", &[]).await;
    let verify_online = online(&s, "verify", &[]).await;
    verify_online.ok();
    assert_eq!(verify_online.field("head"), "seq");
    // The digest endpoint's head is an anchor `--expect-head` takes, online as offline.
    let anchor = format!("{seq}:{}", str_field(&live, "head_hash"));
    let anchored = online(&s, "verify", &["--expect-head", &anchor]).await;
    assert!(
        anchored
            .ok()
            .contains(&format!("anchor     commit {seq} holds the expected hash")),
        "{}",
        anchored.stdout
    );
    let beyond = format!("{}:{}", seq + 1_000_000, str_field(&live, "head_hash"));
    let cut = online(&s, "verify", &["--expect-head", &beyond]).await;
    assert_eq!(cut.code, 1, "{cut:?}");
    assert!(
        cut.stderr
            .contains(&format!("the log does not hold commit {}", seq + 1_000_000)),
        "{}",
        cut.stderr
    );

    s.shutdown().await;
    // Nothing may have been committed since the live digest; if something was, name it.
    let since = offline(&s.data_dir(), "log", &["--json", "--limit", "100000"]).await;
    let later: Vec<&str> = since
        .stdout
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|e| e["seq"].as_u64())
                .is_some_and(|n| n > seq)
        })
        .collect();
    assert!(later.is_empty(), "commits after the live digest: {later:?}");
    let off = offline(&s.data_dir(), "replay", &["--digest"]).await;
    off.ok();
    assert_eq!(off.field("digest"), digest, "{}", off.stdout);
    assert_eq!(off.field("seq"), seq.to_string());

    // The same log gives the same lines, whichever way it is read.
    let export_offline = offline(&s.data_dir(), "export", &[]).await;
    assert_eq!(export_offline.ok(), export_online.ok());
    assert_eq!(export_offline.stdout.lines().count() as u64, seq);
    let log_offline = offline(&s.data_dir(), "log", &[]).await;
    assert_eq!(log_offline.ok(), log_online.ok());
    assert_eq!(
        log_offline.stdout.lines().count() as u64,
        seq + 1,
        "a header and a line per commit"
    );

    let verify_offline = offline(&s.data_dir(), "verify", &[]).await;
    assert!(
        verify_offline.ok().contains(&format!("ok: {seq} commits")),
        "{}",
        verify_offline.stdout
    );
    assert_eq!(
        verify_offline
            .stdout
            .lines()
            .nth(2)
            .unwrap()
            .split_whitespace()
            .nth(2),
        Some(live["head_hash"].as_str().unwrap())
    );
    assert_eq!(verify_offline.stdout, verify_online.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_export_line_decodes_to_its_commit_and_folds_like_the_server() {
    let s = TestServer::start().await;
    workload(&s).await;
    let r = fetch(s.call(Method::GET, &s.admin, "/audit/export")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    // Streamed, not built in memory first: no length is known up front.
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let mut state = reeve::domain::State::default();
    let mut verifier = reeve::log::Verifier::default();
    for (i, line) in r.text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        let record = hex::decode(str_field(&v, "record")).unwrap();
        let commit = reeve::log::Commit::decode(&record).unwrap();
        verifier.check(&commit).unwrap();
        assert_eq!(v["seq"], json!(i as u64 + 1));
        assert_eq!(v["seq"], json!(commit.seq));
        assert_eq!(str_field(&v, "hash"), hex::encode(commit.hash));
        assert_eq!(str_field(&v, "prev_hash"), hex::encode(commit.prev_hash));
        assert!(v["command"].is_object() && v["events"].is_array(), "{line}");
        ts(&v["at"]);
        state.apply(&commit);
    }
    let live = live_digest(&s).await;
    assert_eq!(live["seq"], json!(state.head_seq));
    assert_eq!(str_field(&live, "digest"), hex::encode(state.digest()));

    // The human fields of a refusal.
    let refusal = r
        .text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["code"] == "project_exists")
        .expect("the duplicate project is exported");
    assert_eq!(refusal["outcome"], "rejected");
    assert_eq!(refusal["status"], 409);
    assert_eq!(refusal["events"], json!([]));

    // since_seq is exclusive, until_seq inclusive.
    let part = fetch(s.call(
        Method::GET,
        &s.admin,
        "/audit/export?since_seq=3&until_seq=7",
    ))
    .await;
    assert_eq!(part.status, 200, "{}", part.text);
    let seqs: Vec<u64> = part
        .text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![4, 5, 6, 7]);
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(part.text.lines().collect::<Vec<_>>(), lines[3..7].to_vec());
    let beyond = fetch(s.call(Method::GET, &s.admin, "/audit/export?since_seq=100000")).await;
    assert_eq!(beyond.status, 200);
    assert_eq!(beyond.text, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_are_for_admins_and_check_their_query() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "docs").await;
    let (_, api) = s.create_token("api", json!({}), true).await;
    let before = live_digest(&s).await;
    for path in ["/state/digest", "/audit/export"] {
        let r = s.get(&api, path).await;
        assert_problem(&r, 403, "admin_required");
        let r = fetch(s.client.get(s.url(path))).await;
        assert_unauthorized(&r);
    }
    for query in [
        "since_seq=abc",
        "until_seq=-1",
        "since_seq=5&until_seq=2",
        "until=3",
    ] {
        let r = s.get(&s.admin, &format!("/audit/export?{query}")).await;
        let b = assert_problem(&r, 400, "invalid_query");
        assert!(
            b["detail"].as_str().unwrap().contains("since_seq"),
            "{query}: {}",
            r.text
        );
    }
    // Reading is not a command: nothing was committed by any of this.
    assert_eq!(live_digest(&s).await, before);

    // The CLI passes a refusal on: detail and code, exit 1.
    let base = s.base.clone();
    let r = reeve(&["verify", "--server", &base, "--token", &api]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("(admin_required)"), "{}", r.stderr);
    assert!(r.stderr.contains("only an admin token"), "{}", r.stderr);
    let r = reeve(&[
        "replay", "--server", &base, "--token", "nonsense", "--digest",
    ])
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("(unauthorized)"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_seq_and_until_replay_an_earlier_state() {
    let mut s = TestServer::start().await;
    let w = workload(&s).await;
    let at = w.seq_with_deleted_watch.to_string();
    let then = online(
        &s,
        "replay",
        &["--until-seq", &at, "--show", "watches", "--json"],
    )
    .await;
    let doc: Value = serde_json::from_str(then.ok()).unwrap();
    assert_eq!(doc["seq"], json!(w.seq_with_deleted_watch));
    let ids: Vec<&str> = doc["watches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![w.kept_watch.as_str(), w.deleted_watch.as_str()]);
    assert!(doc.get("builds").is_none(), "only watches were asked for");

    let now = online(&s, "replay", &["--show", "watches", "--json"]).await;
    let doc: Value = serde_json::from_str(now.ok()).unwrap();
    let watches = doc["watches"].as_array().unwrap();
    // The kept watch, and the one the agent created over MCP; the deleted one is gone.
    assert_eq!(watches.len(), 2);
    assert_eq!(watches[0]["id"], json!(w.kept_watch));
    assert_eq!(watches[1]["to_uri"], "viking://res/agent");
    assert_eq!(watches[0]["is_active"], false);

    // The table names the watch too, and --until TIME stops at the same place as the seq.
    let then_at = serde_json::from_str::<Value>(then.ok()).unwrap()["at"].clone();
    s.shutdown().await;
    let dir = s.data_dir();
    let table = offline(&dir, "replay", &["--until-seq", &at, "--show", "watches"]).await;
    assert!(table.ok().contains(&w.deleted_watch), "{}", table.stdout);
    assert!(
        table.stdout.contains("viking://res/doomed"),
        "{}",
        table.stdout
    );
    let by_time = offline(
        &dir,
        "replay",
        &[
            "--until",
            then_at.as_str().unwrap(),
            "--show",
            "watches",
            "--json",
        ],
    )
    .await;
    let doc: Value = serde_json::from_str(by_time.ok()).unwrap();
    assert!(doc["seq"].as_u64().unwrap() >= w.seq_with_deleted_watch);
    assert_eq!(doc["at"], then_at);
    let beyond = offline(&dir, "replay", &["--until-seq", "999999", "--digest"]).await;
    assert_eq!(beyond.code, 1, "{beyond:?}");
    assert!(
        beyond.stderr.contains("before --until-seq 999999"),
        "{}",
        beyond.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_filters_the_trail() {
    let s = TestServer::start().await;
    workload(&s).await;
    let rejected = online(&s, "log", &["--outcome", "rejected"]).await;
    let lines: Vec<&str> = rejected.ok().lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{}", rejected.stdout);
    assert!(
        lines[0].contains("create_project") && lines[0].contains("rejected 409 project_exists")
    );
    assert!(lines[1].contains("create_watch") && lines[1].contains("rejected 404"));

    let docs = online(&s, "log", &["--project", "docs", "--json", "--limit", "3"]).await;
    let entries: Vec<Value> = docs
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 3);
    for e in &entries {
        assert_eq!(e["project"], "docs", "{e}");
    }
    // The same shape as GET /api/v1/audit.
    let api = s.audit("?project=docs&limit=3").await;
    assert_eq!(Value::from(entries.clone()), api["entries"]);

    let runner = online(&s, "log", &["--plane", "runner", "--json"]).await;
    let planes: Vec<Value> = runner
        .ok()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["plane"].clone())
        .collect();
    assert!(!planes.is_empty());
    assert!(planes.iter().all(|p| p == "runner"));

    let system = online(&s, "log", &["--principal", "system"]).await;
    assert!(system.ok().lines().skip(1).all(|l| l.contains(" system ")));

    let late = online(&s, "log", &["--since", "2999-01-01T00:00:00Z"]).await;
    assert_eq!(
        late.ok().lines().count(),
        1,
        "only the header: {}",
        late.stdout
    );
    let bad = online(&s, "log", &["--plane", "email"]).await;
    assert_eq!(bad.code, 2, "{bad:?}");
    let bad = online(&s, "log", &["--since", "yesterday"]).await;
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_a_running_server_holds_is_refused_and_left_alone() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "docs").await;
    let before = live_digest(&s).await;
    for verb in ["verify", "replay", "log", "export"] {
        let r = offline(&s.data_dir(), verb, &[]).await;
        assert_eq!(r.code, 1, "{verb}: {r:?}");
        assert!(
            r.stderr.contains(&s.data_dir().display().to_string()),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("--server URL"), "{}", r.stderr);
        assert_eq!(r.stdout, "");
    }
    assert_eq!(live_digest(&s).await, before);
    s.create_project(&s.admin, "web").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_tampered_record_and_a_missing_one() {
    // Small WAL segments, so that by the end the WAL no longer holds the early commits and
    // only the store's copy of them is left to check.
    let mut s = TestServer::start_with(|c| c.wal_segment_bytes = 4096).await;
    workload(&s).await;
    let head = live_digest(&s).await;
    s.shutdown().await;
    let seq = head["seq"].as_u64().unwrap();
    let oldest_segment = std::fs::read_dir(s.data_dir().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .min()
        .unwrap();
    assert_ne!(
        oldest_segment, "0000000000000000.wal",
        "segments the store holds durably are recycled"
    );

    let clean = offline(&s.data_dir(), "verify", &[]).await;
    assert!(
        clean.ok().starts_with(&format!("ok: {seq} commits")),
        "{}",
        clean.stdout
    );
    assert_eq!(clean.field("head"), "seq");

    // One flipped byte inside the body of commit 5.
    let (_keep, flipped) = copy_of(&s.data_dir());
    {
        let key = 5u64.to_be_bytes();
        let mut record = store_get(&flipped, "commits", &key).unwrap();
        let last = record.len() - 1;
        record[last] ^= 0x01;
        alter_store(&flipped, "commits", |t| {
            t.insert(&key[..], record.as_slice()).unwrap();
        });
    }
    let r = offline(&flipped, "verify", &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("broken log at seq 5: hash mismatch"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");
    // Export stops there too, with an error line after the four good commits.
    let r = offline(&flipped, "export", &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    let lines: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{}", r.stdout);
    assert_eq!(lines[3]["seq"], 4);
    let error = lines[4]["error"].as_str().unwrap();
    assert!(error.starts_with("commit 5 is corrupt"), "{error}");
    assert!(r.stderr.contains("commit 5 is corrupt"), "{}", r.stderr);
    // Replay and log check the chain as they fold, and stop at the same place.
    for verb in ["replay", "log"] {
        let r = offline(&flipped, verb, &[]).await;
        assert_eq!(r.code, 1, "{verb}: {r:?}");
        assert!(
            r.stderr.contains("broken log at seq 5"),
            "{verb}: {}",
            r.stderr
        );
    }

    // A byte flipped in the seq field is named by where the record is stored.
    let (_keep2, reseq) = copy_of(&s.data_dir());
    {
        let key = 9u64.to_be_bytes();
        let mut record = store_get(&reseq, "commits", &key).unwrap();
        record[8] ^= 0x02;
        alter_store(&reseq, "commits", |t| {
            t.insert(&key[..], record.as_slice()).unwrap();
        });
    }
    let r = offline(&reseq, "verify", &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("broken log at seq 9"), "{}", r.stderr);

    // Commit 6 removed.
    let (_keep3, gap) = copy_of(&s.data_dir());
    alter_store(&gap, "commits", |t| {
        t.remove(&6u64.to_be_bytes()[..]).unwrap().unwrap();
    });
    let r = offline(&gap, "verify", &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("broken log at seq 6: gap: expected seq 6, found 7"),
        "{}",
        r.stderr
    );

    // A record replaced by a well-formed one that does not chain.
    let (_keep4, forged) = copy_of(&s.data_dir());
    {
        let old = store_get(&forged, "commits", &4u64.to_be_bytes()).unwrap();
        let commit = reeve::log::Commit::decode(&old).unwrap();
        let (_, record) = reeve::log::Commit::seal(4, [9; 32], commit.body).unwrap();
        alter_store(&forged, "commits", |t| {
            t.insert(&4u64.to_be_bytes()[..], record.as_slice())
                .unwrap();
        });
    }
    let r = offline(&forged, "verify", &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("broken log at seq 4: hash chain broken"),
        "{}",
        r.stderr
    );

    // The original is untouched by all of this.
    offline(&s.data_dir(), "verify", &[]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_data_dirs_verify_clean() {
    for (fixture, expect) in [
        (
            "tests/fixtures/data-v1",
            "tests/fixtures/data-v1.expect.json",
        ),
        (
            "tests/fixtures/data-v1-builds",
            "tests/fixtures/data-v1-builds.expect.json",
        ),
    ] {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let expect: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(expect)).unwrap()).unwrap();
        let (_keep, dir) = copy_of(&root.join(fixture));
        let r = offline(&dir, "verify", &[]).await;
        let seq = expect["head_seq"].as_u64().unwrap();
        assert!(
            r.ok().starts_with(&format!("ok: {seq} commits")),
            "{fixture}: {}",
            r.stdout
        );
        assert_eq!(r.field("head"), "seq");
        assert!(
            r.stdout.contains(expect["head_hash"].as_str().unwrap()),
            "{fixture}: {}",
            r.stdout
        );
        let replay = offline(&dir, "replay", &["--digest"]).await;
        assert_eq!(replay.field("seq"), seq.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let none = reeve(&["verify"]).await;
    assert_eq!(none.code, 2, "{none:?}");
    assert!(none.stderr.contains("--data-dir"), "{}", none.stderr);
    let both = reeve(&[
        "verify",
        "--data-dir",
        "/nowhere",
        "--server",
        "http://127.0.0.1:1",
    ])
    .await;
    assert_eq!(both.code, 2, "{both:?}");
    let no_token = reeve(&["verify", "--server", "http://127.0.0.1:1"]).await;
    assert_eq!(no_token.code, 2, "{no_token:?}");
    assert!(no_token.stderr.contains("--token"), "{}", no_token.stderr);
    let csv = reeve(&["export", "--format", "csv", "--data-dir", "/nowhere"]).await;
    assert_eq!(csv.code, 2, "{csv:?}");
    let both_until = reeve(&[
        "replay",
        "--data-dir",
        "/nowhere",
        "--until-seq",
        "3",
        "--until",
        "2026-01-01T00:00:00Z",
    ])
    .await;
    assert_eq!(both_until.code, 2, "{both_until:?}");
    // Not a usage error, but a clear failure: no log there.
    let tmp = tempfile::tempdir().unwrap();
    let missing = offline(tmp.path(), "verify", &[]).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("is not a reeve data dir"),
        "{}",
        missing.stderr
    );
    assert!(!tmp.path().join("log").exists(), "nothing is created");
}
