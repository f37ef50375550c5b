//! `reeve token ...`: issue, list and revoke tokens (admin token).

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::output::{self, Table, text, when};
use super::client::{self, CliError, Conn, ConnArgs, Idempotency};

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    /// Everything, in every project.
    Admin,
    /// REST and CLI, within its projects.
    Api,
    /// The MCP endpoints only.
    Mcp,
    /// The runner protocol only.
    Runner,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Admin => "admin",
            Kind::Api => "api",
            Kind::Mcp => "mcp",
            Kind::Runner => "runner",
        }
    }
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Issue a token. Its secret is printed once, alone on stdout.
    Create {
        #[arg(long, value_enum)]
        kind: Kind,
        /// The projects it may use, comma-separated; PROJECT=TIME ends that project's access
        /// at an RFC 3339 time. Default: every project.
        #[arg(long, value_delimiter = ',', value_name = "PROJECT[=TIME]")]
        projects: Vec<String>,
        /// May it change things (trigger, pause, restart ...)? Default: read-only.
        #[arg(long)]
        allow_trigger: bool,
        /// When it stops working: an RFC 3339 time (2026-12-31T00:00:00Z) or a span from
        /// now (30d, 12h).
        #[arg(long, value_name = "TIME|SPAN")]
        expires: Option<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        idem: Idempotency,
    },
    /// List tokens (never their secrets).
    Ls,
    /// Revoke a token at once.
    Revoke {
        /// The token's id (a UUID; `reeve token ls` lists them).
        id: String,
        #[command(flatten)]
        idem: Idempotency,
    },
}

pub fn run(args: TokenArgs) -> ExitCode {
    client::run(args.conn.json, async move {
        let conn = Conn::new(&args.conn)?;
        dispatch(&conn, args.command).await
    })
}

/// An RFC 3339 time as given, or a span (`30d`, `12h 30m`) from now as RFC 3339.
fn expiry(flag: &str, raw: &str) -> Result<String, CliError> {
    if raw.parse::<jiff::Timestamp>().is_ok() {
        return Ok(raw.to_string());
    }
    let bad = || {
        CliError::Usage(format!(
            "{flag} {raw:?} is neither an RFC 3339 time (2026-12-31T00:00:00Z) nor a span from now (30d, 12h)"
        ))
    };
    let span: jiff::Span = raw.parse().map_err(|_| bad())?;
    if span.is_negative() || span.is_zero() {
        return Err(bad());
    }
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let at = now.checked_add(span).map_err(|_| bad())?;
    Ok(at.timestamp().to_string())
}

fn enabled_projects(items: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut out = Map::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (project, until) = match item.split_once('=') {
            Some((p, t)) => (p, Value::String(expiry("--projects", t)?)),
            None => (item, Value::Null),
        };
        out.insert(project.to_string(), until);
    }
    Ok(out)
}

async fn dispatch(conn: &Conn, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create {
            kind,
            projects,
            allow_trigger,
            expires,
            description,
            idem,
        } => {
            let mut body = json!({
                "kind": kind.as_str(),
                "description": description,
                "enabled_projects": enabled_projects(&projects)?,
                "allow_trigger": allow_trigger,
            });
            if let Some(e) = expires {
                body["expires_at"] = Value::String(expiry("--expires", &e)?);
            }
            let rb = conn.mutation(Method::POST, &["tokens"], &[], &idem)?;
            let answer = conn.call(rb.json(&body)).await?;
            let b = &answer.body;
            let Some(secret) = b["secret"].as_str() else {
                if conn.json {
                    output::emit(&answer.text);
                }
                return Err(CliError::Failed(format!(
                    "token {} was issued by an earlier request with this --idempotency-key; its secret was shown only then and cannot be shown again (revoke it and create another if it is lost)",
                    text(&b["id"])
                )));
            };
            if conn.json {
                output::emit(&answer.text);
            } else {
                output::emit(secret);
            }
            output::note(&format!(
                "token {} ({}) created. Store its secret now: it is shown only this once and cannot be recovered.",
                text(&b["id"]),
                kind.as_str()
            ));
        }
        TokenCommand::Ls => {
            let answer = conn
                .call(conn.request(Method::GET, &["tokens"], &[]))
                .await?;
            client::show(conn, &answer, list);
        }
        TokenCommand::Revoke { id, idem } => {
            let id = client::uuid_arg(&id, "token", "`reeve token ls` lists them")?.to_string();
            let rb = conn.mutation(Method::DELETE, &["tokens", &id], &[], &idem)?;
            let answer = conn.call(rb).await?;
            client::show(conn, &answer, |b, _| {
                format!(
                    "revoked token {} at {}",
                    text(&b["id"]),
                    when(&b["revoked_at"])
                )
            });
        }
    }
    Ok(())
}

fn projects(t: &Value) -> String {
    match t["enabled_projects"].as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(p, until)| match until.as_str() {
                Some(_) => format!("{p} (until {})", when(until)),
                None => p.clone(),
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => "*".into(),
    }
}

fn list(body: &Value, color: bool) -> String {
    let mut t = Table::new(&[
        "ID",
        "KIND",
        "DESCRIPTION",
        "PROJECTS",
        "TRIGGER",
        "EXPIRES",
        "STATE",
    ]);
    for tok in body["tokens"].as_array().into_iter().flatten() {
        let expired = tok["expires_at"]
            .as_str()
            .and_then(|e| e.parse::<jiff::Timestamp>().ok())
            .is_some_and(|e| e <= jiff::Timestamp::now());
        let state = if !tok["revoked_at"].is_null() {
            "revoked"
        } else if expired {
            "expired"
        } else {
            "active"
        };
        t.row(vec![
            text(&tok["id"]).into(),
            text(&tok["kind"]).into(),
            text(&tok["description"]).into(),
            projects(tok).into(),
            if tok["allow_trigger"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            }
            .into(),
            when(&tok["expires_at"]).into(),
            output::state(state),
        ]);
    }
    t.render(color)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_times_or_spans_from_now() {
        assert_eq!(
            expiry("--expires", "2026-12-31T00:00:00Z").unwrap(),
            "2026-12-31T00:00:00Z"
        );
        let later: jiff::Timestamp = expiry("--expires", "30d").unwrap().parse().unwrap();
        assert!(later > jiff::Timestamp::now());
        for bad in ["tomorrow", "-3d", "0s"] {
            assert!(
                matches!(expiry("--expires", bad), Err(CliError::Usage(_))),
                "{bad}"
            );
        }
    }
}
