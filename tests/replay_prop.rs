//! For random command sequences, the state the server builds commit by commit equals the
//! state rebuilt by replaying the log from disk, and the hash chain verifies.

use proptest::prelude::*;
use reeve::control::{self, Control, Options, Submission};
use reeve::domain::{Command, NewWatch, Plane, Principal, Reply, TokenKind, WatchKey, WatchPatch};
use reeve::log::{Store, SyncMode};

const PROJECTS: &[&str] = &["a", "b", "Bad_Slug"];
const URIS: &[&str] = &["viking://r/1", "viking://r/2", "viking://r/3", "nope"];

#[derive(Clone, Debug)]
enum Step {
    Project(usize),
    Token {
        kind: u8,
        project: Option<usize>,
        allow_trigger: bool,
    },
    Revoke(usize),
    Watch {
        project: usize,
        uri: usize,
        interval: f64,
        active: bool,
    },
    Update {
        uri: usize,
        project: Option<usize>,
        interval: Option<f64>,
        active: Option<bool>,
        reason: Option<Option<String>>,
        if_match: Option<u64>,
    },
    Delete {
        uri: usize,
        project: Option<usize>,
    },
    Trigger {
        uri: usize,
    },
    Malformed,
}

fn step() -> impl Strategy<Value = Step> {
    let interval = prop_oneof![
        Just(0.0),
        Just(-1.0),
        Just(1e9),
        Just(f64::NAN),
        0.02f64..600.0
    ];
    prop_oneof![
        (0..PROJECTS.len()).prop_map(Step::Project),
        (0u8..4, proptest::option::of(0..2usize), any::<bool>()).prop_map(
            |(kind, project, allow_trigger)| Step::Token {
                kind,
                project,
                allow_trigger
            }
        ),
        (0usize..6).prop_map(Step::Revoke),
        (0..2usize, 0..URIS.len(), interval.clone(), any::<bool>()).prop_map(
            |(project, uri, interval, active)| Step::Watch {
                project,
                uri,
                interval,
                active
            }
        ),
        (
            0..URIS.len(),
            proptest::option::of(0..2usize),
            proptest::option::of(interval),
            proptest::option::of(any::<bool>()),
            proptest::option::of(proptest::option::of("[a-z]{0,8}")),
            proptest::option::of(0u64..4),
        )
            .prop_map(
                |(uri, project, interval, active, reason, if_match)| Step::Update {
                    uri,
                    project,
                    interval,
                    active,
                    reason,
                    if_match
                }
            ),
        (0..URIS.len(), proptest::option::of(0..2usize))
            .prop_map(|(uri, project)| Step::Delete { uri, project }),
        (0..URIS.len()).prop_map(|uri| Step::Trigger { uri }),
        Just(Step::Malformed),
    ]
}

/// (who acts, optional idempotency key slot, step)
fn action() -> impl Strategy<Value = (usize, Option<u8>, Step)> {
    (0usize..4, proptest::option::of(0u8..3), step())
}

fn command(step: &Step, tokens: &[uuid::Uuid], n: usize) -> Command {
    let key = |uri: usize, project: Option<usize>| WatchKey {
        id: None,
        to_uri: Some(URIS[uri].to_string()),
        project: project.map(|p| PROJECTS[p].to_string()),
    };
    match step.clone() {
        Step::Project(p) => Command::CreateProject {
            id: PROJECTS[p].into(),
            name: None,
        },
        Step::Token {
            kind,
            project,
            allow_trigger,
        } => Command::IssueToken {
            secret_hash: {
                let mut h = [0u8; 32];
                h[..8].copy_from_slice(&(n as u64).to_be_bytes());
                h
            },
            kind: [
                TokenKind::Admin,
                TokenKind::Api,
                TokenKind::Mcp,
                TokenKind::Runner,
            ][kind as usize],
            description: String::new(),
            enabled_projects: project
                .into_iter()
                .map(|p| (PROJECTS[p].to_string(), None))
                .collect(),
            allow_trigger,
            expires_at: None,
        },
        Step::Revoke(i) => Command::RevokeToken {
            id: tokens.get(i).copied().unwrap_or_else(uuid::Uuid::nil),
        },
        Step::Watch {
            project,
            uri,
            interval,
            active,
        } => Command::CreateWatch(NewWatch {
            project: PROJECTS[project].into(),
            source: "https://example.com/s".into(),
            to_uri: URIS[uri].into(),
            watch_interval: interval,
            reason: None,
            instruction: None,
            is_active: active,
        }),
        Step::Update {
            uri,
            project,
            interval,
            active,
            reason,
            if_match,
        } => Command::UpdateWatch {
            key: key(uri, project),
            if_match,
            patch: WatchPatch {
                watch_interval: interval,
                is_active: active,
                reason,
                instruction: None,
            },
        },
        Step::Delete { uri, project } => Command::DeleteWatch {
            key: key(uri, project),
            if_match: None,
        },
        Step::Trigger { uri } => Command::TriggerWatch {
            key: key(uri, None),
        },
        Step::Malformed => Command::Malformed {
            op: "create_watch".into(),
            admin_only: false,
            status: 400,
            code: "invalid_json".into(),
            detail: "x".into(),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn incremental_state_equals_replayed_state(
        actions in proptest::collection::vec(action(), 1..60),
        snap_at in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let live = rt.block_on(async {
            let options = Options { sync: SyncMode::Interval, ..Options::default() };
            let control = Control::open(dir.path(), options).unwrap();
            let mut tokens: Vec<uuid::Uuid> = Vec::new();
            let snap_at = snap_at.index(actions.len());
            let mut snapped = 0;
            for (n, (who, key, step)) in actions.iter().enumerate() {
                if n == snap_at {
                    let state = control.state().clone();
                    control::save_snapshot(dir.path(), &state).unwrap();
                    snapped = state.head_seq;
                }
                // Principal 0 is reeve itself; the others are tokens issued along the way.
                let principal = match who.checked_sub(1).and_then(|i| tokens.get(i)) {
                    Some(id) => Principal::Token(*id),
                    None => Principal::System,
                };
                let submitted = control.submit(Submission {
                    principal,
                    plane: if principal == Principal::System { Plane::System } else { Plane::Rest },
                    request_id: n.to_string(),
                    idempotency_key: key.map(|k| format!("key-{k}")),
                    command: command(step, &tokens, n),
                }).await.unwrap();
                if let (Some(_), Ok(Reply::Token(t))) = (submitted.seq, &submitted.result) {
                    tokens.push(t.id);
                }
            }
            let live = control.state().clone();
            control.close().await;
            (live, snapped)
        });
        let (live, snapped) = live;
        let store = Store::open(dir.path(), SyncMode::Durable).unwrap();
        let replayed = control::replay(&store).expect("the chain verifies");
        prop_assert_eq!(store.len() as u64, live.head_seq);
        prop_assert_eq!(&replayed, &live);
        // The digest `GET /api/v1/state/digest` serves and `reeve audit replay --digest`
        // recomputes: equal states must give equal digests.
        prop_assert_eq!(replayed.digest(), live.digest());
        // A clean stop saved the state at its head: a start from it folds nothing.
        let (restored, from) = control::restore(&store, dir.path()).expect("restores");
        prop_assert_eq!(from, live.head_seq, "the stop's snapshot was the starting point");
        prop_assert_eq!(&restored, &live);
        // Without it, a start from the snapshot taken midway folds the commits after it and
        // gives the same state.
        if snapped != live.head_seq {
            let newest = dir.path().join("snapshots").join(format!("{:016x}.snap", live.head_seq));
            std::fs::remove_file(&newest).expect("the stop's snapshot is there");
        }
        let (restored, from) = control::restore(&store, dir.path()).expect("restores");
        prop_assert_eq!(from, snapped, "the snapshot was the starting point");
        prop_assert_eq!(&restored, &live);
        prop_assert_eq!(restored.digest(), live.digest());
    }
}
