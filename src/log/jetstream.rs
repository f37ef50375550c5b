//! The log on a NATS JetStream cluster: one stream, one message per commit, so the stream's
//! sequence is reeve's seq. A message's payload is the commit's record exactly as the
//! embedded log stores it (version, seq, prev_hash, hash, body), so the hash chain and
//! `Commit::decode` are the same in both.
//!
//! Every append names the sequence it expects to follow (`Nats-Expected-Last-Sequence`), so a
//! writer that is no longer the only one (a deposed leader that has not noticed yet) cannot
//! fork the log: JetStream refuses its append, and it learns it must step down. JetStream
//! acknowledges a message once a majority of the stream's replicas hold it, on disk.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use futures_util::StreamExt;

use super::{Commit, Hash, LogError};

/// The stream's subject: one, since the stream holds nothing but commits.
fn subject(stream: &str) -> String {
    format!("{stream}.commits")
}

/// Why an append did not go through.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The stream's head is not where this writer thought: another writer appended first.
    /// Nothing of this group from `seq` on is in the log.
    #[error(
        "commit {seq} was not appended: the stream has moved on without this writer (another node leads now)"
    )]
    Conflict { seq: u64 },
    /// The cluster did not acknowledge commit `seq` (no quorum, no connection, a timeout).
    /// Whether it is in the log is unknown until the stream is read again.
    #[error("commit {seq} was not acknowledged by the cluster: {why}")]
    Unavailable { seq: u64, why: String },
}

impl AppendError {
    pub fn seq(&self) -> u64 {
        match self {
            AppendError::Conflict { seq } | AppendError::Unavailable { seq, .. } => *seq,
        }
    }
}

/// What the cluster says about the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStatus {
    pub last_seq: u64,
    pub replicas: usize,
    /// The server that leads the stream's RAFT group, and each replica's name and whether it
    /// is current.
    pub leader: Option<String>,
    pub peers: Vec<(String, bool)>,
}

/// The reeve log as a JetStream stream.
#[derive(Clone)]
pub struct StreamLog {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    subject: String,
}

impl StreamLog {
    /// Connects to the cluster and opens the log's stream, creating it on first use: file
    /// storage, `min(3, servers)` replicas, nothing ever discarded, no message deletable.
    pub async fn open(servers: &[String], stream: &str) -> Result<StreamLog, LogError> {
        let unavailable = |why: String| LogError::Failed(format!("NATS cluster: {why}"));
        if servers.is_empty() {
            return Err(unavailable("no server given".into()));
        }
        let addrs = servers
            .iter()
            .map(|s| {
                s.parse::<async_nats::ServerAddr>()
                    .map_err(|e| unavailable(format!("{s:?} is not a NATS server URL: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = async_nats::ConnectOptions::new()
            .name("reeve")
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .connect(addrs)
            .await
            .map_err(|e| unavailable(format!("cannot connect to {}: {e}", servers.join(","))))?;
        let js = jetstream::new(client.clone());
        let subject = subject(stream);
        let config = stream::Config {
            name: stream.to_string(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: servers.len().clamp(1, 3),
            retention: stream::RetentionPolicy::Limits,
            max_messages: -1,
            max_bytes: -1,
            discard: stream::DiscardPolicy::New,
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            ..Default::default()
        };
        ensure_stream(&js, config).await?;
        Ok(StreamLog {
            client,
            js,
            stream: stream.to_string(),
            subject,
        })
    }

    /// Appends a group of sealed records, in order, each expecting to follow the one before:
    /// `records[0]` must follow the stream's last message. All are sent before the first
    /// acknowledgement is awaited. On an error, the commits before the one it names are in
    /// the log, and none after it is.
    pub async fn append(&self, records: &[(u64, Vec<u8>)]) -> Result<(), AppendError> {
        let mut pending = Vec::with_capacity(records.len());
        for (seq, record) in records {
            let publish = jetstream::message::PublishMessage::build()
                .payload(record.clone().into())
                .expected_last_sequence(seq.saturating_sub(1));
            let ack = self
                .js
                .send_publish(self.subject.clone(), publish)
                .await
                .map_err(|e| AppendError::Unavailable {
                    seq: *seq,
                    why: e.to_string(),
                })?;
            pending.push((*seq, ack));
        }
        for (seq, ack) in pending {
            match ack.await {
                Ok(a) if a.sequence == seq => {}
                Ok(a) => {
                    return Err(AppendError::Unavailable {
                        seq,
                        why: format!("the stream stored it as message {}", a.sequence),
                    });
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(AppendError::Conflict { seq });
                }
                Err(e) => {
                    return Err(AppendError::Unavailable {
                        seq,
                        why: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The stream's state: its last seq, replicas, leader and peers.
    pub async fn status(&self) -> Result<StreamStatus, LogError> {
        let mut s = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| LogError::Failed(format!("stream {}: {e}", self.stream)))?;
        let info = s
            .info()
            .await
            .map_err(|e| LogError::Failed(format!("stream {}: {e}", self.stream)))?;
        let cluster = info.cluster.clone().unwrap_or_default();
        let mut peers: Vec<(String, bool)> = cluster
            .replicas
            .iter()
            .map(|p| (p.name.clone(), p.current && !p.offline))
            .collect();
        if let Some(leader) = &cluster.leader {
            peers.insert(0, (leader.clone(), true));
        }
        Ok(StreamStatus {
            last_seq: info.state.last_sequence,
            replicas: info.config.num_replicas,
            leader: cluster.leader,
            peers,
        })
    }

    /// The commits from `from` on, in order, as the stream holds them, ending with the last
    /// one the stream held when the read began. Each is decoded and checked against the
    /// chain: a gap, a seq out of place or a broken link is an error, never skipped.
    pub async fn read_from(&self, from: u64, prev: Hash) -> Result<Vec<Commit>, LogError> {
        Ok(self
            .read_records(from, prev)
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect())
    }

    /// [`StreamLog::read_from`], each commit with its record as stored.
    pub async fn read_records(
        &self,
        from: u64,
        prev: Hash,
    ) -> Result<Vec<(Commit, Vec<u8>)>, LogError> {
        let last = self.status().await?.last_seq;
        let mut out = Vec::new();
        if from > last {
            return Ok(out);
        }
        let follow = self.follow_records(from, prev).await?;
        let mut follow = std::pin::pin!(follow);
        while let Some(c) = follow.next().await {
            let c = c?;
            let done = c.0.seq >= last;
            out.push(c);
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// The client the stream is read and written through.
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// Every commit from `from` on, as it arrives, checked against the chain from `prev` (the
    /// hash of commit `from - 1`). Runs until the stream or the connection ends.
    pub async fn follow(
        &self,
        from: u64,
        prev: Hash,
    ) -> Result<impl futures_util::Stream<Item = Result<Commit, LogError>> + use<>, LogError> {
        Ok(self
            .follow_records(from, prev)
            .await?
            .map(|r| r.map(|(c, _)| c)))
    }

    /// [`StreamLog::follow`], each commit with its record as stored.
    pub async fn follow_records(
        &self,
        from: u64,
        prev: Hash,
    ) -> Result<
        impl futures_util::Stream<Item = Result<(Commit, Vec<u8>), LogError>> + use<>,
        LogError,
    > {
        let messages = ordered_from(&self.js, &self.stream, from).await?;
        let mut expect = (from.max(1), prev);
        Ok(messages.map(move |m| {
            let m = m.map_err(|e| LogError::Failed(format!("following the log: {e}")))?;
            let c = Commit::decode(&m.payload)?;
            if c.seq != expect.0 || c.prev_hash != expect.1 {
                return Err(LogError::Corrupt {
                    seq: expect.0,
                    why: format!(
                        "the stream's message is commit {} linked to {}, where commit {} linked to {} was due",
                        c.seq,
                        hex::encode(&c.prev_hash[..8]),
                        expect.0,
                        hex::encode(&expect.1[..8])
                    ),
                });
            }
            expect = (c.seq + 1, c.hash);
            Ok((c, m.payload.to_vec()))
        }))
    }

    /// Waits until everything sent on the connection has reached the server.
    pub async fn flush(&self) -> Result<(), LogError> {
        self.client
            .flush()
            .await
            .map_err(|e| LogError::Failed(format!("NATS: {e}")))
    }
}

/// Job output in cluster mode: a stream beside the log, one message per chunk a runner sent,
/// on the subject of its job, with the chunk's byte offset in the job's output. Every node
/// follows it into its own store, so any node serves (and follows) any job's output, and a new
/// leader has what the last one took in.
#[derive(Clone)]
pub struct JobLogStream {
    js: jetstream::Context,
    stream: String,
}

/// The header with a chunk's byte offset in its job's output.
const OFFSET: &str = "Reeve-Offset";

/// One chunk of a job's output as the stream holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    /// The stream's sequence of this chunk.
    pub seq: u64,
    pub job: uuid::Uuid,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl JobLogStream {
    /// Opens (creating on first use) the output stream: file storage, the log's replicas.
    /// Unlike the log, a job's messages may be purged: job log retention deletes output.
    pub async fn open(log: &StreamLog, stream: &str, replicas: usize) -> Result<Self, LogError> {
        let js = jetstream::new(log.client());
        let config = stream::Config {
            name: stream.to_string(),
            subjects: vec![format!("{stream}.>")],
            storage: stream::StorageType::File,
            num_replicas: replicas.clamp(1, 3),
            max_messages: -1,
            max_bytes: -1,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        ensure_stream(&js, config).await?;
        Ok(JobLogStream {
            js,
            stream: stream.to_string(),
        })
    }

    fn subject(&self, job: uuid::Uuid) -> String {
        format!("{}.{}", self.stream, job.simple())
    }

    /// Appends one chunk of `job`'s output at `offset`; returns once the cluster has it.
    pub async fn append(
        &self,
        job: uuid::Uuid,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<(), LogError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(bytes.into())
            .header(OFFSET, offset.to_string().as_str());
        let failed = |e: String| LogError::Failed(format!("job output to the cluster: {e}"));
        self.js
            .send_publish(self.subject(job), publish)
            .await
            .map_err(|e| failed(e.to_string()))?
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(())
    }

    /// Deletes `job`'s output from the stream (job log retention).
    pub async fn purge(&self, job: uuid::Uuid) -> Result<(), LogError> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| LogError::Failed(format!("stream {}: {e}", self.stream)))?;
        stream
            .purge()
            .filter(self.subject(job))
            .await
            .map_err(|e| LogError::Failed(format!("stream {}: {e}", self.stream)))?;
        Ok(())
    }

    /// Every chunk from the stream's sequence `from` on, as it arrives.
    pub async fn follow(
        &self,
        from: u64,
    ) -> Result<impl futures_util::Stream<Item = Result<LogChunk, LogError>> + use<>, LogError>
    {
        let messages = ordered_from(&self.js, &self.stream, from).await?;
        let prefix = format!("{}.", self.stream);
        Ok(messages.map(move |m| {
            let m = m.map_err(|e| LogError::Failed(format!("following job output: {e}")))?;
            let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
            let job = m
                .subject
                .as_str()
                .strip_prefix(&prefix)
                .and_then(|j| uuid::Uuid::parse_str(j).ok());
            let offset = m
                .headers
                .as_ref()
                .and_then(|h| h.get(OFFSET))
                .and_then(|v| v.as_str().parse::<u64>().ok());
            match (job, offset) {
                (Some(job), Some(offset)) => Ok(LogChunk {
                    seq,
                    job,
                    offset,
                    bytes: m.payload.to_vec(),
                }),
                _ => Err(LogError::Corrupt {
                    seq,
                    why: format!("output message on {} has no job or offset", m.subject),
                }),
            }
        }))
    }
}

/// Opens a stream, creating it with `config` on first use. Right after the cluster starts it
/// may still be electing its meta leader, so this tries again for a while.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), LogError> {
    let mut tries = 0;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!(error = %e, stream = %config.name, "the stream is not ready yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(LogError::Failed(format!(
                    "NATS cluster: cannot open stream {}: {e}",
                    config.name
                )));
            }
        }
    }
}

/// Every message of `stream` from its sequence `from` on, in order, as they arrive (an
/// ordered consumer, which the client re-creates across reconnects and leader changes).
async fn ordered_from(
    js: &jetstream::Context,
    stream: &str,
    from: u64,
) -> Result<jetstream::consumer::pull::Ordered, LogError> {
    let failed = |e: String| LogError::Failed(format!("stream {stream}: {e}"));
    let consumer = js
        .get_stream(stream)
        .await
        .map_err(|e| failed(e.to_string()))?
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| failed(e.to_string()))?;
    consumer.messages().await.map_err(|e| failed(e.to_string()))
}
