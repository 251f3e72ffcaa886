//! The `ldap` source's passes: connect (the URLs in order, LDAPS or StartTLS with rustls),
//! bind, read the rootDSE, run the paged search, and keep the cursor's rules.
//!
//! Fail-over: a server that cannot be reached, or whose TLS handshake fails, gives way to the
//! next URL. A bind the server refuses ends the pass at once with [`SourceError::Auth`]: the
//! servers share one directory and its credentials, and trying each with a wrong password
//! only brings the service account closer to a lockout.
//!
//! A pass runs in its own task, so that whatever the client library does with a hostile
//! server's answer stays a failed pass ([`SourceError::Protocol`]), never the hub's panic.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::PagedResults;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::parse::{self, Cursor, Mapping, Mode, RawEntry, Skip};
use super::{Incremental, LdapConfig};
use crate::directory::{Entry, Pass, PassKind, SourceError};

/// An LDAP source: its settings and TLS configuration, built once.
pub struct LdapSource {
    config: Arc<LdapConfig>,
    tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for LdapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapSource").field("config", &self.config).field("tls", &self.tls.is_some()).finish()
    }
}

impl LdapSource {
    /// A source for `config` (checked; the CA file or the system's roots are read now).
    pub fn new(config: &LdapConfig) -> Result<LdapSource, SourceError> {
        config.validate()?;
        let tls = if config.uses_tls() { Some(tls_config(config.tls_ca_file.as_deref())?) } else { None };
        if config.url.iter().any(|u| !u.to_ascii_lowercase().starts_with("ldaps://")) && !config.start_tls && config.bind_dn.is_some() {
            tracing::warn!(source = %config.name, "ldap: an ldap:// URL without start_tls sends the service account's password in the clear");
        }
        Ok(LdapSource { config: Arc::new(config.clone()), tls })
    }

    /// Runs one pass. An incremental pass needs a cursor of this source's mode from the same
    /// server; otherwise it is a full pass, and says so.
    pub async fn pass(&mut self, want: PassKind, cursor: Option<&str>) -> Result<Pass, SourceError> {
        let job = run_pass(self.config.clone(), self.tls.clone(), want, cursor.map(str::to_owned));
        match tokio::spawn(job).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(SourceError::Protocol("the LDAP client could not handle the server's answer".into())),
            Err(e) => Err(SourceError::Protocol(format!("the pass was cancelled: {e}"))),
        }
    }
}

/// The certificates of a PEM file (at least one).
pub(super) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, SourceError> {
    let bytes = std::fs::read(path).map_err(|e| SourceError::Config(format!("tls_ca_file {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| SourceError::Config(format!("tls_ca_file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(SourceError::Config(format!("tls_ca_file {}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

/// rustls (aws-lc-rs, the tree's one provider) trusting `ca_file`'s CAs, or the system's.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, SourceError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_ca_file(path)? {
                roots.add(cert).map_err(|e| SourceError::Config(format!("tls_ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(SourceError::Config("no CA certificates found on this system: set tls_ca_file".into()));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().map_err(|e| SourceError::Config(format!("TLS: {e}")))?.with_root_certificates(roots).with_no_client_auth();
    Ok(Arc::new(config))
}

/// What a pass found on the server before searching.
struct Server {
    /// The URL connected to.
    url: String,
    /// Which server, for the cursor: AD's `dsServiceName`, else `dnsHostName`, else the URL.
    id: String,
    /// AD's `highestCommittedUSN` before the search.
    highest_usn: Option<u64>,
}

async fn run_pass(config: Arc<LdapConfig>, tls: Option<Arc<ClientConfig>>, want: PassKind, cursor: Option<String>) -> Result<Pass, SourceError> {
    let timeout = Duration::from_secs(config.timeout_secs);
    let (mut ldap, url) = connect(&config, tls, timeout).await?;
    let result = pass_on(&config, &mut ldap, url, want, cursor.as_deref(), timeout).await;
    let _ = tokio::time::timeout(timeout, ldap.unbind()).await;
    result
}

/// Connects to the first server that answers and binds.
async fn connect(config: &LdapConfig, tls: Option<Arc<ClientConfig>>, timeout: Duration) -> Result<(Ldap, String), SourceError> {
    let mut failures = Vec::new();
    for url in &config.url {
        let ldaps = url.to_ascii_lowercase().starts_with("ldaps://");
        let mut settings = LdapConnSettings::new().set_conn_timeout(timeout).set_starttls(config.start_tls && !ldaps);
        if let Some(tls) = &tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = match LdapConnAsync::with_settings(settings, url).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(source = %config.name, %url, error = %e, "ldap: connect failed, trying the next server");
                failures.push(format!("{url}: {}", describe(&e, timeout)));
                continue;
            }
        };
        ldap3::drive!(conn);
        let Some((dn, password)) = config.bind_dn.as_deref().zip(config.password.as_deref()) else {
            return Ok((ldap, url.clone()));
        };
        match ldap.with_timeout(timeout).simple_bind(dn, password).await {
            Ok(r) if r.rc == 0 => return Ok((ldap, url.clone())),
            Ok(r) => return Err(bind_refused(url, r.rc, &r.text)),
            Err(LdapError::LdapResult { result }) => return Err(bind_refused(url, result.rc, &result.text)),
            Err(e) => {
                tracing::debug!(source = %config.name, %url, error = %e, "ldap: bind got no answer, trying the next server");
                failures.push(format!("{url}: bind: {}", describe(&e, timeout)));
            }
        }
    }
    Err(SourceError::Connect(failures.join("; ")))
}

fn bind_refused(url: &str, rc: u32, text: &str) -> SourceError {
    let why = match rc {
        49 => "invalid credentials (wrong bind_dn or password, or the account is locked, disabled or expired)",
        8 => "the server wants a stronger authentication (use ldaps:// or start_tls)",
        13 => "the server wants a confidential connection (use ldaps:// or start_tls)",
        48 => "inappropriate authentication",
        50 => "insufficient access rights",
        53 => "the server is unwilling to perform the bind",
        _ => "the bind was refused",
    };
    SourceError::Auth(format!("{url}: {why} (result {rc}{}{})", if text.is_empty() { "" } else { ": " }, clip(text)))
}

/// A failure to reach a server, in words.
fn describe(e: &LdapError, timeout: Duration) -> String {
    match e {
        LdapError::Timeout { .. } => format!("no answer within {} s", timeout.as_secs()),
        e => clip(&e.to_string()),
    }
}

/// A server's text cut to 300 characters (it goes into logs and the health page).
fn clip(text: &str) -> String {
    let mut t: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    if text.chars().count() > 300 {
        t.push('…');
    }
    t
}

/// The rootDSE's server identity and `highestCommittedUSN` (absent on servers other than AD;
/// a rootDSE that cannot be read counts as empty).
async fn root_dse(ldap: &mut Ldap, url: String, timeout: Duration) -> Server {
    let attrs = vec!["dsServiceName", "dnsHostName", "highestCommittedUSN"];
    let entry = match ldap.with_timeout(timeout).search("", Scope::Base, "(objectClass=*)", attrs).await {
        Ok(r) => r.0.into_iter().filter(|e| !e.is_ref() && !e.is_intermediate()).find_map(|e| parse::entry_from_tag(e.0).ok()),
        Err(e) => {
            tracing::debug!(%url, error = %e, "ldap: rootDSE not readable");
            None
        }
    };
    let entry = entry.unwrap_or_default();
    let id = entry.text("dsServiceName").or(entry.text("dnsHostName")).map(str::to_owned).unwrap_or_else(|| url.clone());
    Server { highest_usn: entry.text("highestCommittedUSN").and_then(parse::usn), id, url }
}

/// The pass once bound.
async fn pass_on(config: &LdapConfig, ldap: &mut Ldap, url: String, want: PassKind, cursor: Option<&str>, timeout: Duration) -> Result<Pass, SourceError> {
    let server = root_dse(ldap, url, timeout).await;
    let mapping = Mapping::new(&config.attributes, config.key_fallback_dn);
    let from = if want == PassKind::Incremental { cursor.and_then(|c| usable(config, &server, c)) } else { None };
    let mut attrs = mapping.requested();
    // The modes whose values this pass reads.
    let modes: Vec<Mode> = match (&from, config.incremental) {
        (Some(c), _) => vec![c.mode],
        (None, Incremental::Usn) => vec![Mode::Usn],
        (None, Incremental::ModifyTimestamp) => vec![Mode::ModifyTimestamp],
        (None, Incremental::Auto) if server.highest_usn.is_some() => vec![Mode::Usn],
        (None, Incremental::Auto) => vec![Mode::Usn, Mode::ModifyTimestamp],
    };
    for m in &modes {
        if !attrs.iter().any(|a| a.eq_ignore_ascii_case(m.attribute())) {
            attrs.push(m.attribute().to_owned());
        }
    }
    let filter = match &from {
        Some(c) => parse::changed_since(&config.filter, c.mode, &c.value),
        None => parse::wrap(&config.filter),
    };
    let read = search(config, ldap, &server, &filter, attrs, &mapping, &modes, timeout).await?;
    let kind = if from.is_some() { PassKind::Incremental } else { PassKind::Full };
    // Auto without highestCommittedUSN: uSNChanged only if every entry read has it (AD-shaped
    // data on another server), else modifyTimestamp.
    let mode = match (&from, modes.as_slice()) {
        (Some(c), _) => c.mode,
        (None, [only]) => *only,
        _ if read.entries > 0 && read.without[0] == 0 => Mode::Usn,
        _ => Mode::ModifyTimestamp,
    };
    let highest = read.highest[modes.iter().position(|m| *m == mode).unwrap_or(0)].clone();
    let value = match mode {
        // The server's own mark, read before the search: whatever changes during the search
        // is above it and read again next time.
        Mode::Usn => server.highest_usn.map(|n| n.to_string()).or(highest),
        Mode::ModifyTimestamp => highest,
    };
    // An incremental pass that read nothing keeps its mark.
    let value = match (value, &from) {
        (Some(v), Some(c)) if mode.later(&c.value, &v) => Some(c.value.clone()),
        (Some(v), _) => Some(v),
        (None, Some(c)) => Some(c.value.clone()),
        (None, None) => None,
    };
    if value.is_none() && read.entries > 0 {
        // Without a mark every later pass is a full one: say so once per pass, not silently.
        tracing::warn!(source = %config.name, attribute = mode.attribute(), "ldap: no entry carries the incremental attribute and the server has no highestCommittedUSN, so every pass will be a full pass; set incremental = \"modify_timestamp\" (or \"auto\") for this server");
    }
    let cursor = value.map(|value| Cursor { mode, value, server: server.id.clone() }.encode());
    if read.skipped_no_key + read.skipped_no_name + read.malformed > 0 {
        tracing::warn!(source = %config.name, without_key = read.skipped_no_key, without_name = read.skipped_no_name, malformed = read.malformed, duplicate_keys = read.duplicates, "ldap: entries left out");
    }
    tracing::debug!(source = %config.name, url = %server.url, ?kind, entries = read.list.len(), references = read.references, "ldap: pass done");
    Ok(Pass { kind, entries: read.list, removed: Vec::new(), cursor })
}

/// The cursor, if this pass may start from it: written by this version, in the configured
/// mode (any under `auto`), by the same server, and not ahead of the server's own mark (a
/// domain controller restored from a backup counts again from lower numbers).
fn usable(config: &LdapConfig, server: &Server, text: &str) -> Option<Cursor> {
    let c = Cursor::decode(text)?;
    let mode_ok = match config.incremental {
        Incremental::Auto => true,
        Incremental::Usn => c.mode == Mode::Usn,
        Incremental::ModifyTimestamp => c.mode == Mode::ModifyTimestamp,
    };
    let ahead = c.mode == Mode::Usn && server.highest_usn.zip(parse::usn(&c.value)).is_some_and(|(high, v)| v > high);
    (mode_ok && c.server == server.id && !ahead).then_some(c)
}

/// What a search read.
#[derive(Default)]
struct Read {
    list: Vec<Entry>,
    /// Entries the server sent (before skipping).
    entries: u64,
    /// Per mode of the pass: the highest value, and how many entries had none.
    highest: Vec<Option<String>>,
    without: Vec<u64>,
    skipped_no_key: u64,
    skipped_no_name: u64,
    malformed: u64,
    duplicates: u64,
    references: u64,
}

#[allow(clippy::too_many_arguments)]
async fn search(config: &LdapConfig, ldap: &mut Ldap, server: &Server, filter: &str, attrs: Vec<String>, mapping: &Mapping, modes: &[Mode], timeout: Duration) -> Result<Read, SourceError> {
    let mut read = Read { highest: vec![None; modes.len()], without: vec![0; modes.len()], ..Read::default() };
    let mut keys = HashSet::new();
    let page = i32::try_from(config.page_size).unwrap_or(1000);
    let mut stream = ldap
        .with_timeout(timeout)
        .with_search_options(SearchOptions::new().deref(ldap3::DerefAliases::Never))
        .streaming_search_with(PagedResults::new(page), &config.base_dn, Scope::Subtree, filter, attrs)
        .await
        .map_err(|e| failed(server, e, timeout))?;
    loop {
        let item = match stream.next().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => return Err(failed(server, e, timeout)),
        };
        if item.is_ref() {
            read.references += 1;
            tracing::debug!(source = %config.name, refs = ?ldap3::parse_refs(item.0), "ldap: continuation reference not followed");
            continue;
        }
        if item.is_intermediate() {
            continue;
        }
        read.entries += 1;
        if read.entries > config.max_entries {
            return Err(SourceError::Limit(format!("{}: more than max_entries ({}) entries match the filter", server.url, config.max_entries)));
        }
        let raw: RawEntry = match parse::entry_from_tag(item.0) {
            Ok(raw) => raw,
            Err(e) => {
                read.malformed += 1;
                tracing::debug!(source = %config.name, error = %e, "ldap: malformed entry skipped");
                continue;
            }
        };
        for (i, m) in modes.iter().enumerate() {
            match m.value(&raw) {
                Some(v) => {
                    if read.highest[i].as_ref().is_none_or(|h| m.later(&v, h)) {
                        read.highest[i] = Some(v);
                    }
                }
                None => read.without[i] += 1,
            }
        }
        match mapping.entry(&raw) {
            Ok(entry) => {
                if keys.insert(entry.key.clone()) {
                    read.list.push(entry);
                } else {
                    read.duplicates += 1;
                }
            }
            Err(Skip::NoKey) => read.skipped_no_key += 1,
            Err(Skip::NoName) => read.skipped_no_name += 1,
        }
    }
    let done = stream.finish().await;
    match done.rc {
        0 => Ok(read),
        rc => Err(result_error(server, config, rc, &done.text, &done.refs)),
    }
}

/// A search that failed on the way.
fn failed(server: &Server, e: LdapError, timeout: Duration) -> SourceError {
    match e {
        LdapError::Timeout { .. } => SourceError::Connect(format!("{}: no answer within {} s", server.url, timeout.as_secs())),
        LdapError::Io { source } => SourceError::Connect(format!("{}: {}", server.url, clip(&source.to_string()))),
        LdapError::LdapResult { result } => SourceError::Protocol(format!("{}: {}", server.url, clip(&result.to_string()))),
        e => SourceError::Protocol(format!("{}: {}", server.url, clip(&e.to_string()))),
    }
}

/// A search the server ended with result code `rc`.
fn result_error(server: &Server, config: &LdapConfig, rc: u32, text: &str, refs: &[String]) -> SourceError {
    let text = clip(text);
    let url = &server.url;
    match rc {
        4 => SourceError::Limit(format!("{url}: the server's size limit stopped the search (result 4: {text}); it must allow paged searches past its limit")),
        3 => SourceError::Limit(format!("{url}: the server's time limit stopped the search (result 3: {text})")),
        11 => SourceError::Limit(format!("{url}: an administrative limit stopped the search (result 11: {text})")),
        10 => SourceError::Config(format!("{url}: base_dn {:?} is not held by this server (referral to {}); referrals are not followed", config.base_dn, clip(&refs.join(" ")))),
        32 => SourceError::Config(format!("{url}: base_dn {:?} does not exist (result 32: {text})", config.base_dn)),
        50 => SourceError::Auth(format!("{url}: the service account may not read base_dn {:?} (result 50: {text})", config.base_dn)),
        12 => SourceError::Protocol(format!("{url}: the server does not support the paged results control (result 12: {text})")),
        rc => SourceError::Protocol(format!("{url}: the search failed (result {rc}: {text})")),
    }
}
