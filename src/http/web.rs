//! The web directory and attendant console: static assets compiled into the binary, and the
//! two small endpoints the page needs besides the API (`/api/ui`, `/api/groups`).
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
use super::auth::{Caller, Role};

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
    let demo_tokens: Vec<_> = state.demo_tokens.iter().map(|(role, token)| serde_json::json!({ "role": role, "token": token })).collect();
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(serde_json::json!({
        "title": c.web.title,
        "time_zone": c.time_zone,
        "language": c.web.language,
        "demo": state.demo,
        "demo_tokens": demo_tokens,
        "heartbeat_secs": c.stream.heartbeat_secs,
        // "Sign in with {name}" on the sign-in page.
        "oidc": state.signin.as_ref().map(|s| serde_json::json!({ "name": s.config.display_name(), "login": "/auth/login" })),
    }))
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

    /// The page's texts: every key in Swedish and English, and a text for every value the API
    /// can send that the page puts into words (issue 12: a `pending` source showed
    /// "FRESH.PENDING").
    mod texts {
        use std::collections::{BTreeMap, BTreeSet};
        use std::ops::Range;

        use presence_actors::directory::PhoneKind;
        use presence_actors::model::{AbsenceReason, Activity, Availability, Freshness, SlotFreshness, Source};

        use crate::tokens::Role;

        const APP_JS: &str = include_str!("web/app.js");
        const INDEX_HTML: &str = include_str!("web/index.html");
        const OPENAPI: &str = include_str!("openapi.json");

        /// Index just past the JavaScript string literal whose opening quote is at `i`.
        fn skip_string(b: &[u8], i: usize) -> usize {
            let q = b[i];
            let mut j = i + 1;
            while j < b.len() && b[j] != q {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        }

        /// Index of the next character that is not white space or inside a comment.
        fn skip_space(b: &[u8], mut i: usize) -> usize {
            loop {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                if b[i..].starts_with(b"//") {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                } else if b[i..].starts_with(b"/*") {
                    i += b[i..].windows(2).position(|w| w == b"*/").map_or(b.len() - i, |p| p + 2);
                } else {
                    return i;
                }
            }
        }

        /// The entries of the object literal whose `{` is at `open`: each key (quoted or bare)
        /// with the byte range of its value. Panics on anything that is not such a literal.
        fn entries(src: &str, open: usize) -> Vec<(String, Range<usize>)> {
            let b = src.as_bytes();
            assert_eq!(b[open], b'{', "an object literal at byte {open}");
            let mut out = Vec::new();
            let mut i = open + 1;
            loop {
                i = skip_space(b, i);
                if b[i] == b'}' {
                    return out;
                }
                let key = if matches!(b[i], b'\'' | b'"') {
                    let end = skip_string(b, i);
                    let k = &src[i + 1..end - 1];
                    i = end;
                    k.to_string()
                } else {
                    let start = i;
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                        i += 1;
                    }
                    assert!(i > start, "a key at byte {start}: {:?}", &src[start..(start + 40).min(src.len())]);
                    src[start..i].to_string()
                };
                i = skip_space(b, i);
                assert_eq!(b[i], b':', "':' after key {key:?}");
                let start = skip_space(b, i + 1);
                let mut depth = 0usize;
                i = start;
                while i < b.len() {
                    match b[i] {
                        b'\'' | b'"' | b'`' => {
                            i = skip_string(b, i);
                            continue;
                        }
                        b'{' | b'[' | b'(' => depth += 1,
                        b'}' | b']' | b')' if depth > 0 => depth -= 1,
                        b',' | b'}' if depth == 0 => break,
                        _ => {}
                    }
                    i += 1;
                }
                let mut end = i;
                while b[end - 1].is_ascii_whitespace() {
                    end -= 1;
                }
                out.push((key, start..end));
                if b[i] == b',' {
                    i += 1;
                }
            }
        }

        /// The text dictionaries of app.js (`const T = { en: {…}, sv: {…} }`): language →
        /// (key, text) in source order.
        fn dictionaries() -> BTreeMap<String, Vec<(String, String)>> {
            let at = APP_JS.find("const T = {").expect("app.js defines its texts as `const T = {`");
            let open = at + "const T = ".len();
            entries(APP_JS, open)
                .into_iter()
                .map(|(lang, r)| {
                    let texts = entries(APP_JS, r.start)
                        .into_iter()
                        .map(|(key, v)| {
                            let lit = &APP_JS[v];
                            let q = lit.as_bytes()[0];
                            assert!(
                                matches!(q, b'\'' | b'"') && lit.len() >= 2 && lit.as_bytes()[lit.len() - 1] == q,
                                "{lang} {key:?}: a text is one string literal, not {lit:?}"
                            );
                            (key, lit[1..lit.len() - 1].to_string())
                        })
                        .collect();
                    (lang, texts)
                })
                .collect()
        }

        /// Keys of one language, checked for duplicates (a later one silently wins in JavaScript).
        fn keys(texts: &[(String, String)], lang: &str) -> BTreeSet<String> {
            let mut set = BTreeSet::new();
            for (k, v) in texts {
                assert!(set.insert(k.clone()), "{lang}: {k:?} is given twice");
                assert!(!v.trim().is_empty(), "{lang}: {k:?} is empty");
            }
            set
        }

        /// Keys that are missing from either language, as "lang:key".
        fn missing(want: &BTreeSet<String>) -> Vec<String> {
            let dicts = dictionaries();
            let mut out = Vec::new();
            for lang in ["en", "sv"] {
                let have = keys(dicts.get(lang).unwrap_or_else(|| panic!("app.js has no {lang} texts")), lang);
                out.extend(want.iter().filter(|k| !have.contains(*k)).map(|k| format!("{lang}:{k}")));
            }
            out
        }

        /// The wire name of a value (as the API sends it).
        fn wire<T: serde::Serialize>(v: T) -> String {
            match serde_json::to_value(v).unwrap() {
                serde_json::Value::String(s) => s,
                other => panic!("not a string: {other}"),
            }
        }

        #[test]
        fn swedish_and_english_have_the_same_texts() {
            let dicts = dictionaries();
            assert_eq!(dicts.keys().map(String::as_str).collect::<Vec<_>>(), ["en", "sv"]);
            let en = keys(&dicts["en"], "en");
            let sv = keys(&dicts["sv"], "sv");
            assert!(en.len() > 100, "the scan found {} English texts; it no longer reads app.js right", en.len());
            let only_en: Vec<_> = en.difference(&sv).collect();
            let only_sv: Vec<_> = sv.difference(&en).collect();
            assert!(only_en.is_empty() && only_sv.is_empty(), "only in English: {only_en:?}; only in Swedish: {only_sv:?}");
        }

        #[test]
        fn every_value_the_api_sends_has_a_text_in_both_languages() {
            // Listed by hand, with a match that stops compiling when a variant is added.
            let freshness = [Freshness::Live, Freshness::Stale, Freshness::Unknown];
            let _ = |f: Freshness| match f {
                Freshness::Live | Freshness::Stale | Freshness::Unknown => (),
            };
            let slot = [SlotFreshness::Live, SlotFreshness::Stale, SlotFreshness::Pending, SlotFreshness::Expired];
            let _ = |f: SlotFreshness| match f {
                SlotFreshness::Live | SlotFreshness::Stale | SlotFreshness::Pending | SlotFreshness::Expired => (),
            };
            let activities = [
                Activity::InACall,
                Activity::InAConferenceCall,
                Activity::Ringing,
                Activity::OnHold,
                Activity::InAMeeting,
                Activity::Presenting,
                Activity::UrgentInterruptionsOnly,
                Activity::OutOfOffice,
                Activity::OffWork,
                Activity::Inactive,
                Activity::Tentative,
                Activity::WorkingElsewhere,
                Activity::Lunch,
                Activity::Vacation,
                Activity::Sick,
            ];
            let _ = |a: Activity| match a {
                Activity::InACall
                | Activity::InAConferenceCall
                | Activity::Ringing
                | Activity::OnHold
                | Activity::InAMeeting
                | Activity::Presenting
                | Activity::UrgentInterruptionsOnly
                | Activity::OutOfOffice
                | Activity::OffWork
                | Activity::Inactive
                | Activity::Tentative
                | Activity::WorkingElsewhere
                | Activity::Lunch
                | Activity::Vacation
                | Activity::Sick
                // Free text from a source is shown as reported.
                | Activity::Other(_) => (),
            };
            let phones = [PhoneKind::Mobile, PhoneKind::Work, PhoneKind::Home, PhoneKind::Other];
            let _ = |k: PhoneKind| match k {
                PhoneKind::Mobile | PhoneKind::Work | PhoneKind::Home | PhoneKind::Other => (),
            };
            let roles = [Role::Viewer, Role::SelfService, Role::Operator, Role::Admin];
            let _ = |r: Role| match r {
                Role::Viewer | Role::SelfService | Role::Operator | Role::Admin => (),
            };

            let mut want = BTreeSet::new();
            want.extend(freshness.map(|f| format!("fresh.{}", wire(f))));
            want.extend(slot.map(|f| format!("fresh.{}", wire(f))));
            want.extend(Availability::ALL.map(|a| format!("avail.{}", wire(a))));
            want.extend(activities.iter().map(|a| format!("act.{}", wire(a))));
            // The default absence reasons' activities, named ones included ("Course").
            want.extend(AbsenceReason::defaults().iter().filter_map(|r| r.activity.as_ref()).map(|a| format!("act.{}", wire(a))));
            want.extend(Source::ALL.map(|s| format!("src.{}", wire(s))));
            want.extend(phones.map(|k| format!("phone.{}", wire(k))));
            want.extend(roles.map(|r| format!("role.{}", wire(r))));
            assert!(want.contains("fresh.pending"), "{want:?}");

            // And every value openapi.json promises for the same fields.
            fn walk(v: &serde_json::Value, name: &str, want: &mut BTreeSet<String>) {
                match v {
                    serde_json::Value::Object(m) => {
                        if let Some(serde_json::Value::Array(vals)) = m.get("enum") {
                            let prefix = match name {
                                "freshness" => Some("fresh."),
                                "Availability" | "availability" => Some("avail."),
                                "reasons" | "source" => Some("src."),
                                "role" => Some("role."),
                                "kind" => Some("phone."),
                                _ => None, // not put into words by the page (e.g. `language`)
                            };
                            if let Some(p) = prefix {
                                want.extend(vals.iter().filter_map(|x| x.as_str()).map(|x| format!("{p}{x}")));
                            }
                        }
                        for (k, x) in m {
                            let inner = if matches!(k.as_str(), "items" | "schema" | "allOf" | "oneOf" | "anyOf") { name } else { k };
                            walk(x, inner, want);
                        }
                    }
                    serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, name, want)),
                    _ => {}
                }
            }
            let before = want.len();
            walk(&serde_json::from_str(OPENAPI).expect("openapi.json parses"), "", &mut want);
            assert_eq!(want.len(), before, "openapi.json promises values the Rust types do not have");

            let miss = missing(&want);
            assert!(miss.is_empty(), "values the API sends with no text on the page: {miss:?}");
        }

        /// The string literals of the array `const {name} = [...]` in app.js.
        fn js_array(name: &str) -> Vec<String> {
            let at = APP_JS.find(&format!("const {name} = [")).unwrap_or_else(|| panic!("app.js defines `const {name} = [`"));
            let open = at + format!("const {name} = ").len();
            let close = open + APP_JS[open..].find(']').expect("the array ends");
            APP_JS[open + 1..close].split(',').map(|s| s.trim().trim_matches('\'').to_string()).filter(|s| !s.is_empty()).collect()
        }

        /// The audit view names every action the audit log records (its filter and its rows),
        /// and the sign-in view every code a failed sign-in comes back with (`/?signin_error=`).
        #[test]
        fn every_audit_action_and_sign_in_error_has_a_text_in_both_languages() {
            use crate::audit::Action;
            let actions: BTreeSet<String> = Action::ALL.iter().map(|a| a.as_str().to_string()).collect();
            assert_eq!(js_array("AUDIT_ACTIONS").into_iter().collect::<BTreeSet<_>>(), actions, "app.js AUDIT_ACTIONS");

            // The codes /auth/login and /auth/callback send (literals, and the provider's own error).
            const SIGNIN_RS: &str = include_str!("signin.rs");
            let codes: BTreeSet<String> = ["denied", "provider", "refused", "expired", "unavailable"].map(String::from).into();
            for pat in ["to_page(\"", "failed(\""] {
                for part in SIGNIN_RS.split(pat).skip(1) {
                    let code = part.split('"').next().unwrap();
                    assert!(codes.contains(code), "signin.rs sends the page sign-in error {code:?}, which this list lacks");
                }
            }
            assert!(SIGNIN_RS.contains("{ \"denied\" } else { \"provider\" }"), "the provider's own error maps to denied or provider");
            assert_eq!(js_array("SIGNIN_ERRORS").into_iter().collect::<BTreeSet<_>>(), codes, "app.js SIGNIN_ERRORS");

            let mut want = BTreeSet::new();
            want.extend(actions.iter().map(|a| format!("audit.action.{a}")));
            want.extend(codes.iter().flat_map(|c| [format!("signin.error.{c}"), format!("audit.failed.{c}")]));
            want.extend(["full", "incremental"].map(|k| format!("audit.d.sync.{k}")));
            want.extend(["token", "oidc"].map(|v| format!("audit.via.{v}")));
            let miss = missing(&want);
            assert!(miss.is_empty(), "audit actions and sign-in errors with no text on the page: {miss:?}");
        }

        #[test]
        fn every_text_the_page_asks_for_exists_in_both_languages() {
            let mut want = BTreeSet::new();
            // t('key'…) with a literal key.
            let b = APP_JS.as_bytes();
            for (i, _) in APP_JS.match_indices("t('") {
                if i > 0 && (b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'_' | b'$' | b'.')) {
                    continue; // get('…'), store.set('…'), split('…')
                }
                let end = skip_string(b, i + 2);
                if matches!(b[end], b')' | b',') {
                    want.insert(APP_JS[i + 3..end - 1].to_string());
                }
            }
            // The connection states: setConn('…') and the indicator's initial state.
            for (i, _) in APP_JS.match_indices("setConn('") {
                let start = i + "setConn(".len();
                let end = skip_string(b, start);
                want.insert(format!("conn.{}", &APP_JS[start + 1..end - 1]));
            }
            let conn = INDEX_HTML.find("id=\"conn\"").expect("index.html has #conn");
            let tag = &INDEX_HTML[conn..conn + INDEX_HTML[conn..].find('>').unwrap()];
            let state = tag.split("data-state=\"").nth(1).and_then(|s| s.split('"').next()).expect("#conn has a data-state");
            want.insert(format!("conn.{state}"));
            // data-i18n, data-i18n-ph and data-i18n-label in the HTML.
            for attr in ["data-i18n=\"", "data-i18n-ph=\"", "data-i18n-label=\""] {
                for part in INDEX_HTML.split(attr).skip(1) {
                    want.insert(part.split('"').next().unwrap().to_string());
                }
            }
            assert!(want.len() > 80 && want.contains("conn.live") && want.contains("login.title"), "the scan found {want:?}");
            let miss = missing(&want);
            assert!(miss.is_empty(), "texts the page asks for that do not exist: {miss:?}");
        }
    }
}
