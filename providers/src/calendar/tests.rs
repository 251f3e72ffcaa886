//! Runtime tests of the calendar provider without a hub: [`ProviderContext::for_test`] records
//! its signals and feed changes, and a scripted peer plays the token endpoint and Graph
//! `getSchedule` — failing, then answering again. Also what the parser tests share: the times
//! they count from and the check of a parsed mailbox.

use std::collections::HashSet;
use std::time::Duration;

use presence_actors::directory::{from_csv, Directory, NumberPlan};
use presence_actors::hub::SinkEvent;
use presence_actors::model::{Activity, Availability};
use presence_actors::provider::ProviderContext;

use super::{BusyStatus, CalendarConfig, CalendarItem, MailboxSchedule};
use crate::common::config::{provider_error, valid_provider};
use crate::common::test_peer::{local, Reply, Request, TestPeer};

/// 2024-05-06T00:00:00Z, in ms: the day of the calendar fixtures.
pub(super) const DAY0: i64 = 1_714_953_600_000;
/// An hour, in ms.
pub(super) const H: i64 = 3_600_000;
/// A minute, in ms.
pub(super) const M: i64 = 60_000;

/// An item as a parser should give it.
pub(super) fn parsed(start: i64, end: i64, status: BusyStatus, subject: Option<&str>, location: Option<&str>, private: bool, is_meeting: Option<bool>) -> CalendarItem {
    CalendarItem { start, end, status, subject: subject.map(str::to_string), location: location.map(str::to_string), private, is_meeting }
}

/// Checks a parsed mailbox without an error: its address, its merged free/busy view and its
/// items.
pub(super) fn assert_mailbox(got: &MailboxSchedule, mailbox: &str, merged: Option<&str>, items: &[CalendarItem]) {
    assert_eq!(got.mailbox, mailbox);
    assert_eq!(got.error, None, "{mailbox}");
    assert_eq!(got.merged.as_deref(), merged, "{mailbox}");
    assert_eq!(got.items.len(), items.len(), "{mailbox}: {:?}", got.items);
    for (it, want) in got.items.iter().zip(items) {
        assert_eq!(it, want, "{mailbox}");
    }
}

fn directory() -> Directory {
    let csv = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/directory/demo.csv")).expect("demo directory");
    let plan = NumberPlan::sweden();
    Directory::build(from_csv(&csv[..], &plan).expect("csv"), &plan).expect("directory")
}

/// getSchedule as it answers when well: everyone free, Åsa in a meeting from an hour ago to an
/// hour from now.
fn schedule(r: &Request) -> Reply {
    if r.path == "/token" {
        return Reply::Status(200, r#"{"access_token":"at","expires_in":3600}"#.into());
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let fmt = |ms: i64| jiff::Timestamp::from_millisecond(ms).expect("time").strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let now = presence_actors::model::now_ms();
    let items: Vec<serde_json::Value> = v["schedules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let meeting = m == "asa.ostberg@nordvik.se";
            let items = if meeting {
                serde_json::json!([{ "isPrivate": false, "status": "busy", "start": { "dateTime": fmt(now - 3_600_000), "timeZone": "UTC" }, "end": { "dateTime": fmt(now + 3_600_000), "timeZone": "UTC" } }])
            } else {
                serde_json::json!([])
            };
            serde_json::json!({ "scheduleId": m, "availabilityView": "", "scheduleItems": items })
        })
        .collect();
    Reply::Status(200, serde_json::json!({ "value": items }).to_string())
}

/// A backend that fails from the start: the feed is down after two failed polls; when it
/// answers again, every batch (320 mailboxes, 4 batches) is read — and Åsa's meeting delivered —
/// before the feed comes up.
#[tokio::test]
async fn a_failing_backend_goes_down_and_every_batch_is_read_again_before_up() {
    local(async {
        let peer = TestPeer::start(|r: &Request| {
            if r.path == "/token" {
                return Reply::Status(200, r#"{"access_token":"at","expires_in":3600}"#.into());
            }
            Reply::Status(500, r#"{"error":{"code":"InternalServerError","message":"boom"}}"#.into())
        })
        .await;
        let dir = directory();
        let asa = dir.by_id("asa.ostberg").expect("Åsa");
        let (ctx, mut h) = ProviderContext::for_test("cal-cloud", dir, "http://127.0.0.1:9");
        let text = format!(
            "name = \"cal-cloud\"\nbackend = \"graph\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\ntoken_url = \"{0}/token\"\ngraph_url = \"{0}\"\npoll_interval_secs = 300\nrequest_timeout_secs = 2\n",
            peer.url
        );
        let cfg: CalendarConfig = toml::from_str(&text).expect("config");
        let run = tokio::task::spawn_local(super::task(&cfg, ctx).expect("task"));
        let next = async |h: &mut presence_actors::provider::TestHarness| tokio::time::timeout(Duration::from_secs(10), h.events.recv()).await.expect("an event").expect("running");
        // A feed starts down; two failed polls make it "down" rather than "connecting".
        let t0 = std::time::Instant::now();
        while h.feed.report().state != "down" {
            assert!(t0.elapsed() < Duration::from_secs(10), "not down: {:?}", h.feed.report().state);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(peer.count("POST", "/users/") >= 2, "two failed polls before down");
        assert!(!h.feed.report().up);
        assert!(h.drain().iter().all(|e| matches!(e, SinkEvent::Feed(false))), "nothing delivered while failing");
        peer.set(schedule);
        let mut people = HashSet::new();
        let mut asa_meeting = false;
        loop {
            match next(&mut h).await {
                SinkEvent::Signal(u, s) => {
                    // The slot is named after the provider (two calendar providers coexist).
                    assert_eq!(&*s.instance, "cal-cloud");
                    if u == asa && s.availability == Some(Availability::Busy) && s.activity == Some(Activity::InAMeeting) {
                        asa_meeting = true;
                    }
                    people.insert(u);
                }
                SinkEvent::Feed(true) => break,
                SinkEvent::Feed(false) => panic!("down twice"),
            }
        }
        assert_eq!(people.len(), 320, "every mailbox was read again before the feed came up");
        assert!(asa_meeting, "Åsa's meeting was delivered before up");
        h.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), run).await.expect("stops").expect("no panic").expect("ok");
    })
    .await;
}

/// Every key the config file may hold, through the provider table as the hub reads it: the
/// app's keys land in [`crate::common::microsoft::MicrosoftApp`], any other key is refused by
/// name, and each backend names the credentials it needs.
#[test]
fn config_keys_parse_flat_unknown_ones_are_refused_and_each_backend_names_what_it_needs() {
    let all = "type = \"calendar\"\nname = \"cal\"\nbackend = \"ews\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauthority = \"https://login.example\"\ntoken_url = \"https://login.example/tok\"\ngraph_url = \"https://graph.example\"\news_url = \"https://mail.example/EWS/Exchange.asmx\"\nusername = \"u\"\npassword = \"p\"\ngoogle_url = \"https://google.example\"\nrefresh_token = \"rt\"\npoll_interval_secs = 120\nwindow_hours = 12\ninterval_minutes = 30\nkeep_details = true\nkeywords = [{ prefix = \"Lunch\", availability = \"Away\", activity = \"Lunch\" }]\nrequest_timeout_secs = 20\ndown_after_failures = 4\n";
    let crate::ProviderConfig::Calendar(c) = valid_provider(all) else { panic!("calendar") };
    assert_eq!((c.app.tenant(), c.app.client_id(), c.app.client_secret()), (Some("t"), "c", "s"));
    assert_eq!((c.app.authority.as_str(), c.app.graph_url.as_str()), ("https://login.example", "https://graph.example"));
    assert_eq!(c.token_endpoint(), "https://login.example/tok");
    assert_eq!((c.login.username.as_deref(), c.refresh_token.as_deref(), c.google_url.as_str()), (Some("u"), Some("rt"), "https://google.example"));
    assert_eq!((c.poll_interval_secs, c.window_hours, c.interval_minutes, c.request_timeout_secs, c.down_after_failures), (120, 12, 30, 20, 4));
    assert_eq!((c.keep_details, c.keywords.len()), (true, 1));

    let graph = "type = \"calendar\"\nname = \"cal\"\nbackend = \"graph\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n";
    let crate::ProviderConfig::Calendar(c) = valid_provider(graph) else { panic!("calendar") };
    assert_eq!(c.token_endpoint(), "https://login.microsoftonline.com/t/oauth2/v2.0/token");
    assert_eq!((c.app.graph_url.as_str(), c.poll_interval_secs, c.request_timeout_secs, c.down_after_failures), ("https://graph.microsoft.com/v1.0", 300, 30, 2));
    let google = "type = \"calendar\"\nname = \"cal\"\nbackend = \"google\"\nclient_id = \"c\"\nclient_secret = \"s\"\nrefresh_token = \"rt\"\n";
    let crate::ProviderConfig::Calendar(c) = valid_provider(google) else { panic!("calendar") };
    assert_eq!(c.token_endpoint(), "https://oauth2.googleapis.com/token");

    for (text, want) in [
        (format!("{graph}ews = \"x\"\n"), "unknown field `ews`"),
        (graph.replace("client_secret = \"s\"\n", ""), "the graph backend needs tenant_id (or token_url), client_id and client_secret"),
        (graph.replace("tenant_id = \"t\"\n", "token_url = \"https://login.example/tok\"\n"), ""),
        (google.replace("refresh_token = \"rt\"\n", ""), "the google backend needs client_id, client_secret and refresh_token"),
        (graph.replace("backend = \"graph\"", "backend = \"ews\""), "the ews backend needs ews_url"),
        (format!("{graph}authority = \"login.example\"\n"), "authority must be an http(s) URL"),
    ] {
        let e = provider_error(&text);
        assert!(if want.is_empty() { e.is_empty() } else { e.contains(want) }, "{want}: {e}");
    }
}

/// The mailboxes asked for in a getSchedule request.
fn asked(r: &Request) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let mut out: Vec<String> = v["schedules"].as_array().into_iter().flatten().filter_map(|m| m.as_str().map(str::to_string)).collect();
    out.sort();
    out
}

/// The directory changes while the provider runs (no restart, a 300 s interval): Åsa's address
/// changes, Cy joins and Bo leaves — the new addresses are polled at once (Cy's calendar
/// delivered) and Bo's and Åsa's old one no longer.
#[tokio::test]
async fn the_polled_mailboxes_follow_the_live_directory() {
    use presence_actors::directory::Person;
    local(async {
        let peer = TestPeer::start(schedule).await;
        let person = |id: &str, mail: &str| Person { email: Some(mail.into()), ..Person::new(id, id) };
        let (asa, bo, cy) = (person("asa", "asa.ostberg@nordvik.se"), person("bo", "bo@nordvik.se"), person("cy", "cy@nordvik.se"));
        let dir = Directory::build(vec![asa.clone(), bo, Person::new("di", "no mailbox")], &NumberPlan::sweden()).expect("directory");
        let (ctx, mut h) = ProviderContext::for_test("cal", dir, "http://127.0.0.1:9");
        let text = format!("name = \"cal\"\nbackend = \"graph\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\ntoken_url = \"{0}/token\"\ngraph_url = \"{0}\"\npoll_interval_secs = 300\n", peer.url);
        let cfg: CalendarConfig = toml::from_str(&text).expect("config");
        let run = tokio::task::spawn_local(super::task(&cfg, ctx).expect("task"));
        let feed = tokio::time::timeout(Duration::from_secs(10), h.next_feed_change()).await.expect("the first poll");
        assert_eq!(feed, Some(true));
        let polls = peer.requests("POST", "/users/");
        assert_eq!(polls.iter().map(asked).collect::<Vec<_>>(), [vec!["asa.ostberg@nordvik.se".to_string(), "bo@nordvik.se".into()]]);

        // Åsa's address changes, Cy joins, Bo leaves.
        let asa_moved = Person { email: Some("asa@nordvik.se".into()), ..asa };
        let (next, _) = h.directory.current().next(vec![asa_moved, cy]).expect("next version");
        let next = next.expect("the version changes something");
        h.directory.replace(std::sync::Arc::new(next));
        let cy = h.directory.current().by_id("cy").expect("Cy");
        loop {
            let (u, _) = tokio::time::timeout(Duration::from_secs(10), h.next_signal()).await.expect("Cy's calendar within 10 s").expect("running");
            if u == cy {
                break;
            }
        }
        let polls = peer.requests("POST", "/users/");
        assert_eq!(polls.len(), 2, "one more poll, at once");
        assert_eq!(asked(&polls[1]), ["asa@nordvik.se", "cy@nordvik.se"], "the new mailboxes, and Bo's no longer");
        h.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), run).await.expect("stops").expect("no panic").expect("ok");
    })
    .await;
}
