//! The runner: claims jobs over the runner protocol and runs each one's `run` with `sh -c` in a
//! fresh work directory and its own process group, streaming output, heartbeating, and
//! stopping the whole group on abort or timeout. `reeve runner` runs one against any server;
//! `reeve serve` embeds some, which speak the same protocol over loopback.

mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use uuid::Uuid;

/// How long a runner keeps sending a report the server cannot take yet (see `Client::retrying`).
const RETRY_FOR: Duration = Duration::from_secs(30);

pub use process::Outcome;

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// `http://host:port`, without a trailing slash.
    pub server: String,
    pub token: String,
    pub concurrency: usize,
    pub labels: Vec<String>,
    pub work_dir: PathBuf,
    /// How long a job gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("could not reach {server}: {source}")]
    Http {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the server refused: {status} {body}")]
    Refused { status: u16, body: String },
}

#[derive(Debug, Deserialize)]
pub struct ClaimedJob {
    pub job: JobSpec,
    pub build: BuildSpec,
    pub lease_id: Uuid,
    /// RFC 3339; heartbeats come often enough to renew it well before then.
    pub lease_expires_at: String,
}

#[derive(Debug, Deserialize)]
pub struct JobSpec {
    pub id: Uuid,
    pub name: String,
    pub run: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct BuildSpec {
    pub id: Uuid,
    pub project: String,
    pub number: u64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct HeartbeatAnswer {
    abort: bool,
}

/// A client of one server's runner protocol.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
}

/// What the server said to a heartbeat.
pub enum Beat {
    Continue,
    Abort,
    /// The lease is gone (expired, or the job ended): stop without reporting.
    Lost,
}

impl Client {
    pub fn new(server: &str, token: &str) -> Result<Client, RunnerError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| RunnerError::Http {
                server: server.to_string(),
                source,
            })?;
        Ok(Client {
            http,
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/runner{path}", self.server)
    }

    async fn post(
        &self,
        path: &str,
        body: String,
        timeout: Duration,
    ) -> Result<reqwest::Response, RunnerError> {
        let body = axum::body::Bytes::from(body);
        self.retrying(|| {
            self.http
                .post(self.url(path))
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .timeout(timeout)
                .body(body.clone())
        })
        .await
    }

    /// Sends a request, again while the server answers 503 (a cluster between leaders, a
    /// server starting) or cannot be reached, for up to [`RETRY_FOR`]: a runner's report must
    /// not be lost to a failover. A 503 records nothing, so sending again is safe.
    async fn retrying(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RunnerError> {
        let start = std::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = request().send().await;
            let again = match &sent {
                Ok(r) => r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE,
                Err(e) => e.is_connect() || e.is_timeout(),
            };
            if !again || start.elapsed() >= RETRY_FOR {
                return sent.map_err(|source| RunnerError::Http {
                    server: self.server.clone(),
                    source,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn refused(resp: reqwest::Response) -> RunnerError {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        RunnerError::Refused { status, body }
    }

    /// A job to run, or `None` when nothing came within `wait`.
    pub async fn claim(
        &self,
        labels: &[String],
        wait: Duration,
    ) -> Result<Option<ClaimedJob>, RunnerError> {
        let body = serde_json::json!({"labels": labels, "wait_seconds": wait.as_secs()});
        let resp = self
            .post("/claim", body.to_string(), wait + Duration::from_secs(10))
            .await?;
        match resp.status().as_u16() {
            204 => Ok(None),
            200 => resp
                .json::<ClaimedJob>()
                .await
                .map(Some)
                .map_err(|source| RunnerError::Http {
                    server: self.server.clone(),
                    source,
                }),
            _ => Err(Self::refused(resp).await),
        }
    }

    pub async fn heartbeat(&self, job: Uuid, lease: Uuid) -> Result<Beat, RunnerError> {
        let body = serde_json::json!({"lease_id": lease});
        let resp = self
            .post(
                &format!("/jobs/{job}/heartbeat"),
                body.to_string(),
                Duration::from_secs(10),
            )
            .await?;
        match resp.status().as_u16() {
            200 => {
                let answer: HeartbeatAnswer =
                    resp.json().await.map_err(|source| RunnerError::Http {
                        server: self.server.clone(),
                        source,
                    })?;
                Ok(if answer.abort {
                    Beat::Abort
                } else {
                    Beat::Continue
                })
            }
            404 | 409 => Ok(Beat::Lost),
            _ => Err(Self::refused(resp).await),
        }
    }

    /// Posts raw bytes (output, or a generator's pipeline) under the job's lease.
    async fn post_bytes(
        &self,
        job: Uuid,
        lease: Uuid,
        what: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), RunnerError> {
        let bytes = axum::body::Bytes::from(bytes);
        let url = self.url(&format!("/jobs/{job}/{what}?lease_id={lease}"));
        let resp = self
            .retrying(|| {
                self.http
                    .post(&url)
                    .bearer_auth(&self.token)
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .timeout(Duration::from_secs(30))
                    .body(bytes.clone())
            })
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Self::refused(resp).await)
        }
    }

    pub async fn append_log(
        &self,
        job: Uuid,
        lease: Uuid,
        bytes: Vec<u8>,
    ) -> Result<(), RunnerError> {
        self.post_bytes(job, lease, "log", "application/octet-stream", bytes)
            .await
    }

    /// Hands a generator's output to the server, which expands it (or fails Create Jobs).
    pub async fn upload_pipeline(
        &self,
        job: Uuid,
        lease: Uuid,
        output: Vec<u8>,
    ) -> Result<(), RunnerError> {
        self.post_bytes(job, lease, "pipeline", "application/json", output)
            .await
    }

    pub async fn finish(
        &self,
        job: Uuid,
        lease: Uuid,
        outcome: &Outcome,
    ) -> Result<(), RunnerError> {
        // The server refuses a longer message, which would leave the job to its lease.
        let message = outcome.message.clone().map(|mut m| {
            crate::domain::bounds::clip(&mut m, crate::domain::bounds::JOB_MESSAGE);
            m
        });
        let body = serde_json::json!({
            "lease_id": lease,
            "state": outcome.state,
            "exit_code": outcome.exit_code,
            "message": message,
        });
        let resp = self
            .post(
                &format!("/jobs/{job}/finish"),
                body.to_string(),
                Duration::from_secs(10),
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Self::refused(resp).await)
        }
    }
}

/// Runs `concurrency` workers until `stop` turns true. On stop, running jobs' process groups
/// are killed and left to their leases.
pub async fn run(cfg: RunnerConfig, stop: watch::Receiver<bool>) -> Result<(), RunnerError> {
    let client = Client::new(&cfg.server, &cfg.token)?;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.concurrency.max(1) {
        workers.spawn(worker(client.clone(), cfg.clone(), stop.clone()));
    }
    while workers.join_next().await.is_some() {}
    Ok(())
}

async fn worker(client: Client, cfg: RunnerConfig, mut stop: watch::Receiver<bool>) {
    const WAIT: Duration = Duration::from_secs(20);
    let mut backoff = Duration::from_millis(200);
    loop {
        if *stop.borrow() {
            return;
        }
        let claimed = tokio::select! {
            _ = stopped(&mut stop) => return,
            c = client.claim(&cfg.labels, WAIT) => c,
        };
        match claimed {
            Ok(Some(job)) => {
                backoff = Duration::from_millis(200);
                process::execute(&client, &cfg, job, stop.clone()).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "claim failed");
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone), holding no borrow across awaits.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
