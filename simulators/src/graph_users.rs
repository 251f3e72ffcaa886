//! The directory side of the Graph simulator ([`crate::graph::GraphSim`]): users and groups
//! for the `entra` directory source, from Microsoft's documented shapes.
//!
//! - `GET /v1.0/users/delta`: the first request takes `$select` (a `$filter` is refused with
//!   `400 Request_UnsupportedQuery`, as Graph refuses everything but `id eq`); pages of
//!   [`GraphSim::set_users_page_size`] users with an `@odata.nextLink` (an opaque
//!   `$skiptoken`), the last with an `@odata.deltaLink` (an opaque `$deltatoken` holding the
//!   directory's change counter). A round from a delta link returns only the users changed
//!   since, each with **only the properties that changed** (as with `Prefer: return=minimal`;
//!   a user created since comes whole), and `{"id", "@removed": {"reason"}}` for users deleted
//!   (`changed`: restorable, `deleted`: for good). Disabling an account is a change of
//!   `accountEnabled`, not a removal, as in Graph.
//! - `GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user`: the users of a group and
//!   of its nested groups, paged by `$top` (default 100, at most 999) with `$skiptoken`; the
//!   cast is an advanced query, so `ConsistencyLevel: eventual` is required (`400` otherwise).
//!   `@odata.count` with `$count=true`.
//!
//! Controls: [`GraphSim::put_user`], [`GraphSim::update_user`], [`GraphSim::delete_user`],
//! [`GraphSim::set_group`], [`GraphSim::expire_delta_tokens`] (every token issued so far is
//! refused: `410 Gone` with `resyncRequired`, or `400` with `syncStateNotFound` as for a token
//! past its seven days), [`GraphSim::throttle_users`] (`429` with `Retry-After`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::graph::{bearer, graph_error, lock, GraphSim, Shared};

/// The user properties the simulator knows, in Graph's spelling.
const PROPERTIES: [&str; 11] = ["displayName", "givenName", "surname", "mail", "userPrincipalName", "businessPhones", "mobilePhone", "jobTitle", "department", "proxyAddresses", "accountEnabled"];

/// A directory user with the Graph properties the simulator serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimUser {
    /// Object id.
    pub id: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `givenName`.
    pub given_name: Option<String>,
    /// `surname`.
    pub surname: Option<String>,
    /// `mail`.
    pub mail: Option<String>,
    /// `userPrincipalName`.
    pub user_principal_name: Option<String>,
    /// `businessPhones`.
    pub business_phones: Vec<String>,
    /// `mobilePhone`.
    pub mobile_phone: Option<String>,
    /// `jobTitle`.
    pub job_title: Option<String>,
    /// `department`.
    pub department: Option<String>,
    /// `proxyAddresses` (`SMTP:…`, `SIP:…`).
    pub proxy_addresses: Vec<String>,
    /// `accountEnabled`.
    pub account_enabled: bool,
}

impl SimUser {
    /// An enabled user with a display name and an e-mail address (also the UPN).
    pub fn new(id: &str, display_name: &str, mail: &str) -> SimUser {
        SimUser {
            id: id.into(),
            display_name: Some(display_name.into()),
            mail: Some(mail.into()),
            user_principal_name: Some(mail.into()),
            account_enabled: true,
            ..SimUser::default()
        }
    }

    fn property(&self, name: &str) -> Value {
        let s = |v: &Option<String>| v.as_ref().map_or(Value::Null, |v| json!(v));
        match name {
            "displayName" => s(&self.display_name),
            "givenName" => s(&self.given_name),
            "surname" => s(&self.surname),
            "mail" => s(&self.mail),
            "userPrincipalName" => s(&self.user_principal_name),
            "businessPhones" => json!(self.business_phones),
            "mobilePhone" => s(&self.mobile_phone),
            "jobTitle" => s(&self.job_title),
            "department" => s(&self.department),
            "proxyAddresses" => json!(self.proxy_addresses),
            "accountEnabled" => json!(self.account_enabled),
            _ => Value::Null,
        }
    }
}

/// How tokens are refused after [`GraphSim::expire_delta_tokens`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenRefusal {
    /// `410 Gone`, code `resyncRequired`.
    #[default]
    Gone,
    /// `400 Bad Request`, code `syncStateNotFound` (a delta token past its seven days).
    SyncStateNotFound,
}

/// Counters of the directory endpoints, read with [`GraphSim::users_stats`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct UsersStats {
    /// `/users/delta` requests answered (any status).
    pub delta_requests: u64,
    /// Of those, rounds started without a token (full rounds).
    pub full_rounds: u64,
    /// Transitive member list requests answered (any status).
    pub member_requests: u64,
    /// Answered `429`.
    pub throttled: u64,
    /// Requests that came while a `Retry-After` was still running.
    pub early_after_retry_after: u64,
    /// Tokens refused after [`GraphSim::expire_delta_tokens`].
    pub tokens_refused: u64,
    /// The `$select` of the last full round.
    pub last_select: Option<String>,
}

struct Stored {
    user: SimUser,
    created: u64,
    changed: BTreeMap<&'static str, u64>,
}

/// The simulator's directory (kept in the Graph simulator's state).
pub(crate) struct Directory {
    users: BTreeMap<String, Stored>,
    /// Deleted users: id → (version, `@removed` reason).
    removed: BTreeMap<String, (u64, &'static str)>,
    groups: HashMap<String, (Vec<String>, Vec<String>)>,
    version: u64,
    epoch: u64,
    refusal: TokenRefusal,
    page_size: usize,
    throttle_next: u32,
    retry_after_secs: u64,
    retry_until: Option<Instant>,
    stats: UsersStats,
}

impl Default for Directory {
    fn default() -> Directory {
        Directory {
            users: BTreeMap::new(),
            removed: BTreeMap::new(),
            groups: HashMap::new(),
            version: 1,
            epoch: 1,
            refusal: TokenRefusal::Gone,
            page_size: 100,
            throttle_next: 0,
            retry_after_secs: 1,
            retry_until: None,
            stats: UsersStats::default(),
        }
    }
}

/// What a `$skiptoken` or `$deltatoken` holds (base64url JSON: opaque to clients).
#[derive(Serialize, Deserialize)]
struct Token {
    /// Changes after this version (0: a full round).
    s: u64,
    /// Up to this version (skip tokens; a delta token's round takes the version it starts at).
    u: Option<u64>,
    /// Offset of the next page (skip tokens).
    o: usize,
    /// Epoch: tokens of an older one are refused.
    e: u64,
    /// `$select`.
    sel: Vec<String>,
    /// Group (member lists).
    g: Option<String>,
}

fn encode(t: &Token) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(t).unwrap_or_default())
}

fn decode(s: &str) -> Option<Token> {
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?).ok()
}

impl GraphSim {
    /// Adds a user, or changes one: the properties that differ are the change.
    pub fn put_user(&self, user: SimUser) {
        let mut g = lock(&self.state);
        let d = &mut g.users;
        d.version += 1;
        let v = d.version;
        d.removed.remove(&user.id);
        match d.users.get_mut(&user.id) {
            Some(s) => {
                for p in PROPERTIES {
                    if s.user.property(p) != user.property(p) {
                        s.changed.insert(p, v);
                    }
                }
                s.user = user;
            }
            None => {
                let changed = PROPERTIES.iter().map(|p| (*p, v)).collect();
                d.users.insert(user.id.clone(), Stored { user, created: v, changed });
            }
        }
    }

    /// Changes a user with `f` (nothing if there is no such user).
    pub fn update_user(&self, id: &str, f: impl FnOnce(&mut SimUser)) {
        let current = lock(&self.state).users.users.get(id).map(|s| s.user.clone());
        if let Some(mut u) = current {
            f(&mut u);
            self.put_user(u);
        }
    }

    /// Deletes a user: restorable (`@removed` reason `changed`) or for good (`deleted`).
    pub fn delete_user(&self, id: &str, permanently: bool) {
        let mut g = lock(&self.state);
        let d = &mut g.users;
        if d.users.remove(id).is_some() {
            d.version += 1;
            let v = d.version;
            d.removed.insert(id.to_string(), (v, if permanently { "deleted" } else { "changed" }));
        }
    }

    /// Sets a group's direct members: users and nested groups.
    pub fn set_group(&self, id: &str, users: &[&str], groups: &[&str]) {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        lock(&self.state).users.groups.insert(id.to_string(), (strings(users), strings(groups)));
    }

    /// Users per `/users/delta` page (at least 1).
    pub fn set_users_page_size(&self, n: usize) {
        lock(&self.state).users.page_size = n.max(1);
    }

    /// Refuses every delta and skip token issued so far, `how`.
    pub fn expire_delta_tokens(&self, how: TokenRefusal) {
        let mut g = lock(&self.state);
        g.users.epoch += 1;
        g.users.refusal = how;
    }

    /// Answers the next `n` directory requests with `429` and `Retry-After: retry_after_secs`.
    pub fn throttle_users(&self, n: u32, retry_after_secs: u64) {
        let mut g = lock(&self.state);
        g.users.throttle_next = n;
        g.users.retry_after_secs = retry_after_secs.max(1);
    }

    /// Counters of the directory endpoints.
    pub fn users_stats(&self) -> UsersStats {
        lock(&self.state).users.stats.clone()
    }
}

/// Routes of the directory endpoints.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1.0/users/delta", web::get().to(users_delta)).route("/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user", web::get().to(transitive_members));
}

/// Token check and throttling shared by the directory endpoints. `Err` is the answer to send.
#[allow(clippy::result_large_err)] // the error is the answer to send
fn gate(state: &Shared, req: &HttpRequest) -> Result<(), HttpResponse> {
    let mut g = lock(state);
    bearer(req, &g)?;
    let now = Instant::now();
    let d = &mut g.users;
    if d.retry_until.is_some_and(|u| u > now) {
        d.stats.early_after_retry_after += 1;
    }
    if d.throttle_next > 0 {
        d.throttle_next -= 1;
        d.stats.throttled += 1;
        let secs = d.retry_after_secs;
        d.retry_until = Some(now + Duration::from_secs(secs));
        return Err(HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", secs.to_string()))
            .json(json!({ "error": { "code": "TooManyRequests", "message": "Too many requests." } })));
    }
    Ok(())
}

fn selection(select: Option<&String>) -> Vec<String> {
    match select {
        Some(s) => s.split(',').map(|p| p.trim().to_string()).filter(|p| PROPERTIES.contains(&p.as_str())).collect(),
        None => PROPERTIES.iter().map(|p| p.to_string()).collect(),
    }
}

fn user_json(u: &SimUser, sel: &[String], only: Option<&dyn Fn(&str) -> bool>) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(u.id));
    for p in sel {
        if only.is_none_or(|f| f(p)) {
            o.insert(p.clone(), u.property(p));
        }
    }
    Value::Object(o)
}

async fn users_delta(state: web::Data<Shared>, req: HttpRequest, q: web::Query<HashMap<String, String>>) -> HttpResponse {
    lock(&state).users.stats.delta_requests += 1;
    if let Err(r) = gate(&state, &req) {
        return r;
    }
    let mut g = lock(&state);
    let d = &mut g.users;
    let token = q.get("$skiptoken").or(q.get("$deltatoken"));
    let (since, upto, offset, sel) = match token {
        Some(t) => {
            let Some(t) = decode(t) else { return graph_error(400, "badRequest", "The token is not valid.") };
            if t.e != d.epoch || t.g.is_some() {
                d.stats.tokens_refused += 1;
                return match d.refusal {
                    TokenRefusal::Gone => graph_error(410, "resyncRequired", "Resync required. Replace any local cached data with the data from a new delta round."),
                    TokenRefusal::SyncStateNotFound => graph_error(400, "syncStateNotFound", "The sync state generation is not found. The delta token is expired and data must be synchronized again."),
                };
            }
            (t.s, t.u.unwrap_or(d.version), t.o, t.sel)
        }
        None => {
            if q.contains_key("$filter") {
                return graph_error(400, "Request_UnsupportedQuery", "Unsupported Query.");
            }
            d.stats.full_rounds += 1;
            d.stats.last_select = q.get("$select").cloned();
            (0, d.version, 0, selection(q.get("$select")))
        }
    };
    // The round's items, in id order: users changed (or created) in (since, upto], and users
    // removed in it.
    let mut items: Vec<Value> = Vec::new();
    let ids: BTreeSet<&String> = d.users.keys().chain(d.removed.keys()).collect();
    for id in ids {
        if let Some(s) = d.users.get(id) {
            if s.created > upto {
                continue;
            }
            if since == 0 || s.created > since {
                items.push(user_json(&s.user, &sel, None));
            } else if s.changed.values().any(|v| *v > since && *v <= upto) {
                let changed = |p: &str| s.changed.get(p).is_some_and(|v| *v > since && *v <= upto);
                items.push(user_json(&s.user, &sel, Some(&changed)));
            }
        } else if let Some((v, reason)) = d.removed.get(id) {
            if since > 0 && *v > since && *v <= upto {
                items.push(json!({ "id": id, "@removed": { "reason": reason } }));
            }
        }
    }
    let base = format!("{}://{}/v1.0/users/delta", req.connection_info().scheme(), req.connection_info().host());
    let end = (offset + d.page_size).min(items.len());
    let page: Vec<Value> = items.get(offset..end).map(<[Value]>::to_vec).unwrap_or_default();
    let mut body = json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users", "value": page });
    if end < items.len() {
        let t = Token { s: since, u: Some(upto), o: end, e: d.epoch, sel, g: None };
        body["@odata.nextLink"] = json!(format!("{base}?$skiptoken={}", encode(&t)));
    } else {
        let t = Token { s: upto, u: None, o: 0, e: d.epoch, sel, g: None };
        body["@odata.deltaLink"] = json!(format!("{base}?$deltatoken={}", encode(&t)));
    }
    HttpResponse::Ok().json(body)
}

async fn transitive_members(state: web::Data<Shared>, req: HttpRequest, id: web::Path<String>, q: web::Query<HashMap<String, String>>) -> HttpResponse {
    lock(&state).users.stats.member_requests += 1;
    if let Err(r) = gate(&state, &req) {
        return r;
    }
    if !req.headers().get("consistencylevel").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("eventual")) {
        return graph_error(400, "Request_UnsupportedQuery", "The OData cast needs the ConsistencyLevel: eventual header and $count=true.");
    }
    let g = lock(&state);
    let d = &g.users;
    let group = id.into_inner();
    if !d.groups.contains_key(&group) {
        return graph_error(404, "Request_ResourceNotFound", &format!("Resource '{group}' does not exist or one of its queried reference-property objects are not present."));
    }
    let (offset, sel, top) = match q.get("$skiptoken").map(|t| decode(t)) {
        Some(Some(t)) if t.g.as_deref() == Some(group.as_str()) => (t.o, t.sel, t.u.unwrap_or(100) as usize),
        Some(_) => return graph_error(400, "badRequest", "The skip token is not valid."),
        None => (0, selection(q.get("$select")), q.get("$top").and_then(|t| t.parse::<usize>().ok()).unwrap_or(100)),
    };
    if !(1..=999).contains(&top) {
        return graph_error(400, "Request_BadRequest", "Invalid page size specified: must be between 1 and 999 inclusive.");
    }
    // The transitive closure: users of the group and of every group nested in it.
    let mut members: BTreeSet<&String> = BTreeSet::new();
    let mut seen: BTreeSet<&String> = BTreeSet::new();
    let mut todo = vec![&group];
    while let Some(gid) = todo.pop() {
        if !seen.insert(gid) {
            continue;
        }
        if let Some((users, groups)) = d.groups.get(gid) {
            members.extend(users.iter().filter(|u| d.users.contains_key(*u)));
            todo.extend(groups.iter());
        }
    }
    let all: Vec<&String> = members.into_iter().collect();
    let end = (offset + top).min(all.len());
    let page: Vec<Value> = all.get(offset..end).unwrap_or_default().iter().map(|id| user_json(&d.users[*id].user, &sel, None)).collect();
    let mut body = json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users", "value": page });
    if q.get("$count").is_some_and(|c| c == "true") {
        body["@odata.count"] = json!(all.len());
    }
    if end < all.len() {
        let t = Token { s: 0, u: Some(top as u64), o: end, e: d.epoch, sel, g: Some(group.clone()) };
        let base = format!("{}://{}/v1.0/groups/{group}/transitiveMembers/microsoft.graph.user", req.connection_info().scheme(), req.connection_info().host());
        body["@odata.nextLink"] = json!(format!("{base}?$skiptoken={}", encode(&t)));
    }
    HttpResponse::Ok().json(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::GraphSimConfig;

    async fn get(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
        let r = http.get(url).bearer_auth(token).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// A delta round from a delta link carries only what changed: the changed property of a
    /// changed user, a new user whole, `@removed` for a deleted one; an expired token is refused.
    #[actix_rt::test]
    async fn delta_rounds_carry_only_the_changes() {
        let sim = GraphSim::start(GraphSimConfig::default()).unwrap();
        sim.put_user(SimUser::new("a", "Anna", "anna@x"));
        sim.put_user(SimUser::new("b", "Bo", "bo@x"));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let form = "grant_type=client_credentials&client_id=sim-client&client_secret=sim-secret&scope=x";
        let r = http.post(sim.token_url()).header("content-type", "application/x-www-form-urlencoded").body(form).send().await.unwrap();
        let t: Value = r.json().await.unwrap();
        let token = t["access_token"].as_str().unwrap().to_string();
        let (status, full) = get(&http, &format!("{}/users/delta?$select=displayName,mail,jobTitle", sim.graph_url()), &token).await;
        assert_eq!(status, 200);
        assert_eq!(full["value"][0], json!({ "id": "a", "displayName": "Anna", "mail": "anna@x", "jobTitle": null }));
        let delta = full["@odata.deltaLink"].as_str().unwrap().to_string();
        sim.update_user("a", |u| u.job_title = Some("CEO".into()));
        sim.delete_user("b", false);
        sim.put_user(SimUser::new("c", "Cia", "cia@x"));
        let (_, changes) = get(&http, &delta, &token).await;
        assert_eq!(
            changes["value"],
            json!([
                { "id": "a", "jobTitle": "CEO" },
                { "id": "b", "@removed": { "reason": "changed" } },
                { "id": "c", "displayName": "Cia", "mail": "cia@x", "jobTitle": null },
            ])
        );
        let (_, none) = get(&http, changes["@odata.deltaLink"].as_str().unwrap(), &token).await;
        assert_eq!(none["value"], json!([]));
        let (status, _) = get(&http, &format!("{}/users/delta?$filter=accountEnabled eq true", sim.graph_url()), &token).await;
        assert_eq!(status, 400, "$filter is refused, as Graph refuses it on delta");
        sim.expire_delta_tokens(TokenRefusal::Gone);
        let (status, body) = get(&http, &delta, &token).await;
        assert_eq!((status, body["error"]["code"].as_str()), (410, Some("resyncRequired")));
    }
}
