//! A real OpenID Connect provider as a test peer for the hub's OIDC sign-in: the certified
//! `oidc-provider` npm package (version pinned in `tests/oidc/package-lock.json`), configured by
//! `tests/oidc/provider.mjs`.
//!
//! * [`OidcPeer::start`] writes a config (clients, accounts) into a temp dir and runs
//!   `node tests/oidc/provider.mjs config.json` on a free loopback port; the issuer is
//!   `http://127.0.0.1:<port>`. Node generates a fresh RSA signing key (RS256) on each start
//!   and hands it back ([`OidcPeer::kid`], [`OidcPeer::signing_key_der`]), so tests can forge
//!   ID tokens that the peer's JWKS vouches for ([`OidcPeer::sign`]). [`OidcPeer::rotate_key`]
//!   restarts it on the same port with a new key and kid. Dropping it stops the process.
//! * The provider's scopes: `openid` gives `sub`, `oid`, `roles`, `groups`; `email` gives
//!   `email`, `email_verified`; `profile` gives `name`, `preferred_username` - all of them in the
//!   ID token of the code flow. PKCE (S256) is required, there is no consent screen, and
//!   discovery has an `end_session_endpoint` (RP-initiated logout).
//! * [`sign_in`] drives the provider's dev login form over HTTP, as a browser would: the login
//!   is an account's `sub` or `email`, any password. An unknown login gets a 400 page
//!   ("Sign-in failed ... Unknown login"), which [`try_sign_in`] returns as an error. The
//!   provider's pages load nothing from outside loopback (the script strips their web-font
//!   `@import`), so a browser can show them; [`try_sign_in`] checks that on every page.
//!   [`browse`] does the same with a [`CookieJar`] kept across calls (the provider's session),
//!   and [`sign_out`] answers the RP-initiated logout's confirmation.
//!
//! Needs Node.js 20.12 or later and the package: `apt-get install nodejs npm` and
//! `npm ci --prefix tests/oidc` (`./test.sh` does both); without them these tests fail and say
//! so - they never skip.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::kamailio::{file_tail, free_udp_tcp_port, stop_group};

pub const INSTALL_HINT: &str = "the OpenID provider peer needs Node.js (20.12 or later) and the \
     oidc-provider package: apt-get install nodejs npm && npm ci --prefix tests/oidc";

const START_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// One client registered at the provider.
#[derive(Clone, Debug)]
pub struct OidcClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Default (None): `client_secret_basic`.
    pub token_endpoint_auth_method: Option<String>,
}

impl OidcClient {
    /// A confidential client (`client_secret_basic`) with one redirect URI and no post-logout
    /// redirect URI.
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> OidcClient {
        OidcClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            post_logout_redirect_uris: Vec::new(),
            token_endpoint_auth_method: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut c = json!({
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": self.redirect_uris,
            "post_logout_redirect_uris": self.post_logout_redirect_uris,
        });
        if let Some(m) = &self.token_endpoint_auth_method {
            c["token_endpoint_auth_method"] = json!(m);
        }
        c
    }
}

/// What [`OidcPeer::start`] sets up.
#[derive(Clone, Debug, Default)]
pub struct OidcOptions {
    pub clients: Vec<OidcClient>,
    /// Each an object with `sub` and any claims: `email`, `email_verified` (default true when
    /// there is an email), `name`, `preferred_username`, `oid`, `roles` (array), `groups` (array).
    pub accounts: Vec<Value>,
    /// Listen on this port; default: a free one.
    pub port: Option<u16>,
}

/// A running OpenID provider on 127.0.0.1.
pub struct OidcPeer {
    opts: OidcOptions,
    dir: PathBuf,
    node: PathBuf,
    issuer: String,
    port: u16,
    kid: String,
    key_der: Vec<u8>,
    /// The private JWKS of the running instance (to restart with the same key).
    jwks: Value,
    /// Start number: names this instance's config, ready file and logs.
    generation: u32,
    child: Option<Child>,
}

/// `node`, after checking that it is new enough and that `npm ci` has been run.
fn require_node() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let node = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`node` not found; {INSTALL_HINT}"));
    let out = Command::new(&node)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}; {INSTALL_HINT}", node.display()));
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut parts = version.trim_start_matches('v').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        (major, minor) >= (20, 12),
        "{} is Node.js {version}; oidc-provider 9 needs 20.12 or later; {INSTALL_HINT}",
        node.display()
    );
    let package = oidc_dir().join("node_modules/oidc-provider/package.json");
    assert!(package.is_file(), "{} not found; {INSTALL_HINT}", package.display());
    node
}

impl OidcPeer {
    /// Starts the provider and waits for its ready line (well under a second). Panics with its
    /// stderr if it exits or does not come up within 20 s; on a port that was taken meanwhile
    /// it tries another (unless `opts.port` names one).
    pub fn start(opts: OidcOptions) -> OidcPeer {
        let node = require_node();
        let dir = super::temp_dir("oidc");
        let mut peer = OidcPeer {
            port: opts.port.unwrap_or(0),
            opts,
            dir,
            node,
            issuer: String::new(),
            kid: String::new(),
            key_der: Vec::new(),
            jwks: Value::Null,
            generation: 0,
            child: None,
        };
        peer.launch(None);
        peer
    }

    /// Starts node (the peer must be stopped) on `self.port` (0: a free one) with `jwks`
    /// (None: a fresh key), then reads back the issuer, port and key.
    fn launch(&mut self, jwks: Option<Value>) {
        let mut last_err = String::new();
        for _ in 0..3 {
            let fixed = self.port != 0;
            let port = if fixed { self.port } else { free_udp_tcp_port() };
            self.generation += 1;
            let g = self.generation;
            let ready = self.dir.join(format!("ready-{g}.json"));
            let mut config = json!({
                "port": port,
                "clients": self.opts.clients.iter().map(OidcClient::to_json).collect::<Vec<_>>(),
                "accounts": self.opts.accounts,
                "ready_file": ready,
            });
            if let Some(jwks) = &jwks {
                config["jwks"] = jwks.clone();
            }
            let config_path = self.dir.join(format!("config-{g}.json"));
            std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
            let stdout_path = self.dir.join(format!("stdout-{g}.log"));
            let child = Command::new(&self.node)
                .arg(oidc_dir().join("provider.mjs"))
                .arg(&config_path)
                .current_dir(oidc_dir())
                .stdin(Stdio::null())
                .stdout(File::create(&stdout_path).unwrap())
                .stderr(File::create(self.log_path()).unwrap())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL_HINT}", self.node.display()));
            self.child = Some(child);
            let t0 = Instant::now();
            loop {
                if std::fs::read_to_string(&stdout_path).unwrap_or_default().contains("listening ") {
                    let r: Value = serde_json::from_slice(&std::fs::read(&ready).unwrap())
                        .unwrap_or_else(|e| panic!("{}: {e}", ready.display()));
                    self.issuer = r["issuer"].as_str().unwrap().to_string();
                    self.port = r["port"].as_u64().unwrap() as u16;
                    self.kid = r["kid"].as_str().unwrap().to_string();
                    self.key_der = base64::engine::general_purpose::STANDARD
                        .decode(r["pkcs1_der"].as_str().unwrap())
                        .unwrap();
                    self.jwks = r["jwks"].clone();
                    return;
                }
                if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    self.child = None;
                    last_err = format!(
                        "the OpenID provider on port {port} exited during start-up ({st}):\n{}",
                        file_tail(&self.log_path(), 3000)
                    );
                    break;
                }
                if t0.elapsed() > START_TIMEOUT {
                    let log = file_tail(&self.log_path(), 3000);
                    self.stop();
                    panic!("the OpenID provider on port {port} was not ready within {START_TIMEOUT:?}; stderr:\n{log}");
                }
                std::thread::sleep(POLL);
            }
            eprintln!("oidc peer start failed: {last_err}");
            if !last_err.contains("EADDRINUSE") {
                break;
            }
            // Taken between the check and node's bind: another free port, or the same one
            // again a little later (the old instance's socket on its way out).
            if fixed {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        panic!("{last_err}");
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The issuer plus `path` (e.g. `/.well-known/openid-configuration`, `/jwks`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The `kid` of the current signing key (also in the JWKS and in every ID token's header).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The current private signing key, PKCS#1 DER (`EncodingKey::from_rsa_der`).
    pub fn signing_key_der(&self) -> &[u8] {
        &self.key_der
    }

    /// Signs `claims` as the provider would an ID token: RS256, header `kid` = [`Self::kid`].
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_rsa_der(&self.key_der))
            .expect("signing with the peer's key")
    }

    /// ID token claims the provider would issue to `client_id` for `account` (an entry of
    /// [`OidcOptions::accounts`]) with `nonce`, valid for 10 minutes from now: a starting point
    /// for forged tokens (change `exp`, `aud`, `nonce`, ... then [`Self::sign`]).
    pub fn id_token_claims(&self, client_id: &str, account: &Value, nonce: &str) -> Value {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut c = account.clone();
        if c.get("email").is_some() && c.get("email_verified").is_none() {
            c["email_verified"] = json!(true);
        }
        for (k, v) in [
            ("iss", json!(self.issuer)),
            ("aud", json!(client_id)),
            ("nonce", json!(nonce)),
            ("iat", json!(now)),
            ("exp", json!(now + 600)),
        ] {
            c[k] = v;
        }
        c
    }

    /// Restarts the provider on the same port with a fresh RSA key and a new kid. The JWKS then
    /// holds only the new key; tokens signed before name a kid it no longer has. Sessions and
    /// codes of the old instance are gone (the provider keeps them in memory).
    pub fn rotate_key(&mut self) {
        let old = self.kid.clone();
        self.stop();
        self.launch(None);
        assert_ne!(self.kid, old, "rotation kept the kid");
    }

    /// Restarts the provider on the same port with the same key (a provider outage).
    pub fn restart(&mut self) {
        let jwks = self.jwks.clone();
        self.stop();
        self.launch(Some(jwks));
    }

    /// Stops the provider (SIGTERM, SIGKILL after 3 s); nothing listens on the port then.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_group(child);
        }
    }

    /// Whether the provider process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The current instance's stderr: warnings, refused sign-ins, `grant.error` and the like.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("stderr-{}.log", self.generation))
    }

    /// The temp dir with the configs, ready files and logs (removed on drop unless panicking).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for OidcPeer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("oidc peer files kept in {} (stderr: {})", self.dir.display(), self.log_path().display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A client for [`sign_in`]: no automatic redirects (they are followed by hand, carrying the
/// provider's cookies), a 10 s timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// 32 random-enough bytes, base64url (43 characters): a PKCE verifier, state or nonce.
pub fn random_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// The PKCE `code_challenge` for `verifier` with method S256.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `pairs` as `application/x-www-form-urlencoded`.
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("http://form.invalid/").unwrap();
    u.query_pairs_mut().extend_pairs(pairs);
    u.query().unwrap_or("").to_string()
}

/// The value of query parameter `name` in `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    u.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// A page [`try_sign_in`] did not know what to do with.
#[derive(Debug)]
pub struct SignInPage {
    pub url: String,
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for SignInPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut end = self.body.len().min(4000);
        while !self.body.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{} answered {}:\n{}", self.url, self.status, &self.body[..end])
    }
}

/// The provider's cookies, carried by hand from one request to the next as a browser would
/// (by name: the provider's cookie names are distinct, so paths are not needed).
#[derive(Clone, Debug, Default)]
pub struct CookieJar(Vec<(String, String)>);

impl CookieJar {
    /// Keeps a `Set-Cookie`, or drops the cookie when it is being deleted.
    pub fn store(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else { return };
        let (name, value) = (name.trim().to_string(), value.trim().to_string());
        let deleted = value.is_empty()
            || parts.any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a == "max-age=0" || a.starts_with("expires=thu, 01 jan 1970")
            });
        self.0.retain(|(n, _)| *n != name);
        if !deleted {
            self.0.push((name, value));
        }
    }

    /// The `Cookie` header value ("" when empty).
    pub fn header(&self) -> String {
        self.0.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// [`try_sign_in`], panicking with the page text on an unexpected page.
pub async fn sign_in(client: &reqwest::Client, authorize_url: &str, login: &str, redirect_prefix: &str) -> String {
    match try_sign_in(client, authorize_url, login, redirect_prefix).await {
        Ok(url) => url,
        Err(page) => panic!("sign-in as {login:?} stopped at an unexpected page: {page}"),
    }
}

/// Signs in at the provider as a browser would: GETs `authorize_url` (the provider's
/// authorization request), follows redirects by hand carrying the provider's cookies, fills
/// in the dev login form (`login`, any password) and submits any other form the provider shows,
/// until the provider redirects to a URL starting with `redirect_prefix`, which it returns
/// (with `code`, `state` and `iss`, or with `error` when the provider refused the request).
/// `client` must not follow redirects itself ([`http_client`]). Any other page (an unknown
/// login's 400, an error page) is returned as the error. A fresh [`CookieJar`] each time: no
/// session at the provider yet; [`browse`] keeps one across calls.
pub async fn try_sign_in(
    client: &reqwest::Client,
    authorize_url: &str,
    login: &str,
    redirect_prefix: &str,
) -> Result<String, SignInPage> {
    browse(client, &mut CookieJar::default(), authorize_url, login, redirect_prefix).await
}

/// RP-initiated logout as a browser with `jar` (the provider's session, from [`browse`]) would do
/// it: GETs `end_session_url` (the `end_session_endpoint` with `id_token_hint`,
/// `post_logout_redirect_uri`, `state`), answers "Yes, sign me out", and returns the URL the
/// provider redirects to (it starts with `redirect_prefix`). Panics on any other page.
pub async fn sign_out(client: &reqwest::Client, jar: &mut CookieJar, end_session_url: &str, redirect_prefix: &str) -> String {
    match browse(client, jar, end_session_url, "", redirect_prefix).await {
        Ok(url) => url,
        Err(page) => panic!("sign-out stopped at an unexpected page: {page}"),
    }
}

/// The driver behind [`try_sign_in`] and [`sign_out`]: from `url`, follows redirects and submits
/// the provider's forms (the login form with `login`, the logout confirmation with "yes", any
/// other form as it is), carrying `jar`, until a redirect to `redirect_prefix`. Every page must
/// load nothing from outside loopback (else it panics).
pub async fn browse(
    client: &reqwest::Client,
    jar: &mut CookieJar,
    url: &str,
    login: &str,
    redirect_prefix: &str,
) -> Result<String, SignInPage> {
    let mut url = reqwest::Url::parse(url).expect("a URL to start from");
    let mut form: Option<String> = None;
    for _ in 0..20 {
        let mut req = match &form {
            Some(body) => client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.clone()),
            None => client.get(url.clone()),
        };
        if !jar.is_empty() {
            req = req.header(reqwest::header::COOKIE, jar.header());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(resp.url(), &url, "the client followed a redirect itself: build it with http_client()");
        for sc in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            jar.store(sc.to_str().unwrap_or(""));
        }
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or_else(|| panic!("{url} answered {status} without a Location"));
            let next = url.join(location).unwrap_or_else(|e| panic!("Location {location:?}: {e}"));
            if next.as_str().starts_with(redirect_prefix) {
                return Ok(next.to_string());
            }
            url = next;
            form = None;
            continue;
        }
        let body = resp.text().await.unwrap_or_default();
        let page = SignInPage { url: url.to_string(), status: status.as_u16(), body };
        let outside = external_urls(&page.body);
        assert!(outside.is_empty(), "a browser showing this page would reach beyond loopback: {outside:?}\n{page}");
        if !status.is_success() {
            return Err(page);
        }
        let Some((action, fields)) = parse_form(&page.body) else { return Err(page) };
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (name, value) in &fields {
            let v = match name.as_str() {
                "login" => login,
                "password" => "any-password",
                _ => value,
            };
            pairs.push((name, v));
        }
        // The logout confirmation's "Yes, sign me out" is a button outside its form.
        if page.body.contains("op.logoutForm") && !fields.iter().any(|(n, _)| n == "logout") {
            pairs.push(("logout", "yes"));
        }
        url = url.join(&action).unwrap_or_else(|e| panic!("form action {action:?}: {e}"));
        form = Some(form_body(&pairs));
    }
    panic!("more than 20 hops from {url} without reaching {redirect_prefix}");
}

/// The `http(s)://` URLs in `html` that are not on 127.0.0.1 (say, a web font): a browser that
/// renders it would try to reach them.
pub fn external_urls(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for scheme in ["http://", "https://"] {
        for (i, _) in html.match_indices(scheme) {
            let rest = &html[i..];
            let end = rest.find(|c: char| c.is_whitespace() || "\"'()<>".contains(c)).unwrap_or(rest.len());
            let url = &rest[..end];
            if !url[scheme.len()..].starts_with("127.0.0.1") {
                out.push(url.to_string());
            }
        }
    }
    out
}

/// The first `<form>`'s action and its `<input>`s' names and values (HTML entities in them
/// decoded). Enough for the provider's own pages.
fn parse_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = html.find("<form")?;
    let end = html[start..].find("</form>").map_or(html.len(), |e| start + e);
    let form = &html[start..end];
    let open = &form[..form.find('>')?];
    let action = attr(open, "action").unwrap_or_default();
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let tag_end = rest[i..].find('>').map_or(rest.len(), |e| i + e);
        let tag = &rest[i..tag_end];
        if let Some(name) = attr(tag, "name") {
            fields.push((name, attr(tag, "value").unwrap_or_default()));
        }
        rest = &rest[tag_end..];
    }
    Some((action, fields))
}

/// A double-quoted attribute of an HTML tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    let v = &tag[i..i + tag[i..].find('"')?];
    Some(
        v.replace("&quot;", "\"")
            .replace("&#34;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}
