//! `GET /api/v1/events`: commit summaries as Server-Sent Events, resumable with
//! `Last-Event-ID`, scoped to what the token may see.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// One event or comment of a stream, as read off the wire.
#[derive(Debug, Clone)]
enum Sse {
    Event { id: u64, data: Value },
    Comment(String),
}

/// A client of the stream over real HTTP: parses `text/event-stream` as it arrives.
struct Stream {
    resp: reqwest::Response,
    buf: String,
    ready: std::collections::VecDeque<Sse>,
}

impl Stream {
    async fn open(s: &TestServer, token: &str, last_event_id: Option<u64>) -> Stream {
        let mut rb = s.call(Method::GET, token, "/events");
        if let Some(id) = last_event_id {
            rb = rb.header("Last-Event-ID", id.to_string());
        }
        let resp = rb.send().await.expect("connecting to the event stream");
        assert_eq!(resp.status(), 200, "GET /events");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        Stream {
            resp,
            buf: String::new(),
            ready: Default::default(),
        }
    }

    /// The next event or comment, or `None` if none comes within `wait` (or the stream ends).
    async fn next_any(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => {
                    self.buf.push_str(&String::from_utf8_lossy(&bytes));
                    self.parse();
                }
                _ => return None,
            }
        }
    }

    fn parse(&mut self) {
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let (mut id, mut data) = (None, String::new());
            for line in block.lines() {
                if let Some(c) = line.strip_prefix(':') {
                    self.ready.push_back(Sse::Comment(c.trim().to_string()));
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if let Some(id) = id {
                let data = serde_json::from_str(&data).expect("event data is JSON");
                self.ready.push_back(Sse::Event { id, data });
            }
        }
    }

    /// The next event (comments skipped); panics if none comes in time.
    async fn event(&mut self) -> (u64, Value) {
        loop {
            match self.next_any(Duration::from_secs(10)).await {
                Some(Sse::Event { id, data }) => return (id, data),
                Some(Sse::Comment(_)) => continue,
                None => panic!("no event within 10 s"),
            }
        }
    }

    /// Every event that arrives until nothing has come for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<(u64, Value)> {
        let mut out = Vec::new();
        while let Some(e) = self.next_any(quiet).await {
            if let Sse::Event { id, data } = e {
                out.push((id, data));
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_describe_each_commit_and_resume_after_last_event_id() {
    let s = TestServer::start().await;
    let head = s.audit_head().await;
    let mut live = Stream::open(&s, &s.admin, None).await;

    s.create_project(&s.admin, "docs").await;
    let watch = s.watch(&s.admin, "docs", "viking://res/a").await;
    let (id, first) = live.event().await;
    assert_eq!(id, head + 1);
    assert_eq!(first["seq"], json!(head + 1));
    assert_eq!(first["op"], "create_project");
    assert_eq!(first["project"], "docs");
    assert_eq!(first["plane"], "rest");
    assert_eq!(first["outcome"], "accepted");
    ts(&first["at"]);
    let admin = format!("token:{}", s.admin_token_id().await);
    assert_eq!(first["principal"], json!(admin));
    let (id, second) = live.event().await;
    assert_eq!(id, head + 2);
    assert_eq!(second["op"], "create_watch");
    assert_eq!(
        second["target"],
        json!(format!("watch:{}", str_field(&watch, "id")))
    );
    let keys: Vec<&String> = second.as_object().expect("object").keys().collect();
    assert_eq!(
        keys.len(),
        8,
        "seq, at, plane, principal, op, target, project, outcome: {second}"
    );
    drop(live);

    // What happens while nobody listens: a refusal (web plane), more changes, a build.
    let r = fetch(
        s.call(Method::POST, &s.admin, "/projects")
            .header("Reeve-Plane", "web")
            .json(&json!({"id": "docs"})),
    )
    .await;
    assert_problem(&r, 409, "project_exists");
    s.watch(&s.admin, "docs", "viking://res/b").await;
    s.trigger_build(&s.admin, "docs", pipeline(&[("a", &[])]))
        .await;
    let missed: Vec<u64> = s
        .audit_entries(head + 2)
        .await
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(missed.len(), 3);

    // Resuming from the last id received sends exactly what was missed, in order...
    let mut resumed = Stream::open(&s, &s.admin, Some(head + 2)).await;
    let got = resumed.drain(Duration::from_millis(500)).await;
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, missed);
    assert_eq!(got[0].1["op"], "create_project");
    assert_eq!(got[0].1["outcome"], "rejected");
    assert_eq!(got[0].1["plane"], "web");
    assert_eq!(got[2].1["op"], "trigger_build");
    // ...and then follows live.
    s.create_project(&s.admin, "more").await;
    let (id, next) = resumed.event().await;
    assert_eq!(id, missed[2] + 1);
    assert_eq!(next["op"], "create_project");

    // From 0, the whole history; an id past the head starts at the head.
    let mut all = Stream::open(&s, &s.admin, Some(0)).await;
    let got = all.drain(Duration::from_millis(500)).await;
    assert_eq!(got.len() as u64, missed[2] + 1);
    assert!(got.windows(2).all(|w| w[1].0 == w[0].0 + 1), "gapless");
    // Without following: what was missed up to the head, and the end of the stream.
    let r = fetch(
        s.call(Method::GET, &s.admin, "/events?follow=false")
            .header("Last-Event-ID", (head + 2).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ids: Vec<u64> = r
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|id| id.trim().parse().expect("an id"))
        .collect();
    assert_eq!(ids.len() as u64, missed[2] + 1 - (head + 2));
    assert_eq!(ids[..3], missed[..]);
    let mut ahead = Stream::open(&s, &s.admin, Some(1_000_000)).await;
    assert!(ahead.drain(Duration::from_millis(300)).await.is_empty());
    s.create_project(&s.admin, "after").await;
    assert_eq!(ahead.event().await.1["project"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_sees_only_its_projects_events() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "a").await;
    s.create_project(&s.admin, "b").await;
    let (_, scoped) = s.create_token("api", json!({"a": null}), true).await;
    let (_, reader) = s.create_token("api", json!({"a": null}), false).await;
    let head = s.audit_head().await;
    let mut mine = Stream::open(&s, &scoped, None).await;
    let mut read_only = Stream::open(&s, &reader, None).await;
    let mut admin = Stream::open(&s, &s.admin, None).await;

    let wa = s.watch(&s.admin, "a", "viking://a").await;
    s.watch(&s.admin, "b", "viking://b").await;
    s.trigger_build(&s.admin, "b", pipeline(&[("x", &[])]))
        .await;
    s.create_token("api", json!({}), false).await;
    // The scoped token's own refusal in b: b is not its to see, so neither is the commit.
    let r = s
        .create_watch(&scoped, watch_body("b", "viking://b2"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = fetch(s.call(
        Method::POST,
        &scoped,
        &format!("/watches/{}/trigger", str_field(&wa, "id")),
    ))
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    s.trigger_build(&s.admin, "a", pipeline(&[("y", &[])]))
        .await;

    let everything = s.audit_entries(head).await;
    assert_eq!(everything.len(), 7);
    let in_a: Vec<u64> = everything
        .iter()
        .filter(|e| e["project"] == "a")
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(in_a.len(), 3, "{everything:?}");

    let quiet = Duration::from_millis(500);
    for stream in [&mut mine, &mut read_only] {
        let got = stream.drain(quiet).await;
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, in_a);
        assert!(got.iter().all(|(_, d)| d["project"] == "a"), "{got:?}");
    }
    let got = admin.drain(quiet).await;
    assert_eq!(got.len(), everything.len());

    // Resuming does not widen the scope.
    let mut again = Stream::open(&s, &scoped, Some(head)).await;
    let ids: Vec<u64> = again.drain(quiet).await.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, in_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_refuses_what_it_cannot_serve_and_ends_with_its_token() {
    let s = TestServer::start().await;
    let r = fetch(s.client.get(s.url("/events"))).await;
    assert_unauthorized(&r);
    let (_, mcp) = s.create_token("mcp", json!({}), false).await;
    let r = fetch(s.call(Method::GET, &mcp, "/events")).await;
    assert_problem(&r, 403, "mcp_token_not_allowed");
    for bad in ["x", "-1", "", "+5", "99999999999999999999"] {
        let r = fetch(
            s.call(Method::GET, &s.admin, "/events")
                .header("Last-Event-ID", bad),
        )
        .await;
        assert_problem(&r, 400, "invalid_header");
    }

    // A token revoked while it listens sees nothing after and its stream ends.
    let (id, token) = s.create_token("api", json!({}), true).await;
    let mut stream = Stream::open(&s, &token, None).await;
    s.create_project(&s.admin, "docs").await;
    assert_eq!(stream.event().await.1["project"], "docs");
    s.delete(&s.admin, &format!("/tokens/{id}"))
        .await
        .expect(200);
    s.create_project(&s.admin, "secret").await;
    assert!(
        stream.drain(Duration::from_secs(2)).await.is_empty(),
        "a revoked token sees nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_sends_keep_alive_comments_and_ends_at_shutdown() {
    let mut s = TestServer::start().await;
    let mut stream = Stream::open(&s, &s.admin, None).await;
    match stream.next_any(Duration::from_secs(20)).await {
        Some(Sse::Comment(c)) => assert_eq!(c, "keep-alive"),
        other => panic!("expected a keep-alive comment, got {other:?}"),
    }
    // Shutting down does not wait for the listener: the stream ends.
    let stopped = tokio::time::timeout(Duration::from_secs(10), s.shutdown()).await;
    assert!(stopped.is_ok(), "shutdown waited for an open event stream");
    assert!(stream.drain(Duration::from_secs(2)).await.is_empty());
}
