//! A SIP endpoint: UDP and TCP transports on one local port (RFC 3261 §18) and the non-INVITE
//! transaction layer (§17.1.2, §17.2.2) — everything presence needs (SUBSCRIBE, NOTIFY, PUBLISH,
//! OPTIONS, and Skype for Business's BENOTIFY, which expects no response).
//!
//! * Client transactions retransmit over UDP on Timer E (T1 = 500 ms doubling to T2 = 4 s) and
//!   time out on Timer F (64·T1 = 32 s, shortened by [`EndpointConfig::transaction_timeout`]).
//! * Server transactions absorb retransmitted requests and answer them with the stored response
//!   until Timer J (64·T1 over UDP).
//! * Requests belonging to a dialog this endpoint registered (by Call-ID — a subscription's
//!   NOTIFYs) go to that dialog's channel; all others to the application's channel. When that
//!   channel is full the request is answered `503` with `Retry-After` at once (overload control).
//! * A message that cannot be parsed is answered `400` with the reason when enough of it can be
//!   read to address a response (RFC 3261 §8.2 / RFC 4475), otherwise dropped; both are counted.
//!   A request over [`MAX_MESSAGE_LEN`](crate::message::MAX_MESSAGE_LEN) is answered
//!   `513 Message Too Large` the same way; on TCP the connection is then closed, since the rest
//!   of the stream cannot be framed.
//! * Responses go back where the request came from: the UDP source address (rport behaviour,
//!   RFC 3581) or the TCP connection it arrived on.
//! * Connections are reused (RFC 5923): one per peer and transport, both ways, opened one at
//!   a time (requests sent meanwhile wait and share it). After a connection could not be
//!   opened, requests to that peer fail at once with the same reason for a hold-down (0.5 s
//!   doubling to 15 s), so a peer refusing the certificate is not hammered with handshakes. A request this
//!   endpoint sends over TLS carries `;alias` in its Via, so a peer that honours it (Kamailio
//!   with `tcp_accept_aliases`) sends its requests — NOTIFYs — back over the same connection
//!   instead of connecting to the Contact (which a TLS client without a listener could not
//!   accept).
//! * Connections this endpoint opens are kept alive with CRLF pings (RFC 5626 §4.4.1) when
//!   [`EndpointConfig::keepalive`] is set ([`KeepAlive`]); a peer that once answered a ping
//!   with a pong and then does not within 10 s has lost the connection, which is closed (the
//!   next request opens a new one). Pings from peers are answered with a pong.
//! * Why a connection failed (TLS handshake refused, certificate not accepted, closed by the
//!   peer with an alert) is kept per peer and is what a request to that peer fails with when it
//!   gets no answer, so a health message can say it.

use crate::message::{Builder, Frame, Framer, Message, ParseError};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// How long a TCP connection is still read (and the bytes dropped) after a `513`, so the
/// peer's unread body does not make the close a reset that could discard the answer.
const LINGER: Duration = Duration::from_secs(2);

/// RFC 3261 T1.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2.
pub const T2: Duration = Duration::from_secs(4);
/// Most simultaneous TCP connections.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TLS handshake may take, either way.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first hold-down after a connection could not be opened; it doubles up to
/// [`CONNECT_HOLD_MAX`].
const CONNECT_HOLD: Duration = Duration::from_millis(500);
/// The longest hold-down.
const CONNECT_HOLD_MAX: Duration = Duration::from_secs(15);
/// How long a pong may take (RFC 5626 §4.4.1: 10 s; twice the ping interval when that is
/// shorter, as only tests set it).
pub const PONG_TIMEOUT: Duration = Duration::from_secs(10);

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS over TCP (RFC 3261 §26.2; `;transport=tls`, Via `TLS`).
    Tls,
}

impl Transport {
    /// As written in a Via header.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// Parses `udp` / `tcp` / `tls` (any case).
    pub fn parse(s: &str) -> Option<Transport> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }

    /// True for the transports carried on a connection (TCP, TLS): no retransmissions, and a
    /// response goes back on the connection the request came on.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// Where a message came from / goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// A request handed to the application or to a dialog.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub msg: Message,
    pub peer: Peer,
    /// Over TLS with a client certificate the endpoint's server configuration verified: the
    /// certificate (DER, leaf), for the application to map to an account.
    pub peer_certificate: Option<Arc<[u8]>>,
}

/// Why a client transaction failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("no final response (timeout)")]
    Timeout,
    #[error("transport error: {0}")]
    Transport(String),
    #[error("endpoint closed")]
    Closed,
}

/// Settings of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Local address for both UDP and TCP (port 0: the OS picks one port, shared by both).
    pub listen: SocketAddr,
    pub udp: bool,
    pub tcp: bool,
    /// Timer F (client transactions); RFC 3261 says 32 s.
    pub transaction_timeout: Duration,
    /// Capacity of the application's request channel.
    pub queue: usize,
    /// Value of User-Agent / Server headers.
    pub user_agent: String,
    /// UDP socket buffer sizes asked for (the kernel caps them at `net.core.rmem_max` /
    /// `wmem_max`). Linux's default (208 KiB) drops datagrams in bursts of a few hundred.
    pub udp_buffer: usize,
    /// SIP over TLS: a listener, and what connections this endpoint opens present and check.
    pub tls: TlsSettings,
    /// CRLF keep-alive interval of the TCP and TLS connections this endpoint opens (RFC 5626
    /// §4.4.1): a ping after this long without anything received. `None`: no pings.
    pub keepalive: Option<Duration>,
    /// The host peers reach this endpoint by, written in Via sent-by and Contact instead of the
    /// bound address (which may be `0.0.0.0`): over TLS the name its certificate carries, so a
    /// peer connecting back can check it. The port stays the bound one.
    pub advertise: Option<String>,
}

/// SIP over TLS for an endpoint (RFC 3261 §26.2), on its own port (5061 by convention).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Accept TLS connections on this address (port 0: any free port), with this server
    /// configuration (certificate; client certificates required when it says so).
    pub listen: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// For the TLS connections this endpoint opens: the client configuration (the CAs the
    /// server's certificate must chain to, an optional client certificate) and the name the
    /// server's certificate must carry, sent as SNI too.
    pub connect: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            udp: true,
            tcp: true,
            transaction_timeout: 64 * T1,
            queue: 4096,
            user_agent: format!("presence-hub/{}", env!("CARGO_PKG_VERSION")),
            udp_buffer: 4 << 20,
            tls: TlsSettings::default(),
            keepalive: None,
            advertise: None,
        }
    }
}

/// Counters, for health and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub malformed: AtomicU64,
    pub retransmissions: AtomicU64,
    pub timeouts: AtomicU64,
    pub overload_503: AtomicU64,
}

/// Where a client transaction's responses go, or the failure of its connection.
type ClientWaiter = mpsc::UnboundedSender<Result<Message, String>>;

struct ServerTx {
    response: Option<Bytes>,
    peer: Peer,
    expires: Instant,
}

struct Inner {
    cfg: EndpointConfig,
    local: SocketAddr,
    /// Where TLS is accepted, when it is.
    tls_local: Option<SocketAddr>,
    udp: Option<Arc<UdpSocket>>,
    conns: Mutex<HashMap<Peer, mpsc::Sender<Bytes>>>,
    /// TLS handshakes under way on the listener; they count against [`MAX_CONNECTIONS`].
    handshakes: AtomicUsize,
    /// Client transactions by branch: the peer the request went to, and where its responses
    /// (or the failure of the connection it was sent on) go.
    client: Mutex<HashMap<String, (Peer, ClientWaiter)>>,
    server: Mutex<HashMap<String, ServerTx>>,
    dialogs: Mutex<HashMap<String, mpsc::Sender<Incoming>>>,
    requests: mpsc::Sender<Incoming>,
    stats: Stats,
    ids: Ids,
    /// The name a TLS peer's certificate must carry, per address, where it differs from
    /// [`TlsSettings::connect`]'s (another front-end pool).
    tls_names: Mutex<HashMap<SocketAddr, rustls::pki_types::ServerName<'static>>>,
    /// Why the last connection to a peer failed or was closed with an error.
    conn_errors: Mutex<HashMap<Peer, String>>,
    /// The certificate (leaf, DER) of each TLS server this endpoint connected to, last seen.
    server_certs: Mutex<HashMap<Peer, Arc<[u8]>>>,
    /// Opening a connection to a peer: one at a time per peer, so requests sent meanwhile
    /// wait for it and share it instead of each opening their own.
    connecting: Mutex<HashMap<Peer, Arc<tokio::sync::Mutex<()>>>>,
    /// After a connection to a peer could not be opened: until when requests to it fail at
    /// once with that reason, and the next hold-down (doubling, [`CONNECT_HOLD_MAX`] at most).
    /// A peer refusing the certificate is not hammered with handshakes.
    hold_down: Mutex<HashMap<Peer, (Instant, Duration, String)>>,
}

/// A running SIP endpoint. Cheap to clone; the sockets close when the last clone and the
/// application's request receiver are dropped (call [`Endpoint::shutdown`] to stop at once).
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("local", &self.inner.local).finish()
    }
}

impl Endpoint {
    /// Binds the sockets and starts the receive loops. Returns the endpoint and the channel of
    /// requests that belong to no registered dialog.
    pub async fn bind(cfg: EndpointConfig) -> std::io::Result<(Endpoint, mpsc::Receiver<Incoming>)> {
        let (udp, tcp, local) = bind_pair(&cfg).await?;
        let tls = match &cfg.tls.listen {
            Some((addr, server)) => {
                let l = TcpListener::bind(addr).await?;
                Some((l, tokio_rustls::TlsAcceptor::from(server.clone())))
            }
            None => None,
        };
        let tls_local = match &tls {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        };
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let inner = Arc::new(Inner {
            cfg,
            local,
            tls_local,
            udp: udp.map(Arc::new),
            conns: Mutex::new(HashMap::new()),
            handshakes: AtomicUsize::new(0),
            client: Mutex::new(HashMap::new()),
            server: Mutex::new(HashMap::new()),
            dialogs: Mutex::new(HashMap::new()),
            requests: tx,
            stats: Stats::default(),
            ids: Ids::new(),
            tls_names: Mutex::new(HashMap::new()),
            conn_errors: Mutex::new(HashMap::new()),
            server_certs: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            hold_down: Mutex::new(HashMap::new()),
        });
        let ep = Endpoint { inner: inner.clone(), tasks: Arc::new(Mutex::new(Vec::new())) };
        let mut tasks = Vec::new();
        if let Some(sock) = inner.udp.clone() {
            let weak = Arc::downgrade(&inner);
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; crate::message::MAX_MESSAGE_LEN + 1];
                loop {
                    let (n, from) = match sock.recv_from(&mut buf).await {
                        Ok(x) => x,
                        Err(e) => {
                            // ICMP port unreachable surfaces here on Linux; not fatal.
                            tracing::debug!(error = %e, "sip udp recv");
                            continue;
                        }
                    };
                    let Some(inner) = weak.upgrade() else { return };
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    inner.on_bytes(data, Peer { transport: Transport::Udp, addr: from }, None);
                }
            }));
        }
        if let Some(listener) = tcp {
            tasks.push(tokio::spawn(accept(listener, Arc::downgrade(&inner), None)));
        }
        if let Some((listener, acceptor)) = tls {
            tasks.push(tokio::spawn(accept(listener, Arc::downgrade(&inner), Some(acceptor))));
        }
        let weak = Arc::downgrade(&inner);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let now = Instant::now();
                inner.server.lock().unwrap().retain(|_, t| t.expires > now);
            }
        }));
        *ep.tasks.lock().unwrap() = tasks;
        Ok((ep, rx))
    }

    /// The bound local address (UDP and TCP share the port).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Where TLS is accepted, when [`TlsSettings::listen`] is set.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.inner.tls_local
    }

    /// The local address for a transport: the TLS port for TLS (when listening), else the
    /// UDP/TCP port.
    fn local_for(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Tls => self.inner.tls_local.unwrap_or(self.inner.local),
            _ => self.inner.local,
        }
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The User-Agent text.
    pub fn user_agent(&self) -> &str {
        &self.inner.cfg.user_agent
    }

    /// A fresh Via header value for a request over `transport`, and its branch. Over TLS the
    /// Via carries `alias` (RFC 5923): the peer may send requests back over this connection.
    pub fn via(&self, transport: Transport) -> (String, String) {
        let branch = format!("z9hG4bK{}", self.inner.ids.token());
        let alias = if transport == Transport::Tls { ";alias" } else { "" };
        (format!("SIP/2.0/{} {};branch={branch};rport{alias}", transport.via_name(), self.sent_by(transport)), branch)
    }

    /// The name the certificate of the TLS peer at `addr` must carry (and the SNI sent to it),
    /// where it is not [`TlsSettings::connect`]'s: a Skype for Business front end of another
    /// pool, reached by that pool's FQDN.
    pub fn set_tls_name(&self, addr: SocketAddr, name: rustls::pki_types::ServerName<'static>) {
        self.inner.tls_names.lock().unwrap().insert(addr, name);
    }

    /// The certificate (leaf, DER) the TLS server `peer` presented on the last connection this
    /// endpoint opened to it, for health pages (its subject and expiry).
    pub fn peer_certificate(&self, peer: Peer) -> Option<Arc<[u8]>> {
        self.inner.server_certs.lock().unwrap().get(&peer).cloned()
    }

    /// Why the last connection to `peer` failed or was closed with an error, if it was.
    pub fn connection_error(&self, peer: Peer) -> Option<String> {
        self.inner.conn_errors.lock().unwrap().get(&peer).cloned()
    }

    /// A random token for tags and Call-IDs.
    pub fn token(&self) -> String {
        self.inner.ids.token()
    }

    /// A Contact URI for this endpoint (`sip:user@local;transport=…`).
    pub fn contact(&self, user: &str, transport: Transport) -> String {
        let at = self.sent_by(transport);
        match transport {
            Transport::Udp => format!("<sip:{user}@{at}>"),
            Transport::Tcp => format!("<sip:{user}@{at};transport=tcp>"),
            Transport::Tls => format!("<sip:{user}@{at};transport=tls>"),
        }
    }

    /// `host:port` of this endpoint for `transport`, as written in Via and Contact: the
    /// [advertised](EndpointConfig::advertise) host, else the bound address.
    fn sent_by(&self, transport: Transport) -> String {
        let local = self.local_for(transport);
        match &self.inner.cfg.advertise {
            Some(host) if host.contains(':') && !host.starts_with('[') => format!("[{host}]:{}", local.port()),
            Some(host) => format!("{host}:{}", local.port()),
            None => local.to_string(),
        }
    }

    /// Routes requests with this Call-ID to `tx` instead of the application's channel.
    pub fn register_dialog(&self, call_id: &str, tx: mpsc::Sender<Incoming>) {
        self.inner.dialogs.lock().unwrap().insert(call_id.to_owned(), tx);
    }

    /// Stops routing a Call-ID.
    pub fn unregister_dialog(&self, call_id: &str) {
        self.inner.dialogs.lock().unwrap().remove(call_id);
    }

    /// Sends a request (built with a Via from [`Endpoint::via`] carrying `branch`) and waits for
    /// its final response, retransmitting over UDP. Provisional responses are skipped.
    pub async fn request(&self, peer: Peer, branch: &str, bytes: Bytes) -> Result<Message, TxError> {
        self.request_timeout(peer, branch, bytes, self.inner.cfg.transaction_timeout).await
    }

    /// [`Endpoint::request`] with its own Timer F (health pings want an answer in seconds).
    pub async fn request_timeout(&self, peer: Peer, branch: &str, bytes: Bytes, timeout: Duration) -> Result<Message, TxError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.inner.client.lock().unwrap().insert(branch.to_owned(), (peer, tx));
        let _guard = ClientGuard { inner: &self.inner, branch };
        if let Err(e) = self.inner.send(peer, bytes.clone()).await {
            let e = e.to_string();
            if peer.transport.is_stream() {
                self.inner.note_conn_error(peer, e.clone());
            }
            return Err(TxError::Transport(e));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interval = T1;
        let mut next_retransmit = tokio::time::Instant::now() + interval;
        loop {
            let wake = if peer.transport == Transport::Udp { next_retransmit.min(deadline) } else { deadline };
            tokio::select! {
                msg = rx.recv() => {
                    let msg = match msg {
                        None => return Err(TxError::Closed),
                        Some(Err(e)) => return Err(TxError::Transport(e)),
                        Some(Ok(m)) => m,
                    };
                    if msg.code().unwrap_or(0) >= 200 {
                        return Ok(msg);
                    }
                    interval = T2; // proceeding: retransmit at T2 (§17.1.2.2)
                }
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= deadline {
                        self.inner.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        // Over a connection that failed meanwhile, that is the better reason.
                        if let Some(e) = peer.transport.is_stream().then(|| self.connection_error(peer)).flatten() {
                            return Err(TxError::Transport(e));
                        }
                        return Err(TxError::Timeout);
                    }
                    self.inner.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                    let _ = self.inner.send(peer, bytes.clone()).await;
                    interval = (interval * 2).min(T2);
                    next_retransmit = tokio::time::Instant::now() + interval;
                }
            }
        }
    }

    /// Sends a message that expects no response (BENOTIFY, ACK, a keep-alive).
    pub async fn send_oneway(&self, peer: Peer, bytes: Bytes) -> Result<(), TxError> {
        self.inner.send(peer, bytes).await.map_err(|e| TxError::Transport(e.to_string()))
    }

    /// Answers a request: stores the response in the server transaction (so a retransmitted
    /// request gets it again) and sends it where the request came from.
    pub async fn respond(&self, req: &Incoming, response: Builder) {
        let bytes = response.header("Server", &self.inner.cfg.user_agent).build();
        let key = server_key(&req.msg);
        if let Some(t) = self.inner.server.lock().unwrap().get_mut(&key) {
            t.response = Some(bytes.clone());
        }
        if let Err(e) = self.inner.send(req.peer, bytes).await {
            tracing::debug!(error = %e, peer = %req.peer.addr, "sip: response not sent");
        }
    }

    /// Answers a request with a bare status.
    pub async fn reply(&self, req: &Incoming, code: u16, reason: &str) {
        self.respond(req, Builder::response_to(&req.msg, code, reason, Some(&self.token()))).await;
    }

    /// Stops the receive loops and closes the TCP connections.
    pub fn shutdown(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        self.inner.conns.lock().unwrap().clear();
    }
}

struct ClientGuard<'a> {
    inner: &'a Inner,
    branch: &'a str,
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.inner.client.lock().unwrap().remove(self.branch);
    }
}

fn server_key(msg: &Message) -> String {
    let method = msg.cseq_method.to_string();
    match msg.branch() {
        Some(b) if b.starts_with("z9hG4bK") => {
            let sent_by = msg.header(&ezk_sip_types::Name::VIA).unwrap_or("");
            let sent_by = sent_by.split([';', ',']).next().unwrap_or("");
            format!("{b}|{sent_by}|{method}")
        }
        // RFC 2543 peers: no magic cookie; match on the dialog identifiers (§17.2.3).
        _ => format!("{}|{}|{}|{method}", msg.call_id, msg.cseq, msg.from.tag.as_deref().unwrap_or("")),
    }
}

impl Inner {
    fn on_bytes(self: &Arc<Self>, data: Bytes, peer: Peer, peer_certificate: Option<Arc<[u8]>>) {
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return; // UDP keep-alive
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match Message::parse(data.clone()) {
            Ok(msg) => self.dispatch(msg, peer, peer_certificate),
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, peer = %peer.addr, transport = %peer.transport, "sip: malformed message");
                if let Some(reply) = bad_request_reply(&data, &e) {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _ = this.send(peer, reply).await;
                    });
                }
            }
        }
    }

    fn dispatch(self: &Arc<Self>, msg: Message, peer: Peer, peer_certificate: Option<Arc<[u8]>>) {
        if !msg.is_request() {
            let waiter = msg.branch().and_then(|b| self.client.lock().unwrap().get(b).map(|(_, tx)| tx.clone()));
            match waiter {
                Some(tx) => {
                    let _ = tx.send(Ok(msg));
                }
                None => tracing::debug!(%msg, "sip: response matches no transaction"),
            }
            return;
        }
        if msg.method() == Some(&ezk_sip_types::Method::ACK) {
            return; // no INVITEs here; a stray ACK needs nothing
        }
        let key = server_key(&msg);
        {
            let mut server = self.server.lock().unwrap();
            if let Some(t) = server.get(&key) {
                if let Some(resp) = t.response.clone() {
                    let this = self.clone();
                    let peer = t.peer;
                    tokio::spawn(async move {
                        let _ = this.send(peer, resp).await;
                    });
                }
                return; // retransmission
            }
            let linger = if peer.transport.is_stream() { Duration::from_secs(2) } else { 64 * T1 };
            server.insert(key, ServerTx { response: None, peer, expires: Instant::now() + linger });
        }
        let incoming = Incoming { msg, peer, peer_certificate };
        let dialog = self.dialogs.lock().unwrap().get(&*incoming.msg.call_id).cloned();
        let result = match dialog {
            Some(tx) => tx.try_send(incoming),
            None => self.requests.try_send(incoming),
        };
        if let Err(e) = result {
            let incoming = match e {
                mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => i,
            };
            self.stats.overload_503.fetch_add(1, Ordering::Relaxed);
            let reply = Builder::response_to(&incoming.msg, 503, "Service Unavailable", None)
                .header("Retry-After", "5")
                .build();
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.send(incoming.peer, reply).await;
            });
        }
    }

    async fn send(self: &Arc<Self>, peer: Peer, bytes: Bytes) -> std::io::Result<()> {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        match peer.transport {
            Transport::Udp => {
                let sock = self.udp.as_ref().ok_or_else(|| std::io::Error::other("UDP is off"))?;
                sock.send_to(&bytes, peer.addr).await.map(|_| ())
            }
            Transport::Tcp | Transport::Tls => {
                let tx = match self.open_conn(peer) {
                    Some(tx) => tx,
                    None => {
                        // One connect at a time per peer; whoever waited finds it open.
                        let gate = self.connecting.lock().unwrap().entry(peer).or_default().clone();
                        let one = gate.lock().await;
                        let opened = match self.open_conn(peer) {
                            Some(tx) => Ok(tx),
                            None => self.connect_or_hold(peer).await,
                        };
                        drop(one);
                        drop(gate);
                        // The gate goes once nobody waits at it.
                        let mut connecting = self.connecting.lock().unwrap();
                        if connecting.get(&peer).is_some_and(|g| Arc::strong_count(g) == 1) {
                            connecting.remove(&peer);
                        }
                        drop(connecting);
                        opened?
                    }
                };
                tx.send(bytes).await.map_err(|_| std::io::Error::other("connection closed"))
            }
        }
    }

    /// The open connection to `peer`, if there is one.
    fn open_conn(&self, peer: Peer) -> Option<mpsc::Sender<Bytes>> {
        self.conns.lock().unwrap().get(&peer).filter(|tx| !tx.is_closed()).cloned()
    }

    /// [`connect`](Inner::connect), unless the last attempt failed within its hold-down: then
    /// that failure again, at once.
    async fn connect_or_hold(self: &Arc<Self>, peer: Peer) -> std::io::Result<mpsc::Sender<Bytes>> {
        let now = Instant::now();
        let held = self.hold_down.lock().unwrap().get(&peer).cloned();
        if let Some((until, _, why)) = &held {
            if now < *until {
                return Err(std::io::Error::other(why.clone()));
            }
        }
        match self.connect(peer).await {
            // The hold-down ends once the peer sends something on the new connection (a TLS
            // 1.3 server may still refuse the certificate after the handshake).
            Ok(tx) => Ok(tx),
            Err(e) => {
                self.hold(peer, e.to_string());
                Err(e)
            }
        }
    }

    /// Keeps why the connection to `peer` failed, at most [`MAX_CONNECTIONS`] peers' reasons
    /// (beyond, the old ones are forgotten: a server talking to many short-lived peers must
    /// not grow without bound).
    fn note_conn_error(&self, peer: Peer, why: String) {
        let mut errors = self.conn_errors.lock().unwrap();
        if errors.len() >= MAX_CONNECTIONS && !errors.contains_key(&peer) {
            errors.clear();
        }
        errors.insert(peer, why);
    }

    /// Requests to `peer` fail with `why` for the next hold-down (module docs).
    fn hold(&self, peer: Peer, why: String) {
        let now = Instant::now();
        let mut holds = self.hold_down.lock().unwrap();
        let hold = holds.get(&peer).map_or(CONNECT_HOLD, |(_, h, _)| (*h * 2).min(CONNECT_HOLD_MAX));
        if holds.len() >= MAX_CONNECTIONS {
            holds.retain(|_, (until, _, _)| *until > now);
        }
        holds.insert(peer, (now + hold, hold, why));
    }

    /// Opens a connection to `peer` (TCP, or TLS with the configured client settings) and
    /// starts its reader and writer.
    async fn connect(self: &Arc<Self>, peer: Peer) -> std::io::Result<mpsc::Sender<Bytes>> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer.addr))
            .await
            .map_err(|_| std::io::Error::other("connect timeout"))??;
        let _ = stream.set_nodelay(true);
        let keepalive = self.cfg.keepalive;
        if peer.transport == Transport::Tcp {
            let (rd, wr) = stream.into_split();
            self.conn_errors.lock().unwrap().remove(&peer);
            return Ok(Inner::adopt(self, rd, wr, peer, None, keepalive, true));
        }
        let (config, name) = self.cfg.tls.connect.clone().ok_or_else(|| std::io::Error::other("SIP over TLS is not configured for this endpoint"))?;
        let name = self.tls_names.lock().unwrap().get(&peer.addr).cloned().unwrap_or(name);
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_rustls::TlsConnector::from(config).connect(name.clone(), stream))
            .await
            .map_err(|_| std::io::Error::other(format!("TLS handshake with {} ({}) not done in time", peer.addr, name.to_str())))?
            .map_err(|e| std::io::Error::other(format!("TLS handshake with {} ({}): {e}", peer.addr, name.to_str())))?;
        if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            let mut certs = self.server_certs.lock().unwrap();
            if certs.len() < MAX_CONNECTIONS || certs.contains_key(&peer) {
                certs.insert(peer, Arc::from(cert.as_ref()));
            }
        }
        let (rd, wr) = tokio::io::split(tls);
        self.conn_errors.lock().unwrap().remove(&peer);
        Ok(Inner::adopt(self, rd, wr, peer, None, keepalive, true))
    }

    /// Starts the reader and writer of a connection (TCP, or TLS over TCP) and registers it by
    /// peer. What is queued is written in one go and flushed (TLS holds records until then).
    /// An `outbound` connection (this endpoint opened it) that the peer ends with an error
    /// before sending anything — a TLS 1.3 server refusing the client's certificate after the
    /// handshake — counts as a failed connect (hold-down).
    #[allow(clippy::too_many_arguments)]
    fn adopt<R, W>(self: &Arc<Self>, mut rd: R, mut wr: W, peer: Peer, peer_certificate: Option<Arc<[u8]>>, keepalive: Option<Duration>, outbound: bool) -> mpsc::Sender<Bytes>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let remote = peer.addr;
        let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
        self.conns.lock().unwrap().insert(peer, tx.clone());
        tokio::spawn(async move {
            'write: while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
                while let Ok(b) = rx.try_recv() {
                    if wr.write_all(&b).await.is_err() {
                        break 'write;
                    }
                }
                if wr.flush().await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let weak = Arc::downgrade(self);
        let pong = tx.clone();
        tokio::spawn(async move {
            let mut framer = Framer::new();
            let mut buf = vec![0u8; 16 * 1024];
            let mut lingering = false;
            let mut alive = keepalive.map(|every| KeepAlive::new(every, tokio::time::Instant::now()));
            let mut received = false;
            'conn: loop {
                let read = match alive.as_mut() {
                    None => rd.read(&mut buf).await,
                    Some(ka) => tokio::select! {
                        r = rd.read(&mut buf) => r,
                        _ = tokio::time::sleep_until(ka.wake()) => {
                            match ka.on_timer(tokio::time::Instant::now()) {
                                KeepAliveAction::Ping => {
                                    let _ = pong.try_send(Bytes::from_static(b"\r\n\r\n"));
                                }
                                KeepAliveAction::Dead => {
                                    let why = format!("connection to {remote} ({}) lost: no pong to a keep-alive ping in time", peer.transport);
                                    tracing::warn!(%remote, transport = %peer.transport, "SIP connection lost: no pong to a keep-alive ping; closing it.");
                                    if let Some(inner) = weak.upgrade() {
                                        inner.note_conn_error(peer, why);
                                    }
                                    break 'conn;
                                }
                                KeepAliveAction::Wait => {}
                            }
                            continue;
                        }
                    },
                };
                let n = match read {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        // A TLS alert (certificate refused) or a reset: kept as the reason.
                        let why = format!("connection to {remote} ({}) closed: {e}", peer.transport);
                        tracing::info!(%remote, transport = %peer.transport, error = %e, "SIP connection closed with an error.");
                        if let Some(inner) = weak.upgrade() {
                            if outbound && !received {
                                inner.hold(peer, why.clone());
                            }
                            // No answer comes on a connection that failed: its requests fail
                            // now, with the reason, instead of at their timeout.
                            for (p, tx) in inner.client.lock().unwrap().values() {
                                if *p == peer {
                                    let _ = tx.send(Err(why.clone()));
                                }
                            }
                            // Kept for connections this endpoint opened: an accepted one's
                            // peer (a phone's ephemeral port) is never asked for again.
                            if outbound {
                                inner.note_conn_error(peer, why);
                            }
                        }
                        break;
                    }
                };
                if outbound && !received {
                    if let Some(inner) = weak.upgrade() {
                        inner.hold_down.lock().unwrap().remove(&peer);
                    }
                }
                received = true;
                if let Some(ka) = alive.as_mut() {
                    ka.on_read(tokio::time::Instant::now(), buf[..n].iter().all(|b| matches!(b, b'\r' | b'\n')));
                }
                framer.extend(&buf[..n]);
                loop {
                    let Some(inner) = weak.upgrade() else { break 'conn };
                    match framer.next_frame() {
                        Ok(None) => break,
                        Ok(Some(Frame::Ping)) => {
                            let _ = pong.try_send(Bytes::from_static(b"\r\n"));
                        }
                        Ok(Some(Frame::Message(m))) => inner.on_bytes(m, peer, peer_certificate.clone()),
                        Err(e) => {
                            inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
                            // Content-Length over the limit: answer 513 from the head before
                            // closing. A head itself over the limit cannot be read to address
                            // an answer; the connection is closed without one.
                            let reply = match e {
                                ParseError::TooLarge => framer.oversized_head().and_then(|h| bad_request_reply(h, &e)),
                                _ => None,
                            };
                            let answered = reply.is_some();
                            tracing::debug!(error = %e, %remote, answered, "SIP TCP stream cannot be framed; closing the connection.");
                            if let Some(reply) = reply {
                                inner.stats.sent.fetch_add(1, Ordering::Relaxed);
                                let _ = pong.try_send(reply);
                                lingering = true;
                            }
                            break 'conn;
                        }
                    }
                }
            }
            if let Some(inner) = weak.upgrade() {
                let mut conns = inner.conns.lock().unwrap();
                if conns.get(&peer).is_some_and(|t| t.same_channel(&pong)) {
                    conns.remove(&peer);
                }
            }
            // The writer sends what is queued (the 513) and closes once no sender is left.
            drop(pong);
            if lingering {
                let deadline = tokio::time::Instant::now() + LINGER;
                while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                }
            }
        });
        tx
    }
}

/// Accepts connections up to [`MAX_CONNECTIONS`]: TCP, or TLS when `tls` is given.
async fn accept(listener: TcpListener, weak: std::sync::Weak<Inner>, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let Ok((stream, from)) = listener.accept().await else { continue };
        let Some(inner) = weak.upgrade() else { return };
        if inner.conns.lock().unwrap().len() + inner.handshakes.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::warn!(%from, tls = tls.is_some(), "sip: too many connections; refused");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = tls.clone() else {
            let (rd, wr) = stream.into_split();
            Inner::adopt(&inner, rd, wr, Peer { transport: Transport::Tcp, addr: from }, None, None, false);
            continue;
        };
        inner.handshakes.fetch_add(1, Ordering::Relaxed);
        let weak = weak.clone();
        // The handshake on its own task: a slow or silent client holds up no one.
        tokio::spawn(async move {
            let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            let Some(inner) = weak.upgrade() else { return };
            inner.handshakes.fetch_sub(1, Ordering::Relaxed);
            match done {
                Ok(Ok(tls)) => {
                    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| Arc::<[u8]>::from(c.as_ref()));
                    let (rd, wr) = tokio::io::split(tls);
                    Inner::adopt(&inner, rd, wr, Peer { transport: Transport::Tls, addr: from }, cert, None, false);
                }
                Ok(Err(e)) => tracing::info!(%from, error = %e, "SIP TLS handshake failed; connection closed."),
                Err(_) => tracing::info!(%from, "SIP TLS handshake not done in time; connection closed."),
            }
        });
    }
}

/// The CRLF keep-alive of one connection this endpoint opened (RFC 5626 §4.4.1), as a state
/// machine over the time (pure: the reader drives it). A ping goes out after `every` without
/// anything received; anything received answers it. A peer that answered a ping with a pong
/// (a lone CRLF) once and then lets one go unanswered for [`PONG_TIMEOUT`] has lost the
/// connection. A peer that never pongs is not judged by pings (RFC 5626 makes pongs part of
/// `outbound` support, which not every server has): for it the pings only keep middleboxes'
/// state fresh, and the application's health checks judge the peer.
#[derive(Debug, Clone)]
pub struct KeepAlive {
    every: Duration,
    pong_timeout: Duration,
    last_rx: tokio::time::Instant,
    ping_sent: Option<tokio::time::Instant>,
    pongs: bool,
}

/// What [`KeepAlive::on_timer`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveAction {
    /// Send a ping (CRLFCRLF).
    Ping,
    /// Nothing to do yet.
    Wait,
    /// The peer pongs, and did not: close the connection.
    Dead,
}

impl KeepAlive {
    /// A connection opened at `now`.
    pub fn new(every: Duration, now: tokio::time::Instant) -> KeepAlive {
        KeepAlive { every, pong_timeout: PONG_TIMEOUT.min(every * 2), last_rx: now, ping_sent: None, pongs: false }
    }

    /// When [`on_timer`](KeepAlive::on_timer) is due.
    pub fn wake(&self) -> tokio::time::Instant {
        match self.ping_sent {
            Some(t) => t + self.pong_timeout,
            None => self.last_rx + self.every,
        }
    }

    /// The timer fired at `now`.
    pub fn on_timer(&mut self, now: tokio::time::Instant) -> KeepAliveAction {
        match self.ping_sent {
            Some(t) if now >= t + self.pong_timeout => {
                self.ping_sent = None;
                if self.pongs {
                    return KeepAliveAction::Dead;
                }
                // A peer without pongs: the next ping after `every` from now.
                self.last_rx = now;
                KeepAliveAction::Wait
            }
            Some(_) => KeepAliveAction::Wait,
            None if now >= self.last_rx + self.every => {
                self.ping_sent = Some(now);
                KeepAliveAction::Ping
            }
            None => KeepAliveAction::Wait,
        }
    }

    /// Bytes arrived at `now`; `only_crlf` when they were nothing but CR and LF (a pong).
    pub fn on_read(&mut self, now: tokio::time::Instant, only_crlf: bool) {
        if self.ping_sent.take().is_some() && only_crlf {
            self.pongs = true;
        }
        self.last_rx = now;
    }
}

async fn bind_pair(cfg: &EndpointConfig) -> std::io::Result<(Option<UdpSocket>, Option<TcpListener>, SocketAddr)> {
    // With port 0, find one port free for both protocols.
    for _ in 0..20 {
        let udp = if cfg.udp { Some(bind_udp(cfg.listen, cfg.udp_buffer)?) } else { None };
        let port = match &udp {
            Some(u) => u.local_addr()?.port(),
            None => cfg.listen.port(),
        };
        let mut addr = cfg.listen;
        addr.set_port(port);
        if !cfg.tcp {
            let local = udp_local(&udp, addr);
            return Ok((udp, None, local));
        }
        match TcpListener::bind(addr).await {
            Ok(l) => {
                let local = l.local_addr()?;
                return Ok((udp, Some(l), local));
            }
            Err(e) if cfg.listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no port free for both UDP and TCP"))
}

/// A non-blocking UDP socket with large buffers.
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer > 0 {
        // Best effort: a smaller buffer than asked is not an error.
        let _ = s.set_recv_buffer_size(buffer);
        let _ = s.set_send_buffer_size(buffer);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

fn udp_local(udp: &Option<UdpSocket>, fallback: SocketAddr) -> SocketAddr {
    udp.as_ref().and_then(|u| u.local_addr().ok()).unwrap_or(fallback)
}

/// A `400` for a request that failed to parse, when its Via, From, To, Call-ID and CSeq lines
/// can still be read (RFC 3261 §8.2: the reason phrase says what was wrong); `513` for one
/// over the size limit, `416` and `505` for the URI scheme and the version.
fn bad_request_reply(data: &[u8], err: &ParseError) -> Option<Bytes> {
    let text = std::str::from_utf8(data).ok()?;
    let first = text.trim_start().lines().next()?;
    if first.starts_with("SIP/") || first.starts_with("ACK ") {
        return None; // never answer a response or an ACK
    }
    let mut keep: Vec<(&str, &str)> = Vec::new();
    let mut have = [false; 5];
    for line in text.lines().skip(1) {
        if line.trim().is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim();
        let canon = match name.to_ascii_lowercase().as_str() {
            "via" | "v" => ("Via", 0),
            "from" | "f" => ("From", 1),
            "to" | "t" => ("To", 2),
            "call-id" | "i" => ("Call-ID", 3),
            "cseq" => ("CSeq", 4),
            _ => continue,
        };
        have[canon.1] = true;
        keep.push((canon.0, value.trim()));
    }
    if !have.iter().all(|h| *h) {
        return None;
    }
    let mut b = match err {
        ParseError::UnsupportedUriScheme => Builder::response(416, "Unsupported URI Scheme"),
        ParseError::BadVersion => Builder::response(505, "Version Not Supported"),
        ParseError::TooLarge => Builder::response(513, "Message Too Large"),
        _ => Builder::response(400, &format!("Bad Request ({err})")),
    };
    for (n, v) in keep {
        b = b.header(n, v);
    }
    Some(b.build())
}

/// Random tokens for tags, branches and Call-IDs (not secrets).
struct Ids {
    state: Mutex<u64>,
}

impl Ids {
    fn new() -> Ids {
        Ids { state: Mutex::new(crate::random_u64() | 1) }
    }

    fn token(&self) -> String {
        let mut s = self.state.lock().unwrap();
        // xorshift64*
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let v = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
        format!("{v:016x}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    async fn pair(transport: Transport) -> (Endpoint, Endpoint, mpsc::Receiver<Incoming>, Peer) {
        let (a, _arx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        let (b, brx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        let peer = Peer { transport, addr: b.local_addr() };
        (a, b, brx, peer)
    }

    /// An OPTIONS request from `a` over `transport`, and its branch (the TLS tests send it too).
    pub(crate) fn options(a: &Endpoint, transport: Transport) -> (Bytes, String) {
        let (via, branch) = a.via(transport);
        let b = Builder::request("OPTIONS", "sip:b@127.0.0.1")
            .header("Via", &via)
            .header("From", &format!("<sip:a@127.0.0.1>;tag={}", a.token()))
            .header("To", "<sip:b@127.0.0.1>")
            .header("Call-ID", &a.token())
            .header("CSeq", "1 OPTIONS")
            .header("Max-Forwards", "70");
        (b.build(), branch)
    }

    #[tokio::test]
    async fn request_and_response_over_udp_and_tcp() {
        for transport in [Transport::Udp, Transport::Tcp] {
            let (a, b, mut brx, peer) = pair(transport).await;
            let server = tokio::spawn(async move {
                let req = brx.recv().await.unwrap();
                assert_eq!(req.peer.transport, transport);
                b.reply(&req, 200, "OK").await;
                b
            });
            let (bytes, branch) = options(&a, transport);
            let resp = a.request(peer, &branch, bytes).await.unwrap();
            assert_eq!(resp.code(), Some(200), "{transport}");
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn retransmitted_request_gets_the_stored_response_once_handled() {
        let (a, b, mut brx, peer) = pair(Transport::Udp).await;
        let (bytes, branch) = options(&a, Transport::Udp);
        // Answer only after two retransmissions: the application sees the request once.
        let server = tokio::spawn(async move {
            let req = brx.recv().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1700)).await;
            b.reply(&req, 200, "OK").await;
            assert!(brx.try_recv().is_err(), "a retransmission reached the application");
            b
        });
        let resp = a.request(peer, &branch, bytes).await.unwrap();
        assert_eq!(resp.code(), Some(200));
        assert!(a.stats().retransmissions.load(Ordering::Relaxed) >= 2);
        let b = server.await.unwrap();
        assert_eq!(b.stats().received.load(Ordering::Relaxed), a.stats().sent.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn times_out_without_answer() {
        let cfg = EndpointConfig { transaction_timeout: Duration::from_millis(1200), ..Default::default() };
        let (a, _rx) = Endpoint::bind(cfg).await.unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = Peer { transport: Transport::Udp, addr: silent.local_addr().unwrap() };
        let (bytes, branch) = options(&a, Transport::Udp);
        assert_eq!(a.request(peer, &branch, bytes).await.unwrap_err(), TxError::Timeout);
    }

    #[tokio::test]
    async fn malformed_request_gets_a_400_with_the_reason() {
        let (b, _rx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let bad = "SUBSCRIBE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n";
        sock.send_to(bad.as_bytes(), b.local_addr()).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await.unwrap().unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("SIP/2.0 400 Bad Request (CSeq method does not match"), "{text}");
        assert_eq!(b.stats().malformed.load(Ordering::Relaxed), 1);
    }

    const BIG_HEAD: &str = "MESSAGE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKbig\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: big1\r\nCSeq: 7 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n";

    /// Issue 12: a request whose Content-Length puts it over the size limit is answered `513`
    /// with the dialog headers copied, and then the connection closes (the rest of the stream
    /// cannot be framed).
    #[tokio::test]
    async fn oversized_tcp_request_gets_513_then_the_connection_closes() {
        let (b, _rx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        let (mut rd, mut wr) = TcpStream::connect(b.local_addr()).await.unwrap().into_split();
        // The whole message, as a sender that does not wait writes it; the write may fail once
        // the server gives up on the stream.
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(BIG_HEAD.as_bytes()).await;
            let _ = wr.write_all(&vec![b'x'; 100_000]).await;
            wr
        });
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the connection was not closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("SIP/2.0 513 Message Too Large\r\n"), "{text:?}");
        for h in [
            "Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKbig",
            "From: <sip:x@y>;tag=1",
            "To: <sip:a@b>",
            "Call-ID: big1",
            "CSeq: 7 MESSAGE",
        ] {
            assert!(text.contains(&format!("{h}\r\n")), "{h} missing: {text}");
        }
        assert_eq!(b.stats().malformed.load(Ordering::Relaxed), 1);
        drop(writer.await);
    }

    #[test]
    fn an_oversized_datagram_with_readable_headers_gets_513() {
        let reply = bad_request_reply(BIG_HEAD.as_bytes(), &ParseError::TooLarge).expect("a reply");
        let text = std::str::from_utf8(&reply).unwrap();
        assert!(text.starts_with("SIP/2.0 513 Message Too Large\r\n"), "{text}");
        assert!(text.contains("Call-ID: big1\r\n"), "{text}");
    }

    #[tokio::test]
    async fn full_queue_answers_503() {
        let cfg = EndpointConfig { queue: 1, ..Default::default() };
        let (b, _rx) = Endpoint::bind(cfg).await.unwrap();
        let (a, _arx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        let peer = Peer { transport: Transport::Udp, addr: b.local_addr() };
        let (m1, b1) = options(&a, Transport::Udp);
        let (m2, b2) = options(&a, Transport::Udp);
        let first = tokio::spawn({
            let a = a.clone();
            async move { a.request(peer, &b1, m1).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let resp = a.request(peer, &b2, m2).await.unwrap();
        assert_eq!(resp.code(), Some(503));
        assert_eq!(resp.header(&ezk_sip_types::Name::RETRY_AFTER), Some("5"));
        first.abort();
    }

    /// The keep-alive's time line: a ping after `every` of silence, anything received answers
    /// it; a peer that pongs and then does not has lost the connection; one that never pongs is
    /// left to the application's health check.
    #[test]
    fn keep_alive_pings_when_idle_and_judges_only_peers_that_pong() {
        let t0 = tokio::time::Instant::now();
        let s = Duration::from_secs;
        let mut k = KeepAlive::new(s(30), t0);
        assert_eq!(k.wake(), t0 + s(30));
        assert_eq!(k.on_timer(t0 + s(29)), KeepAliveAction::Wait);
        k.on_read(t0 + s(20), false); // a NOTIFY: the ping waits
        assert_eq!(k.on_timer(t0 + s(30)), KeepAliveAction::Wait);
        assert_eq!(k.wake(), t0 + s(50));
        assert_eq!(k.on_timer(t0 + s(50)), KeepAliveAction::Ping);
        assert_eq!(k.wake(), t0 + s(60), "the pong is due within 10 s");
        // No pong from a peer that never ponged: not judged; the next ping 30 s later.
        assert_eq!(k.on_timer(t0 + s(60)), KeepAliveAction::Wait);
        assert_eq!(k.wake(), t0 + s(90));
        assert_eq!(k.on_timer(t0 + s(90)), KeepAliveAction::Ping);
        k.on_read(t0 + s(90), true); // a pong: this peer pongs
        assert_eq!(k.on_timer(t0 + s(120)), KeepAliveAction::Ping);
        assert_eq!(k.on_timer(t0 + s(125)), KeepAliveAction::Wait);
        assert_eq!(k.on_timer(t0 + s(130)), KeepAliveAction::Dead);
        // A message instead of the pong answers the ping too.
        let mut k = KeepAlive::new(s(30), t0);
        assert_eq!(k.on_timer(t0 + s(30)), KeepAliveAction::Ping);
        k.on_read(t0 + s(31), true);
        assert_eq!(k.on_timer(t0 + s(61)), KeepAliveAction::Ping);
        k.on_read(t0 + s(62), false);
        assert_eq!(k.wake(), t0 + s(92));
    }

    /// Over a real connection: the opening side pings when idle, the other side's endpoint
    /// pongs, and the ping counts as answered (the connection stays and keeps working); a peer
    /// that accepts the pings and never answers one after having ponged is dropped.
    #[tokio::test]
    async fn crlf_keep_alive_over_tcp() {
        let cfg = EndpointConfig { keepalive: Some(Duration::from_millis(200)), ..Default::default() };
        let (a, _arx) = Endpoint::bind(cfg).await.unwrap();
        let (b, mut brx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        let peer = Peer { transport: Transport::Tcp, addr: b.local_addr() };
        let server = tokio::spawn(async move {
            while let Some(req) = brx.recv().await {
                b.reply(&req, 200, "OK").await;
            }
        });
        let (req, branch) = options(&a, Transport::Tcp);
        assert_eq!(a.request(peer, &branch, req).await.unwrap().code(), Some(200));
        tokio::time::sleep(Duration::from_millis(900)).await;
        let (req, branch) = options(&a, Transport::Tcp);
        assert_eq!(a.request(peer, &branch, req).await.unwrap().code(), Some(200));
        assert_eq!(a.connection_error(peer), None, "pings answered: nothing wrong");
        server.abort();

        // A raw peer: reads the pings, pongs the first, then stays silent with the socket open.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let raw = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let mut pinged = 0;
            let mut got = Vec::new();
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    return (pinged, got);
                }
                got.extend_from_slice(&buf[..n]);
                if buf[..n] == *b"\r\n\r\n" {
                    pinged += 1;
                    if pinged == 1 {
                        s.write_all(b"\r\n").await.unwrap();
                    }
                }
            }
            (pinged, got)
        });
        let peer = Peer { transport: Transport::Tcp, addr };
        a.send_oneway(peer, Bytes::from_static(b"\r\n")).await.unwrap();
        let (pinged, _) = tokio::time::timeout(Duration::from_secs(5), raw).await.expect("the silent peer's connection closed").unwrap();
        assert!(pinged >= 2, "pinged {pinged} times");
        let e = a.connection_error(peer).expect("the reason is kept");
        assert!(e.contains("no pong"), "{e}");
    }

    /// Via and Contact carry the advertised host with the bound port (TLS: the TLS port, and
    /// `alias` in the Via); without one, the bound address.
    #[tokio::test]
    async fn via_and_contact_name_the_advertised_host() {
        let (plain, _rx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        let at = plain.local_addr();
        assert!(plain.via(Transport::Tcp).0.starts_with(&format!("SIP/2.0/TCP {at};branch=z9hG4bK")));
        assert!(!plain.via(Transport::Tcp).0.contains("alias"));
        assert_eq!(plain.contact("hub", Transport::Udp), format!("<sip:hub@{at}>"));
        let server = crate::tls::server_config(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tls/sip/app-cert.pem")),
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tls/sip/app-key.pem")),
            None,
        )
        .unwrap();
        let cfg = EndpointConfig {
            advertise: Some("hub.example.test".into()),
            tls: TlsSettings { listen: Some((SocketAddr::from(([127, 0, 0, 1], 0)), Arc::new(server))), connect: None },
            ..Default::default()
        };
        let (ep, _rx) = Endpoint::bind(cfg).await.unwrap();
        let tls_port = ep.tls_addr().unwrap().port();
        let (via, _) = ep.via(Transport::Tls);
        assert!(via.starts_with(&format!("SIP/2.0/TLS hub.example.test:{tls_port};branch=")) && via.ends_with(";rport;alias"), "{via}");
        assert_eq!(ep.contact("hub", Transport::Tls), format!("<sip:hub@hub.example.test:{tls_port};transport=tls>"));
        assert_eq!(ep.contact("hub", Transport::Tcp), format!("<sip:hub@hub.example.test:{};transport=tcp>", ep.local_addr().port()));
    }
}
