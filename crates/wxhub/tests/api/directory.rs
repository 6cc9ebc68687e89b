//! Accounts and clients changed at run time through the admin API: served
//! at once, removed for good, a reset secret recovered, every change
//! audited, and all of it still there after a restart.

use serde_json::{Value, json};

use crate::helpers::*;

const NEW: &str = "wx4444444444444444";
const NEW_SECRET: &str = "new-account-secret-0123456789abcd";

fn with_new_account() -> Options {
    Options {
        world: world(&format!(
            "\n[[accounts]]\nappid = \"{NEW}\"\nsecret = \"{NEW_SECRET}\"\nname = \"Added later\"\n"
        )),
        ..Options::default()
    }
}

/// The admin API as `alice`.
fn admin(hub: &TestHub) -> AdminApi<'_> {
    AdminApi(hub)
}

struct AdminApi<'a>(&'a TestHub);

impl AdminApi<'_> {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self
            .0
            .http
            .request(method, self.0.url(path))
            .bearer_auth(&self.0.admin)
            .header("x-wxhub-actor", "alice")
            .json(&body.unwrap_or(Value::Null))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    async fn put_with(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn patch_with(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    async fn post_with(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
}

/// A client for `apps`, made through the API; its key.
async fn new_client(hub: &TestHub, name: &str, apps: &[&str]) -> String {
    let (s, v) = admin(hub)
        .post_with("/v1/admin/clients", json!({"name": name, "apps": apps}))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["source"], "api");
    v["key"].as_str().unwrap().to_string()
}

fn sim_calls(hub: &TestHub, appid: &str, path: &str) -> u64 {
    hub.sim.sim().stats()["apps"][appid]["calls"][path]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn an_account_added_through_the_api_is_served_at_once_and_a_removed_one_is_gone() {
    let hub = TestHub::with(with_new_account()).await;
    let put = format!("/v1/admin/accounts/{NEW}");
    let (s, v) = admin(&hub)
        .put_with(
            &put,
            json!({"secret": NEW_SECRET, "name": "Added later", "tickets": []}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["source"], "api");
    assert!(v.get("secret").is_none(), "{v}");
    assert!(!v.to_string().contains(NEW_SECRET));
    let key = new_client(&hub, "later", &[NEW]).await;
    let r = hub
        .get_as(&format!("/v1/apps/{NEW}/access_token"), &key)
        .await;
    assert_eq!(r.status(), 200);
    let token: Value = r.json().await.unwrap();
    assert!(token["access_token"].as_str().is_some());
    let series = format!("appid=\"{NEW}\"");
    let metrics = hub.metrics().await;
    assert!(metrics.contains(&series), "{metrics}");
    // Listed with the others.
    let apps = hub.apps().await;
    assert!(
        apps["apps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["appid"] == NEW),
        "{apps}"
    );

    // Removed: 404 on every route, no more upstream calls, nothing kept.
    let (s, _) = admin(&hub).delete(&put).await;
    assert_eq!(s, 204);
    let r = hub
        .get_as(&format!("/v1/apps/{NEW}/access_token"), &key)
        .await;
    assert_eq!(r.status(), 404);
    let (s, _) = admin(&hub).get(&put).await;
    assert_eq!(s, 404);
    // Its series leave /metrics with it; the other accounts' stay.
    let metrics = hub.metrics().await;
    assert!(!metrics.contains(&series), "{metrics}");
    assert!(metrics.contains(&format!("appid=\"{APPID}\"")), "{metrics}");
    let fetched = sim_calls(&hub, NEW, "/cgi-bin/stable_token");
    assert_eq!(fetched, 1);
    hub.advance(3 * 7200);
    hub.run_due().await;
    assert_eq!(sim_calls(&hub, NEW, "/cgi-bin/stable_token"), fetched);
    let kept = hub
        .hub()
        .app()
        .store
        .load_credential(NEW, "access_token:stable")
        .await
        .unwrap();
    assert!(kept.is_none());
    let (s, _) = admin(&hub).delete(&put).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_subscriber_taken_off_an_account_leaves_metrics_with_its_backlog() {
    let hub = TestHub::with(with_new_account()).await;
    let put = format!("/v1/admin/accounts/{NEW}");
    let sub = |name: &str| json!({"name": name, "url": format!("http://127.0.0.1:9/{name}"), "secret": "subscriber-secret-0123456789"});
    let push =
        |subs: Vec<Value>| json!({"mode": "plain", "token": "pushtoken", "subscribers": subs});
    let (s, v) = admin(&hub)
        .put_with(
            &put,
            json!({"secret": NEW_SECRET, "tickets": [], "push": push(vec![sub("crm"), sub("bot")])}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // The backlog gauges are set as the backlog is read.
    let (s, v) = admin(&hub).get("/v1/push").await;
    assert_eq!(s, 200, "{v}");
    let metrics = hub.metrics().await;
    for name in ["crm", "bot"] {
        assert!(
            metrics.contains(&format!("subscriber=\"{name}\"")),
            "{metrics}"
        );
    }
    let (s, v) = admin(&hub)
        .patch_with(&put, json!({"push": push(vec![sub("crm")])}))
        .await;
    assert_eq!(s, 200, "{v}");
    let metrics = hub.metrics().await;
    assert!(!metrics.contains("subscriber=\"bot\""), "{metrics}");
    assert!(metrics.contains("subscriber=\"crm\""), "{metrics}");
}

#[tokio::test]
async fn a_secret_changed_after_a_reset_recovers_the_account_without_a_restart() {
    let hub = TestHub::start().await;
    let before = hub.token().await;
    assert!(!before.is_empty());
    // Someone resets the AppSecret on the platform: the next fetch fails.
    hub.sim_post(
        &format!("/_sim/accounts/{APPID}"),
        json!({"secret": "the-new-secret-after-reset-000000"}),
    )
    .await;
    hub.advance(7300);
    hub.run_due().await;
    let (s, v) = hub.get(&format!("/v1/apps/{APPID}/access_token")).await;
    assert_eq!(s, 503, "{v}");
    let (s, v) = admin(&hub)
        .patch_with(
            &format!("/v1/admin/accounts/{APPID}"),
            json!({"secret": "the-new-secret-after-reset-000000"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["source"], "file+api");
    // The rest of the file's entry is kept.
    assert_eq!(v["jssdk_domains"], json!(["app.example.com"]));
    let after = hub.token().await;
    assert_ne!(after, before);
    let (s, v) = hub.readyz().await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn bad_definitions_are_refused_naming_the_field_and_change_nothing() {
    let hub = TestHub::with(with_new_account()).await;
    let put = format!("/v1/admin/accounts/{NEW}");
    for (body, key) in [
        (json!({"secret_env": "HOME"}), "secret_env"),
        (
            json!({"secret": "s", "jssdk_domains": ["https://x.example"]}),
            "jssdk_domains[0]",
        ),
        (
            json!({"secret": "s", "token_mode": "sometimes"}),
            "token_mode",
        ),
        (
            json!({"secret": "s", "push": {"mode": "plain", "token_file": "/etc/passwd"}}),
            "push.token_file",
        ),
        (
            json!({"secret": "s", "kind": "website", "push": {"mode": "plain", "token": "t"}}),
            "push",
        ),
    ] {
        let (s, v) = admin(&hub).put_with(&put, body.clone()).await;
        assert_eq!(s, 400, "{body} → {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.starts_with(&format!("{key}:")), "{body} → {m}");
    }
    let (s, _) = admin(&hub).get(&put).await;
    assert_eq!(s, 404);
    let (s, _) = admin(&hub).patch_with(&put, json!({"name": "x"})).await;
    assert_eq!(s, 404);
    let (s, v) = admin(&hub)
        .patch_with(
            &format!("/v1/admin/accounts/{APPID}"),
            json!({"colour": "red"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // Not for clients.
    let r = hub
        .send_as(
            reqwest::Method::PUT,
            &put,
            &hub.key,
            Some(&json!({"secret": NEW_SECRET})),
        )
        .await;
    assert_eq!(r.status(), 401);
    // A client for an account that does not exist.
    let (s, v) = admin(&hub)
        .post_with("/v1/admin/clients", json!({"name": "x", "apps": [NEW]}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("apps[0]:"),
        "{v}"
    );
    let (s, v) = admin(&hub)
        .post_with(
            "/v1/admin/clients",
            json!({"name": "shop", "apps": [APPID]}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
}

#[tokio::test]
async fn clients_are_created_with_a_key_shown_once_and_revoked_at_once() {
    let hub = TestHub::start().await;
    let key = new_client(&hub, "crm", &[APPID]).await;
    assert!(key.starts_with("wxh_"));
    let r = hub
        .get_as(&format!("/v1/apps/{APPID}/access_token"), &key)
        .await;
    assert_eq!(r.status(), 200);
    let (_, list) = admin(&hub).get("/v1/admin/clients").await;
    assert!(!list.to_string().contains(&key));
    assert!(
        list["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "crm"),
        "{list}"
    );
    let (s, _) = admin(&hub).delete("/v1/admin/clients/crm").await;
    assert_eq!(s, 204);
    let r = hub
        .get_as(&format!("/v1/apps/{APPID}/access_token"), &key)
        .await;
    assert_eq!(r.status(), 401);
    // A file client too.
    let (s, _) = admin(&hub).delete("/v1/admin/clients/good").await;
    assert_eq!(s, 204);
    let r = hub
        .get_as(&format!("/v1/apps/{APPID}/access_token"), &hub.good_key)
        .await;
    assert_eq!(r.status(), 401);
    let (s, _) = admin(&hub).delete("/v1/admin/clients/good").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn every_change_is_audited_without_its_secret_and_survives_a_restart() {
    let mut hub = TestHub::with(with_new_account()).await;
    let put = format!("/v1/admin/accounts/{NEW}");
    let (s, _) = admin(&hub)
        .put_with(&put, json!({"secret": NEW_SECRET, "tickets": []}))
        .await;
    assert_eq!(s, 201);
    let (s, _) = admin(&hub)
        .patch_with(&put, json!({"name": "Renamed"}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = admin(&hub)
        .delete(&format!("/v1/admin/accounts/{WEB_APPID}"))
        .await;
    assert_eq!(s, 204);
    let key = new_client(&hub, "later", &[NEW]).await;
    let (s, audit) = admin(&hub).get("/v1/admin/audit?limit=10").await;
    assert_eq!(s, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "client.create",
            "account.remove",
            "account.change",
            "account.create"
        ]
    );
    assert!(
        entries[3]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin (alice) from 127.0.0.1"),
        "{audit}"
    );
    assert_eq!(entries[3]["target"], NEW);
    assert!(
        entries[3]["fields"]
            .as_array()
            .unwrap()
            .contains(&json!("secret"))
    );
    let text = audit.to_string();
    assert!(!text.contains(NEW_SECRET) && !text.contains(&key), "{text}");
    let (s, page) = admin(&hub).get("/v1/admin/audit?limit=2").await;
    assert_eq!(s, 200);
    let before = page["next_before"].as_u64().unwrap();
    let (_, rest) = admin(&hub)
        .get(&format!("/v1/admin/audit?limit=10&before={before}"))
        .await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 2, "{rest}");

    hub.restart().await;
    let (s, v) = admin(&hub).get(&put).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "Renamed");
    let (s, _) = admin(&hub)
        .get(&format!("/v1/admin/accounts/{WEB_APPID}"))
        .await;
    assert_eq!(s, 404, "a removed file account stays removed");
    let r = hub
        .get_as(&format!("/v1/apps/{NEW}/access_token"), &key)
        .await;
    assert_eq!(r.status(), 200);
}

async fn cli(hub: &TestHub, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxhub"))
        .args(args)
        .env("WXHUB_URL", hub.hub().base_url())
        .env("WXHUB_ADMIN_KEY", &hub.admin)
        .env("USER", "bob")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The CLI over the admin API: secrets from the environment, never the
/// command line; errors name the flag or the field.
#[tokio::test]
async fn the_cli_adds_changes_and_removes_accounts_and_makes_clients() {
    let hub = TestHub::with(with_new_account()).await;
    let (ok, out) = cli(
        &hub,
        &[
            "accounts",
            "put",
            NEW,
            "--secret-env",
            "NEW_SECRET",
            "--name",
            "From the CLI",
            "--tickets=",
        ],
        &[("NEW_SECRET", NEW_SECRET)],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("From the CLI") && !out.contains(NEW_SECRET),
        "{out}"
    );
    let (ok, out) = cli(&hub, &["clients", "create", "cli-made", "--apps", NEW], &[]).await;
    assert!(ok, "{out}");
    let key = out.split_whitespace().last().unwrap().to_string();
    let r = hub
        .get_as(&format!("/v1/apps/{NEW}/access_token"), &key)
        .await;
    assert_eq!(r.status(), 200, "{out}");
    let (ok, out) = cli(
        &hub,
        &["accounts", "set", NEW, "--token-mode", "sometimes"],
        &[],
    )
    .await;
    assert!(!ok && out.contains("token_mode"), "{out}");
    let (ok, out) = cli(
        &hub,
        &["accounts", "set", NEW, "--secret-env", "UNSET_VAR_X"],
        &[],
    )
    .await;
    assert!(!ok && out.contains("--secret-env"), "{out}");
    // A change from the version shown goes through; one from an older
    // version is refused and changes nothing.
    let (ok, out) = cli(&hub, &["accounts", "show", NEW], &[]).await;
    assert!(ok, "{out}");
    let shown: Value = serde_json::from_str(&out).expect("show prints JSON");
    let tag = shown["etag"].as_str().expect("an etag").to_string();
    let (ok, out) = cli(
        &hub,
        &[
            "accounts",
            "set",
            NEW,
            "--if-match",
            &tag,
            "--name",
            "Renamed",
        ],
        &[],
    )
    .await;
    assert!(ok && out.contains("Renamed"), "{out}");
    let (ok, out) = cli(
        &hub,
        &[
            "accounts",
            "set",
            NEW,
            "--if-match",
            &tag,
            "--name",
            "Stale",
        ],
        &[],
    )
    .await;
    assert!(
        !ok && out.contains("412") && out.contains("changed since"),
        "{out}"
    );
    let (ok, out) = cli(&hub, &["accounts", "remove", NEW, "--if-match", &tag], &[]).await;
    assert!(!ok && out.contains("412"), "{out}");
    let (_, v) = admin(&hub).get(&format!("/v1/admin/accounts/{NEW}")).await;
    assert_eq!(v["name"], "Renamed");
    assert_eq!(v["paused"], false);
    let (ok, out) = cli(&hub, &["accounts", "set", NEW, "--paused", "true"], &[]).await;
    assert!(ok && out.contains("\"paused\": true"), "{out}");
    let (ok, out) = cli(&hub, &["accounts", "set", NEW, "--paused", "maybe"], &[]).await;
    assert!(!ok && out.contains("--paused"), "{out}");
    let (ok, out) = cli(&hub, &["accounts", "set", NEW, "--paused", "false"], &[]).await;
    assert!(ok && out.contains("\"paused\": false"), "{out}");
    let (ok, out) = cli(&hub, &["audit"], &[]).await;
    assert!(
        ok && out.contains("account.create") && out.contains("admin (bob)"),
        "{out}"
    );
    let (ok, out) = cli(&hub, &["accounts", "remove", NEW], &[]).await;
    assert!(ok, "{out}");
    let r = hub
        .get_as(&format!("/v1/apps/{NEW}/access_token"), &key)
        .await;
    assert_eq!(r.status(), 404);
    let (ok, out) = cli(&hub, &["clients", "revoke", "cli-made"], &[]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli(
        &hub,
        &["accounts", "list", "--q", "Hub"],
        &[("WXHUB_ADMIN_KEY", "wrong")],
    )
    .await;
    assert!(!ok && out.contains("401"), "{out}");
}

/// `ETag` and `If-Match`: a change made from an older view of the account
/// is refused with 412 and changes nothing; `If-None-Match: *` creates
/// only.
#[tokio::test]
async fn a_change_made_from_an_older_version_is_refused_with_412_and_changes_nothing() {
    let hub = TestHub::with(with_new_account()).await;
    let path = format!("/v1/admin/accounts/{NEW}");
    let send = |method: reqwest::Method, cond: Option<(&str, String)>, body: Option<Value>| {
        let mut req = hub
            .http
            .request(method, hub.url(&path))
            .bearer_auth(&hub.admin);
        if let Some((name, value)) = cond {
            req = req.header(name, value);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let etag = r
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, etag, body)
        }
    };
    use reqwest::Method;
    let define = json!({"secret": NEW_SECRET, "name": "First", "tickets": []});

    // No such account yet: If-Match cannot hold; If-None-Match: * creates.
    let (s, _, v) = send(
        Method::PATCH,
        Some(("if-match", "*".into())),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, created, v) = send(
        Method::PUT,
        Some(("if-none-match", "*".into())),
        Some(define.clone()),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let created = created.expect("an ETag on PUT");
    let (s, _, v) = send(
        Method::PUT,
        Some(("if-none-match", "*".into())),
        Some(define.clone()),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (412, Some("precondition_failed")),
        "{v}"
    );

    let (s, seen, _) = send(Method::GET, None, None).await;
    assert_eq!((s, seen.as_deref()), (200, Some(created.as_str())));

    // Alice changes it from the version she read.
    let (s, after_alice, v) = send(
        Method::PATCH,
        Some(("if-match", created.clone())),
        Some(json!({"name": "Alice's"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let after_alice = after_alice.expect("an ETag on PATCH");
    assert_ne!(after_alice, created);

    // Bob read it before Alice's change: each of his changes is refused.
    let (s, _, v) = send(
        Method::PATCH,
        Some(("if-match", created.clone())),
        Some(json!({"name": "Bob's"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (412, Some("precondition_failed")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&after_alice),
        "{v}"
    );
    let (s, _, v) = send(
        Method::PUT,
        Some(("if-match", created.clone())),
        Some(define.clone()),
    )
    .await;
    assert_eq!(s, 412, "{v}");
    let (s, _, v) = send(Method::DELETE, Some(("if-match", created.clone())), None).await;
    assert_eq!(s, 412, "{v}");
    // A weak tag never matches (strong comparison).
    let (s, _, _) = send(
        Method::DELETE,
        Some(("if-match", format!("W/{after_alice}"))),
        None,
    )
    .await;
    assert_eq!(s, 412);

    // Nothing of Bob's landed, and the account is still served.
    let (s, etag, v) = send(Method::GET, None, None).await;
    assert_eq!(
        (s, etag.as_deref(), v["name"].as_str()),
        (200, Some(after_alice.as_str()), Some("Alice's"))
    );
    let key = new_client(&hub, "later", &[NEW]).await;
    let served = hub
        .get_as(&format!("/v1/apps/{NEW}/access_token"), &key)
        .await;
    assert_eq!(served.status(), 200);
    let (_, audit) = admin(&hub).get("/v1/admin/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["client.create", "account.change", "account.create"]
    );

    // Among several tags, the current one; and a change without If-Match
    // still goes ahead.
    let (s, _, v) = send(
        Method::PATCH,
        Some(("if-match", format!("{created}, {after_alice}"))),
        Some(json!({"name": "Again"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, now, v) = send(Method::PATCH, None, Some(json!({"name": "Last"}))).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = send(Method::DELETE, Some(("if-match", now.unwrap())), None).await;
    assert_eq!(s, 204);
}

/// chanjarster #266: a switch that stops an account's fetches (while
/// another system takes the token over, or the quota is nearly gone).
/// Paused, the hub fetches nothing (scheduled, missing or reported), serves
/// the stored token while it is valid, then answers 503 saying why, and
/// stays ready; un-paused, it fetches once, at once.
#[tokio::test]
async fn a_paused_account_fetches_nothing_until_it_is_resumed() {
    let hub = TestHub::start().await;
    let t1 = hub.token().await;
    let path = format!("/v1/admin/accounts/{APPID}");
    let (s, v) = admin(&hub).patch_with(&path, json!({"paused": true})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["paused"], true, "{v}");
    let fetches = || {
        (
            sim_calls(&hub, APPID, "/cgi-bin/stable_token"),
            sim_calls(&hub, APPID, "/cgi-bin/ticket/getticket"),
        )
    };
    let before = fetches();
    assert_eq!(hub.token().await, t1, "the stored token is served");
    // Past the token's and the ticket's expiry: nothing is fetched.
    for _ in 0..6 {
        hub.advance(1800);
        hub.run_due().await;
    }
    let (s, v) = hub.get(&format!("/v1/apps/{APPID}/access_token")).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("paused"),
        "{v}"
    );
    let (s, v) = hub.invalidate(&t1).await;
    assert_eq!(s, 503, "{v}");
    let (s, v) = hub.get(&format!("/v1/apps/{APPID}/jsapi_ticket")).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(fetches(), before, "nothing fetched while paused");
    // Deliberate, so not a reason to take the hub out of service.
    let (s, v) = hub.readyz().await;
    assert_eq!(s, 200, "{v}");
    let (_, apps) = admin(&hub).get("/v1/apps").await;
    assert!(apps.to_string().contains("paused by an operator"), "{apps}");

    let (s, v) = admin(&hub)
        .patch_with(&path, json!({"paused": false}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["paused"], false, "{v}");
    hub.run_due().await;
    let t2 = hub.token().await;
    assert_ne!(t2, t1);
    assert_eq!(hub.use_token(&t2).await, 0);
    assert_eq!(fetches().0, before.0 + 1, "one fetch on resuming");
}
