//! The log format outlives the code: a data dir written by the first version of reeve is
//! committed under `tests/fixtures/`, and every later version must still open, verify and replay
//! it to the same state. A committed fixture is never rewritten; a new one is added when new
//! kinds of records appear (`REEVE_WRITE_FIXTURE=v1|builds cargo test --test fixture_log --
//! --ignored` wrote the two here).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::copy_dir;
use reeve::control::{self, Control, Options, Submission};
use reeve::domain::{Command, NewWatch, Plane, Principal, State, TokenKind, WatchKey, WatchPatch};
use reeve::log::audit_index::AuditFilter;
use reeve::log::{Commit, Outcome, Store, SyncMode, Verifier};

const FIXTURE: &str = "tests/fixtures/data-v1";
const RECORDS: &str = "tests/fixtures/commits-v1.bin";
const EXPECT: &str = "tests/fixtures/data-v1.expect.json";
/// Written once builds and jobs existed: every build, job and runner event.
const BUILDS_FIXTURE: &str = "tests/fixtures/data-v1-builds";
const BUILDS_RECORDS: &str = "tests/fixtures/commits-v1-builds.bin";
const BUILDS_EXPECT: &str = "tests/fixtures/data-v1-builds.expect.json";

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The facts about a replayed state that the fixture pins down.
fn summary(state: &State, rejected: usize) -> serde_json::Value {
    let watches: BTreeMap<String, serde_json::Value> = state
        .watches
        .values()
        .map(|w| {
            (
                format!("{}:{}", w.project, w.to_uri),
                serde_json::json!({
                    "source": w.source,
                    "watch_interval": w.watch_interval,
                    "is_active": w.is_active,
                    "reason": w.reason,
                    "instruction": w.instruction,
                    "version": w.version,
                    "fired": w.last_run.is_some(),
                }),
            )
        })
        .collect();
    let tokens: Vec<serde_json::Value> = state
        .tokens
        .values()
        .map(|t| {
            serde_json::json!({
                "kind": t.kind,
                "description": t.description,
                "revoked": t.revoked_at.is_some(),
                "projects": t.enabled_projects.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut summary = serde_json::json!({
        "head_seq": state.head_seq,
        "head_hash": hex::encode(state.head_hash),
        "projects": state.projects.keys().collect::<Vec<_>>(),
        "watches": watches,
        "tokens": tokens,
        "rejected": rejected,
    });
    if !state.builds.is_empty() {
        let builds: Vec<serde_json::Value> = state
            .builds
            .values()
            .map(|b| {
                let jobs: Vec<serde_json::Value> = b
                    .jobs
                    .iter()
                    .map(|j| &state.jobs[j])
                    .map(|j| {
                        serde_json::json!([j.name, j.state, j.superseded_by.is_some(), j.message])
                    })
                    .collect();
                serde_json::json!({
                    "number": b.number,
                    "restart_counter": b.restart_counter,
                    "state": state.build_state(b),
                    "aborted": b.aborted,
                    "jobs": jobs,
                })
            })
            .collect();
        summary["builds"] = serde_json::Value::Array(builds);
    }
    summary
}

fn data_dir_opens_verifies_and_replays(dir: &str, expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(dir), tmp.path());
    let store = Store::open(tmp.path(), SyncMode::Durable).expect("the fixture data dir opens");
    let state = control::replay(&store).expect("the fixture log verifies and replays");
    // Written before the audit index existed: opening builds it from the log.
    assert_eq!(store.audit_indexed_through().unwrap(), 0);
    let (restored, from) = control::restore(&store, tmp.path()).expect("restores");
    assert_eq!((from, &restored), (0, &state));
    assert_eq!(store.audit_indexed_through().unwrap(), state.head_seq);
    let rejected = AuditFilter {
        accepted: Some(false),
        ..AuditFilter::default()
    };
    let rejected = store.audit_page(&rejected, 0, usize::MAX).unwrap().len();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture(expect)).unwrap()).unwrap();
    assert_eq!(summary(&state, rejected), expected);
}

#[test]
fn fixture_data_dir_opens_verifies_and_replays() {
    data_dir_opens_verifies_and_replays(FIXTURE, EXPECT);
}

#[test]
fn builds_fixture_data_dir_opens_verifies_and_replays() {
    data_dir_opens_verifies_and_replays(BUILDS_FIXTURE, BUILDS_EXPECT);
}

#[test]
fn fixture_records_decode_and_chain() {
    records_decode_and_chain(RECORDS, EXPECT);
}

#[test]
fn builds_fixture_records_decode_and_chain() {
    records_decode_and_chain(BUILDS_RECORDS, BUILDS_EXPECT);
}

fn records_decode_and_chain(records: &str, expect: &str) {
    let bytes = std::fs::read(fixture(records)).unwrap();
    let mut rest = bytes.as_slice();
    let mut verifier = Verifier::default();
    let mut state = State::default();
    let mut rejected = 0;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        let (record, tail) = tail.split_at(len);
        let commit = Commit::decode(record).expect("every fixture record decodes");
        verifier.check(&commit).expect("the fixture chain holds");
        rejected += usize::from(!state.apply(&commit).accepted);
        rest = tail;
    }
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture(expect)).unwrap()).unwrap();
    assert_eq!(summary(&state, rejected), expected);
}

/// Writes the fixture: a workload that produces every event variant and a few refusals.
#[test]
#[ignore = "writes the committed fixture; run by hand for a new format version"]
fn write_fixture() {
    if std::env::var("REEVE_WRITE_FIXTURE").as_deref() != Ok("v1") {
        return;
    }
    let dir = fixture(FIXTURE);
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let control = Control::open(&dir, Options::default()).unwrap();
        let submit = |principal, key: Option<&str>, command| Submission {
            principal,
            plane: if principal == Principal::System {
                Plane::System
            } else {
                Plane::Rest
            },
            request_id: "fixture".into(),
            idempotency_key: key.map(str::to_string),
            command,
        };
        let sys = Principal::System;
        let issue = |kind, projects: &[&str], hash: u8| Command::IssueToken {
            secret_hash: [hash; 32],
            kind,
            description: format!("{kind:?} token"),
            enabled_projects: projects.iter().map(|p| (p.to_string(), None)).collect(),
            allow_trigger: true,
            expires_at: None,
        };
        let admin = control
            .submit(submit(sys, None, issue(TokenKind::Admin, &[], 1)))
            .await
            .unwrap();
        let admin = match admin.result.unwrap() {
            reeve::domain::Reply::Token(t) => Principal::Token(t.id),
            other => panic!("{other:?}"),
        };
        for p in ["docs", "web"] {
            let c = Command::CreateProject {
                id: p.into(),
                name: Some(format!("The {p} team")),
            };
            control.submit(submit(admin, None, c)).await.unwrap();
        }
        let api = control
            .submit(submit(admin, None, issue(TokenKind::Api, &["docs"], 2)))
            .await
            .unwrap();
        let api_id = match api.result.unwrap() {
            reeve::domain::Reply::Token(t) => t.id,
            other => panic!("{other:?}"),
        };
        let watch = |project: &str, uri: &str, interval| {
            Command::CreateWatch(NewWatch {
                project: project.into(),
                source: "https://git.example.com/repo".into(),
                to_uri: uri.into(),
                watch_interval: interval,
                reason: Some("fixture".into()),
                instruction: Some("summarise changes".into()),
                is_active: true,
            })
        };
        let by_uri = |uri: &str| WatchKey {
            id: None,
            to_uri: Some(uri.into()),
            project: None,
        };
        let steps = vec![
            submit(
                Principal::Token(api_id),
                Some("k1"),
                watch("docs", "viking://res/docs", 60.0),
            ),
            submit(
                Principal::Token(api_id),
                Some("k1"),
                watch("docs", "viking://res/docs", 60.0),
            ),
            submit(admin, None, watch("web", "viking://res/docs", 15.0)),
            submit(admin, None, watch("web", "viking://res/site", 5.0)),
            submit(admin, None, watch("web", "viking://res/site", 5.0)),
            submit(admin, None, watch("web", "not a uri", 5.0)),
            submit(
                admin,
                None,
                Command::UpdateWatch {
                    key: WatchKey {
                        project: Some("web".into()),
                        ..by_uri("viking://res/docs")
                    },
                    if_match: Some(1),
                    patch: WatchPatch {
                        is_active: Some(false),
                        reason: Some(Some("paused by fixture".into())),
                        ..Default::default()
                    },
                },
            ),
            submit(
                admin,
                None,
                Command::UpdateWatch {
                    key: by_uri("viking://res/site"),
                    if_match: None,
                    patch: WatchPatch {
                        watch_interval: Some(30.0),
                        instruction: Some(None),
                        ..Default::default()
                    },
                },
            ),
            submit(
                admin,
                None,
                Command::TriggerWatch {
                    key: WatchKey {
                        project: Some("web".into()),
                        ..by_uri("viking://res/docs")
                    },
                },
            ),
            submit(
                admin,
                None,
                Command::DeleteWatch {
                    key: by_uri("viking://res/site"),
                    if_match: None,
                },
            ),
            submit(
                admin,
                None,
                Command::Malformed {
                    op: "create_watch".into(),
                    admin_only: false,
                    status: 400,
                    code: "invalid_json".into(),
                    detail: "fixture".into(),
                },
            ),
            submit(admin, None, Command::RevokeToken { id: api_id }),
        ];
        for s in steps {
            control.submit(s).await.unwrap();
        }
        control.close().await;
    });
    seal_fixture(&dir, RECORDS, EXPECT);
}

/// Writes the raw records and the expected summary beside a freshly written data dir.
fn seal_fixture(dir: &Path, records_path: &str, expect_path: &str) {
    // Lock files belong to a running server, not to the fixture.
    let _ = std::fs::remove_file(dir.join("reeve.lock"));
    let store = Store::open(dir, SyncMode::Durable).unwrap();
    let mut records = Vec::new();
    for seq in 1..=store.len() as u64 {
        let raw = store.raw(seq).unwrap().unwrap();
        records.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        records.extend_from_slice(&raw);
    }
    let state = control::replay(&store).unwrap();
    let rejected = store
        .scan(1)
        .filter(|c| {
            c.as_ref()
                .is_ok_and(|c| c.body.outcome != Outcome::Accepted)
        })
        .count();
    drop(store);
    let _ = std::fs::remove_file(dir.join("reeve.lock"));
    std::fs::write(fixture(records_path), records).unwrap();
    std::fs::write(
        fixture(expect_path),
        serde_json::to_vec_pretty(&summary(&state, rejected)).unwrap(),
    )
    .unwrap();
}

/// Writes the builds fixture: triggers, expansion, claims, heartbeats, finishes with skips,
/// restarts of jobs and builds, rerun, aborts, lease expiry, a default pipeline.
#[test]
#[ignore = "writes the committed fixture; run by hand for a new format version"]
fn write_builds_fixture() {
    use reeve::domain::{Accept, Dependency, JobSpec, JobState, Pipeline, Reply};
    if std::env::var("REEVE_WRITE_FIXTURE").as_deref() != Ok("builds") {
        return;
    }
    let dir = fixture(BUILDS_FIXTURE);
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let options = Options {
            rules: reeve::domain::Rules {
                lease_secs: 0,
                ..Default::default()
            },
            ..Options::default()
        };
        let control = Control::open(&dir, options).unwrap();
        let sys = |command| Submission {
            principal: Principal::System,
            plane: Plane::System,
            request_id: "fixture".into(),
            idempotency_key: None,
            command,
        };
        let job = |name: &str, deps: &[(&str, Accept)]| JobSpec {
            name: name.into(),
            run: format!("echo {name}"),
            depends_on: deps
                .iter()
                .map(|(d, on)| Dependency {
                    job: d.to_string(),
                    on: vec![*on],
                })
                .collect(),
            env: BTreeMap::from([("STAGE".to_string(), name.to_string())]),
            timeout_seconds: Some(60),
        };
        let pipeline = Pipeline::Jobs(vec![
            job("build", &[]),
            job("test/unit", &[("build", Accept::Finished)]),
            job("notify", &[("test/unit", Accept::Failure)]),
            job("deploy", &[("test/unit", Accept::Finished)]),
        ]);
        let submit = |command| control.submit(sys(command));
        submit(Command::CreateProject {
            id: "app".into(),
            name: None,
        })
        .await
        .unwrap();
        submit(Command::UpdateProject {
            id: "app".into(),
            name: Some("The app".into()),
            default_pipeline: Some(Some(pipeline.clone())),
        })
        .await
        .unwrap();
        let trigger = || Command::TriggerBuild {
            project: "app".into(),
            pipeline: None,
            env: BTreeMap::new(),
        };
        let first = submit(trigger()).await.unwrap();
        let Ok(Reply::Build(b1, _)) = first.result else {
            panic!("{:?}", first.result)
        };
        // build finishes, test/unit fails (deploy is skipped), notify runs and finishes.
        let mut outcomes = vec![JobState::Finished, JobState::Failure, JobState::Finished];
        let mut failed = None;
        while let Ok(Reply::Claimed { job, lease_id, .. }) =
            submit(Command::ClaimJob { labels: vec![] })
                .await
                .unwrap()
                .result
        {
            submit(Command::Heartbeat {
                job: job.id,
                lease_id,
            })
            .await
            .unwrap();
            let state = outcomes.remove(0);
            if state == JobState::Failure {
                failed = Some(job.id);
            }
            submit(Command::FinishJob {
                job: job.id,
                lease_id,
                state,
                exit_code: Some(0),
                message: None,
            })
            .await
            .unwrap();
        }
        // Restart test/unit with its descendants, then rerun the clone once it errored.
        let restarted = submit(Command::RestartJob {
            project: "app".into(),
            job: failed.unwrap(),
            if_match: None,
        })
        .await
        .unwrap();
        let Ok(Reply::Cloned(clones)) = restarted.result else {
            panic!("{:?}", restarted.result)
        };
        let unit1 = clones[0].to;
        let claimed = submit(Command::ClaimJob { labels: vec![] }).await.unwrap();
        let Ok(Reply::Claimed { lease_id, .. }) = claimed.result else {
            panic!("{:?}", claimed.result)
        };
        submit(Command::FinishJob {
            job: unit1,
            lease_id,
            state: JobState::Error,
            exit_code: None,
            message: Some("oom".into()),
        })
        .await
        .unwrap();
        submit(Command::RerunJob {
            project: "app".into(),
            job: unit1,
            if_match: None,
        })
        .await
        .unwrap();
        // Claimed and left alone: the lease (0 s here) runs out.
        submit(Command::ClaimJob { labels: vec![] }).await.unwrap();
        submit(Command::ExpireLeases).await.unwrap();
        // A new generation, aborted; restarting a job of it is refused.
        let second = submit(Command::RestartBuild {
            project: "app".into(),
            build: b1.id,
            if_match: None,
        })
        .await
        .unwrap();
        let Ok(Reply::Build(b2, jobs2)) = second.result else {
            panic!("{:?}", second.result)
        };
        submit(Command::AbortBuild {
            project: "app".into(),
            build: b2.id,
            if_match: None,
        })
        .await
        .unwrap();
        submit(Command::RestartJob {
            project: "app".into(),
            job: jobs2[1].id,
            if_match: None,
        })
        .await
        .unwrap();
        let third = submit(trigger()).await.unwrap();
        let Ok(Reply::Build(_, jobs3)) = third.result else {
            panic!("{:?}", third.result)
        };
        submit(Command::AbortJob {
            project: "app".into(),
            job: jobs3[1].id,
            if_match: None,
        })
        .await
        .unwrap();
        control.close().await;
    });
    seal_fixture(&dir, BUILDS_RECORDS, BUILDS_EXPECT);
}

/// A snapshot of the builds fixture a few commits before its head, written by the current
/// state layout. A change to the state's shape without a new `State::SNAPSHOT_LAYOUT` fails
/// here, because the old bytes no longer decode to the same state.
const SNAPSHOT: &str = "tests/fixtures/data-v1-builds.snap";

#[test]
fn the_snapshot_fixture_restores_the_builds_fixture_to_its_replayed_state() {
    let snap = reeve::log::snapshot::read(&fixture(SNAPSHOT)).expect("the fixture snapshot reads");
    assert_eq!(
        snap.layout,
        State::SNAPSHOT_LAYOUT,
        "State::SNAPSHOT_LAYOUT changed: write a new snapshot fixture \
         (REEVE_WRITE_FIXTURE=snapshot cargo test --test fixture_log -- --ignored)"
    );
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(BUILDS_FIXTURE), tmp.path());
    {
        // The fixture predates the audit index; a first open builds it, and only then can a
        // snapshot stand in for the commits before it.
        let store = Store::open(tmp.path(), SyncMode::Durable).unwrap();
        control::restore(&store, tmp.path()).unwrap();
    }
    std::fs::create_dir_all(tmp.path().join("snapshots")).unwrap();
    std::fs::copy(
        fixture(SNAPSHOT),
        tmp.path()
            .join("snapshots")
            .join(format!("{:016x}.snap", snap.seq)),
    )
    .unwrap();
    let store = Store::open(tmp.path(), SyncMode::Durable).unwrap();
    let (restored, from) = control::restore(&store, tmp.path()).expect("restores");
    assert_eq!(
        from, snap.seq,
        "the snapshot must decode and be used; if the state's shape changed, bump \
         State::SNAPSHOT_LAYOUT and write a new snapshot fixture"
    );
    assert!(restored.head_seq > from, "a tail is folded after it");
    let replayed = control::replay(&store).unwrap();
    assert_eq!(restored, replayed);
    assert_eq!(restored.digest(), replayed.digest());
}

#[test]
#[ignore = "writes the committed snapshot fixture; run by hand after a new state layout"]
fn write_snapshot_fixture() {
    if std::env::var("REEVE_WRITE_FIXTURE").as_deref() != Ok("snapshot") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(BUILDS_FIXTURE), tmp.path());
    let store = Store::open(tmp.path(), SyncMode::Durable).unwrap();
    let head = store.last_seq().unwrap();
    let mut state = State::default();
    for c in store.replay().take((head - 5) as usize) {
        state.apply(&c.unwrap());
    }
    control::save_snapshot(tmp.path(), &state).unwrap();
    let written = tmp
        .path()
        .join("snapshots")
        .join(format!("{:016x}.snap", state.head_seq));
    std::fs::copy(written, fixture(SNAPSHOT)).unwrap();
}
