//! End-to-end tests of the live streams: WebSocket snapshot + delta + resume, heartbeats,
//! filters, bad client messages, and SSE with Last-Event-ID.

use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &Server, query: &str, token: &str) -> Ws {
    let mut req = s.ws_url(&format!("/api/stream{query}")).into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.expect("websocket connect").0
}

/// Next JSON frame that is not a heartbeat.
async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame within 10 s").unwrap().unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "heartbeat" {
                return v;
            }
        }
    }
}

async fn push(s: &Server, signals: Value) {
    let r = client().post(s.url("/api/signals")).bearer_auth(ADMIN).json(&json!({ "signals": signals })).send().await.unwrap();
    assert_eq!(r.status(), 202);
}

async fn absence(s: &Server, user: &str, reason: &str) -> String {
    let r = client()
        .post(s.url(&format!("/api/users/{user}/absences")))
        .bearer_auth(OPERATOR)
        .json(&json!({ "reason": reason }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["absence"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_snapshot_delta_and_resume() {
    let s = start(test_config(temp_dir("ws")));
    let mut ws = connect(&s, "", VIEWER).await;
    ws.send(Message::Text(json!({"op": "subscribe", "users": ["asa.ostberg", "bjorn.angstrom"]}).to_string())).await.unwrap();
    let snap = next_frame(&mut ws).await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["last"], true);
    let ids: Vec<_> = snap["presence"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    assert!(ids.contains(&"asa.ostberg".to_string()), "{snap}");
    let seq0 = snap["seq"].as_u64().unwrap();

    // A change to a watched person arrives as a delta with a higher seq.
    absence(&s, "asa.ostberg", "lunch").await;
    let d = next_frame(&mut ws).await;
    assert_eq!(d["type"], "delta", "{d}");
    assert_eq!(d["presence"]["id"], "asa.ostberg");
    assert_eq!(d["presence"]["availability"], "Away");
    assert_eq!(d["presence"]["activity"], "Lunch");
    let seq1 = d["seq"].as_u64().unwrap();
    assert!(seq1 > seq0);

    // A change to someone not watched does not arrive; the next watched one does.
    push(&s, json!([{"who": "marta.lindqvist", "source": "teams", "availability": "Busy"}])).await;
    push(&s, json!([{"who": "asa.ostberg", "source": "mobile", "availability": "Busy", "activity": "InACall"}])).await;
    let d = next_frame(&mut ws).await;
    assert_eq!(d["presence"]["id"], "asa.ostberg", "{d}");
    assert_eq!(d["presence"]["activity"], "InACall", "a call shows through the lunch: {d}");
    let seq2 = d["seq"].as_u64().unwrap();
    assert!(seq2 > seq1);
    ws.close(None).await.unwrap();

    // While disconnected: two more changes.
    push(&s, json!([{"who": "asa.ostberg", "source": "mobile", "availability": "Available"}])).await;
    push(&s, json!([{"who": "bjorn.angstrom", "source": "teams", "availability": "Away"}])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Resume from seq2: "resumed", then exactly the missed deltas for the filter, in order.
    let mut ws = connect(&s, &format!("?users=asa.ostberg,bjorn.angstrom&since={seq2}"), VIEWER).await;
    let r = next_frame(&mut ws).await;
    assert_eq!(r["type"], "resumed", "{r}");
    assert_eq!(r["from"].as_u64(), Some(seq2));
    let a = next_frame(&mut ws).await;
    let b = next_frame(&mut ws).await;
    assert_eq!(a["presence"]["id"], "asa.ostberg", "{a}");
    assert_eq!(a["presence"]["activity"], "Lunch", "{a}");
    assert_eq!(b["presence"]["id"], "bjorn.angstrom", "{b}");
    assert!(a["seq"].as_u64().unwrap() > seq2 && b["seq"].as_u64().unwrap() > a["seq"].as_u64().unwrap());

    // Resume from a sequence number the server never issued: a fresh snapshot instead.
    let mut ws2 = connect(&s, "?all=true&since=999999999", VIEWER).await;
    let f = next_frame(&mut ws2).await;
    assert_eq!(f["type"], "snapshot", "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_heartbeats_departments_and_bad_messages() {
    let s = start(test_config(temp_dir("ws2")));
    // Unknown token: refused before the upgrade.
    let mut req = s.ws_url("/api/stream").into_client_request().unwrap();
    req.headers_mut().insert("Authorization", "Bearer nope".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    // Token in the query (browsers cannot set headers on WebSocket).
    let url = s.ws_url(&format!("/api/stream?access_token={VIEWER}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // Heartbeat within the configured 1 s interval (×5 for slack on a loaded CI machine).
    let t0 = std::time::Instant::now();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("heartbeat").unwrap().unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "heartbeat" {
                assert!(v["seq"].is_u64());
                break;
            }
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    ws.send(Message::Text("{not json".into())).await.unwrap();
    let e = next_frame(&mut ws).await;
    assert_eq!(e["type"], "error");
    assert!(e["detail"].as_str().unwrap().contains("malformed"));
    ws.send(Message::Text(json!({"op": "subscribe", "users": ["nobody-here"]}).to_string())).await.unwrap();
    let e = next_frame(&mut ws).await;
    assert_eq!(e["type"], "error", "{e}");
    assert!(e["detail"].as_str().unwrap().contains("nobody-here"));
    // Department subscription.
    let d: Value = client().get(s.url("/api/users/asa.ostberg")).bearer_auth(VIEWER).send().await.unwrap().json().await.unwrap();
    let dept = d["department"].as_str().unwrap().to_string();
    ws.send(Message::Text(json!({"op": "subscribe", "departments": [dept]}).to_string())).await.unwrap();
    let snap = next_frame(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    absence(&s, "asa.ostberg", "sick").await;
    let d = next_frame(&mut ws).await;
    assert_eq!(d["presence"]["id"], "asa.ostberg", "{d}");
    assert_eq!(d["presence"]["ooo"], true);
    // The connection is still usable after the bad messages.
    ws.send(Message::Ping(vec![1, 2, 3])).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_snapshot_delta_and_last_event_id() {
    let s = start(test_config(temp_dir("sse")));
    let c = client();
    let mut resp = c.get(s.url("/api/events?users=asa.ostberg")).bearer_auth(VIEWER).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut buf = String::new();
    let mut events = Vec::new();
    async fn more(resp: &mut reqwest::Response, buf: &mut String, events: &mut Vec<(u64, String, Value)>) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await.expect("SSE data").unwrap().unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let ev: String = buf.drain(..i + 2).collect();
            let mut id = 0;
            let mut kind = String::new();
            let mut data = Value::Null;
            for line in ev.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().unwrap();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap();
                }
            }
            if kind != "heartbeat" {
                events.push((id, kind, data));
            }
        }
    }
    while events.is_empty() {
        more(&mut resp, &mut buf, &mut events).await;
    }
    assert_eq!(events[0].1, "snapshot");
    assert_eq!(events[0].2["presence"][0]["id"], "asa.ostberg");
    absence(&s, "asa.ostberg", "lunch").await;
    while events.len() < 2 {
        more(&mut resp, &mut buf, &mut events).await;
    }
    let (id, kind, data) = &events[1];
    assert_eq!(kind, "delta");
    assert_eq!(data["presence"]["activity"], "Lunch");
    assert_eq!(*id, data["seq"].as_u64().unwrap());
    let last = *id;
    drop(resp);

    absence(&s, "asa.ostberg", "meeting").await;
    // Reconnect with Last-Event-ID: the missed change only.
    let mut resp = c
        .get(s.url("/api/events?users=asa.ostberg"))
        .bearer_auth(VIEWER)
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut buf = String::new();
    while events.len() < 2 {
        more(&mut resp, &mut buf, &mut events).await;
    }
    assert_eq!(events[0].1, "resumed");
    assert_eq!(events[1].1, "delta");
    assert!(events[1].0 > last);
    // Unknown filter names are a 422 with a JSON body.
    let r = c.get(s.url("/api/events?users=nobody-here")).bearer_auth(VIEWER).send().await.unwrap();
    assert_eq!(r.status(), 422);
}
