//! People, absences and pushed signals.
//!
//! Reads need the `viewer` role; setting, changing and clearing absences need `operator`;
//! pushing signals needs `admin`. An absence is committed to the store before the API
//! acknowledges it, then applied to the person's actor.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::AppError;
use super::{blocking, AppState};
use super::auth::{client_ip, AbsenceWriter, Admin, Caller, Role};
use crate::audit::{self, Action};
use crate::store::StoredAbsence;
use presence_actors::directory::{SearchQuery, UserIdx};
use presence_actors::model::absence::{MAX_ABSENCES_PER_USER, MAX_ABSENCE_TEXT};
use presence_actors::model::merge::SlotFreshness;
use presence_actors::model::{
    now_ms, parse_rfc3339, rfc3339, Absence, Activity, Availability, DetailPolicy, MergedView, Signal, Source,
    UnixMs, UserPresence, Version,
};
use presence_actors::wire::presence_json;

/// Furthest ahead an absence may start or end.
const MAX_ABSENCE_AHEAD_MS: i64 = 400 * 24 * 3600 * 1000;
/// Furthest back an absence may start.
const MAX_ABSENCE_BACKDATE_MS: i64 = 24 * 3600 * 1000;
/// Most signals in one push.
const MAX_SIGNALS_PER_PUSH: usize = 1000;

type Data = web::Data<AppState>;

fn user_idx(state: &AppState, id: &str) -> Result<UserIdx, AppError> {
    state
        .hub
        .directory()
        .by_id(id)
        .ok_or_else(|| AppError::NotFound(format!("no person with id {:?}", truncate(id, 80))))
}

fn truncate(s: &str, n: usize) -> &str {
    presence_actors::model::activity::truncate(s, n)
}

/// The presence JSON of a person (latest change, or Unknown).
fn presence_raw(state: &AppState, idx: UserIdx, id: &str) -> Box<RawValue> {
    let json = match state.hub.fanout().latest(idx) {
        Some(l) => presence_json(id, &l.view),
        None => presence_json(id, &MergedView::default()),
    };
    RawValue::from_string(json).unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"))
}

#[derive(Serialize)]
struct PersonSummary<'a> {
    id: &'a str,
    name: &'a str,
    department: Option<&'a str>,
    title: Option<&'a str>,
    extension: Option<&'a str>,
    phones: Vec<presence_actors::directory::PhoneRef<'a>>,
    presence: Box<RawValue>,
}

/// Query of `GET /api/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    department: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

/// `GET /api/users?q=&department=&limit=&offset=`
pub async fn search(state: Data, caller: Caller, q: web::Query<SearchParams>) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    if q.q.len() > 200 {
        return Err(AppError::Unprocessable("q must be at most 200 bytes".into()));
    }
    let limit = q.limit.unwrap_or(20);
    if limit == 0 || limit > state.config.http.max_page {
        return Err(AppError::Unprocessable(format!("limit must be 1-{}", state.config.http.max_page)));
    }
    let offset = q.offset.unwrap_or(0);
    if offset > 10_000_000 {
        return Err(AppError::Unprocessable("offset is too large".into()));
    }
    let dir = state.hub.directory();
    let res = dir.search(&SearchQuery { q: &q.q, department: q.department.as_deref(), limit, offset });
    let items: Vec<_> = res
        .items
        .iter()
        .filter_map(|i| dir.person(*i).map(|p| (i, p)))
        .map(|(i, p)| PersonSummary {
            id: p.id(),
            name: p.name(),
            department: p.department(),
            title: p.title(),
            extension: p.extension(),
            phones: p.phones().collect(),
            presence: presence_raw(&state, *i, p.id()),
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "total": res.total, "limit": limit, "offset": offset, "items": items })))
}

#[derive(Serialize)]
struct SourceOut {
    source: Source,
    instance: String,
    availability: Option<Availability>,
    activity: Option<Activity>,
    note: Option<String>,
    ooo: bool,
    freshness: SlotFreshness,
    since: String,
    updated_at: String,
    age_s: i64,
    valid_from: Option<String>,
    valid_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    private: bool,
}

fn details_allowed(policy: DetailPolicy, role: Role) -> bool {
    match policy {
        DetailPolicy::Hidden => false,
        DetailPolicy::Operators => role >= Role::Operator,
        DetailPolicy::Everyone => true,
    }
}

/// `GET /api/users/{id}`: the person, merged presence and the per-source breakdown.
pub async fn detail(state: Data, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let idx = user_idx(&state, &id)?;
    let dir = state.hub.directory().clone();
    let p = dir.person(idx).ok_or_else(|| AppError::NotFound("no such person".into()))?;
    let d = state.hub.detail(idx).await;
    let now = now_ms();
    let feeds = state.hub.feeds().clone();
    // People see of themselves what the switchboard sees of them ("My status").
    let own = caller.person.as_deref() == Some(p.id());
    let show = details_allowed(state.hub.policy().calendar_details, if own { caller.role.max(Role::Operator) } else { caller.role });
    let sources: Vec<SourceOut> = d
        .slots
        .iter()
        .map(|s| {
            let det = s.detail.as_deref();
            let private = det.is_some_and(|d| d.private);
            SourceOut {
                source: s.source,
                instance: s.instance.to_string(),
                availability: s.availability,
                activity: s.activity.clone(),
                note: s.note.as_deref().map(str::to_string),
                ooo: s.ooo,
                freshness: UserPresence::slot_freshness(s, now, &|f| feeds.is_up(f)),
                since: rfc3339(s.since),
                updated_at: rfc3339(s.updated_at),
                age_s: ((now - s.since) / 1000).max(0),
                valid_from: s.valid_from.map(rfc3339),
                valid_until: s.valid_until.map(rfc3339),
                subject: det.filter(|_| show && !private).and_then(|d| d.subject.as_deref().map(str::to_string)),
                location: det.filter(|_| show && !private).and_then(|d| d.location.as_deref().map(str::to_string)),
                private,
            }
        })
        .collect();
    let absences: Vec<_> = d.absences.iter().map(|a| absence_out(&state, p.id(), a, now)).collect();
    let presence = RawValue::from_string(presence_json(p.id(), &d.view)).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": p.id(),
        "name": p.name(),
        "title": p.title(),
        "department": p.department(),
        "email": p.email(),
        "phones": p.phones().collect::<Vec<_>>(),
        "extension": p.extension(),
        "sip_uri": p.sip_uri(),
        "presence": presence,
        "sources": sources,
        "absences": absences,
    })))
}

/// `GET /api/departments`
pub async fn departments(state: Data, caller: Caller) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let list: Vec<_> = state
        .hub
        .directory()
        .departments()
        .into_iter()
        .map(|(name, count)| serde_json::json!({ "name": name, "people": count }))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// `GET /api/absence-reasons`
pub async fn absence_reasons(state: Data, caller: Caller) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    Ok(HttpResponse::Ok().json(&state.hub.policy().absence_reasons))
}

// ---- Absences ---------------------------------------------------------------------------

/// Body of `POST`/`PUT` absences.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbsenceBody {
    reason: String,
    #[serde(default)]
    text: Option<String>,
    /// RFC 3339; default now.
    #[serde(default)]
    start: Option<String>,
    /// RFC 3339; absent = until further notice.
    #[serde(default, alias = "until")]
    end: Option<String>,
}

fn absence_out(state: &AppState, user: &str, a: &Absence, now: UnixMs) -> serde_json::Value {
    let r = state.hub.policy().reason(&a.reason);
    serde_json::json!({
        "id": a.id,
        "user": user,
        "reason": a.reason,
        "label_sv": r.map(|r| &*r.label_sv),
        "label_en": r.map(|r| &*r.label_en),
        "text": a.text,
        "start": rfc3339(a.start),
        "end": a.end.map(rfc3339),
        "active": a.is_active(now),
        "created_at": rfc3339(a.created_at),
        "updated_at": rfc3339(a.updated_at),
        "created_by": a.created_by,
    })
}

fn validate_absence(state: &AppState, b: &AbsenceBody, now: UnixMs) -> Result<(UnixMs, Option<UnixMs>), AppError> {
    let policy = state.hub.policy();
    if policy.reason(&b.reason).is_none() {
        let known: Vec<&str> = policy.absence_reasons.iter().map(|r| &*r.code).collect();
        return Err(AppError::Unprocessable(format!(
            "unknown reason {:?}; known reasons: {}",
            truncate(&b.reason, 40),
            known.join(", ")
        )));
    }
    if b.text.as_ref().is_some_and(|t| t.len() > MAX_ABSENCE_TEXT) {
        return Err(AppError::Unprocessable(format!("text must be at most {MAX_ABSENCE_TEXT} bytes")));
    }
    let time = |field: &str, v: &Option<String>| -> Result<Option<UnixMs>, AppError> {
        match v {
            None => Ok(None),
            Some(s) => parse_rfc3339(s)
                .map(Some)
                .ok_or_else(|| AppError::Unprocessable(format!("{field} must be an RFC 3339 time, e.g. 2026-11-24T13:00:00+01:00"))),
        }
    };
    let start = time("start", &b.start)?.unwrap_or(now);
    let end = time("end", &b.end)?;
    if start < now - MAX_ABSENCE_BACKDATE_MS || start > now + MAX_ABSENCE_AHEAD_MS {
        return Err(AppError::Unprocessable("start must be within a day back and 400 days ahead".into()));
    }
    if let Some(e) = end {
        if e <= start {
            return Err(AppError::Unprocessable("end must be after start".into()));
        }
        if e <= now {
            return Err(AppError::Unprocessable("end is already past".into()));
        }
        if e > now + MAX_ABSENCE_AHEAD_MS {
            return Err(AppError::Unprocessable("end must be within 400 days".into()));
        }
    }
    Ok((start, end))
}

fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Unique, not secret: a per-process random hasher over time and a counter.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}{:04x}", h.finish(), COUNTER.load(Ordering::Relaxed) & 0xffff)
}


/// `GET /api/users/{id}/absences`: current and scheduled absences.
pub async fn list_absences(state: Data, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    user_idx(&state, &id)?;
    let store = state.store.clone();
    let uid = id.clone();
    let list = blocking(move || store.absences_for(&uid)).await?;
    let now = now_ms();
    let out: Vec<_> = list.iter().map(StoredAbsence::to_absence).filter(|a| !a.is_over(now)).map(|a| absence_out(&state, &id, &a, now)).collect();
    Ok(HttpResponse::Ok().json(out))
}

/// `GET /api/users/{id}/absences/{absence_id}`
pub async fn get_absence(state: Data, caller: Caller, path: web::Path<(String, String)>) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let (id, aid) = path.into_inner();
    user_idx(&state, &id)?;
    let store = state.store.clone();
    let (u, a) = (id.clone(), aid.clone());
    let found = blocking(move || store.absence(&u, &a)).await?;
    let a = found.ok_or_else(|| AppError::NotFound(format!("no absence {:?} for {:?}", truncate(&aid, 40), truncate(&id, 80))))?;
    Ok(HttpResponse::Ok().json(absence_out(&state, &id, &a.to_absence(), now_ms())))
}

/// What the audit log keeps of an absence.
fn absence_detail(a: &Absence) -> serde_json::Value {
    serde_json::json!({
        "reason": a.reason,
        "text": a.text,
        "start": rfc3339(a.start),
        "end": a.end.map(rfc3339),
    })
}

/// On a node of a cluster: stores an absence's new state (`None`: cleared) with its audit entry
/// in JetStream (acknowledged on the replicas), waits until this node has applied it, and
/// returns the person's merged view from their owner (`None`: the owner did not answer in
/// time; the change is stored all the same).
async fn cluster_write(state: &Data, c: &crate::cluster::Cluster, user_id: &str, aid: &str, absence: Option<StoredAbsence>, entry: crate::store::audit::AuditRecord) -> Result<Option<MergedView>, AppError> {
    let w = c.writes().ok_or_else(|| AppError::Unavailable("this node is still joining the cluster".into()))?;
    let seq = w.write(user_id, aid, absence, Some(entry)).await.map_err(|e| AppError::Unavailable(e.to_string()))?;
    Ok(crate::cluster::writes::view_after(c, &state.hub, user_id, seq).await)
}

fn presence_value(id: &str, view: Option<&MergedView>) -> Option<Box<RawValue>> {
    view.and_then(|v| RawValue::from_string(presence_json(id, v)).ok())
}

/// `POST /api/users/{id}/absences` (operator; or the person themselves, role `self`): commit
/// with its audit entry, then apply, then acknowledge.
pub async fn create_absence(
    AbsenceWriter(caller): AbsenceWriter,
    req: HttpRequest,
    state: Data,
    id: web::Path<String>,
    body: web::Json<AbsenceBody>,
) -> Result<HttpResponse, AppError> {
    let idx = user_idx(&state, &id)?;
    let now = now_ms();
    let (start, end) = validate_absence(&state, &body, now)?;
    let a = Absence {
        id: new_id().into(),
        reason: body.reason.as_str().into(),
        text: body.text.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(Into::into),
        start,
        end,
        created_at: now,
        updated_at: now,
        created_by: Some(caller.name.as_str().into()),
    };
    let stored = StoredAbsence::from_absence(&id, &a);
    let entry = audit::entry(&caller, Action::AbsenceCreated, Some(&id), serde_json::json!({ "absence": a.id, "new": absence_detail(&a) }), client_ip(&req));
    if let Some(c) = &state.cluster {
        let (store, uid) = (state.store.clone(), id.clone());
        let current = blocking(move || Ok(store.absences_for(&uid)?.into_iter().filter(|x| x.end.is_none_or(|e| e > now)).count())).await?;
        if current >= MAX_ABSENCES_PER_USER {
            return Err(AppError::Conflict(format!("the person already has {MAX_ABSENCES_PER_USER} absences")));
        }
        let view = cluster_write(&state, c, &id, &a.id, Some(stored), entry).await?;
        tracing::info!(user = %id, absence = %a.id, reason = %a.reason, by = %caller.actor(), "Absence set (cluster).");
        return Ok(HttpResponse::Created()
            .insert_header(("Location", format!("/api/users/{}/absences/{}", id, a.id)))
            .json(serde_json::json!({ "absence": absence_out(&state, &id, &a, now), "presence": presence_value(&id, view.as_ref()) })));
    }
    let store = state.store.clone();
    let uid = id.clone();
    blocking(move || {
        let current = store.absences_for(&uid)?.into_iter().filter(|x| x.end.is_none_or(|e| e > now)).count();
        if current >= MAX_ABSENCES_PER_USER {
            return Ok(false);
        }
        store.insert_absence(&stored, Some(&entry))?;
        Ok(true)
    })
    .await?
    .then_some(())
    .ok_or_else(|| AppError::Conflict(format!("the person already has {MAX_ABSENCES_PER_USER} absences")))?;
    let view = state.hub.upsert_absence(idx, a.clone()).await.map_err(|e| AppError::Unavailable(e.to_string()))?;
    tracing::info!(user = %id, absence = %a.id, reason = %a.reason, by = %caller.actor(), "Absence set.");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/users/{}/absences/{}", id, a.id)))
        .json(serde_json::json!({
            "absence": absence_out(&state, &id, &a, now),
            "presence": RawValue::from_string(presence_json(&id, &view)).ok(),
        })))
}

/// `PUT /api/users/{id}/absences/{absence_id}` (operator, or the person themselves): replaces
/// reason, text and times.
pub async fn update_absence(
    AbsenceWriter(caller): AbsenceWriter,
    req: HttpRequest,
    state: Data,
    path: web::Path<(String, String)>,
    body: web::Json<AbsenceBody>,
) -> Result<HttpResponse, AppError> {
    let (id, aid) = path.into_inner();
    let idx = user_idx(&state, &id)?;
    let now = now_ms();
    let store = state.store.clone();
    let (u, x) = (id.clone(), aid.clone());
    let old = blocking(move || store.absence(&u, &x)).await?;
    let old = old.ok_or_else(|| AppError::NotFound(format!("no absence {:?} for {:?}", truncate(&aid, 40), truncate(&id, 80))))?;
    let (start, end) = validate_absence(&state, &body, now)?;
    let a = Absence {
        id: old.id.as_str().into(),
        reason: body.reason.as_str().into(),
        text: body.text.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(Into::into),
        start,
        end,
        created_at: old.created_at,
        updated_at: now,
        created_by: old.created_by.as_deref().map(Into::into),
    };
    let stored = StoredAbsence::from_absence(&id, &a);
    let detail = serde_json::json!({ "absence": a.id, "old": absence_detail(&old.to_absence()), "new": absence_detail(&a) });
    let entry = audit::entry(&caller, Action::AbsenceChanged, Some(&id), detail, client_ip(&req));
    if let Some(c) = &state.cluster {
        let view = cluster_write(&state, c, &id, &a.id, Some(stored), entry).await?;
        tracing::info!(user = %id, absence = %a.id, by = %caller.actor(), "Absence changed (cluster).");
        return Ok(HttpResponse::Ok().json(serde_json::json!({ "absence": absence_out(&state, &id, &a, now), "presence": presence_value(&id, view.as_ref()) })));
    }
    let store = state.store.clone();
    if !blocking(move || store.update_absence(&stored, Some(&entry))).await? {
        return Err(AppError::NotFound("the absence was removed meanwhile".into()));
    }
    let view = state.hub.upsert_absence(idx, a.clone()).await.map_err(|e| AppError::Unavailable(e.to_string()))?;
    tracing::info!(user = %id, absence = %a.id, by = %caller.actor(), "Absence changed.");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "absence": absence_out(&state, &id, &a, now),
        "presence": RawValue::from_string(presence_json(&id, &view)).ok(),
    })))
}

/// `DELETE /api/users/{id}/absences/{absence_id}` (operator, or the person themselves).
pub async fn delete_absence(
    AbsenceWriter(caller): AbsenceWriter,
    req: HttpRequest,
    state: Data,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (id, aid) = path.into_inner();
    let idx = user_idx(&state, &id)?;
    let store = state.store.clone();
    let (u, x) = (id.clone(), aid.clone());
    let old = blocking(move || store.absence(&u, &x)).await?;
    let old = old.ok_or_else(|| AppError::NotFound(format!("no absence {:?} for {:?}", truncate(&aid, 40), truncate(&id, 80))))?;
    let detail = serde_json::json!({ "absence": aid, "old": absence_detail(&old.to_absence()) });
    let entry = audit::entry(&caller, Action::AbsenceCleared, Some(&id), detail, client_ip(&req));
    if let Some(c) = &state.cluster {
        cluster_write(&state, c, &id, &aid, None, entry).await?;
        tracing::info!(user = %id, absence = %aid, by = %caller.actor(), "Absence cleared (cluster).");
        return Ok(HttpResponse::NoContent().finish());
    }
    let store = state.store.clone();
    let (u, x) = (id.clone(), aid.clone());
    if !blocking(move || store.delete_absence(&u, &x, Some(&entry))).await? {
        return Err(AppError::NotFound(format!("no absence {:?} for {:?}", truncate(&aid, 40), truncate(&id, 80))));
    }
    state.hub.remove_absence(idx, &aid).await.map_err(|e| AppError::Unavailable(e.to_string()))?;
    tracing::info!(user = %id, absence = %aid, by = %caller.actor(), "Absence cleared.");
    Ok(HttpResponse::NoContent().finish())
}

// ---- Pushed signals ---------------------------------------------------------------------

/// One signal in `POST /api/signals`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalIn {
    /// Any identity the directory resolves.
    who: String,
    source: Source,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    availability: Option<Availability>,
    #[serde(default)]
    activity: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    ooo: bool,
    #[serde(default)]
    valid_from: Option<String>,
    #[serde(default)]
    valid_until: Option<String>,
    #[serde(default)]
    version: Option<Version>,
}

/// `POST /api/signals` (admin): a batch of signals from an integration (`{"signals":[…]}`).
/// The whole batch is validated before any of it is applied.
pub async fn push_signals(Admin(caller): Admin, req: HttpRequest, state: Data, body: web::Json<SignalsBody>) -> Result<HttpResponse, AppError> {
    tracing::debug!(by = %caller.name, "Signals pushed.");
    if body.signals.len() > MAX_SIGNALS_PER_PUSH {
        return Err(AppError::TooLarge(format!("at most {MAX_SIGNALS_PER_PUSH} signals per request")));
    }
    let now = now_ms();
    let dir = state.hub.directory();
    let mut ready = Vec::with_capacity(body.signals.len());
    for (i, s) in body.signals.iter().enumerate() {
        let bad = |m: String| AppError::Unprocessable(format!("signals[{i}]: {m}"));
        let idx = dir.resolve(&s.who).ok_or_else(|| bad(format!("no person matches {:?}", truncate(&s.who, 80))))?;
        let t = |v: &Option<String>, f: &str| match v {
            None => Ok(None),
            Some(x) => parse_rfc3339(x).map(Some).ok_or_else(|| bad(format!("{f} must be RFC 3339"))),
        };
        let mut sig = Signal::new(s.source, s.instance.as_deref().unwrap_or("api"), s.availability, now);
        sig.activity = s.activity.as_deref().and_then(Activity::parse_source);
        sig.note = s.note.as_deref().and_then(presence_actors::model::signal::bounded_note);
        sig.ooo = s.ooo;
        sig.valid_from = t(&s.valid_from, "valid_from")?;
        sig.valid_until = t(&s.valid_until, "valid_until")?;
        sig.version = s.version.clone();
        ready.push((idx, sig));
    }
    let n = ready.len();
    for (idx, sig) in ready {
        state.api_sink.send_to(idx, sig).map_err(|e| AppError::Unavailable(e.to_string()))?;
    }
    state.audit.signals_pushed(&caller, n, client_ip(&req));
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "accepted": n })))
}

/// Body of `POST /api/signals`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsBody {
    signals: Vec<SignalIn>,
}
