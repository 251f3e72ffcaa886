//! The built-in demo: a company of a few hundred people (Swedish and Norwegian names) and a
//! looping scenario of calls, meetings, lunches and Teams changes, played through the real
//! replay provider. `presence-hub` with no arguments runs it on 127.0.0.1:8080.

use std::path::Path;

use crate::config::Config;
use presence_providers::replay::ReplayConfig;
use presence_providers::ProviderConfig;

/// The demo directory (CSV).
pub const DEMO_CSV: &str = include_str!("../fixtures/directory/demo.csv");
/// The demo scenario (JSON Lines).
pub const DEMO_SCENARIO: &str = include_str!("../fixtures/scenarios/demo.jsonl");
/// The demo's documented tokens, by role.
pub const DEMO_TOKENS: [(&str, &str); 3] = [("viewer", "demo-viewer"), ("operator", "demo-operator"), ("admin", "demo-admin")];

/// The demo configuration: writes the scenario into the data directory and plays it in a loop.
pub fn config(mut base: Config) -> std::io::Result<Config> {
    std::fs::create_dir_all(&base.data_dir)?;
    let scenario = base.data_dir.join("demo-scenario.jsonl");
    write_if_changed(&scenario, DEMO_SCENARIO)?;
    base.providers = vec![ProviderConfig::Replay(ReplayConfig { name: "demo-replay".into(), file: scenario, repeat: true, speed: 1.0 })];
    Ok(base)
}

fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    std::fs::write(path, text)
}
