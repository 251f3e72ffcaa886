//! Issue 14: people sign in as themselves, against a real OpenID provider (`oidc-provider`,
//! started by [`crate::common::oidc`]), over HTTP as a browser would: the authorization code
//! flow with PKCE, role mapping from the `roles` claim, the person found by `oid`, sessions
//! (cookie, CSRF, Origin, sign-out with RP-initiated logout, revocation, restart), self-service
//! absences, and the audit trail of all of it. Forged ID tokens (tampered, expired, wrong
//! audience, wrong nonce, unknown key) are checked against the provider's real key set.

use std::time::{Duration, Instant};

use presence_hub::signin::oidc::{Expect, OidcError, Provider, VerifyError};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::oidc::{self, OidcClient, OidcOptions, OidcPeer};
use crate::common::*;

const CLIENT_ID: &str = "presence-hub";
const SECRET: &str = "hub-secret-0123456789";

/// Åsa (Växel) is matched by her Entra object id; no role claim → `self`.
fn asa() -> Value {
    json!({ "sub": "asa", "email": "asa.ostberg@nordvik.se", "name": "Åsa Ö", "oid": "10a7755d-ff8d-5b50-bd78-633734ff90bf", "roles": [] })
}
/// Märta is a switchboard operator by app role.
fn marta() -> Value {
    json!({ "sub": "marta", "email": "marta.lind@nordvik.se", "name": "Märta", "oid": "90bf63e4-f92d-5ea4-8fc7-2173b740edff", "roles": ["Switchboard"] })
}
/// A consultant with the admin app role whom the directory does not know.
fn outsider() -> Value {
    json!({ "sub": "ext", "email": "ext@consult.example", "name": "Extern Konsult", "oid": "00000000-0000-0000-0000-00000000e0e0", "roles": ["PresenceAdmins"] })
}

struct Setup {
    peer: OidcPeer,
    hub: Server,
    base: String,
}

fn oidc_config(c: &mut presence_hub::config::Config, issuer: &str, base: &str) {
    c.http.public_url = Some(base.to_string());
    c.auth.oidc = Some(
        toml::from_str(&format!(
            "issuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{SECRET}\"\nname = \"Nordvik ID\"\n\
             [roles]\n\"Switchboard\" = \"operator\"\n\"PresenceAdmins\" = \"admin\"\n"
        ))
        .unwrap(),
    );
}

fn setup(tag: &str) -> Setup {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut client = OidcClient::new(CLIENT_ID, SECRET, &format!("{base}/auth/callback"));
    client.post_logout_redirect_uris = vec![format!("{base}/")];
    let peer = OidcPeer::start(OidcOptions { clients: vec![client], accounts: vec![asa(), marta(), outsider()], port: None });
    let mut c = test_config(temp_dir(tag));
    oidc_config(&mut c, peer.issuer(), &base);
    let hub = start_on(c, listener);
    Setup { peer, hub, base }
}

/// A browser's view of the hub: its cookies, sent by hand.
#[derive(Clone, Default)]
struct Browser {
    session: Option<String>,
    csrf: Option<String>,
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let (k, rest) = v.split_once('=')?;
        (k == name).then(|| rest.split(';').next().unwrap_or_default().to_string())
    })
}

/// Signs `login` in through the hub: /auth/login → the provider's form → /auth/callback.
/// Returns the browser with its session and CSRF token, and the callback's answer.
async fn sign_in(s: &Setup, login: &str) -> Browser {
    let (b, r) = try_sign_in(s, login).await;
    assert_eq!(r.status(), 302, "callback: {:?}", r.headers());
    assert_eq!(r.headers()["location"], "/#/me");
    b
}

async fn try_sign_in(s: &Setup, login: &str) -> (Browser, reqwest::Response) {
    let c = oidc::http_client();
    let r = c.get(format!("{}/auth/login?return_to=/%23/me", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let login_cookie = set_cookie(&r, "ph_login").expect("the login cookie");
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    assert!(authorize.starts_with(&format!("{}/", s.peer.issuer())), "{authorize}");
    for p in ["code_challenge_method=S256", "response_type=code", "nonce=", "state=", "scope=openid+profile+email"] {
        assert!(authorize.contains(p), "{p} in {authorize}");
    }
    let back = oidc::sign_in(&c, &authorize, login, &format!("{}/auth/callback", s.base)).await;
    let r = c.get(&back).header("cookie", format!("ph_login={login_cookie}")).send().await.unwrap();
    let session = set_cookie(&r, "ph_session").filter(|v| !v.is_empty());
    let mut b = Browser { session, csrf: None };
    if b.session.is_some() {
        let me = me(s, &b).await.1;
        b.csrf = me["csrf_token"].as_str().map(str::to_string);
    }
    (b, r)
}

fn with(b: &Browser, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &b.session {
        Some(v) => r.header("cookie", format!("ph_session={v}")),
        None => r,
    }
}

async fn me(s: &Setup, b: &Browser) -> (StatusCode, Value) {
    let r = with(b, client().get(format!("{}/api/me", s.base))).send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

/// A cookie write as the hub's own page sends it (Origin and X-CSRF-Token).
async fn write(s: &Setup, b: &Browser, m: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = with(b, client().request(m, format!("{}{path}", s.base))).header("origin", &s.base);
    if let Some(t) = &b.csrf {
        r = r.header("x-csrf-token", t);
    }
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

async fn audit(s: &Setup, q: &str) -> Vec<Value> {
    let v: Value = client().get(format!("{}/api/audit?{q}", s.base)).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    v["entries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colleagues_sign_in_get_their_roles_and_set_only_their_own_absences() {
    let s = setup("signin");
    let ui: Value = client().get(format!("{}/api/ui", s.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ui["oidc"]["name"], "Nordvik ID");

    // Åsa: in the directory by oid, no app role → self.
    let asa = sign_in(&s, "asa").await;
    let (st, m) = me(&s, &asa).await;
    assert_eq!(st, 200, "{m}");
    assert_eq!((m["role"].as_str(), m["via"].as_str(), m["person"]["id"].as_str()), (Some("self"), Some("oidc"), Some("asa.ostberg")), "{m}");
    assert_eq!(m["name"], "Åsa Östberg", "the directory's name wins");
    assert!(m["csrf_token"].as_str().unwrap().len() >= 40);

    // Own absence: 201, and presence shows it; someone else's: 403 before the body is read.
    let (st, v) = write(&s, &asa, reqwest::Method::POST, "/api/users/asa.ostberg/absences", Some(json!({ "reason": "lunch" }))).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["absence"]["created_by"], "Åsa Östberg");
    assert_eq!(v["presence"]["activity"], "Lunch");
    let aid = v["absence"]["id"].as_str().unwrap().to_string();
    let (st, v) = write(&s, &asa, reqwest::Method::POST, "/api/users/marta.lind/absences", Some(json!({ "reason": "lunch" }))).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["error"], "forbidden");
    let (st, _) = write(&s, &asa, reqwest::Method::PUT, &format!("/api/users/asa.ostberg/absences/{aid}"), Some(json!({ "reason": "meeting" }))).await;
    assert_eq!(st, 200);

    // CSRF: without the header, with a wrong one, and from another origin — refused, nothing written.
    let no_csrf = Browser { csrf: None, ..asa.clone() };
    let (st, v) = write(&s, &no_csrf, reqwest::Method::DELETE, &format!("/api/users/asa.ostberg/absences/{aid}"), None).await;
    assert_eq!((st, v["error"].as_str()), (StatusCode::FORBIDDEN, Some("csrf")), "{v}");
    let wrong = Browser { csrf: Some("x".repeat(43)), ..asa.clone() };
    let (st, _) = write(&s, &wrong, reqwest::Method::DELETE, &format!("/api/users/asa.ostberg/absences/{aid}"), None).await;
    assert_eq!(st, 403);
    let r = with(&asa, client().delete(format!("{}/api/users/asa.ostberg/absences/{aid}", s.base)))
        .header("origin", "https://evil.example")
        .header("x-csrf-token", asa.csrf.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Reads with the cookie need no CSRF token; streams take the cookie (no token in the URL).
    let r = with(&asa, client().get(format!("{}/api/users/asa.ostberg/absences", s.base))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "the refused deletes changed nothing");
    let (st, _) = write(&s, &asa, reqwest::Method::DELETE, &format!("/api/users/asa.ostberg/absences/{aid}"), None).await;
    assert_eq!(st, 204);

    // Märta: operator by app role, sets anyone's.
    let marta = sign_in(&s, "marta.lind@nordvik.se").await;
    assert_eq!(me(&s, &marta).await.1["role"], "operator");
    let (st, v) = write(&s, &marta, reqwest::Method::POST, "/api/users/asa.ostberg/absences", Some(json!({ "reason": "meeting" }))).await;
    assert_eq!(st, 201, "{v}");

    // The outsider: admin by claim, but not in the directory → viewer, and told so.
    let ext = sign_in(&s, "ext").await;
    let (_, m) = me(&s, &ext).await;
    assert_eq!((m["role"].as_str(), m["in_directory"].as_bool(), m["name"].as_str()), (Some("viewer"), Some(false), Some("Extern Konsult")), "{m}");
    let (st, _) = write(&s, &ext, reqwest::Method::POST, "/api/users/asa.ostberg/absences", Some(json!({ "reason": "lunch" }))).await;
    assert_eq!(st, 403);
    let r = with(&ext, client().get(format!("{}/api/audit", s.base))).send().await.unwrap();
    assert_eq!(r.status(), 403);

    // The audit trail: who did what, by which means.
    let signins = audit(&s, "action=signin").await;
    let who: Vec<_> = signins.iter().map(|e| (e["actor"].as_str().unwrap(), e["role"].as_str().unwrap(), e["via"].as_str().unwrap())).collect();
    assert_eq!(who, [("Extern Konsult", "viewer", "oidc"), ("marta.lind", "operator", "oidc"), ("asa.ostberg", "self", "oidc")]);
    let writes = audit(&s, "action=absence.*&target=asa.ostberg").await;
    let what: Vec<_> = writes.iter().map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap())).collect();
    assert_eq!(
        what,
        [("absence.created", "marta.lind"), ("absence.cleared", "asa.ostberg"), ("absence.changed", "asa.ostberg"), ("absence.created", "asa.ostberg")]
    );
    // Refusals are written in the background.
    let t0 = Instant::now();
    let mut csrf = audit(&s, "action=csrf.refused").await;
    while csrf.len() < 3 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        csrf = audit(&s, "action=csrf.refused").await;
    }
    assert_eq!(csrf.len(), 3, "{csrf:?}");
    assert!(csrf.iter().all(|e| e["actor"] == "asa.ostberg"));

    // Sign out: the session ends, the provider's end-session URL comes back with the ID token hint.
    let (st, v) = write(&s, &asa, reqwest::Method::POST, "/auth/logout", None).await;
    assert_eq!(st, 200, "{v}");
    let end = v["end_session_url"].as_str().unwrap();
    assert!(end.starts_with(s.peer.issuer()) && end.contains("id_token_hint=") && end.contains("post_logout_redirect_uri="), "{end}");
    assert_eq!(me(&s, &asa).await.0, 401);
    assert_eq!(audit(&s, "action=signout").await[0]["actor"], "asa.ostberg");

    // An admin revokes Märta's session; an open SSE stream of hers ends at its next heartbeat.
    let sessions: Value = client().get(format!("{}/api/sessions", s.base)).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    let mid = sessions.as_array().unwrap().iter().find(|x| x["person"] == "marta.lind").unwrap()["id"].as_str().unwrap().to_string();
    let mut stream = with(&marta, client().get(format!("{}/api/events", s.base))).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.chunk().await.unwrap().is_some(), "the stream's first frame");
    let r = client().delete(format!("{}/api/sessions/{mid}", s.base)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(me(&s, &marta).await.0, 401);
    let t0 = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await {
            Ok(Ok(Some(_))) => assert!(t0.elapsed() < Duration::from_secs(5), "the stream went on after the revocation"),
            Ok(_) => break,
            Err(_) => panic!("the stream neither ended nor sent within 5 s"),
        }
    }
    let revoked = audit(&s, "action=session.revoked").await;
    assert_eq!((revoked[0]["actor"].as_str(), revoked[0]["target"].as_str()), (Some("admin"), Some(mid.as_str())));
    let r = client().delete(format!("{}/api/sessions/{mid}", s.base)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = with(&ext, client().delete(format!("{}/api/sessions/{mid}", s.base))).send().await.unwrap();
    assert_eq!(r.status(), 403, "a viewer may not revoke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_restart_and_the_cookie_is_http_only() {
    let s = setup("signin-restart");
    let c = oidc::http_client();
    let r = c.get(format!("{}/auth/login", s.base)).send().await.unwrap();
    let login_cookie = set_cookie(&r, "ph_login").unwrap();
    let back = oidc::sign_in(&c, r.headers()["location"].to_str().unwrap(), "asa", &format!("{}/auth/callback", s.base)).await;
    let r = c.get(&back).header("cookie", format!("ph_login={login_cookie}")).send().await.unwrap();
    let raw = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).find(|v| v.starts_with("ph_session=")).unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(raw.contains(attr), "{attr} in {raw}");
    }
    assert!(!raw.contains("Secure"), "plain http on loopback: no Secure ({raw})");
    let b = Browser { session: set_cookie(&r, "ph_session"), csrf: None };
    assert_eq!(me(&s, &b).await.0, 200);
    // The callback cannot be replayed.
    let r = c.get(&back).header("cookie", format!("ph_login={login_cookie}")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/?signin_error=expired");

    let Setup { peer, hub, base } = s;
    let addr = hub.addr;
    let dir = hub.stop();
    let mut cfg = test_config(dir);
    oidc_config(&mut cfg, peer.issuer(), &base);
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let s = Setup { peer, hub: start_on(cfg, listener), base };
    let (st, m) = me(&s, &b).await;
    assert_eq!((st, m["person"]["id"].as_str()), (StatusCode::OK, Some("asa.ostberg")), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_refused_clearly_and_audited() {
    let s = setup("signin-fail");
    let c = oidc::http_client();
    // The provider says no (the user cancelled).
    let r = c.get(format!("{}/auth/login", s.base)).send().await.unwrap();
    let login_cookie = set_cookie(&r, "ph_login").unwrap();
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    let state = oidc::query_param(&authorize, "state").unwrap();
    let r = c
        .get(format!("{}/auth/callback?error=access_denied&error_description=cancelled&state={state}", s.base))
        .header("cookie", format!("ph_login={login_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/?signin_error=denied");
    // A callback in a browser that did not start the sign-in (no login cookie): refused.
    let r = c.get(format!("{}/auth/login", s.base)).send().await.unwrap();
    let back = oidc::sign_in(&c, r.headers()["location"].to_str().unwrap(), "asa", &format!("{}/auth/callback", s.base)).await;
    let r = c.get(&back).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/?signin_error=expired");
    assert!(set_cookie(&r, "ph_session").is_none_or(|v| v.is_empty()));
    // A made-up code with a real state: the provider refuses the exchange.
    let r = c.get(format!("{}/auth/login", s.base)).send().await.unwrap();
    let login_cookie = set_cookie(&r, "ph_login").unwrap();
    let state = oidc::query_param(r.headers()["location"].to_str().unwrap(), "state").unwrap();
    let r = c.get(format!("{}/auth/callback?code=made-up&state={state}", s.base)).header("cookie", format!("ph_login={login_cookie}")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/?signin_error=refused");
    // A callback with neither code nor state (a hand-typed or truncated URL).
    let r = c.get(format!("{}/auth/callback", s.base)).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/?signin_error=refused");
    // Signing out with a token: there is no session to end.
    let r = client().post(format!("{}/auth/logout", s.base)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let failed = audit(&s, "action=signin.failed").await;
    let codes: Vec<_> = failed.iter().map(|e| e["detail"]["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["refused", "refused", "expired", "denied"], "{failed:?}");
    assert!(failed[0]["detail"]["reason"].as_str().unwrap().contains("no code"), "{failed:?}");
    assert!(failed[1]["detail"]["reason"].as_str().unwrap().contains("invalid_grant"), "{failed:?}");
    assert!(audit(&s, "action=signin").await.is_empty());

    // No [auth.oidc]: the routes say so.
    let plain = start(test_config(temp_dir("signin-none")));
    let r = c.get(plain.url("/auth/login")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let ui: Value = client().get(plain.url("/api/ui")).send().await.unwrap().json().await.unwrap();
    assert!(ui["oidc"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_rotates_its_key_and_sign_in_goes_on() {
    let mut s = setup("signin-rotate");
    sign_in(&s, "asa").await;
    let old = s.peer.kid().to_string();
    s.peer.rotate_key();
    assert_ne!(s.peer.kid(), old);
    // The hub holds the old key set; the new token names a kid it does not know, so it re-reads.
    let b = sign_in(&s, "marta").await;
    assert_eq!(me(&s, &b).await.1["role"], "operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_id_tokens_are_refused_against_the_real_key_set() {
    let peer = OidcPeer::start(OidcOptions { clients: vec![OidcClient::new(CLIENT_ID, SECRET, "http://127.0.0.1:9/auth/callback")], accounts: vec![asa()], port: None });
    let provider = Provider::new(peer.issuer(), oidc::http_client());
    let expect = Expect { issuer: peer.issuer(), client_id: CLIENT_ID, nonce: "n-123", skew_secs: 60 };
    let good = peer.id_token_claims(CLIENT_ID, &asa(), "n-123");
    let ok = provider.verify(&peer.sign(&good), &expect).await.expect("a token signed with the provider's key is accepted");
    assert_eq!(ok.string("oid").as_deref(), Some("10a7755d-ff8d-5b50-bd78-633734ff90bf"));

    let refused = |e: Result<_, OidcError>| match e {
        Err(OidcError::Refused(v)) => v,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        peer.sign(&c)
    };
    let now = jsonwebtoken::get_current_timestamp();
    assert_eq!(refused(provider.verify(&with("exp", json!(now - 3600)), &expect).await), VerifyError::Expired);
    assert_eq!(refused(provider.verify(&with("aud", json!("another-app")), &expect).await), VerifyError::Audience);
    assert_eq!(refused(provider.verify(&with("aud", json!([CLIENT_ID, "another-app"])), &expect).await), VerifyError::Audience, "several audiences need azp");
    assert!(provider.verify(&{ let mut c = good.clone(); c["aud"] = json!([CLIENT_ID, "x"]); c["azp"] = json!(CLIENT_ID); peer.sign(&c) }, &expect).await.is_ok());
    assert_eq!(refused(provider.verify(&with("nonce", json!("replayed")), &expect).await), VerifyError::Nonce);
    assert_eq!(refused(provider.verify(&with("iss", json!("https://evil.example")), &expect).await), VerifyError::Issuer);
    assert_eq!(refused(provider.verify(&with("iat", json!(now + 3600)), &expect).await), VerifyError::NotYetValid);
    // Tampered: the payload of a good token changed (another person's oid), signature kept.
    let token = peer.sign(&good);
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = good.clone();
    claims["oid"] = json!("90bf63e4-f92d-5ea4-8fc7-2173b740edff");
    use base64::Engine;
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(refused(provider.verify(&tampered, &expect).await), VerifyError::Signature);
    // `alg: none` and a key the provider never published.
    let none = format!("{}.{}.", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"x"}"#), parts[1]);
    assert!(matches!(refused(provider.verify(&none, &expect).await), VerifyError::Malformed(_) | VerifyError::Algorithm(_)));
    let other = OidcPeer::start(OidcOptions { clients: vec![], accounts: vec![], port: None });
    let foreign = other.sign(&good);
    assert!(matches!(refused(provider.verify(&foreign, &expect).await), VerifyError::UnknownKey(_)));
}

/// `check-config --connect` fetches the provider's discovery document and keys, and fails
/// clearly when the provider is not there or names another issuer.
#[test]
fn check_config_connect_discovers_the_provider() {
    let peer = OidcPeer::start(OidcOptions { clients: vec![], accounts: vec![], port: None });
    let dir = temp_dir("signin-check");
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let run = |issuer: &str| {
        let config = dir.join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[http]\npublic_url = \"https://hub.example\"\n[auth.oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = {:?}\n",
                dir.join("data"),
                secret
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_presence-hub")).args(["--config", config.to_str().unwrap(), "check-config", "--connect"]).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (ok, out) = run(peer.issuer());
    assert!(ok, "{out}");
    assert!(out.contains(&format!("sign-in ({}): discovered; 1 signing keys; sign-out at the provider: yes; redirect URI https://hub.example/auth/callback", peer.issuer())), "{out}");
    let (ok, out) = run(&format!("{}/other", peer.issuer()));
    assert!(!ok && out.contains("FAILED"), "{out}");
}

/// Over https the session cookie is `__Host-ph_session` with `Secure` (bound to this host,
/// never sent over plain http), and the hub accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_cookie_is_secure_and_host_bound() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let peer = OidcPeer::start(OidcOptions { clients: vec![OidcClient::new(CLIENT_ID, SECRET, &format!("{base}/auth/callback"))], accounts: vec![asa()], port: None });
    let mut cfg = with_test_tls(test_config(temp_dir("signin-tls")));
    oidc_config(&mut cfg, peer.issuer(), &base);
    let hub = start_on(cfg, listener);
    let ca = reqwest::Certificate::from_pem(&test_ca_pem()).unwrap();
    let tls = reqwest::Client::builder().tls_certs_only([ca]).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = tls.get(hub.url("/auth/login")).send().await.unwrap();
    let login = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).find(|v| v.starts_with("ph_login=")).unwrap();
    assert!(login.contains("Secure") && login.contains("HttpOnly"), "{login}");
    let login_value = login.split(';').next().unwrap().to_string();
    let back = oidc::sign_in(&oidc::http_client(), r.headers()["location"].to_str().unwrap(), "asa", &format!("{base}/auth/callback")).await;
    let r = tls.get(&back).header("cookie", &login_value).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let raw = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).find(|v| v.starts_with("__Host-ph_session=")).expect("__Host- cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(raw.contains(attr), "{attr} in {raw}");
    }
    assert!(!raw.contains("Domain"), "{raw}");
    let value = raw.split(';').next().unwrap().to_string();
    let me: Value = tls.get(hub.url("/api/me")).header("cookie", &value).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["person"]["id"], "asa.ostberg");
    // The plain name is not accepted on a https hub.
    let r = tls.get(hub.url("/api/me")).header("cookie", value.replacen("__Host-", "", 1)).send().await.unwrap();
    assert_eq!(r.status(), 401);
}
