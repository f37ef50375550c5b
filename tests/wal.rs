//! The write-ahead log against damage: real data dirs written through the real server, then
//! broken on purpose — a byte flipped anywhere, a partial frame appended, the store losing what the
//! WAL no longer covers — and opened by the server's own path (`Control::open`) and by
//! `reeve audit verify`. Each either refuses with the damaged seq named, or serves exactly the
//! original commits; never fewer.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use reeve::control::{Control, ControlError, Options};
use reeve::log::frame::{self, Frame};
use reeve::log::{Commit, LogError, Note, Store, wal};
use reeve::server::ServerConfig;

type Records = Vec<(u64, Vec<u8>)>;

/// A data dir written through the real server (projects, watches created, paused, triggered,
/// refusals), shut down cleanly; and its commits as stored.
async fn written(configure: fn(&mut ServerConfig), watches: usize) -> (tempfile::TempDir, Records) {
    let mut s = TestServer::start_with(configure).await;
    s.create_project(&s.admin, "p").await;
    for i in 0..watches {
        let uri = format!("https://w.example.com/{i}");
        let r = s.create_watch(&s.admin, watch_body("p", &uri)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let id = r.id();
        if i % 3 == 0 {
            s.patch(
                &s.admin,
                &format!("/watches/{id}"),
                serde_json::json!({"is_active": false}),
            )
            .await
            .expect(200);
        }
        if i % 4 == 0 {
            s.post(
                &s.admin,
                &format!("/watches/{id}/trigger"),
                serde_json::json!({}),
            )
            .await
            .expect(202);
        }
    }
    // A refusal is a commit too.
    let dup = s
        .create_watch(&s.admin, watch_body("p", "https://w.example.com/0"))
        .await;
    assert_eq!(dup.status, 409);
    s.shutdown().await;
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    let records = records_of(dir.path());
    assert!(records.len() > watches, "{} commits", records.len());
    (dir, records)
}

/// The commits a data dir holds, read through a copy (nothing in `dir` changes).
fn records_of(dir: &Path) -> Records {
    let store = Store::open_copy(dir).expect("a clean data dir opens");
    store
        .raw_range(1, u64::MAX)
        .map(|r| {
            let (seq, rec) = r.expect("readable");
            (seq, rec.to_vec())
        })
        .collect()
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

struct Verify {
    code: i32,
    stdout: String,
    stderr: String,
}

fn verify(dir: &Path, extra: &[&str]) -> Verify {
    let out = Command::new(env!("CARGO_BIN_EXE_reeve"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("REEVE_SERVER")
        .output()
        .unwrap();
    Verify {
        code: out.status.code().expect("not killed by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What the server's open path makes of a data dir.
enum Opened {
    Refused(Box<reeve::log::Damage>),
    Served {
        records: Records,
        notes: Vec<Note>,
        /// What the check of the history behind the snapshot (the server's scrub) finds.
        scrub: Result<(), LogError>,
    },
}

fn open(dir: &Path) -> Opened {
    match Control::open(dir, Options::default()) {
        Err(ControlError::Log(LogError::Damaged(d))) => Opened::Refused(d),
        Err(other) => panic!(
            "opening {} failed without naming damage: {other}",
            dir.display()
        ),
        Ok(control) => {
            let notes = control.store().notes().to_vec();
            let records = control
                .store()
                .raw_range(1, u64::MAX)
                .map(|r| {
                    let (seq, rec) = r.unwrap();
                    (seq, rec.to_vec())
                })
                .collect::<Records>();
            let head = records.last().map_or(0, |(seq, _)| *seq);
            let scrub = control
                .store()
                .scrub(head, &std::sync::atomic::AtomicBool::new(false));
            drop(control);
            Opened::Served {
                records,
                notes,
                scrub,
            }
        }
    }
}

/// Flips the byte at `at` of `file` (relative to the data dir) in a copy of `dir` and checks
/// both doors. Returns whether the server refused.
fn check_flip(dir: &Path, original: &Records, file: &Path, at: u64) -> bool {
    let (_keep, copy) = copy_of(dir);
    flip(&copy.join(file), at);
    let where_ = format!("{} byte {at}", file.display());
    // The audit first: it must not change the dir the server then opens.
    let v = verify(&copy, &[]);
    let head = original.last().unwrap();
    match open(&copy) {
        Opened::Refused(d) => {
            assert!(
                d.first_seq.is_some() || d.location.is_some(),
                "{where_}: a refusal names neither a seq nor a place: {d}"
            );
            let text = d.to_string();
            assert!(
                text.contains("restore the data dir from a backup"),
                "{text}"
            );
            assert!(text.contains("reeve audit verify --data-dir"), "{text}");
            assert_eq!(
                v.code, 1,
                "{where_}: the server refused ({text}) but verify said {}",
                v.stdout
            );
            if let Some(seq) = d.first_seq {
                assert!(
                    v.stderr.contains(&format!("seq {seq}")),
                    "{where_}: {}",
                    v.stderr
                );
                assert!(seq <= head.0 + 1, "{where_}: {text}");
            }
            true
        }
        Opened::Served {
            records,
            notes,
            scrub,
        } => {
            assert!(scrub.is_ok(), "served, but the scrub said {scrub:?}");
            assert!(
                records == *original,
                "{where_}: served {} commits (notes {notes:?}), the log had {}",
                records.len(),
                original.len()
            );
            assert_eq!(
                v.code, 0,
                "{where_}: the server served, verify said {}",
                v.stderr
            );
            assert!(
                v.stdout.contains(&format!("head seq   {}", head.0)),
                "{where_}: {}",
                v.stdout
            );
            false
        }
    }
}

fn small_segments(c: &mut ServerConfig) {
    c.wal_segment_bytes = 1 << 20;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_anywhere_is_refused_by_seq_or_changes_nothing() {
    let (dir, original) = written(small_segments, 16).await;
    let dir = dir.path().to_path_buf();
    let mut plan: Vec<(PathBuf, u64)> = Vec::new();
    let wal_dir = dir.join("wal");
    for e in std::fs::read_dir(&wal_dir).unwrap() {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let written = frame::garbage_end(&bytes, 0) as u64;
        let rel = path.strip_prefix(&dir).unwrap().to_path_buf();
        // Every 53rd byte of what was written (headers, lengths, checksums, records,
        // padding), and the preallocated zeros after it.
        for at in (0..written).step_by(53).chain([
            written,
            written + 3,
            written + 8,
            bytes.len() as u64 / 2,
            bytes.len() as u64 - 1,
        ]) {
            plan.push((rel.clone(), at));
        }
    }
    for path in [dir.join(reeve::log::STORE_FILE)] {
        let len = std::fs::metadata(&path).unwrap().len();
        if len == 0 {
            continue;
        }
        let rel = path.strip_prefix(&dir).unwrap().to_path_buf();
        let step = (len / 64).max(1);
        for at in (0..len).step_by(step as usize).chain([len - 1]) {
            plan.push((rel.clone(), at));
        }
    }
    let (mut refused, mut served) = (0, 0);
    for (file, at) in &plan {
        if check_flip(&dir, &original, file, *at) {
            refused += 1;
        } else {
            served += 1;
        }
    }
    eprintln!("{refused} refused, {served} served of {} flips", plan.len());
    // A flip in the middle of the WAL must be refused; one in unused space changes nothing.
    assert!(
        refused > 50,
        "{refused} refused, {served} served of {}",
        plan.len()
    );
    assert!(
        served > 10,
        "{refused} refused, {served} served of {}",
        plan.len()
    );
}

/// Every place in the store's file where the record of `seq` is stored.
fn copies_in_store(dir: &Path, record: &[u8]) -> Vec<u64> {
    let db = std::fs::read(dir.join(reeve::log::STORE_FILE)).unwrap();
    let needle = &record[record.len() - 24..];
    db.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i as u64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_damaged_in_every_store_copy_is_restored_from_the_wal_or_refused() {
    // The case: flip one byte inside one commit's record, in every copy the store keeps.
    let (dir, original) = written(small_segments, 30).await;
    let (_keep, copy) = copy_of(dir.path());
    let (seq, record) = &original[original.len() / 2];
    let places = copies_in_store(&copy, record);
    assert!(!places.is_empty(), "commit {seq} is in the store's file");
    for at in &places {
        flip(&copy.join(reeve::log::STORE_FILE), *at);
    }
    let v = verify(&copy, &[]);
    match open(&copy) {
        // The WAL still holds every commit since the data dir began, so the store is made
        // whole from it, loudly.
        Opened::Served {
            records,
            notes,
            scrub,
        } => {
            assert!(scrub.is_ok(), "served, but the scrub said {scrub:?}");
            assert!(
                records == original,
                "{} of {} commits",
                records.len(),
                original.len()
            );
            assert!(
                notes.iter().any(|n| matches!(n, Note::Rewritten { .. })),
                "{notes:?}"
            );
            assert_eq!(v.code, 0, "{}", v.stderr);
            assert!(
                v.stderr
                    .contains("warning: the store's file (store.redb) is damaged"),
                "{}",
                v.stderr
            );
        }
        Opened::Refused(d) => panic!("the WAL covers commit {seq}, yet: {d}"),
    }

    // With tiny segments the WAL has long recycled the early commits: damage to the store's copy
    // of one of them can only be refused, naming it.
    let (dir, original) = written(|c| c.wal_segment_bytes = 4096, 30).await;
    let oldest = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .min()
        .unwrap();
    assert_ne!(oldest, "0000000000000000.wal", "old segments are recycled");
    let (_keep, copy) = copy_of(dir.path());
    let (seq, record) = &original[4];
    for at in copies_in_store(&copy, record) {
        flip(&copy.join(reeve::log::STORE_FILE), at);
    }
    let v = verify(&copy, &[]);
    match open(&copy) {
        Opened::Refused(d) => {
            let first = d.first_seq.expect("a seq is named");
            assert!(first <= *seq, "{d}");
            assert_eq!(d.affected, Some(original.len() as u64 - first + 1), "{d}");
            assert_eq!(v.code, 1);
            assert!(
                v.stderr.contains(&format!("broken log at seq {first}")),
                "{}",
                v.stderr
            );
            assert_eq!(v.stdout, "");
        }
        // The start folds from a snapshot, so history behind it is checked after the start:
        // the scrub must find the damage (a server stops taking writes then), and the audit
        // tool, which folds from seq 1, must refuse.
        Opened::Served { scrub, .. } => {
            match scrub {
                Err(LogError::Damaged(d)) => {
                    assert!(d.first_seq.is_some_and(|f| f <= *seq), "{d}")
                }
                other => panic!(
                    "the store's only copy of commit {seq} was damaged, yet the scrub said {other:?}"
                ),
            }
            assert_eq!(v.code, 1, "{}", v.stderr);
            assert!(
                v.stderr.contains(&format!("broken log at seq {seq}")),
                "{}",
                v.stderr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_last_frame_is_cut_with_a_warning_and_nothing_acknowledged_is_lost() {
    let (dir, original) = written(small_segments, 10).await;
    let dir = dir.path().to_path_buf();
    let scan = wal::scan(&dir.join("wal")).unwrap();
    let newest = scan.segments.last().unwrap();
    // The start of a frame for a commit that was never acknowledged: a crash mid-write.
    let (last_seq, last_record) = original.last().unwrap();
    let last = Commit::decode(last_record).unwrap();
    let (_, record) = Commit::seal(last_seq + 1, last.hash, last.body.clone()).unwrap();
    let mut framed = Vec::new();
    frame::encode(&Frame::Commit(&record), &mut framed);
    let partial = &framed[..framed.len() / 2];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&newest.path)
            .unwrap();
        f.write_all_at(partial, newest.end).unwrap();
    }

    let v = verify(&dir, &[]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(
        v.stderr.contains(&format!(
            "an incomplete last write of {} bytes",
            partial.len()
        )),
        "{}",
        v.stderr
    );
    assert!(
        v.stdout.contains(&format!("head seq   {last_seq}")),
        "{}",
        v.stdout
    );

    let control = Control::open(&dir, Options::default()).expect("a torn tail is no damage");
    let notes = control.store().notes().to_vec();
    match &notes[..] {
        [
            Note::TornTail {
                offset,
                bytes,
                cut: true,
                ..
            },
        ] => {
            assert_eq!(*offset, newest.end);
            assert_eq!(*bytes, partial.len() as u64);
        }
        other => panic!("expected one torn-tail note, got {other:?}"),
    }
    let head = control.state().head_seq;
    assert_eq!(head, *last_seq);
    // The log goes on from where the acknowledged commits end.
    let done = control
        .submit(reeve::control::Submission {
            principal: reeve::domain::Principal::System,
            plane: reeve::domain::Plane::System,
            request_id: "after-torn".into(),
            idempotency_key: None,
            command: reeve::domain::Command::CreateProject {
                id: "after".into(),
                name: None,
            },
        })
        .await
        .unwrap();
    assert_eq!(done.seq, Some(last_seq + 1));
    control.close().await;
    drop(control);

    // Opened again: clean, no warning, one more commit than before.
    let records = records_of(&dir);
    assert_eq!(&records[..original.len()], &original[..]);
    assert_eq!(records.len(), original.len() + 1);
    let v = verify(&dir, &[]);
    assert_eq!(v.code, 0);
    assert_eq!(v.stderr, "", "a cut tail is gone for good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_and_recycle_and_the_log_reopens_whole() {
    let (dir, original) = written(|c| c.wal_segment_bytes = 4096, 60).await;
    let (segments, temps) = wal::list(&dir.path().join("wal")).unwrap();
    assert!(temps.is_empty());
    assert!(
        segments[0].0 > 0,
        "older segments were recycled: {segments:?}"
    );
    // Reopened (twice, to be sure the first open changed nothing): the same commits.
    for _ in 0..2 {
        match open(dir.path()) {
            Opened::Served {
                records,
                notes,
                scrub,
            } => {
                assert!(scrub.is_ok(), "served, but the scrub said {scrub:?}");
                assert!(records == original);
                assert!(notes.is_empty(), "{notes:?}");
            }
            Opened::Refused(d) => panic!("{d}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_wal_or_a_wal_cut_short_is_damage() {
    let (dir, original) = written(small_segments, 10).await;
    let head = original.len() as u64;

    // The WAL removed: the store alone can no longer prove it is whole.
    let (_k1, copy) = copy_of(dir.path());
    std::fs::remove_dir_all(copy.join("wal")).unwrap();
    match open(&copy) {
        Opened::Refused(d) => {
            assert_eq!(d.first_seq, Some(head + 1));
            assert!(d.why.contains("write-ahead log is gone"), "{d}");
        }
        Opened::Served { .. } => panic!("served without its WAL"),
    }
    assert_eq!(verify(&copy, &[]).code, 1);

    // The store lost everything (its file removed): the checkpoint says otherwise.
    let (_k2, copy) = copy_of(dir.path());
    std::fs::remove_file(copy.join(reeve::log::STORE_FILE)).unwrap();
    match open(&copy) {
        // The WAL of a young data dir still holds every commit: the store is rebuilt from it.
        Opened::Served {
            records,
            notes,
            scrub,
        } => {
            assert!(scrub.is_ok(), "served, but the scrub said {scrub:?}");
            assert!(records == original);
            assert!(
                notes.iter().any(|n| matches!(n, Note::Restored { .. })),
                "{notes:?}"
            );
        }
        Opened::Refused(d) => panic!("{d}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_head_proves_nothing_was_cut_from_the_end() {
    let (dir, original) = written(small_segments, 5).await;
    let (seq, record) = original.last().unwrap();
    let hash = hex::encode(Commit::decode(record).unwrap().hash);
    let anchor = format!("{seq}:{hash}");
    let v = verify(dir.path(), &["--expect-head", &anchor]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(
        v.stdout
            .contains(&format!("anchor     commit {seq} holds the expected hash"))
    );

    // An anchor from the future (the log lost its end) or with another hash: exit 1.
    let ahead = format!("{}:{hash}", seq + 1);
    let v = verify(dir.path(), &["--expect-head", &ahead]);
    assert_eq!(v.code, 1);
    assert!(
        v.stderr
            .contains(&format!("the log does not hold commit {}", seq + 1)),
        "{}",
        v.stderr
    );
    let other = format!("{seq}:{}", "ab".repeat(32));
    let v = verify(dir.path(), &["--expect-head", &other]);
    assert_eq!(v.code, 1);
    assert!(v.stderr.contains("the log was rewritten"), "{}", v.stderr);
    // A malformed anchor is a usage error.
    let v = verify(dir.path(), &["--expect-head", "12:nothex"]);
    assert_eq!(v.code, 2, "{}", v.stderr);
    assert!(v.stderr.contains("is not SEQ:HASH"), "{}", v.stderr);
}

/// The history behind the snapshot a start began from, altered in the store where the WAL no longer
/// holds it: the start is quick, and the background check finds the damage and stops every
/// write, naming the seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_behind_a_snapshot_is_found_after_the_start_and_stops_writes() {
    let s = TestServer::start_with(|c| {
        c.snapshot_commits = 5;
        c.wal_segment_bytes = 4096;
    })
    .await;
    s.create_project(&s.admin, "p").await;
    for i in 0..40 {
        s.watch(&s.admin, "p", &format!("https://b.example.com/{i}"))
            .await;
    }
    let dir = s.data_dir();
    eventually(std::time::Duration::from_secs(20), || async {
        std::fs::read_dir(dir.join("snapshots"))
            .ok()?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".snap")?.to_string();
                u64::from_str_radix(&name, 16).ok()
            })
            .max()
            .filter(|seq| *seq >= 30)
    })
    .await
    .expect("a snapshot late in the log");
    let mut s = s;
    s.shutdown().await;

    // Alter commit 3 as the store holds it, keeping the file well-formed: only the chain
    // can tell.
    {
        let mut record = store_get(&dir, "commits", &3u64.to_be_bytes()).unwrap();
        let last = record.len() - 1;
        record[last] ^= 0x01;
        alter_store(&dir, "commits", |t| {
            t.insert(&3u64.to_be_bytes()[..], record.as_slice())
                .unwrap();
        });
    }

    let s = s.restart().await;
    // Reads are served from the snapshot's state at once...
    s.get(&s.admin, "/watches?limit=5").await.expect(200);
    // ...and once the check has reached commit 3, every write is refused, naming it.
    let refused = eventually(std::time::Duration::from_secs(20), || async {
        let r = s
            .create_watch(&s.admin, watch_body("p", "https://b.example.com/after"))
            .await;
        (r.status != 201).then_some(r)
    })
    .await
    .expect("the damage is found and stops writes");
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(
        refused.text.contains("seq 3"),
        "the refusal names the damaged commit: {}",
        refused.text
    );
}
