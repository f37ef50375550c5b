//! The log format outlives the code: a data dir written by the first version of reeve is
//! committed under `tests/fixtures/`, and every later version must still open, verify and replay
//! it to the same state. Regenerate only when adding a new fixture for a new format version:
//! `REEVE_WRITE_FIXTURE=1 cargo test --test fixture_log -- --ignored`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reeve::control::{self, Control, Options, Submission};
use reeve::domain::{Command, NewWatch, Plane, Principal, State, TokenKind, WatchKey, WatchPatch};
use reeve::log::{Commit, Store, SyncMode, Verifier};

const FIXTURE: &str = "tests/fixtures/data-v1";
const RECORDS: &str = "tests/fixtures/commits-v1.bin";
const EXPECT: &str = "tests/fixtures/data-v1.expect.json";

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The facts about a replayed state that the fixture pins down.
fn summary(state: &State) -> serde_json::Value {
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
    serde_json::json!({
        "head_seq": state.head_seq,
        "head_hash": hex::encode(state.head_hash),
        "projects": state.projects.keys().collect::<Vec<_>>(),
        "watches": watches,
        "tokens": tokens,
        "rejected": state.audit.iter().filter(|e| !e.accepted).count(),
    })
}

#[test]
fn fixture_data_dir_opens_verifies_and_replays() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(FIXTURE), tmp.path());
    let store = Store::open(tmp.path(), SyncMode::Durable).expect("the fixture data dir opens");
    let state = control::replay(&store).expect("the fixture log verifies and replays");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture(EXPECT)).unwrap()).unwrap();
    assert_eq!(summary(&state), expected);
}

#[test]
fn fixture_records_decode_and_chain() {
    let bytes = std::fs::read(fixture(RECORDS)).unwrap();
    let mut rest = bytes.as_slice();
    let mut verifier = Verifier::default();
    let mut state = State::default();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        let (record, tail) = tail.split_at(len);
        let commit = Commit::decode(record).expect("every fixture record decodes");
        verifier.check(&commit).expect("the fixture chain holds");
        state.apply(&commit);
        rest = tail;
    }
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture(EXPECT)).unwrap()).unwrap();
    assert_eq!(summary(&state), expected);
}

/// Writes the fixture: a workload that produces every event variant and a few refusals.
#[test]
#[ignore = "writes the committed fixture; run by hand for a new format version"]
fn write_fixture() {
    if std::env::var_os("REEVE_WRITE_FIXTURE").is_none() {
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
    // Lock files belong to a running server, not to the fixture.
    let _ = std::fs::remove_file(dir.join("reeve.lock"));
    let store = Store::open(&dir, SyncMode::Durable).unwrap();
    let mut records = Vec::new();
    for seq in 1..=store.len() as u64 {
        let raw = store.raw(seq).unwrap().unwrap();
        records.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        records.extend_from_slice(&raw);
    }
    let state = control::replay(&store).unwrap();
    drop(store);
    let _ = std::fs::remove_file(dir.join("reeve.lock"));
    std::fs::write(fixture(RECORDS), records).unwrap();
    std::fs::write(
        fixture(EXPECT),
        serde_json::to_vec_pretty(&summary(&state)).unwrap(),
    )
    .unwrap();
}
