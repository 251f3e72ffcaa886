//! The `ldap` directory source against a real slapd (started by the test): the source is built
//! from its TOML as the hub reads `[[directory.sources]]`, and each pass goes over loopback.
//! The AD-shaped tests use the test schema's `objectGUID`, `uSNChanged` (set by the test, as
//! OpenLDAP does not number changes) and AD's enabled-users filter; the `modifyTimestamp` test
//! uses plain `inetOrgPerson` entries keyed by `entryUUID`.

use std::process::Command;
use std::time::Duration;

use presence_providers::directory::{Pass, PassKind, SourceConfig, SourceError};
use presence_simulators::slapd::{self, ad_user, inet_person, user_dn, Options, Slapd};

/// AD's enabled users, as the default filter has it but without `objectCategory` (the test
/// schema has none).
const ENABLED: &str = "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))";

fn start(options: Options) -> Slapd {
    Slapd::start_with(options).unwrap_or_else(|e| panic!("{e}"))
}

/// A source's TOML: the service account, `ou=Staff`, AD's filter, and `extra`.
fn config(url: &str, extra: &str) -> String {
    format!(
        "type = \"ldap\"\nname = \"ad\"\nurl = {url}\nbind_dn = \"{}\"\npassword = \"{}\"\nbase_dn = \"{}\"\nfilter = \"{ENABLED}\"\ntimeout_secs = 5\n{extra}",
        slapd::SERVICE_DN,
        slapd::SERVICE_PASSWORD,
        slapd::STAFF
    )
}

fn quoted(url: &str) -> String {
    format!("\"{url}\"")
}

async fn pass(toml_text: &str, want: PassKind, cursor: Option<&str>) -> Result<Pass, SourceError> {
    let c: SourceConfig = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    let mut source = c.source()?;
    source.pass(want, cursor).await
}

/// The key of generated person `i`: `slapd::guid(i)` in AD's GUID text order.
fn key(i: u32) -> String {
    format!("{:08x}-b2a1-d4c3-1020-304050607080", i)
}

fn keys(p: &Pass) -> Vec<&str> {
    let mut k: Vec<&str> = p.entries.iter().map(|e| &*e.key).collect();
    k.sort();
    k
}

fn cursor_json(p: &Pass) -> serde_json::Value {
    serde_json::from_str(p.cursor.as_deref().expect("a cursor")).expect("the cursor is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_incremental_and_deletion_passes_of_an_ad_shaped_directory() {
    let s = start(Options::default());
    s.add_ldif(&[ad_user(1, 101, false), ad_user(2, 102, false), ad_user(3, 103, true)].join("\n")).await.unwrap();
    // An entry without objectGUID is left out, not an error.
    s.add_ldif(&format!("dn: cn=nokey,{}\nobjectClass: inetOrgPerson\nobjectClass: user\ncn: nokey\nsn: x\ndisplayName: No Key\nuSNChanged: 104\nuserAccountControl: 512\n", slapd::STAFF)).await.unwrap();
    let cfg = config(&quoted(&s.ldap_url()), "");

    let full = pass(&cfg, PassKind::Incremental, None).await.unwrap();
    assert_eq!(full.kind, PassKind::Full, "no cursor: a full pass");
    assert_eq!(keys(&full), [key(1), key(2)], "the disabled account and the keyless entry are left out");
    let one = &full.entries.iter().find(|e| *e.key == key(1)).unwrap().record;
    assert_eq!((one.id.as_deref(), one.name.as_deref(), one.email.as_deref()), (Some("user1"), Some("User 1"), Some("user1@example.com")));
    assert_eq!(one.phones, [(presence_actors::directory::PhoneKind::Mobile, "+47 900 00001".to_string()), (presence_actors::directory::PhoneKind::Work, "+47 22 00001".to_string())]);
    assert_eq!((one.extension.as_deref(), one.title.as_deref(), one.department.as_deref()), (Some("1001"), Some("Engineer"), Some("Support")));
    assert_eq!((one.sip_uri.as_deref(), one.entra_id.as_deref()), (Some("sip:user1@example.com"), Some("User_00000000-0000-0000-0000-000000000001")));
    // auto: every entry has uSNChanged and the rootDSE has no highestCommittedUSN (not AD).
    let c0 = cursor_json(&full);
    assert_eq!((c0["mode"].as_str(), c0["value"].as_str(), c0["server"].as_str()), (Some("usn"), Some("104"), Some(s.ldap_url().as_str())));

    let quiet = pass(&cfg, PassKind::Incremental, full.cursor.as_deref()).await.unwrap();
    assert_eq!((quiet.kind, quiet.entries.len()), (PassKind::Incremental, 0));
    assert_eq!(quiet.cursor, full.cursor);

    s.replace(&user_dn(2), &[("displayName", &[b"User Two"]), ("uSNChanged", &[b"200"])]).await.unwrap();
    let changed = pass(&cfg, PassKind::Incremental, quiet.cursor.as_deref()).await.unwrap();
    assert_eq!((changed.kind, keys(&changed)), (PassKind::Incremental, vec![key(2).as_str()]), "only the changed entry");
    assert_eq!(changed.entries[0].record.name.as_deref(), Some("User Two"));
    assert_eq!(cursor_json(&changed)["value"].as_str(), Some("200"), "the cursor advances");
    let again = pass(&cfg, PassKind::Incremental, changed.cursor.as_deref()).await.unwrap();
    assert_eq!((again.kind, again.entries.len(), &again.cursor), (PassKind::Incremental, 0, &changed.cursor));

    // A deletion is seen only by the full pass.
    s.delete(&user_dn(1)).await.unwrap();
    let after_delete = pass(&cfg, PassKind::Incremental, again.cursor.as_deref()).await.unwrap();
    assert_eq!(after_delete.entries.len(), 0, "LDAP does not report deletions to an incremental search");
    let full2 = pass(&cfg, PassKind::Full, again.cursor.as_deref()).await.unwrap();
    assert_eq!((full2.kind, keys(&full2)), (PassKind::Full, vec![key(2).as_str()]), "the full pass no longer has the deleted person");
    assert!(pass(&cfg, PassKind::Incremental, Some("garbage")).await.unwrap().kind == PassKind::Full, "an unreadable cursor: a full pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_reads_past_the_server_size_limit_and_max_entries_stops_a_pass() {
    const N: u32 = 1_250;
    let people: Vec<String> = (1..=N).map(|i| ad_user(i, 1000 + u64::from(i), false)).collect();
    let s = start(Options { size_limit: Some(500), ldif: Some(people.join("\n")) });
    // Without paging the service account hits the server's limit of 500.
    let unpaged = Command::new("ldapsearch")
        .args(["-x", "-LLL", "-H", &s.ldap_url(), "-D", slapd::SERVICE_DN, "-w", slapd::SERVICE_PASSWORD, "-b", slapd::STAFF, ENABLED, "1.1"])
        .output()
        .expect("ldapsearch (ldap-utils)");
    assert_eq!(unpaged.status.code(), Some(4), "sizeLimitExceeded without paging: {}", String::from_utf8_lossy(&unpaged.stderr));

    let p = pass(&config(&quoted(&s.ldap_url()), "page_size = 200"), PassKind::Full, None).await.unwrap();
    assert_eq!(p.entries.len(), N as usize);
    let mut k = keys(&p);
    k.dedup();
    assert_eq!(k.len(), N as usize, "every key once");
    assert_eq!(cursor_json(&p)["value"].as_str(), Some((1000 + N).to_string().as_str()));

    let limited = pass(&config(&quoted(&s.ldap_url()), "max_entries = 1000"), PassKind::Full, None).await;
    assert!(matches!(&limited, Err(SourceError::Limit(m)) if m.contains("max_entries (1000)")), "{limited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_tls_and_ldaps_with_the_test_ca_and_a_wrong_ca_fails() {
    let s = start(Options::default());
    s.add_ldif(&ad_user(7, 7, false)).await.unwrap();
    let ca = s.ca_file().display().to_string();
    let other = s.other_ca_file().display().to_string();

    let starttls = pass(&config(&quoted(&s.ldap_url()), &format!("start_tls = true\ntls_ca_file = \"{ca}\"")), PassKind::Full, None).await.unwrap();
    assert_eq!(keys(&starttls), [key(7)]);
    let ldaps = pass(&config(&quoted(&s.ldaps_url()), &format!("tls_ca_file = \"{ca}\"")), PassKind::Full, None).await.unwrap();
    assert_eq!(keys(&ldaps), [key(7)]);

    for (url, extra) in [(s.ldaps_url(), format!("tls_ca_file = \"{other}\"")), (s.ldap_url(), format!("start_tls = true\ntls_ca_file = \"{other}\""))] {
        let r = pass(&config(&quoted(&url), &extra), PassKind::Full, None).await;
        assert!(matches!(&r, Err(SourceError::Connect(m)) if m.contains(&url) && m.to_lowercase().contains("certificate")), "{url}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_auth_error() {
    let s = start(Options::default());
    let cfg = config(&quoted(&s.ldap_url()), "").replace(slapd::SERVICE_PASSWORD, "wrong-password");
    let r = pass(&cfg, PassKind::Full, None).await;
    assert!(matches!(&r, Err(SourceError::Auth(m)) if m.contains("invalid credentials") && m.contains("49")), "{r:?}");
    // A base that does not exist is a configuration error, not an empty directory.
    let cfg = config(&quoted(&s.ldap_url()), "").replace(slapd::STAFF, "ou=Nobody,dc=example,dc=com");
    let r = pass(&cfg, PassKind::Full, None).await;
    assert!(matches!(&r, Err(SourceError::Config(m)) if m.contains("does not exist")), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_over_to_the_next_url_and_a_cursor_from_another_server_means_a_full_pass() {
    let a = start(Options::default());
    let b = start(Options::default());
    for s in [&a, &b] {
        s.add_ldif(&[ad_user(1, 11, false), ad_user(2, 12, false)].join("\n")).await.unwrap();
    }
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ldap://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let both = config(&format!("[\"{dead}\", \"{}\"]", a.ldap_url()), "");
    let p = pass(&both, PassKind::Full, None).await.unwrap();
    assert_eq!(keys(&p), [key(1), key(2)], "the dead server is skipped");
    assert_eq!(cursor_json(&p)["server"].as_str(), Some(a.ldap_url().as_str()));

    // uSNChanged is per server: a cursor from A is no use on B.
    let on_b = pass(&config(&quoted(&b.ldap_url()), ""), PassKind::Incremental, p.cursor.as_deref()).await.unwrap();
    assert_eq!((on_b.kind, on_b.entries.len()), (PassKind::Full, 2));
    let on_a = pass(&both, PassKind::Incremental, p.cursor.as_deref()).await.unwrap();
    assert_eq!((on_a.kind, on_a.entries.len()), (PassKind::Incremental, 0));

    let r = pass(&config(&format!("[\"{dead}\", \"{dead}/\"]"), ""), PassKind::Full, None).await;
    assert!(matches!(&r, Err(SourceError::Connect(m)) if m.matches(&dead).count() == 2), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modify_timestamp_mode_on_plain_inet_org_person_entries() {
    let s = start(Options::default());
    s.add_ldif(&[inet_person(1), inet_person(2)].join("\n")).await.unwrap();
    let cfg = config(
        &quoted(&s.ldap_url()),
        "[attributes]\nkey = \"entryUUID\"\nid = \"uid\"\nextension = \"\"\nsip_uri = \"\"\nentra_id = \"\"\ndepartment = \"\"\nupn = \"\"\n",
    )
    .replace(ENABLED, "(objectClass=inetOrgPerson)");
    let full = pass(&cfg, PassKind::Full, None).await.unwrap();
    assert_eq!(full.entries.len(), 2);
    assert!(full.entries.iter().all(|e| e.key.len() == 36 && e.key.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())), "entryUUIDs");
    let person1 = full.entries.iter().find(|e| e.record.id.as_deref() == Some("person1")).unwrap().key.clone();
    let c0 = cursor_json(&full);
    assert_eq!(c0["mode"].as_str(), Some("modify_timestamp"), "auto without uSNChanged: modifyTimestamp");

    // modifyTimestamp counts whole seconds: change person2 in a later second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.replace(&format!("uid=person2,{}", slapd::STAFF), &[("displayName", &[b"Person Two"])]).await.unwrap();
    let changed = pass(&cfg, PassKind::Incremental, full.cursor.as_deref()).await.unwrap();
    assert_eq!(changed.kind, PassKind::Incremental);
    let two = changed.entries.iter().find(|e| e.record.id.as_deref() == Some("person2")).expect("the changed entry");
    assert_eq!(two.record.name.as_deref(), Some("Person Two"));
    assert!(cursor_json(&changed)["value"].as_str() > c0["value"].as_str(), "the cursor advances");
    // From the new cursor only the last second is read again: not person1.
    let again = pass(&cfg, PassKind::Incremental, changed.cursor.as_deref()).await.unwrap();
    assert_eq!(again.kind, PassKind::Incremental);
    assert!(again.entries.iter().all(|e| e.key != person1), "{:?}", keys(&again));
    assert_eq!(again.cursor, changed.cursor);
}
