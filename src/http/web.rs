//! The web directory and attendant console: static assets compiled into the binary, and the
//! three small endpoints the page needs besides the API (`/api/ui`, `/api/me`, `/api/groups`).
//!
//! The front end is plain HTML, CSS and JavaScript in `src/http/web/` — no build step, no
//! CDN, no fonts or images from elsewhere — so it works offline and the README's two commands
//! need nothing else. Assets are served with a strong ETag (SHA-256 of the bytes) and
//! `Cache-Control: no-cache`, so a browser revalidates cheaply and an upgrade shows at once.
//! The HTML carries a strict Content-Security-Policy: scripts and styles only from the hub.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::error::AppError;
use super::AppState;
use crate::auth::{Caller, Role};

/// One compiled-in file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: include_bytes!("web/index.html") },
    Asset { path: "/assets/app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("web/app.js") },
    Asset { path: "/assets/app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("web/app.css") },
    Asset { path: "/assets/icon.svg", content_type: "image/svg+xml", body: include_bytes!("web/icon.svg") },
];

/// The Content-Security-Policy of the page: nothing from anywhere but the hub itself.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let d = Sha256::digest(a.body);
                let hex: String = d.iter().take(12).map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// Registers the asset routes (when `[web] enabled`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    for (i, a) in ASSETS.iter().enumerate() {
        cfg.route(a.path, web::get().to(move |req: HttpRequest| async move { serve(i, &req) }));
        cfg.route(a.path, web::head().to(move |req: HttpRequest| async move { serve(i, &req) }));
    }
    cfg.route("/index.html", web::get().to(|req: HttpRequest| async move { serve(0, &req) }));
}

fn serve(i: usize, req: &HttpRequest) -> HttpResponse {
    let a = &ASSETS[i];
    let tag = &etags()[i];
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut res = if matches { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    res.insert_header((header::ETAG, tag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if a.content_type.starts_with("text/html") {
        res.insert_header((header::CONTENT_SECURITY_POLICY, CSP)).insert_header((header::X_FRAME_OPTIONS, "DENY"));
    }
    if matches {
        return res.finish();
    }
    res.content_type(a.content_type).body(a.body)
}

type Data = web::Data<AppState>;

/// `GET /api/ui` (no token): what the page needs before sign-in — title, the hub's time
/// zone, the default language, and in the demo the documented demo tokens.
pub async fn ui(state: Data) -> HttpResponse {
    let c = &state.config;
    let demo_tokens: Vec<_> = if state.demo {
        crate::demo::DEMO_TOKENS.iter().map(|(role, token)| serde_json::json!({ "role": role, "token": token })).collect()
    } else {
        Vec::new()
    };
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(serde_json::json!({
        "title": c.web.title,
        "time_zone": c.time_zone,
        "language": c.web.language,
        "demo": state.demo,
        "demo_tokens": demo_tokens,
        "heartbeat_secs": c.stream.heartbeat_secs,
    }))
}

/// `GET /api/me` (viewer): the caller's token name and role, so a client can tell what it may do.
pub async fn me(caller: Caller) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(serde_json::json!({
        "name": caller.name,
        "role": caller.role,
    })))
}

/// `GET /api/groups` (viewer): the configured busy-lamp groups with their members resolved to
/// person ids. Members the directory does not know are listed under `unknown`.
pub async fn groups(state: Data, caller: Caller) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let dir = state.hub.directory();
    let out: Vec<_> = state
        .config
        .web
        .groups
        .iter()
        .map(|g| {
            let mut members = Vec::with_capacity(g.members.len());
            let mut seen = std::collections::HashSet::new();
            let mut unknown = Vec::new();
            for m in &g.members {
                match dir.by_id(m).or_else(|| dir.resolve(m)) {
                    // The same person named twice (by id and by extension) is one lamp.
                    Some(i) if !seen.insert(i) => {}
                    Some(i) => members.extend(dir.person(i).map(|p| p.id().to_string())),
                    None => unknown.push(m.as_str()),
                }
            }
            serde_json::json!({ "name": g.name, "members": members, "unknown": unknown })
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_page_is_small_and_self_contained() {
        // The budget is 150 KB uncompressed for everything the first page loads.
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < 150 * 1024, "first page is {total} bytes");
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).expect("assets are UTF-8");
            // Nothing from elsewhere: no absolute URLs to other hosts in any asset.
            for bad in ["http://", "https://", "//cdn", "@import"] {
                let allowed_svg_ns = text.matches("http://www.w3.org/2000/svg").count();
                let found = text.matches(bad).count();
                let found = if bad == "http://" { found - allowed_svg_ns } else { found };
                assert_eq!(found, 0, "{} refers to {bad}", a.path);
            }
        }
    }

    #[test]
    fn etags_differ_per_asset() {
        let t = etags();
        assert_eq!(t.len(), ASSETS.len());
        let set: std::collections::HashSet<_> = t.iter().collect();
        assert_eq!(set.len(), t.len());
    }
}
