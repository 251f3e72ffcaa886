//! `presence-hub bench-directory`: what directory sync costs the hub at a given size.
//!
//! Phases, each timed, with the process's resident memory after it:
//! 0. `held`: the source's people as the engine keeps them between passes (packed);
//! 1. `merge`: N records of one source merged into people (the sync engine's merge);
//! 2. `build`: the first directory version of N people;
//! 3. `unchanged`: the next version from the same people (compared, nothing built);
//! 4. `churn`: the next version with 1 % changed, 0.5 % added, 0.5 % removed;
//! 5. `apply`: that version handed to a running hub (shards, fan-out, live directory).
//!
//! With `--ldap` (demo builds, which carry the test peers) the source side is measured first:
//! a private slapd is loaded with N Active-Directory-shaped people (`slapadd`), then the real
//! `ldap` source runs a full pass (paged) and an unchanged incremental pass against it, and the
//! records it read feed the phases above. Peak RSS (`VmHWM`) is reported at the end.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::sync::merge::{self, MatchKey, SourcePeople};
use presence_actors::directory::{synth, Directory, NumberPlan, Person, Record};
use presence_actors::hub::{Hub, HubConfig};
use presence_actors::model::Policy;
use presence_actors::shard::Restore;

/// Arguments of `presence-hub bench-directory`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchDirectoryArgs {
    /// People in the synthetic source.
    #[arg(long, default_value_t = 100_000)]
    pub people: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read the people from a private slapd through the real LDAP source (needs slapd and
    /// ldap-utils, and a build with the `demo` feature).
    #[arg(long)]
    pub ldap: bool,
}

/// Peak resident memory of this process (`VmHWM`), in MB.
fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The people of a slapd loaded with `n` AD-shaped entries, read by the real LDAP source: the
/// records, and the timed full and unchanged incremental passes.
#[cfg(feature = "demo")]
fn from_ldap(n: usize, phases: &mut Vec<(&'static str, Duration, f64)>) -> Result<HashMap<Box<str>, Box<str>>> {
    use presence_providers::directory::{PassKind, SourceConfig};
    use presence_simulators::slapd::{self, ad_user, Options, Slapd};
    let t = Instant::now();
    let ldif: String = (1..=n as u32).map(|i| ad_user(i, 100 + u64::from(i), false)).collect::<Vec<_>>().join("\n");
    let server = Slapd::start_with(Options { ldif: Some(ldif), ..Options::default() }).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("slapd loaded with {n} people in {:.1} s", t.elapsed().as_secs_f64());
    let text = format!(
        "type = \"ldap\"\nname = \"ad\"\nurl = \"{}\"\nbind_dn = \"{}\"\npassword = \"{}\"\nbase_dn = \"{}\"\nfilter = \"(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))\"\npage_size = 1000\n",
        server.ldap_url(),
        slapd::SERVICE_DN,
        slapd::SERVICE_PASSWORD,
        slapd::STAFF
    );
    let cfg: SourceConfig = toml::from_str(&text)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut source = cfg.source()?;
    let t = Instant::now();
    let full = rt.block_on(source.pass(PassKind::Full, None))?;
    phases.push(("ldap_full", t.elapsed(), rss_mb()));
    anyhow::ensure!(full.entries.len() == n, "the full pass read {} of {n}", full.entries.len());
    let t = Instant::now();
    let quiet = rt.block_on(source.pass(PassKind::Incremental, full.cursor.as_deref()))?;
    phases.push(("ldap_incr", t.elapsed(), rss_mb()));
    anyhow::ensure!(quiet.kind == PassKind::Incremental && quiet.entries.is_empty(), "the unchanged incremental pass read {}", quiet.entries.len());
    drop(server);
    Ok(full.entries.into_iter().map(|e| (e.key, merge::pack(&e.record))).collect())
}

#[cfg(not(feature = "demo"))]
fn from_ldap(_: usize, _: &mut Vec<(&'static str, Duration, f64)>) -> Result<HashMap<Box<str>, Box<str>>> {
    anyhow::bail!("--ldap needs a build with the demo feature (it starts a private slapd)")
}

fn rss_mb() -> f64 {
    crate::http::admin::rss_bytes().unwrap_or(0) as f64 / 1_048_576.0
}

/// Runs the benchmark.
pub fn run(args: BenchDirectoryArgs) -> Result<()> {
    let n = args.people.max(10);
    let plan = NumberPlan::sweden();
    let mut phases: Vec<(&str, Duration, f64)> = Vec::new();
    let rss0 = rss_mb();

    let entries: HashMap<Box<str>, Box<str>> = if args.ldap {
        from_ldap(n, &mut phases)?
    } else {
        let people = synth::generate(n, 7);
        people.iter().map(|p| (p.id.clone(), merge::pack(&Record::from(p)))).collect()
    };
    phases.push(("held", Duration::ZERO, rss_mb()));
    // What the engine holds for the source between passes: the packed text and the map's slots.
    let held_bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + entries.capacity() * (2 * std::mem::size_of::<Box<str>>() + 8);
    let empty = Directory::build(Vec::new(), &plan)?;
    let t = Instant::now();
    let merged = merge::merge(&[SourcePeople { name: "src", entries: &entries, key_is_external_id: args.ldap }], &[MatchKey::Email], &BTreeMap::new(), &plan, &empty);
    phases.push(("merge", t.elapsed(), rss_mb()));
    anyhow::ensure!(merged.rejected.is_empty(), "synthetic records rejected: {:?}", merged.rejected.first());
    let people: Vec<Person> = merged.people;

    let t = Instant::now();
    let dir = Directory::build(people.clone(), &plan)?;
    phases.push(("build", t.elapsed(), rss_mb()));

    let t = Instant::now();
    let (none, same) = dir.next(people.clone())?;
    phases.push(("unchanged", t.elapsed(), rss_mb()));
    anyhow::ensure!(none.is_none() && same.is_empty(), "an unchanged pass changed something");

    let mut churned = people;
    let k = n / 200;
    churned.truncate(churned.len() - k);
    for p in churned.iter_mut().step_by(100) {
        p.title = Some("Ny titel".into());
    }
    for i in 0..k {
        let mut p = Person::new(&format!("ny.person.{i}"), &format!("Ny Person {i}"));
        p.department = Some("Nyanställda".into());
        churned.push(p);
    }
    let t = Instant::now();
    let (next, diff) = dir.next(churned)?;
    phases.push(("churn", t.elapsed(), rss_mb()));
    let next = next.ok_or_else(|| anyhow::anyhow!("the churned version changed nothing"))?;

    let sys = actix_rt::System::new();
    let apply = sys.block_on(async {
        let hub = Hub::start(&HubConfig::default(), dir, Policy::default());
        let t = Instant::now();
        hub.apply_directory(next, &diff, Restore { views: vec![], absences: vec![], slots: vec![] }).await;
        let took = t.elapsed();
        hub.stop();
        took
    });
    phases.push(("apply", apply, rss_mb()));

    if args.json {
        let obj: serde_json::Map<String, serde_json::Value> = phases
            .iter()
            .map(|(name, d, rss)| ((*name).to_string(), serde_json::json!({ "ms": d.as_secs_f64() * 1000.0, "rss_mb": rss })))
            .collect();
        println!("{}", serde_json::json!({ "people": n, "source": if args.ldap { "ldap" } else { "synthetic" }, "rss_start_mb": rss0, "peak_rss_mb": peak_rss_mb(), "held_bytes_per_person": held_bytes / n, "added": diff.added.len(), "changed": diff.changed.len(), "removed": diff.removed.len(), "phases": obj }));
    } else {
        println!("bench-directory: {n} people (added {}, changed {}, removed {} in the churn)", diff.added.len(), diff.changed.len(), diff.removed.len());
        println!("  rss at start       {rss0:>9.1} MB");
        println!("  held per person    {:>9} B (packed records and map slots)", held_bytes / n);
        for (name, d, rss) in &phases {
            println!("  {name:<10} {:>9.1} ms   rss {rss:>7.1} MB", d.as_secs_f64() * 1000.0);
        }
        println!("  peak rss           {:>9.1} MB", peak_rss_mb());
    }
    Ok(())
}
