//! One error type for every HTTP handler, mapped to status codes and a JSON body in one place.
//!
//! Every error response is `{"error": "<code>", "detail": "<human text>"}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// An HTTP-facing error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Malformed request (bad JSON, bad query).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or unknown token.
    #[error("{0}")]
    Unauthorized(String),
    /// Token lacks the role.
    #[error("{0}")]
    Forbidden(String),
    /// A cookie-authenticated request without its CSRF token, or from another origin (403).
    #[error("{0}")]
    Csrf(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// Body too large.
    #[error("{0}")]
    TooLarge(String),
    /// Well-formed but invalid values.
    #[error("{0}")]
    Unprocessable(String),
    /// Too many clients / overloaded.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a failing store.
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::Csrf(_) => "csrf",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::TooLarge(_) => "payload_too_large",
            AppError::Unprocessable(_) => "invalid",
            AppError::Unavailable(_) => "unavailable",
            AppError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::Csrf(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        if matches!(self, AppError::Unauthorized(_)) {
            r.insert_header(("WWW-Authenticate", "Bearer"));
        }
        r.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
        r.json(serde_json::json!({ "error": self.code(), "detail": self.to_string() }))
    }
}

impl From<crate::tokens::MissingRole> for AppError {
    fn from(e: crate::tokens::MissingRole) -> Self {
        AppError::Forbidden(e.to_string())
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "Store operation failed.");
        AppError::Internal(format!("store: {e}"))
    }
}

/// Maps actix-web's JSON extractor errors to our JSON error body (400 / 413 / 415 / 422).
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let e = match &err {
        J::OverflowKnownLength { length, limit } => AppError::TooLarge(format!("body of {length} bytes exceeds the limit of {limit}")),
        J::Overflow { limit } => AppError::TooLarge(format!("body exceeds the limit of {limit} bytes")),
        J::ContentType => AppError::BadRequest("Content-Type must be application/json".into()),
        J::Deserialize(d) if d.is_data() => AppError::Unprocessable(format!("invalid JSON value: {d}")),
        J::Deserialize(d) => AppError::BadRequest(format!("malformed JSON: {d}")),
        other => AppError::BadRequest(format!("could not read the body: {other}")),
    };
    e.into()
}

/// Maps query-string errors to our JSON error body.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    AppError::BadRequest(format!("bad query string: {err}")).into()
}

/// Maps path errors to our JSON error body.
pub fn path_error(err: actix_web::error::PathError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    AppError::BadRequest(format!("bad path: {err}")).into()
}
