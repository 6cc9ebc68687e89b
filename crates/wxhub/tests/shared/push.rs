//! The push gateway across process deaths: `wxhub serve` processes
//! SIGKILLed after acknowledging pushes (SQLite), and in shared mode the
//! delivering instance SIGKILLed while it retries.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::*;
use crate::subscriber::*;

const PUSH_TOKEN: &str = "pushtoken0123456789";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn setup(sub: &Subscriber, instances: usize, sqlite: bool) -> Setup {
    Setup {
        instances,
        sqlite,
        mode: "stable",
        sim_account: format!(
            "original_id = \"gh_0123456789ab\"\npush_token = \"{PUSH_TOKEN}\"\nencoding_aes_key = \"{AES_KEY}\"\npush_mode = \"safe\"\n"
        ),
        push: format!(
            "[accounts.push]\ntoken = \"{PUSH_TOKEN}\"\nmode = \"safe\"\nencoding_aes_key = \"{AES_KEY}\"\n\
             [[accounts.push.subscribers]]\nname = \"crm\"\nurl = \"{}\"\nsecret = \"{SUB_SECRET}\"\ntimeout_ms = 2000\n\
             [push]\ntick_ms = 20\nbackoff_initial_secs = 5\nbackoff_max_secs = 600\n",
            sub.url()
        ),
        ..Setup::default()
    }
}

impl Cluster {
    /// The simulator pushes to hub `i`.
    async fn push_to(&self, i: usize) {
        let v = self
            .sim_post(
                &format!("/_sim/accounts/{APPID}"),
                json!({"push_url": format!("{}/push/{APPID}", self.hub(i).base)}),
            )
            .await;
        assert_eq!(v["ok"], true, "{v}");
    }

    /// A person's action, delivered by the simulator (all attempts awaited).
    async fn act(&self, person: &str, action: &str, mut body: Value) -> Value {
        body["appid"] = json!(APPID);
        body["wait"] = json!(true);
        let v = self
            .sim_post(&format!("/_sim/people/{person}/{action}"), body)
            .await;
        let attempts = &v["delivery"]["attempts"];
        assert_eq!(
            attempts.as_array().map(Vec::len),
            Some(1),
            "answered at the first attempt: {v}"
        );
        v
    }

    /// Advances the virtual clock in steps; every live hub follows, and its
    /// worker gets a moment at each step.
    async fn advance_slowly(&self, total: i64, step: i64) {
        let mut left = total;
        while left > 0 {
            self.advance(step.min(left)).await;
            left -= step;
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
    }
}

fn per_person(got: &[Received]) -> HashMap<String, Vec<String>> {
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    for r in got {
        if r.body["msg_type"] == "text" {
            per.entry(r.body["from_user_name"].as_str().unwrap().into())
                .or_default()
                .push(r.body["fields"]["content"].as_str().unwrap().into());
        }
    }
    per
}

fn assert_once_each(sub: &Subscriber, n: usize) {
    let got = sub.delivered();
    let mut ids: Vec<&str> = got.iter().map(|r| r.delivery_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "a delivery id accepted twice");
    assert_eq!(got.len(), n, "each message once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_right_after_acknowledging_delivers_after_restart() {
    let sub = Subscriber::start(Mode::Down(503)).await;
    let mut c = Cluster::start(setup(&sub, 1, true)).await;
    c.push_to(0).await;
    c.act("alice", "text", json!({"content": "acked-0"})).await;
    c.act("alice", "text", json!({"content": "acked-1"})).await;
    // The first attempt of acked-0 answered (503), and nothing more due
    // while the clock stands: an attempt still on the wire at the kill
    // would be accepted under `Up` below without the hub ever learning it.
    sub.wait_quiet(1, Duration::from_millis(300)).await;
    // Acknowledged to the platform; then SIGKILL, nothing graceful.
    c.kill(0);
    sub.set(Mode::Up);
    let h = c.spawn_hub().await;
    c.hubs[0] = Some(h);
    c.advance_slowly(1200, 300).await;
    let got = sub.wait_for_within(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_once_each(&sub, 2);
    assert_eq!(
        per_person(&got).into_values().next().unwrap(),
        ["acked-0", "acked-1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_another_instance_finishes_what_a_killed_deliverer_was_retrying() {
    let sub = Subscriber::start(Mode::Down(503)).await;
    let mut c = Cluster::start(setup(&sub, 2, false)).await;
    let (owner, _) = c.wait_owner(Duration::from_secs(10)).await;
    let other = 1 - owner;
    // Pushes reach either instance; the owner delivers.
    c.push_to(other).await;
    c.act("bob", "follow", json!({})).await;
    for i in 0..4 {
        c.push_to(i % 2).await;
        c.act("alice", "text", json!({"content": format!("a{i}")}))
            .await;
        c.act("bob", "text", json!({"content": format!("b{i}")}))
            .await;
    }
    // Retrying: the owner has failed at least twice on each person's first.
    c.advance_slowly(900, 300).await;
    let tried = sub.all().len();
    assert!(tried >= 4, "the owner was retrying: {tried} attempts");
    assert!(sub.delivered().is_empty());
    // No attempt of the owner's still on the wire (see the test above).
    sub.wait_quiet(tried, Duration::from_millis(500)).await;
    c.kill(owner);
    sub.set(Mode::Up);
    let (new_owner, took) = c.wait_owner(Duration::from_secs(15)).await;
    assert_eq!(new_owner, other, "took over in {took:?}");
    c.advance_slowly(1800, 300).await;
    let got = sub.wait_for_within(9, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_once_each(&sub, 9);
    for (who, list) in per_person(&got) {
        let mut sorted = list.clone();
        sorted.sort();
        assert_eq!(list, sorted, "{who}: in order");
        assert_eq!(list.len(), 4);
    }
    // The retry state came along: the first entry's attempt count goes on.
    let first = got
        .iter()
        .find(|r| r.body["event"] == "subscribe")
        .expect("the follow");
    assert!(
        first.body["attempt"].as_u64().unwrap() > 2,
        "{}",
        first.body
    );
    assert!(c.all_running());
}
