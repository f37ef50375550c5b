//! The decoders that read bytes from disk, fed arbitrary bytes: no input panics them, and a
//! damaged segment never reads back as commits other than the ones written.
//!
//! `cargo test --test wal_fuzz` runs 256 cases per property. For a long run set
//! `REEVE_FUZZ_CASES` (e.g. `REEVE_FUZZ_CASES=2000000 cargo test --release --test wal_fuzz`).

use proptest::prelude::*;
use reeve::domain::{Command, Plane, Principal};
use reeve::log::frame::{self, Checkpoint, Frame, Read, SegmentHeader};
use reeve::log::{Commit, CommitBody, GENESIS, Meta, Outcome, wal};

fn cases() -> u32 {
    std::env::var("REEVE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn body(n: u64) -> CommitBody {
    CommitBody {
        at: 1_700_000_000_000 + n as i64,
        meta: Meta {
            principal: Principal::System,
            plane: Plane::System,
            request_id: format!("r{n}"),
            idempotency_key: None,
            command: Command::CreateProject {
                id: format!("p{n}"),
                name: None,
            },
        },
        outcome: Outcome::Accepted,
        events: vec![],
    }
}

/// A valid segment holding commits 1..=n and a checkpoint, and those commits' records.
fn segment(n: u64) -> (Vec<u8>, Vec<(u64, Vec<u8>)>) {
    let mut buf = Vec::new();
    let genesis = Checkpoint {
        seq: 0,
        hash: GENESIS,
    };
    frame::encode(
        &Frame::Header(SegmentHeader {
            index: 0,
            head: genesis,
            checkpoint: genesis,
        }),
        &mut buf,
    );
    let mut prev = GENESIS;
    let mut records = Vec::new();
    for seq in 1..=n {
        let (c, record) = Commit::seal(seq, prev, body(seq)).unwrap();
        prev = c.hash;
        frame::encode(&Frame::Commit(&record), &mut buf);
        if seq == n / 2 {
            frame::encode(
                &Frame::Checkpoint(Checkpoint { seq, hash: c.hash }),
                &mut buf,
            );
        }
        records.push((seq, record));
    }
    buf.resize(buf.len() + 512, 0);
    (buf, records)
}

/// How a segment may be damaged.
#[derive(Debug, Clone)]
enum Harm {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Zero(usize, usize),
}

fn harm() -> impl Strategy<Value = Harm> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(a, b)| Harm::Flip(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Harm::Set(a, b)),
        any::<usize>().prop_map(Harm::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(a, b)| Harm::Insert(a, b)),
        (any::<usize>(), 1usize..200).prop_map(|(a, n)| Harm::Zero(a, n)),
    ]
}

fn apply(buf: &mut Vec<u8>, h: &Harm) {
    let len = buf.len().max(1);
    match h {
        Harm::Flip(a, b) => {
            let i = a % len;
            if let Some(x) = buf.get_mut(i) {
                *x ^= b;
            }
        }
        Harm::Set(a, b) => {
            let i = a % len;
            if let Some(x) = buf.get_mut(i) {
                *x = *b;
            }
        }
        Harm::Truncate(a) => buf.truncate(a % len),
        Harm::Insert(a, bytes) => {
            let i = a % len;
            buf.splice(i..i, bytes.iter().copied());
        }
        Harm::Zero(a, n) => {
            let i = a % len;
            let end = (i + n).min(buf.len());
            buf[i..end].fill(0);
        }
    }
}

fn scan_bytes(bytes: &[u8]) -> Result<wal::Scan, wal::WalError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("0000000000000000.wal"), bytes).unwrap();
    wal::scan(dir.path())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..2048), at in 0usize..2048) {
        let at = (at % (bytes.len() + 1)) & !7;
        let _ = frame::read_at(&bytes, at);
        let _ = frame::next_valid(&bytes, at);
        let _ = frame::garbage_end(&bytes, at);
        let _ = Commit::decode(&bytes);
        let _ = wal::record_head(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic_a_scan(tail in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let (mut buf, _) = segment(0);
        buf.truncate(frame::garbage_end(&buf, 0).next_multiple_of(8));
        buf.extend_from_slice(&tail);
        let _ = scan_bytes(&buf);
    }

    /// Whatever happens to a segment, a scan either reports damage or a torn tail, or reads
    /// back a gapless prefix of exactly the commits written — never other commits.
    #[test]
    fn a_damaged_segment_reads_as_damage_or_a_prefix_of_what_was_written(
        n in 1u64..12,
        harms in proptest::collection::vec(harm(), 1..4),
    ) {
        let (mut buf, records) = segment(n);
        for h in &harms {
            apply(&mut buf, h);
        }
        if let Ok(scan) = scan_bytes(&buf) {
            prop_assert!(scan.commits.len() <= records.len());
            for (got, want) in scan.commits.iter().zip(&records) {
                prop_assert_eq!(got, want);
            }
        }
    }
}

#[test]
fn a_frame_reads_back_as_written() {
    let (buf, records) = segment(5);
    let mut at = 0;
    let mut commits = Vec::new();
    while let Read::Frame(f, next) = frame::read_at(&buf, at) {
        if let Frame::Commit(r) = f {
            commits.push(r.to_vec());
        }
        at = next;
    }
    assert_eq!(
        commits,
        records.into_iter().map(|r| r.1).collect::<Vec<_>>()
    );
    assert_eq!(frame::read_at(&buf, at), Read::End);
}
