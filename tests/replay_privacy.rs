//! The replay provider through the real server, and rule 8 (privacy): calendar subjects and
//! locations are never sent unless the policy allows them for the caller's role, and private
//! items never reveal them.

use std::time::Duration;

use crate::common::*;
use presence_actors::model::DetailPolicy;
use presence_providers::replay::ReplayConfig;
use presence_providers::ProviderConfig;
use serde_json::Value;

const SCENARIO: &str = r#"
{"at": 0, "who": "asa.ostberg@nordvik.se", "source": "calendar", "instance": "m1", "availability": "Busy", "activity": "InAMeeting", "valid_for": 600, "subject": "Budget 2027", "location": "Rum Saturnus"}
{"at": 0, "who": "asa.ostberg", "source": "calendar", "instance": "m2", "activity": "Tentative", "starts_in": 900, "valid_for": 600, "subject": "Lönesamtal", "private": true}
{"at": 0, "who": "sip:asa.ostberg@nordvik.se", "source": "teams", "availability": "Busy", "version": 1}
{"at": 0, "who": "nobody@nowhere.example", "source": "teams", "availability": "Busy"}
"#;

fn server(policy: DetailPolicy) -> Server {
    let dir = temp_dir("privacy");
    let file = dir.join("scenario.jsonl");
    std::fs::write(&file, SCENARIO).unwrap();
    let mut cfg = test_config(dir);
    cfg.policy.calendar_details = policy;
    cfg.providers = vec![ProviderConfig::Replay(ReplayConfig { name: "cal".into(), file, repeat: false, speed: 1.0 })];
    start(cfg)
}

async fn detail(s: &Server, token: &str) -> Value {
    let c = client();
    for _ in 0..500 {
        let v: Value = c.get(s.url("/api/users/asa.ostberg")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        if v["sources"].as_array().is_some_and(|a| a.len() == 3) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the replayed signals did not arrive");
}

fn source<'a>(d: &'a Value, instance: &str) -> &'a Value {
    d["sources"].as_array().unwrap().iter().find(|s| s["instance"] == instance).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_are_hidden_by_default() {
    let s = server(DetailPolicy::Hidden);
    for token in [VIEWER, OPERATOR, ADMIN] {
        let d = detail(&s, token).await;
        assert_eq!(d["presence"]["availability"], "Busy");
        assert_eq!(d["presence"]["activity"], "InAMeeting", "{d}");
        let m1 = source(&d, "m1");
        assert!(m1.get("subject").is_none() && m1.get("location").is_none(), "{m1}");
        assert_eq!(m1["freshness"], "live");
        assert_eq!(source(&d, "m2")["freshness"], "pending");
        assert!(!d.to_string().contains("Budget"), "no subject anywhere in the response");
    }
    // The replay feed's health: events counted, the unknown person counted as unresolved.
    let prov: Value = client().get(s.url("/api/providers")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    let cal = prov.as_array().unwrap().iter().find(|p| p["name"] == "cal").unwrap();
    assert_eq!(cal["type"], "replay");
    assert_eq!(cal["unresolved"], 1, "{cal}");
    assert!(cal["events"].as_u64().unwrap() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_may_see_subjects_when_the_policy_allows_but_never_private_ones() {
    let s = server(DetailPolicy::Operators);
    let d = detail(&s, VIEWER).await;
    assert!(source(&d, "m1").get("subject").is_none(), "viewers still see no subject");
    let d = detail(&s, OPERATOR).await;
    assert_eq!(source(&d, "m1")["subject"], "Budget 2027");
    assert_eq!(source(&d, "m1")["location"], "Rum Saturnus");
    let m2 = source(&d, "m2");
    assert!(m2.get("subject").is_none(), "private items never reveal details: {m2}");
    assert_eq!(m2["private"], true);
    // The stream never carries subjects at all.
    assert!(!d["presence"].to_string().contains("Budget"));
}
