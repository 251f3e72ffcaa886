//! Directory sync end to end with a `file` source: a hub that starts with nobody fills from
//! the source, a changed file is applied live (a department stream gets the newcomer and a
//! `removed` frame for the leaver, search sees the newcomer at once), the removal guard holds
//! a pass that would empty the directory until an admin forces it, and a re-hire gets their
//! absence back.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::common::{client, start, temp_dir, test_config, wait_for, ADMIN, OPERATOR, VIEWER};
use presence_providers::directory::file::FileConfig;
use presence_providers::directory::SourceConfig;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/directory/demo.csv");

/// The demo directory's lines, header first.
fn demo_lines() -> Vec<String> {
    std::fs::read_to_string(DEMO).unwrap().lines().map(str::to_string).collect()
}

fn write(path: &Path, lines: &[String]) {
    // Written aside and renamed, as an HR export job would: the source never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, lines.join("\n") + "\n").unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn get(path: &str, s: &crate::common::Server, token: &str) -> (u16, Value) {
    let r = client().get(s.url(path)).bearer_auth(token).send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn people(s: &crate::common::Server) -> u64 {
    get("/api/users?limit=1", s, VIEWER).await.1["total"].as_u64().unwrap_or(0)
}

async fn source(s: &crate::common::Server) -> Value {
    get("/api/directory/sources", s, ADMIN).await.1["sources"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_source_is_applied_live_guarded_and_gives_a_rehire_their_absence_back() {
    let dir = temp_dir("dirsync");
    let csv = dir.join("people.csv");
    let lines = demo_lines();
    write(&csv, &lines);
    let mut c = test_config(dir.join("data"));
    c.directory.import = None;
    c.directory.sources = vec![SourceConfig::File(FileConfig { name: "hr".into(), path: csv.clone(), interval_secs: 1 })];
    let s = start(c);
    let all = lines.len() as u64 - 1;
    wait_for("the first pass fills the empty hub", Duration::from_secs(20), async || people(&s).await == all).await;
    let st = source(&s).await;
    assert_eq!(st["name"], "hr");
    assert_eq!(st["type"], "file");
    assert_eq!(st["state"], "ok", "{st}");
    assert_eq!(st["last_pass"]["kind"], "full");
    assert_eq!(st["last_pass"]["added"], all);

    // Roles first: a viewer or operator may neither read the sources nor start a pass.
    assert_eq!(get("/api/directory/sources", &s, OPERATOR).await.0, 403);
    let r = client().post(s.url("/api/directory/sync")).bearer_auth(VIEWER).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 403);

    // The leaver (with an absence) and a colleague in the same department.
    let leaver_line = lines.iter().find(|l| l.split(',').nth(3) == Some("Ekonomi")).unwrap().clone();
    let leaver = leaver_line.split(',').next().unwrap().to_string();
    let end = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();
    let r = client()
        .post(s.url(&format!("/api/users/{leaver}/absences")))
        .bearer_auth(OPERATOR)
        .json(&json!({"reason": "vacation", "text": "Semester", "end": end}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // A stream watching the department.
    let url = format!("{}?access_token={VIEWER}", s.ws_url("/api/stream"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(json!({"op": "subscribe", "departments": ["Ekonomi"]}).to_string())).await.unwrap();

    // The next export: the leaver is gone, a newcomer joins Ekonomi, someone changes title.
    let mut next: Vec<String> = lines.iter().filter(|l| **l != leaver_line).cloned().collect();
    next.push("nils.nykvist,Nils Nykvist,Controller,Ekonomi,nils.nykvist@nordvik.se,070-555 12 34,,2999,,".into());
    let changed = next[1].clone();
    let mut cols: Vec<&str> = changed.split(',').collect();
    cols[2] = "Ny titel";
    next[1] = cols.join(",");
    write(&csv, &next);

    let (mut removed, mut newcomer) = (false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(removed && newcomer) {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("removed and newcomer frames within 20 s").unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        removed |= f["type"] == "removed" && f["presence"]["id"] == leaver.as_str();
        newcomer |= f["type"] == "delta" && f["presence"]["id"] == "nils.nykvist";
    }
    let (st, found) = get("/api/users?q=nykvist", &s, VIEWER).await;
    assert_eq!(st, 200);
    assert_eq!(found["items"][0]["id"], "nils.nykvist", "{found}");
    assert_eq!(get(&format!("/api/users/{leaver}"), &s, VIEWER).await.0, 404, "the leaver is gone");
    let src = source(&s).await;
    assert_eq!((src["last_pass"]["added"].as_u64(), src["last_pass"]["removed"].as_u64(), src["last_pass"]["changed"].as_u64()), (Some(1), Some(1), Some(1)), "{src}");
    let id1 = changed.split(',').next().unwrap();
    assert_eq!(get(&format!("/api/users/{id1}"), &s, VIEWER).await.1["title"], "Ny titel");

    // The guard: an export with a tenth of the people is held, not applied.
    let stub: Vec<String> = next.iter().take(next.len() / 10).cloned().collect();
    write(&csv, &stub);
    wait_for("the pass is held", Duration::from_secs(20), async || source(&s).await["state"] == "held").await;
    let src = source(&s).await;
    assert!(src["detail"].as_str().unwrap().contains("max_removal_percent"), "{src}");
    assert_eq!(people(&s).await, all, "nothing was removed");
    let metrics = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("presence_directory_source_people{source=\"hr\"}"), "sources in /metrics");

    // The leaver comes back (with the full export): their absence is back too.
    let mut back = next.clone();
    back.push(leaver_line.clone());
    write(&csv, &back);
    wait_for("the re-hire is back", Duration::from_secs(20), async || get(&format!("/api/users/{leaver}"), &s, VIEWER).await.0 == 200).await;
    let d = get(&format!("/api/users/{leaver}"), &s, VIEWER).await.1;
    assert_eq!(d["presence"]["absence_reason"], "vacation", "{d}");

    // Forcing: an admin applies a large removal on purpose.
    write(&csv, &stub);
    wait_for("held again", Duration::from_secs(20), async || source(&s).await["state"] == "held").await;
    let r = client().post(s.url("/api/directory/sync")).bearer_auth(ADMIN).json(&json!({"force": true})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["started"], json!(["hr"]));
    let t0 = std::time::Instant::now();
    while people(&s).await != stub.len() as u64 - 1 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the forced pass did not apply: {}", get("/api/directory/sources", &s, ADMIN).await.1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client().post(s.url("/api/directory/sync")).bearer_auth(ADMIN).json(&json!({"source": "nope"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client().post(s.url("/api/directory/sync")).bearer_auth(ADMIN).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string(), "{v}");
    for (body, status) in [(json!({"kind": "partial"}), 422), (json!({"fulll": true}), 400)] {
        let r = client().post(s.url("/api/directory/sync")).bearer_auth(ADMIN).json(&body).send().await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["detail"].is_string(), "{v}");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_connects_each_source_and_changes_nothing() {
    let dir = temp_dir("dirsync-check");
    let csv = dir.join("people.csv");
    write(&csv, &demo_lines());
    let config = dir.join("config.toml");
    let data = dir.join("data");
    let text = format!(
        "data_dir = {data:?}\n[[directory.sources]]\ntype = \"file\"\nname = \"hr\"\npath = {csv:?}\n[[directory.sources]]\ntype = \"file\"\nname = \"missing\"\npath = {:?}\n",
        dir.join("nope.csv")
    );
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_presence-hub")).args(["--config", config.to_str().unwrap(), "check-config", "--connect"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a source that cannot be read fails the check:\n{stdout}");
    let people = demo_lines().len() - 1;
    assert!(stdout.contains(&format!("directory source hr (file): connected, {people} people; first: ")), "{stdout}");
    assert!(stdout.contains("directory source missing (file): FAILED: connect:"), "{stdout}");
    assert!(!data.join(presence_hub::store::DB_FILE_NAME).exists(), "nothing written");

    // An unknown key in a source is refused with its name.
    std::fs::write(&config, format!("[[directory.sources]]\ntype = \"file\"\npath = {csv:?}\nintervall_secs = 5\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_presence-hub")).args(["--config", config.to_str().unwrap(), "check-config"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("intervall_secs"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The SIP presence provider's health entry.
async fn kamailio_provider(s: &crate::common::Server) -> Value {
    let v = get("/api/providers", s, ADMIN).await.1;
    v.as_array().unwrap().iter().find(|p| p["name"] == "kamailio").cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_added_in_ldap_is_searchable_streamed_and_subscribed_at_kamailio_then_leaves_cleanly() {
    use crate::common::kamailio::{Kamailio, Sipp};
    use presence_simulators::slapd::{self, ad_user, user_dn, Options, Slapd};
    let ldap = Slapd::start_with(Options { ldif: Some((1..=12).map(|i| ad_user(i, 100 + u64::from(i), false)).collect::<Vec<_>>().join("\n")), ..Options::default() }).unwrap_or_else(|e| panic!("{e}"));
    let k = Kamailio::start();
    let mut c = test_config(temp_dir("dirsync-ldap"));
    c.directory.import = None;
    let ldap_source = format!(
        "type = \"ldap\"\nname = \"ad\"\nurl = \"{}\"\nbind_dn = \"{}\"\npassword = \"{}\"\nbase_dn = \"{}\"\nfilter = \"(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))\"\ninterval_secs = 10\nfull_pass_secs = 3600\n",
        ldap.ldap_url(),
        slapd::SERVICE_DN,
        slapd::SERVICE_PASSWORD,
        slapd::STAFF
    );
    c.directory.sources = vec![toml::from_str(&ldap_source).unwrap()];
    c.providers = vec![toml::from_str(&format!("type = \"sip_presence\"\nname = \"kamailio\"\nserver = \"{}\"\nsubscribe_rate = 2000\nkeepalive_secs = 1\n", k.addr())).unwrap()];
    c.validate().unwrap();
    let s = start(c);
    wait_for("the directory from LDAP", Duration::from_secs(20), async || people(&s).await == 12).await;
    wait_for("everyone subscribed at Kamailio", Duration::from_secs(20), async || kamailio_provider(&s).await["details"]["subscriptions_active"] == 12).await;

    // A stream watching the department the newcomer joins.
    let url = format!("{}?access_token={VIEWER}", s.ws_url("/api/stream"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(json!({"op": "subscribe", "departments": ["Support"]}).to_string())).await.unwrap();

    // The newcomer is added in LDAP: within one interval they are searchable and streamed.
    let t0 = std::time::Instant::now();
    ldap.add_ldif(&ad_user(13, 500, false)).await.unwrap();
    let mut seen = false;
    // One interval (10 s, the least an LDAP source may be set to) and some slack.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(14);
    while !seen {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("the newcomer on the department stream").unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        seen = f["type"] == "delta" && f["presence"]["id"] == "user13";
    }
    eprintln!("LDAP add → department stream: {:?}", t0.elapsed());
    assert_eq!(get("/api/users?q=user%2013", &s, VIEWER).await.1["items"][0]["id"], "user13");

    // The SIP provider subscribed them at Kamailio: a phone's PUBLISH reaches their stream.
    wait_for("the newcomer subscribed", Duration::from_secs(10), async || kamailio_provider(&s).await["details"]["subscriptions_active"] == 13).await;
    let run = tokio::task::spawn_blocking({
        let to = k.addr();
        move || Sipp::publish_pidf("user13", "example.com", "open", "on-the-phone", "Samtal", None).run(to)
    })
    .await
    .unwrap();
    run.assert_success();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("the newcomer's call from Kamailio").unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "delta" && f["presence"]["id"] == "user13" && f["presence"]["activity"] == "InACall" {
            break;
        }
    }

    // They leave: LDAP has no deletion feed, so the full pass (asked for now) finds it.
    ldap.delete(&user_dn(13)).await.unwrap();
    let r = client().post(s.url("/api/directory/sync")).bearer_auth(ADMIN).json(&json!({"kind": "full"})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("a removed frame for the leaver").unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "removed" && f["presence"]["id"] == "user13" {
            break;
        }
    }
    wait_for("the leaver un-subscribed", Duration::from_secs(10), async || kamailio_provider(&s).await["details"]["subscriptions_active"] == 12).await;
    assert_eq!(get("/api/users/user13", &s, VIEWER).await.0, 404);
    let src = source(&s).await;
    assert_eq!(src["state"], "ok", "{src}");
    assert_eq!(src["last_pass"]["kind"], "full");
    assert_eq!(src["last_pass"]["removed"], 1, "{src}");
    drop(s);
}

/// A slapd with `n` AD-shaped people and a hub whose only directory source is it.
async fn ldap_hub(tag: &str, n: u32) -> (presence_simulators::slapd::Slapd, crate::common::Server) {
    use presence_simulators::slapd::{self, ad_user, Options, Slapd};
    let ldap = Slapd::start_with(Options { ldif: Some((1..=n).map(|i| ad_user(i, 100 + u64::from(i), false)).collect::<Vec<_>>().join("\n")), ..Options::default() }).unwrap_or_else(|e| panic!("{e}"));
    let mut c = test_config(temp_dir(tag));
    c.directory.import = None;
    let text = format!(
        "type = \"ldap\"\nname = \"ad\"\nurl = \"{}\"\nbind_dn = \"{}\"\npassword = \"{}\"\nbase_dn = \"{}\"\nfilter = \"(objectClass=user)\"\n",
        ldap.ldap_url(),
        slapd::SERVICE_DN,
        slapd::SERVICE_PASSWORD,
        slapd::STAFF
    );
    c.directory.sources = vec![toml::from_str(&text).unwrap()];
    let s = start(c);
    wait_for("the directory from LDAP", Duration::from_secs(20), async || people(&s).await == u64::from(n)).await;
    (ldap, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_failure_keeps_the_directory_and_reports_the_source() {
    use presence_simulators::slapd;
    let (ldap, s) = ldap_hub("dirsync-bind", 5).await;

    // The service account's password is changed in the directory, not in the hub's config.
    ldap.replace(slapd::SERVICE_DN, &[("userPassword", &[b"rotated-elsewhere"])]).await.unwrap();
    let r = client().post(s.url("/api/directory/sync")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 202);
    wait_for("the source in error", Duration::from_secs(20), async || source(&s).await["state"] == "error").await;
    let src = source(&s).await;
    assert!(src["detail"].as_str().unwrap().starts_with("authentication"), "{src}");
    assert!(src["consecutive_failures"].as_u64().unwrap() >= 1, "{src}");
    assert!(src["errors"][0]["message"].as_str().unwrap().starts_with("authentication"), "{src}");
    assert_eq!(people(&s).await, 5, "the directory is kept as it was");
    let metrics = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("presence_directory_source_up{source=\"ad\"} 0"), "{metrics}");
    assert!(!metrics.contains("presence_directory_passes_total{source=\"ad\",result=\"error\"} 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_ldap_subtree_is_held_by_the_removal_guard() {
    use presence_simulators::slapd::user_dn;
    let (ldap, s) = ldap_hub("dirsync-guard", 12).await;

    // One leaver (8 %) is applied; then three more at once (27 % of 11) are held.
    ldap.delete(&user_dn(1)).await.unwrap();
    client().post(s.url("/api/directory/sync")).bearer_auth(ADMIN).send().await.unwrap();
    wait_for("one leaver applied", Duration::from_secs(20), async || people(&s).await == 11).await;
    for i in 2..=4 {
        ldap.delete(&user_dn(i)).await.unwrap();
    }
    client().post(s.url("/api/directory/sync")).bearer_auth(ADMIN).send().await.unwrap();
    wait_for("the pass held", Duration::from_secs(20), async || source(&s).await["state"] == "held").await;
    let src = source(&s).await;
    assert!(src["detail"].as_str().unwrap().contains("would remove 3 of 11 people"), "{src}");
    assert_eq!(src["last_pass"]["applied"], false, "{src}");
    assert_eq!(people(&s).await, 11, "nobody removed");
    assert_eq!(get("/api/users/user3", &s, VIEWER).await.0, 200);
}
