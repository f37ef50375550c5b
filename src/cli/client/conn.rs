//! Talking to a reeve server: where it is, which token to send, and what its answers mean
//! to a command line (exit codes, error lines).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use url::{Host, Url};

use super::CliError;

/// Sent with every request so the server admits and audits it on the `cli` plane.
const PLANE: HeaderName = HeaderName::from_static("reeve-plane");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Reads and ordinary mutations; `job log --follow` goes without one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the server is and who we are to it. Global to every client command, so
/// `reeve watch ls --server URL` and `reeve watch --server URL ls` both work.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// The reeve server.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "REEVE_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub server: String,
    /// An admin or api token [default for a server on this machine: the admin token file,
    /// $REEVE_DATA_DIR/admin.token or ./reeve-data/admin.token]
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "REEVE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print the server's JSON as received instead of a table (for scripts).
    #[arg(long, global = true, help_heading = "Connection")]
    pub json: bool,
}

/// `--idempotency-key` for commands that change something: a retry with the same key gets
/// the first answer, and nothing happens twice.
#[derive(Args, Debug, Clone, Default)]
pub struct Idempotency {
    /// Make a retry safe: the server answers a repeat of this key with its first answer.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// A connection to one server.
pub struct Conn {
    http: reqwest::Client,
    base: Url,
    token: String,
    pub json: bool,
}

/// A successful answer: its status and body, as text (what `--json` prints) and as JSON.
pub struct Answer {
    pub status: StatusCode,
    pub text: String,
    pub body: Value,
}

impl Conn {
    pub fn new(args: &ConnArgs) -> Result<Conn, CliError> {
        let (base, token) = endpoint(&args.server, args.token.as_deref())?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("reeve-cli/", env!("CARGO_PKG_VERSION")));
        // A proxy from the environment has no business between us and a local server.
        if is_loopback(&base) {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| CliError::Failed(format!("could not set up HTTP: {}", chain(&e))))?;
        Ok(Conn {
            http,
            base,
            token,
            json: args.json,
        })
    }

    /// `<server>/api/v1/<segments...>`, each segment percent-encoded on its own, so a
    /// project id or a job id can never change the shape of the path.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    /// A request with the token, the plane header and the query (encoded by `url`).
    pub fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> RequestBuilder {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.http
            .request(method, url)
            .bearer_auth(&self.token)
            .header(PLANE, HeaderValue::from_static("cli"))
    }

    /// A request that changes something, with the caller's idempotency key if any.
    pub fn mutation(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        idem: &Idempotency,
    ) -> Result<RequestBuilder, CliError> {
        let rb = self.request(method, segments, query);
        match &idem.idempotency_key {
            None => Ok(rb),
            Some(k) => {
                let ok = !k.is_empty()
                    && k.len() <= crate::domain::bounds::IDEMPOTENCY_KEY
                    && k.bytes().all(|b| b.is_ascii_graphic());
                let value = HeaderValue::from_str(k)
                    .ok()
                    .filter(|_| ok)
                    .ok_or_else(|| {
                        CliError::Usage(
                            "--idempotency-key must be 1-255 visible ASCII characters, e.g. a UUID"
                                .into(),
                        )
                    })?;
                Ok(rb.header(IDEMPOTENCY_KEY, value))
            }
        }
    }

    /// Sends a request and reads the whole answer. A refusal becomes [`CliError::Refused`].
    pub async fn call(&self, rb: RequestBuilder) -> Result<Answer, CliError> {
        let resp = self.send(rb.timeout(REQUEST_TIMEOUT)).await?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport(&e))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, text, body })
    }

    /// Sends a request and hands back the response once its status says success, for
    /// answers that are streamed (a followed job log).
    pub async fn send(&self, rb: RequestBuilder) -> Result<reqwest::Response, CliError> {
        let resp = rb.send().await.map_err(|e| self.transport(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(refusal(status, text))
    }

    pub fn transport(&self, e: &reqwest::Error) -> CliError {
        let what = if e.is_timeout() {
            "did not answer in time"
        } else if e.is_connect() {
            "could not be reached"
        } else {
            "could not be talked to"
        };
        CliError::Failed(format!(
            "the reeve server at {} {what}: {}; check --server (or REEVE_SERVER) and that `reeve serve` runs there",
            self.base.as_str().trim_end_matches('/'),
            chain(e)
        ))
    }
}

/// The server URL, checked, and the token to show it: `--token`/`REEVE_TOKEN`, or for a server
/// on this machine the admin token file. Every command that talks to a server starts here.
pub fn endpoint(server: &str, given_token: Option<&str>) -> Result<(Url, String), CliError> {
    let base = server_url(server)?;
    let token = token(given_token, &base)?;
    Ok((base, token))
}

/// A non-2xx answer: the problem's code and detail, or what the server said otherwise.
fn refusal(status: StatusCode, text: String) -> CliError {
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let code = body["code"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("http_{}", status.as_u16()));
    let detail = body["detail"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            let t = text.trim();
            (!t.is_empty()).then(|| t.chars().take(500).collect())
        })
        .unwrap_or_else(|| {
            format!(
                "the server answered {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
        });
    CliError::Refused {
        status: status.as_u16(),
        code,
        detail,
        body: text,
    }
}

fn server_url(raw: &str) -> Result<Url, CliError> {
    let url = Url::parse(raw).map_err(|e| {
        CliError::Usage(format!(
            "--server {raw:?} is not a URL ({e}); give one such as http://127.0.0.1:8080"
        ))
    })?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(CliError::Usage(format!(
                "--server {raw:?}: this reeve speaks plain HTTP only; reach the server over http:// \
                 (e.g. through an SSH tunnel or a TLS-terminating proxy on this machine)"
            )));
        }
        other => {
            return Err(CliError::Usage(format!(
                "--server {raw:?} has scheme {other:?}; give an http:// URL such as http://127.0.0.1:8080"
            )));
        }
    }
    if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::Usage(format!(
            "--server {raw:?} must be a server address such as http://127.0.0.1:8080, without a query or fragment"
        )));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The data dir `reeve serve` uses when given none.
fn default_data_dir() -> PathBuf {
    std::env::var_os("REEVE_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./reeve-data"))
}

/// `--token`/`REEVE_TOKEN`, else (for a server on this machine) the admin token file that
/// `reeve serve` writes on its first start.
fn token(given: Option<&str>, server: &Url) -> Result<String, CliError> {
    if let Some(t) = given.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let how = "pass --token <secret> or set REEVE_TOKEN (an admin or api token; \
               `reeve token create --kind api ...` makes one)";
    if !is_loopback(server) {
        return Err(CliError::Usage(format!(
            "no token for {server}: {how}; the admin token file is only used for a server on this machine"
        )));
    }
    let path = default_data_dir().join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(CliError::Usage(format!(
            "no token: {how}; {} is empty",
            path.display()
        ))),
        Err(e) => Err(CliError::Usage(format!(
            "no token: {how}; there is no readable admin token at {} ({e}); \
             set REEVE_DATA_DIR to the server's data dir to use its admin token",
            path.display()
        ))),
    }
}

/// An error with its causes, which is where reqwest keeps the useful part
/// ("Connection refused").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for (raw, local) in [
            ("http://127.0.0.1:8080", true),
            ("http://127.1.2.3", true),
            ("http://localhost:1", true),
            ("http://[::1]:8080", true),
            ("http://10.0.0.1:8080", false),
            ("http://reeve.example.com", false),
        ] {
            assert_eq!(is_loopback(&server_url(raw).unwrap()), local, "{raw}");
        }
    }

    #[test]
    fn server_urls_that_cannot_work_are_usage_errors() {
        for raw in [
            "127.0.0.1:8080",
            "https://x",
            "ftp://x",
            "http://x/?a=b",
            "nonsense",
        ] {
            assert!(
                matches!(server_url(raw), Err(CliError::Usage(_))),
                "{raw} should be refused"
            );
        }
    }
}
