//! The `presence-hub` binary: parses the command line, sets up logging and calls the library.
//!
//! `presence-hub` with no arguments runs the built-in demo on 127.0.0.1:8080 (with the `demo`
//! feature, on by default). A production build (`--no-default-features`) has no demo and needs
//! `--config FILE`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use presence_hub::config::{Config, LogFormat};

/// mimalloc instead of glibc malloc: the hub holds millions of small, long-lived allocations
/// (people, slots, presence JSON) made from several threads, and glibc's per-thread arenas
/// leave them fragmented — measured with `presence-hub bench --users 100000`, see
/// BENCHMARKS.md for the figures with each allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "demo")]
use presence_hub::cli::demo;
use presence_hub::cli::{bench, bench_cluster, bench_directory, bench_sip, bench_ws, login};
use presence_hub::{run, store, tokens, RunOptions};

/// A presence hub for switchboards: merges Teams, Skype for Business, calendars, PBX, mobile
/// and manual absences per person and pushes the result to consoles and directories.
#[derive(Parser, Debug)]
#[command(name = "presence-hub", version, about)]
struct Cli {
    /// Configuration file (TOML).
    #[cfg_attr(feature = "demo", doc = "Without one, the built-in demo runs.")]
    #[cfg_attr(not(feature = "demo"), doc = "Needed to run the hub: this build has no built-in demo.")]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Data directory for the embedded store (default ./data).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Loads and validates the configuration (and provider files) without starting anything.
    CheckConfig {
        /// Also connect each directory source (bind, token) and report what it has — how many
        /// people, the first three names — without changing anything.
        #[arg(long)]
        connect: bool,
    },
    /// Imports people from a CSV or JSON file into the data directory's store.
    ImportDirectory {
        /// The file (.csv or .json).
        file: PathBuf,
    },
    /// Prints the SHA-256 of a token, for the `[[tokens]]` section of the config.
    HashToken {
        /// The token (a long random string).
        token: String,
    },
    /// Drives synthetic signals through the real path and reports throughput, latency and memory.
    Bench(bench::BenchArgs),
    /// A SIP presence workload (PUBLISH in, NOTIFY out to watchers) against a presence server:
    /// the hub's own or Kamailio (see scripts/bench-sip.sh).
    BenchSip(bench_sip::BenchSipArgs),
    /// What directory sync costs the hub: merge, build, an unchanged and a churned version,
    /// applied to a running hub.
    BenchDirectory(bench_directory::BenchDirectoryArgs),
    /// A load driver against running hubs (one node, or a cluster's nodes): pushes signals over
    /// the API and times their frames on every watched node's stream (see
    /// scripts/bench-cluster.sh).
    BenchCluster(bench_cluster::BenchClusterArgs),
    /// Many WebSocket and SSE clients watching everyone on one running hub: the hub's RSS per
    /// client and the change → client latency (see scripts/bench-ws.sh).
    BenchWs(bench_ws::BenchWsArgs),
    /// Signs a provider's service accounts in and keeps their tokens in the data directory's
    /// store (or checks the tokens kept there).
    Login {
        #[command(subcommand)]
        what: LoginWhat,
    },
}

#[derive(Subcommand, Debug)]
enum LoginWhat {
    /// The Teams (`graph_presence`) service accounts: `--account NAME` signs one in with the
    /// OAuth device-code flow (a code to enter at Microsoft's sign-in page, from any browser)
    /// and stores its refresh token where the provider reads it; `--check` tries every stored
    /// (or configured) token once.
    Graph {
        /// The service account to sign in (its `name` in `[[providers.service_accounts]]`);
        /// with `--check`, check only this one.
        #[arg(long, required_unless_present = "check")]
        account: Option<String>,
        /// The `graph_presence` provider, when two have a service account of that name.
        #[arg(long)]
        provider: Option<String>,
        /// Check the tokens instead: one line per service account, ok or FAILED with
        /// Microsoft's reason; the exit status is non-zero if any failed.
        #[arg(long)]
        check: bool,
    },
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Human => b.init(),
    }
}

fn load_config(cli: &Cli) -> Result<(Config, bool)> {
    let (mut cfg, demo) = match &cli.config {
        Some(p) => (Config::load(p).with_context(|| format!("loading {}", p.display()))?, false),
        None => (Config::default(), true),
    };
    if let Some(l) = cli.listen {
        cfg.listen = l;
    }
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(f) = cli.log_format {
        cfg.log.format = f;
    }
    Ok((cfg, demo))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("presence-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let (cfg, is_demo) = load_config(&cli)?;
    match cli.command {
        Some(Command::HashToken { token }) => {
            println!("{}", tokens::hash_token(&token));
            return Ok(());
        }
        Some(Command::CheckConfig { connect }) => {
            let Some(p) = &cli.config else { anyhow::bail!("check-config needs --config FILE") };
            if let Some(f) = &cfg.directory.import {
                let n = presence_hub::read_directory_file(f, &cfg)?.len();
                println!("directory {}: {n} people", f.display());
            }
            for s in &cfg.directory.sources {
                println!("directory source {} ({}): settings OK", s.name(), s.kind());
            }
            for note in login::check_config_notes(&cfg) {
                println!("{note}");
            }
            if connect {
                let plan = cfg.directory.number_plan.plan();
                let sources = cfg.directory.effective_sources();
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let mut failed = 0;
                for s in &sources {
                    match rt.block_on(presence_hub::sync::probe(s, &plan)) {
                        Ok((n, names, invalid)) => {
                            let more = if invalid > 0 { format!(" ({invalid} records could not become a person)") } else { String::new() };
                            println!("directory source {} ({}): connected, {n} people{more}; first: {}", s.name(), s.kind(), names.join(", "));
                        }
                        Err(e) => {
                            failed += 1;
                            println!("directory source {} ({}): FAILED: {e}", s.name(), s.kind());
                        }
                    }
                }
                if let Some(o) = &cfg.auth.oidc {
                    let s = presence_hub::signin::SignIn::new(o.clone(), cfg.http.public_url.as_deref()).map_err(anyhow::Error::msg)?;
                    match rt.block_on(async { Ok::<_, presence_hub::signin::oidc::OidcError>((s.provider.discovery().await?, s.provider.key_ids().await?)) }) {
                        Ok((d, kids)) => println!(
                            "sign-in ({}): discovered; {} signing keys; sign-out at the provider: {}; redirect URI {}",
                            d.issuer,
                            kids.len(),
                            if d.end_session_endpoint.is_some() { "yes" } else { "no" },
                            s.redirect_uri
                        ),
                        Err(e) => {
                            failed += 1;
                            println!("sign-in ({}): FAILED: {e}", o.issuer);
                        }
                    }
                }
                if failed > 0 {
                    anyhow::bail!("{failed} connection checks failed");
                }
            }
            if let (Some(cert), Some(key)) = (&cfg.http.tls_cert_file, &cfg.http.tls_key_file) {
                presence_hub::tls::server_config(cert, key)?;
                println!("https: {} and {} OK", cert.display(), key.display());
            }
            if cfg.sip.enabled {
                // The validation above loaded the SIP TLS files already.
                if let (Some(listen), Some(cert)) = (cfg.sip.tls_listen, &cfg.sip.tls_cert_file) {
                    let clients = if cfg.sip.tls_client_ca_file.is_some() { ", client certificates required" } else { "" };
                    println!("sip over TLS on {listen}: {} OK{clients}", cert.display());
                }
                let lists = &cfg.sip.lists;
                match (&cfg.directory.import, lists.is_empty()) {
                    (_, true) => {}
                    (Some(f), false) => {
                        let people = presence_hub::read_directory_file(f, &cfg)?;
                        let dir = presence_actors::directory::Directory::build(people, &cfg.directory.number_plan.plan())?;
                        presence_hub::sip_server::lists::Lists::new(lists, &cfg.web.groups, cfg.sip.max_list_members)?.check_members(lists, &dir)?;
                        println!("sip.lists: {} lists, every member in {}", lists.len(), f.display());
                    }
                    (None, false) => println!("sip.lists: {} lists; their members are checked against the directory when the hub starts", lists.len()),
                }
            }
            println!("{}: OK ({} providers, {} tokens)", p.display(), cfg.providers.len(), cfg.tokens.len());
            return Ok(());
        }
        Some(Command::ImportDirectory { file }) => {
            init_logging(cfg.log.format, &cfg.log.level);
            let people = presence_hub::read_directory_file(&file, &cfg)?;
            let st = store::Store::open(&cfg.data_dir)?;
            let changed = presence_hub::save_directory(&st, &people)?;
            println!(
                "{} people from {} {} {}",
                people.len(),
                file.display(),
                if changed { "imported into" } else { "already in" },
                cfg.data_dir.join(store::DB_FILE_NAME).display()
            );
            return Ok(());
        }
        Some(Command::BenchDirectory(args)) => {
            init_logging(cfg.log.format, "warn");
            return bench_directory::run(args);
        }
        Some(Command::Bench(args)) => {
            init_logging(cfg.log.format, "warn");
            return bench::run(args);
        }
        Some(Command::Login { what: LoginWhat::Graph { account, provider, check } }) => {
            if cli.config.is_none() {
                anyhow::bail!("login needs --config FILE (the one the hub runs with: its graph_presence providers and data directory)");
            }
            init_logging(cfg.log.format, "warn");
            return login::graph(&cfg, account.as_deref(), provider.as_deref(), check);
        }
        Some(Command::BenchSip(args)) => {
            init_logging(cfg.log.format, "warn");
            return bench_sip::run(args);
        }
        Some(Command::BenchCluster(args)) => {
            init_logging(cfg.log.format, "warn");
            return bench_cluster::run(args);
        }
        Some(Command::BenchWs(args)) => {
            init_logging(cfg.log.format, "warn");
            return bench_ws::run(args);
        }
        None => {}
    }
    if is_demo && !cfg!(feature = "demo") {
        anyhow::bail!("a configuration file is needed: presence-hub --config FILE (this build has no built-in demo: it was built without the `demo` feature)");
    }
    init_logging(cfg.log.format, &cfg.log.level);
    // Bound before the demo starts: its simulators post webhooks to the hub's address (the
    // kernel queues them until the hub serves).
    let listener = std::net::TcpListener::bind(cfg.listen).with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    #[cfg(feature = "demo")]
    let (cfg, opts, _peers) = if is_demo {
        let hub_url = cfg.http.base_url(addr);
        let (c, p) = demo::start(cfg, &hub_url).context("starting the demo's simulators")?;
        let mut opts = demo::run_options();
        let banner = c.clone();
        opts.on_ready = Some(presence_hub::OnReady(std::sync::Arc::new(move |serving| demo::print_banner(&banner, serving))));
        (c, opts, Some(p))
    } else {
        (cfg, RunOptions { config_file: cli.config.clone(), ..RunOptions::default() }, None)
    };
    #[cfg(not(feature = "demo"))]
    let opts = RunOptions { config_file: cli.config.clone(), ..RunOptions::default() };
    if !is_demo {
        let h = cfg.http.scheme();
        println!("presence-hub listening on {h}://{addr}/");
        if cfg.web.enabled {
            println!("  Web directory and attendant console: {h}://{addr}/");
        }
    }
    let sys = actix_web::rt::System::new();
    sys.block_on(run(cfg, opts, listener, shutdown_signal()))?;
    Ok(())
}
