//! `presence-hub login graph` end to end: the real binary signs a Teams service account in
//! with the device-code flow against the Graph simulator (the test approves the code as the
//! person signing in would), stores the refresh token under the provider's cursor, and a hub
//! started afterwards with no `refresh_token` in its config uses it; `--check` reports each
//! account's token; a declined, an expired and a slowed-down sign-in end as they should.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;
use presence_hub::store::Store;
use presence_simulators::graph::{GraphSim, GraphSimConfig};

const SVC1: &str = "svc1@sim.example";
const SVC2: &str = "svc2@sim.example";
const SCOPE: &str = "https://graph.microsoft.com/Presence.Read.All offline_access";

/// The `graph_presence` provider against `sim`, with `accounts` (name, configured refresh token).
fn provider_block(sim: &GraphSim, accounts: &[(&str, Option<&str>)]) -> String {
    let mut s = format!(
        "type = \"graph_presence\"\nname = \"teams\"\ntenant_id = \"sim-tenant\"\nclient_id = \"sim-client\"\nclient_secret = \"sim-secret\"\ntoken_url = \"{}\"\ngraph_url = \"{}\"\nbatch_ms = 20\n",
        sim.token_url(),
        sim.graph_url()
    );
    for (name, token) in accounts {
        s.push_str(&format!("[[service_accounts]]\nname = \"{name}\"\n"));
        if let Some(t) = token {
            s.push_str(&format!("refresh_token = \"{t}\"\n"));
        }
    }
    s
}

/// A config file for the binary: `data_dir` and the provider. Returns its path.
fn config_file(dir: &Path, block: &str) -> PathBuf {
    let path = dir.join("hub.toml");
    let providers: String = block.lines().map(|l| if l == "[[service_accounts]]" { "[[providers.service_accounts]]\n".to_string() } else { format!("{l}\n") }).collect();
    std::fs::write(&path, format!("data_dir = {:?}\n\n[[providers]]\n{providers}", dir.join("data").display().to_string())).unwrap();
    path
}

fn hub(args: &[&str], config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_presence-hub"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start presence-hub")
}

/// A running `login graph --account`: its stdout lines arrive on a channel.
struct Login {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Login {
    fn start(config: &Path, account: &str) -> Login {
        let mut child = hub(&["login", "graph", "--account", account], config);
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Login { child, lines, seen: Vec::new() }
    }

    /// The user code it printed.
    fn user_code(&mut self) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let Ok(line) = self.lines.recv_timeout(until.saturating_duration_since(Instant::now())) else {
                let err = self.stderr();
                panic!("no code printed; so far: {:?}, stderr: {err}", self.seen);
            };
            self.seen.push(line.clone());
            if let Some(code) = line.trim().strip_prefix("code: ") {
                return code.to_string();
            }
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = self.child.kill();
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Waits for the exit: its status, all stdout and stderr.
    fn finish(mut self, within: Duration) -> (ExitStatus, String, String) {
        let until = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("login did not end within {within:?}; stdout: {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.seen.push(l);
        }
        (status, self.seen.join("\n"), err)
    }
}

fn run(args: &[&str], config: &Path) -> (ExitStatus, String, String) {
    let out = hub(args, config).wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn stored(data: &Path, account: &str) -> Option<String> {
    Store::open(data).unwrap().cursor("teams", &format!("refresh:{account}")).unwrap().filter(|t| !t.is_empty())
}

fn seeded_sim(cfg: GraphSimConfig) -> GraphSim {
    let sim = GraphSim::start(cfg).unwrap();
    let ids = demo_column("entra_id");
    sim.seed(&ids.iter().filter(|i| i.len() == 36).map(|i| (i.as_str(), "Available", "Available")).collect::<Vec<_>>());
    sim
}

/// With no refresh token configured, the hub's Teams feed is down and says to log in;
/// check-config says so too. `login graph` signs the account in (the test approves the code);
/// the token is in the store under the provider's cursor, never on the terminal; the hub
/// started afterwards redeems it for the subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_stores_the_token_the_provider_then_uses() {
    let sim = seeded_sim(GraphSimConfig::default());
    let dir = temp_dir("login-graph");
    let block = provider_block(&sim, &[(SVC1, None)]);
    let file = config_file(&dir, &block);
    let data = dir.join("data");
    let mk_cfg = || {
        let mut cfg = test_config(data.clone());
        cfg.providers = vec![toml::from_str(&block).unwrap()];
        cfg.validate().unwrap();
        cfg
    };

    let (status, out, err) = run(&["check-config"], &file);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains(&format!("run `presence-hub login graph --account {SVC1}`")), "{out}");

    // Before the login: the feed is down and health names the command.
    let s = start(mk_cfg());
    wait_for("the provider's error", Duration::from_secs(10), async || provider_named(&s, "teams").await["last_error"].as_str().is_some_and(|e| e.contains("login graph --account"))).await;
    let p = provider_named(&s, "teams").await;
    assert_eq!(p["up"], false, "{p}");
    assert_eq!(sim.refresh_grants(SVC1), 0);
    s.stop();

    let mut login = Login::start(&file, SVC1);
    let code = login.user_code();
    assert!(sim.approve_device(&code, SVC1), "the printed code is the simulator's");
    let (status, out, err) = login.finish(Duration::from_secs(20));
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("Signed in"), "{out}");
    let views = sim.device_codes();
    assert_eq!((views.len(), views[0].scope.as_str(), views[0].stage), (1, SCOPE, "redeemed"));
    let rt = stored(&data, SVC1).expect("a refresh token under refresh:{account}");
    assert_eq!(sim.account_of_refresh_token(&rt).as_deref(), Some(SVC1));
    assert!(!out.contains(&rt) && !err.contains(&rt), "the token is never printed");
    {
        let (status, out, _) = run(&["check-config"], &file);
        assert!(status.success() && out.contains("refresh token stored in") && !out.contains("run `presence-hub login"), "{out}");
    }

    // A hub started now, still without refresh_token in its config, subscribes with it.
    let s = start(mk_cfg());
    wait_for("an active Graph subscription", Duration::from_secs(15), async || provider_named(&s, "teams").await["details"]["subscriptions"][0]["state"] == "active").await;
    assert!(sim.refresh_grants(SVC1) >= 1);
    assert_eq!(sim.subscriptions().first().map(|s| s.1.clone()).as_deref(), Some(SVC1));
    assert_eq!(provider_named(&s, "teams").await["up"], true);
    s.stop();
}

/// `--check`: one line per account — ok (a rotated token is stored), FAILED with Microsoft's
/// text for a refused token, FAILED naming the login for an account with none — and a non-zero
/// exit; once only good accounts are left, exit 0 from the stored tokens.
#[test]
fn check_reports_each_account() {
    let sim = seeded_sim(GraphSimConfig::default());
    let dir = temp_dir("login-check");
    // The simulator's first token of svc1 is rt-svc1-0.
    let file = config_file(&dir, &provider_block(&sim, &[(SVC1, Some("rt-svc1-0")), (SVC2, Some("rt-long-revoked")), ("svc3@sim.example", None)]));
    let (status, out, err) = run(&["login", "graph", "--check"], &file);
    assert!(!status.success(), "{out}");
    let line = |who: &str| out.lines().find(|l| l.starts_with(&format!("teams / {who}:"))).unwrap_or_else(|| panic!("no line for {who}: {out}")).to_string();
    assert_eq!(line(SVC1), format!("teams / {SVC1}: ok (configured token; rotated, the new one is stored)"));
    assert!(line(SVC2).contains("FAILED") && line(SVC2).contains("invalid_grant: AADSTS70008"), "{}", line(SVC2));
    assert!(line("svc3@sim.example").contains("FAILED") && line("svc3@sim.example").contains("presence-hub login graph --account svc3@sim.example"));
    assert!(err.contains("2 of 3 service accounts failed"), "{err}");
    assert_eq!(sim.refresh_grants(SVC1), 1);
    let rotated = stored(&dir.join("data"), SVC1).expect("the rotated token is stored");
    assert_ne!(rotated, "rt-svc1-0");
    assert!(!out.contains(&rotated));

    // Only svc1 left: ok from the stored token, exit 0.
    let file = config_file(&dir, &provider_block(&sim, &[(SVC1, None)]));
    let (status, out, err) = run(&["login", "graph", "--check"], &file);
    assert!(status.success(), "{out}\n{err}");
    assert_eq!(out.trim(), format!("teams / {SVC1}: ok (stored token; rotated, the new one is stored)"));
    assert_eq!(sim.refresh_grants(SVC1), 2);
}

/// The sign-in is declined, or nobody signs in before the code expires: a non-zero exit that
/// says so, nothing stored. A `slow_down` makes the next poll come 5 s later.
#[test]
fn declined_expired_and_slow_down() {
    let sim = seeded_sim(GraphSimConfig::default());
    let dir = temp_dir("login-declined");
    let file = config_file(&dir, &provider_block(&sim, &[(SVC1, None)]));
    let mut login = Login::start(&file, SVC1);
    let code = login.user_code();
    assert!(sim.decline_device(&code));
    let (status, out, err) = login.finish(Duration::from_secs(20));
    assert!(!status.success(), "{out}");
    assert!(err.contains("declined") && err.contains("authorization_declined"), "{err}");
    assert_eq!(stored(&dir.join("data"), SVC1), None);

    let short = seeded_sim(GraphSimConfig { device_expires_in_secs: 3, ..GraphSimConfig::default() });
    let dir = temp_dir("login-expired");
    let file = config_file(&dir, &provider_block(&short, &[(SVC1, None)]));
    let mut login = Login::start(&file, SVC1);
    let _ = login.user_code();
    let (status, out, err) = login.finish(Duration::from_secs(30));
    assert!(!status.success(), "{out}");
    assert!(err.contains("expired"), "{err}");
    assert_eq!(stored(&dir.join("data"), SVC1), None);
    assert!(short.device_codes()[0].poll_gaps.len() >= 2, "it polled until the code expired");

    let dir = temp_dir("login-slow");
    let file = config_file(&dir, &provider_block(&sim, &[(SVC1, None)]));
    let mut login = Login::start(&file, SVC1);
    let code = login.user_code();
    sim.slow_down_next(&code);
    assert!(sim.approve_device(&code, SVC1));
    let (status, out, err) = login.finish(Duration::from_secs(30));
    assert!(status.success(), "{out}\n{err}");
    let view = sim.device_codes().into_iter().find(|v| v.user_code == code).unwrap();
    assert_eq!(view.poll_gaps.len(), 1, "slow_down, then the tokens: {view:?}");
    assert!(view.poll_gaps[0] >= Duration::from_millis(5900), "the poll after slow_down waited interval + 5 s: {view:?}");
    assert!(stored(&dir.join("data"), SVC1).is_some());
}
