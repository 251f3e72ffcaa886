//! The `entra` directory source against the Graph simulator (`/users/delta`, a group's
//! transitive members, the token endpoint) on loopback: pages followed and fields mapped,
//! incremental rounds whose partial answers still give whole records, removals (`@removed`
//! and disabled accounts), a refused delta link falling back to a full pass, throttling waited
//! out, a wrong secret, and group mode.

use std::time::{Duration, Instant};

use presence_actors::directory::PhoneKind;
use presence_providers::directory::{Pass, PassKind, Source, SourceConfig, SourceError};
use presence_simulators::graph::{GraphSim, GraphSimConfig};
use presence_simulators::graph_users::{SimUser, TokenRefusal};
use serde_json::{json, Value};

fn sim() -> GraphSim {
    let sim = GraphSim::start(GraphSimConfig::default()).unwrap();
    sim.set_users_page_size(2);
    let mut anna = SimUser::new("id-anna", "Anna Andersson", "anna@example.com");
    anna.given_name = Some("Anna".into());
    anna.surname = Some("Andersson".into());
    anna.job_title = Some("CFO".into());
    anna.department = Some("Finance".into());
    anna.mobile_phone = Some("+46 70 111 22 33".into());
    anna.business_phones = vec!["+46 8 123 456".into()];
    anna.proxy_addresses = vec!["SMTP:anna@example.com".into(), "sip:anna@sip.example.com".into()];
    sim.put_user(anna);
    sim.put_user(SimUser::new("id-bo", "Bo Berg", "bo@example.com"));
    sim.put_user(SimUser::new("id-cia", "Cia Carlsson", "cia@example.com"));
    let mut dan = SimUser::new("id-dan", "Dan Disabled", "dan@example.com");
    dan.account_enabled = false;
    sim.put_user(dan);
    sim.put_user(SimUser::new("id-eva", "Eva Ek", "eva@example.com"));
    sim
}

/// The source's config block against `sim`, with `extra` keys.
fn source(sim: &GraphSim, extra: Value) -> Source {
    let mut c = json!({
        "type": "entra",
        "name": "entra",
        "tenant_id": "sim-tenant",
        "client_id": "sim-client",
        "client_secret": "sim-secret",
        "authority": sim.url(),
        "graph_url": sim.graph_url(),
        "filter": "accountEnabled eq true",
        "interval_secs": 300,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    let c: SourceConfig = serde_json::from_value(c).unwrap();
    c.validate().unwrap();
    c.source().unwrap()
}

fn keys(p: &Pass) -> Vec<&str> {
    p.entries.iter().map(|e| &*e.key).collect()
}

fn entry<'a>(p: &'a Pass, key: &str) -> &'a presence_providers::directory::Record {
    &p.entries.iter().find(|e| &*e.key == key).unwrap_or_else(|| panic!("{key} in {:?}", keys(p))).record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pass_follows_the_pages_and_maps_the_fields() {
    let sim = sim();
    let mut s = source(&sim, json!({}));
    let p = s.pass(PassKind::Incremental, None).await.unwrap();
    assert_eq!(p.kind, PassKind::Full, "no cursor: a full pass");
    assert_eq!(keys(&p), ["id-anna", "id-bo", "id-cia", "id-eva"], "the disabled account is filtered out");
    assert!(p.removed.is_empty());
    let st = sim.users_stats();
    assert_eq!((st.delta_requests, st.full_rounds), (3, 1), "five users in pages of two");
    let select = st.last_select.unwrap();
    assert!(select.contains("proxyAddresses") && select.contains("accountEnabled") && !select.contains("city"), "{select}");
    let anna = entry(&p, "id-anna");
    assert_eq!(anna.id, None, "the hub derives the id");
    assert_eq!((anna.entra_id.as_deref(), anna.name.as_deref(), anna.email.as_deref(), anna.upn.as_deref()), (Some("id-anna"), Some("Anna Andersson"), Some("anna@example.com"), Some("anna@example.com")));
    assert_eq!((anna.title.as_deref(), anna.department.as_deref(), anna.first_name.as_deref()), (Some("CFO"), Some("Finance"), Some("Anna")));
    assert_eq!(anna.sip_uri.as_deref(), Some("sip:anna@sip.example.com"), "from proxyAddresses, lower-case prefix");
    assert_eq!(anna.phones, vec![(PhoneKind::Mobile, "+46 70 111 22 33".to_string()), (PhoneKind::Work, "+46 8 123 456".to_string())]);
    let cursor: Value = serde_json::from_str(p.cursor.as_deref().unwrap()).unwrap();
    assert!(cursor["delta_link"].as_str().unwrap().contains("$deltatoken="), "{cursor}");
    assert!(cursor["issued_at"].as_i64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_pass_gets_only_the_change_and_returns_whole_records() {
    let sim = sim();
    let mut s = source(&sim, json!({}));
    let full = s.pass(PassKind::Full, None).await.unwrap();
    let quiet = s.pass(PassKind::Incremental, full.cursor.as_deref()).await.unwrap();
    assert_eq!((quiet.kind, quiet.entries.len(), quiet.removed.len()), (PassKind::Incremental, 0, 0), "nothing changed");
    sim.update_user("id-anna", |u| u.job_title = Some("CEO".into()));
    let p = s.pass(PassKind::Incremental, quiet.cursor.as_deref()).await.unwrap();
    assert_eq!(p.kind, PassKind::Incremental);
    assert_eq!(keys(&p), ["id-anna"]);
    let anna = entry(&p, "id-anna");
    assert_eq!(anna.title.as_deref(), Some("CEO"));
    // The simulator sent jobTitle alone; the rest comes from what the source knew.
    assert_eq!((anna.name.as_deref(), anna.email.as_deref(), anna.department.as_deref()), (Some("Anna Andersson"), Some("anna@example.com"), Some("Finance")));
    assert_eq!(anna.sip_uri.as_deref(), Some("sip:anna@sip.example.com"));
    assert_eq!(anna.phones.len(), 2);
    // A new user comes whole; a re-enabled one comes back with its unchanged fields.
    sim.put_user(SimUser::new("id-fia", "Fia Fors", "fia@example.com"));
    sim.update_user("id-dan", |u| u.account_enabled = true);
    let p2 = s.pass(PassKind::Incremental, p.cursor.as_deref()).await.unwrap();
    assert_eq!(keys(&p2), ["id-dan", "id-fia"]);
    assert_eq!(entry(&p2, "id-dan").email.as_deref(), Some("dan@example.com"));
    assert_eq!(sim.users_stats().full_rounds, 1, "one full round in all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_come_from_removed_and_from_disabled_accounts() {
    let sim = sim();
    let mut s = source(&sim, json!({}));
    let full = s.pass(PassKind::Full, None).await.unwrap();
    sim.delete_user("id-bo", false);
    sim.delete_user("id-cia", true);
    sim.update_user("id-eva", |u| u.account_enabled = false);
    sim.delete_user("id-dan", true);
    let p = s.pass(PassKind::Incremental, full.cursor.as_deref()).await.unwrap();
    assert_eq!(p.kind, PassKind::Incremental);
    assert!(p.entries.is_empty(), "{:?}", keys(&p));
    let mut removed: Vec<&str> = p.removed.iter().map(|k| &**k).collect();
    removed.sort();
    assert_eq!(removed, ["id-bo", "id-cia", "id-eva"], "restorable and permanent deletions, and the disabled account; Dan was never visible");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_old_delta_link_gives_a_full_pass() {
    let sim = sim();
    let mut s = source(&sim, json!({}));
    let full = s.pass(PassKind::Full, None).await.unwrap();
    sim.expire_delta_tokens(TokenRefusal::Gone);
    let p = s.pass(PassKind::Incremental, full.cursor.as_deref()).await.unwrap();
    assert_eq!(p.kind, PassKind::Full, "410 Gone: a new round from scratch");
    assert_eq!(keys(&p), ["id-anna", "id-bo", "id-cia", "id-eva"]);
    let st = sim.users_stats();
    assert_eq!((st.tokens_refused, st.full_rounds), (1, 2));
    sim.expire_delta_tokens(TokenRefusal::SyncStateNotFound);
    let p2 = s.pass(PassKind::Incremental, p.cursor.as_deref()).await.unwrap();
    assert_eq!((p2.kind, p2.entries.len()), (PassKind::Full, 4), "400 syncStateNotFound too");
    // A restarted source has no users in memory: the stored link is not used.
    let mut restarted = source(&sim, json!({}));
    let p3 = restarted.pass(PassKind::Incremental, p2.cursor.as_deref()).await.unwrap();
    assert_eq!((p3.kind, p3.entries.len()), (PassKind::Full, 4));
    // A link issued more than seven days ago is not tried.
    let mut old: Value = serde_json::from_str(p3.cursor.as_deref().unwrap()).unwrap();
    old["issued_at"] = json!(old["issued_at"].as_i64().unwrap() - 8 * 24 * 3_600_000);
    let before = sim.users_stats();
    let p4 = restarted.pass(PassKind::Incremental, Some(&old.to_string())).await.unwrap();
    let after = sim.users_stats();
    assert_eq!(p4.kind, PassKind::Full);
    assert_eq!((after.tokens_refused, after.full_rounds), (before.tokens_refused, before.full_rounds + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out_as_graph_asks_and_then_given_up() {
    let sim = sim();
    let mut s = source(&sim, json!({ "max_retries": 2 }));
    sim.throttle_users(1, 1);
    let t0 = Instant::now();
    let p = s.pass(PassKind::Full, None).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(1), "Retry-After: 1 waited out ({:?})", t0.elapsed());
    assert_eq!(p.entries.len(), 4);
    let st = sim.users_stats();
    assert_eq!((st.throttled, st.early_after_retry_after), (1, 0));
    sim.throttle_users(5, 1);
    let e = s.pass(PassKind::Incremental, p.cursor.as_deref()).await.unwrap_err();
    assert!(matches!(&e, SourceError::Connect(m) if m.contains("throttling")), "{e}");
    assert_eq!(sim.users_stats().throttled, 4, "two retries, then the pass gave up");
    let mut impatient = source(&sim, json!({ "max_retry_wait_secs": 1 }));
    sim.throttle_users(1, 30);
    let t1 = Instant::now();
    let e = impatient.pass(PassKind::Full, None).await.unwrap_err();
    assert!(matches!(&e, SourceError::Connect(m) if m.contains("30 s")), "{e}");
    assert!(t1.elapsed() < Duration::from_secs(5), "a wait past max_retry_wait_secs is not slept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_client_secret_is_an_authentication_error() {
    let sim = sim();
    let mut s = source(&sim, json!({ "client_secret": "wrong" }));
    let e = s.pass(PassKind::Full, None).await.unwrap_err();
    assert!(matches!(&e, SourceError::Auth(m) if m.contains("invalid_client")), "{e}");
    assert!(!e.to_string().contains("wrong"), "the secret is not in the error: {e}");
    assert_eq!(sim.users_stats().delta_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_mode_reads_the_transitive_members_whole_every_time() {
    let sim = sim();
    sim.set_group("g-staff", &["id-anna"], &["g-finance"]);
    sim.set_group("g-finance", &["id-bo", "id-cia", "id-dan"], &["g-staff"]);
    sim.set_group("g-other", &["id-eva"], &[]);
    let mut s = source(&sim, json!({ "group": "g-staff", "page_size": 2 }));
    let p = s.pass(PassKind::Incremental, None).await.unwrap();
    assert_eq!((p.kind, p.cursor.as_deref()), (PassKind::Full, None));
    assert_eq!(keys(&p), ["id-anna", "id-bo", "id-cia"], "nested members, the disabled one filtered, no one from other groups");
    assert_eq!(entry(&p, "id-anna").sip_uri.as_deref(), Some("sip:anna@sip.example.com"));
    assert_eq!(sim.users_stats().member_requests, 2, "four members in pages of two");
    sim.delete_user("id-cia", false);
    let p2 = s.pass(PassKind::Incremental, None).await.unwrap();
    assert_eq!((p2.kind, keys(&p2)), (PassKind::Full, vec!["id-anna", "id-bo"]));
    assert_eq!(sim.users_stats().delta_requests, 0, "group mode never reads /users/delta");
    let mut missing = source(&sim, json!({ "group": "g-none" }));
    let e = missing.pass(PassKind::Full, None).await.unwrap_err();
    assert!(matches!(&e, SourceError::Protocol(m) if m.contains("404")), "{e}");
}
