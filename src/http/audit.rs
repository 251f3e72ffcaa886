//! `GET /api/audit` and `GET /api/audit.csv` (admin): the audit log, newest first, filtered by
//! time (`since`, `until`: RFC 3339), `actor`, `target` and `action` (`absence.*` for a family),
//! paged with `before` (the `seq` of the last entry of the previous page; the JSON answer gives
//! it as `next_before`). The CSV export takes the same filters and writes every matching entry
//! (at most [`MAX_CSV_ROWS`]), read from the store a page at a time.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use presence_actors::model::rfc3339;

use super::auth::Admin;
use super::error::AppError;
use super::AppState;
use crate::store::{AuditQuery, AuditRow};

type Data = web::Data<AppState>;

/// Most entries in one JSON page.
pub const MAX_PAGE: usize = 1_000;
/// Most entries in one CSV export.
pub const MAX_CSV_ROWS: usize = 1_000_000;

/// The filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    limit: Option<usize>,
}

fn query(p: &AuditParams, limit: usize) -> Result<AuditQuery, AppError> {
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, AppError> {
        v.as_deref()
            .map(|s| {
                s.parse::<jiff::Timestamp>()
                    .map(|t| t.as_millisecond())
                    .map_err(|_| AppError::BadRequest(format!("{name} must be an RFC 3339 time, e.g. 2026-12-07T08:00:00Z")))
            })
            .transpose()
    };
    let text = |name: &str, v: &Option<String>| -> Result<Option<String>, AppError> {
        match v {
            Some(s) if s.len() > 256 => Err(AppError::BadRequest(format!("{name} is longer than 256 bytes"))),
            Some(s) if !s.is_empty() => Ok(Some(s.clone())),
            _ => Ok(None),
        }
    };
    Ok(AuditQuery {
        since: time("since", &p.since)?,
        until: time("until", &p.until)?,
        actor: text("actor", &p.actor)?,
        target: text("target", &p.target)?,
        action: text("action", &p.action)?,
        before_seq: p.before,
        limit,
    })
}

fn row_json(r: &AuditRow) -> serde_json::Value {
    serde_json::json!({
        "seq": r.seq,
        "at": rfc3339(r.record.at),
        "actor": r.record.actor,
        "role": r.record.role,
        "via": r.record.via,
        "action": r.record.action,
        "target": r.record.target,
        "detail": r.record.detail.as_deref().and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()),
        "ip": r.record.ip,
    })
}

/// `GET /api/audit` (admin).
pub async fn list(state: Data, _admin: Admin, p: web::Query<AuditParams>) -> Result<HttpResponse, AppError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::BadRequest(format!("limit must be 1-{MAX_PAGE}")));
    }
    let q = query(&p, limit)?;
    let store = state.store.clone();
    let rows = super::blocking(move || store.audit(&q)).await?;
    let next = (rows.len() == limit).then(|| rows.last().map(|r| r.seq)).flatten();
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(serde_json::json!({
        "entries": rows.iter().map(row_json).collect::<Vec<_>>(),
        "next_before": next,
    })))
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break; a leading
/// `=`, `+`, `-` or `@` is prefixed with `'` so a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv_line(r: &AuditRow) -> String {
    let f = |o: &Option<String>| csv_field(o.as_deref().unwrap_or_default());
    format!(
        "{},{},{},{},{},{},{},{},{}\r\n",
        r.seq,
        rfc3339(r.record.at),
        csv_field(&r.record.actor),
        f(&r.record.role),
        csv_field(&r.record.via),
        csv_field(&r.record.action),
        f(&r.record.target),
        f(&r.record.ip),
        f(&r.record.detail)
    )
}

/// `GET /api/audit.csv` (admin): the same filters, every matching entry.
pub async fn csv(state: Data, _admin: Admin, p: web::Query<AuditParams>) -> Result<HttpResponse, AppError> {
    let first = query(&p, MAX_PAGE)?;
    let store = state.store.clone();
    let stream = futures_util::stream::unfold((Some(first), 0usize, true), move |(q, sent, head)| {
        let store = store.clone();
        async move {
            let mut q = q?;
            let mut out = String::new();
            if head {
                out.push_str("seq,at,actor,role,via,action,target,ip,detail\r\n");
            }
            q.limit = MAX_PAGE.min(MAX_CSV_ROWS - sent);
            let page = q.clone();
            let rows = match web::block(move || store.audit(&page)).await {
                Ok(Ok(r)) => r,
                _ => return Some((Err(actix_web::error::ErrorInternalServerError("store")), (None, sent, false))),
            };
            rows.iter().for_each(|r| out.push_str(&csv_line(r)));
            let sent = sent + rows.len();
            let next = (rows.len() == q.limit && sent < MAX_CSV_ROWS).then(|| AuditQuery { before_seq: rows.last().map(|r| r.seq), ..q });
            if out.is_empty() {
                return None;
            }
            Some((Ok::<_, actix_web::Error>(web::Bytes::from(out)), (next, sent, false)))
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((header::CONTENT_DISPOSITION, "attachment; filename=\"audit.csv\""))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(stream))
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(super::csv_field("plain"), "plain");
        assert_eq!(super::csv_field("a,b"), "\"a,b\"");
        assert_eq!(super::csv_field("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
        assert_eq!(super::csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(super::csv_field("-1"), "'-1");
    }
}
