//! Running one claimed job as a process group.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::{Beat, ClaimedJob, Client, RunnerConfig, stopped};

/// How a job ended, as the runner reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// finished, failure, error or killed
    pub state: &'static str,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

impl Outcome {
    fn of(status: ExitStatus) -> Outcome {
        match (status.code(), status.signal()) {
            (Some(0), _) => Outcome {
                state: "finished",
                exit_code: Some(0),
                message: None,
            },
            (Some(code), _) => Outcome {
                state: "failure",
                exit_code: Some(code),
                message: Some(format!("exited with {code}")),
            },
            (None, Some(signal)) => Outcome {
                state: "failure",
                exit_code: None,
                message: Some(format!("killed by signal {signal}")),
            },
            (None, None) => Outcome {
                state: "failure",
                exit_code: None,
                message: Some("ended without an exit code".into()),
            },
        }
    }

    fn error(message: String) -> Outcome {
        Outcome {
            state: "error",
            exit_code: None,
            message: Some(message),
        }
    }
}

/// Sends `signal` to the job's whole process group (the job's shell is its leader).
fn signal_group(pgid: u32, signal: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: killpg only sends a signal; a group that is already gone yields ESRCH.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

/// SIGTERM to the group, then SIGKILL once the grace period is over.
async fn stop_group(child: &mut Child, pgid: u32, grace: Duration) -> Option<ExitStatus> {
    signal_group(pgid, libc::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => None,
    };
    // Whatever the leader did, nothing of the job may outlive it.
    signal_group(pgid, libc::SIGKILL);
    match status {
        Some(s) => Some(s),
        None => child.wait().await.ok(),
    }
}

/// The most of a generator's stdout kept to upload as its pipeline.
const MAX_GENERATED: usize = 8 * 1024 * 1024;

/// Forwards a pipe to the uploader in chunks as they are written, keeping a copy in
/// `capture` when asked (a generator's stdout is its pipeline).
async fn pump(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    out: mpsc::Sender<Vec<u8>>,
    capture: Option<Arc<Mutex<Vec<u8>>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(c) = &capture {
                    let mut c = c.lock();
                    let room = MAX_GENERATED.saturating_sub(c.len());
                    c.extend_from_slice(&buf[..n.min(room)]);
                }
                if out.send(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Batches output and sends it to the server at most every 200 ms (or per 256 KiB).
async fn upload(client: Client, job: Uuid, lease: Uuid, mut chunks: mpsc::Receiver<Vec<u8>>) {
    const EVERY: Duration = Duration::from_millis(200);
    const MAX: usize = 256 * 1024;
    let mut pending = Vec::new();
    let mut open = true;
    while open {
        let deadline = tokio::time::sleep(EVERY);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                chunk = chunks.recv() => match chunk {
                    Some(c) => {
                        pending.extend_from_slice(&c);
                        if pending.len() >= MAX { break; }
                    }
                    None => { open = false; break; }
                },
                _ = &mut deadline => break,
            }
        }
        if !pending.is_empty() {
            let bytes = std::mem::take(&mut pending);
            if let Err(e) = client.append_log(job, lease, bytes).await {
                tracing::warn!(%job, error = %e, "could not upload output");
            }
        }
    }
}

/// Runs one claimed job to its end and reports it.
pub async fn execute(
    client: &Client,
    cfg: &RunnerConfig,
    claimed: ClaimedJob,
    mut stop: watch::Receiver<bool>,
) {
    let ClaimedJob {
        job,
        build,
        lease_id,
        lease_expires_at,
    } = claimed;
    // A third of the lease, so two heartbeats may fail before it runs out.
    let lease_left = lease_expires_at
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| {
            let left = t.as_millisecond() - jiff::Timestamp::now().as_millisecond();
            u64::try_from(left).ok()
        })
        .unwrap_or(30_000);
    let beat_every = Duration::from_millis((lease_left / 3).clamp(200, 10_000));
    let dir = cfg.work_dir.join(job.id.to_string());
    let report = |outcome: Outcome| async move {
        for attempt in 0..5u32 {
            match client.finish(job.id, lease_id, &outcome).await {
                Ok(()) => return,
                Err(super::RunnerError::Refused { status, body }) => {
                    tracing::warn!(job = %job.id, status, body, "the server refused the result");
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, attempt, "could not report the result");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        report(Outcome::error(format!(
            "could not create the work dir {}: {e}",
            dir.display()
        )))
        .await;
        return;
    }
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&job.run)
        .current_dir(&dir)
        .envs(&build.env)
        .envs(&job.env)
        .env("REEVE_PROJECT", &build.project)
        .env("REEVE_BUILD_ID", build.id.to_string())
        .env("REEVE_BUILD_NUMBER", build.number.to_string())
        .env("REEVE_JOB_ID", job.id.to_string())
        .env("REEVE_JOB_NAME", &job.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            report(Outcome::error(format!("could not start `sh -c`: {e}"))).await;
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    };
    let pgid = child.id().unwrap_or(0);
    let generator = (job.name == crate::domain::pipeline::CREATE_JOBS)
        .then(|| Arc::new(Mutex::new(Vec::new())));
    let (tx, rx) = mpsc::channel(64);
    let stdout_pump = child
        .stdout
        .take()
        .map(|out| tokio::spawn(pump(out, tx.clone(), generator.clone())));
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, tx.clone(), None));
    }
    drop(tx);
    let uploader = tokio::spawn(upload(client.clone(), job.id, lease_id, rx));

    let timeout = job.timeout_seconds.map(Duration::from_secs);
    let started = tokio::time::Instant::now();
    let mut beats = tokio::time::interval_at(started + beat_every, beat_every);
    let outcome = loop {
        let time_left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        tokio::select! {
            status = child.wait() => {
                signal_group(pgid, libc::SIGKILL);
                break Some(match status {
                    Ok(s) => Outcome::of(s),
                    Err(e) => Outcome::error(format!("lost track of the process: {e}")),
                });
            }
            _ = tokio::time::sleep(time_left.unwrap_or(Duration::MAX)), if time_left.is_some() => {
                stop_group(&mut child, pgid, cfg.kill_grace).await;
                break Some(Outcome {
                    state: "failure",
                    exit_code: None,
                    message: Some(format!("timed out after {} s", timeout.map_or(0, |t| t.as_secs()))),
                });
            }
            _ = beats.tick() => match client.heartbeat(job.id, lease_id).await {
                Ok(Beat::Continue) => {}
                Ok(Beat::Abort) => {
                    stop_group(&mut child, pgid, cfg.kill_grace).await;
                    break Some(Outcome { state: "killed", exit_code: None, message: Some("aborted".into()) });
                }
                Ok(Beat::Lost) => {
                    stop_group(&mut child, pgid, Duration::ZERO).await;
                    break None;
                }
                Err(e) => tracing::warn!(job = %job.id, error = %e, "heartbeat failed; the lease may run out"),
            },
            _ = stopped(&mut stop) => {
                // Shutting down: the job is left to its lease.
                stop_group(&mut child, pgid, Duration::ZERO).await;
                break None;
            }
        }
    };
    // Output written before the end goes up before the result; a grandchild that keeps a
    // pipe open past the group kill cannot hold the report back for long.
    let _ = tokio::time::timeout(Duration::from_secs(5), uploader).await;
    match (outcome, generator) {
        // A generator that succeeded hands over what it printed; the server ends Create Jobs.
        (Some(outcome), Some(printed)) if outcome.state == "finished" => {
            if let Some(p) = stdout_pump {
                let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
            }
            let output = std::mem::take(&mut *printed.lock());
            if let Err(e) = client.upload_pipeline(job.id, lease_id, output).await {
                tracing::warn!(job = %job.id, error = %e, "could not upload the generated pipeline");
                report(Outcome::error(format!(
                    "could not upload the generated pipeline: {e}"
                )))
                .await;
            }
        }
        (Some(outcome), _) => report(outcome).await,
        (None, _) => {}
    }
    let _ = std::fs::remove_dir_all(&dir);
}
