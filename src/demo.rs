//! The built-in demo: a company of a few hundred people (Swedish and Norwegian names) and a
//! simulator of each peer the demo's providers talk to: Teams presence comes from the Graph
//! simulator through the real Graph provider (polling, subscriptions, change notifications);
//! meetings come from the calendar simulator through the calendar provider (Graph
//! getSchedule); PBX and mobile calls and lunches come from a looping scenario through the replay
//! provider. `presence-hub` with no arguments runs it on 127.0.0.1:8080.

use std::path::Path;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use presence_providers::calendar::runtime::{Backend, CalendarConfig};
use presence_providers::graph::{GraphPresenceConfig, ServiceAccount};
use presence_providers::replay::ReplayConfig;
use presence_providers::ProviderConfig;
use presence_simulators::calendar::{CalendarSim, CalendarSimConfig};
use presence_simulators::graph::{GraphSim, GraphSimConfig};

/// The demo directory (CSV).
pub const DEMO_CSV: &str = include_str!("../fixtures/directory/demo.csv");
/// The demo scenario (JSON Lines).
pub const DEMO_SCENARIO: &str = include_str!("../fixtures/scenarios/demo.jsonl");
/// The demo's documented tokens, by role.
pub const DEMO_TOKENS: [(&str, &str); 3] = [("viewer", "demo-viewer"), ("operator", "demo-operator"), ("admin", "demo-admin")];

/// The simulators the demo's providers talk to; they stop when this is dropped.
pub struct DemoPeers {
    /// Microsoft Graph (Teams presence) and its token endpoint.
    pub graph: Arc<GraphSim>,
    /// Calendars (Graph getSchedule, EWS, Google freeBusy).
    pub calendar: Arc<CalendarSim>,
}

/// One column of the demo company's CSV (which has no quoted cells).
fn column(name: &str) -> Vec<String> {
    let mut lines = DEMO_CSV.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let Some(col) = header.iter().position(|h| h.trim() == name) else { return Vec::new() };
    lines.filter_map(|l| l.split(',').nth(col)).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The Entra object ids of the demo company.
pub fn entra_ids() -> Vec<String> {
    column("entra_id")
}

/// The mailboxes of the demo company.
pub fn mailboxes() -> Vec<String> {
    column("email")
}

/// The demo configuration: starts the simulators on loopback, and sets up the providers that
/// use them — Teams through the real Graph provider (polling + change notifications),
/// calendars through the real calendar provider (Graph getSchedule), and a looping scenario
/// (PBX, mobile, manual) through the replay provider.
pub fn start(mut base: Config) -> std::io::Result<(Config, DemoPeers)> {
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
        tenant_id: sim_cfg.tenant.clone(),
        client_id: sim_cfg.client_id.clone(),
        client_secret: sim_cfg.client_secret.clone(),
        authority: graph.url(),
        token_url: None,
        graph_url: graph.graph_url(),
        notifications: true,
        service_accounts: sim_cfg
            .accounts
            .iter()
            .map(|(name, token)| ServiceAccount { name: name.clone(), refresh_token: token.clone() })
            .collect(),
        client_state: None,
        subscription_minutes: 55,
        renew_before_secs: 600,
        consistency_poll_secs: 900,
        fallback_poll_secs: 60,
        batch_ms: 50,
        include_resource_data: false,
        encryption_certificate_file: None,
        encryption_key_file: None,
        encryption_certificate_id: None,
    };
    let cal_cfg = CalendarSimConfig::default();
    let calendar = Arc::new(CalendarSim::start(cal_cfg.clone())?);
    let boxes = mailboxes();
    calendar.seed_demo(&boxes, 21);
    calendar.drive_demo(boxes, Duration::from_secs(4), 22)?;
    let calendars = CalendarConfig {
        name: "calendar".into(),
        backend: Backend::Graph,
        tenant_id: Some(cal_cfg.tenant.clone()),
        client_id: Some(cal_cfg.client_id.clone()),
        client_secret: Some(cal_cfg.client_secret.clone()),
        authority: calendar.url(),
        token_url: Some(calendar.token_url()),
        graph_url: calendar.graph_url(),
        ews_url: None,
        username: None,
        password: None,
        google_url: String::new(),
        refresh_token: None,
        poll_interval_secs: 60,
        window_hours: 24,
        interval_minutes: 15,
        keep_details: true,
        keywords: Vec::new(),
    };
    base.providers = vec![
        ProviderConfig::GraphPresence(teams),
        ProviderConfig::Calendar(calendars),
        ProviderConfig::Replay(ReplayConfig { name: "demo-replay".into(), file: scenario, repeat: true, speed: 1.0 }),
    ];
    Ok((base, DemoPeers { graph, calendar }))
}

fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    std::fs::write(path, text)
}
