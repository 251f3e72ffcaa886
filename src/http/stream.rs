//! Live streams: WebSocket (`GET /api/stream`) and Server-Sent Events (`GET /api/events`).
//!
//! Both start a [`Subscriber`] actor on the accepting worker with a sink for their transport.
//! The filter comes from the query (`all=true`, `users=a,b`, `departments=X,Y`, `since=N`) and,
//! on WebSocket, from client messages:
//! `{"op":"subscribe","all":false,"users":["asa.ostberg"],"departments":["Ekonomi"],"since":42}`.
//! SSE without a filter watches everyone; SSE resumes from `Last-Event-ID`.
//! Frame format: see [`presence_actors::subscriber`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, Session};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::Deserialize;

use super::error::AppError;
use super::AppState;
use super::auth::{authenticate, Role};
use presence_actors::fanout::{Filter, MAX_FILTER_DEPARTMENTS, MAX_FILTER_USERS};
use presence_actors::subscriber::{ClientError, Close, Frame, FrameSink, SetFilter, SinkClosed, Subscriber};

type Data = web::Data<AppState>;

/// Stream query parameters.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    #[serde(default)]
    all: Option<bool>,
    #[serde(default)]
    users: Option<String>,
    #[serde(default)]
    departments: Option<String>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// A subscribe request, from the query or a WebSocket message.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct SubscribeMsg {
    op: String,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    departments: Vec<String>,
    #[serde(default)]
    since: Option<u64>,
}

/// Turns names into a filter; unknown names are an error naming them.
fn resolve_filter(state: &AppState, all: bool, users: &[String], depts: &[String]) -> Result<Filter, AppError> {
    if users.len() > MAX_FILTER_USERS {
        return Err(AppError::Unprocessable(format!("at most {MAX_FILTER_USERS} users per subscription")));
    }
    if depts.len() > MAX_FILTER_DEPARTMENTS {
        return Err(AppError::Unprocessable(format!("at most {MAX_FILTER_DEPARTMENTS} departments per subscription")));
    }
    let dir = state.hub.directory();
    let mut f = Filter { all, ..Filter::default() };
    let mut unknown = Vec::new();
    for u in users.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match dir.by_id(u).or_else(|| dir.resolve(u)) {
            Some(i) => f.users.push(i),
            None => unknown.push(presence_actors::model::activity::truncate(u, 60).to_string()),
        }
    }
    for d in depts.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match dir.department_idx(d) {
            Some(i) => f.departments.push(i),
            None => unknown.push(format!("department {}", presence_actors::model::activity::truncate(d, 60))),
        }
    }
    if !unknown.is_empty() {
        unknown.truncate(10);
        return Err(AppError::Unprocessable(format!("unknown: {}", unknown.join(", "))));
    }
    Ok(f)
}

fn split_list(s: &Option<String>) -> Vec<String> {
    s.as_deref().map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default()
}

fn query_filter(state: &AppState, p: &StreamParams) -> Result<Option<Filter>, AppError> {
    let users = split_list(&p.users);
    let depts = split_list(&p.departments);
    let all = p.all.unwrap_or(false);
    if !all && users.is_empty() && depts.is_empty() {
        return Ok(None);
    }
    resolve_filter(state, all, &users, &depts).map(Some)
}

fn heartbeat(state: &AppState) -> Duration {
    Duration::from_secs(state.config.stream.heartbeat_secs)
}

fn check_capacity(state: &AppState) -> Result<(), AppError> {
    if state.hub.fanout().subscriber_count() >= state.config.stream.max_subscribers {
        return Err(AppError::Unavailable("too many stream clients; try again later".into()));
    }
    Ok(())
}

// ---- WebSocket ------------------------------------------------------------------------

/// Writes frames as WebSocket text messages.
pub struct WsSink(Session);

impl FrameSink for WsSink {
    fn write(mut self, frames: Vec<Frame>) -> LocalBoxFuture<'static, Result<Self, SinkClosed>> {
        Box::pin(async move {
            for f in frames {
                self.0.text(f.data).await.map_err(|_| SinkClosed)?;
            }
            Ok(self)
        })
    }

    fn close(self) {
        actix_web::rt::spawn(async move {
            let _ = self.0.close(None).await;
        });
    }
}

/// `GET /api/stream`: WebSocket stream.
pub async fn websocket(state: Data, req: HttpRequest, body: web::Payload, q: web::Query<StreamParams>) -> Result<HttpResponse, AppError> {
    let caller = authenticate(&req)?;
    caller.require(Role::Viewer)?;
    check_capacity(&state)?;
    let signed_in = session_of(&state, &caller);
    let initial = query_filter(&state, &q)?;
    let (resp, session, stream) = actix_ws::handle(&req, body).map_err(|e| AppError::BadRequest(format!("not a WebSocket upgrade: {e}")))?;
    let hub = &state.hub;
    let sub = Subscriber::start(
        hub.fanout().clone(),
        hub.live_directory().clone(),
        hub.metrics().clone(),
        WsSink(session.clone()),
        state.config.stream.outbox_capacity,
        heartbeat(&state),
    );
    if let Some(filter) = initial {
        sub.do_send(SetFilter { filter, since: q.since });
    }
    let max = state.config.stream.max_message_bytes;
    let stream = stream.max_frame_size(max).aggregate_continuations().max_continuation_size(max);
    actix_web::rt::spawn(ws_reader(state.clone(), sub, session, stream, signed_in));
    Ok(resp)
}

/// The sign-in session a stream's caller came with, if any: the stream ends with it.
fn session_of(state: &AppState, caller: &crate::tokens::Caller) -> Option<Arc<crate::signin::sessions::Session>> {
    match &caller.via {
        crate::tokens::Via::Session(id) => state.sessions.by_id(id),
        crate::tokens::Via::Token => None,
    }
}

/// False once the stream's session has ended (signed out, revoked, expired, the person left);
/// an open stream counts as use of its session.
fn session_live(state: &AppState, s: &Option<Arc<crate::signin::sessions::Session>>) -> bool {
    let Some(s) = s else { return true };
    let dir = state.hub.directory();
    state.sessions.still(s, presence_actors::model::now_ms(), |p| dir.by_id(p).is_some()).is_ok()
}

/// Reads client messages; pings the client and closes if it stops answering.
async fn ws_reader(
    state: Data,
    sub: Addr<Subscriber<WsSink>>,
    mut session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
    signed_in: Option<Arc<crate::signin::sessions::Session>>,
) {
    let hb = heartbeat(&state);
    let mut last_seen = Instant::now();
    let mut tick = actix_web::rt::time::interval(hb);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { break };
                last_seen = Instant::now();
                match msg {
                    Ok(AggregatedMessage::Text(t)) => handle_client_text(&state, &sub, &t),
                    Ok(AggregatedMessage::Ping(p)) => {
                        if session.pong(&p).await.is_err() { break; }
                    }
                    Ok(AggregatedMessage::Pong(_)) => {}
                    Ok(AggregatedMessage::Binary(_)) => sub.do_send(ClientError {
                        error: "bad_request".into(),
                        detail: "binary messages are not supported; send JSON text".into(),
                    }),
                    Ok(AggregatedMessage::Close(_)) => break,
                    Err(e) => {
                        sub.do_send(ClientError { error: "bad_request".into(), detail: format!("protocol error: {e}") });
                        break;
                    }
                }
            }
            _ = tick.tick() => {
                if last_seen.elapsed() > hb * 3 {
                    tracing::info!("Closing a WebSocket client that stopped answering pings.");
                    break;
                }
                if !session_live(&state, &signed_in) {
                    tracing::info!("Closing a WebSocket client whose sign-in session ended.");
                    let _ = session.clone().close(Some(actix_ws::CloseReason { code: actix_ws::CloseCode::Policy, description: Some("session ended".into()) })).await;
                    break;
                }
                if session.ping(b"hb").await.is_err() { break; }
            }
        }
    }
    sub.do_send(Close);
}

fn handle_client_text(state: &AppState, sub: &Addr<Subscriber<WsSink>>, text: &str) {
    let err = |detail: String| ClientError { error: "bad_request".into(), detail };
    let msg: SubscribeMsg = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => return sub.do_send(err(format!("malformed message: {e}"))),
    };
    match msg.op.as_str() {
        "subscribe" => match resolve_filter(state, msg.all, &msg.users, &msg.departments) {
            Ok(filter) => sub.do_send(SetFilter { filter, since: msg.since }),
            Err(e) => sub.do_send(ClientError { error: "invalid".into(), detail: e.to_string() }),
        },
        "ping" => {}
        other => sub.do_send(err(format!("unknown op {:?}; use \"subscribe\"", presence_actors::model::activity::truncate(other, 40)))),
    }
}

// ---- SSE --------------------------------------------------------------------------------

/// Writes frames as SSE events into the response body channel.
pub struct SseSink(tokio::sync::mpsc::Sender<Bytes>);

impl FrameSink for SseSink {
    fn write(self, frames: Vec<Frame>) -> LocalBoxFuture<'static, Result<Self, SinkClosed>> {
        Box::pin(async move {
            for f in frames {
                let mut s = String::with_capacity(f.data.len() + 48);
                s.push_str("id: ");
                s.push_str(&f.seq.to_string());
                s.push_str("\nevent: ");
                s.push_str(f.kind.as_str());
                s.push_str("\ndata: ");
                s.push_str(&f.data);
                s.push_str("\n\n");
                self.0.send(Bytes::from(s)).await.map_err(|_| SinkClosed)?;
            }
            Ok(self)
        })
    }
}

/// `GET /api/events`: SSE stream (everyone unless filtered; resumes from `Last-Event-ID`).
pub async fn sse(state: Data, req: HttpRequest, q: web::Query<StreamParams>) -> Result<HttpResponse, AppError> {
    let caller = authenticate(&req)?;
    caller.require(Role::Viewer)?;
    check_capacity(&state)?;
    let signed_in = session_of(&state, &caller);
    let filter = query_filter(&state, &q)?.unwrap_or(Filter { all: true, ..Filter::default() });
    let last_id = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let since = q.since.or(last_id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let hub = &state.hub;
    let sub = Subscriber::start(
        hub.fanout().clone(),
        hub.live_directory().clone(),
        hub.metrics().clone(),
        SseSink(tx),
        state.config.stream.outbox_capacity,
        heartbeat(&state),
    );
    sub.do_send(SetFilter { filter, since });
    // Every frame, heartbeats included, first checks that the sign-in session (if any) lives.
    let st = state.clone();
    let body = futures_util::stream::unfold((rx, sub), move |(mut rx, sub)| {
        let st = st.clone();
        let signed_in = signed_in.clone();
        async move {
            let b = rx.recv().await?;
            session_live(&st, &signed_in).then_some((Ok::<_, std::convert::Infallible>(b), (rx, sub)))
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}
