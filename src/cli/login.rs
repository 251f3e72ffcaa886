//! `presence-hub login graph`: signs the Teams provider's service accounts in and keeps their
//! refresh tokens in the data directory's store, so nobody pastes a refresh token into the
//! config.
//!
//! - `--account NAME` runs the OAuth device authorization grant (RFC 8628) against the
//!   provider's Entra tenant: it prints the sign-in page and code, the person signs in as the
//!   service account anywhere (and consents to Presence.Read.All), and the refresh token is
//!   stored under the cursor the provider reads (`refresh:{account}` of that provider). The
//!   provider uses it from its next start or token refresh: a running hub whose provider is
//!   down for want of a token picks it up when the supervisor retries the provider (with
//!   back-off, at most a minute apart).
//! - `--check` redeems every service account's refresh token (stored, else configured) once, as
//!   the provider does — storing the new one when Entra rotates it — and prints one line per
//!   account: `ok`, or `FAILED` with the endpoint's text. Any failure makes the exit status
//!   non-zero.
//!
//! The account is looked up by name across the `graph_presence` providers; `--provider NAME`
//! picks one when two share an account name. Tokens are never printed.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use presence_actors::provider::Cursors;
use presence_providers::common::device_code;
use presence_providers::graph::client::{refresh_cursor, GraphClient, DELEGATED_SCOPE};
use presence_providers::graph::{needs_login, GraphPresenceConfig};
use presence_providers::ProviderConfig;

use crate::config::Config;
use crate::store::{Store, DB_FILE_NAME};

/// The `graph_presence` providers of `cfg`.
pub fn graph_providers(cfg: &Config) -> Vec<&GraphPresenceConfig> {
    cfg.providers
        .iter()
        .filter_map(|p| match p {
            ProviderConfig::GraphPresence(g) => Some(g),
            _ => None,
        })
        .collect()
}

/// The provider whose service account `account` is to be signed in: the one named `provider`,
/// else the only one with such an account.
pub fn choose<'a>(providers: &[&'a GraphPresenceConfig], account: &str, provider: Option<&str>) -> Result<&'a GraphPresenceConfig> {
    if providers.is_empty() {
        bail!("the configuration has no graph_presence provider");
    }
    let has = |p: &GraphPresenceConfig| p.service_accounts.iter().any(|a| a.name == account);
    if let Some(name) = provider {
        let Some(p) = providers.iter().find(|p| p.name == name) else {
            bail!("no graph_presence provider is named {name:?} (there are: {})", names(providers.iter().map(|p| p.name.as_str())));
        };
        if !has(p) {
            bail!("provider {name:?} has no service account {account:?} (it has: {})", names(p.service_accounts.iter().map(|a| a.name.as_str())));
        }
        return Ok(p);
    }
    let with: Vec<&&GraphPresenceConfig> = providers.iter().filter(|p| has(p)).collect();
    match with.as_slice() {
        [p] => Ok(p),
        [] => bail!(
            "no graph_presence provider has a service account {account:?}; add it as [[providers.service_accounts]] name = {account:?} first (accounts now: {})",
            names(providers.iter().flat_map(|p| p.service_accounts.iter().map(|a| a.name.as_str())))
        ),
        more => bail!("service account {account:?} is in several graph_presence providers ({}): say which with --provider NAME", names(more.iter().map(|p| p.name.as_str()))),
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<String> = it.map(|n| format!("{n:?}")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn runtime() -> Result<(tokio::runtime::Runtime, reqwest::Client)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().context("an HTTP client")?;
    Ok((rt, http))
}

/// `presence-hub login graph`: `--check`, or sign `account` in.
pub fn graph(cfg: &Config, account: Option<&str>, provider: Option<&str>, check: bool) -> Result<()> {
    if check {
        return check_all(cfg, account, provider);
    }
    let Some(account) = account else { bail!("say which service account to sign in: --account NAME (or --check)") };
    let providers = graph_providers(cfg);
    let p = choose(&providers, account, provider)?;
    let Some(code_url) = p.device_code_endpoint() else {
        bail!("provider {:?}: the token endpoint {} does not end in /token, so the device authorization endpoint is not known: set device_code_url", p.name, p.app.token_endpoint());
    };
    // Before anyone is asked to sign in: the store must take the token.
    let store = Store::open(&cfg.data_dir).with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    let (rt, http) = runtime()?;
    let client_id = p.app.client_id();
    let code = rt.block_on(device_code::request_device_code(&http, &code_url, client_id, DELEGATED_SCOPE))?;
    println!("Signing in service account {account} for provider {:?}.", p.name);
    println!("Sign in as {account} in a web browser on any device, and consent to the presence permission:");
    if let Some(m) = &code.message {
        println!("  {m}");
    }
    println!("  page: {}", code.verification_uri);
    println!("  code: {}", code.user_code);
    println!("Waiting for the sign-in (the code expires {}) …", minutes(code.expires_in));
    let secret = Some(p.app.client_secret()).filter(|s| !s.is_empty());
    let t = rt.block_on(device_code::wait_for_token(&http, &p.app.token_endpoint(), client_id, secret, &code))?;
    let Some(refresh) = t.refresh_token.filter(|r| !r.is_empty()) else {
        bail!("signed in, but the token endpoint sent no refresh token (was offline_access refused?); nothing stored");
    };
    let key = refresh_cursor(account);
    store.set_cursor(&p.name, &key, &refresh).context("storing the refresh token")?;
    println!("Signed in. The refresh token of {account} is stored in {} (provider {:?}, {key}).", db_path(&cfg.data_dir), p.name);
    println!("The provider uses it from its next token refresh or start (a hub whose provider is down for want of it retries within a minute); check it with `presence-hub login graph --check`.");
    Ok(())
}

fn minutes(secs: u64) -> String {
    if secs >= 120 {
        format!("in {} minutes", secs / 60)
    } else {
        format!("in {secs} s")
    }
}

fn db_path(dir: &Path) -> String {
    dir.join(DB_FILE_NAME).display().to_string()
}

/// The store as the providers see it, remembering a write that failed.
struct StoreCursors<'a> {
    store: &'a Store,
    failed: Mutex<Option<String>>,
}

impl Cursors for StoreCursors<'_> {
    fn get(&self, provider: &str, key: &str) -> Option<String> {
        self.store.cursor(provider, key).ok().flatten()
    }
    fn set(&self, provider: &str, key: &str, value: &str) {
        if let Err(e) = self.store.set_cursor(provider, key, value) {
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
    }
}

/// `--check`: one refresh grant per service account (of `provider` / only `account`, if given).
fn check_all(cfg: &Config, account: Option<&str>, provider: Option<&str>) -> Result<()> {
    let providers: Vec<&GraphPresenceConfig> = graph_providers(cfg).into_iter().filter(|p| provider.is_none_or(|n| p.name == n)).collect();
    if providers.is_empty() {
        bail!("{}", provider.map_or("the configuration has no graph_presence provider".to_string(), |n| format!("no graph_presence provider is named {n:?}")));
    }
    let store = Store::open(&cfg.data_dir).with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    let (rt, http) = runtime()?;
    let (mut checked, mut failed) = (0, 0);
    for p in providers {
        let client = GraphClient::new(http.clone(), &p.app.graph_url, &p.app.token_endpoint(), p.app.client_id(), p.app.client_secret());
        let accounts: Vec<_> = p.service_accounts.iter().filter(|a| account.is_none_or(|n| a.name == n)).collect();
        if accounts.is_empty() && account.is_none() {
            println!("{}: no service accounts", p.name);
        }
        for a in accounts {
            checked += 1;
            let cursors = StoreCursors { store: &store, failed: Mutex::new(None) };
            let key = refresh_cursor(&a.name);
            let before = cursors.get(&p.name, &key).filter(|t| !t.is_empty());
            if before.is_none() && a.configured_refresh_token().is_none() {
                failed += 1;
                println!("{} / {}: FAILED: {}", p.name, a.name, needs_login(&p.name, &a.name));
                continue;
            }
            match rt.block_on(client.delegated_token(&a.name, a.configured_refresh_token(), &cursors, &p.name)) {
                Ok(_) => {
                    let after = cursors.get(&p.name, &key).filter(|t| !t.is_empty());
                    let from = if before.is_some() { "stored token" } else { "configured token" };
                    let rotated = if after != before && after.is_some() { "; rotated, the new one is stored" } else { "" };
                    match cursors.failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
                        Some(e) => {
                            failed += 1;
                            println!("{} / {}: FAILED: the token works but the rotated one could not be stored: {e}", p.name, a.name);
                        }
                        None => println!("{} / {}: ok ({from}{rotated})", p.name, a.name),
                    }
                }
                Err(e) => {
                    failed += 1;
                    println!("{} / {}: FAILED: {e}", p.name, a.name);
                }
            }
        }
    }
    if let (Some(n), 0) = (account, checked) {
        bail!("no service account {n:?} in the graph_presence providers checked");
    }
    if failed > 0 {
        bail!("{failed} of {checked} service accounts failed; sign one in again with `presence-hub login graph --account NAME`");
    }
    Ok(())
}

/// What `check-config` says about service accounts without a configured refresh token: stored
/// by `login graph` (looked up only when the store exists; nothing is created), or missing.
pub fn check_config_notes(cfg: &Config) -> Vec<String> {
    let db = cfg.data_dir.join(DB_FILE_NAME);
    let store = if db.is_file() { Store::open(&cfg.data_dir).ok() } else { None };
    let mut out = Vec::new();
    for p in graph_providers(cfg) {
        if !p.notifications {
            continue;
        }
        for a in p.service_accounts.iter().filter(|a| a.configured_refresh_token().is_none()) {
            let stored = store.as_ref().and_then(|s| s.cursor(&p.name, &refresh_cursor(&a.name)).ok().flatten()).is_some_and(|t| !t.is_empty());
            if stored {
                out.push(format!("provider {}: service account {}: refresh token stored in {} (by `presence-hub login graph`)", p.name, a.name, db.display()));
            } else {
                out.push(format!("provider {}: {} — until then its feed stays down", p.name, needs_login(&p.name, &a.name)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str, accounts: &[&str]) -> GraphPresenceConfig {
        let mut text = format!("name = \"{name}\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n");
        for a in accounts {
            text.push_str(&format!("[[service_accounts]]\nname = \"{a}\"\n"));
        }
        toml::from_str(&text).expect("config")
    }

    #[test]
    fn the_account_picks_the_provider_and_provider_settles_a_tie() {
        let (a, b) = (provider("teams", &["svc1", "shared"]), provider("teams-eu", &["svc2", "shared"]));
        let all = [&a, &b];
        assert_eq!(choose(&all, "svc2", None).unwrap().name, "teams-eu");
        assert_eq!(choose(&all, "shared", Some("teams")).unwrap().name, "teams");
        let err = |account, provider| choose(&all, account, provider).map(|p| p.name.clone()).unwrap_err().to_string();
        assert!(err("shared", None).contains("--provider"), "{}", err("shared", None));
        assert!(err("nobody", None).contains("\"svc1\", \"shared\", \"svc2\""), "{}", err("nobody", None));
        assert!(err("svc2", Some("teams")).contains("has no service account \"svc2\""));
        assert!(err("svc1", Some("lync")).contains("no graph_presence provider is named \"lync\""));
        assert!(choose(&[], "svc1", None).unwrap_err().to_string().contains("no graph_presence provider"));
    }
}
