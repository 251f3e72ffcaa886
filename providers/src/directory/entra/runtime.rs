//! The `entra` source's calls and passes: the app token (the toolkit's client-credentials
//! cache, [`crate::common::microsoft::app_tokens`]), Graph pages read within their limits with
//! throttling waited out ([`crate::common::microsoft::throttle_wait`]), delta rounds merged onto
//! the users the source knows, and group rounds read whole.
//!
//! Links from Graph (`@odata.nextLink`, `@odata.deltaLink`, a stored cursor) are followed only
//! on the configured `graph_url`'s origin: the bearer token goes nowhere else.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tracing::{info, warn};

use super::filter::Filter;
use super::parse::{self, Cursor, Item, User};
use super::EntraConfig;
use crate::common::http::{self, CallError, Limits};
use crate::common::microsoft::{self, GRAPH_DEFAULT_RETRY};
use crate::common::oauth::TokenCache;
use crate::directory::{Entry, Pass, PassKind, SourceError};
use presence_actors::model::now_ms;

/// Most pages one round may take (an endless chain of `nextLink`s ends here).
const MAX_PAGES: usize = 100_000;

/// Why a round stopped.
enum Fail {
    /// Graph refused the delta link: start a new round from scratch.
    Resync,
    /// The pass fails.
    Source(SourceError),
}

impl From<SourceError> for Fail {
    fn from(e: SourceError) -> Fail {
        Fail::Source(e)
    }
}

/// A running `entra` source.
pub struct EntraSource {
    cfg: EntraConfig,
    filter: Option<Filter>,
    http: reqwest::Client,
    tokens: TokenCache,
    graph_url: String,
    origin: String,
    /// Every user of the last round, filtered or not (a partial update needs the rest).
    known: HashMap<String, User>,
    /// The delta link `known` is the state of.
    known_link: Option<String>,
}

impl std::fmt::Debug for EntraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraSource").field("name", &self.cfg.name).field("graph_url", &self.graph_url).field("known", &self.known.len()).finish_non_exhaustive()
    }
}

/// `scheme://host:port` of an http(s) URL.
fn origin(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    Some(format!("{}://{}:{}", u.scheme(), u.host_str()?, u.port_or_known_default()?))
}

impl EntraSource {
    /// A source for `config` (checked first); nothing is sent until [`EntraSource::pass`].
    pub fn new(config: &EntraConfig) -> Result<EntraSource, SourceError> {
        config.validate()?;
        let graph_url = config.app.graph_url.trim_end_matches('/').to_string();
        let origin = origin(&graph_url).ok_or_else(|| SourceError::Config("graph_url is not a URL".into()))?;
        let http = reqwest::Client::builder().build().map_err(|e| SourceError::Config(format!("HTTP client: {e}")))?;
        let limits = Limits::new(crate::common::oauth::TOKEN_LIMITS.max_body, Duration::from_secs(config.call_timeout_secs));
        Ok(EntraSource {
            filter: config.filter.as_deref().map(Filter::parse).transpose().map_err(SourceError::Config)?,
            tokens: config.app.app_tokens().with_limits(limits),
            cfg: config.clone(),
            http,
            graph_url,
            origin,
            known: HashMap::new(),
            known_link: None,
        })
    }

    /// Runs one pass (see the module docs of [`super`] for when it is incremental).
    pub async fn pass(&mut self, want: PassKind, cursor: Option<&str>) -> Result<Pass, SourceError> {
        if let Some(group) = self.cfg.group.clone() {
            return self.group_pass(&group).await;
        }
        let resume = match (want, cursor.and_then(Cursor::parse)) {
            (PassKind::Incremental, Some(c)) if !c.fresh(now_ms()) => {
                info!(source = %self.cfg.name, "Entra delta link older than seven days; full pass.");
                None
            }
            (PassKind::Incremental, Some(c)) if self.known_link.as_deref() == Some(c.delta_link.as_str()) => Some(c.delta_link),
            (PassKind::Incremental, Some(_)) => {
                info!(source = %self.cfg.name, "Entra delta link from before this start; full pass.");
                None
            }
            _ => None,
        };
        if let Some(link) = resume {
            match self.round(link).await {
                Ok((items, next)) => return Ok(self.incremental(items, next)),
                Err(Fail::Resync) => info!(source = %self.cfg.name, "Graph refused the delta link (expired or resync required); full pass."),
                Err(Fail::Source(e)) => return Err(e),
            }
        }
        let first = format!("{}/users/delta?$select={}", self.graph_url, parse::SELECT);
        match self.round(first).await {
            Ok((items, next)) => Ok(self.full(items, next)),
            Err(Fail::Resync) => Err(SourceError::Protocol("Graph asked for a new round at the start of one".into())),
            Err(Fail::Source(e)) => Err(e),
        }
    }

    /// Follows `@odata.nextLink` from `url` to the `@odata.deltaLink`: the items and that link.
    async fn round(&self, url: String) -> Result<(Vec<Item>, String), Fail> {
        let mut url = url;
        let mut items = Vec::new();
        let mut retries = 0;
        for _ in 0..MAX_PAGES {
            let body = self.get(&url, &mut retries, false).await?;
            let page = parse::page(&body, self.cfg.max_page_bytes).map_err(|e| SourceError::Protocol(format!("users/delta: {e}")))?;
            items.extend(page.items);
            self.check_count(items.len())?;
            match (page.next_link, page.delta_link) {
                (Some(next), _) => url = next,
                (None, Some(delta)) => {
                    self.check_link(&delta)?;
                    return Ok((items, delta));
                }
                (None, None) => return Err(SourceError::Protocol("users/delta: a page with neither @odata.nextLink nor @odata.deltaLink".into()).into()),
            }
        }
        Err(SourceError::Limit(format!("users/delta: more than {MAX_PAGES} pages")).into())
    }

    /// A full round: the users it read become the known state.
    fn full(&mut self, items: Vec<Item>, delta_link: String) -> Pass {
        let mut known: HashMap<String, User> = HashMap::with_capacity(items.len());
        for item in items {
            match item {
                Item::Patch(p) => known.entry(p.id.clone()).or_default().apply(&p),
                Item::Removed { id, .. } => {
                    known.remove(&id);
                }
            }
        }
        let mut entries: Vec<Entry> = known.iter().filter(|(_, u)| self.visible(u)).map(|(id, u)| Entry { key: id.as_str().into(), record: u.record(id) }).collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        info!(source = %self.cfg.name, users = known.len(), entries = entries.len(), "Entra full pass read.");
        self.known = known;
        self.known_link = Some(delta_link.clone());
        Pass { kind: PassKind::Full, entries, removed: Vec::new(), cursor: Some(Cursor { delta_link, issued_at: now_ms() }.to_text()) }
    }

    /// An incremental round: its changes applied onto the known users; the ones that changed
    /// and are visible are entries, the ones that were visible and are not any more removals.
    fn incremental(&mut self, items: Vec<Item>, delta_link: String) -> Pass {
        let mut staged: BTreeMap<String, Option<User>> = BTreeMap::new();
        for item in items {
            match item {
                Item::Removed { id, .. } => {
                    staged.insert(id, None);
                }
                Item::Patch(p) => {
                    let mut u = match staged.get(&p.id) {
                        Some(s) => s.clone().unwrap_or_default(),
                        None => self.known.get(&p.id).cloned().unwrap_or_default(),
                    };
                    u.apply(&p);
                    staged.insert(p.id.clone(), Some(u));
                }
            }
        }
        let (mut entries, mut removed) = (Vec::new(), Vec::new());
        for (id, now) in staged {
            let was = self.known.get(&id).is_some_and(|u| self.visible(u));
            match now {
                Some(u) if self.visible(&u) => {
                    entries.push(Entry { key: id.as_str().into(), record: u.record(&id) });
                    self.known.insert(id, u);
                }
                Some(u) => {
                    if was {
                        removed.push(id.as_str().into());
                    }
                    self.known.insert(id, u);
                }
                None => {
                    if was {
                        removed.push(id.as_str().into());
                    }
                    self.known.remove(&id);
                }
            }
        }
        info!(source = %self.cfg.name, changed = entries.len(), removed = removed.len(), "Entra incremental pass read.");
        self.known_link = Some(delta_link.clone());
        Pass { kind: PassKind::Incremental, entries, removed, cursor: Some(Cursor { delta_link, issued_at: now_ms() }.to_text()) }
    }

    /// Group mode: the group's transitive user members, read whole.
    async fn group_pass(&mut self, group: &str) -> Result<Pass, SourceError> {
        // An OData cast on a member list is an advanced query: `$count=true` and
        // `ConsistencyLevel: eventual`.
        let mut url = format!("{}/groups/{group}/transitiveMembers/microsoft.graph.user?$select={}&$top={}&$count=true", self.graph_url, parse::SELECT, self.cfg.page_size);
        let mut users: BTreeMap<String, User> = BTreeMap::new();
        let mut retries = 0;
        let mut read = 0usize;
        for _ in 0..MAX_PAGES {
            let body = match self.get(&url, &mut retries, true).await {
                Ok(b) => b,
                Err(Fail::Resync) => return Err(SourceError::Protocol("transitiveMembers: Graph answered as if to a delta link".into())),
                Err(Fail::Source(e)) => return Err(e),
            };
            let page = parse::page(&body, self.cfg.max_page_bytes).map_err(|e| SourceError::Protocol(format!("transitiveMembers: {e}")))?;
            read += page.items.len();
            self.check_count(read)?;
            for item in page.items {
                if let Item::Patch(p) = item {
                    users.entry(p.id.clone()).or_default().apply(&p);
                }
            }
            match page.next_link {
                Some(next) => url = next,
                None => {
                    let entries: Vec<Entry> = users.iter().filter(|(_, u)| self.visible(u)).map(|(id, u)| Entry { key: id.as_str().into(), record: u.record(id) }).collect();
                    info!(source = %self.cfg.name, members = users.len(), entries = entries.len(), "Entra group pass read.");
                    return Ok(Pass { kind: PassKind::Full, entries, removed: Vec::new(), cursor: None });
                }
            }
        }
        Err(SourceError::Limit(format!("transitiveMembers: more than {MAX_PAGES} pages")))
    }

    fn visible(&self, u: &User) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(u))
    }

    fn check_count(&self, n: usize) -> Result<(), SourceError> {
        if n > self.cfg.max_users {
            return Err(SourceError::Limit(format!("more than {} users (max_users)", self.cfg.max_users)));
        }
        Ok(())
    }

    /// A link from Graph is followed only on `graph_url`'s origin.
    fn check_link(&self, url: &str) -> Result<(), SourceError> {
        if origin(url).as_deref() == Some(self.origin.as_str()) {
            return Ok(());
        }
        Err(SourceError::Protocol("Graph sent a link to another host than graph_url; not followed".into()))
    }

    /// One page: the body of a 2xx answer. A `401` renews the token once; throttled answers
    /// are waited out (`retries` counts them over the pass); an answer refusing a delta link
    /// is [`Fail::Resync`].
    async fn get(&self, url: &str, retries: &mut u32, advanced: bool) -> Result<Vec<u8>, Fail> {
        self.check_link(url)?;
        let limits = Limits::new(self.cfg.max_page_bytes, Duration::from_secs(self.cfg.call_timeout_secs));
        let mut renewed = false;
        loop {
            let token = self.tokens.get(&self.http).await.map_err(token_error)?;
            let mut req = self.http.get(url).bearer_auth(token).header("accept", "application/json");
            if advanced {
                req = req.header("consistencylevel", "eventual");
            }
            let a = http::send(req, limits).await.map_err(call_error)?;
            if a.ok() {
                return Ok(a.body);
            }
            if a.status == 401 && !renewed {
                self.tokens.forget().await;
                renewed = true;
                continue;
            }
            if let Some(wait) = microsoft::throttle_wait(a.status, a.retry_after) {
                let max_wait = Duration::from_secs(self.cfg.max_retry_wait_secs);
                if *retries >= self.cfg.max_retries || wait > max_wait {
                    let why = if wait > max_wait { format!("asks to wait {} s, more than max_retry_wait_secs", wait.as_secs()) } else { format!("still throttling after {} retries", *retries) };
                    return Err(SourceError::Connect(format!("Graph {why} ({})", a.into_error(GRAPH_DEFAULT_RETRY))).into());
                }
                *retries += 1;
                warn!(source = %self.cfg.name, status = a.status, wait_ms = wait.as_millis() as u64, "Graph is throttling the directory reads; waiting.");
                tokio::time::sleep(wait).await;
                continue;
            }
            if parse::asks_for_resync(a.status, &a.body) {
                return Err(Fail::Resync);
            }
            let status = a.status;
            let e = a.into_error(GRAPH_DEFAULT_RETRY);
            return Err(match status {
                401 | 403 => SourceError::Auth(format!("Graph refused the app ({e}); it needs User.Read.All (and GroupMember.Read.All for group) with admin consent")),
                500.. => SourceError::Connect(e.to_string()),
                _ => SourceError::Protocol(e.to_string()),
            }
            .into());
        }
    }
}

/// A failed token request: refused credentials are [`SourceError::Auth`], the endpoint's own
/// trouble [`SourceError::Connect`].
fn token_error(e: CallError) -> SourceError {
    match e {
        CallError::Token(why) => SourceError::Auth(format!("token: {why}")),
        other => SourceError::Connect(format!("token: {other}")),
    }
}

fn call_error(e: CallError) -> SourceError {
    match e {
        CallError::TooLarge { .. } => SourceError::Limit(format!("{e} (max_page_bytes)")),
        CallError::Parse(_) => SourceError::Protocol(e.to_string()),
        _ => SourceError::Connect(e.to_string()),
    }
}
