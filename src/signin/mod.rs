//! Signing people in with the organisation's identity provider (OpenID Connect), and the
//! sessions that follow.
//!
//! - [`OidcConfig`]: `[auth.oidc]` (contract names: `issuer`, `client_id`, `client_secret`,
//!   `scopes`, `roles_claim`, `match_claim`, `default_role`, `session_hours`, `[auth.oidc.roles]`).
//! - [`oidc`]: discovery, the provider's keys, the ID token check, the code exchange.
//! - [`sessions`]: server-side sessions (an opaque cookie; the store keeps its hash), idle and
//!   absolute timeouts, revocation, CSRF tokens.
//! - [`SignIn`]: the authorization code flow with PKCE (S256), `state` and `nonce`: the
//!   sign-ins in progress (bounded, ten minutes each), and what a verified ID token makes of a
//!   person: their directory entry ([`match_person`]) and their role ([`role_for`]).
//!
//! The HTTP side (`/auth/login`, `/auth/callback`, `/auth/logout`, cookies, CSRF, Origin) is in
//! [`crate::http::signin`].

pub mod oidc;
pub mod sessions;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use presence_actors::directory::{Directory, UserIdx};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::tokens::Role;
use oidc::IdClaims;

/// How long a sign-in may take between `/auth/login` and `/auth/callback`.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// Most sign-ins in progress at once (each is ~200 bytes; a flood of `/auth/login` cannot
/// grow memory past this).
pub const MAX_PENDING: usize = 10_000;

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Sign-in with an OpenID provider (Entra ID, Google, Keycloak…).
    pub oidc: Option<OidcConfig>,
}

/// `[auth.oidc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer; discovery is at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The hub's client id at the provider.
    pub client_id: String,
    /// The client secret (or `client_secret_file`).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A file holding the client secret (keep it `0600`), instead of `client_secret`.
    #[serde(default)]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// Scopes asked for; `openid` is required.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim whose values are mapped to roles (`roles` for Entra app roles, or `groups`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// The claim that finds the person in the directory: `oid` (the Entra object id),
    /// `email`, `preferred_username`, `upn`, or `sub` (compared with the people's external ids).
    #[serde(default = "default_match_claim")]
    pub match_claim: String,
    /// The role of everyone signed in whose claims map to nothing higher.
    #[serde(default = "default_role")]
    pub default_role: Role,
    /// Absolute session length, hours.
    #[serde(default = "default_session_hours")]
    pub session_hours: u32,
    /// A session unused this long ends, minutes (an open console stream counts as use).
    #[serde(default = "default_idle_minutes")]
    pub idle_minutes: u32,
    /// Claim value → role.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// The name on the sign-in button ("Sign in with {name}"); default from the issuer.
    #[serde(default)]
    pub name: Option<String>,
    /// The redirect URI registered at the provider; default `{http.public_url}/auth/callback`.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Allowed clock difference with the provider, seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_match_claim() -> String {
    "oid".into()
}
fn default_role() -> Role {
    Role::SelfService
}
fn default_session_hours() -> u32 {
    10
}
fn default_idle_minutes() -> u32 {
    120
}
fn default_skew() -> u64 {
    60
}

/// The claims `match_claim` may name.
pub const MATCH_CLAIMS: [&str; 5] = ["oid", "email", "preferred_username", "upn", "sub"];

impl OidcConfig {
    /// Checks the values (`public_url` is `[http] public_url`).
    pub fn validate(&self, public_url: Option<&str>) -> Result<(), String> {
        let issuer = self.issuer.trim_end_matches('/');
        oidc::secure_url(issuer).map_err(|e| format!("auth.oidc.issuer: {e}"))?;
        if self.client_id.trim().is_empty() {
            return Err("auth.oidc.client_id is empty".into());
        }
        match (&self.client_secret, &self.client_secret_file) {
            (Some(_), Some(_)) => return Err("auth.oidc: client_secret and client_secret_file exclude each other".into()),
            (None, None) => return Err("auth.oidc: a client_secret (or client_secret_file) is required".into()),
            _ => {}
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err("auth.oidc.scopes must include \"openid\"".into());
        }
        if !MATCH_CLAIMS.contains(&self.match_claim.as_str()) {
            return Err(format!("auth.oidc.match_claim must be one of {}", MATCH_CLAIMS.join(", ")));
        }
        if !(1..=24 * 30).contains(&self.session_hours) {
            return Err("auth.oidc.session_hours must be 1-720".into());
        }
        if !(5..=24 * 60).contains(&self.idle_minutes) {
            return Err("auth.oidc.idle_minutes must be 5-1440".into());
        }
        if self.clock_skew_secs > 600 {
            return Err("auth.oidc.clock_skew_secs must be at most 600".into());
        }
        match (&self.redirect_uri, public_url) {
            (Some(r), _) => {
                if !(r.starts_with("https://") || r.starts_with("http://")) || !r.ends_with("/auth/callback") {
                    return Err("auth.oidc.redirect_uri must be an http(s) URL ending in /auth/callback".into());
                }
            }
            (None, None) => return Err("auth.oidc needs [http] public_url (or auth.oidc.redirect_uri): the provider sends people back to it".into()),
            (None, Some(_)) => {}
        }
        if self.name.as_ref().is_some_and(|n| n.trim().is_empty() || n.len() > 60) {
            return Err("auth.oidc.name must be 1-60 bytes".into());
        }
        Ok(())
    }

    /// The redirect URI (validated: present one way or the other).
    pub fn redirect_uri(&self, public_url: Option<&str>) -> String {
        self.redirect_uri
            .clone()
            .unwrap_or_else(|| format!("{}/auth/callback", public_url.unwrap_or_default().trim_end_matches('/')))
    }

    /// The name on the sign-in button.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        if self.issuer.contains("login.microsoftonline.com") {
            return "Microsoft".into();
        }
        if self.issuer.contains("accounts.google.com") {
            return "Google".into();
        }
        reqwest::Url::parse(&self.issuer).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_else(|| self.issuer.clone())
    }

    /// The client secret: configured, or read from `client_secret_file` (trimmed).
    pub fn secret(&self) -> Result<String, String> {
        if let Some(s) = &self.client_secret {
            return Ok(s.clone());
        }
        let path = self.client_secret_file.as_ref().ok_or("no client secret")?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", m.permissions().mode() & 0o777), "The OpenID client secret file can be read by others; make it 0600.");
                }
            }
        }
        let s = std::fs::read_to_string(path).map_err(|e| format!("auth.oidc.client_secret_file {}: {e}", path.display()))?;
        let s = s.trim().to_string();
        if s.is_empty() {
            return Err(format!("auth.oidc.client_secret_file {} is empty", path.display()));
        }
        Ok(s)
    }
}

/// The role `claims` give: the highest role any value of `roles_claim` maps to, at least
/// `default_role`.
pub fn role_for(cfg: &OidcConfig, claims: &IdClaims) -> Role {
    claims.strings(&cfg.roles_claim).iter().filter_map(|v| cfg.roles.get(v)).copied().fold(cfg.default_role, Role::max)
}

/// The person `claims` name, by `match_claim`; `None` when the directory knows no one (or
/// more than one person) by it.
pub fn match_person(dir: &Directory, cfg: &OidcConfig, claims: &IdClaims) -> Option<UserIdx> {
    let value = claims.string(&cfg.match_claim)?;
    match cfg.match_claim.as_str() {
        // Entra's object id: a GUID, which the directory resolves as `entra:` external id.
        "oid" => dir.resolve(&format!("entra:{value}")),
        "email" | "preferred_username" | "upn" if value.contains('@') => dir.resolve(&format!("mailto:{value}")),
        "sub" => dir.resolve(&format!("oidc:{value}")),
        _ => None,
    }
}

/// `n` random bytes, base64url without padding.
pub fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    presence_providers::common::secret::fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A sign-in in progress.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
    /// Where to go afterwards (a path on the hub).
    pub return_to: String,
    started: Instant,
}

/// A sign-in in progress as another node of a cluster gets it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PendingWire {
    nonce: String,
    verifier: String,
    return_to: String,
    /// When it started (ms since the epoch).
    started_at: i64,
}

impl Pending {
    /// The form another node gets.
    pub fn to_wire(&self) -> PendingWire {
        let age = self.started.elapsed().as_millis() as i64;
        PendingWire { nonce: self.nonce.clone(), verifier: self.verifier.clone(), return_to: self.return_to.clone(), started_at: presence_actors::model::now_ms() - age }
    }

    /// Back from another node; `None` once it has expired.
    pub fn from_wire(w: PendingWire) -> Option<Pending> {
        let age = Duration::from_millis((presence_actors::model::now_ms() - w.started_at).max(0) as u64);
        let started = Instant::now().checked_sub(age)?;
        (age < PENDING_TTL).then_some(Pending { nonce: w.nonce, verifier: w.verifier, return_to: w.return_to, started })
    }
}

/// The sign-ins in progress, by `state`.
#[derive(Debug, Default)]
pub struct PendingLogins {
    by_state: Mutex<HashMap<String, Pending>>,
}

impl PendingLogins {
    /// Starts one and returns its `state`. With [`MAX_PENDING`] unexpired ones waiting, the
    /// oldest is dropped: a flood of `/auth/login` costs the flood's own oldest sign-ins, and
    /// never blocks sign-in for everyone.
    pub fn start(&self, return_to: &str) -> Option<(String, Pending)> {
        let mut m = self.by_state.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_PENDING {
            m.retain(|_, p| p.started.elapsed() < PENDING_TTL);
            if m.len() >= MAX_PENDING {
                if let Some(oldest) = m.iter().min_by_key(|(_, p)| p.started).map(|(k, _)| k.clone()) {
                    m.remove(&oldest);
                }
            }
        }
        let p = Pending { nonce: random_b64(16), verifier: random_b64(32), return_to: return_to.to_string(), started: Instant::now() };
        let state = random_b64(16);
        m.insert(state.clone(), p.clone());
        Some((state, p))
    }

    /// Takes the sign-in `state` (once: a replayed callback finds nothing).
    pub fn take(&self, state: &str) -> Option<Pending> {
        let p = self.by_state.lock().unwrap_or_else(|e| e.into_inner()).remove(state)?;
        (p.started.elapsed() < PENDING_TTL).then_some(p)
    }
}

/// Only a path on the hub itself (`/…`, not `//host`), else `/`.
pub fn safe_return_to(r: Option<&str>) -> String {
    match r {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && p.len() <= 512 && !p.chars().any(char::is_control) => p.to_string(),
        _ => "/".into(),
    }
}

/// Sign-in with OpenID Connect: configuration, provider, sign-ins in progress.
pub struct SignIn {
    /// `[auth.oidc]`.
    pub config: OidcConfig,
    /// The client secret.
    pub secret: String,
    /// The redirect URI.
    pub redirect_uri: String,
    /// The provider.
    pub provider: oidc::Provider,
    /// Sign-ins in progress.
    pub pending: PendingLogins,
}

impl SignIn {
    /// From the configuration (the provider is discovered on first use).
    pub fn new(config: OidcConfig, public_url: Option<&str>) -> Result<SignIn, String> {
        let secret = config.secret()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(SignIn {
            redirect_uri: config.redirect_uri(public_url),
            provider: oidc::Provider::new(&config.issuer, http),
            secret,
            config,
            pending: PendingLogins::default(),
        })
    }

    /// The URL that sends the browser to the provider for sign-in `state`.
    pub fn authorize_url(&self, endpoint: &str, state: &str, p: &Pending) -> String {
        let scope = self.config.scopes.join(" ");
        let challenge = pkce_challenge(&p.verifier);
        let q = presence_providers::common::form::encode(&[
            ("response_type", "code"),
            ("client_id", &self.config.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &scope),
            ("state", state),
            ("nonce", &p.nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        format!("{endpoint}{sep}{q}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> OidcConfig {
        toml::from_str(&format!(
            "issuer = \"https://login.microsoftonline.com/t/v2.0\"\nclient_id = \"hub\"\nclient_secret = \"s\"\n{extra}"
        ))
        .unwrap()
    }

    fn claims(v: serde_json::Value) -> IdClaims {
        IdClaims { issuer: "i".into(), subject: "s".into(), all: v.as_object().unwrap().clone() }
    }

    #[test]
    fn the_contract_defaults_and_validation() {
        let c = cfg("");
        assert_eq!(c.scopes, ["openid", "profile", "email"]);
        assert_eq!((c.roles_claim.as_str(), c.match_claim.as_str(), c.default_role, c.session_hours), ("roles", "oid", Role::SelfService, 10));
        assert_eq!(c.display_name(), "Microsoft");
        assert!(c.validate(None).unwrap_err().contains("public_url"));
        c.validate(Some("https://hub.example")).unwrap();
        assert_eq!(c.redirect_uri(Some("https://hub.example/")), "https://hub.example/auth/callback");
        assert!(cfg("scopes = [\"profile\"]").validate(Some("https://h")).unwrap_err().contains("openid"));
        assert!(cfg("match_claim = \"name\"").validate(Some("https://h")).is_err());
        assert!(toml::from_str::<OidcConfig>("issuer = \"x\"\nclient_id = \"c\"\nclient_scret = \"s\"").is_err());
        let plain: OidcConfig = toml::from_str("issuer = \"http://idp.example\"\nclient_id = \"c\"\nclient_secret = \"s\"").unwrap();
        assert!(plain.validate(Some("https://h")).unwrap_err().contains("https"));
    }

    #[test]
    fn the_highest_mapped_role_wins_and_the_default_is_the_floor() {
        let c = cfg("[roles]\n\"Switchboard\" = \"operator\"\n\"PresenceAdmins\" = \"admin\"\n\"Readers\" = \"viewer\"");
        assert_eq!(role_for(&c, &claims(serde_json::json!({ "roles": ["Switchboard"] }))), Role::Operator);
        assert_eq!(role_for(&c, &claims(serde_json::json!({ "roles": ["Switchboard", "PresenceAdmins"] }))), Role::Admin);
        assert_eq!(role_for(&c, &claims(serde_json::json!({ "roles": "PresenceAdmins" }))), Role::Admin);
        assert_eq!(role_for(&c, &claims(serde_json::json!({ "roles": ["Readers", "Other"] }))), Role::SelfService);
        assert_eq!(role_for(&c, &claims(serde_json::json!({}))), Role::SelfService);
        let groups = cfg("roles_claim = \"groups\"\ndefault_role = \"viewer\"\n[roles]\n\"6f0c…\" = \"operator\"");
        assert_eq!(role_for(&groups, &claims(serde_json::json!({ "groups": ["6f0c…"], "roles": [] }))), Role::Operator);
        assert_eq!(role_for(&groups, &claims(serde_json::json!({ "roles": ["6f0c…"] }))), Role::Viewer);
    }

    #[test]
    fn pkce_return_paths_and_pending_sign_ins() {
        // RFC 7636 appendix B.
        assert_eq!(pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_eq!(random_b64(32).len(), 43);
        assert_eq!(safe_return_to(Some("/#/me")), "/#/me");
        for bad in ["//evil.example", "https://evil.example", "/\\evil", "evil"] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad}");
        }
        let p = PendingLogins::default();
        let (first, _) = p.start("/").unwrap();
        for _ in 0..MAX_PENDING {
            p.start("/").unwrap();
        }
        assert!(p.take(&first).is_none(), "the oldest gave way when the table was full");
        let (state, pending) = p.start("/").unwrap();
        assert_eq!(p.take(&state).unwrap().nonce, pending.nonce);
        assert!(p.take(&state).is_none(), "a state is used once");
        let s = SignIn::new(cfg(""), Some("https://hub.example")).unwrap();
        let url = s.authorize_url("https://idp/authorize?p=1", "st", &pending);
        assert!(url.starts_with("https://idp/authorize?p=1&response_type=code&client_id=hub&redirect_uri=https%3A%2F%2Fhub.example%2Fauth%2Fcallback"), "{url}");
        assert!(url.contains("&code_challenge_method=S256") && url.contains("scope=openid+profile+email"), "{url}");
    }
}
