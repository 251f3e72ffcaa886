//! The built-in demo: a company of a few hundred people (Swedish and Norwegian names) and a
//! simulator of each peer the demo's providers talk to: Teams presence comes from the Graph
//! simulator through the real Graph provider (polling, subscriptions, change notifications);
//! meetings come from the calendar simulator through the calendar provider (Graph
//! getSchedule); desk phones' lamps come from the PBX simulator through the SIP dialog-event
//! provider; Skype for Business presence comes from an SfB pool simulator through the SfB
//! provider (batched category subscriptions, RLMI BENOTIFYs). The Oslo office's desk phones
//! (extensions 5xxxx) are on an Alcatel-Lucent OmniPCX: their calls, DND and forwards come from
//! the O2G simulator through the O2G provider (session, subscriptions, chunked event stream).
//! Norwegian mobiles come from the Telenor MBN simulator through the MBN provider (password
//! grant, enterprise monitor, long-polled events); Swedish mobiles from an operator simulator
//! in the TDC example format through the generic operator adapter (signed webhooks, with a poll
//! behind them). Lunches set at the switchboard come from a looping scenario through the
//! replay provider. The hub's SIP presence server listens on loopback, over UDP and TCP and over
//! TLS with a self-signed certificate made at every start ([`tls_certificate`]).
//! `presence-hub` with no arguments runs it on 127.0.0.1:8080.
//!
//! Behind the `demo` feature (on by default), as is the `presence-simulators` crate: a
//! production build (`--no-default-features`) has neither.

use std::path::Path;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use presence_providers::calendar::{Backend, CalendarConfig};
use presence_providers::common::config::NoOtherKeys;
use presence_providers::common::microsoft::MicrosoftApp;
use presence_providers::graph::{GraphPresenceConfig, ServiceAccount};
use presence_providers::mbn::MbnConfig;
use presence_providers::o2g::O2gConfig;
use presence_providers::operator::{OperatorConfig, PollConfig};
use presence_providers::replay::ReplayConfig;
use presence_providers::sfb::SfbConfig;
use presence_providers::sip::SipSourceConfig;
use presence_providers::ProviderConfig;
use presence_simulators::calendar::{CalendarSim, CalendarSimConfig};
use presence_simulators::graph::{GraphSim, GraphSimConfig};
use presence_simulators::mbn::{MbnSim, MbnSimConfig};
use presence_simulators::o2g::{O2gSim, O2gSimConfig};
use presence_simulators::operator::{Example, OperatorSim, OperatorSimConfig};
use presence_simulators::pbx::{PbxSim, PbxSimConfig};
use presence_simulators::sfb::{SfbSim, SfbSimConfig};

use crate::sip_server::{SipAccount, SipSection};
use crate::tokens::Role;
use crate::RunOptions;

/// The demo directory (CSV).
pub const DEMO_CSV: &str = include_str!("../../fixtures/directory/demo.csv");
/// The shipped example mapping the demo's Swedish mobile operator uses (TDC's example).
const TDC_EXAMPLE: &str = include_str!("../../fixtures/operators/tdc.toml");
/// The Oslo office's extensions start with this; they are on the OmniPCX (O2G), the others on
/// the SIP PBX.
const OSLO_PREFIX: &str = "5";
/// The demo scenario (JSON Lines).
pub const DEMO_SCENARIO: &str = include_str!("../../fixtures/scenarios/demo.jsonl");
/// The demo's documented tokens, by role.
pub const DEMO_TOKENS: [(Role, &str); 3] = [(Role::Viewer, "demo-viewer"), (Role::Operator, "demo-operator"), (Role::Admin, "demo-admin")];

/// The simulators the demo's providers talk to; they stop when this is dropped.
pub struct DemoPeers {
    /// Microsoft Graph (Teams presence) and its token endpoint.
    pub graph: Arc<GraphSim>,
    /// Calendars (Graph getSchedule, EWS, Google freeBusy).
    pub calendar: Arc<CalendarSim>,
    /// The PBX's busy lamps (SIP dialog event package).
    pub pbx: Arc<PbxSim>,
    /// A Skype for Business front-end pool (SIP, batched category subscriptions).
    pub sfb: Arc<SfbSim>,
    /// The Oslo office's OmniPCX through O2G (REST, chunked event stream).
    pub o2g: Arc<O2gSim>,
    /// Telenor Mobilt Bedriftsnett (Norwegian mobiles).
    pub mbn: Arc<MbnSim>,
    /// A mobile operator in the TDC example format (Swedish mobiles; signed webhooks).
    pub operator: Arc<OperatorSim>,
}

/// The demo's SIP over TLS certificate and key, written to the data directory at every start.
pub const TLS_CERT_FILE: &str = "demo-sip-tls-cert.pem";
/// See [`TLS_CERT_FILE`].
pub const TLS_KEY_FILE: &str = "demo-sip-tls-key.pem";

/// Makes a fresh self-signed certificate for `localhost` and `127.0.0.1` (ECDSA P-256, rcgen)
/// and writes it and its key (mode 0600) to `dir`; returns their paths. A test certificate:
/// a SIP client trusts it by its file or its SHA-256 fingerprint, which the banner prints.
pub fn tls_certificate(dir: &Path) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let bad = |e: rcgen::Error| std::io::Error::other(format!("making the demo's TLS certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(bad)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "presence-hub demo (self-signed, for tests only)");
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let cert = params.self_signed(&key).map_err(bad)?;
    let (cert_file, key_file) = (dir.join(TLS_CERT_FILE), dir.join(TLS_KEY_FILE));
    std::fs::write(&cert_file, cert.pem())?;
    let _ = std::fs::remove_file(&key_file);
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_file)?.write_all(key.serialize_pem().as_bytes())?;
    }
    #[cfg(not(unix))]
    std::fs::write(&key_file, key.serialize_pem())?;
    Ok((cert_file, key_file))
}

/// The SHA-256 fingerprint of the first certificate of a PEM file, as `AB:CD:…`.
pub fn fingerprint(cert_file: &Path) -> Option<String> {
    use sha2::Digest;
    let der = presence_sip::tls::certificates(cert_file).ok()?.into_iter().next()?;
    Some(sha2::Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

/// The demo's SIP account for consoles and phones that SUBSCRIBE to or PUBLISH at the hub.
pub const DEMO_SIP_ACCOUNT: (&str, &str) = ("demo-console", "demo-console");

/// The extensions of the demo company.
pub fn extensions() -> Vec<String> {
    column("extension")
}

/// One column of the demo company's CSV (which has no quoted cells).
fn column(name: &str) -> Vec<String> {
    let mut lines = DEMO_CSV.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let Some(col) = header.iter().position(|h| h.trim() == name) else { return Vec::new() };
    lines.filter_map(|l| l.split(',').nth(col)).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The demo company's mobiles, split into Norwegian (+47) and the others.
fn mobiles() -> (Vec<String>, Vec<String>) {
    column("mobile").into_iter().partition(|m| m.starts_with("+47"))
}

/// The shipped TDC example entry, as the demo uses it.
fn tdc_example() -> std::io::Result<OperatorConfig> {
    let origin = "fixtures/operators/tdc.toml";
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    match crate::config::providers_from_toml(TDC_EXAMPLE, origin).map_err(|e| bad(e.to_string()))?.into_iter().next() {
        Some(ProviderConfig::Operator(c)) => Ok(*c),
        _ => Err(bad(format!("{origin}: not an operator provider"))),
    }
}

/// The Entra object ids of the demo company.
pub fn entra_ids() -> Vec<String> {
    column("entra_id")
}

/// The mailboxes of the demo company.
pub fn mailboxes() -> Vec<String> {
    column("email")
}

/// How the hub runs the demo: the demo company as the directory when the store has none, and
/// the documented tokens ([`DEMO_TOKENS`]), which the sign-in page offers.
pub fn run_options() -> RunOptions {
    RunOptions {
        demo: true,
        demo_directory: Some(DEMO_CSV),
        demo_tokens: DEMO_TOKENS.iter().map(|(r, t)| (*r, t.to_string())).collect(),
        // Several demos (or a demo beside a PBX) on one machine: 5060 when it is free.
        sip_any_port_when_taken: true,
        on_ready: None,
        config_file: None,
    }
}

/// The demo configuration: starts the simulators on loopback, and sets up the providers that
/// use them — Teams through the real Graph provider (polling + change notifications),
/// calendars through the real calendar provider (Graph getSchedule), desk phones' busy lamps
/// through the real SIP dialog-event provider (PBX simulator), Skype for Business through the
/// real SfB provider (pool simulator), the Oslo office's desk phones through the real O2G
/// provider (OmniPCX simulator), Norwegian mobiles through the real Telenor MBN provider,
/// Swedish mobiles through the real operator adapter (TDC example; the simulator posts signed
/// webhooks to `hub_url`), and a looping scenario of lunches through the replay provider. The
/// hub's SIP presence server listens on 127.0.0.1:5060 (or a free port) with the account
/// [`DEMO_SIP_ACCOUNT`].
pub fn start(mut base: Config, hub_url: &str) -> std::io::Result<(Config, DemoPeers)> {
    std::fs::create_dir_all(&base.data_dir)?;
    let scenario = base.data_dir.join("demo-scenario.jsonl");
    write_if_changed(&scenario, DEMO_SCENARIO)?;

    let sim_cfg = GraphSimConfig::default();
    let graph = Arc::new(GraphSim::start(sim_cfg.clone())?);
    let ids = entra_ids();
    graph.seed_demo(&ids, 11);
    graph.drive_demo(ids, Duration::from_millis(1400), 12)?;
    let teams = GraphPresenceConfig {
        name: "teams".into(),
        app: MicrosoftApp {
            tenant_id: Some(sim_cfg.tenant.clone()),
            client_id: Some(sim_cfg.client_id.clone()),
            client_secret: Some(sim_cfg.client_secret.clone()),
            authority: graph.url(),
            token_url: None,
            graph_url: graph.graph_url(),
        },
        notifications: true,
        service_accounts: sim_cfg
            .accounts
            .iter()
            .map(|(name, token)| ServiceAccount { name: name.clone(), refresh_token: Some(token.clone()) })
            .collect(),
        device_code_url: None,
        client_state: None,
        subscription_minutes: 55,
        renew_before_secs: 600,
        consistency_poll_secs: 900,
        fallback_poll_secs: 60,
        batch_ms: 50,
        read_timeout_secs: 10,
        call_timeout_secs: 15,
        down_after_failures: 2,
        watchdog_secs: 30,
        include_resource_data: false,
        encryption_certificate_file: None,
        encryption_key_file: None,
        encryption_certificate_id: None,
        other: NoOtherKeys,
    };
    let cal_cfg = CalendarSimConfig::default();
    let calendar = Arc::new(CalendarSim::start(cal_cfg.clone())?);
    let boxes = mailboxes();
    calendar.seed_demo(&boxes, 21);
    calendar.drive_demo(boxes, Duration::from_secs(4), 22)?;
    let calendars = CalendarConfig {
        name: "calendar".into(),
        backend: Backend::Graph,
        app: MicrosoftApp {
            tenant_id: Some(cal_cfg.tenant.clone()),
            client_id: Some(cal_cfg.client_id.clone()),
            client_secret: Some(cal_cfg.client_secret.clone()),
            authority: calendar.url(),
            token_url: Some(calendar.token_url()),
            graph_url: calendar.graph_url(),
        },
        ews_url: None,
        login: Default::default(),
        google_url: String::new(),
        refresh_token: None,
        poll_interval_secs: 60,
        window_hours: 24,
        interval_minutes: 15,
        keep_details: true,
        keywords: Vec::new(),
        request_timeout_secs: 30,
        down_after_failures: 2,
        other: NoOtherKeys,
    };
    let (oslo, stockholm): (Vec<String>, Vec<String>) = extensions().into_iter().partition(|e| e.starts_with(OSLO_PREFIX));
    let pbx = Arc::new(PbxSim::start(PbxSimConfig::default())?);
    pbx.drive_demo(stockholm, Duration::from_millis(1500), 31)?;
    let mut lamps = SipSourceConfig::new("pbx", &pbx.addr().to_string());
    lamps.conn.transport = "udp".into();
    lamps.domain = Some("pbx.nordvik.se".into());
    lamps.subscribe_rate = 500;
    lamps.extension_prefixes = (1..=9).map(|d| d.to_string()).filter(|d| d != OSLO_PREFIX).collect();
    let sfb = Arc::new(SfbSim::start(SfbSimConfig::default())?);
    let uris = column("sip_uri");
    sfb.seed_demo(&uris, 41);
    sfb.drive_demo(uris, Duration::from_millis(2500), 42)?;
    let mut skype = SfbConfig::new("sfb", &sfb.addr().to_string(), "sip:hub-svc@nordvik.se");
    skype.keep_details = true;

    let o2g = Arc::new(O2gSim::start(O2gSimConfig::default())?);
    o2g.seed(&oslo);
    o2g.drive_demo(oslo, Duration::from_millis(3000), 51)?;
    let (login, password) = o2g.credentials();
    let mut omnipcx = O2gConfig::new("omnipcx", &o2g.url(), &login, &password);
    omnipcx.extension_prefixes = vec![OSLO_PREFIX.into()];

    let (norwegian, swedish) = mobiles();
    let mbn = Arc::new(MbnSim::start(MbnSimConfig { country_code: "47".into(), ..MbnSimConfig::default() })?);
    mbn.seed(&norwegian);
    mbn.drive_demo(norwegian, Duration::from_millis(4000), 61)?;
    let m = mbn.config();
    let mut telenor = MbnConfig::new("telenor", &mbn.base_url(), &m.client_id, &m.client_secret, &m.username, &m.password);
    telenor.token_url = mbn.token_url();

    let operator = Arc::new(OperatorSim::start(OperatorSimConfig::example(Example::Tdc))?);
    let mut tdc = tdc_example()?;
    let path = tdc.webhook.as_ref().map_or("events", |w| w.path.as_str());
    operator.set_webhook_url(Some(format!("{}/hooks/{}/{path}", hub_url.trim_end_matches('/'), tdc.name)));
    // A poll behind the webhooks, as a careful deployment would run one: it mends any change
    // a webhook lost.
    tdc.poll = Some(PollConfig::new(&operator.poll_url(), 60));
    operator.drive_demo(swedish, Duration::from_millis(2500), 71)?;
    base.providers = vec![
        ProviderConfig::GraphPresence(teams),
        ProviderConfig::Calendar(calendars),
        ProviderConfig::SipDialog(lamps),
        ProviderConfig::Sfb(skype),
        ProviderConfig::O2g(omnipcx),
        ProviderConfig::TelenorMbn(telenor),
        ProviderConfig::Operator(Box::new(tdc)),
        ProviderConfig::Replay(ReplayConfig { name: "demo-replay".into(), file: scenario, repeat: true, speed: 1.0 }),
    ];
    // The hub's own SIP presence server, for SIP phones and consoles on this machine; over TLS
    // with a certificate made now.
    let (tls_cert, tls_key) = tls_certificate(&base.data_dir)?;
    base.sip = SipSection {
        enabled: true,
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 5060)),
        tls_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 5061))),
        tls_cert_file: Some(tls_cert),
        tls_key_file: Some(tls_key),
        accounts: vec![SipAccount {
            user: DEMO_SIP_ACCOUNT.0.into(),
            password: Some(DEMO_SIP_ACCOUNT.1.into()),
            ha1_md5: None,
            ha1_sha256: None,
            publish: true,
            certificate_subject: None,
        }],
        ..SipSection::default()
    };
    Ok((base, DemoPeers { graph, calendar, pbx, sfb, o2g, mbn, operator }))
}

/// Prints where the demo runs and how to reach it (URLs, tokens, the SIP account) to stdout,
/// once it serves (`serving`: the addresses it got).
pub fn print_banner(cfg: &Config, serving: &crate::Serving) {
    let addr = serving.http;
    let h = cfg.http.scheme();
    let w = if h == "https" { "wss" } else { "ws" };
    println!("presence-hub demo running at {h}://{addr}/");
    println!("  Web:    {h}://{addr}/               (sign in with demo-operator or demo-viewer)");
    println!("  API:    {h}://{addr}/api/users?q=asa   (Authorization: Bearer demo-viewer)");
    println!("  Stream: {h}://{addr}/api/events        (SSE)  {w}://{addr}/api/stream (WebSocket)");
    println!("  Tokens: {}", DEMO_TOKENS.iter().map(|(r, t)| format!("{t} ({})", r.as_str())).collect::<Vec<_>>().join(", "));
    println!(
        "  SIP:    sip:EXTENSION@{} (UDP/TCP; SUBSCRIBE presence or dialog, PUBLISH), digest {} / {}",
        serving.sip.unwrap_or(cfg.sip.listen), DEMO_SIP_ACCOUNT.0, DEMO_SIP_ACCOUNT.1
    );
    if let (Some(tls), Some(cert)) = (serving.sip_tls, &cfg.sip.tls_cert_file) {
        println!("  SIPS:   sip:EXTENSION@{tls};transport=tls (TLS, same account), self-signed certificate {}", cert.display());
        println!("          SHA-256 {}", fingerprint(cert).unwrap_or_else(|| "?".into()));
    }
    println!("  Data:   {}", cfg.data_dir.display());
}

fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    std::fs::write(path, text)
}
