//! The NATS JetStream cluster test peer on its own, before any hub code uses it
//! (`tests/common/nats.rs`, Debian's `nats-server`), as groundwork for a cluster of hubs on NATS
//! JetStream (issue 15): three nodes form one cluster with JetStream on every node and one meta
//! leader; a message published on one node reaches subscribers on the others through the routes
//! (spoken with the raw protocol helper, no client crate); a SIGKILLed meta leader is replaced
//! by an election among the other two; a killed or stopped node restarted on its ports and store
//! dir rejoins and carries messages again.
//!
//! Needs `apt-get install nats-server` (`./test.sh` does it); without it these tests fail and
//! say what to install.

use std::time::{Duration, Instant};

use crate::common::nats::{nats_roundtrip, NatsCluster, NatsConn, CLUSTER_NAME};

const T: Duration = Duration::from_secs(5);

/// Subscribes on node `to`, then publishes on node `from` until the message arrives (the
/// subscription reaches `from` over a route a moment after the subscriber's PONG); returns how
/// long that took. `payload` has CR LF and a non-UTF-8 byte: the framing is by length.
fn publish_across(c: &NatsCluster, from: usize, to: usize, subject: &str) -> Duration {
    let payload = format!("from {} to {}\r\nsecond line \u{e6}", c.name(from), c.name(to)).into_bytes();
    let mut payload = payload;
    payload.push(0xff);
    let mut sub = NatsConn::connect(&c.url(to), T).unwrap();
    assert_eq!(sub.info["server_name"], c.name(to), "INFO of {}", c.url(to));
    sub.subscribe(subject, "7").unwrap();
    sub.flush(T).unwrap();
    let mut publ = NatsConn::connect(&c.url(from), T).unwrap();
    assert_eq!(publ.info["server_name"], c.name(from));
    let t0 = Instant::now();
    loop {
        publ.publish(subject, &payload).unwrap();
        publ.flush(T).unwrap();
        match sub.next_msg(Duration::from_millis(200)) {
            Ok(m) => {
                assert_eq!(m.subject, subject);
                assert_eq!(m.sid, "7");
                assert_eq!(m.reply_to, None);
                assert_eq!(m.payload, payload, "payload through the route");
                return t0.elapsed();
            }
            Err(e) if e.contains("timed out") => {}
            Err(e) => panic!("subscriber on {}: {e}", c.name(to)),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "a message published on {} did not reach a subscriber on {} within 10 s\n{}",
            c.name(from),
            c.name(to),
            c.logs_report()
        );
    }
}

#[test]
fn three_nodes_form_one_jetstream_cluster_with_one_meta_leader() {
    let t0 = Instant::now();
    let mut c = NatsCluster::start(3);
    eprintln!("3-node NATS cluster ready in {:?}", t0.elapsed());
    let urls = c.urls();
    assert_eq!(urls.len(), 3);
    for (i, url) in urls.iter().enumerate() {
        assert!(c.is_running(i));
        assert_eq!(*url, c.url(i));
        assert!(url.starts_with("nats://127.0.0.1:"), "{url}");
        let (status, body) = c.monitor_get(i, "/healthz?js-enabled-only=true").expect("healthz answers");
        assert_eq!(status, 200, "{} healthz: {body}", c.name(i));
        let varz = c.varz(i).unwrap();
        assert_eq!(varz["server_name"], c.name(i));
        assert_eq!(varz["cluster"]["name"], CLUSTER_NAME);
        assert_eq!(c.routez(i).unwrap()["num_routes"], 2, "{} is routed to both others", c.name(i));
        let jsz = c.jsz(i);
        assert_eq!(jsz["config"]["max_memory"], 64 * 1024 * 1024, "{jsz}");
        assert_eq!(jsz["config"]["max_storage"], 256 * 1024 * 1024, "{jsz}");
        let store = jsz["config"]["store_dir"].as_str().unwrap();
        assert!(store.starts_with(c.store_dir(i).to_str().unwrap()), "{} stores in {store}", c.name(i));
        assert!(c.store_dir(i).join("jetstream").is_dir());
        assert_eq!(jsz["meta_cluster"]["name"], CLUSTER_NAME);
        assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "{jsz}");
        // Every node's own client port speaks the protocol.
        assert_eq!(nats_roundtrip(&c.url(i), "presence.peer.echo", b"hello").unwrap(), b"hello");
        assert!(c.log(i).contains("Server is ready"), "{}", c.log(i));
    }
    // One leader, the same for all, and the other two are current replicas at it.
    let leaders: Vec<Option<String>> = (0..3).map(|i| c.meta_leader(i)).collect();
    assert!(leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
    let li = c.leader_index().expect("an agreed leader");
    assert_eq!(Some(c.name(li).to_string()), leaders[0]);
    let replicas = c.jsz(li)["meta_cluster"]["replicas"].clone();
    let mut names: Vec<&str> = replicas.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    let mut others: Vec<&str> = (0..3).filter(|&i| i != li).map(|i| c.name(i)).collect();
    others.sort();
    assert_eq!(names, others, "{replicas}");
    assert!(replicas.as_array().unwrap().iter().all(|r| r["current"] == true), "{replicas}");
}

#[test]
fn a_message_published_on_one_node_reaches_subscribers_on_the_others() {
    let c = NatsCluster::start(3);
    let d = publish_across(&c, 0, 2, "presence.peer.route.a");
    eprintln!("n1 -> n3 through the route after {d:?}");
    publish_across(&c, 2, 1, "presence.peer.route.b");
    // One publish, a subscriber on every node: each gets it exactly once.
    let subject = "presence.peer.fanout";
    let mut subs: Vec<NatsConn> = (0..3)
        .map(|i| {
            let mut s = NatsConn::connect(&c.url(i), T).unwrap();
            s.subscribe(subject, "1").unwrap();
            s.flush(T).unwrap();
            s
        })
        .collect();
    // Interest reached the publishing node from both others once a probe crosses each route.
    publish_across(&c, 1, 0, "presence.peer.probe.a");
    publish_across(&c, 1, 2, "presence.peer.probe.b");
    let mut publ = NatsConn::connect(&c.url(1), T).unwrap();
    publ.publish(subject, b"to all").unwrap();
    publ.flush(T).unwrap();
    for (i, s) in subs.iter_mut().enumerate() {
        let m = s.next_msg(T).unwrap_or_else(|e| panic!("subscriber on {}: {e}", c.name(i)));
        assert_eq!(m.payload, b"to all");
        let extra = s.next_msg(Duration::from_millis(300));
        assert!(extra.is_err(), "{} got a second copy: {extra:?}", c.name(i));
    }
    // The raw client turns the server's -ERR into an Err (an empty token makes a subject invalid).
    let mut bad = NatsConn::connect(&c.url(0), T).unwrap();
    bad.subscribe("presence..peer", "9").unwrap();
    let e = bad.flush(T).unwrap_err();
    assert!(e.contains("-ERR") && e.contains("Invalid Subject"), "{e}");
}

#[test]
fn a_killed_meta_leader_is_replaced_and_rejoins_after_restart() {
    let mut c = NatsCluster::start(3);
    let old = c.leader_index().expect("a meta leader");
    let old_name = c.name(old).to_string();
    let t0 = Instant::now();
    c.kill(old);
    assert!(!c.is_running(old));
    assert!(c.try_jsz(old).is_none(), "the killed node's monitoring port still answers");
    let took = c.wait_ready(Duration::from_secs(20));
    let new = c.leader_index().expect("a new meta leader");
    eprintln!("meta leader {old_name} killed; {} elected after {took:?} ({:?} after the kill)", c.name(new), t0.elapsed());
    assert_ne!(new, old, "the killed node is still the leader");
    for i in (0..3).filter(|&i| i != old) {
        assert_eq!(c.meta_leader(i).as_deref(), Some(c.name(new)));
        let lost = &c.jsz(new)["meta_cluster"]["replicas"];
        let replica = lost.as_array().unwrap().iter().find(|r| r["name"] == old_name.as_str()).cloned();
        assert_eq!(replica.map(|r| r["current"].clone()), Some(serde_json::json!(false)), "{lost}");
    }
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    publish_across(&c, survivors[0], survivors[1], "presence.peer.after.kill");

    let t1 = Instant::now();
    c.restart(old);
    eprintln!("{old_name} restarted and rejoined in {:?}", t1.elapsed());
    assert!(c.is_running(old));
    assert_eq!(c.meta_leader(old).as_deref(), Some(c.name(new)), "the restarted node knows the leader");
    assert_eq!(c.routez(old).unwrap()["num_routes"], 2);
    assert_eq!(c.log(old).matches("=== tests/common/nats.rs: starting").count(), 2, "one log for both runs");
    publish_across(&c, old, new, "presence.peer.after.restart");
    publish_across(&c, new, old, "presence.peer.after.restart.back");
}

#[test]
fn a_stopped_follower_restarts_on_its_ports_and_store() {
    let mut c = NatsCluster::start(3);
    let leader = c.leader_index().unwrap();
    let f = (0..3).find(|&i| i != leader).unwrap();
    let url = c.url(f);
    c.stop(f);
    assert!(!c.is_running(f));
    assert!(NatsConn::connect(&url, Duration::from_secs(1)).is_err(), "{url} still accepts after stop");
    // The other two keep their leader: losing a follower needs no election.
    assert_eq!(c.leader_index(), Some(leader));
    c.restart(f);
    assert_eq!(c.url(f), url);
    assert_eq!(c.leader_index(), Some(leader), "the leader stayed through the follower's restart");
    assert_eq!(nats_roundtrip(&url, "presence.peer.back", b"back").unwrap(), b"back");
    let jsz = c.jsz(f);
    assert!(jsz["config"]["store_dir"].as_str().unwrap().starts_with(c.store_dir(f).to_str().unwrap()));
    // A crash of the same follower, then a restart: the same again.
    c.kill(f);
    c.restart(f);
    assert_eq!(c.leader_index(), Some(leader));
}
