//! Authentication, token kinds and scopes, token lifecycle, projects.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn tokens(s: &TestServer) -> Value {
    let r = s.get(&s.admin, "/tokens").await;
    r.expect(200).clone()
}

async fn projects(s: &TestServer) -> Value {
    let r = s.get(&s.admin, "/projects").await;
    r.expect(200).clone()
}

fn project_ids(body: &Value) -> Vec<String> {
    body["projects"]
        .as_array()
        .unwrap_or_else(|| panic!("projects array in {body}"))
        .iter()
        .map(|p| str_field(p, "id"))
        .collect()
}

/// Two problem bodies are "the same" when their details differ at most in the id they
/// mention, so scope cannot be probed by comparing answers.
#[track_caller]
fn assert_same_problem(a: &Resp, a_id: &str, b: &Resp, b_id: &str) {
    assert_eq!(a.status, b.status, "{} vs {}", a.text, b.text);
    let norm = |r: &Resp, id: &str| -> Value {
        let mut v = r.body.clone();
        if let Some(d) = v["detail"].as_str() {
            v["detail"] = Value::String(d.replace(id, "<id>"));
        }
        v
    };
    assert_eq!(
        norm(a, a_id),
        norm(b, b_id),
        "scoped vs missing bodies differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_garbage_credentials_are_401_with_bearer_challenge() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;

    let r = fetch(s.client.get(s.url("/watches"))).await;
    assert_unauthorized(&r);
    let r = fetch(
        s.client
            .post(s.url("/watches"))
            .json(&watch_body("p", "https://d.example.com/x")),
    )
    .await;
    assert_unauthorized(&r);

    for header in [
        "Bearer garbage",
        "Bearer ",
        "Basic YWRtaW46YWRtaW4=",
        "bearer-but-not-really",
    ] {
        let r = fetch(
            s.client
                .get(s.url("/watches"))
                .header("authorization", header),
        )
        .await;
        assert_unauthorized(&r);
    }
    // A secret with one character changed is still unknown.
    let mut forged = s.admin.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    assert_unauthorized(&s.get(&forged, "/watches").await);

    assert!(s.all_watches(&s.admin).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_401() {
    let s = TestServer::start().await;
    let (id, secret) = s.create_token("api", json!({}), true).await;
    s.get(&secret, "/watches").await.expect(200);

    let r = s.delete(&s.admin, &format!("/tokens/{id}")).await;
    let b = r.expect(200);
    assert_eq!(b["id"], json!(id));
    assert_eq!(b["revoked"], true);
    ts(&b["revoked_at"]);

    assert_unauthorized(&s.get(&secret, "/watches").await);
    assert_unauthorized(&s.post(&secret, "/projects", json!({"id": "x"})).await);

    let listed = tokens(&s).await;
    let t = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == json!(id))
        .expect("revoked tokens stay listed");
    ts(&t["revoked_at"]);

    let r = s.delete(&s.admin, &format!("/tokens/{id}")).await;
    assert_problem(&r, 409, "token_already_revoked");

    let missing = uuid::Uuid::now_v7();
    let r = s.delete(&s.admin, &format!("/tokens/{missing}")).await;
    assert_problem(&r, 404, "token_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_401() {
    let s = TestServer::start().await;
    let expires = jiff::Timestamp::now() + secs(3);
    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({
                "kind": "api",
                "description": "short-lived",
                "enabled_projects": {},
                "allow_trigger": true,
                "expires_at": rfc3339(expires),
            }),
        )
        .await;
    let b = r.expect(201);
    let secret = str_field(b, "secret");
    ts(&b["expires_at"]);

    let expired = eventually(Duration::from_secs(20), || async {
        let r = s.get(&secret, "/watches").await;
        (r.status == 401).then_some(r)
    })
    .await
    .expect("token still accepted long after expires_at");
    assert_unauthorized(&expired);
    assert!(jiff::Timestamp::now() >= expires - secs(1));
    assert_unauthorized(&s.post(&secret, "/projects", json!({"id": "x"})).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_audit_administration_requires_admin() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let (_, api) = s.create_token("api", json!({}), true).await;
    let admin_id = s.admin_token_id().await;
    let tokens_before = tokens(&s).await;
    let projects_before = projects(&s).await;

    let r = s
        .post(
            &api,
            "/tokens",
            json!({"kind": "admin", "description": "escalate", "enabled_projects": {}}),
        )
        .await;
    assert_problem(&r, 403, "admin_required");
    assert_problem(&s.get(&api, "/tokens").await, 403, "admin_required");
    let r = s.delete(&api, &format!("/tokens/{admin_id}")).await;
    assert_problem(&r, 403, "admin_required");
    let r = s.post(&api, "/projects", json!({"id": "mine"})).await;
    assert_problem(&r, 403, "admin_required");
    assert_problem(&s.get(&api, "/audit").await, 403, "admin_required");

    assert_eq!(tokens(&s).await, tokens_before);
    assert_eq!(projects(&s).await, projects_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_is_shown_once_and_never_listed() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({
                "kind": "api",
                "description": "ci bot",
                "enabled_projects": {"p": null},
                "allow_trigger": true,
            }),
        )
        .await;
    let created = r.expect(201).clone();
    let secret = str_field(&created, "secret");
    assert!(!secret.is_empty());
    assert_eq!(created["kind"], "api");
    assert_eq!(created["description"], "ci bot");
    assert_eq!(created["enabled_projects"], json!({"p": null}));
    assert_eq!(created["allow_trigger"], true);
    assert_eq!(created["expires_at"], Value::Null);
    assert_eq!(created["revoked_at"], Value::Null);
    ts(&created["created_at"]);
    uuid::Uuid::parse_str(&str_field(&created, "id")).expect("token id is a UUID");

    // Defaults: all projects, no trigger.
    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "api", "description": "defaults"}),
        )
        .await;
    let d = r.expect(201);
    assert_eq!(d["enabled_projects"], json!({}));
    assert_eq!(d["allow_trigger"], false);

    let listed = tokens(&s).await;
    assert!(
        !contains_key(&listed, "secret"),
        "GET /tokens exposes a secret field: {listed}"
    );
    let text = listed.to_string();
    assert!(!text.contains(&secret), "GET /tokens leaks a secret");
    assert!(
        !text.contains(&s.admin),
        "GET /tokens leaks the admin secret"
    );

    let mine = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == created["id"])
        .expect("new token listed");
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("secret");
    assert_eq!(
        mine, &expected,
        "listing renders the token as created, minus secret"
    );

    s.get(&secret, "/watches").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_allow_trigger_reads_but_cannot_mutate() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let u = "https://d.example.com/ro";
    let w = s.watch(&s.admin, "p", u).await;
    let id = str_field(&w, "id");
    let (_, ro) = s.create_token("api", json!({}), false).await;

    assert_eq!(s.get_watch(&ro, &id).await.expect(200), &w);
    assert_eq!(s.list(&ro, "").await["total"], 1);
    s.get(&ro, "/projects").await.expect(200);

    let snapshot = s.all_watches(&s.admin).await;
    let by_uri = format!("/watches{}", qs(&[("to_uri", u)]));
    let refusals = [
        s.create_watch(&ro, watch_body("p", "https://d.example.com/new"))
            .await,
        s.patch(&ro, &format!("/watches/{id}"), json!({"is_active": false}))
            .await,
        s.patch(&ro, &by_uri, json!({"reason": "x"})).await,
        s.delete(&ro, &format!("/watches/{id}")).await,
        s.delete(&ro, &by_uri).await,
        s.post(&ro, &format!("/watches/{id}/trigger"), json!({}))
            .await,
        s.post(
            &ro,
            &format!("/watches/trigger{}", qs(&[("to_uri", u)])),
            json!({}),
        )
        .await,
    ];
    for r in &refusals {
        assert_problem(r, 403, "trigger_not_allowed");
    }
    assert_eq!(s.all_watches(&s.admin).await, snapshot);
    assert_eq!(s.watch_now(&id).await["last_run"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_scope_hides_everything_outside_it() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "alpha").await;
    s.create_project(&s.admin, "bravo").await;
    let shared = "https://d.example.com/shared";
    let only_b = "https://d.example.com/only-b";
    let wa = s.watch(&s.admin, "alpha", shared).await;
    let wb_shared = s.watch(&s.admin, "bravo", shared).await;
    let wb = s.watch(&s.admin, "bravo", only_b).await;
    let wb_id = str_field(&wb, "id");
    let (_, tok) = s.create_token("api", json!({"alpha": null}), true).await;
    let snapshot = s.all_watches(&s.admin).await;
    assert_eq!(snapshot.len(), 3);

    let missing = uuid::Uuid::now_v7().to_string();
    let hidden = s.get_watch(&tok, &wb_id).await;
    let absent = s.get_watch(&tok, &missing).await;
    assert_problem(&hidden, 404, "watch_not_found");
    assert_same_problem(&hidden, &wb_id, &absent, &missing);

    let hidden = s
        .patch(&tok, &format!("/watches/{wb_id}"), json!({"reason": "x"}))
        .await;
    let absent = s
        .patch(&tok, &format!("/watches/{missing}"), json!({"reason": "x"}))
        .await;
    assert_problem(&hidden, 404, "watch_not_found");
    assert_same_problem(&hidden, &wb_id, &absent, &missing);

    let hidden = s.delete(&tok, &format!("/watches/{wb_id}")).await;
    let absent = s.delete(&tok, &format!("/watches/{missing}")).await;
    assert_problem(&hidden, 404, "watch_not_found");
    assert_same_problem(&hidden, &wb_id, &absent, &missing);

    let hidden = s
        .post(&tok, &format!("/watches/{wb_id}/trigger"), json!({}))
        .await;
    assert_problem(&hidden, 404, "watch_not_found");

    let r = s
        .get(&tok, &format!("/watches{}", qs(&[("to_uri", only_b)])))
        .await;
    assert_problem(&r, 404, "watch_not_found");
    let r = s
        .delete(&tok, &format!("/watches{}", qs(&[("to_uri", only_b)])))
        .await;
    assert_problem(&r, 404, "watch_not_found");

    // The shared to_uri is unambiguous for a token that only sees alpha.
    let r = s
        .get(&tok, &format!("/watches{}", qs(&[("to_uri", shared)])))
        .await;
    assert_eq!(r.expect(200), &wa);
    let r = s
        .get(
            &tok,
            &format!(
                "/watches{}",
                qs(&[("to_uri", shared), ("project", "bravo")])
            ),
        )
        .await;
    assert!(
        r.status == 404,
        "naming an out-of-scope project must look missing: {} {}",
        r.status,
        r.text
    );

    let listed = s.list(&tok, "").await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["watches"], json!([wa]));
    let scoped = s.get(&tok, "/watches?project=bravo").await;
    let nowhere = s.get(&tok, "/watches?project=zulu").await;
    if scoped.status == 404 {
        assert_same_problem(&scoped, "bravo", &nowhere, "zulu");
    } else {
        assert_eq!(
            (scoped.status, &scoped.body),
            (nowhere.status, &nowhere.body),
            "listing an out-of-scope project must look like listing a missing one"
        );
        assert_eq!(scoped.body["total"], 0, "{}", scoped.text);
    }

    let mine = s.get(&tok, "/projects").await;
    assert_eq!(project_ids(mine.expect(200)), vec!["alpha".to_string()]);
    s.get(&tok, "/projects/alpha").await.expect(200);
    let hidden = s.get(&tok, "/projects/bravo").await;
    let absent = s.get(&tok, "/projects/zulu").await;
    assert_problem(&hidden, 404, "project_not_found");
    assert_same_problem(&hidden, "bravo", &absent, "zulu");

    let r = s
        .create_watch(&tok, watch_body("bravo", "https://d.example.com/sneak"))
        .await;
    assert_problem(&r, 404, "project_not_found");

    assert_eq!(
        s.all_watches(&s.admin).await,
        snapshot,
        "scope refusals changed state"
    );
    assert_eq!(s.watch_now(&wb_id).await, wb);
    assert_eq!(s.watch_now(&str_field(&wb_shared, "id")).await, wb_shared);

    let r = s
        .create_watch(&tok, watch_body("alpha", "https://d.example.com/mine"))
        .await;
    assert_eq!(r.expect(201)["project"], "alpha");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_creation_validates_expiry_and_projects() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "a").await;
    let before = tokens(&s).await;
    let past = rfc3339(jiff::Timestamp::now() - secs(3600));

    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "api", "description": "x", "enabled_projects": {"a": past}}),
        )
        .await;
    assert_problem(&r, 422, "invalid_expires_at");

    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "api", "description": "x", "expires_at": past}),
        )
        .await;
    assert_problem(&r, 422, "invalid_expires_at");

    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "api", "description": "x", "expires_at": "next tuesday"}),
        )
        .await;
    assert_problem(&r, 422, "invalid_expires_at");

    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "api", "description": "x", "enabled_projects": {"a": "soon"}}),
        )
        .await;
    assert_problem(&r, 422, "invalid_expires_at");

    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "api", "description": "x", "enabled_projects": {"nope": null}}),
        )
        .await;
    assert_problem(&r, 422, "unknown_project");

    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "superuser", "description": "x"}),
        )
        .await;
    assert_problem(&r, 422, "invalid_body");

    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({"kind": "api", "description": "x", "scopes": ["all"]}),
        )
        .await;
    assert_problem(&r, 422, "invalid_body");

    assert_eq!(
        tokens(&s).await,
        before,
        "refused token creations left a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_project_expiry_lapses_only_that_project() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "a").await;
    s.create_project(&s.admin, "b").await;
    let wa = s.watch(&s.admin, "a", "https://d.example.com/a").await;
    let wb = s.watch(&s.admin, "b", "https://d.example.com/b").await;
    let soon = rfc3339(jiff::Timestamp::now() + secs(3));
    let r = s
        .post(
            &s.admin,
            "/tokens",
            json!({
                "kind": "api",
                "description": "a lapses",
                "enabled_projects": {"a": soon, "b": null},
                "allow_trigger": true,
            }),
        )
        .await;
    let tok = str_field(r.expect(201), "secret");
    let wa_id = str_field(&wa, "id");

    let lapsed = eventually(Duration::from_secs(20), || async {
        let r = s.get_watch(&tok, &wa_id).await;
        (r.status != 200).then_some(r)
    })
    .await
    .expect("project a still visible long after its expiry");
    assert_problem(&lapsed, 404, "watch_not_found");

    assert_eq!(
        s.get_watch(&tok, &str_field(&wb, "id")).await.expect(200),
        &wb
    );
    let listed = s.list(&tok, "").await;
    assert_eq!(listed["watches"], json!([wb]));
    let ps = s.get(&tok, "/projects").await;
    assert_eq!(project_ids(ps.expect(200)), vec!["b".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tokens_are_refused_on_rest() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let w = s.watch(&s.admin, "p", "https://d.example.com/m").await;
    let id = str_field(&w, "id");
    let (_, mcp) = s.create_token("mcp", json!({}), true).await;
    let snapshot = s.all_watches(&s.admin).await;

    let refusals = [
        s.get(&mcp, "/watches").await,
        s.get_watch(&mcp, &id).await,
        s.get(&mcp, "/projects").await,
        s.create_watch(&mcp, watch_body("p", "https://d.example.com/new"))
            .await,
        s.patch(&mcp, &format!("/watches/{id}"), json!({"reason": "x"}))
            .await,
        s.delete(&mcp, &format!("/watches/{id}")).await,
        s.post(&mcp, &format!("/watches/{id}/trigger"), json!({}))
            .await,
    ];
    for r in &refusals {
        assert_problem(r, 403, "mcp_token_not_allowed");
    }
    assert_eq!(s.all_watches(&s.admin).await, snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_tokens_are_refused_on_control_routes() {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    let w = s.watch(&s.admin, "p", "https://d.example.com/r").await;
    let id = str_field(&w, "id");
    let (_, runner) = s.create_token("runner", json!({}), true).await;
    let snapshot = s.all_watches(&s.admin).await;
    let projects_before = projects(&s).await;

    let refusals = [
        s.get(&runner, "/watches").await,
        s.get_watch(&runner, &id).await,
        s.create_watch(&runner, watch_body("p", "https://d.example.com/new"))
            .await,
        s.patch(&runner, &format!("/watches/{id}"), json!({"reason": "x"}))
            .await,
        s.delete(&runner, &format!("/watches/{id}")).await,
        s.post(&runner, &format!("/watches/{id}/trigger"), json!({}))
            .await,
        s.get(&runner, "/projects").await,
        s.post(&runner, "/projects", json!({"id": "r"})).await,
        s.get(&runner, "/tokens").await,
        s.get(&runner, "/audit").await,
    ];
    for r in &refusals {
        assert_problem(r, 403, "runner_token_not_allowed");
    }
    assert_eq!(s.all_watches(&s.admin).await, snapshot);
    assert_eq!(projects(&s).await, projects_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_created_listed_and_validated() {
    let s = TestServer::start().await;
    let r = s
        .post(
            &s.admin,
            "/projects",
            json!({"id": "alpha", "name": "Alpha"}),
        )
        .await;
    let alpha = r.expect(201).clone();
    let loc = r.header("location").expect("Location header");
    assert!(loc.ends_with("/api/v1/projects/alpha"), "Location {loc:?}");
    assert_eq!(alpha["id"], "alpha");
    assert_eq!(alpha["name"], "Alpha");
    ts(&alpha["created_at"]);
    assert!(alpha["created_by"].is_string(), "created_by: {alpha}");
    assert_eq!(s.get(&s.admin, "/projects/alpha").await.expect(200), &alpha);

    let before = projects(&s).await;
    let r = s
        .post(
            &s.admin,
            "/projects",
            json!({"id": "alpha", "name": "Other"}),
        )
        .await;
    assert_problem(&r, 409, "project_exists");
    assert_eq!(projects(&s).await, before);

    let too_long = "a".repeat(64);
    for bad in [
        "Upper",
        "",
        too_long.as_str(),
        "a_b",
        "a b",
        "a.b",
        "é",
        "a/b",
    ] {
        let r = s.post(&s.admin, "/projects", json!({"id": bad})).await;
        assert_problem(&r, 422, "invalid_project_id");
    }
    let r = s
        .post(&s.admin, "/projects", json!({"id": "x", "owner": "me"}))
        .await;
    assert_problem(&r, 422, "invalid_body");
    assert_eq!(
        projects(&s).await,
        before,
        "invalid project ids were stored"
    );

    let longest = "b".repeat(63);
    s.create_project(&s.admin, &longest).await;
    s.create_project(&s.admin, "0-9-z").await;
    let mut ids = project_ids(&projects(&s).await);
    ids.sort();
    let mut expected = vec!["0-9-z".to_string(), "alpha".to_string(), longest];
    expected.sort();
    assert_eq!(ids, expected);

    let r = s.get(&s.admin, "/projects/nope").await;
    assert_problem(&r, 404, "project_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_token_cannot_be_revoked() {
    let s = TestServer::start().await;
    let first = s.admin_token_id().await;
    // Non-admin tokens do not count as a way back in.
    s.create_token("api", json!({}), true).await;

    let r = s.delete(&s.admin, &format!("/tokens/{first}")).await;
    assert_problem(&r, 409, "last_admin_token");
    s.get(&s.admin, "/tokens").await.expect(200);

    let (second, second_secret) = s.create_token("admin", json!({}), true).await;
    let r = s.delete(&second_secret, &format!("/tokens/{first}")).await;
    assert_eq!(r.expect(200)["revoked"], true);
    assert_unauthorized(&s.get(&s.admin, "/tokens").await);

    let r = s.delete(&second_secret, &format!("/tokens/{second}")).await;
    assert_problem(&r, 409, "last_admin_token");
    let r = s.delete(&second_secret, &format!("/tokens/{first}")).await;
    assert_problem(&r, 409, "token_already_revoked");
    s.get(&second_secret, "/tokens").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_file_is_private_and_works() {
    let s = TestServer::start().await;
    let path = s.data_dir().join("admin.token");
    let meta = std::fs::metadata(&path).expect("<data_dir>/admin.token exists");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "admin.token must be readable by the owner only"
    );
    let secret = read_admin_file(&s.data_dir());
    assert_eq!(secret, s.admin, "file and Server::admin_token agree");
    s.get(&secret, "/tokens").await.expect(200);
    s.post(&secret, "/projects", json!({"id": "via-file"}))
        .await
        .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_openapi_need_no_token() {
    let s = TestServer::start().await;
    let r = fetch(s.client.get(s.url("/healthz"))).await;
    assert_eq!(r.expect(200), &json!({"status": "ok"}));

    let r = fetch(s.client.get(s.url("/openapi.json"))).await;
    let doc = r.expect(200);
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3.1"),
        "openapi version: {}",
        doc["openapi"]
    );
    let paths: Vec<&String> = doc["paths"]
        .as_object()
        .expect("paths object")
        .keys()
        .collect();
    for want in [
        "/projects",
        "/projects/{id}",
        "/tokens",
        "/tokens/{id}",
        "/watches",
        "/watches/{id}",
        "/watches/{id}/trigger",
        "/watches/trigger",
        "/audit",
    ] {
        assert!(
            paths.iter().any(|p| p.ends_with(want)),
            "openapi lacks {want}; has {paths:?}"
        );
    }

    // The documents themselves are not mutations, so other verbs are not allowed.
    let r = fetch(s.client.request(Method::POST, s.url("/healthz"))).await;
    assert_problem(&r, 405, "method_not_allowed");
    assert!(r.header("allow").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_is_read_as_exactly_an_rfc_3339_date_time() {
    let s = TestServer::start().await;
    let issue = |expires_at: &str| json!({"kind": "api", "description": "expiry", "expires_at": expires_at});
    for (given, kept) in [
        ("2030-01-01t00:00:00z", "2030-01-01T00:00:00.000Z"),
        ("2030-01-01T05:30:00+05:30", "2030-01-01T00:00:00.000Z"),
        (
            "2030-01-01T00:00:00.123456789123Z",
            "2030-01-01T00:00:00.123Z",
        ),
        ("2030-06-30T23:59:60Z", "2030-06-30T23:59:59.000Z"),
        ("2030-07-01T01:59:60+02:00", "2030-06-30T23:59:59.000Z"),
        ("9999-12-31T23:59:59Z", "9999-12-30T22:00:00.000Z"),
    ] {
        let r = s.post(&s.admin, "/tokens", issue(given)).await;
        assert_eq!(r.expect(201)["expires_at"], kept, "{given}");
    }
    let before = s.get(&s.admin, "/tokens").await.body;
    for given in [
        "2030-01-01 00:00:00Z",
        "2030-01-01T00:00Z",
        "2030-01-01T00:00:00",
        "2030-01-01T00:00:00.Z",
        "2030-01-01T00:00:60Z",
        "2030-02-30T00:00:00Z",
        "2030-01-01T24:00:00Z",
        "2030-01-01T00:00:00+24:00",
        "tomorrow",
    ] {
        let r = s.post(&s.admin, "/tokens", issue(given)).await;
        assert_field_problem(&r, "invalid_expires_at", "expires_at");
        assert!(
            r.body["detail"].as_str().unwrap_or("").contains("RFC 3339"),
            "{given}: {}",
            r.text
        );
        let r = s
            .post(
                &s.admin,
                "/tokens",
                json!({"kind": "api", "enabled_projects": {"x": given}}),
            )
            .await;
        assert_field_problem(&r, "invalid_expires_at", "enabled_projects");
    }
    assert_eq!(s.get(&s.admin, "/tokens").await.body, before);
}
