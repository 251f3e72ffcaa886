//! The device authorization grant (RFC 8628) of the Graph simulator's identity provider
//! ([`crate::graph::GraphSim`]), as the Microsoft identity platform documents it:
//!
//! - `POST /{tenant}/oauth2/v2.0/devicecode` with `client_id` and `scope` answers
//!   `device_code`, `user_code`, `verification_uri`, `expires_in`, `interval` and `message`
//!   ([`crate::graph::GraphSimConfig::device_interval_secs`] and `device_expires_in_secs`).
//! - The token endpoint's `grant_type=urn:ietf:params:oauth:grant-type:device_code` answers
//!   `authorization_pending` until the code is approved, then the tokens of the account that
//!   approved it (a refresh token only if `offline_access` was asked for; the simulator's
//!   refresh grant accepts it for that account); `slow_down` when polled sooner than the
//!   interval (which then grows by 5 s), `expired_token` after the lifetime,
//!   `authorization_declined` after a refusal, `bad_verification_code` for an unknown code and
//!   `invalid_grant` for one already redeemed.
//!
//! Controls (the stand-in for the person signing in): [`GraphSim::approve_device`],
//! [`GraphSim::decline_device`], [`GraphSim::slow_down_next`]; [`GraphSim::device_codes`]
//! shows what was asked for and how it was polled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::graph::{lock, GraphSim, Shared};

/// The `grant_type` of a device-code poll.
pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Pending,
    Approved(String),
    Declined,
    Redeemed,
}

struct Grant {
    device_code: String,
    user_code: String,
    scope: String,
    expires_at: Instant,
    interval: Duration,
    polls: Vec<Instant>,
    stage: Stage,
    slow_down_next: bool,
}

/// The device codes handed out.
#[derive(Default)]
pub(crate) struct Devices {
    grants: Vec<Grant>,
    next: u64,
}

/// One device code as the simulator saw it, from [`GraphSim::device_codes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    /// The code the person enters.
    pub user_code: String,
    /// The scope asked for.
    pub scope: String,
    /// Gaps between the token endpoint's polls with it, in order.
    pub poll_gaps: Vec<Duration>,
    /// `pending`, `approved`, `declined` or `redeemed`.
    pub stage: &'static str,
}

fn oauth(code: &str, desc: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": code, "error_description": desc, "error_codes": [70000] }))
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
pub(crate) async fn devicecode(state: web::Data<Shared>, req: HttpRequest, tenant: web::Path<String>, form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let mut g = lock(&state);
    if *tenant != g.cfg.tenant {
        return oauth("invalid_request", "AADSTS90002: Tenant not found.");
    }
    if form.get("client_id") != Some(&g.cfg.client_id) {
        return oauth("unauthorized_client", "AADSTS700016: Application with identifier was not found in the directory.");
    }
    let Some(scope) = form.get("scope").filter(|s| !s.trim().is_empty()).cloned() else {
        return oauth("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'scope'.");
    };
    let (interval, expires_in) = (g.cfg.device_interval_secs.max(1), g.cfg.device_expires_in_secs);
    let d = &mut g.device;
    d.next += 1;
    let user_code = format!("SIM{:05}", 10_000 + d.next);
    let device_code = format!("DAQABAAEAAAD-sim-{}-{}", d.next, crate::graph::now_ms());
    let uri = format!("http://{}/devicelogin", req.connection_info().host());
    d.grants.push(Grant {
        device_code: device_code.clone(),
        user_code: user_code.clone(),
        scope,
        expires_at: Instant::now() + Duration::from_secs(expires_in),
        interval: Duration::from_secs(interval),
        polls: Vec::new(),
        stage: Stage::Pending,
        slow_down_next: false,
    });
    HttpResponse::Ok().json(json!({
        "user_code": user_code, "device_code": device_code, "verification_uri": uri,
        "expires_in": expires_in, "interval": interval,
        "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
    }))
}

/// A token-endpoint poll with `form` (client already checked): the account that approved the
/// code and whether a refresh token goes with it, or the OAuth error to answer.
pub(crate) fn poll(d: &mut Devices, form: &HashMap<String, String>) -> Result<(String, bool), (&'static str, &'static str)> {
    let Some(code) = form.get("device_code") else { return Err(("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'device_code'.")) };
    let Some(gr) = d.grants.iter_mut().find(|g| &g.device_code == code) else {
        return Err(("bad_verification_code", "AADSTS70019: Verification code expired or was not recognized."));
    };
    let now = Instant::now();
    let too_fast = gr.polls.last().is_some_and(|last| now.duration_since(*last) + Duration::from_millis(100) < gr.interval);
    gr.polls.push(now);
    if now >= gr.expires_at && gr.stage != Stage::Redeemed {
        return Err(("expired_token", "AADSTS70020: The provided value for the input parameter 'device_code' is not valid. This device code has expired."));
    }
    if gr.slow_down_next || (too_fast && gr.stage == Stage::Pending) {
        gr.slow_down_next = false;
        gr.interval += Duration::from_secs(5);
        return Err(("slow_down", "AADSTS70000: Polling too frequently; slow down."));
    }
    match std::mem::replace(&mut gr.stage, Stage::Redeemed) {
        Stage::Pending => {
            gr.stage = Stage::Pending;
            Err(("authorization_pending", "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling."))
        }
        Stage::Declined => {
            gr.stage = Stage::Declined;
            Err(("authorization_declined", "AADSTS70000: The user declined the authorization request."))
        }
        Stage::Redeemed => Err(("invalid_grant", "AADSTS54005: OAuth2 device code was already redeemed.")),
        Stage::Approved(account) => Ok((account, gr.scope.split_whitespace().any(|s| s == "offline_access"))),
    }
}

impl GraphSim {
    /// The person with `user_code` signs in as service account `account` and consents: the next
    /// poll gets the tokens. False when no pending code has that user code.
    pub fn approve_device(&self, user_code: &str, account: &str) -> bool {
        self.set_stage(user_code, Stage::Approved(account.to_string()))
    }

    /// The person with `user_code` refuses: polls get `authorization_declined`.
    pub fn decline_device(&self, user_code: &str) -> bool {
        self.set_stage(user_code, Stage::Declined)
    }

    fn set_stage(&self, user_code: &str, stage: Stage) -> bool {
        let mut g = lock(&self.state);
        match g.device.grants.iter_mut().find(|gr| gr.user_code == user_code && gr.stage == Stage::Pending && gr.expires_at > Instant::now()) {
            Some(gr) => {
                gr.stage = stage;
                true
            }
            None => false,
        }
    }

    /// The next poll with `user_code`'s device code gets `slow_down` (as if it had come too
    /// soon), and the interval grows by 5 s.
    pub fn slow_down_next(&self, user_code: &str) {
        if let Some(gr) = lock(&self.state).device.grants.iter_mut().find(|gr| gr.user_code == user_code) {
            gr.slow_down_next = true;
        }
    }

    /// The device codes handed out so far, oldest first.
    pub fn device_codes(&self) -> Vec<DeviceView> {
        lock(&self.state)
            .device
            .grants
            .iter()
            .map(|gr| DeviceView {
                user_code: gr.user_code.clone(),
                scope: gr.scope.clone(),
                poll_gaps: gr.polls.windows(2).map(|w| w[1] - w[0]).collect(),
                stage: match gr.stage {
                    Stage::Pending => "pending",
                    Stage::Approved(_) => "approved",
                    Stage::Declined => "declined",
                    Stage::Redeemed => "redeemed",
                },
            })
            .collect()
    }
}
