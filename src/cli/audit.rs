//! `reeve audit verify|replay|log|export`: proves what happened from the log alone.
//!
//! Every verb reads the raw commit records, either straight from a data dir (`--data-dir`,
//! offline: the server must be stopped) or from a server's `GET /api/v1/audit/export`
//! (`--server`), and runs them through the same code the server does: `Commit::decode` (the
//! record's own hash), `Verifier` (gapless seqs, the chain) and `State::apply` (the fold).
//!
//! Offline, the data dir is opened with `Store::open_copy`, which takes its lock (a dir a
//! running server holds is refused), runs the server's own checks of the WAL against the
//! store, and touches nothing in the dir: the store's file (`store.redb`) is opened as a
//! temporary copy, and a data dir still in sled is moved into that copy only.
//!
//! The HTTP code is kept in this file (`Remote`) on purpose, small, so it can later move into
//! the client commands' shared connection module.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::api::audit::{AuditView, StateDigest, stream_export};
use crate::api::builds::{BuildView, JobView};
use crate::api::projects::ProjectView;
use crate::api::rfc3339;
use crate::api::tokens::TokenView;
use crate::api::watches::WatchView;
use crate::domain::{ColdBuild, ColdOp, DIGEST_ALGORITHM, Millis, Plane, State};
use crate::log::{Commit, LogError, Store, Verifier};

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Check that every commit decodes, that seqs are gapless from 1 and that the hash chain
    /// holds; print the count, the head seq and the head hash.
    Verify(VerifyArgs),
    /// Rebuild the projections as they were at a seq or a time, with the server's own fold,
    /// and print them (or their digest).
    Replay(ReplayArgs),
    /// The audit trail for people: one line per commit (time, who, plane, what, target,
    /// outcome).
    Log(LogArgs),
    /// Every commit as a line of JSON, the same lines as GET /api/v1/audit/export.
    Export(ExportArgs),
}

/// Where the log comes from: a data dir, or a running server.
///
/// `REEVE_SERVER` is read by hand, not by clap: clap would count it as given and refuse it
/// next to an explicit `--data-dir`.
#[derive(Args, Debug)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("source").multiple(false)))]
struct SourceArgs {
    /// Read this data dir directly (offline). The server using it must be stopped; while it
    /// runs, use --server.
    #[arg(long, value_name = "DIR", group = "source")]
    data_dir: Option<PathBuf>,
    /// Read the log through this server (admin token required), e.g. http://127.0.0.1:8080
    /// [env: REEVE_SERVER].
    #[arg(long, value_name = "URL", group = "source")]
    server: Option<String>,
    /// Read the log straight from a reeve cluster's stream on these NATS servers
    /// (comma-separated nats://host:port), whatever its nodes are doing.
    #[arg(long, value_name = "URLS", group = "source", value_delimiter = ',')]
    cluster: Vec<String>,
    /// An admin token for --server [default for a server on this machine: the admin token
    /// file, $REEVE_DATA_DIR/admin.token or ./reeve-data/admin.token].
    #[arg(long, env = "REEVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Also require that the log holds this commit with this hash (as printed by an earlier
    /// verify, or by GET /api/v1/state/digest): proves that nothing was cut from the end or
    /// rewritten since. Exit 1 otherwise.
    #[arg(long, value_name = "SEQ:HASH", value_parser = parse_anchor)]
    expect_head: Option<Anchor>,
}

/// A commit an operator kept from an earlier look at the log.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    seq: u64,
    hash: [u8; 32],
}

fn parse_anchor(s: &str) -> Result<Anchor, String> {
    let usage = || {
        format!(
            "{s:?} is not SEQ:HASH; give the head seq and the 64-hex-digit head hash an earlier `reeve audit verify` printed, e.g. 1234:9f86d08...c"
        )
    };
    let (seq, hash) = s.split_once(':').ok_or_else(usage)?;
    let seq: u64 = seq.trim().parse().map_err(|_| usage())?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hash.trim(), &mut out).map_err(|_| usage())?;
    if seq == 0 {
        return Err(format!(
            "{s:?}: seq 0 is no commit; the first commit is seq 1"
        ));
    }
    Ok(Anchor { seq, hash: out })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Show {
    Projects,
    Watches,
    Builds,
    Jobs,
    Tokens,
    All,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Stop after this commit.
    #[arg(long, value_name = "N", conflicts_with = "until")]
    until_seq: Option<u64>,
    /// Stop after the last commit at or before this time (RFC 3339, e.g. 2026-11-22T10:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<Millis>,
    /// Which projections to print (repeatable, or comma-separated). Default: all, or none
    /// with --digest.
    #[arg(long, value_enum, value_delimiter = ',')]
    show: Vec<Show>,
    /// Print the seq, head hash and digest of the replayed state. Against --server without
    /// --until*, also compare it with the server's live digest at the same seq.
    #[arg(long)]
    digest: bool,
    /// JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OutcomeFilter {
    Accepted,
    Rejected,
}

#[derive(Args, Debug)]
struct LogArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Only commits in this project.
    #[arg(long)]
    project: Option<String>,
    /// Only commits by this principal: `token:<id>`, a bare token id, or `system`.
    #[arg(long)]
    principal: Option<String>,
    /// Only commits through this plane.
    #[arg(long, value_parser = parse_plane)]
    plane: Option<Plane>,
    /// Only accepted or only rejected commits.
    #[arg(long, value_enum)]
    outcome: Option<OutcomeFilter>,
    /// Only commits at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<Millis>,
    /// Only commits at or before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<Millis>,
    /// Stop after this many matching commits (oldest first).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// One JSON object per line, shaped like the entries of GET /api/v1/audit.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One JSON object per line.
    Jsonl,
}

#[derive(Args, Debug)]
struct ExportArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The output format; jsonl is the only one.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
}

fn parse_time(s: &str) -> Result<Millis, String> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("not an RFC 3339 time such as 2026-11-22T10:00:00Z: {e}"))
}

fn parse_plane(s: &str) -> Result<Plane, String> {
    Plane::parse(s)
        .ok_or_else(|| "use rest, cli, web, mcp, scheduler, runner or system".to_string())
}

/// Why a verb stopped: a message and the exit code (1 failure, 2 usage).
#[derive(Debug)]
struct Fail {
    code: u8,
    msg: String,
}

impl Fail {
    fn failed(msg: impl Into<String>) -> Fail {
        Fail {
            code: 1,
            msg: msg.into(),
        }
    }

    fn usage(msg: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            msg: msg.into(),
        }
    }

    fn broken(seq: u64, why: impl std::fmt::Display) -> Fail {
        Fail::failed(format!("broken log at seq {seq}: {why}"))
    }
}

pub fn run(args: AuditArgs) -> ExitCode {
    let result = match args.verb {
        Verb::Verify(a) => verify(a),
        Verb::Replay(a) => replay(a),
        Verb::Log(a) => log(a),
        Verb::Export(a) => export(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("reeve: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}

// ---- verbs ----

fn verify(args: VerifyArgs) -> Result<(), Fail> {
    let src = Source::open(&args.source)?;
    let mut progress = Progress::new("verifying", src.total());
    let mut check = Checker::default();
    let mut anchored = None;
    src.each(None, &mut |seq, record| {
        let commit = check.next(seq, record)?;
        if args.expect_head.is_some_and(|a| a.seq == seq) {
            anchored = Some(commit.hash);
        }
        progress.tick(check.verifier.head_seq);
        Ok(true)
    })?;
    progress.finish();
    let v = &check.verifier;
    if let Some(a) = args.expect_head {
        match anchored {
            None => {
                return Err(Fail::failed(format!(
                    "the log does not hold commit {}: it ends at seq {} (hash {}). Commits were cut from its end, or the anchor belongs to another log",
                    a.seq,
                    v.head_seq,
                    hex::encode(v.head_hash)
                )));
            }
            Some(h) if h != a.hash => {
                return Err(Fail::failed(format!(
                    "commit {} has hash {}, not the anchor's {}: the log was rewritten from there on (or the anchor belongs to another log)",
                    a.seq,
                    hex::encode(h),
                    hex::encode(a.hash)
                )));
            }
            Some(_) => {}
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = if v.head_seq == 0 {
        writeln!(out, "ok: 0 commits (the log is empty)")
    } else {
        writeln!(
            out,
            "ok: {} commits, seq 1..{} gapless, every record decodes, hash chain intact",
            v.head_seq, v.head_seq
        )
    };
    let _ = writeln!(out, "head seq   {}", v.head_seq);
    let _ = writeln!(out, "head hash  {}", hex::encode(v.head_hash));
    if let Some(a) = args.expect_head {
        let _ = writeln!(out, "anchor     commit {} holds the expected hash", a.seq);
    }
    Ok(())
}

fn replay(args: ReplayArgs) -> Result<(), Fail> {
    let src = Source::open(&args.source)?;
    // Against a server, take its live digest first and replay exactly up to its seq, so the
    // two can be compared whatever the server commits meanwhile.
    let live = match (&src, args.digest, args.until_seq, args.until) {
        (Source::Server(remote), true, None, None) => Some(remote.digest()?),
        _ => None,
    };
    let until_seq = args.until_seq.or(live.as_ref().map(|l| l.seq));
    let total = match (src.total(), until_seq) {
        (Some(t), Some(u)) => Some(t.min(u)),
        (t, u) => t.or(u),
    };
    let mut progress = Progress::new("replaying", total);
    let mut check = Checker::default();
    let mut state = State::default();
    let mut head_at = None;
    // The builds the fold sends out of memory, kept here so that the replay shows all of
    // history and can check that every build a commit brings back is the one that left.
    let mut cold: std::collections::BTreeMap<uuid::Uuid, ColdBuild> = Default::default();
    let mut ops = Vec::new();
    src.each(until_seq, &mut |seq, record| {
        if until_seq.is_some_and(|u| seq > u) {
            return Ok(false);
        }
        let commit = check.next(seq, record)?;
        if args.until.is_some_and(|t| commit.body.at > t) {
            return Ok(false);
        }
        head_at = Some(commit.body.at);
        state.apply_with(&commit, &mut ops);
        for op in ops.drain(..) {
            track_cold(&mut cold, &commit, op)?;
        }
        progress.tick(seq);
        Ok(true)
    })?;
    let mut all_builds: Vec<ColdBuild> = state
        .builds
        .values()
        .map(|b| state.hot_build(b))
        .chain(cold.into_values())
        .collect();
    all_builds.sort_by_key(|b| b.build.id);
    progress.finish();
    if let Some(u) = until_seq
        && state.head_seq < u
    {
        return Err(Fail::failed(format!(
            "the log ends at seq {}, before --until-seq {u}",
            state.head_seq
        )));
    }
    let shows: Vec<Show> = if args.show.is_empty() {
        if args.digest { vec![] } else { vec![Show::All] }
    } else {
        args.show.clone()
    };
    let wants = |s: Show| shows.contains(&s) || shows.contains(&Show::All);
    let digest = args.digest.then(|| StateDigest::of(&state));
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = ReplayDoc {
            seq: state.head_seq,
            head_hash: hex::encode(state.head_hash),
            at: head_at.map(rfc3339),
            digest: digest.as_ref().map(|d| d.digest.clone()),
            algorithm: digest.as_ref().map(|_| DIGEST_ALGORITHM),
            live_digest: live.as_ref().map(|l| l.digest.clone()),
            projects: wants(Show::Projects)
                .then(|| state.projects.values().map(ProjectView::from).collect()),
            watches: wants(Show::Watches).then(|| {
                state
                    .watches
                    .values()
                    .map(Arc::as_ref)
                    .map(WatchView::from)
                    .collect()
            }),
            builds: wants(Show::Builds).then(|| {
                all_builds
                    .iter()
                    .map(|b| BuildView::new(b.state(), &b.build, None))
                    .collect()
            }),
            jobs: wants(Show::Jobs).then(|| {
                all_builds
                    .iter()
                    .flat_map(|b| &b.jobs)
                    .map(JobView::from)
                    .collect()
            }),
            tokens: wants(Show::Tokens)
                .then(|| state.tokens.values().map(TokenView::from).collect()),
        };
        let _ = serde_json::to_writer_pretty(&mut out, &doc);
        let _ = writeln!(out);
    } else {
        if !shows.is_empty() {
            let at = head_at.map_or_else(|| "-".to_string(), rfc3339);
            let _ = writeln!(out, "state at seq {} ({at})", state.head_seq);
        }
        let now = head_at.unwrap_or(0);
        for (show, title, table) in [
            (
                Show::Projects,
                "projects",
                projects_table as fn(&State, &[ColdBuild], Millis) -> Table,
            ),
            (Show::Watches, "watches", watches_table),
            (Show::Builds, "builds", builds_table),
            (Show::Jobs, "jobs", jobs_table),
            (Show::Tokens, "tokens", tokens_table),
        ] {
            if wants(show) {
                let _ = writeln!(out, "\n{title}:");
                let _ = out.write_all(table(&state, &all_builds, now).render(title).as_bytes());
            }
        }
        if let Some(d) = &digest {
            if !shows.is_empty() {
                let _ = writeln!(out);
            }
            let _ = writeln!(out, "seq        {}", d.seq);
            let _ = writeln!(out, "head_hash  {}", d.head_hash);
            let _ = writeln!(out, "digest     {}", d.digest);
            let _ = writeln!(out, "algorithm  {}", d.algorithm);
            if let Some(l) = &live {
                let verdict = if l.digest == d.digest {
                    "matches"
                } else {
                    "DIFFERS"
                };
                let _ = writeln!(out, "live       {} ({verdict})", l.digest);
            }
        }
    }
    let _ = out.flush();
    if let (Some(l), Some(d)) = (&live, &digest)
        && (l.digest != d.digest || l.head_hash != d.head_hash)
    {
        return Err(Fail::failed(format!(
            "the server's live state at seq {} (digest {}) differs from the replay of its own log (digest {}); the server's state did not come from this log",
            l.seq, l.digest, d.digest
        )));
    }
    Ok(())
}

#[derive(Serialize)]
struct ReplayDoc {
    seq: u64,
    head_hash: String,
    /// The time of the last commit replayed.
    at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    algorithm: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    live_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    projects: Option<Vec<ProjectView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    watches: Option<Vec<WatchView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    builds: Option<Vec<BuildView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs: Option<Vec<JobView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<Vec<TokenView>>,
}

fn log(args: LogArgs) -> Result<(), Fail> {
    let src = Source::open(&args.source)?;
    if args.limit == Some(0) {
        return Err(Fail::usage("--limit must be at least 1"));
    }
    let principal = args.principal.as_deref().map(|p| {
        if p == "system" || p.starts_with("token:") {
            p.to_string()
        } else {
            format!("token:{p}")
        }
    });
    let accepted = args.outcome.map(|o| o == OutcomeFilter::Accepted);
    let mut progress = Progress::new("reading", src.total());
    let mut check = Checker::default();
    let mut state = State::default();
    let mut shown = 0usize;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut closed = false;
    if !args.json {
        let _ = writeln!(
            out,
            "{:>6}  {:<24}  {:<42}  {:<9}  {:<20}  {:<44}  OUTCOME",
            "SEQ", "TIME", "PRINCIPAL", "PLANE", "WHAT", "TARGET"
        );
    }
    src.each(None, &mut |seq, record| {
        let commit = check.next(seq, record)?;
        if args.until.is_some_and(|t| commit.body.at > t) {
            return Ok(false);
        }
        let entry = state.apply(&commit);
        progress.tick(seq);
        let e = &entry;
        let keep = args.since.is_none_or(|t| e.at >= t)
            && args
                .project
                .as_ref()
                .is_none_or(|p| e.project.as_ref() == Some(p))
            && args.plane.is_none_or(|p| p == e.plane)
            && accepted.is_none_or(|a| a == e.accepted)
            && principal
                .as_ref()
                .is_none_or(|p| *p == e.principal.to_string());
        if !keep {
            return Ok(true);
        }
        let written = if args.json {
            serde_json::to_writer(&mut out, &AuditView::of(e, &commit))
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        } else {
            let outcome = match &commit.body.outcome {
                crate::log::Outcome::Accepted => "accepted".to_string(),
                crate::log::Outcome::Rejected { status, code, .. } => {
                    format!("rejected {status} {code}")
                }
            };
            writeln!(
                out,
                "{:>6}  {:<24}  {:<42}  {:<9}  {:<20}  {:<44}  {outcome}",
                e.seq,
                rfc3339(e.at),
                e.principal.to_string(),
                e.plane.as_str(),
                e.op,
                e.target.as_deref().unwrap_or("-"),
            )
        };
        if written.is_err() {
            closed = true;
            return Ok(false);
        }
        shown += 1;
        Ok(args.limit.is_none_or(|l| shown < l))
    })?;
    progress.finish();
    if !closed {
        let _ = out.flush();
    }
    Ok(())
}

fn export(args: ExportArgs) -> Result<(), Fail> {
    let Format::Jsonl = args.format;
    let src = Source::open(&args.source)?;
    let mut out = std::io::stdout().lock();
    match &src {
        Source::Dir(store) => {
            let head = store.last_seq().map_err(|e| Fail::failed(e.to_string()))?;
            stream_export(store, 0, head, |chunk| out.write_all(&chunk).is_ok())
                .map_err(|e| Fail::failed(format!("the export stopped early: {e}")))?;
        }
        Source::Server(remote) => remote.export_raw(&mut out)?,
        Source::Cluster(records) => {
            let mut buf = Vec::new();
            for (_, record) in records {
                let commit = Commit::decode(record).map_err(|e| Fail::failed(e.to_string()))?;
                crate::api::audit::write_export_line(&mut buf, &commit, record);
                if out.write_all(&buf).is_err() {
                    return Err(Fail::failed("the export could not be written"));
                }
                buf.clear();
            }
        }
    }
    let _ = out.flush();
    Ok(())
}

// ---- checking ----

/// Decodes each record and checks it against the ones before: the seq it is stored under, its
/// own hash (`Commit::decode`), and the chain (`Verifier`). Every record goes through
/// `Commit::decode` on its raw bytes; nothing is skipped.
#[derive(Default)]
struct Checker {
    verifier: Verifier,
}

impl Checker {
    fn next(&mut self, seq: u64, record: &[u8]) -> Result<Commit, Fail> {
        let expected = self.verifier.head_seq + 1;
        if seq != expected {
            return Err(Fail::broken(
                expected,
                format!("gap: expected seq {expected}, found {seq}"),
            ));
        }
        let commit = Commit::decode(record).map_err(|e| match e {
            LogError::Corrupt { why, .. } if why.contains("hash does not match") => {
                Fail::broken(seq, format!("hash mismatch: the record's {why}"))
            }
            LogError::Corrupt { why, .. } => Fail::broken(seq, format!("decode error: {why}")),
            other => Fail::broken(seq, other),
        })?;
        if commit.seq != seq {
            return Err(Fail::broken(
                seq,
                format!(
                    "the record stored under seq {seq} says it is seq {}",
                    commit.seq
                ),
            ));
        }
        self.verifier.check(&commit).map_err(|e| match e {
            LogError::Corrupt { why, .. } => Fail::broken(
                seq,
                format!(
                    "hash chain broken: {why} (commit {})",
                    seq.saturating_sub(1)
                ),
            ),
            other => Fail::broken(seq, other),
        })?;
        Ok(commit)
    }
}

// ---- sources ----

/// What a walk over the log calls for each record: `(seq, raw record)`, and whether to go on.
type Visit<'a> = dyn FnMut(u64, &[u8]) -> Result<bool, Fail> + 'a;

enum Source {
    Dir(Box<Store>),
    Server(Remote),
    /// A cluster's stream, read whole.
    Cluster(Vec<(u64, Vec<u8>)>),
}

impl Source {
    fn open(args: &SourceArgs) -> Result<Source, Fail> {
        let env_server = || {
            std::env::var("REEVE_SERVER")
                .ok()
                .filter(|s| !s.trim().is_empty())
        };
        if !args.cluster.is_empty() {
            return read_cluster(&args.cluster).map(Source::Cluster);
        }
        match (&args.data_dir, args.server.clone().or_else(env_server)) {
            (Some(dir), _) => open_dir(dir).map(|s| Source::Dir(Box::new(s))),
            (None, Some(url)) => {
                let (base, token) = super::client::conn::endpoint(&url, args.token.as_deref())
                    .map_err(|e| match e {
                        super::client::CliError::Usage(m) => Fail::usage(m),
                        other => Fail::failed(other.to_string()),
                    })?;
                Remote::new(base.as_str(), token).map(Source::Server)
            }
            (None, None) => Err(Fail::usage(
                "say where the log is: --data-dir DIR (offline, the server stopped), --server URL --token T (online; or set REEVE_SERVER and REEVE_TOKEN), or --cluster nats://HOST:PORT,... (a cluster's stream)",
            )),
        }
    }

    /// How many commits there are, when that is cheap to know (for the progress bar).
    fn total(&self) -> Option<u64> {
        match self {
            Source::Dir(store) => store.last_seq().ok(),
            Source::Server(_) => None,
            Source::Cluster(records) => Some(records.len() as u64),
        }
    }

    /// Calls `f(seq, record)` for each stored record from seq 1 (up to `until`, when given),
    /// in order, until `f` returns `Ok(false)`.
    fn each(&self, until: Option<u64>, f: &mut Visit<'_>) -> Result<(), Fail> {
        match self {
            Source::Dir(store) => {
                for item in store.raw_range(1, until.unwrap_or(u64::MAX)) {
                    let (seq, record) = item.map_err(|e| Fail::failed(e.to_string()))?;
                    if !f(seq, &record)? {
                        break;
                    }
                }
                Ok(())
            }
            Source::Server(remote) => remote.each(until, f),
            Source::Cluster(records) => {
                for (seq, record) in records {
                    if until.is_some_and(|u| *seq > u) || !f(*seq, record)? {
                        break;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Every record of a cluster's log, read from its stream. The chain is checked as it is
/// read, and again by the verb, like every other source.
fn read_cluster(servers: &[String]) -> Result<Vec<(u64, Vec<u8>)>, Fail> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail::failed(format!("could not start the async runtime: {e}")))?;
    runtime.block_on(async {
        let log = crate::log::jetstream::StreamLog::open(servers, crate::cluster::STREAM)
            .await
            .map_err(|e| Fail::failed(e.to_string()))?;
        let records = log
            .read_records(1, crate::log::GENESIS)
            .await
            .map_err(|e| Fail::failed(e.to_string()))?;
        Ok(records
            .into_iter()
            .map(|(c, record)| (c.seq, record))
            .collect())
    })
}

fn open_dir(dir: &std::path::Path) -> Result<Store, Fail> {
    let store_file = dir.join(crate::log::STORE_FILE);
    // `log/` is where an older reeve kept its history (in sled); the copy moves it.
    if !store_file.is_file() && !dir.join("log").is_dir() {
        return Err(Fail::failed(format!(
            "{} is not a reeve data dir (there is no {}); give --data-dir the directory `reeve serve --data-dir` used",
            dir.display(),
            store_file.display()
        )));
    }
    // A copy: opening the store may repair it (catch it up from the WAL), and an audit must
    // read the bytes as they are. The WAL is read in place and never written.
    let store = Store::open_copy(dir).map_err(|e| match e {
        LogError::Locked { dir } => Fail::failed(format!(
            "data dir {dir} is in use by a running reeve server (it holds {dir}/reeve.lock); read the log through that server instead: --server URL --token <admin token>"
        )),
        LogError::Damaged(d) => {
            let at = d.location.as_deref().map(|l| format!(" [{l}]")).unwrap_or_default();
            let reach = match (d.first_seq, d.affected) {
                (Some(seq), Some(n)) => format!("; {n} commit(s) from seq {seq} on are affected"),
                _ => String::new(),
            };
            match d.first_seq {
                Some(seq) => Fail::broken(seq, format!("{}{at}{reach}", d.why)),
                None => Fail::failed(format!("damaged log: {}{at}", d.why)),
            }
        }
        other => Fail::failed(format!("could not open {}: {other}", dir.display())),
    })?;
    for note in store.notes() {
        let kind = if note.is_warning() { "warning" } else { "note" };
        eprintln!("reeve: {kind}: {note}");
    }
    Ok(store)
}

/// A server's audit endpoints, read over HTTP.
struct Remote {
    base: String,
    token: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Remote {
    fn new(url: &str, token: String) -> Result<Remote, Fail> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Fail::usage(format!(
                "--server {url:?} is not a URL; give one like http://127.0.0.1:8080"
            )));
        }
        // Like `reeve runner`: straight to the server, whatever proxy the environment names.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Fail::failed(format!("could not set up an HTTP client: {e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Fail::failed(format!("could not start the async runtime: {e}")))?;
        Ok(Remote {
            base,
            token,
            client,
            rt,
        })
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, Fail> {
        let url = format!("{}/api/v1{path}", self.base);
        let resp = self
            .client
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| {
                Fail::failed(format!(
                    "could not reach the server at {}: {e}; is it running?",
                    self.base
                ))
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let problem: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Err(
            match (problem["detail"].as_str(), problem["code"].as_str()) {
                (Some(detail), Some(code)) => Fail::failed(format!("{detail} ({code})")),
                _ => Fail::failed(format!("the server answered {status} to GET {url}")),
            },
        )
    }

    fn digest(&self) -> Result<StateDigest, Fail> {
        self.rt.block_on(async {
            let resp = self.get("/state/digest").await?;
            resp.json::<StateDigest>()
                .await
                .map_err(|e| Fail::failed(format!("the server's digest could not be read: {e}")))
        })
    }

    fn export_path(until: Option<u64>) -> String {
        match until {
            Some(u) => format!("/audit/export?until_seq={u}"),
            None => "/audit/export".to_string(),
        }
    }

    /// Streams the export line by line (never the whole body at once) and hands each record
    /// to `f`. An `{"error": ...}` line from the server ends the walk as a failure.
    fn each(&self, until: Option<u64>, f: &mut Visit<'_>) -> Result<(), Fail> {
        self.rt.block_on(async {
            let mut resp = self.get(&Self::export_path(until)).await?;
            let mut pending: Vec<u8> = Vec::with_capacity(128 * 1024);
            let mut record: Vec<u8> = Vec::with_capacity(4096);
            loop {
                let chunk = resp.chunk().await.map_err(|e| {
                    Fail::failed(format!("the export from {} broke off: {e}", self.base))
                })?;
                let Some(chunk) = chunk else { break };
                pending.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
                    let line = &pending[start..start + nl];
                    start += nl + 1;
                    let seq = read_line(line, &mut record)?;
                    if !f(seq, &record)? {
                        return Ok(());
                    }
                }
                pending.drain(..start);
            }
            if pending.iter().any(|b| !b.is_ascii_whitespace()) {
                return Err(Fail::failed(
                    "the export ended in the middle of a line; the connection was cut, try again",
                ));
            }
            Ok(())
        })
    }

    /// Copies the export to `out` as it arrives.
    fn export_raw(&self, out: &mut dyn Write) -> Result<(), Fail> {
        self.rt.block_on(async {
            let mut resp = self.get(&Self::export_path(None)).await?;
            let mut tail: Vec<u8> = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| {
                Fail::failed(format!("the export from {} broke off: {e}", self.base))
            })? {
                if out.write_all(&chunk).is_err() {
                    // The reader went away (e.g. `| head`): nothing more to do.
                    return Ok(());
                }
                // Keep only the last line, to see whether the server ended with an error.
                tail.extend_from_slice(&chunk);
                let end = tail.len() - usize::from(tail.ends_with(b"\n"));
                if let Some(cut) = tail[..end].iter().rposition(|b| *b == b'\n') {
                    tail.drain(..=cut);
                }
            }
            if tail.starts_with(b"{\"error\"") {
                let line: serde_json::Value = serde_json::from_slice(&tail).unwrap_or_default();
                return Err(Fail::failed(format!(
                    "the export stopped early: {}",
                    line["error"]
                        .as_str()
                        .unwrap_or("the server reported an error")
                )));
            }
            Ok(())
        })
    }
}

/// Takes the seq and the raw record out of one export line without parsing the whole line:
/// `seq` leads it and `record` (hex) ends it. An error line becomes a failure.
fn read_line(line: &[u8], record: &mut Vec<u8>) -> Result<u64, Fail> {
    const SEQ: &[u8] = b"{\"seq\":";
    const RECORD: &[u8] = b",\"record\":\"";
    if line.starts_with(b"{\"error\"") {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
        return Err(Fail::failed(format!(
            "the server could not export its log: {}",
            v["error"].as_str().unwrap_or("(no reason given)")
        )));
    }
    let malformed = || {
        Fail::failed(
            "the server sent an export line that is not one this version of reeve reads (no seq or no record); are client and server the same version?",
        )
    };
    let digits = line
        .strip_prefix(SEQ)
        .ok_or_else(malformed)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or_else(malformed)?;
    let at = line
        .windows(RECORD.len())
        .rposition(|w| w == RECORD)
        .ok_or_else(malformed)?;
    let hex = line[at + RECORD.len()..]
        .strip_suffix(b"\"}")
        .ok_or_else(malformed)?;
    record.resize(hex.len() / 2, 0);
    hex::decode_to_slice(hex, record)
        .map_err(|e| Fail::broken(digits, format!("decode error: the record is not hex: {e}")))?;
    Ok(digits)
}

// ---- output ----

/// A progress line on stderr, only when stderr is a terminal; redrawn at most 10 times a
/// second, and checked for that only every few thousand records.
struct Progress {
    label: &'static str,
    total: Option<u64>,
    on: bool,
    last: Instant,
    drawn: bool,
}

impl Progress {
    fn new(label: &'static str, total: Option<u64>) -> Progress {
        Progress {
            label,
            total,
            on: std::io::stderr().is_terminal(),
            last: Instant::now(),
            drawn: false,
        }
    }

    fn tick(&mut self, n: u64) {
        if !self.on || !n.is_multiple_of(4096) || self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        self.drawn = true;
        let mut err = std::io::stderr().lock();
        let _ = match self.total {
            Some(t) if t > 0 => {
                let width = 30;
                let done = ((n.min(t) * width) / t) as usize;
                write!(
                    err,
                    "\r{} [{}{}] {n}/{t} commits ({}%)",
                    self.label,
                    "#".repeat(done),
                    "-".repeat(width as usize - done),
                    n.min(t) * 100 / t
                )
            }
            _ => write!(err, "\r{} {n} commits", self.label),
        };
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

/// An aligned text table.
struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, what: &str) -> String {
        if self.rows.is_empty() {
            return format!("  (no {what})\n");
        }
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut l = String::from(" ");
            for (cell, w) in cells.zip(&widths) {
                l.push(' ');
                l.push_str(cell);
                for _ in cell.chars().count()..*w {
                    l.push(' ');
                }
                l.push(' ');
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str));
        }
        out
    }
}

fn opt_time(t: Option<Millis>) -> String {
    t.map_or_else(|| "-".to_string(), rfc3339)
}

fn projects_table(state: &State, _: &[ColdBuild], _now: Millis) -> Table {
    let mut t = Table::new(&["ID", "NAME", "BUILDS", "DEFAULT PIPELINE", "CREATED"]);
    for p in state.projects.values() {
        t.row(vec![
            p.id.clone(),
            p.name.clone(),
            p.builds.to_string(),
            if p.default_pipeline.is_some() {
                "yes"
            } else {
                "no"
            }
            .to_string(),
            rfc3339(p.created_at),
        ]);
    }
    t
}

fn watches_table(state: &State, _: &[ColdBuild], _now: Millis) -> Table {
    let mut t = Table::new(&[
        "ID", "PROJECT", "TO_URI", "EVERY", "ACTIVE", "NEXT RUN", "LAST RUN", "FAILURES",
    ]);
    for w in state.watches.values().map(Arc::as_ref) {
        t.row(vec![
            w.id.to_string(),
            w.project.clone(),
            w.to_uri.clone(),
            format!("{} min", w.watch_interval),
            if w.is_active { "active" } else { "paused" }.to_string(),
            opt_time(w.next_run_at),
            w.last_run.as_ref().map_or_else(
                || "-".to_string(),
                |r| format!("{} {}", rfc3339(r.at), r.outcome.as_str()),
            ),
            w.consecutive_failures.to_string(),
        ]);
    }
    t
}

fn builds_table(_: &State, builds: &[ColdBuild], _now: Millis) -> Table {
    let mut t = Table::new(&[
        "ID", "PROJECT", "NUMBER", "STATE", "TRIGGER", "JOBS", "CREATED",
    ]);
    for cb in builds {
        let b = &cb.build;
        let live = cb.jobs.iter().filter(|j| j.superseded_by.is_none()).count();
        t.row(vec![
            b.id.to_string(),
            b.project.clone(),
            format!("{}.{}", b.number, b.restart_counter),
            format!(
                "{}{}",
                cb.state().as_str(),
                if b.aborted { " (aborted)" } else { "" }
            ),
            b.trigger.as_str().to_string(),
            live.to_string(),
            rfc3339(b.created_at),
        ]);
    }
    t
}

/// Jobs by build (in build order), then in creation order within each build.
fn jobs_table(_: &State, builds: &[ColdBuild], _now: Millis) -> Table {
    let mut t = Table::new(&["ID", "BUILD", "NAME", "STATE", "EXIT", "FINISHED", "NOTE"]);
    for cb in builds {
        let b = &cb.build;
        let build = format!("{}#{}.{}", b.project, b.number, b.restart_counter);
        for j in &cb.jobs {
            t.row(vec![
                j.id.to_string(),
                build.clone(),
                j.name.clone(),
                j.state.as_str().to_string(),
                j.exit_code
                    .map_or_else(|| "-".to_string(), |c| c.to_string()),
                opt_time(j.finished_at),
                j.superseded_by
                    .map_or_else(String::new, |s| format!("superseded by {s}")),
            ]);
        }
    }
    t
}

/// Follows the builds the fold sends out of memory and brings back: a commit that brings a
/// build back must carry it exactly as it left (with any output pruned since), or the log
/// is not the history it claims to be.
fn track_cold(
    cold: &mut std::collections::BTreeMap<uuid::Uuid, ColdBuild>,
    commit: &Commit,
    op: ColdOp,
) -> Result<(), Fail> {
    match op {
        ColdOp::Evicted(b) => {
            cold.insert(b.build.id, Arc::unwrap_or_clone(b));
        }
        ColdOp::LogsPruned { jobs, at } => {
            for b in cold.values_mut() {
                b.mark_pruned(&jobs, at);
            }
        }
        ColdOp::Recalled(id) => {
            let left = cold.remove(&id);
            let back = commit.body.events.iter().find_map(|e| match e {
                crate::domain::Event::BuildsRecalled { builds } => {
                    builds.iter().find(|b| b.build.id == id)
                }
                _ => None,
            });
            if left.as_ref() != back {
                return Err(Fail::failed(format!(
                    "commit {} brings build {id} back into memory, but not as it was when it left (or it never left)",
                    commit.seq
                )));
            }
        }
    }
    Ok(())
}

fn tokens_table(state: &State, _: &[ColdBuild], now: Millis) -> Table {
    let mut t = Table::new(&[
        "ID",
        "KIND",
        "DESCRIPTION",
        "PROJECTS",
        "TRIGGER",
        "STATUS",
        "CREATED",
    ]);
    for tok in state.tokens.values() {
        let status = match (tok.revoked_at, tok.expires_at) {
            (Some(at), _) => format!("revoked {}", rfc3339(at)),
            (None, Some(e)) if e <= now => format!("expired {}", rfc3339(e)),
            _ => "active".to_string(),
        };
        t.row(vec![
            tok.id.to_string(),
            format!("{:?}", tok.kind).to_lowercase(),
            tok.description.clone(),
            if tok.enabled_projects.is_empty() {
                "*".to_string()
            } else {
                tok.enabled_projects
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            },
            if tok.allow_trigger { "yes" } else { "no" }.to_string(),
            status,
            rfc3339(tok.created_at),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Command, Plane, Principal};
    use crate::log::{CommitBody, GENESIS, Meta, Outcome};

    fn sealed(reason: &str) -> (Commit, Vec<u8>) {
        let body = CommitBody {
            at: 1_700_000_000_000,
            meta: Meta {
                principal: Principal::System,
                plane: Plane::System,
                request_id: "r".into(),
                idempotency_key: None,
                command: Command::CreateProject {
                    id: "docs".into(),
                    name: None,
                },
            },
            outcome: Outcome::Rejected {
                status: 409,
                code: "project_exists".into(),
                reason: reason.into(),
                field: None,
            },
            events: vec![],
        };
        Commit::seal(7, GENESIS, body).unwrap()
    }

    #[test]
    fn an_export_line_gives_back_its_seq_and_exact_record() {
        // A reason that mimics the record field must not fool the reader.
        let (commit, record) = sealed(r#"x","record":"00"}"#);
        let mut line = Vec::new();
        crate::api::audit::write_export_line(&mut line, &commit, &record);
        assert_eq!(line.pop(), Some(b'\n'));
        let mut out = Vec::new();
        assert_eq!(read_line(&line, &mut out).unwrap(), 7);
        assert_eq!(out, record);
        assert_eq!(Commit::decode(&out).unwrap(), commit);
    }

    #[test]
    fn error_and_foreign_lines_are_failures() {
        let mut out = Vec::new();
        let e = read_line(br#"{"error":"commit 5 is corrupt: x"}"#, &mut out).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("commit 5 is corrupt"), "{}", e.msg);
        for line in [&b"{}"[..], br#"{"seq":3}"#, br#"{"seq":3,"record":"0g"}"#] {
            assert!(read_line(line, &mut out).is_err(), "{:?}", line);
        }
    }
}
