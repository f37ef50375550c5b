//! Watches over REST: create, validate, list, look up by id or to_uri, patch, delete, trigger.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn interval(w: &Value) -> f64 {
    w["watch_interval"]
        .as_f64()
        .unwrap_or_else(|| panic!("watch_interval is not a number: {w}"))
}

fn version(w: &Value) -> u64 {
    w["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("version is not an integer: {w}"))
}

/// A server with one project `p` and a second project `q`.
async fn server_pq() -> TestServer {
    let s = TestServer::start().await;
    s.create_project(&s.admin, "p").await;
    s.create_project(&s.admin, "q").await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_returns_201_with_location_etag_and_every_field() {
    let s = server_pq().await;
    let before = jiff::Timestamp::now();
    let r = s
        .create_watch(&s.admin, watch_body("p", "https://dest.example.com/a"))
        .await;
    let w = r.expect(201).clone();
    let id = r.id();
    uuid::Uuid::parse_str(&id).expect("watch id is a UUID");

    let loc = r.header("location").expect("Location header");
    assert!(
        loc.ends_with(&format!("/api/v1/watches/{id}")),
        "Location {loc:?} does not point at the watch"
    );
    assert_eq!(r.header("etag"), Some("\"1\""), "ETag of a new watch");

    for key in [
        "id",
        "project",
        "source",
        "to_uri",
        "watch_interval",
        "is_active",
        "reason",
        "instruction",
        "created_at",
        "created_by",
        "updated_at",
        "next_run_at",
        "last_run",
        "consecutive_failures",
        "version",
    ] {
        assert!(w.get(key).is_some(), "watch lacks {key:?}: {w}");
    }
    assert_eq!(w["project"], "p");
    assert_eq!(
        w["source"],
        watch_body("p", "https://dest.example.com/a")["source"]
    );
    assert_eq!(w["to_uri"], "https://dest.example.com/a");
    assert_eq!(interval(&w), LONG_INTERVAL as f64);
    assert_eq!(w["is_active"], true);
    assert_eq!(w["reason"], Value::Null);
    assert_eq!(w["instruction"], Value::Null);
    assert_eq!(w["last_run"], Value::Null);
    assert_eq!(w["consecutive_failures"], 0);
    assert_eq!(version(&w), 1);
    assert!(w["created_by"].is_string(), "created_by: {w}");

    let created = ts(&w["created_at"]);
    let updated = ts(&w["updated_at"]);
    let next = ts(&w["next_run_at"]);
    // Second-level slack: the server may truncate sub-second precision.
    assert!(
        created >= before - secs(1),
        "created_at {created} before request start {before}"
    );
    assert!(updated >= created, "updated_at precedes created_at");
    assert!(next > created, "an active watch is due after its creation");

    // The resource behind Location is the one just returned.
    let got = fetch(s.client.get(loc_url(&s, loc)).bearer_auth(&s.admin)).await;
    assert_eq!(got.expect(200), &w);
    assert_eq!(got.header("etag"), Some("\"1\""));
}

fn loc_url(s: &TestServer, loc: &str) -> String {
    if loc.starts_with("http") {
        loc.to_string()
    } else {
        format!("{}{loc}", s.base)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_honours_optional_fields() {
    let s = server_pq().await;
    let mut body = watch_body("p", "https://dest.example.com/opt");
    body["reason"] = json!("nightly mirror");
    body["instruction"] = json!("copy everything");
    body["is_active"] = json!(false);
    let r = s.create_watch(&s.admin, body).await;
    let w = r.expect(201);
    assert_eq!(w["reason"], "nightly mirror");
    assert_eq!(w["instruction"], "copy everything");
    assert_eq!(w["is_active"], false);
    assert_eq!(
        w["next_run_at"],
        Value::Null,
        "paused watches have no next run"
    );
    assert_eq!(interval(w), LONG_INTERVAL as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_uri_is_unique_within_a_project_even_against_paused_watches() {
    let s = server_pq().await;
    let u = "https://dest.example.com/unique";
    let first = s.watch(&s.admin, "p", u).await;
    let before = s.all_watches(&s.admin).await;

    let mut again = watch_body("p", u);
    again["source"] = json!("https://other-source.example.com/x");
    let r = s.create_watch(&s.admin, again.clone()).await;
    assert_problem(&r, 409, "to_uri_taken");
    assert_eq!(s.all_watches(&s.admin).await, before);

    let id = str_field(&first, "id");
    let r = s
        .patch(
            &s.admin,
            &format!("/watches/{id}"),
            json!({"is_active": false}),
        )
        .await;
    r.expect(200);
    let before = s.all_watches(&s.admin).await;
    let r = s.create_watch(&s.admin, again).await;
    assert_problem(&r, 409, "to_uri_taken");
    assert_eq!(s.all_watches(&s.admin).await, before);

    // Uniqueness is per project.
    let other = s.watch(&s.admin, "q", u).await;
    assert_eq!(other["project"], "q");
    assert_ne!(other["id"], first["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_out_of_range_is_422_naming_the_field() {
    let s = server_pq().await;
    for bad in [
        json!(0),
        json!(-5),
        json!(-0.5),
        json!(525_601),
        json!(1_000_000_000u64),
    ] {
        let mut body = watch_body("p", "https://dest.example.com/i");
        body["watch_interval"] = bad.clone();
        let r = s.create_watch(&s.admin, body).await;
        assert_field_problem(&r, "invalid_interval", "watch_interval");
        assert!(
            s.all_watches(&s.admin).await.is_empty(),
            "interval {bad} created a watch"
        );
    }

    // The upper bound itself is allowed.
    let mut body = watch_body("p", "https://dest.example.com/max");
    body["watch_interval"] = json!(525_600);
    s.create_watch(&s.admin, body).await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_or_mistyped_interval_is_invalid_body() {
    let s = server_pq().await;
    // 1e400 is valid JSON syntax but no finite f64; serde_json cannot even emit it.
    let raw = r#"{"project":"p","source":"https://s.example.com/","to_uri":"https://d.example.com/","watch_interval":1e400}"#;
    let r = s.send_raw(Method::POST, &s.admin, "/watches", raw).await;
    assert_problem(&r, 422, "invalid_body");

    let mut body = watch_body("p", "https://dest.example.com/t");
    body["watch_interval"] = json!("ten");
    let r = s.create_watch(&s.admin, body).await;
    assert_field_problem(&r, "invalid_body", "watch_interval");
    assert_eq!(
        r.body["detail"],
        json!("watch_interval: expected a number, got the string \"ten\""),
        "the detail names the field and what it should be: {}",
        r.text
    );
    // A PATCH names it the same way, and changes nothing.
    let w = s
        .create_watch(&s.admin, watch_body("p", "https://dest.example.com/k"))
        .await;
    let id = str_field(w.expect(201), "id");
    let before = s.watch_now(&id).await;
    let r = s
        .send_raw(
            Method::PATCH,
            &s.admin,
            &format!("/watches/{id}"),
            r#"{"watch_interval": "NaN"}"#,
        )
        .await;
    assert_field_problem(&r, "invalid_body", "watch_interval");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("watch_interval: expected a number"),
        "{}",
        r.text
    );
    let r = s
        .patch(
            &s.admin,
            &format!("/watches/{id}"),
            json!({"is_active": "yes"}),
        )
        .await;
    assert_field_problem(&r, "invalid_body", "is_active");
    assert_eq!(s.watch_now(&id).await, before);
    s.delete(&s.admin, &format!("/watches/{id}"))
        .await
        .expect(200);

    let mut body = watch_body("p", "https://dest.example.com/n");
    body["watch_interval"] = Value::Null;
    let r = s.create_watch(&s.admin, body).await;
    assert!(
        r.status == 422,
        "null interval must be refused with 422, got {} {}",
        r.status,
        r.text
    );
    assert!(s.all_watches(&s.admin).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_below_the_server_floor_is_refused() {
    let s = TestServer::start_with(|cfg| cfg.watch_interval_floor_secs = 120).await;
    s.create_project(&s.admin, "p").await;
    let mut body = watch_body("p", "https://dest.example.com/f");
    body["watch_interval"] = json!(1);
    let r = s.create_watch(&s.admin, body.clone()).await;
    assert_field_problem(&r, "invalid_interval", "watch_interval");
    assert!(s.all_watches(&s.admin).await.is_empty());

    // Exactly the floor (2 minutes = 120 s) is accepted.
    body["watch_interval"] = json!(2);
    let w = s.create_watch(&s.admin, body).await;
    let w = w.expect(201);

    // The floor applies to PATCH as well.
    let id = str_field(w, "id");
    let before = s.watch_now(&id).await;
    let r = s
        .patch(
            &s.admin,
            &format!("/watches/{id}"),
            json!({"watch_interval": 1}),
        )
        .await;
    assert_field_problem(&r, "invalid_interval", "watch_interval");
    assert_eq!(s.watch_now(&id).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_to_uri_must_be_absolute() {
    let s = server_pq().await;
    for bad in ["not a uri", "/relative/path", "relative", ""] {
        let mut body = watch_body("p", "https://dest.example.com/ok");
        body["source"] = json!(bad);
        let r = s.create_watch(&s.admin, body).await;
        assert_field_problem(&r, "invalid_source", "source");

        let mut body = watch_body("p", "https://dest.example.com/ok");
        body["to_uri"] = json!(bad);
        let r = s.create_watch(&s.admin, body).await;
        assert_field_problem(&r, "invalid_to_uri", "to_uri");
    }
    assert!(s.all_watches(&s.admin).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_missing_fields_and_bad_json_are_refused() {
    let s = server_pq().await;

    let mut body = watch_body("p", "https://dest.example.com/u");
    body["colour"] = json!("blue");
    let r = s.create_watch(&s.admin, body).await;
    let b = assert_problem(&r, 422, "invalid_body");
    assert!(
        b["detail"].as_str().unwrap().contains("colour"),
        "detail should name the unknown field: {}",
        r.text
    );
    assert_eq!(b["field"], "colour", "{}", r.text);

    for missing in ["project", "source", "to_uri", "watch_interval"] {
        let mut body = watch_body("p", "https://dest.example.com/m");
        body.as_object_mut().unwrap().remove(missing);
        let r = s.create_watch(&s.admin, body).await;
        assert_field_problem(&r, "invalid_body", missing);
        assert_eq!(
            r.body["detail"],
            json!(format!("{missing}: is required")),
            "{}",
            r.text
        );
    }

    let r = s
        .send_raw(Method::POST, &s.admin, "/watches", "{not json")
        .await;
    assert_problem(&r, 400, "invalid_json");

    let r = s
        .create_watch(&s.admin, watch_body("nope", "https://dest.example.com/np"))
        .await;
    assert_problem(&r, 404, "project_not_found");

    assert!(s.all_watches(&s.admin).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_project_and_active_only() {
    let s = server_pq().await;
    let mut p_ids = Vec::new();
    for i in 0..4 {
        let w = s
            .watch(&s.admin, "p", &format!("https://dest.example.com/p{i}"))
            .await;
        p_ids.push(str_field(&w, "id"));
    }
    let q = s.watch(&s.admin, "q", "https://dest.example.com/q0").await;
    s.patch(
        &s.admin,
        &format!("/watches/{}", p_ids[1]),
        json!({"is_active": false}),
    )
    .await
    .expect(200);

    let ids = |page: &Value| -> Vec<String> {
        page["watches"]
            .as_array()
            .expect("watches array")
            .iter()
            .map(|w| str_field(w, "id"))
            .collect()
    };

    let all = s.list(&s.admin, "").await;
    assert_eq!(all["total"], 5);
    assert_eq!(all["next_cursor"], Value::Null);
    let mut expected = p_ids.clone();
    expected.push(str_field(&q, "id"));
    assert_eq!(ids(&all), expected, "oldest first");

    let p = s.list(&s.admin, "?project=p").await;
    assert_eq!(p["total"], 4);
    assert_eq!(ids(&p), p_ids);

    let active = s.list(&s.admin, "?project=p&active_only=true").await;
    assert_eq!(active["total"], 3);
    let expected: Vec<String> = p_ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(ids(&active), expected);
    assert!(
        active["watches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["is_active"] == true)
    );

    let both = s.list(&s.admin, "?active_only=false&project=q").await;
    assert_eq!(both["total"], 1);

    let r = s.get(&s.admin, "/watches?project=nope").await;
    assert!(
        r.status == 404 || (r.status == 200 && r.body["total"] == 0),
        "listing an unknown project: {} {}",
        r.status,
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paginates_with_cursor_and_limit() {
    let s = server_pq().await;
    let mut created = Vec::new();
    for i in 0..7 {
        let w = s
            .watch(&s.admin, "p", &format!("https://dest.example.com/page/{i}"))
            .await;
        created.push(str_field(&w, "id"));
    }
    // Noise in another project must not leak into a project-filtered listing.
    s.watch(&s.admin, "q", "https://dest.example.com/noise")
        .await;

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut query = "?project=p&limit=3".to_string();
    loop {
        let page = s.list(&s.admin, &query).await;
        assert_eq!(page["total"], 7, "total counts all matches on every page");
        let ws = page["watches"].as_array().unwrap();
        sizes.push(ws.len());
        seen.extend(ws.iter().map(|w| str_field(w, "id")));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?project=p&limit=3&cursor={}", enc(c)),
            None => break,
        }
        assert!(sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(
        seen, created,
        "pages are oldest first, without gaps or duplicates"
    );
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 7);

    let r = s.get(&s.admin, "/watches?limit=abc").await;
    assert_problem(&r, 400, "invalid_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_by_to_uri_returns_the_single_watch() {
    let s = server_pq().await;
    let u = "https://dest.example.com/by-uri?x=1&y=2";
    let w = s.watch(&s.admin, "p", u).await;
    s.watch(&s.admin, "p", "https://dest.example.com/other")
        .await;

    let r = s
        .get(&s.admin, &format!("/watches{}", qs(&[("to_uri", u)])))
        .await;
    assert_eq!(r.expect(200), &w, "a single watch object, not a list");

    let r = s
        .get(
            &s.admin,
            &format!("/watches{}", qs(&[("to_uri", u), ("project", "p")])),
        )
        .await;
    assert_eq!(r.expect(200), &w);

    let r = s
        .get(
            &s.admin,
            &format!("/watches{}", qs(&[("to_uri", u), ("project", "q")])),
        )
        .await;
    assert_problem(&r, 404, "watch_not_found");

    let r = s
        .get(
            &s.admin,
            &format!(
                "/watches{}",
                qs(&[("to_uri", "https://dest.example.com/none")])
            ),
        )
        .await;
    assert_problem(&r, 404, "watch_not_found");

    // A paused watch is hidden from active_only lookups but still found otherwise.
    let id = str_field(&w, "id");
    s.patch(
        &s.admin,
        &format!("/watches/{id}"),
        json!({"is_active": false}),
    )
    .await
    .expect(200);
    let r = s
        .get(
            &s.admin,
            &format!("/watches{}", qs(&[("to_uri", u), ("active_only", "true")])),
        )
        .await;
    assert_problem(&r, 404, "watch_not_found");
    let r = s
        .get(&s.admin, &format!("/watches{}", qs(&[("to_uri", u)])))
        .await;
    assert_eq!(r.expect(200)["id"], json!(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_uri_in_two_projects_is_ambiguous_until_a_project_is_given() {
    let s = server_pq().await;
    let u = "https://dest.example.com/shared";
    let wp = s.watch(&s.admin, "p", u).await;
    let wq = s.watch(&s.admin, "q", u).await;
    let by_uri = format!("/watches{}", qs(&[("to_uri", u)]));
    let snapshot = s.all_watches(&s.admin).await;

    let r = s.get(&s.admin, &by_uri).await;
    assert_problem(&r, 400, "ambiguous_to_uri");
    let r = s.patch(&s.admin, &by_uri, json!({"reason": "x"})).await;
    assert_problem(&r, 400, "ambiguous_to_uri");
    let r = s.delete(&s.admin, &by_uri).await;
    assert_problem(&r, 400, "ambiguous_to_uri");
    let r = s
        .post(
            &s.admin,
            &format!("/watches/trigger{}", qs(&[("to_uri", u)])),
            json!({}),
        )
        .await;
    assert_problem(&r, 400, "ambiguous_to_uri");
    assert_eq!(
        s.all_watches(&s.admin).await,
        snapshot,
        "refusals changed state"
    );

    // An id settles which watch is meant; a to_uri beside it only has to agree.
    for w in [&wp, &wq] {
        let both = format!("/watches/{}{}", str_field(w, "id"), qs(&[("to_uri", u)]));
        assert_eq!(s.get(&s.admin, &both).await.expect(200), w);
    }
    let both = format!("/watches/{}{}", str_field(&wq, "id"), qs(&[("to_uri", u)]));
    let r = s.patch(&s.admin, &both, json!({"reason": "by id"})).await;
    assert_eq!(r.expect(200)["reason"], "by id");
    let wq = s.watch_now(&str_field(&wq, "id")).await;
    let other = format!(
        "/watches/{}{}",
        str_field(&wq, "id"),
        qs(&[("to_uri", "https://dest.example.com/elsewhere")])
    );
    assert_problem(&s.get(&s.admin, &other).await, 404, "watch_not_found");

    for (proj, w) in [("p", &wp), ("q", &wq)] {
        let r = s
            .get(
                &s.admin,
                &format!("/watches{}", qs(&[("to_uri", u), ("project", proj)])),
            )
            .await;
        assert_eq!(r.expect(200), w);
    }

    let r = s
        .patch(
            &s.admin,
            &format!("/watches{}", qs(&[("to_uri", u), ("project", "q")])),
            json!({"reason": "only q"}),
        )
        .await;
    let patched = r.expect(200);
    assert_eq!(patched["id"], wq["id"]);
    assert_eq!(patched["reason"], "only q");
    assert_eq!(s.watch_now(&str_field(&wp, "id")).await, wp, "p untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_and_to_uri_keys_must_agree() {
    let s = server_pq().await;
    let ua = "https://dest.example.com/a";
    let ub = "https://dest.example.com/b";
    let a = s.watch(&s.admin, "p", ua).await;
    let b = s.watch(&s.admin, "p", ub).await;
    let a_id = str_field(&a, "id");
    let same = format!("/watches/{a_id}{}", qs(&[("to_uri", ua)]));
    let conflict = format!("/watches/{a_id}{}", qs(&[("to_uri", ub)]));

    assert_eq!(s.get(&s.admin, &same).await.expect(200), &a);
    let r = s.get(&s.admin, &conflict).await;
    assert_problem(&r, 400, "watch_keys_conflict");

    let snapshot = s.all_watches(&s.admin).await;
    let r = s.patch(&s.admin, &conflict, json!({"reason": "x"})).await;
    assert_problem(&r, 400, "watch_keys_conflict");
    let r = s.delete(&s.admin, &conflict).await;
    assert_problem(&r, 400, "watch_keys_conflict");
    assert_eq!(
        s.all_watches(&s.admin).await,
        snapshot.clone(),
        "a key conflict changed state"
    );

    // Neither key: nothing to address.
    let r = s.patch(&s.admin, "/watches", json!({"reason": "x"})).await;
    assert_problem(&r, 400, "watch_key_required");
    let r = s.delete(&s.admin, "/watches").await;
    assert_problem(&r, 400, "watch_key_required");
    let r = s.post(&s.admin, "/watches/trigger", json!({})).await;
    assert_problem(&r, 400, "watch_key_required");
    assert_eq!(s.all_watches(&s.admin).await, snapshot);

    // Same watch named twice is fine for every verb.
    let r = s.patch(&s.admin, &same, json!({"reason": "agreed"})).await;
    assert_eq!(r.expect(200)["reason"], "agreed");

    // ?to_uri alone addresses PATCH and DELETE.
    let by_b = format!("/watches{}", qs(&[("to_uri", ub)]));
    let r = s
        .patch(&s.admin, &by_b, json!({"instruction": "do b"}))
        .await;
    let pb = r.expect(200);
    assert_eq!(pb["id"], b["id"]);
    assert_eq!(pb["instruction"], "do b");
    let r = s.delete(&s.admin, &by_b).await;
    assert_eq!(
        r.expect(200),
        &json!({"id": b["id"], "to_uri": ub, "deleted": true})
    );
    assert_problem(
        &s.get_watch(&s.admin, &str_field(&b, "id")).await,
        404,
        "watch_not_found",
    );

    let r = s.delete(&s.admin, &same).await;
    assert_eq!(
        r.expect(200),
        &json!({"id": a_id, "to_uri": ua, "deleted": true})
    );
    assert!(s.all_watches(&s.admin).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_keeps_interval_and_resume_schedules_from_now() {
    let s = server_pq().await;
    let mut body = watch_body("p", "https://dest.example.com/pr");
    body["watch_interval"] = json!(30);
    let r = s.create_watch(&s.admin, body).await;
    let id = r.id();
    let path = format!("/watches/{id}");

    let r = s.patch(&s.admin, &path, json!({"is_active": false})).await;
    let paused = r.expect(200).clone();
    assert_eq!(paused["is_active"], false);
    assert_eq!(interval(&paused), 30.0, "pausing keeps the interval");
    assert_eq!(paused["next_run_at"], Value::Null);
    assert_eq!(version(&paused), 2);
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(s.watch_now(&id).await, paused);

    let before = jiff::Timestamp::now();
    let r = s.patch(&s.admin, &path, json!({"is_active": true})).await;
    let after = jiff::Timestamp::now();
    let resumed = r.expect(200).clone();
    assert_eq!(resumed["is_active"], true);
    assert_eq!(interval(&resumed), 30.0);
    assert_eq!(version(&resumed), 3);
    let next = ts(&resumed["next_run_at"]);
    let lo = before + secs(30 * 60 - 60);
    let hi = after + secs(30 * 60 + 60);
    assert!(
        lo <= next && next <= hi,
        "next_run_at {next} not about now + 30 min (window {lo} .. {hi})"
    );
    assert!(ts(&resumed["updated_at"]) >= ts(&paused["updated_at"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_refusals_change_nothing() {
    let s = server_pq().await;
    let w = s.watch(&s.admin, "p", "https://dest.example.com/pf").await;
    let id = str_field(&w, "id");
    let path = format!("/watches/{id}");

    let r = s.patch(&s.admin, &path, json!({})).await;
    assert_problem(&r, 422, "nothing_to_change");
    assert_eq!(s.watch_now(&id).await, w);

    let r = s
        .patch(&s.admin, &path, json!({"reason": "x", "colour": "blue"}))
        .await;
    assert_problem(&r, 422, "invalid_body");
    assert_eq!(s.watch_now(&id).await, w);

    // Identity fields are not patchable.
    let r = s
        .patch(
            &s.admin,
            &path,
            json!({"to_uri": "https://dest.example.com/moved"}),
        )
        .await;
    assert_problem(&r, 422, "invalid_body");
    assert_eq!(s.watch_now(&id).await, w);

    for bad in [json!(0), json!(-1), json!(525_601)] {
        let r = s
            .patch(&s.admin, &path, json!({"watch_interval": bad}))
            .await;
        assert_field_problem(&r, "invalid_interval", "watch_interval");
        assert_eq!(s.watch_now(&id).await, w);
    }

    let r = s.patch(&s.admin, &path, json!({"is_active": "yes"})).await;
    assert_problem(&r, 422, "invalid_body");
    assert_eq!(s.watch_now(&id).await, w);

    let r = s.send_raw(Method::PATCH, &s.admin, &path, "nope").await;
    assert_problem(&r, 400, "invalid_json");
    assert_eq!(s.watch_now(&id).await, w);

    let missing = uuid::Uuid::now_v7();
    let r = s
        .patch(
            &s.admin,
            &format!("/watches/{missing}"),
            json!({"reason": "x"}),
        )
        .await;
    assert_problem(&r, 404, "watch_not_found");
    assert_eq!(s.all_watches(&s.admin).await, vec![w]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_guards_against_stale_versions() {
    let s = server_pq().await;
    let w = s.watch(&s.admin, "p", "https://dest.example.com/im").await;
    let id = str_field(&w, "id");
    let path = format!("/watches/{id}");

    let r = fetch(
        s.call(Method::PATCH, &s.admin, &path)
            .header("if-match", "\"1\"")
            .json(&json!({"reason": "first"})),
    )
    .await;
    let v2 = r.expect(200).clone();
    assert_eq!(version(&v2), 2);
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(v2["reason"], "first");

    let r = fetch(
        s.call(Method::PATCH, &s.admin, &path)
            .header("if-match", "\"1\"")
            .json(&json!({"reason": "stale"})),
    )
    .await;
    assert_problem(&r, 412, "precondition_failed");
    assert_eq!(
        s.watch_now(&id).await,
        v2,
        "a stale If-Match changed the watch"
    );

    let r = fetch(
        s.call(Method::PATCH, &s.admin, &path)
            .header("if-match", "\"2\"")
            .json(&json!({"watch_interval": 90})),
    )
    .await;
    let v3 = r.expect(200);
    assert_eq!(version(v3), 3);
    assert_eq!(interval(v3), 90.0);
    assert_eq!(v3["reason"], "first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_clears_reason_and_instruction() {
    let s = server_pq().await;
    let mut body = watch_body("p", "https://dest.example.com/nc");
    body["reason"] = json!("why");
    body["instruction"] = json!("how");
    let r = s.create_watch(&s.admin, body).await;
    let id = r.id();
    let path = format!("/watches/{id}");

    let r = s.patch(&s.admin, &path, json!({"reason": null})).await;
    let w = r.expect(200);
    assert_eq!(w["reason"], Value::Null);
    assert_eq!(w["instruction"], "how", "an absent field is left alone");

    let r = s.patch(&s.admin, &path, json!({"instruction": null})).await;
    let w = r.expect(200);
    assert_eq!(w["instruction"], Value::Null);
    assert_eq!(version(w), 3);
    assert_eq!(&s.watch_now(&id).await, w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_watch_and_frees_its_to_uri() {
    let s = server_pq().await;
    let u = "https://dest.example.com/del";
    let w = s.watch(&s.admin, "p", u).await;
    let keep = s
        .watch(&s.admin, "p", "https://dest.example.com/keep")
        .await;
    let id = str_field(&w, "id");

    let r = s.delete(&s.admin, &format!("/watches/{id}")).await;
    assert_eq!(
        r.expect(200),
        &json!({"id": id, "to_uri": u, "deleted": true})
    );
    assert_problem(&s.get_watch(&s.admin, &id).await, 404, "watch_not_found");
    let r = s
        .get(&s.admin, &format!("/watches{}", qs(&[("to_uri", u)])))
        .await;
    assert_problem(&r, 404, "watch_not_found");
    assert_eq!(s.all_watches(&s.admin).await, vec![keep.clone()]);
    assert_eq!(s.list(&s.admin, "").await["total"], 1);

    let r = s.delete(&s.admin, &format!("/watches/{id}")).await;
    assert_problem(&r, 404, "watch_not_found");
    let r = s
        .post(&s.admin, &format!("/watches/{id}/trigger"), json!({}))
        .await;
    assert_problem(&r, 404, "watch_not_found");

    let again = s.watch(&s.admin, "p", u).await;
    assert_ne!(again["id"], json!(id), "a new watch, not a resurrection");
    assert_eq!(version(&again), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_schedules_by_id_and_by_to_uri_even_when_paused() {
    let s = server_pq().await;
    let ua = "https://dest.example.com/ta";
    let ub = "https://dest.example.com/tb";
    let a = s.watch(&s.admin, "p", ua).await;
    let mut body = watch_body("p", ub);
    body["is_active"] = json!(false);
    let b = s.create_watch(&s.admin, body).await.expect(201).clone();
    let a_id = str_field(&a, "id");
    let b_id = str_field(&b, "id");

    let r = s
        .post(&s.admin, &format!("/watches/{a_id}/trigger"), json!({}))
        .await;
    assert_eq!(
        r.expect(202),
        &json!({"id": a_id, "to_uri": ua, "scheduled": true})
    );

    let r = s
        .post(
            &s.admin,
            &format!(
                "/watches/trigger{}",
                qs(&[("to_uri", ub), ("project", "p")])
            ),
            json!({}),
        )
        .await;
    assert_eq!(
        r.expect(202),
        &json!({"id": b_id, "to_uri": ub, "scheduled": true})
    );

    // Without a body at all, too: triggers take no input.
    let r = fetch(s.call(
        Method::POST,
        &s.admin,
        &format!("/watches/trigger{}", qs(&[("to_uri", ua)])),
    ))
    .await;
    assert_eq!(r.expect(202)["id"], json!(a_id));

    for id in [&a_id, &b_id] {
        let w = eventually(Duration::from_secs(10), || async {
            let w = s.watch_now(id).await;
            (!w["last_run"].is_null()).then_some(w)
        })
        .await
        .unwrap_or_else(|| panic!("last_run of {id} stayed null after a trigger"));
        let lr = &w["last_run"];
        ts(&lr["at"]);
        assert_eq!(lr["build_id"], Value::Null);
        assert_eq!(lr["outcome"], "triggered");
        assert_eq!(lr["manual"], true);
    }
    let b_now = s.watch_now(&b_id).await;
    assert_eq!(
        b_now["is_active"], false,
        "a trigger does not resume a paused watch"
    );
    assert_eq!(b_now["next_run_at"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_methods_unknown_routes_and_bad_ids() {
    let s = server_pq().await;
    let w = s.watch(&s.admin, "p", "https://dest.example.com/m").await;
    let id = str_field(&w, "id");

    let r = fetch(
        s.call(Method::PUT, &s.admin, &format!("/watches/{id}"))
            .json(&watch_body("p", "https://dest.example.com/m")),
    )
    .await;
    assert_problem(&r, 405, "method_not_allowed");
    let allow = r
        .header("allow")
        .expect("405 must carry Allow")
        .to_uppercase();
    for m in ["GET", "PATCH", "DELETE"] {
        assert!(allow.contains(m), "Allow {allow:?} lacks {m}");
    }
    assert!(!allow.contains("PUT"), "Allow {allow:?} lists PUT");

    let r = fetch(s.call(Method::GET, &s.admin, &format!("/watches/{id}/trigger"))).await;
    assert_problem(&r, 405, "method_not_allowed");
    assert!(
        r.header("allow")
            .unwrap_or("")
            .to_uppercase()
            .contains("POST"),
        "Allow on trigger: {:?}",
        r.header("allow")
    );

    let r = s.get(&s.admin, "/no-such-thing").await;
    assert_problem(&r, 404, "route_not_found");
    let r = s.get(&s.admin, &format!("/watches/{id}/nope")).await;
    assert_problem(&r, 404, "route_not_found");

    let r = s.get(&s.admin, "/watches/not-a-uuid").await;
    assert_problem(&r, 400, "invalid_watch_id");
    let r = s
        .patch(&s.admin, "/watches/not-a-uuid", json!({"reason": "x"}))
        .await;
    assert_problem(&r, 400, "invalid_watch_id");
    let r = s.delete(&s.admin, "/watches/12345").await;
    assert_problem(&r, 400, "invalid_watch_id");
    let r = s.post(&s.admin, "/watches/xyz/trigger", json!({})).await;
    assert_problem(&r, 400, "invalid_watch_id");

    let missing = uuid::Uuid::now_v7();
    assert_problem(
        &s.get_watch(&s.admin, &missing.to_string()).await,
        404,
        "watch_not_found",
    );
    assert_eq!(s.all_watches(&s.admin).await, vec![w]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413() {
    let s = server_pq().await;
    let mut body = watch_body("p", "https://dest.example.com/big");
    body["reason"] = json!("x".repeat(2 * 1024 * 1024));
    let r = s.create_watch(&s.admin, body).await;
    assert_problem(&r, 413, "payload_too_large");
    assert!(s.all_watches(&s.admin).await.is_empty());
}

/// A grab bag of hostile requests: whatever the answer, it is a problem document
/// and never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_yield_5xx() {
    let s = server_pq().await;
    let w = s.watch(&s.admin, "p", "https://dest.example.com/x").await;
    let id = str_field(&w, "id");
    let snapshot = s.all_watches(&s.admin).await;

    let raw_cases: Vec<(Method, String, &str)> = vec![
        (Method::POST, "/watches".into(), ""),
        (Method::POST, "/watches".into(), "null"),
        (Method::POST, "/watches".into(), "[]"),
        (Method::POST, "/watches".into(), "\"str\""),
        (Method::POST, "/watches".into(), r#"{"project":1}"#),
        (
            Method::POST,
            "/watches".into(),
            "{\"project\":\"p\",\"to_uri\":\"\u{0}\"}",
        ),
        (Method::PATCH, format!("/watches/{id}"), "[1,2]"),
        (
            Method::PATCH,
            format!("/watches/{id}"),
            r#"{"watch_interval":1e400}"#,
        ),
        (
            Method::PATCH,
            format!("/watches/{id}"),
            r#"{"watch_interval":"NaN"}"#,
        ),
        (Method::POST, "/projects".into(), r#"{"id":{}}"#),
        (Method::POST, "/tokens".into(), r#"{"kind":"root"}"#),
        (
            Method::POST,
            "/tokens".into(),
            r#"{"kind":"api","expires_at":"yesterday"}"#,
        ),
    ];
    for (m, path, raw) in raw_cases {
        let r = s.send_raw(m.clone(), &s.admin, &path, raw).await;
        assert!(
            (400..500).contains(&r.status),
            "{m} {path} {raw:?} -> {} {}",
            r.status,
            r.text
        );
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("application/problem+json"),
            "{m} {path} {raw:?}: not a problem document: {}",
            r.text
        );
    }

    let get_cases = [
        "/watches?limit=-1".to_string(),
        "/watches?limit=99999999999999999999".to_string(),
        "/watches?cursor=%FF%FE".to_string(),
        "/watches?cursor=garbage".to_string(),
        "/watches?active_only=maybe".to_string(),
        "/watches?to_uri=".to_string(),
        format!("/watches/{id}?to_uri=%00"),
        "/audit?since_seq=-3".to_string(),
        "/audit?outcome=perhaps".to_string(),
    ];
    for path in get_cases {
        let r = s.get(&s.admin, &path).await;
        assert!(r.status < 500, "GET {path} -> {} {}", r.status, r.text);
    }

    // Wrong content type on a JSON endpoint.
    let r = fetch(
        s.call(Method::POST, &s.admin, "/watches")
            .header("content-type", "text/plain")
            .body(watch_body("p", "https://dest.example.com/ct").to_string()),
    )
    .await;
    assert!(r.status < 500, "text/plain body -> {} {}", r.status, r.text);

    assert_eq!(
        s.all_watches(&s.admin).await.len(),
        snapshot.len() + usize::from(r.status == 201)
    );
}

/// The last audit entry, which a refused change must have written.
async fn last_entry(s: &TestServer) -> Value {
    let head = s.audit_head().await;
    s.audit_entries(head - 1)
        .await
        .pop()
        .expect("an audit entry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_if_match_is_400_invalid_header_and_changes_nothing() {
    let s = server_pq().await;
    let w = s.watch(&s.admin, "p", "https://dest.example.com/mim").await;
    let id = str_field(&w, "id");
    for value in ["garbage", "\"abc\"", "W/\"\"", "\"1\", \"2\"", "1.0"] {
        let head = s.audit_head().await;
        let r = fetch(
            s.call(Method::PATCH, &s.admin, &format!("/watches/{id}"))
                .header("if-match", value)
                .json(&json!({"reason": "nope"})),
        )
        .await;
        let b = assert_problem(&r, 400, "invalid_header");
        assert!(
            b["detail"].as_str().unwrap_or("").contains("If-Match"),
            "{value}: {}",
            r.text
        );
        assert_eq!(s.watch_now(&id).await, w, "{value} changed the watch");
        // Refused as a malformed request, and audited as one.
        assert_eq!(s.audit_head().await, head + 1, "{value}");
        let entry = last_entry(&s).await;
        assert_eq!(entry["code"], "invalid_header", "{entry}");
    }
    // The forms reeve writes, and `*`, are read: a stale one fails the precondition.
    for (value, status) in [("\"7\"", 412), ("W/\"7\"", 412), ("7", 412), ("*", 200)] {
        let r = fetch(
            s.call(Method::PATCH, &s.admin, &format!("/watches/{id}"))
                .header("if-match", value)
                .json(&json!({"reason": "star"})),
        )
        .await;
        assert_eq!(r.status, status, "{value}: {}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_that_would_change_nothing_is_refused_by_name() {
    let s = server_pq().await;
    let w = s.watch(&s.admin, "p", "https://dest.example.com/nn").await;
    let id = str_field(&w, "id");
    for (field, expected) in [("is_active", "a boolean"), ("watch_interval", "a number")] {
        let r = s
            .patch(
                &s.admin,
                &format!("/watches/{id}"),
                json!({field: null, "reason": "x"}),
            )
            .await;
        assert_field_problem(&r, "invalid_body", field);
        assert!(
            r.body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("{field}: expected {expected}"))),
            "{}",
            r.text
        );
        assert_eq!(s.watch_now(&id).await, w, "{field}: null changed the watch");
    }
    let r = s
        .patch(&s.admin, "/projects/p", json!({"name": null}))
        .await;
    assert_field_problem(&r, "invalid_body", "name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_and_cursors_are_read_in_the_form_reeve_writes_them() {
    let s = server_pq().await;
    let w = s.watch(&s.admin, "p", "https://dest.example.com/ids").await;
    let id = str_field(&w, "id");
    let simple = id.replace('-', "");
    let braced = format!("{{{id}}}");
    for other in [&simple, &braced, &id.to_uppercase().replace('-', "")] {
        let r = s.get(&s.admin, &format!("/watches/{other}")).await;
        assert_problem(&r, 400, "invalid_watch_id");
        let r = s.get(&s.admin, &format!("/watches?cursor={other}")).await;
        assert_problem(&r, 400, "invalid_query");
    }
    s.get(&s.admin, &format!("/watches/{id}")).await.expect(200);
    // A listing filter that cannot be a project is refused, not answered with nothing.
    for bad in ["Docs", "a_b", &"p".repeat(64)] {
        let r = s.get(&s.admin, &format!("/watches?project={bad}")).await;
        assert_problem(&r, 400, "invalid_query");
        let r = s.get(&s.admin, &format!("/audit?project={bad}")).await;
        assert_problem(&r, 400, "invalid_query");
    }
    assert_eq!(
        s.list(&s.admin, "?project=nope").await["watches"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_json_and_answers_what_the_caller_accepts() {
    let s = server_pq().await;
    let before = s.all_watches(&s.admin).await;
    let body = watch_body("p", "https://dest.example.com/media").to_string();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let head = s.audit_head().await;
        let r = fetch(
            s.call(Method::POST, &s.admin, "/watches")
                .header("content-type", ct)
                .body(body.clone()),
        )
        .await;
        assert_problem(&r, 415, "unsupported_media_type");
        assert_eq!(s.all_watches(&s.admin).await, before, "{ct}");
        assert_eq!(s.audit_head().await, head + 1, "{ct}: audited as malformed");
    }
    for accept in [
        "text/html",
        "application/xml, text/*",
        "application/json;q=0",
    ] {
        let head = s.audit_head().await;
        let r = fetch(
            s.call(Method::POST, &s.admin, "/watches")
                .header("accept", accept)
                .json(&watch_body("p", "https://dest.example.com/media")),
        )
        .await;
        assert_problem(&r, 406, "not_acceptable");
        assert_eq!(s.all_watches(&s.admin).await, before, "{accept}");
        assert_eq!(
            s.audit_head().await,
            head + 1,
            "{accept}: audited as malformed"
        );
        let r = fetch(
            s.call(Method::GET, &s.admin, "/watches")
                .header("accept", accept),
        )
        .await;
        assert_problem(&r, 406, "not_acceptable");
    }
    // JSON under any of its names, no Content-Type at all, and any Accept that admits JSON.
    for (i, ct) in [
        "application/json; charset=utf-8",
        "application/merge-patch+json",
        "",
    ]
    .into_iter()
    .enumerate()
    {
        let mut rb = s
            .call(Method::POST, &s.admin, "/watches")
            .header("accept", "application/*, text/html;q=0.5")
            .body(watch_body("p", &format!("https://dest.example.com/ok{i}")).to_string());
        if !ct.is_empty() {
            rb = rb.header("content-type", ct);
        }
        fetch(rb).await.expect(201);
    }
}
