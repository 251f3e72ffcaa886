//! Crash test: `kill -9` the server while absences are being written; after a restart every
//! acknowledged absence is there, each with its one audit entry (the same transaction).
//!
//! Runs the real binary (the demo, on a free loopback port, with its own data directory).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn spawn(port: u16, dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_presence-hub"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start presence-hub")
}

async fn wait_ready(c: &reqwest::Client, base: &str, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        if let Ok(r) = c.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "presence-hub exited during start-up");
        assert!(t0.elapsed() < Duration::from_secs(60), "presence-hub did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_absence_survives_kill_9() {
    let dir = crate::common::temp_dir("crash");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let c = crate::common::client();
    let mut child = spawn(port, &dir);
    wait_ready(&c, &base, &mut child).await;

    // People to write for: the first page of the demo directory.
    let v: Value = c.get(format!("{base}/api/users?limit=50")).bearer_auth("demo-viewer").send().await.unwrap().json().await.unwrap();
    let people: Vec<String> = v["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    assert!(people.len() >= 20);

    // Four concurrent writers; record every acknowledged (201) absence.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let (c, base, people, acked) = (c.clone(), base.clone(), people.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let who = &people[(w * 13 + i) % people.len()];
                let r = c
                    .post(format!("{base}/api/users/{who}/absences"))
                    .bearer_auth("demo-operator")
                    .json(&json!({ "reason": "meeting", "text": format!("writer {w} #{i}") }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        if let Ok(v) = r.json::<Value>().await {
                            acked.lock().unwrap().push((who.clone(), v["absence"]["id"].as_str().unwrap().to_string()));
                        }
                    }
                    Ok(r) if r.status() == 409 => {} // that person is full; go on
                    _ => break,                       // the server is gone
                }
            }
        }));
    }
    // Let some writes land, then kill -9 mid-stream.
    let t0 = Instant::now();
    while acked.lock().unwrap().len() < 150 && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150, "only {} writes were acknowledged", acked.len());

    // Restart on the same data directory and check every acknowledged absence.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn(port, &dir);
    wait_ready(&c, &base, &mut child).await;
    let mut missing = Vec::new();
    for who in people {
        let list: Value = c.get(format!("{base}/api/users/{who}/absences")).bearer_auth("demo-viewer").send().await.unwrap().json().await.unwrap();
        let ids: Vec<&str> = list.as_array().unwrap().iter().filter_map(|a| a["id"].as_str()).collect();
        for (w, id) in acked.iter().filter(|(w, _)| *w == who) {
            if !ids.contains(&id.as_str()) {
                missing.push(format!("{w}/{id}"));
            }
        }
        // The restored absences shape presence right away.
        if acked.iter().any(|(w, _)| *w == who) {
            let d: Value = c.get(format!("{base}/api/users/{who}")).bearer_auth("demo-viewer").send().await.unwrap().json().await.unwrap();
            // (The demo replay may add a newer manual lunch on top; either way a manual reason shows.)
            assert!(d["presence"]["absence_reason"].is_string(), "{who}: {d}");
        }
    }
    // Every acknowledged absence has exactly one `absence.created` entry, naming the writer.
    let mut audited: std::collections::HashMap<String, usize> = Default::default();
    let mut before: Option<i64> = None;
    loop {
        let mut url = format!("{base}/api/audit?action=absence.created&limit=1000");
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let page: Value = c.get(url).bearer_auth("demo-admin").send().await.unwrap().json().await.unwrap();
        for e in page["entries"].as_array().unwrap() {
            if e["actor"] == "demo-operator" {
                *audited.entry(e["detail"]["absence"].as_str().unwrap().to_string()).or_default() += 1;
            }
        }
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(missing.is_empty(), "{} acknowledged absences lost: {:?}", missing.len(), &missing[..missing.len().min(10)]);
    let unaudited: Vec<_> = acked.iter().filter(|(_, id)| audited.get(id) != Some(&1)).collect();
    assert!(unaudited.is_empty(), "{} acknowledged absences without exactly one audit entry: {:?}", unaudited.len(), &unaudited[..unaudited.len().min(10)]);
    // And no entry for an absence that was never written: every audited id is in the store.
    assert!(audited.len() >= acked.len(), "{} entries for {} acknowledged writes", audited.len(), acked.len());
}
