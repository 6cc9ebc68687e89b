//! For the push tests: the hub and simulator configured for pushes, and
//! waiting helpers; the subscriber is in `subscriber.rs`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
pub use crate::subscriber::*;

pub const PUSH_TOKEN: &str = "pushtoken0123456789";
/// The official sample key (docs/platform.md §8.4).
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const AES_KEY_2: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";

/// `[accounts.push]` for APPID with one subscriber per `(name, url, extra)`.
pub fn push_section(mode: &str, extra: &str, subs: &[(&str, String, &str)]) -> String {
    let key = if mode == "plain" {
        String::new()
    } else {
        format!("encoding_aes_key = \"{AES_KEY}\"\n")
    };
    let mut s =
        format!("[accounts.push]\ntoken = \"{PUSH_TOKEN}\"\nmode = \"{mode}\"\n{key}{extra}\n");
    for (name, url, more) in subs {
        s.push_str(&format!(
            "[[accounts.push.subscribers]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SUB_SECRET}\"\ntimeout_ms = 2000\n{more}\n"
        ));
    }
    s
}

/// The simulator's account, pushing to the hub in `mode` with `key`.
pub fn sim_account(mode: &str, key: &str, settings: &str) -> String {
    let w = world(&format!(
        "original_id = \"gh_0123456789ab\"\npush_token = \"{PUSH_TOKEN}\"\nencoding_aes_key = \"{key}\"\npush_mode = \"{mode}\"\n"
    ));
    format!("{settings}\n{w}")
}

/// Worker settings for tests: quick ticks, short backoff.
pub const FAST: &str = "\n[push]\ntick_ms = 20\nbackoff_initial_secs = 5\nbackoff_max_secs = 600\n";

impl TestHub {
    /// Points the simulator's push URL of APPID at this hub.
    pub async fn point_push_here(&self) {
        let v = self
            .sim_post(
                &format!("/_sim/accounts/{APPID}"),
                json!({"push_url": self.url(&format!("/push/{APPID}"))}),
            )
            .await;
        assert_eq!(v["ok"], true, "{v}");
    }

    /// A person's action through the simulator; waits for the platform's
    /// delivery (all attempts) and returns it.
    pub async fn act(&self, person: &str, action: &str, body: Value) -> Value {
        let mut body = body;
        body["appid"] = json!(APPID);
        body["wait"] = json!(true);
        let v = self
            .sim_post(&format!("/_sim/people/{person}/{action}"), body)
            .await;
        assert!(v["delivery"].is_object(), "{action}: {v}");
        v
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_post(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub fn push_metric(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        self.hub().app().metrics.counter(name, labels)
    }

    /// Advances the virtual clock in steps, letting the worker run at each.
    pub async fn advance_slowly(&self, total: i64, step: i64) {
        let mut left = total;
        while left > 0 {
            let s = step.min(left);
            self.advance(s);
            left -= s;
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
}

/// The attempt the simulator recorded last for a delivery.
pub fn last_attempt(delivery: &Value) -> Value {
    delivery["delivery"]["attempts"]
        .as_array()
        .and_then(|a| a.last().cloned())
        .unwrap_or(Value::Null)
}
