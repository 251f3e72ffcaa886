//! The HTTP interface (actix-web): the JSON API, the streams, and operations endpoints.
//!
//! [`configure`] registers every route on an actix `ServiceConfig`, so tests can build the
//! same app with `actix_web::test::init_service` and the server in [`crate::run`] uses it.
//!
//! Layout: [`api`] (people, absences, signals), [`admin`] (providers, stats, metrics, health,
//! OpenAPI), [`stream`] (WebSocket and SSE), [`error`] (the one error type).

pub mod admin;
pub mod api;
pub mod error;
pub mod stream;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::web;

use crate::auth::Tokens;
use crate::config::Config;
use crate::store::Store;
use presence_actors::hub::Hub;

/// Shared state of every handler.
pub struct AppState {
    /// The hub.
    pub hub: Hub,
    /// The embedded store.
    pub store: Store,
    /// API tokens.
    pub tokens: Tokens,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Set once start-up (restore, providers) is complete.
    pub ready: AtomicBool,
    /// Sink for signals pushed through the API (feed "api").
    pub api_sink: presence_actors::hub::SignalSink,
}

/// Registers every route.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let body_limit = state.config.http.max_body_bytes;
        cfg.app_data(state)
            .app_data(web::JsonConfig::default().limit(body_limit).error_handler(error::json_error))
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .app_data(web::PayloadConfig::default().limit(body_limit))
            .route("/healthz", web::get().to(admin::healthz))
            .route("/readyz", web::get().to(admin::readyz))
            .route("/metrics", web::get().to(admin::metrics))
            .service(
                web::scope("/api")
                    .route("/openapi.json", web::get().to(admin::openapi))
                    .route("/users", web::get().to(api::search))
                    .route("/users/{id}", web::get().to(api::detail))
                    .route("/users/{id}/absences", web::get().to(api::list_absences))
                    .route("/users/{id}/absences", web::post().to(api::create_absence))
                    .route("/users/{id}/absences/{absence_id}", web::get().to(api::get_absence))
                    .route("/users/{id}/absences/{absence_id}", web::put().to(api::update_absence))
                    .route("/users/{id}/absences/{absence_id}", web::delete().to(api::delete_absence))
                    .route("/departments", web::get().to(api::departments))
                    .route("/absence-reasons", web::get().to(api::absence_reasons))
                    .route("/signals", web::post().to(api::push_signals))
                    .route("/providers", web::get().to(admin::providers))
                    .route("/stats", web::get().to(admin::stats))
                    .route("/stream", web::get().to(stream::websocket))
                    .route("/events", web::get().to(stream::sse)),
            )
            .default_service(web::to(admin::not_found));
    }
}
