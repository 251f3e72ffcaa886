//! HTTPS on the hub's own listener (`[http] tls_cert_file` / `tls_key_file`): the API answers
//! over TLS with the configured certificate, plain HTTP on that port gets no answer, and a
//! mobile operator's signed webhooks reach the operator adapter over HTTPS — a call shows, a
//! wrong signature is still refused (`401`) and counted. The test certificate and its CA are
//! in `fixtures/tls/`.

use std::time::{Duration, Instant};

use crate::common::*;
use presence_providers::ProviderConfig;
use presence_simulators::operator::{Example, Misbehave, OperatorSim, OperatorSimConfig};
use serde_json::Value;

/// Åsa Östberg's mobile, as the operator writes it.
const ASA: &str = "+46721281605";


async fn get(s: &Server, path: &str, token: &str) -> Value {
    tls_client().get(s.url(path)).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_operator_webhooks_work_over_https() {
    let mut cfg = with_test_tls(test_config(temp_dir("tls")));
    cfg.providers = vec![ProviderConfig::Operator(Box::new(operator_example("tdc")))];
    cfg.validate().unwrap();
    let s = start(cfg);
    assert!(s.url("/").starts_with("https://"));

    // The API over TLS, with the certificate the test CA signed.
    let me = get(&s, "/api/users/asa.ostberg", VIEWER).await;
    assert_eq!(me["id"], "asa.ostberg", "{me}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = client().get(format!("http://{}/readyz", s.addr)).send().await;
    assert!(plain.is_err() || !plain.as_ref().unwrap().status().is_success(), "{plain:?}");

    // The operator posts signed webhooks to https://…/hooks/tdc/events, trusting the test CA.
    let sim = OperatorSim::start(OperatorSimConfig {
        webhook_ca_pem: Some(test_ca_pem()),
        ..OperatorSimConfig::example(Example::Tdc)
    })
    .unwrap();
    sim.set_webhook_url(Some(s.url("/hooks/tdc/events")));
    assert_eq!(sim.call_start(ASA).await, Some(200));
    let t0 = Instant::now();
    loop {
        let p = get(&s, "/api/users/asa.ostberg", VIEWER).await;
        if p["presence"]["activity"] == "Ringing" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the call did not show: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.misbehave(Misbehave { wrong_signature_next: 1, ..Misbehave::default() });
    assert_eq!(sim.call_end(ASA).await, Some(401), "a wrong signature over HTTPS is refused");
    // Health details are refreshed by the provider's task: wait for the counts.
    let t0 = Instant::now();
    let tdc = loop {
        let providers = get(&s, "/api/providers", ADMIN).await;
        let tdc = providers.as_array().unwrap().iter().find(|p| p["name"] == "tdc").cloned().unwrap();
        if tdc["details"]["webhook"]["rejected_auth"] == 1 || t0.elapsed() > Duration::from_secs(5) {
            break tdc;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(tdc["details"]["webhook"]["accepted"], 1, "{tdc}");
    assert_eq!(tdc["details"]["webhook"]["rejected_auth"], 1, "{tdc}");
    assert!(tdc["details"]["webhook"]["url"].as_str().unwrap().starts_with("https://"), "{tdc}");
}

#[test]
fn tls_needs_both_files_and_a_matching_key() {
    let mut cfg = with_test_tls(test_config(temp_dir("tls-config")));
    cfg.http.tls_key_file = None;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("tls_cert_file and http.tls_key_file"), "{e}");
    // A key that is not the certificate's: the hub refuses to start, naming the problem.
    let mut cfg = with_test_tls(test_config(temp_dir("tls-mismatch")));
    cfg.http.tls_key_file = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/other-key.pem").into());
    cfg.validate().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = actix_rt::System::new()
        .block_on(presence_hub::run(cfg, presence_hub::RunOptions::default(), listener, std::future::pending()))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("https: TLS settings"), "{err}");
}
