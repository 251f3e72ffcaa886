//! The HTTP interface (actix-web): the JSON API, the streams, and operations endpoints.
//!
//! [`configure`] registers every route on an actix `ServiceConfig`, so tests can build the
//! same app with `actix_aw::test::init_service` and the server in [`crate::run`] uses it.
//!
//! Layout: [`api`] (people, absences, signals), [`admin`] (providers, stats, metrics, health,
//! OpenAPI), [`stream`] (WebSocket and SSE), [`web`] (the web directory and attendant console),
//! [`error`] (the one error type), [`auth`] (tokens, session cookies, CSRF, the role
//! extractors), [`signin`] (`/auth/*`, `/api/me`, `/api/sessions`), [`audit`] (`/api/audit`).

pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod error;
pub mod hooks;
pub mod signin;
pub mod stream;
pub mod web;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::web as aw;

use crate::tokens::{Role, Tokens};
use crate::config::Config;
use crate::store::Store;
use presence_actors::hub::Hub;

/// Shared state of every handler.
pub struct AppState {
    /// The hub.
    pub hub: Hub,
    /// The embedded store.
    pub store: Store,
    /// API tokens (replaced when a reload changes `[[tokens]]`).
    pub tokens: std::sync::RwLock<Tokens>,
    /// The configuration file and the text the running configuration came from (`None` in the
    /// demo), for reloads.
    pub config_file: Option<(std::path::PathBuf, std::sync::Mutex<String>)>,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Set once start-up (restore, providers) is complete.
    pub ready: AtomicBool,
    /// Providers' webhook handlers (`/hooks/{provider}/…`).
    pub hooks: presence_actors::provider::Hooks,
    /// Running the built-in demo.
    pub demo: bool,
    /// Tokens in clear, with their roles, that the sign-in page offers: the demo's documented
    /// tokens ([`crate::RunOptions::demo_tokens`]); empty otherwise.
    pub demo_tokens: Vec<(Role, String)>,
    /// Sink for signals pushed through the API (feed "api").
    pub api_sink: presence_actors::hub::SignalSink,
    /// Directory sync, when `[[directory.sources]]` (or `[directory] import`) is configured.
    pub sync: Option<crate::sync::DirectorySync>,
    /// What restarts each provider, by name (`POST /api/providers/{name}/restart`).
    pub restarters: std::collections::HashMap<String, presence_providers::supervisor::Restarter>,
    /// OpenID Connect sign-in, when `[auth.oidc]` is configured.
    pub signin: Option<Arc<crate::signin::SignIn>>,
    /// Sign-in sessions.
    pub sessions: Arc<crate::signin::sessions::Sessions>,
    /// The audit log's writer of refusals.
    pub audit: Arc<crate::audit::Audit>,
    /// This node's membership of the cluster, when `[cluster]` is configured.
    pub cluster: Option<crate::cluster::Cluster>,
}

/// Runs a store call off the async threads; a failure is the store's (500) or the pool's.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static) -> Result<T, error::AppError> {
    aw::block(f).await.map_err(|e| error::AppError::Internal(format!("store task: {e}")))?.map_err(error::AppError::from)
}

/// Registers every route.
pub fn configure(state: aw::Data<AppState>) -> impl FnOnce(&mut aw::ServiceConfig) {
    move |cfg: &mut aw::ServiceConfig| {
        let body_limit = state.config.http.max_body_bytes;
        if state.config.web.enabled {
            cfg.configure(web::routes);
        }
        cfg.app_data(state)
            .app_data(aw::JsonConfig::default().limit(body_limit).error_handler(error::json_error))
            .app_data(aw::QueryConfig::default().error_handler(error::query_error))
            .app_data(aw::PathConfig::default().error_handler(error::path_error))
            .app_data(aw::PayloadConfig::default().limit(body_limit))
            .route("/healthz", aw::get().to(admin::healthz))
            .route("/readyz", aw::get().to(admin::readyz))
            .route("/metrics", aw::get().to(admin::metrics))
            .route("/hooks/{provider}/{tail:.*}", aw::route().to(hooks::hook))
            .route("/auth/login", aw::get().to(signin::login))
            .route("/auth/callback", aw::get().to(signin::callback))
            .route("/auth/logout", aw::post().to(signin::logout))
            .service(
                aw::scope("/api")
                    .route("/openapi.json", aw::get().to(admin::openapi))
                    .route("/ui", aw::get().to(web::ui))
                    .route("/me", aw::get().to(signin::me))
                    .route("/sessions", aw::get().to(signin::sessions))
                    .route("/sessions/{id}", aw::delete().to(signin::revoke))
                    .route("/audit", aw::get().to(audit::list))
                    .route("/audit.csv", aw::get().to(audit::csv))
                    .route("/groups", aw::get().to(web::groups))
                    .route("/users", aw::get().to(api::search))
                    .route("/users/{id}", aw::get().to(api::detail))
                    .route("/users/{id}/absences", aw::get().to(api::list_absences))
                    .route("/users/{id}/absences", aw::post().to(api::create_absence))
                    .route("/users/{id}/absences/{absence_id}", aw::get().to(api::get_absence))
                    .route("/users/{id}/absences/{absence_id}", aw::put().to(api::update_absence))
                    .route("/users/{id}/absences/{absence_id}", aw::delete().to(api::delete_absence))
                    .route("/departments", aw::get().to(api::departments))
                    .route("/absence-reasons", aw::get().to(api::absence_reasons))
                    .route("/signals", aw::post().to(api::push_signals))
                    .route("/providers", aw::get().to(admin::providers))
                    .route("/providers/{name}/restart", aw::post().to(admin::restart_provider))
                    .route("/config/reload", aw::post().to(admin::reload))
                    .route("/directory/sources", aw::get().to(admin::directory_sources))
                    .route("/directory/sync", aw::post().to(admin::directory_sync))
                    .route("/stats", aw::get().to(admin::stats))
                    .route("/cluster", aw::get().to(admin::cluster))
                    .route("/stream", aw::get().to(stream::websocket))
                    .route("/events", aw::get().to(stream::sse)),
            )
            .default_service(aw::to(admin::not_found));
    }
}
