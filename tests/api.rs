//! End-to-end tests of the HTTP API against the real server on 127.0.0.1:0:
//! search, detail, absences round trip, auth per role on every mutating endpoint, malformed
//! input, pushed signals, metrics and health.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn get(c: &reqwest::Client, s: &Server, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut r = c.get(s.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status();
    let body = resp.text().await.unwrap();
    (st, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

async fn send(c: &reqwest::Client, m: reqwest::Method, s: &Server, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = c.request(m, s.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status();
    let text = resp.text().await.unwrap();
    (st, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn assert_error_body(v: &Value) {
    assert!(v["error"].is_string() && v["detail"].is_string(), "error body must be {{error, detail}}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_is_diacritic_insensitive_ranked_and_paged() {
    let s = start(test_config(temp_dir("search")));
    let c = client();
    let (st, v) = get(&c, &s, "/api/users?q=asa", Some(VIEWER)).await;
    assert_eq!(st, 200, "{v}");
    assert!(v["total"].as_u64().unwrap() >= 1);
    assert_eq!(v["items"][0]["name"], "Åsa Östberg", "{v}");
    assert!(v["items"][0]["presence"]["availability"].is_string());

    let (_, v) = get(&c, &s, "/api/users?q=ostberg", Some(VIEWER)).await;
    assert!(v["items"].as_array().unwrap().iter().any(|p| p["id"] == "asa.ostberg"), "{v}");
    let (_, v) = get(&c, &s, "/api/users?q=%C3%96STB", Some(VIEWER)).await;
    assert!(v["items"].as_array().unwrap().iter().any(|p| p["id"] == "asa.ostberg"), "{v}");

    // Paging: the same query in two pages covers the first page of twice the size.
    let (_, all) = get(&c, &s, "/api/users?q=a&limit=10", Some(VIEWER)).await;
    let (_, p1) = get(&c, &s, "/api/users?q=a&limit=5&offset=0", Some(VIEWER)).await;
    let (_, p2) = get(&c, &s, "/api/users?q=a&limit=5&offset=5", Some(VIEWER)).await;
    let ids = |v: &Value| v["items"].as_array().unwrap().iter().map(|p| p["id"].clone()).collect::<Vec<_>>();
    let mut joined = ids(&p1);
    joined.extend(ids(&p2));
    assert_eq!(joined, ids(&all));
    assert_eq!(p1["total"], all["total"]);

    // Department filter.
    let (_, deps) = get(&c, &s, "/api/departments", Some(VIEWER)).await;
    let dep = deps[0]["name"].as_str().unwrap().to_string();
    let (_, v) = get(&c, &s, &format!("/api/users?department={}&limit=500", urlenc(&dep)), Some(VIEWER)).await;
    assert_eq!(v["total"], deps[0]["people"]);
    assert!(v["items"].as_array().unwrap().iter().all(|p| p["department"] == dep.as_str()));

    // Bad paging input.
    let (st, v) = get(&c, &s, "/api/users?q=a&limit=0", Some(VIEWER)).await;
    assert_eq!(st, 422);
    assert_error_body(&v);
    let (st, v) = get(&c, &s, "/api/users?q=a&limit=abc", Some(VIEWER)).await;
    assert_eq!(st, 400);
    assert_error_body(&v);
    let (st, _) = get(&c, &s, &format!("/api/users?q={}", "x".repeat(300)), Some(VIEWER)).await;
    assert_eq!(st, 422);
}

fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_and_absence_round_trip() {
    let s = start(test_config(temp_dir("absence")));
    let c = client();
    let (st, v) = get(&c, &s, "/api/users/asa.ostberg", Some(VIEWER)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], "Åsa Östberg");
    assert_eq!(v["presence"]["availability"], "Unknown");
    assert!(v["sources"].as_array().unwrap().is_empty());

    let (st, v) = get(&c, &s, "/api/users/no-such-person", Some(VIEWER)).await;
    assert_eq!(st, 404);
    assert_error_body(&v);

    // Set: lunch until an hour from now.
    let end = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    let (st, v) = send(&c, reqwest::Method::POST, &s, "/api/users/asa.ostberg/absences", Some(OPERATOR),
        Some(json!({"reason": "lunch", "text": "Lunch, tillbaka 13:00", "end": end}))).await;
    assert_eq!(st, 201, "{v}");
    let id = v["absence"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["absence"]["created_by"], "operator");
    assert_eq!(v["presence"]["availability"], "Away");
    assert_eq!(v["presence"]["activity"], "Lunch");
    assert_eq!(v["presence"]["note"], "Lunch, tillbaka 13:00");
    assert!(v["presence"]["available_again_at"].is_string());

    let (_, list) = get(&c, &s, "/api/users/asa.ostberg/absences", Some(VIEWER)).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["label_sv"], "Lunch");
    let (_, d) = get(&c, &s, "/api/users/asa.ostberg", Some(VIEWER)).await;
    assert_eq!(d["presence"]["absence_reason"], "lunch");
    assert_eq!(d["absences"][0]["id"], id.as_str());

    // Change it.
    let (st, v) = send(&c, reqwest::Method::PUT, &s, &format!("/api/users/asa.ostberg/absences/{id}"), Some(OPERATOR),
        Some(json!({"reason": "meeting", "text": "Styrelsemöte"}))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["presence"]["availability"], "Busy");
    assert_eq!(v["presence"]["activity"], "InAMeeting");
    let (st, a) = get(&c, &s, &format!("/api/users/asa.ostberg/absences/{id}"), Some(VIEWER)).await;
    assert_eq!(st, 200);
    assert_eq!(a["reason"], "meeting");
    assert!(a["end"].is_null());

    // Clear it.
    let (st, _) = send(&c, reqwest::Method::DELETE, &s, &format!("/api/users/asa.ostberg/absences/{id}"), Some(OPERATOR), None).await;
    assert_eq!(st, 204);
    let (_, list) = get(&c, &s, "/api/users/asa.ostberg/absences", Some(VIEWER)).await;
    assert!(list.as_array().unwrap().is_empty());
    let (_, d) = get(&c, &s, "/api/users/asa.ostberg", Some(VIEWER)).await;
    assert_eq!(d["presence"]["availability"], "Unknown");
    let (st, v) = send(&c, reqwest::Method::DELETE, &s, &format!("/api/users/asa.ostberg/absences/{id}"), Some(OPERATOR), None).await;
    assert_eq!(st, 404);
    assert_error_body(&v);

    // A scheduled absence is listed but does not count yet.
    let start_at = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();
    let (st, v) = send(&c, reqwest::Method::POST, &s, "/api/users/asa.ostberg/absences", Some(OPERATOR),
        Some(json!({"reason": "vacation", "start": start_at}))).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["absence"]["active"], false);
    assert_eq!(v["presence"]["availability"], "Unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_endpoint_refuses_missing_or_weaker_tokens() {
    let s = start(test_config(temp_dir("auth")));
    let c = client();
    let (st, v) = send(&c, reqwest::Method::POST, &s, "/api/users/asa.ostberg/absences", Some(OPERATOR), Some(json!({"reason": "lunch"}))).await;
    assert_eq!(st, 201);
    let aid = v["absence"]["id"].as_str().unwrap().to_string();
    let abs_body = json!({"reason": "lunch"});
    let sig_body = json!({"signals": [{"who": "asa.ostberg", "source": "pbx", "availability": "Busy", "activity": "InACall"}]});
    let cases: Vec<(reqwest::Method, String, Option<Value>, &str)> = vec![
        (reqwest::Method::POST, "/api/users/asa.ostberg/absences".into(), Some(abs_body.clone()), "operator"),
        (reqwest::Method::PUT, format!("/api/users/asa.ostberg/absences/{aid}"), Some(abs_body.clone()), "operator"),
        (reqwest::Method::DELETE, format!("/api/users/asa.ostberg/absences/{aid}"), None, "operator"),
        (reqwest::Method::POST, "/api/signals".into(), Some(sig_body.clone()), "admin"),
        // Roles are checked before the body is read or the person looked up.
        (reqwest::Method::POST, "/api/users/nobody/absences".into(), Some(json!({})), "operator"),
        (reqwest::Method::PUT, "/api/users/nobody/absences/x".into(), Some(json!({"reason": 1})), "operator"),
        (reqwest::Method::POST, "/api/signals".into(), Some(json!({"signals": "nope"})), "admin"),
    ];
    for (m, path, body, needs) in &cases {
        let (st, v) = send(&c, m.clone(), &s, path, None, body.clone()).await;
        assert_eq!(st, 401, "{m} {path} without a token: {v}");
        assert_error_body(&v);
        let (st, _) = send(&c, m.clone(), &s, path, Some("not-a-token"), body.clone()).await;
        assert_eq!(st, 401, "{m} {path} with a bad token");
        let (st, v) = send(&c, m.clone(), &s, path, Some(VIEWER), body.clone()).await;
        assert_eq!(st, 403, "{m} {path} as viewer: {v}");
        assert_error_body(&v);
        if *needs == "admin" {
            let (st, _) = send(&c, m.clone(), &s, path, Some(OPERATOR), body.clone()).await;
            assert_eq!(st, 403, "{m} {path} as operator");
        }
    }
    // Nothing changed through all of that.
    let (_, list) = get(&c, &s, "/api/users/asa.ostberg/absences", Some(VIEWER)).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], aid.as_str());
    // The stronger roles succeed.
    let (st, _) = send(&c, reqwest::Method::POST, &s, "/api/signals", Some(ADMIN), Some(sig_body)).await;
    assert_eq!(st, 202);
    let (st, _) = send(&c, reqwest::Method::DELETE, &s, &format!("/api/users/asa.ostberg/absences/{aid}"), Some(ADMIN), None).await;
    assert_eq!(st, 204);
    // Reads: admin-only endpoints refuse viewers; everything refuses no token.
    for p in ["/api/providers", "/api/stats"] {
        assert_eq!(get(&c, &s, p, Some(VIEWER)).await.0, 403, "{p}");
        assert_eq!(get(&c, &s, p, None).await.0, 401, "{p}");
        assert_eq!(get(&c, &s, p, Some(ADMIN)).await.0, 200, "{p}");
    }
    for p in ["/api/users?q=a", "/api/users/asa.ostberg", "/api/departments", "/api/absence-reasons", "/api/events"] {
        assert_eq!(get(&c, &s, p, None).await.0, 401, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_a_clear_error_and_changes_nothing() {
    let s = start(test_config(temp_dir("malformed")));
    let c = client();
    let path = "/api/users/asa.ostberg/absences";
    let raw = |body: &'static str, ct: &'static str| {
        let c = c.clone();
        let url = s.url(path);
        async move {
            let r = c.post(url).bearer_auth(OPERATOR).header("Content-Type", ct).body(body).send().await.unwrap();
            let st = r.status();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, v) = raw("{\"reason\":", "application/json").await;
    assert_eq!(st, 400, "truncated JSON: {v}");
    assert_error_body(&v);
    let (st, v) = raw("[1,2,3]", "application/json").await;
    assert!(st == 400 || st == 422, "wrong JSON type: {st}");
    assert_error_body(&v);
    let (st, v) = raw("{\"reason\":\"lunch\",\"colour\":\"red\"}", "application/json").await;
    assert_eq!(st, 422, "unknown field: {v}");
    assert_error_body(&v);
    let (st, v) = raw("{\"reason\":\"lunch\"}", "text/plain").await;
    assert_eq!(st, 400, "wrong content type: {v}");
    assert_error_body(&v);
    let (st, v) = raw("\u{0}\u{1}garbage\u{ff}", "application/json").await;
    assert_eq!(st, 400, "{v}");

    let bad = [
        json!({"reason": "naptime"}),
        json!({"reason": "lunch", "end": "tomorrow"}),
        json!({"reason": "lunch", "start": "2020-01-01T00:00:00Z"}),
        json!({"reason": "lunch", "end": "2020-01-01T00:00:00Z"}),
        json!({"reason": "lunch", "start": (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(3)).to_string(),
               "end": (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string()}),
        json!({"reason": "lunch", "text": "x".repeat(501)}),
        json!({"reason": 5}),
    ];
    for b in bad {
        let (st, v) = send(&c, reqwest::Method::POST, &s, path, Some(OPERATOR), Some(b.clone())).await;
        assert_eq!(st, 422, "{b}: {v}");
        assert_error_body(&v);
    }
    // Oversized body.
    let big = format!("{{\"reason\":\"lunch\",\"text\":\"{}\"}}", "x".repeat(200_000));
    let r = c.post(s.url(path)).bearer_auth(OPERATOR).header("Content-Type", "application/json").body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_error_body(&r.json::<Value>().await.unwrap());
    // Unknown person, unknown route.
    let (st, v) = send(&c, reqwest::Method::POST, &s, "/api/users/nobody/absences", Some(OPERATOR), Some(json!({"reason":"lunch"}))).await;
    assert_eq!(st, 404);
    assert_error_body(&v);
    let (st, v) = get(&c, &s, "/api/nothing-here", Some(VIEWER)).await;
    assert_eq!(st, 404);
    assert_error_body(&v);
    // Pushed signals are validated as a whole: one bad entry applies none.
    let (st, v) = send(&c, reqwest::Method::POST, &s, "/api/signals", Some(ADMIN), Some(json!({"signals": [
        {"who": "asa.ostberg", "source": "pbx", "availability": "Busy", "activity": "InACall"},
        {"who": "nobody-at-all", "source": "pbx", "availability": "Busy"}
    ]}))).await;
    assert_eq!(st, 422, "{v}");
    let (st, v) = send(&c, reqwest::Method::POST, &s, "/api/signals", Some(ADMIN), Some(json!({"signals": [
        {"who": "asa.ostberg", "source": "fax"}]}))).await;
    assert_eq!(st, 422, "{v}");

    // Nothing was stored or applied.
    let (_, list) = get(&c, &s, "/api/users/asa.ostberg/absences", Some(VIEWER)).await;
    assert!(list.as_array().unwrap().is_empty(), "{list}");
    let (_, d) = get(&c, &s, "/api/users/asa.ostberg", Some(VIEWER)).await;
    assert_eq!(d["presence"]["availability"], "Unknown");
    // And the server is still fine.
    assert_eq!(get(&c, &s, "/healthz", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_signals_identity_forms_and_ops_endpoints() {
    let s = start(test_config(temp_dir("signals")));
    let c = client();
    // Name the same person by e-mail, then a call on their extension wins.
    let (_, d) = get(&c, &s, "/api/users/asa.ostberg", Some(VIEWER)).await;
    let email = d["email"].as_str().unwrap().to_string();
    let ext = d["extension"].as_str().unwrap().to_string();
    let (st, v) = send(&c, reqwest::Method::POST, &s, "/api/signals", Some(ADMIN), Some(json!({"signals": [
        {"who": email, "source": "teams", "availability": "Available", "version": 5},
        {"who": ext, "source": "pbx", "instance": ext, "availability": "Busy", "activity": "InACall", "version": 1}
    ]}))).await;
    assert_eq!(st, 202, "{v}");
    let mut d = Value::Null;
    for _ in 0..500 {
        d = get(&c, &s, "/api/users/asa.ostberg", Some(VIEWER)).await.1;
        if d["presence"]["activity"] == "InACall" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(d["presence"]["availability"], "Busy", "{d}");
    assert_eq!(d["presence"]["activity"], "InACall");
    assert_eq!(d["presence"]["freshness"], "live");
    let sources = d["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{d}");
    assert!(sources.iter().all(|s| s["freshness"] == "live" && s["age_s"].is_number()));
    // An out-of-order Teams version is ignored and counted.
    send(&c, reqwest::Method::POST, &s, "/api/signals", Some(ADMIN), Some(json!({"signals": [
        {"who": "asa.ostberg", "source": "teams", "availability": "Offline", "version": 4}]}))).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (_, d) = get(&c, &s, "/api/users/asa.ostberg", Some(VIEWER)).await;
    let teams = d["sources"].as_array().unwrap().iter().find(|s| s["source"] == "teams").unwrap().clone();
    assert_eq!(teams["availability"], "Available", "{d}");

    let (st, m) = get(&c, &s, "/metrics", None).await;
    assert_eq!(st, 200);
    let m = m.as_str().unwrap().to_string();
    assert!(m.contains("presence_signals_out_of_order_total 1"), "{m}");
    assert!(m.contains("presence_provider_up{provider=\"api\",type=\"api\"} 1"), "{m}");
    assert_eq!(get(&c, &s, "/readyz", None).await.0, 200);
    let (st, doc) = get(&c, &s, "/api/openapi.json", None).await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/api/users/{id}/absences"]["post"].is_object());
    let (_, stats) = get(&c, &s, "/api/stats", Some(ADMIN)).await;
    assert!(stats["actors"]["user"]["count"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["actors"]["user"]["estimated_bytes"].as_u64().unwrap() > 0);
    let (_, prov) = get(&c, &s, "/api/providers", Some(ADMIN)).await;
    assert_eq!(prov[0]["name"], "api");
    assert!(prov[0]["events"].as_u64().unwrap() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_shows_the_last_state_marked_stale() {
    let dir = temp_dir("restart");
    let s = start(test_config(dir.clone()));
    let c = client();
    send(&c, reqwest::Method::POST, &s, "/api/signals", Some(ADMIN), Some(json!({"signals": [
        {"who": "asa.ostberg", "source": "teams", "availability": "DoNotDisturb", "activity": "Presenting"}]}))).await;
    for _ in 0..500 {
        let (_, d) = get(&c, &s, "/api/users/asa.ostberg", Some(VIEWER)).await;
        if d["presence"]["availability"] == "DoNotDisturb" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let dir = s.stop();
    let s = start(test_config(dir));
    let (_, d) = get(&c, &s, "/api/users/asa.ostberg", Some(VIEWER)).await;
    assert_eq!(d["presence"]["availability"], "DoNotDisturb", "{d}");
    assert_eq!(d["presence"]["activity"], "Presenting");
    assert_eq!(d["presence"]["freshness"], "stale");
    // A search result shows the same at once.
    let (_, v) = get(&c, &s, "/api/users?q=asa", Some(VIEWER)).await;
    assert_eq!(v["items"][0]["presence"]["freshness"], "stale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_and_its_endpoints() {
    let mut cfg = test_config(temp_dir("api-web"));
    cfg.web.title = "Växeln".into();
    cfg.web.groups = vec![presence_hub::config::WebGroup {
        name: "Reception".into(),
        members: vec!["asa.ostberg".into(), "2624".into(), "+46 8 410 27 87".into(), "nobody.here".into()],
    }];
    let s = start(cfg);
    let c = client();

    // The page: HTML with a strict CSP, revalidated by ETag.
    let r = c.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["cache-control"], "no-cache");
    let etag = h["etag"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert!(body.contains("/assets/app.js") && body.contains("id=\"q\""));
    let r = c.get(s.url("/")).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(c.head(s.url("/assets/app.js")).send().await.unwrap().status(), 200);
    let js = c.get(s.url("/assets/app.js")).send().await.unwrap();
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert_ne!(js.headers()["etag"].to_str().unwrap(), etag);
    let (st, v) = get(&c, &s, "/assets/nope.js", None).await;
    assert_eq!(st, 404);
    assert_error_body(&v);

    // Before sign-in: title, time zone, language; no demo tokens outside the demo.
    let (st, v) = get(&c, &s, "/api/ui", None).await;
    assert_eq!(st, 200);
    assert_eq!(v["title"], "Växeln");
    assert_eq!(v["time_zone"], "Europe/Stockholm");
    assert_eq!(v["language"], "auto");
    assert_eq!(v["demo"], false);
    assert_eq!(v["demo_tokens"], json!([]));
    assert_eq!(v["heartbeat_secs"], 1);

    // Who am I.
    let (st, v) = get(&c, &s, "/api/me", None).await;
    assert_eq!(st, 401);
    assert_error_body(&v);
    let (st, v) = get(&c, &s, "/api/me", Some(OPERATOR)).await;
    assert_eq!(st, 200);
    assert_eq!(
        v,
        json!({ "name": "operator", "role": "operator", "via": "token", "person": null, "in_directory": false, "csrf_token": null, "session": null })
    );

    // Groups: members resolved by any identity, the same person once, unknown ones listed.
    let (st, _) = get(&c, &s, "/api/groups", None).await;
    assert_eq!(st, 401);
    let (st, v) = get(&c, &s, "/api/groups", Some(VIEWER)).await;
    assert_eq!(st, 200);
    assert_eq!(v, json!([{ "name": "Reception", "members": ["asa.ostberg", "marta.lind"], "unknown": ["nobody.here"] }]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_can_be_switched_off() {
    let mut cfg = test_config(temp_dir("api-noweb"));
    cfg.web.enabled = false;
    let s = start(cfg);
    let (st, v) = get(&client(), &s, "/", None).await;
    assert_eq!(st, 404);
    assert_error_body(&v);
    let (st, _) = get(&client(), &s, "/api/users?q=asa", Some(VIEWER)).await;
    assert_eq!(st, 200);
}

/// Issue 14: every absence write is in the audit log once, with its writer and old → new; the
/// log is for admins only, filtered, paged and exported as CSV; refused tokens are recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_every_write_once_for_admins() {
    let s = start(test_config(temp_dir("audit")));
    let c = client();
    let (st, v) = send(&c, reqwest::Method::POST, &s, "/api/users/asa.ostberg/absences", Some(OPERATOR), Some(json!({"reason": "lunch"}))).await;
    assert_eq!(st, 201, "{v}");
    let id = v["absence"]["id"].as_str().unwrap().to_string();
    let (st, _) = send(&c, reqwest::Method::PUT, &s, &format!("/api/users/asa.ostberg/absences/{id}"), Some(OPERATOR), Some(json!({"reason": "meeting"}))).await;
    assert_eq!(st, 200);
    let (st, _) = send(&c, reqwest::Method::DELETE, &s, &format!("/api/users/asa.ostberg/absences/{id}"), Some(OPERATOR), None).await;
    assert_eq!(st, 204);
    // A refused write is not a write: nothing recorded for it (but the refused token is).
    let (st, _) = send(&c, reqwest::Method::POST, &s, "/api/users/asa.ostberg/absences", Some(VIEWER), Some(json!({"reason": "lunch"}))).await;
    assert_eq!(st, 403);
    let (st, _) = get(&c, &s, "/api/users", Some("not-a-token")).await;
    assert_eq!(st, 401);

    for weaker in [VIEWER, OPERATOR] {
        let (st, v) = get(&c, &s, "/api/audit", Some(weaker)).await;
        assert_eq!(st, 403, "{v}");
    }
    let (st, v) = get(&c, &s, "/api/audit?target=asa.ostberg", Some(ADMIN)).await;
    assert_eq!(st, 200, "{v}");
    let entries = v["entries"].as_array().unwrap();
    let actions: Vec<_> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["absence.cleared", "absence.changed", "absence.created"], "{v}");
    for e in entries {
        assert_eq!((e["actor"].as_str(), e["role"].as_str(), e["via"].as_str()), (Some("operator"), Some("operator"), Some("token")), "{e}");
        assert_eq!(e["detail"]["absence"], id.as_str());
        assert_eq!(e["ip"], "127.0.0.1");
    }
    assert_eq!((entries[1]["detail"]["old"]["reason"].as_str(), entries[1]["detail"]["new"]["reason"].as_str()), (Some("lunch"), Some("meeting")));
    assert_eq!(entries[0]["detail"]["old"]["reason"], "meeting");

    // The refused token is recorded (in the background: poll briefly).
    let t0 = std::time::Instant::now();
    loop {
        let (_, v) = get(&c, &s, "/api/audit?action=token.refused", Some(ADMIN)).await;
        if let Some(e) = v["entries"].as_array().and_then(|a| a.first()) {
            assert_eq!((e["actor"].as_str(), e["detail"]["path"].as_str()), (Some("-"), Some("/api/users")), "{e}");
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "no token.refused entry: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Families, paging, and bad queries.
    let (_, v) = get(&c, &s, "/api/audit?action=absence.*&limit=2", Some(ADMIN)).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    let next = v["next_before"].as_i64().expect("a next page");
    let (_, v) = get(&c, &s, &format!("/api/audit?action=absence.*&limit=2&before={next}"), Some(ADMIN)).await;
    assert_eq!(v["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect::<Vec<_>>(), ["absence.created"]);
    assert!(v["next_before"].is_null());
    let (_, v) = get(&c, &s, "/api/audit?actor=operator&since=2999-01-01T00:00:00Z", Some(ADMIN)).await;
    assert!(v["entries"].as_array().unwrap().is_empty());
    for bad in ["/api/audit?limit=0", "/api/audit?limit=5000", "/api/audit?since=yesterday", "/api/audit?colour=red"] {
        let (st, v) = get(&c, &s, bad, Some(ADMIN)).await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert_error_body(&v);
    }

    // CSV: a header and the same rows.
    let r = c.get(s.url("/api/audit.csv?target=asa.ostberg")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = r.text().await.unwrap();
    let lines: Vec<_> = csv.lines().collect();
    assert_eq!(lines[0], "seq,at,actor,role,via,action,target,ip,detail");
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[1].contains(",operator,operator,token,absence.cleared,asa.ostberg,127.0.0.1,"), "{csv}");
    let (st, _) = get(&c, &s, "/api/audit.csv", Some(OPERATOR)).await;
    assert_eq!(st, 403);

    // Pushed signals: one summed entry per caller and minute, written when the minute is over
    // or at shutdown.
    for _ in 0..3 {
        let (st, v) = send(&c, reqwest::Method::POST, &s, "/api/signals", Some(ADMIN),
            Some(json!({ "signals": [{ "who": "asa.ostberg", "source": "pbx", "availability": "Busy" }, { "who": "2787", "source": "pbx", "availability": "Available" }] }))).await;
        assert_eq!(st, 202, "{v}");
    }
    let dir = s.stop();
    let s = start(test_config(dir));
    let (_, v) = get(&c, &s, "/api/audit?action=signals.pushed", Some(ADMIN)).await;
    // (Two entries if the pushes straddled a minute.)
    let entries = v["entries"].as_array().unwrap();
    assert!((1..=2).contains(&entries.len()) && entries.iter().all(|e| e["actor"] == "admin"), "{v}");
    let sum = |k: &str| entries.iter().map(|e| e["detail"][k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("requests"), sum("signals")), (3, 6), "{v}");
}

/// Issue 14: the `self` role belongs to people who sign in; a token cannot have it.
#[test]
fn a_token_cannot_have_the_self_role() {
    let mut cfg = test_config(temp_dir("selftoken"));
    cfg.tokens.push(presence_hub::config::TokenConfig { name: "me".into(), role: presence_hub::tokens::Role::SelfService, sha256: presence_hub::tokens::hash_token("x") });
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("self role"), "{e}");
}

/// Issue 14: the configuration is reloaded at SIGHUP (as `systemctl reload` sends it) and by
/// `POST /api/config/reload`: a new token works at once, an invalid file changes nothing and
/// says why, sections that need a restart are named, and every reload is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_reloads_tokens_at_sighup_and_names_what_needs_a_restart() {
    let dir = temp_dir("reload");
    let csv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/directory/demo.csv");
    let token = |name: &str, role: &str, t: &str| format!("[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n", presence_hub::tokens::hash_token(t));
    let base_text = format!("data_dir = {:?}\n[directory]\nimport = {csv:?}\n[web]\ntitle = \"Växel\"\n{}", dir.join("data"), token("admin", "admin", ADMIN));
    let config = dir.join("hub.toml");
    std::fs::write(&config, &base_text).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_presence-hub"))
        .args(["--config", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let c = client();
    let t0 = std::time::Instant::now();
    while !c.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "the hub did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = |t: &'static str| {
        let c = c.clone();
        let url = format!("{base}/api/users?limit=1");
        async move { c.get(url).bearer_auth(t).send().await.unwrap().status() }
    };
    assert_eq!(status(VIEWER).await, 401);

    // A new token, then SIGHUP.
    std::fs::write(&config, format!("{base_text}{}", token("crm", "viewer", VIEWER))).unwrap();
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let t0 = std::time::Instant::now();
    while status(VIEWER).await != 200 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "the new token never worked");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // An invalid file: 422 with the reason; the running configuration stays.
    std::fs::write(&config, format!("{base_text}[hub]\nshards = 0\n")).unwrap();
    let r = c.post(format!("{base}/api/config/reload")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("hub.shards"), "{v}");
    assert_eq!(status(VIEWER).await, 200);

    // The crm token revoked and the title changed: the first now, the second at restart.
    std::fs::write(&config, base_text.replace("Växel", "Reception")).unwrap();
    let r = c.post(format!("{base}/api/config/reload")).bearer_auth(ADMIN).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({ "applied": ["tokens"], "restart_needed": ["web"] }));
    assert_eq!(status(VIEWER).await, 401, "the revoked token is refused at once");
    let r = c.post(format!("{base}/api/config/reload")).bearer_auth(VIEWER).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let v: Value = c.get(format!("{base}/api/audit?action=config.reloaded")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    let e = v["entries"].as_array().unwrap();
    let seen: Vec<_> = e.iter().map(|e| (e["actor"].as_str().unwrap(), e["via"].as_str().unwrap(), e["detail"]["error"].is_string())).collect();
    assert_eq!(seen, [("admin", "token", false), ("admin", "token", true), ("system", "signal", false)], "{v}");
    let _ = child.kill();
    let _ = child.wait();
}

/// The demo has no configuration file to reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_a_config_file_has_nothing_to_reload() {
    let s = start(test_config(temp_dir("reload-none")));
    let (st, v) = send(&client(), reqwest::Method::POST, &s, "/api/config/reload", Some(ADMIN), None).await;
    assert_eq!(st, 409, "{v}");
    assert_error_body(&v);
}
