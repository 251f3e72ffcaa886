//! The OpenID provider test peer on its own, before any hub code uses it
//! (`tests/common/oidc.rs`, `tests/oidc/provider.mjs`, the npm package `oidc-provider`). These
//! tests act as a minimal relying party themselves: discovery, the code flow with PKCE (S256),
//! state and nonce through the dev login form, the token exchange with `client_secret_basic`,
//! the ID token checked with `jsonwebtoken` against the JWKS, key rotation, a token forged with
//! the peer's own key that the JWKS vouches for, and RP-initiated logout. No page of the
//! provider loads anything from outside loopback.
//!
//! Needs Node.js and `npm ci --prefix tests/oidc` (`./test.sh` does both); without them these
//! tests fail and say what to install.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::common::oidc::{
    browse, external_urls, form_body, http_client, pkce_challenge, query_param, random_token, sign_in, sign_out,
    try_sign_in, CookieJar, OidcClient, OidcOptions, OidcPeer,
};

const CLIENT_ID: &str = "presence-hub";
const CLIENT_SECRET: &str = "hub-client-secret-0123456789";
const REDIRECT: &str = "http://127.0.0.1:9/auth/callback";

fn alice() -> Value {
    json!({
        "sub": "alice-sub",
        "email": "alice@example.com",
        "name": "Alice Andersen",
        "preferred_username": "alice",
        "oid": "6f1c2a3b-0000-4000-8000-000000000001",
        "roles": ["presence.operator"],
        "groups": ["switchboard", "oslo"],
    })
}

fn bob() -> Value {
    json!({ "sub": "bob-sub", "email": "bob@example.com", "roles": [] })
}

fn start() -> OidcPeer {
    let mut client = OidcClient::new(CLIENT_ID, CLIENT_SECRET, REDIRECT);
    client.post_logout_redirect_uris = vec!["http://127.0.0.1:9/".into()];
    OidcPeer::start(OidcOptions { clients: vec![client], accounts: vec![alice(), bob()], port: None })
}

async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

async fn discovery(peer: &OidcPeer) -> Value {
    get_json(&http_client(), &peer.url("/.well-known/openid-configuration")).await
}

async fn jwks(peer: &OidcPeer) -> JwkSet {
    let d = discovery(peer).await;
    let r = http_client().get(d["jwks_uri"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// One authorization request's secrets and URL.
struct AuthRequest {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

async fn auth_request(peer: &OidcPeer, pkce: bool) -> AuthRequest {
    let d = discovery(peer).await;
    let (state, nonce, verifier) = (random_token(), random_token(), random_token());
    let challenge = pkce_challenge(&verifier);
    let mut params = vec![
        ("client_id", CLIENT_ID),
        ("response_type", "code"),
        ("scope", "openid email profile"),
        ("redirect_uri", REDIRECT),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
    ];
    if pkce {
        params.extend([("code_challenge", challenge.as_str()), ("code_challenge_method", "S256")]);
    }
    let url = format!("{}?{}", d["authorization_endpoint"].as_str().unwrap(), form_body(&params));
    AuthRequest { url, state, nonce, verifier }
}

/// Redeems `code` at the token endpoint with `client_secret_basic`: (status, body).
async fn redeem(peer: &OidcPeer, code: &str, verifier: &str) -> (u16, Value) {
    let d = discovery(peer).await;
    let body = form_body(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ]);
    let r = http_client()
        .post(d["token_endpoint"].as_str().unwrap())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Signs in as `login` and returns the ID token (after checking state, iss and the redemption).
async fn id_token_for(peer: &OidcPeer, login: &str) -> (String, AuthRequest) {
    let req = auth_request(peer, true).await;
    let back = sign_in(&http_client(), &req.url, login, REDIRECT).await;
    assert_eq!(query_param(&back, "state").as_deref(), Some(req.state.as_str()), "{back}");
    assert_eq!(query_param(&back, "iss").as_deref(), Some(peer.issuer()), "{back}");
    let code = query_param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let (status, tokens) = redeem(peer, &code, &req.verifier).await;
    assert_eq!(status, 200, "{tokens}\n{}", peer.log());
    assert_eq!(tokens["token_type"], "Bearer", "{tokens}");
    (tokens["id_token"].as_str().expect("an id_token").to_string(), req)
}

/// Verifies `token` against `jwks` by its kid (RS256, aud = client, iss = issuer).
fn verify(peer: &OidcPeer, jwks: &JwkSet, token: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid in the header")?;
    let jwk = jwks.find(&kid).ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[CLIENT_ID]);
    v.set_issuer(&[peer.issuer()]);
    jsonwebtoken::decode::<Value>(token, &key, &v).map(|t| t.claims).map_err(|e| e.to_string())
}

#[tokio::test]
async fn discovery_names_the_endpoints_and_the_jwks_has_the_key() {
    let peer = start();
    assert_eq!(peer.issuer(), format!("http://127.0.0.1:{}", peer.port()));
    let d = discovery(&peer).await;
    assert_eq!(d["issuer"], peer.issuer());
    for ep in ["authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint", "userinfo_endpoint"] {
        let url = d[ep].as_str().unwrap_or_else(|| panic!("no {ep} in {d}"));
        assert!(url.starts_with(&format!("{}/", peer.issuer())), "{ep}: {url}");
    }
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]), "{d}");
    assert!(d["id_token_signing_alg_values_supported"].as_array().unwrap().contains(&json!("RS256")), "{d}");
    for claim in ["sub", "oid", "roles", "groups", "email", "name", "preferred_username"] {
        assert!(d["claims_supported"].as_array().unwrap().contains(&json!(claim)), "{claim}: {d}");
    }

    let raw = get_json(&http_client(), d["jwks_uri"].as_str().unwrap()).await;
    let keys = raw["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{raw}");
    assert_eq!(keys[0]["kid"], peer.kid());
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert!(keys[0].get("d").is_none(), "the JWKS shows the private key: {raw}");
}

#[tokio::test]
async fn code_flow_with_pkce_gives_an_id_token_that_verifies() {
    let peer = start();
    // By email, in another case: the dev login form takes an account's sub or email.
    let (token, req) = id_token_for(&peer, "Alice@Example.com").await;
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(), Some(peer.kid()));
    let claims = verify(&peer, &jwks(&peer).await, &token).unwrap();
    let a = alice();
    assert_eq!(claims["sub"], a["sub"], "{claims}");
    assert_eq!(claims["aud"], CLIENT_ID, "{claims}");
    assert_eq!(claims["nonce"], req.nonce.as_str(), "{claims}");
    for k in ["oid", "roles", "groups", "email", "name", "preferred_username"] {
        assert_eq!(claims[k], a[k], "{k}: {claims}");
    }
    assert_eq!(claims["email_verified"], true, "{claims}");
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
    assert!(exp > iat + 60, "{claims}");

    // By sub, as another account: that account's claims.
    let (token, _) = id_token_for(&peer, "bob-sub").await;
    let claims = verify(&peer, &jwks(&peer).await, &token).unwrap();
    assert_eq!(claims["sub"], "bob-sub", "{claims}");
    assert_eq!(claims["email"], "bob@example.com", "{claims}");
    assert_eq!(claims["roles"], json!([]), "{claims}");
    assert!(claims.get("oid").is_none(), "{claims}");
}

#[tokio::test]
async fn pkce_is_enforced() {
    let peer = start();
    // Without a code_challenge the provider sends the browser back with an error, no code.
    let req = auth_request(&peer, false).await;
    let back = sign_in(&http_client(), &req.url, "alice-sub", REDIRECT).await;
    assert_eq!(query_param(&back, "error").as_deref(), Some("invalid_request"), "{back}");
    assert_eq!(query_param(&back, "code"), None, "{back}");

    // With one, a wrong code_verifier is refused at the token endpoint.
    let req = auth_request(&peer, true).await;
    let back = sign_in(&http_client(), &req.url, "alice-sub", REDIRECT).await;
    let code = query_param(&back, "code").unwrap();
    let (status, body) = redeem(&peer, &code, &random_token()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

#[tokio::test]
async fn unknown_login_is_refused_visibly() {
    let peer = start();
    let req = auth_request(&peer, true).await;
    let page = try_sign_in(&http_client(), &req.url, "mallory@example.com", REDIRECT)
        .await
        .expect_err("an unknown login signed in");
    assert_eq!(page.status, 400, "{page}");
    assert!(page.body.contains("Sign-in failed"), "{page}");
    assert!(page.body.contains("Unknown login"), "{page}");
    assert!(page.body.contains("mallory@example.com"), "{page}");
    assert!(peer.log().contains("unknown login"), "{}", peer.log());
}

#[tokio::test]
async fn rotate_key_changes_the_kid_on_the_same_issuer() {
    let mut peer = start();
    let (old_token, _) = id_token_for(&peer, "alice-sub").await;
    let (old_kid, old_der, issuer) = (peer.kid().to_string(), peer.signing_key_der().to_vec(), peer.issuer().to_string());
    assert!(verify(&peer, &jwks(&peer).await, &old_token).is_ok());

    peer.rotate_key();
    assert_eq!(peer.issuer(), issuer);
    assert_ne!(peer.kid(), old_kid);
    assert_ne!(peer.signing_key_der(), &old_der[..]);
    let set = jwks(&peer).await;
    assert_eq!(set.keys.len(), 1);
    assert!(set.find(peer.kid()).is_some());
    assert!(set.find(&old_kid).is_none());
    let err = verify(&peer, &set, &old_token).unwrap_err();
    assert!(err.contains("not in the JWKS"), "{err}");

    let (token, _) = id_token_for(&peer, "alice-sub").await;
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(), Some(peer.kid()));
    assert_eq!(verify(&peer, &set, &token).unwrap()["sub"], "alice-sub");

    // A restart keeps the key.
    let kid = peer.kid().to_string();
    peer.restart();
    assert_eq!(peer.kid(), kid);
    assert!(jwks(&peer).await.find(&kid).is_some());
}

#[tokio::test]
async fn a_token_forged_with_the_peers_key_verifies_against_its_jwks() {
    let peer = start();
    let set = jwks(&peer).await;
    let claims = peer.id_token_claims(CLIENT_ID, &alice(), "forged-nonce");
    let token = peer.sign(&claims);
    let got = verify(&peer, &set, &token).unwrap();
    assert_eq!(got["nonce"], "forged-nonce");
    assert_eq!(got["oid"], alice()["oid"]);

    // The same claims, tampered with after signing: the signature no longer holds.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut tampered = claims.clone();
    tampered["roles"] = json!(["presence.admin"]);
    use base64::Engine as _;
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered).unwrap());
    let err = verify(&peer, &set, &parts.join(".")).unwrap_err();
    assert!(err.contains("InvalidSignature"), "{err}");

    // Expired and wrong-audience forgeries are what the hub's tests will make; jsonwebtoken
    // itself refuses them here.
    let mut expired = claims.clone();
    expired["exp"] = json!(claims["iat"].as_u64().unwrap() - 3600);
    assert!(verify(&peer, &set, &peer.sign(&expired)).unwrap_err().contains("ExpiredSignature"));
    let mut other_aud = claims;
    other_aud["aud"] = json!("someone-else");
    assert!(verify(&peer, &set, &peer.sign(&other_aud)).unwrap_err().contains("InvalidAudience"));
}

#[tokio::test]
async fn logout_confirms_ends_the_session_and_returns() {
    let peer = start();
    let d = discovery(&peer).await;
    let c = http_client();
    let mut jar = CookieJar::default();

    let req = auth_request(&peer, true).await;
    let back = browse(&c, &mut jar, &req.url, "alice@example.com", REDIRECT).await.unwrap();
    let (status, tokens) = redeem(&peer, &query_param(&back, "code").unwrap(), &req.verifier).await;
    assert_eq!(status, 200, "{tokens}");
    // The provider's session: the next authorization request needs no login (an empty one
    // would be refused, as below).
    let req = auth_request(&peer, true).await;
    let back = browse(&c, &mut jar, &req.url, "", REDIRECT).await.unwrap();
    assert!(query_param(&back, "code").is_some(), "{back}");

    // RP-initiated logout: the provider asks to confirm, then sends the browser back.
    let end = format!(
        "{}?{}",
        d["end_session_endpoint"].as_str().unwrap(),
        form_body(&[
            ("id_token_hint", tokens["id_token"].as_str().unwrap()),
            ("post_logout_redirect_uri", "http://127.0.0.1:9/"),
            ("state", "bye"),
        ])
    );
    let r = c.get(&end).header("cookie", jar.header()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Do you want to sign-out"), "{page}");
    assert_eq!(external_urls(&page), Vec::<String>::new(), "{page}");
    let back = sign_out(&c, &mut jar, &end, "http://127.0.0.1:9/").await;
    assert_eq!(query_param(&back, "state").as_deref(), Some("bye"), "{back}");

    // Signed out: the login form again.
    let req = auth_request(&peer, true).await;
    let page = browse(&c, &mut jar, &req.url, "", REDIRECT).await.expect_err("still signed in");
    assert_eq!(page.status, 400, "{page}");
    assert!(page.body.contains("Unknown login"), "{page}");

    // The error page (HTML for a browser), too, loads nothing from outside loopback.
    let r = c.get(peer.url("/interaction/no-such-interaction")).header("accept", "text/html").send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let page = r.text().await.unwrap();
    assert!(page.contains("oops! something went wrong"), "{page}");
    assert_eq!(external_urls(&page), Vec::<String>::new(), "{page}");
}
