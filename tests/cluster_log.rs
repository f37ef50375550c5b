//! The log on a real three-server NATS JetStream cluster: appends keep reeve's seq as the
//! stream's, a writer that is behind cannot append, reads check the chain, and the log
//! survives the loss of one server.

#[path = "support/nats.rs"]
mod nats;

use std::time::Duration;

use reeve::domain::{Command, Plane, Principal};
use reeve::log::jetstream::{AppendError, StreamLog};
use reeve::log::{Commit, CommitBody, GENESIS, Hash, Meta, Outcome};

/// `n` sealed commits following `(seq, prev)`.
fn commits(first: u64, mut prev: Hash, n: u64) -> (Vec<(u64, Vec<u8>)>, Hash) {
    let mut out = Vec::new();
    for seq in first..first + n {
        let body = CommitBody {
            at: 1_790_000_000_000 + seq as i64,
            meta: Meta {
                principal: Principal::System,
                plane: Plane::System,
                request_id: format!("r{seq}"),
                idempotency_key: None,
                command: Command::ExpireLeases,
            },
            outcome: Outcome::Accepted,
            events: Vec::new(),
        };
        let (c, record) = Commit::seal(seq, prev, body).expect("seals");
        prev = c.hash;
        out.push((seq, record));
    }
    (out, prev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_keep_their_seq_and_chain_on_a_replicated_stream() {
    let cluster = nats::NatsCluster::start(3);
    let log = StreamLog::open(&cluster.urls(), "REEVE")
        .await
        .expect("opens");
    let status = log.status().await.expect("status");
    assert_eq!((status.last_seq, status.replicas), (0, 3));

    // Groups of different sizes, as the writer sends them.
    let mut prev = GENESIS;
    let mut next = 1;
    for n in [1, 7, 64, 3] {
        let (group, last) = commits(next, prev, n);
        log.append(&group).await.expect("appends");
        prev = last;
        next += n;
    }
    let read = log.read_from(1, GENESIS).await.expect("reads");
    assert_eq!(read.len(), 75);
    assert!(read.iter().enumerate().all(|(i, c)| c.seq == i as u64 + 1));
    assert_eq!(read.last().map(|c| c.hash), Some(prev));
    // A read from the middle checks its link to what came before.
    let tail = log
        .read_from(70, read[68].hash)
        .await
        .expect("reads the tail");
    assert_eq!(tail.len(), 6);
    let wrong = log.read_from(70, GENESIS).await;
    assert!(
        matches!(wrong, Err(reeve::log::LogError::Corrupt { seq: 70, .. })),
        "{wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_is_behind_cannot_append() {
    let cluster = nats::NatsCluster::start(3);
    let urls = cluster.urls();
    let leader = StreamLog::open(&urls, "REEVE").await.expect("opens");
    // A second node's writer, connected to another server, that believes it leads.
    let deposed = StreamLog::open(&urls[2..], "REEVE").await.expect("opens");

    let (group, head) = commits(1, GENESIS, 5);
    leader.append(&group).await.expect("the leader appends");

    // The deposed writer still thinks the log ends at 3 and appends its own commit 4.
    let (stale, _) = commits(4, [9; 32], 2);
    let err = deposed.append(&stale).await.expect_err("refused");
    assert!(matches!(err, AppendError::Conflict { seq: 4 }), "{err}");
    // Nothing of it reached the log, and the leader goes on where it was.
    assert_eq!(leader.status().await.expect("status").last_seq, 5);
    let (more, _) = commits(6, head, 2);
    leader.append(&more).await.expect("the leader appends on");
    let all = leader.read_from(1, GENESIS).await.expect("reads");
    assert_eq!(all.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_outlives_one_server() {
    let mut cluster = nats::NatsCluster::start(3);
    let log = StreamLog::open(&cluster.urls(), "REEVE")
        .await
        .expect("opens");
    let (group, mut prev) = commits(1, GENESIS, 10);
    log.append(&group).await.expect("appends");

    // kill -9 one server (perhaps the stream's leader): appends go on once the stream has
    // a leader again.
    let victim = log
        .status()
        .await
        .expect("status")
        .leader
        .and_then(|l| cluster.servers.iter().position(|s| s.name == l))
        .unwrap_or(0);
    cluster.servers[victim].kill();
    let mut next = 11;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while next <= 30 {
        let (one, last) = commits(next, prev, 1);
        match log.append(&one).await {
            Ok(()) => {
                prev = last;
                next += 1;
            }
            // Not acknowledged: it may or may not have landed; read the head to know.
            Err(AppendError::Unavailable { .. }) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no append went through for 20 s after one server died"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(s) = log.status().await
                    && s.last_seq == next
                {
                    let read = log
                        .read_from(next, prev)
                        .await
                        .expect("reads the landed one");
                    prev = read[0].hash;
                    next += 1;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    // The server comes back and catches up: all three replicas current again.
    cluster.servers[victim].restart();
    let mut healed = false;
    for _ in 0..100 {
        if let Ok(s) = log.status().await
            && s.peers.len() == 3
            && s.peers.iter().all(|(_, current)| *current)
        {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(healed, "{:?}", log.status().await);
    let all = log.read_from(1, GENESIS).await.expect("reads");
    assert_eq!(all.len(), 30);
    assert_eq!(all.last().map(|c| c.hash), Some(prev));
}
