//! How large each field that reaches the log may be: one table, shared by the domain and every
//! door (REST, MCP, the runner protocol, the CLI's checks).
//!
//! Every command passes [`bound`] on its way to the writer (`Control::submit`), whatever door
//! it came through. A field over its limit is refused there (422 `field_too_long`), and the
//! command is recorded as [`Command::Summarized`]: the field's name, its length and the SHA-256
//! of its value, never the value. Texts reeve composes itself from what a caller sent (a
//! malformed request's detail, a read's refusal, a generator's error) are clipped instead. And
//! a refused command that is still larger than [`REFUSED_COMMAND`] once encoded is recorded by
//! its summary too ([`summarize_refused`]), so nobody without the right to change something can
//! make a commit larger than a few KiB. Lengths are bytes of UTF-8 unless a limit says entries.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use super::{Command, Hash, Pipeline, Rejection};

/// `source` and `to_uri` of a watch, and a `to_uri` that names one.
pub const URI: usize = 2048;
/// A project's id, wherever one is named (body, path, query, MCP argument, token scope).
pub const PROJECT_ID: usize = 63;
/// A project's display name.
pub const PROJECT_NAME: usize = 200;
/// A watch's `reason`.
pub const REASON: usize = 1024;
/// A watch's `instruction`.
pub const INSTRUCTION: usize = 16 * 1024;
/// A token's `description`.
pub const TOKEN_DESCRIPTION: usize = 200;
/// Projects one token is scoped to (entries of `enabled_projects`).
pub const TOKEN_PROJECTS: usize = 1000;
/// Variables in one `env` (a build's, or one job's).
pub const ENV_VARS: usize = 64;
/// One `env` variable's name.
pub const ENV_KEY: usize = 256;
/// One `env` variable's value.
pub const ENV_VALUE: usize = 4096;
/// A job's name (also a dependency's `job`).
pub const JOB_NAME: usize = 255;
/// A job's `run`, and a generated pipeline's `generate` command.
pub const RUN: usize = 64 * 1024;
/// A whole pipeline as stored (postcard-encoded: about the sum of its texts). Its job count
/// is `--max-jobs`.
pub const PIPELINE: usize = 256 * 1024;
/// Labels a runner offers when it claims a job, and the length of each.
pub const RUNNER_LABELS: usize = 32;
pub const RUNNER_LABEL: usize = 64;
/// A runner's message when it finishes a job.
pub const JOB_MESSAGE: usize = 4096;
/// `Idempotency-Key` (REST header, MCP `idempotency_key`).
pub const IDEMPOTENCY_KEY: usize = 255;
/// `X-Request-Id`: a longer one is replaced by a fresh id rather than refused.
pub const REQUEST_ID: usize = 128;
/// An MCP tool's name as the agent sent it.
pub const MCP_TOOL: usize = 64;
/// An MCP call's arguments as a whole (JSON text), for read tools and calls that never became
/// a command (an unknown tool, arguments that do not fit).
pub const MCP_READ_ARGUMENTS: usize = 4 * 1024;
/// An MCP call's arguments as a whole (JSON text), for write tools (`trigger_build` may carry
/// a pipeline; a larger one goes through REST).
pub const MCP_WRITE_ARGUMENTS: usize = 64 * 1024;
/// A whole REST request body; a larger one is refused with 413 before it is read.
pub const BODY: usize = 1024 * 1024;
/// Texts reeve writes itself from what a caller sent (a refusal's reason, a malformed
/// request's detail, a generator's error) are clipped to this.
pub const TEXT: usize = 2048;
/// A refused command is recorded whole up to this size (encoded); above it, by its summary.
pub const REFUSED_COMMAND: usize = 4 * 1024;

/// The code of every refusal for a field over its limit.
pub const FIELD_TOO_LONG: &str = "field_too_long";

/// The first field of a command that is over its limit.
#[derive(Debug)]
pub struct Over<'a> {
    /// The request's field, as the caller named it (`reason`, `pipeline`, `arguments`).
    pub field: &'static str,
    /// What exactly, for the text (`a job's run`, `an env value`).
    pub what: Cow<'static, str>,
    pub len: usize,
    pub limit: usize,
    /// `true` when `len` and `limit` count entries, not bytes.
    pub entries: bool,
    /// The oversized value, for its hash.
    pub value: Cow<'a, [u8]>,
}

impl Over<'_> {
    pub fn reason(&self) -> String {
        let unit = if self.entries { "entries" } else { "bytes" };
        let fix = if self.entries {
            "send fewer"
        } else {
            "shorten it"
        };
        format!(
            "{} is {} {unit}, more than the limit of {} {unit}; {fix} (the README lists every limit)",
            self.what, self.len, self.limit
        )
    }

    pub fn rejection(&self) -> Rejection {
        super::Refused::from(super::InputRefused::FieldTooLong {
            field: self.field,
            reason: self.reason(),
        })
        .into()
    }
}

fn text<'a>(field: &'static str, what: &'static str, value: &'a str, limit: usize) -> Check<'a> {
    if value.len() > limit {
        return Err(Box::new(Over {
            field,
            what: Cow::Borrowed(what),
            len: value.len(),
            limit,
            entries: false,
            value: Cow::Borrowed(value.as_bytes()),
        }));
    }
    Ok(())
}

fn opt<'a>(field: &'static str, value: Option<&'a String>, limit: usize) -> Check<'a> {
    value.map_or(Ok(()), |v| text(field, field, v, limit))
}

/// A boxed `Over`: checks return it on the cold path only.
type Check<'a> = Result<(), Box<Over<'a>>>;

fn env<'a>(field: &'static str, vars: &'a std::collections::BTreeMap<String, String>) -> Check<'a> {
    if vars.len() > ENV_VARS {
        return Err(Box::new(Over {
            field,
            what: Cow::Borrowed(field),
            len: vars.len(),
            limit: ENV_VARS,
            entries: true,
            value: Cow::Owned(postcard::to_stdvec(vars).unwrap_or_default()),
        }));
    }
    for (k, v) in vars {
        text(field, "a variable's name", k, ENV_KEY)?;
        text(field, "a variable's value", v, ENV_VALUE)?;
    }
    Ok(())
}

fn pipeline(p: &Pipeline) -> Check<'_> {
    match p {
        Pipeline::Generate(command) => text("pipeline", "the generate command", command, RUN)?,
        Pipeline::Jobs(jobs) => {
            for job in jobs {
                text("pipeline", "a job's name", &job.name, JOB_NAME)?;
                text("pipeline", "a job's run", &job.run, RUN)?;
                for dep in &job.depends_on {
                    text("pipeline", "a dependency's job", &dep.job, JOB_NAME)?;
                }
                env("pipeline", &job.env)?;
            }
        }
    }
    // Each part can be within its limit and the whole still too large (300 jobs of 64 KiB).
    let encoded = postcard::to_stdvec(p).unwrap_or_default();
    if encoded.len() > PIPELINE {
        return Err(Box::new(Over {
            field: "pipeline",
            what: Cow::Borrowed("the pipeline"),
            len: encoded.len(),
            limit: PIPELINE,
            entries: false,
            value: Cow::Owned(encoded),
        }));
    }
    Ok(())
}

/// The first part of a pipeline over its limit (or the whole), if any.
pub fn pipeline_over(p: &Pipeline) -> Option<Box<Over<'_>>> {
    pipeline(p).err()
}

fn project<'a>(field: &'static str, id: &'a str) -> Check<'a> {
    text(field, field, id, PROJECT_ID)
}

/// The first field of `cmd` over its limit, if any.
pub fn oversized(cmd: &Command) -> Option<Box<Over<'_>>> {
    check(cmd).err()
}

fn check(cmd: &Command) -> Check<'_> {
    match cmd {
        Command::CreateProject { id, name } => {
            project("id", id)?;
            opt("name", name.as_ref(), PROJECT_NAME)
        }
        Command::UpdateProject {
            id,
            name,
            default_pipeline,
        } => {
            project("id", id)?;
            opt("name", name.as_ref(), PROJECT_NAME)?;
            match default_pipeline {
                Some(Some(p)) => pipeline(p),
                _ => Ok(()),
            }
        }
        Command::IssueToken {
            description,
            enabled_projects,
            ..
        } => {
            text("description", "description", description, TOKEN_DESCRIPTION)?;
            if enabled_projects.len() > TOKEN_PROJECTS {
                return Err(Box::new(Over {
                    field: "enabled_projects",
                    what: Cow::Borrowed("enabled_projects"),
                    len: enabled_projects.len(),
                    limit: TOKEN_PROJECTS,
                    entries: true,
                    value: Cow::Owned(postcard::to_stdvec(enabled_projects).unwrap_or_default()),
                }));
            }
            for p in enabled_projects.keys() {
                text("enabled_projects", "a project id", p, PROJECT_ID)?;
            }
            Ok(())
        }
        Command::CreateWatch(new) => new_watch(new),
        Command::CreateWatchWithPipeline { watch, pipeline: p } => {
            new_watch(watch)?;
            pipeline(p)
        }
        Command::UpdateWatch { key, patch, .. } => {
            watch_key(key)?;
            watch_patch(patch)
        }
        Command::UpdateWatchWithPipeline {
            key,
            patch,
            pipeline: p,
            ..
        } => {
            watch_key(key)?;
            watch_patch(patch)?;
            p.as_ref().map_or(Ok(()), pipeline)
        }
        Command::DeleteWatch { key, .. } | Command::TriggerWatch { key } => watch_key(key),
        Command::TriggerBuild {
            project: p,
            pipeline: pl,
            env: vars,
        } => {
            project("project", p)?;
            pl.as_ref().map_or(Ok(()), pipeline)?;
            env("env", vars)
        }
        Command::RestartBuild { project: p, .. }
        | Command::AbortBuild { project: p, .. }
        | Command::RestartJob { project: p, .. }
        | Command::RerunJob { project: p, .. }
        | Command::AbortJob { project: p, .. } => project("project", p),
        Command::ClaimJob { labels } => {
            if labels.len() > RUNNER_LABELS {
                return Err(Box::new(Over {
                    field: "labels",
                    what: Cow::Borrowed("labels"),
                    len: labels.len(),
                    limit: RUNNER_LABELS,
                    entries: true,
                    value: Cow::Owned(postcard::to_stdvec(labels).unwrap_or_default()),
                }));
            }
            labels
                .iter()
                .try_for_each(|l| text("labels", "a label", l, RUNNER_LABEL))
        }
        Command::FinishJob { message, .. } => opt("message", message.as_ref(), JOB_MESSAGE),
        Command::ExpandJobs { pipeline: p, .. } => p.as_ref().map_or(Ok(()), pipeline),
        Command::McpWrite {
            tool,
            arguments,
            command,
        } => {
            text("tool", "the tool's name", tool, MCP_TOOL)?;
            text("arguments", "the arguments", arguments, MCP_WRITE_ARGUMENTS)?;
            check(command)
        }
        Command::McpCall {
            tool,
            arguments,
            project: p,
            ..
        } => {
            text("tool", "the tool's name", tool, MCP_TOOL)?;
            text("arguments", "the arguments", arguments, MCP_READ_ARGUMENTS)?;
            p.as_deref().map_or(Ok(()), |p| project("project", p))
        }
        // reeve's own commands, and records whose texts reeve wrote (clipped by `bound`).
        Command::RevokeToken { .. }
        | Command::Malformed { .. }
        | Command::Heartbeat { .. }
        | Command::ExpireLeases
        | Command::FireWatch { .. }
        | Command::PauseFailingWatch { .. }
        | Command::Coalesced { .. }
        | Command::PruneJobLogs { .. }
        | Command::Summarized { .. } => Ok(()),
    }
}

fn new_watch(new: &super::NewWatch) -> Check<'_> {
    project("project", &new.project)?;
    text("source", "source", &new.source, URI)?;
    text("to_uri", "to_uri", &new.to_uri, URI)?;
    opt("reason", new.reason.as_ref(), REASON)?;
    opt("instruction", new.instruction.as_ref(), INSTRUCTION)
}

fn watch_key(key: &super::WatchKey) -> Check<'_> {
    opt("to_uri", key.to_uri.as_ref(), URI)?;
    key.project
        .as_deref()
        .map_or(Ok(()), |p| project("project", p))
}

fn watch_patch(patch: &super::WatchPatch) -> Check<'_> {
    opt(
        "reason",
        patch.reason.as_ref().and_then(Option::as_ref),
        REASON,
    )?;
    opt(
        "instruction",
        patch.instruction.as_ref().and_then(Option::as_ref),
        INSTRUCTION,
    )
}

/// `s` cut to at most `max` bytes on a character boundary, marked as cut.
pub fn clip(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    const MARK: &str = " […]";
    let mut end = max.saturating_sub(MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
}

fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// The command as it may be recorded: itself, or — with a field over its limit — its summary,
/// which `decide` refuses with 422 `field_too_long`. Texts reeve composed are clipped.
pub fn bound(mut cmd: Command) -> Command {
    if let Some(over) = oversized(&cmd) {
        let refusal = if matches!(cmd, Command::CreateProject { .. }) && over.field == "id" {
            // Ids too long to be a slug were refused as such before limits were one table;
            // clients match on that code.
            Rejection::invalid("invalid_project_id", "id", over.reason())
        } else {
            over.rejection()
        };
        return Command::Summarized {
            op: op_of(&cmd),
            field: over.field.to_string(),
            len: over.len as u64,
            sha256: sha256(&over.value),
            fingerprint: cmd.fingerprint(),
            status: refusal.status,
            code: refusal.code,
            reason: refusal.reason,
            refusal_field: refusal.field,
        };
    }
    clip_texts(&mut cmd);
    cmd
}

/// A text reeve wrote around what a caller sent (a parser's error quotes the value it could
/// not read): quotes longer than [`QUOTE`] bytes keep their start and their length only, and
/// the whole is clipped to [`TEXT`].
pub fn clip_quoting(s: &mut String) {
    if s.len() > QUOTE {
        *s = shorten_quotes(s);
    }
    clip(s, TEXT);
}

/// How much of a quoted value a recorded text keeps.
const QUOTE: usize = 64;

fn shorten_quotes(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(TEXT * 2));
    let mut rest = s;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        // The closing quote is the next one not escaped by a backslash.
        let mut close = None;
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    close = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = close.unwrap_or(rest.len());
        let quoted = &rest[..end];
        if quoted.len() > QUOTE {
            let mut keep = 16;
            while !quoted.is_char_boundary(keep) {
                keep -= 1;
            }
            out.push_str(&quoted[..keep]);
            out.push_str(&format!("…({} bytes)", quoted.len()));
        } else {
            out.push_str(quoted);
        }
        match close {
            Some(_) => {
                out.push('"');
                rest = &rest[end + 1..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn clip_texts(cmd: &mut Command) {
    match cmd {
        Command::Malformed { detail, .. } => clip_quoting(detail),
        Command::McpCall {
            refusal, target, ..
        } => {
            if let Some(r) = refusal {
                clip_quoting(&mut r.reason);
            }
            if let Some(t) = target {
                clip(t, URI + 16);
            }
        }
        Command::ExpandJobs { error: Some(e), .. } => clip_quoting(e),
        Command::McpWrite { command, .. } => clip_texts(command),
        _ => {}
    }
}

/// The operation's name for a summary; an unknown tool's name may be anything, so it is cut.
fn op_of(cmd: &Command) -> String {
    let mut op = cmd.op().to_string();
    clip(&mut op, MCP_TOOL);
    op
}

/// The summary to record instead of a refused command that is too large to keep whole, if it
/// is; it carries the refusal, so `decide` answers it the same way.
pub fn summarize_refused(cmd: &Command, r: &Rejection) -> Option<Command> {
    if matches!(cmd, Command::Summarized { .. }) {
        return None;
    }
    let encoded = postcard::to_stdvec(cmd).unwrap_or_default();
    if encoded.len() <= REFUSED_COMMAND {
        return None;
    }
    let mut reason = r.reason.clone();
    clip(&mut reason, TEXT);
    Some(Command::Summarized {
        op: op_of(cmd),
        field: "command".to_string(),
        len: encoded.len() as u64,
        sha256: sha256(&encoded),
        fingerprint: cmd.fingerprint(),
        status: r.status,
        code: r.code.clone(),
        reason,
        refusal_field: r.field.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewWatch, WatchKey};

    fn watch(reason: usize) -> Command {
        Command::CreateWatch(NewWatch {
            project: "p".into(),
            source: "https://a.example.com".into(),
            to_uri: "viking://b".into(),
            watch_interval: 60.0,
            reason: Some("r".repeat(reason)),
            instruction: None,
            is_active: true,
        })
    }

    #[test]
    fn a_value_at_its_limit_passes_and_one_byte_more_is_summarized() {
        assert_eq!(bound(watch(REASON)), watch(REASON));
        let Command::Summarized {
            field,
            len,
            sha256: h,
            fingerprint,
            code,
            ..
        } = bound(watch(REASON + 1))
        else {
            panic!("not summarized");
        };
        assert_eq!((field.as_str(), len), ("reason", REASON as u64 + 1));
        assert_eq!(h, sha256("r".repeat(REASON + 1).as_bytes()));
        assert_eq!(fingerprint, watch(REASON + 1).fingerprint());
        assert_eq!(code, FIELD_TOO_LONG);
    }

    #[test]
    fn a_retry_of_an_oversized_request_has_the_same_fingerprint() {
        let big = Command::DeleteWatch {
            key: WatchKey {
                id: None,
                to_uri: Some("u".repeat(URI * 3)),
                project: None,
            },
            if_match: None,
        };
        assert_eq!(bound(big.clone()).fingerprint(), big.fingerprint());
    }

    #[test]
    fn long_quotes_keep_their_start_and_length() {
        let mut s = format!("invalid type: string \"{}\", expected f64", "é".repeat(500));
        clip_quoting(&mut s);
        assert_eq!(
            s,
            format!(
                "invalid type: string \"{}…(1000 bytes)\", expected f64",
                "é".repeat(8)
            )
        );
        let mut short = "got \"a\\\"b\" and \"c\"".to_string();
        let before = short.clone();
        clip_quoting(&mut short);
        assert_eq!(short, before);
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        let mut s = "é".repeat(100);
        clip(&mut s, 51);
        assert!(s.len() <= 51 && s.ends_with("[…]"));
    }
}
