//! presence-simulators: stand-ins for the hub's peers, built from their documented wire
//! formats, serving on loopback. Tests use them to drive the real provider code paths; the
//! demo (`presence-hub` with no arguments) runs them so its changes come through those paths
//! too. Each can be told to misbehave (throttle, fail, slow down, drop or garble messages).
//!
//! Layout:
//! - [`graph`]: Microsoft Graph presence (getPresencesByUserId, subscriptions, change and
//!   lifecycle notifications with the validation handshake) and the OAuth2 token endpoint.
//! - [`graph_device`]: the same simulator's device authorization grant (a service account
//!   signing in with `presence-hub login graph`), approved or declined by the test.
//! - [`graph_users`]: the same simulator's directory — `/users/delta` (pages, delta links,
//!   partial changes, `@removed`) and a group's transitive members — for the `entra` source.
//! - [`calendar`]: calendar free/busy — Graph getSchedule, EWS GetUserAvailability (SOAP) and
//!   Google freeBusy — with the Entra and Google token endpoints.
//! - [`operator`]: a mobile operator's platform in the example formats of the generic operator
//!   adapter (TDC, Phonero, A1): signed webhooks and a poll endpoint with `ETag`.
//! - [`pbx`]: a PBX's busy lamps — a SIP notifier of the dialog event package (RFC 4235).
//! - [`sfb`]: a Skype for Business front-end pool speaking SIP (batched category
//!   subscriptions, RLMI BENOTIFY/NOTIFY, `resubscribe` to a second pool).
//! - [`mbn`]: Telenor Mobilt Bedriftsnett's partner status API as publicly described (password
//!   grant, enterprise monitor, long-polled events, status list) in the shapes we assumed.
//! - [`o2g`]: an Alcatel-Lucent O2G REST API (sessions, subscriptions, the chunked event
//!   stream and webhooks, telephony and routing snapshots).
//! - [`slapd`]: not a simulator but the real OpenLDAP server, started privately on loopback
//!   with an Active-Directory-shaped schema, for the `ldap` directory source.
#![warn(missing_docs)]

pub mod calendar;
pub mod graph;
pub mod graph_device;
pub mod graph_users;
pub mod mbn;
pub mod operator;
pub mod o2g;
pub mod pbx;
pub mod sfb;
pub mod slapd;

use std::net::SocketAddr;

/// One piece of subscription activity a simulator saw (Graph: a subscription created,
/// refused, renewed or deleted; PBX: a SUBSCRIBE, its refresh or un-SUBSCRIBE), for tests that
/// check who held a feed when ([`graph::GraphSim::subscription_log`],
/// [`pbx::PbxSim::subscription_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubEvent {
    /// When the simulator saw it.
    pub at: std::time::Instant,
    /// Who did it: `host:port` of the subscription's `notificationUrl` (Graph), the request's
    /// source address (PBX).
    pub by: String,
    /// What: `create`, `create-refused`, `renew`, `delete` (Graph); `subscribe`, `refresh`,
    /// `unsubscribe` (PBX).
    pub what: &'static str,
}

/// A simulator's HTTP server, running on its own thread and actix system until dropped.
pub struct Server {
    addr: SocketAddr,
    handle: Option<actix_web::dev::ServerHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves `factory`'s app on `addr` (port 0: any free port) in a new thread.
    pub fn start<F>(addr: SocketAddr, configure: F) -> std::io::Result<Server>
    where
        F: Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
    {
        let listener = std::net::TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name(format!("sim-{}", addr.port())).spawn(move || {
            let sys = actix_rt::System::new();
            let server = match actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener)
            {
                Ok(s) => s.run(),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(server.handle()));
            let _ = sys.block_on(server);
        })?;
        let handle = rx.recv().map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(Server { addr, handle: Some(handle), thread: Some(thread) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            // The stop command is sent when `stop` is called; its future only awaits the end,
            // which joining the thread does too (and works inside or outside a runtime).
            drop(h.stop(false));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The user and password of an `Authorization: Basic` header (RFC 7617).
pub(crate) fn basic_credentials(req: &actix_web::HttpRequest) -> Option<(String, String)> {
    use base64::Engine as _;
    let b64 = req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Basic ")?;
    let text = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
