//! Test peers for the SIP side of the hub: a real Kamailio presence server and sipp.
//!
//! * [`Kamailio::start`] runs Debian's Kamailio 5.6 on a free loopback port (UDP and TCP on the
//!   same port) with `presence`, `presence_xml` and `presence_dialoginfo` over a throw-away
//!   SQLite DB (config: `fixtures/sip/kamailio/presence.cfg.in`). It answers OPTIONS, handles
//!   PUBLISH and SUBSCRIBE (Event: presence and Event: dialog) and NOTIFYs each subscriber at
//!   its Contact. Dropping it stops the whole process group.
//! * [`Sipp`] runs one of the scenarios in `fixtures/sip/sipp/` (or any scenario file) against
//!   an address, in the foreground ([`Sipp::run`]) or the background ([`Sipp::spawn`]), and
//!   returns a [`SippRun`] with the exit status, stdout/stderr and sipp's message, log and error
//!   files for assertions.
//!
//! Needs `apt-get install kamailio kamailio-presence-modules kamailio-sqlite-modules sip-tester
//! sqlite3` (`./test.sh` does it); without them the tests fail and say so - they never skip.
//! `KAMAILIO_DEBUG=3` runs Kamailio at debug level 3 (its log: [`Kamailio::log`]).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const INSTALL_HINT: &str = "the SIP peer tests need Debian's Kamailio and sipp: apt-get install \
     kamailio kamailio-presence-modules kamailio-sqlite-modules kamailio-tls-modules sip-tester sqlite3";

/// The address everything binds to.
pub const LOOPBACK: &str = "127.0.0.1";

const START_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `fixtures/sip/sipp/<name>` (the directory of the sipp scenarios).
pub fn scenario_path(name: &str) -> PathBuf {
    manifest_dir().join("fixtures/sip/sipp").join(name)
}

/// Looks for `name` on `PATH`, then in the given directories (`/usr/sbin` is not on a
/// non-root user's `PATH` on Debian, and that is where `kamailio` lives).
fn find_binary(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require_binary(name: &str, package: &str) -> PathBuf {
    find_binary(name, &["/usr/sbin", "/usr/bin", "/sbin"])
        .unwrap_or_else(|| panic!("`{name}` not found (Debian package {package}); {INSTALL_HINT}"))
}

/// Last `n` bytes (roughly) of a text file, for panic messages.
pub fn file_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// A port that is free on 127.0.0.1 for both UDP and TCP right now.
///
/// Taken from 20000..32000, below Linux's ephemeral range (32768..60999), so the sockets other
/// tests open with port 0 cannot take it between this check and the bind by Kamailio/sipp; a
/// per-process start and a counter keep concurrent tests (and test binaries) apart.
pub fn free_udp_tcp_port() -> u16 {
    const LOW: u16 = 20000;
    const SPAN: u16 = 12000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = (std::process::id() % SPAN as u32) as u16;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(7, Ordering::Relaxed);
        let port = LOW + (base.wrapping_add(n)) % SPAN;
        let udp = UdpSocket::bind((LOOPBACK, port));
        let tcp = TcpListener::bind((LOOPBACK, port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
    panic!("no free UDP+TCP port on {LOOPBACK} in {LOW}..{}", LOW + SPAN);
}

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Sends one OPTIONS over UDP to `addr` and waits up to `wait` for its 200.
pub fn options_ok(addr: SocketAddr, wait: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind((LOOPBACK, 0)) else { return false };
    let local = sock.local_addr().unwrap();
    let call_id = unique("options");
    let msg = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}\r\n\
         From: <sip:probe@{local}>;tag=probe\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    if sock.send_to(msg.as_bytes(), addr).is_err() {
        return false;
    }
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let _ = sock.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(POLL)));
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.starts_with("SIP/2.0 200") && text.contains(&call_id) {
                    return true;
                }
            }
            // ECONNREFUSED (ICMP port unreachable: nothing bound yet) or a timeout.
            Err(_) => return false,
        }
    }
    false
}

/// Memory and log settings for [`Kamailio::start_with`].
#[derive(Clone, Debug)]
pub struct KamailioOptions {
    /// Shared memory (`-m`, MB): subscriptions, presentities, transactions. Kamailio's default
    /// 64 MB runs out under load ("out of mem" in tm, PUBLISHes answered with errors); 256 MB
    /// is plenty for functional tests, a load test (thousands of PUBLISH/s) wants 1024.
    pub shm_mb: u32,
    /// Private memory per process (`-M`, MB).
    pub pkg_mb: u32,
    /// Kamailio's `debug=` level (2 info, 3 debug). Default: `$KAMAILIO_DEBUG`, else 2.
    pub debug: Option<u8>,
    /// Listen on this port (a restart on the same address); default: a free one.
    pub port: Option<u16>,
    /// Also SIP over TLS (its `tls` module) on a port of its own ([`Kamailio::tls_addr`]).
    pub tls: Option<KamailioTls>,
}

impl Default for KamailioOptions {
    fn default() -> Self {
        KamailioOptions { shm_mb: 256, pkg_mb: 16, debug: None, port: None, tls: None }
    }
}

/// Kamailio's TLS listener (Debian package `kamailio-tls-modules`): its certificate, and
/// whether clients must present one from `ca_file` (`verify_certificate` and
/// `require_certificate` of the `[server:default]` profile). `tcp_accept_aliases` is on, so a
/// client whose Via carries `alias` (RFC 5923) gets its NOTIFYs over its own connection.
#[derive(Clone, Debug)]
pub struct KamailioTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    pub require_client_certificate: bool,
    /// The TLS port (a restart on the same address); default: a free one.
    pub port: Option<u16>,
}

impl KamailioTls {
    /// `fixtures/tls/sip/<cert>-cert.pem` and its key, the test CA, client certificates required.
    pub fn fixture(cert: &str) -> KamailioTls {
        let dir = manifest_dir().join("fixtures/tls/sip");
        KamailioTls {
            cert_file: dir.join(format!("{cert}-cert.pem")),
            key_file: dir.join(format!("{cert}-key.pem")),
            ca_file: dir.join("ca-cert.pem"),
            require_client_certificate: true,
            port: None,
        }
    }
}

/// A running Kamailio presence server on 127.0.0.1 (UDP and TCP on one port).
pub struct Kamailio {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Kamailio {
    /// Starts Kamailio with [`KamailioOptions::default`]; see [`Kamailio::start_with`].
    pub fn start() -> Kamailio {
        Self::start_with(KamailioOptions::default())
    }

    /// Creates the SQLite DB and config in a temp dir, starts `kamailio -DD -E -m .. -M ..` in
    /// its own process group with stderr to `kamailio-<attempt>.log` ([`Kamailio::log`]), and
    /// waits until it answers OPTIONS over UDP (about 0.1 s). Panics (with the log's tail) if it does not come up; retries on another port if the
    /// port was taken meanwhile.
    pub fn start_with(opts: KamailioOptions) -> Kamailio {
        let kamailio = require_binary("kamailio", "kamailio");
        let sqlite3 = require_binary("sqlite3", "sqlite3");
        // sipp is not needed by Kamailio itself, but every user of this module needs it:
        // fail here with the full install hint rather than at the first scenario.
        require_binary("sipp", "sip-tester");
        let modules = modules_dir(&kamailio);
        for (m, pkg) in [
            ("presence.so", "kamailio-presence-modules"),
            ("presence_xml.so", "kamailio-presence-modules"),
            ("presence_dialoginfo.so", "kamailio-presence-modules"),
            ("db_sqlite.so", "kamailio-sqlite-modules"),
        ] {
            assert!(
                modules.join(m).is_file(),
                "Kamailio module {m} not found in {} (Debian package {pkg}); {INSTALL_HINT}",
                modules.display()
            );
        }
        let sql_dir = Path::new("/usr/share/kamailio/db_sqlite");
        let schema: Vec<PathBuf> =
            ["standard-create.sql", "presence-create.sql"].iter().map(|f| sql_dir.join(f)).collect();
        for f in &schema {
            assert!(
                f.is_file(),
                "{} not found (Debian package kamailio-sqlite-modules); {INSTALL_HINT}",
                f.display()
            );
        }

        let dir = super::temp_dir("kamailio");
        let db = dir.join("presence.db");
        let mut sql = String::new();
        for f in &schema {
            sql.push_str(&std::fs::read_to_string(f).unwrap());
            sql.push('\n');
        }
        std::fs::write(dir.join("schema.sql"), &sql).unwrap();
        let out = Command::new(&sqlite3)
            .arg(&db)
            .stdin(File::open(dir.join("schema.sql")).unwrap())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", sqlite3.display()));
        assert!(
            out.status.success(),
            "creating the Kamailio DB with sqlite3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let template =
            std::fs::read_to_string(manifest_dir().join("fixtures/sip/kamailio/presence.cfg.in")).unwrap();
        let debug = opts
            .debug
            .or_else(|| std::env::var("KAMAILIO_DEBUG").ok().and_then(|v| v.parse().ok()))
            .unwrap_or(2);
        if opts.tls.is_some() {
            assert!(
                modules.join("tls.so").is_file(),
                "Kamailio module tls.so not found in {} (Debian package kamailio-tls-modules); {INSTALL_HINT}",
                modules.display()
            );
        }
        let mut last_err = String::new();
        for attempt in 0..3 {
            let port = opts.port.unwrap_or_else(free_udp_tcp_port);
            let mut cfg_text = template
                .replace("@DB_PATH@", db.to_str().expect("temp dir path is UTF-8"))
                .replace("@PORT@", &port.to_string())
                .replace("@ADDR@", LOOPBACK)
                .replacen("debug=2 ", &format!("debug={debug} "), 1);
            let mut tls_addr = None;
            if let Some(t) = &opts.tls {
                let tls_port = t.port.unwrap_or_else(free_udp_tcp_port);
                let yes = if t.require_client_certificate { "yes" } else { "no" };
                let profile = format!(
                    "[server:default]\nmethod = TLSv1.2+\nverify_certificate = {yes}\nrequire_certificate = {yes}\n\
                     private_key = {}\ncertificate = {}\nca_list = {}\n\n[client:default]\nverify_certificate = no\nrequire_certificate = no\n",
                    t.key_file.display(),
                    t.cert_file.display(),
                    t.ca_file.display()
                );
                std::fs::write(dir.join("tls.cfg"), profile).unwrap();
                let listen = format!("listen=tcp:{LOOPBACK}:{port}\n");
                assert!(cfg_text.contains(&listen), "the template's TCP listen line");
                cfg_text = cfg_text.replacen(
                    &listen,
                    &format!("{listen}listen=tls:{LOOPBACK}:{tls_port}\nenable_tls=yes\ntcp_accept_aliases=yes\n"),
                    1,
                );
                cfg_text = cfg_text.replacen(
                    "loadmodule \"tm.so\"\n",
                    &format!("loadmodule \"tls.so\"\nmodparam(\"tls\", \"config\", \"{}\")\nloadmodule \"tm.so\"\n", dir.join("tls.cfg").display()),
                    1,
                );
                tls_addr = Some(format!("{LOOPBACK}:{tls_port}").parse().unwrap());
            }
            let cfg = dir.join("presence.cfg");
            std::fs::write(&cfg, cfg_text).unwrap();
            let log_path = dir.join(format!("kamailio-{attempt}.log"));
            let log = File::create(&log_path).unwrap();
            let child = Command::new(&kamailio)
                .arg("-f")
                .arg(&cfg)
                .args(["-DD", "-E"])
                .args(["-m", &opts.shm_mb.to_string(), "-M", &opts.pkg_mb.to_string()])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0) // its own group: Drop stops the main process and all children
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", kamailio.display()));
            let addr: SocketAddr = format!("{LOOPBACK}:{port}").parse().unwrap();
            let mut k = Kamailio { addr, tls_addr, dir: dir.clone(), log_path, child: Some(child) };
            let t0 = Instant::now();
            loop {
                if let Some(st) = k.child.as_mut().unwrap().try_wait().unwrap() {
                    k.child = None;
                    last_err =
                        format!("kamailio exited during start-up ({st}):\n{}", file_tail(&k.log_path, 3000));
                    break;
                }
                if options_ok(addr, Duration::from_millis(200)) {
                    return k;
                }
                if t0.elapsed() > START_TIMEOUT {
                    panic!(
                        "kamailio on {addr} did not answer OPTIONS within {START_TIMEOUT:?}; log:\n{}",
                        file_tail(&k.log_path, 3000)
                    );
                }
                std::thread::sleep(POLL);
            }
            // Most likely the port was taken between the check and Kamailio's bind: try another.
            eprintln!("kamailio start attempt {attempt} failed: {last_err}");
        }
        panic!("{last_err}");
    }

    /// UDP and TCP address (the same port for both).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS address, when started with [`KamailioOptions::tls`].
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The domain used in presentity URIs in the tests: the IP address, `127.0.0.1`.
    pub fn domain(&self) -> String {
        self.addr.ip().to_string()
    }

    /// Kamailio's log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The temp dir with the config, the DB and the log (removed on drop unless panicking).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether Kamailio answers an OPTIONS over UDP within `wait`.
    pub fn ping(&self, wait: Duration) -> bool {
        options_ok(self.addr, wait)
    }

    /// Stops Kamailio (SIGTERM to its process group, SIGKILL after 3 s).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_group(child);
        }
    }
}

/// Stops a peer started as the leader of its own process group: SIGTERM to the group, SIGKILL
/// after 3 s (children that outlive the main process, or a main process that ignored SIGTERM).
pub fn stop_group(mut child: Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: plain syscalls on the process group of a child the test started.
    unsafe { libc::killpg(pgid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(POLL);
    }
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
    let _ = child.wait();
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("kamailio files kept in {} (log: {})", self.dir.display(), self.log_path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The module directory compiled into the binary ("Default paths to modules:" in `kamailio -I`).
fn modules_dir(kamailio: &Path) -> PathBuf {
    let out = Command::new(kamailio)
        .arg("-I")
        .output()
        .unwrap_or_else(|e| panic!("running {} -I: {e}", kamailio.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Default paths to modules:"))
        .map(|p| PathBuf::from(p.trim().split(':').next().unwrap_or("").trim()))
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/kamailio/modules"))
}

/// Transport for sipp (`-t u1` / `-t t1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One sipp run to make: a scenario, injection-file rows and extra arguments.
///
/// sipp always gets `-i 127.0.0.1 -p <free port> -t u1|t1 -m <rows or 1> -nostdin
/// -timeout <t> -timeout_error -recv_timeout <t> -trace_msg -trace_logs -trace_err` with the
/// files in a per-run temp dir (the rows go to `-inf inject.csv`), and
/// `-default_behaviors all,-bye` (no BYE for an aborted SUBSCRIBE/PUBLISH "call"). sipp needs
/// a port of its own: its default is 5060, also for `-p 0`.
#[derive(Clone, Debug)]
pub struct Sipp {
    scenario: PathBuf,
    rows: Vec<Vec<String>>,
    args: Vec<String>,
    transport: Transport,
    timeout: Duration,
    calls: Option<usize>,
}

impl Sipp {
    /// A scenario by file name in `fixtures/sip/sipp/`, or by path.
    pub fn new(scenario: impl AsRef<Path>) -> Sipp {
        let s = scenario.as_ref();
        let scenario = if s.is_absolute() || s.components().count() > 1 {
            s.to_path_buf()
        } else {
            scenario_path(&s.to_string_lossy())
        };
        assert!(scenario.is_file(), "sipp scenario {} not found", scenario.display());
        Sipp {
            scenario,
            rows: Vec::new(),
            args: Vec::new(),
            transport: Transport::Udp,
            timeout: Duration::from_secs(8),
            calls: None,
        }
    }

    /// `publish_pidf.xml`: PUBLISH PIDF/RPID for `user@domain` (basic open/closed, an RPID
    /// activity such as on-the-phone/away/busy, a note). `etag`: None for a new publication,
    /// Some(previous SIP-ETag) to modify it (see [`SippRun::etag`]).
    pub fn publish_pidf(
        user: &str,
        domain: &str,
        basic: &str,
        activity: &str,
        note: &str,
        etag: Option<&str>,
    ) -> Sipp {
        Sipp::new("publish_pidf.xml").row(&[user, domain, basic, activity, note, etag.unwrap_or(""), "3600"])
    }

    /// `publish_dialog.xml`: PUBLISH dialog-info (Event: dialog) for extension `user@domain`:
    /// one dialog `dialog_id` in `state` (trying/proceeding/early/confirmed/terminated), the
    /// document's `version`, direction recipient, remote party `remote` (a URI).
    pub fn publish_dialog(
        user: &str,
        domain: &str,
        state: &str,
        version: u32,
        dialog_id: &str,
        remote: &str,
        etag: Option<&str>,
    ) -> Sipp {
        Sipp::new("publish_dialog.xml").row(&[
            user,
            domain,
            state,
            &version.to_string(),
            dialog_id,
            "recipient",
            remote,
            etag.unwrap_or(""),
            "3600",
        ])
    }

    /// `subscribe_presence.xml`: watcher `watcher@127.0.0.1` SUBSCRIBEs to `user@domain`
    /// (Event: presence), waits for the first NOTIFY with a body, then un-SUBSCRIBEs.
    pub fn subscribe_presence(user: &str, domain: &str, expires: u32, watcher: &str) -> Sipp {
        Sipp::new("subscribe_presence.xml").row(&[user, domain, &expires.to_string(), watcher])
    }

    /// `subscribe_dialog.xml`: as [`Sipp::subscribe_presence`] with Event: dialog.
    pub fn subscribe_dialog(user: &str, domain: &str, expires: u32, watcher: &str) -> Sipp {
        Sipp::new("subscribe_dialog.xml").row(&[user, domain, &expires.to_string(), watcher])
    }

    /// Adds an injection-file row (`[field0]`, `[field1]`, ...); one call per row.
    pub fn row(mut self, fields: &[&str]) -> Sipp {
        for f in fields {
            assert!(!f.contains(';') && !f.contains('\n'), "sipp CSV field {f:?} contains ';' or a newline");
        }
        self.rows.push(fields.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Extra sipp arguments (e.g. `["-r", "100"]`).
    pub fn args<I, S>(mut self, args: I) -> Sipp
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn transport(mut self, t: Transport) -> Sipp {
        self.transport = t;
        self
    }

    pub fn tcp(self) -> Sipp {
        self.transport(Transport::Tcp)
    }

    /// sipp's global timeout (`-timeout`, a failure when reached) and the receive timeout of
    /// its scenarios (`-recv_timeout`). Default 8 s.
    pub fn timeout(mut self, t: Duration) -> Sipp {
        self.timeout = t;
        self
    }

    /// Number of calls (`-m`); default: the number of rows, or 1.
    pub fn calls(mut self, n: usize) -> Sipp {
        self.calls = Some(n);
        self
    }

    /// Runs sipp against `target` and waits for it to exit.
    pub fn run(self, target: SocketAddr) -> SippRun {
        self.spawn(target).wait()
    }

    /// Starts sipp against `target` in the background.
    pub fn spawn(self, target: SocketAddr) -> SippChild {
        let sipp = require_binary("sipp", "sip-tester");
        let name = self.scenario.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = super::temp_dir(&format!("sipp-{name}"));
        let port = free_udp_tcp_port();
        let mut cmd = Command::new(&sipp);
        cmd.arg("-sf").arg(&self.scenario);
        if !self.rows.is_empty() {
            let mut csv = String::from("SEQUENTIAL\n");
            for r in &self.rows {
                csv.push_str(&r.join(";"));
                csv.push('\n');
            }
            let inf = dir.join("inject.csv");
            std::fs::write(&inf, csv).unwrap();
            cmd.arg("-inf").arg(&inf);
        }
        let calls = self.calls.unwrap_or(self.rows.len().max(1));
        let timeout_ms = self.timeout.as_millis().max(1000);
        cmd.args(["-i", LOOPBACK, "-p", &port.to_string(), "-m", &calls.to_string()])
            .args(["-t", if self.transport == Transport::Tcp { "t1" } else { "u1" }])
            .args(["-nostdin", "-timeout", &format!("{timeout_ms}ms"), "-timeout_error"])
            .args(["-recv_timeout", &timeout_ms.to_string()])
            .args(["-default_behaviors", "all,-bye"])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(dir.join("messages.log"))
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(dir.join("logs.log"))
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.join("errors.log"))
            .args(&self.args)
            .arg(target.to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout.txt")).unwrap())
            .stderr(File::create(dir.join("stderr.txt")).unwrap())
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", sipp.display()));
        SippChild {
            child: Some(child),
            dir,
            local: format!("{LOOPBACK}:{port}").parse().unwrap(),
            started: Instant::now(),
            // sipp enforces its own -timeout; this is the backstop if sipp itself hangs.
            deadline: Instant::now() + self.timeout + Duration::from_secs(5),
        }
    }
}

/// A sipp running in the background.
pub struct SippChild {
    child: Option<Child>,
    dir: PathBuf,
    local: SocketAddr,
    started: Instant,
    deadline: Instant,
}

impl SippChild {
    /// sipp's own address (`-i`/`-p`): where its Contact points.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The per-run dir with `messages.log`, `logs.log`, `errors.log`, `stdout.txt`, `stderr.txt`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The scenario's `<log>` lines so far (the `-trace_logs` file; sipp flushes each line).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs.log")).unwrap_or_default()
    }

    /// Waits until the scenario has logged a line containing `needle` (e.g. "notify cl=0":
    /// the subscription is up and its first NOTIFY answered). Panics after `wait`, or if sipp
    /// exits first.
    pub fn wait_for_log(&mut self, needle: &str, wait: Duration) {
        let t0 = Instant::now();
        loop {
            if self.logs().contains(needle) {
                return;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let run = self.finish(st);
                panic!("sipp exited ({st}) before logging {needle:?}:\n{}", run.report());
            }
            if t0.elapsed() > wait {
                panic!(
                    "sipp did not log {needle:?} within {wait:?}; logs so far:\n{}\nmessages:\n{}",
                    self.logs(),
                    file_tail(&self.dir.join("messages.log"), 4000)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for sipp to exit (killing it at the backstop deadline) and collects its output.
    pub fn wait(mut self) -> SippRun {
        let child = self.child.as_mut().expect("sipp already collected");
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > self.deadline {
                // SAFETY: plain syscall on the process group of the child we started.
                unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
                break child.wait().unwrap();
            }
            std::thread::sleep(POLL);
        };
        self.finish(status)
    }

    fn finish(&mut self, status: ExitStatus) -> SippRun {
        self.child = None;
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        SippRun {
            status,
            elapsed: self.started.elapsed(),
            stdout: read("stdout.txt"),
            stderr: read("stderr.txt"),
            messages: read("messages.log"),
            logs: read("logs.log"),
            errors: read("errors.log"),
            dir: self.dir.clone(),
        }
    }
}

impl Drop for SippChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain syscall on the process group of the child we started.
            unsafe { libc::killpg(c.id() as libc::pid_t, libc::SIGKILL) };
            let _ = c.wait();
            keep_or_remove(&self.dir);
        }
    }
}

/// Removes a run's temp dir, unless the test is failing (then says where it is).
fn keep_or_remove(dir: &Path) {
    if std::thread::panicking() {
        eprintln!("sipp files kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// One SIP message from sipp's message log.
#[derive(Clone, Debug)]
pub struct SipMessage {
    /// "UDP"/"TCP" (as sipp logs it).
    pub transport: String,
    /// true: received by sipp; false: sent by sipp.
    pub received: bool,
    /// The whole message (start line, headers, blank line, body).
    pub text: String,
}

impl SipMessage {
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    pub fn is_request(&self, method: &str) -> bool {
        self.start_line().starts_with(&format!("{method} "))
    }

    pub fn is_response(&self, code: u16) -> bool {
        self.start_line().starts_with(&format!("SIP/2.0 {code} "))
    }

    /// First header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().take_while(|l| !l.trim().is_empty()).skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .or_else(|| self.text.split_once("\n\n"))
            .map_or("", |(_, b)| b.trim())
    }
}

/// What a sipp run left behind.
#[derive(Debug)]
pub struct SippRun {
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
    /// `-trace_msg`: every message sent and received.
    pub messages: String,
    /// `-trace_logs`: the scenario's `<log>` lines.
    pub logs: String,
    /// `-trace_err`: unexpected messages.
    pub errors: String,
    /// The per-run temp dir (removed when this is dropped, unless the thread is panicking).
    pub dir: PathBuf,
}

impl Drop for SippRun {
    fn drop(&mut self) {
        keep_or_remove(&self.dir);
    }
}

impl SippRun {
    /// sipp exits 0 when every call succeeded.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with [`SippRun::report`] unless sipp succeeded.
    pub fn assert_success(&self) -> &SippRun {
        assert!(self.success(), "sipp failed:\n{}", self.report());
        self
    }

    /// Status, the scenario's log lines, errors, the message log's tail and stderr.
    pub fn report(&self) -> String {
        let tail = |s: &str, n: usize| {
            let mut i = s.len().saturating_sub(n);
            while !s.is_char_boundary(i) {
                i += 1;
            }
            s[i..].to_string()
        };
        format!(
            "status: {}\nlogs:\n{}\nerrors:\n{}\nmessages (tail):\n{}\nstderr:\n{}\n(files in {})",
            self.status,
            self.logs,
            tail(&self.errors, 3000),
            tail(&self.messages, 6000),
            tail(&self.stderr, 2000),
            self.dir.display()
        )
    }

    /// The messages in sipp's message log, in order.
    pub fn sip_messages(&self) -> Vec<SipMessage> {
        // Entries look like "----- <timestamp>\nUDP message received [n] bytes :\n\n<message>"
        // or "UDP message sent (n bytes):\n\n<message>"; sipp indents nothing.
        let mut out = Vec::new();
        for chunk in self.messages.split("\n-----------------------------------------------") {
            let mut lines = chunk.lines().skip_while(|l| !l.contains(" message "));
            let Some(head) = lines.next() else { continue };
            if head.trim_start().starts_with("Unexpected") {
                continue; // sipp logs an unexpected message a second time, under this heading
            }
            let received = head.contains("message received");
            let sent = head.contains("message sent");
            if !received && !sent {
                continue;
            }
            let transport = head.split_whitespace().next().unwrap_or("").to_string();
            let text: Vec<&str> = lines.skip_while(|l| l.trim().is_empty()).collect();
            out.push(SipMessage { transport, received, text: text.join("\r\n") });
        }
        out
    }

    /// The requests `method` that sipp received.
    pub fn received_requests(&self, method: &str) -> Vec<SipMessage> {
        self.sip_messages().into_iter().filter(|m| m.received && m.is_request(method)).collect()
    }

    /// Bodies of the NOTIFYs received that have one.
    pub fn notify_bodies(&self) -> Vec<String> {
        self.received_requests("NOTIFY")
            .iter()
            .map(|m| m.body().to_string())
            .filter(|b| !b.is_empty())
            .collect()
    }

    /// The last SIP-ETag a PUBLISH scenario logged ("etag=..."), for a modifying PUBLISH.
    pub fn etag(&self) -> Option<String> {
        self.logs
            .lines()
            .rev()
            .filter_map(|l| l.trim().strip_prefix("etag="))
            .find(|e| !e.is_empty())
            .map(str::to_string)
    }
}
