use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn upstream_errors_are_retried_with_backoff_while_the_valid_token_is_served() {
    let hub = TestHub::with(Options {
        tickets: "[]",
        ..Options::default()
    })
    .await;
    let t1 = hub.token().await;
    // Go to the refresh point (stable: inside the last 300 s).
    hub.advance(7200 - 300);
    hub.fault(json!({"endpoint": "/cgi-bin/stable_token", "count": 5, "errcode": -1}))
        .await;
    let mut attempts_at = Vec::new();
    let mut last_calls = hub.calls("/cgi-bin/stable_token");
    for _ in 0..300 {
        hub.run_due().await;
        let calls = hub.calls("/cgi-bin/stable_token");
        if calls > last_calls {
            attempts_at.push(hub.now());
            last_calls = calls;
        }
        if hub.issued("stable") == 2 {
            break;
        }
        // Still the valid token, whatever the upstream does.
        assert_eq!(hub.token().await, t1);
        hub.advance(1);
    }
    assert_eq!(hub.issued("stable"), 2, "recovered after the faults");
    assert_eq!(
        attempts_at.len(),
        6,
        "5 failures then a success: {attempts_at:?}"
    );
    let gaps: Vec<i64> = attempts_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "gaps grow: {gaps:?}");
    assert!(gaps[0] >= 1 && gaps[3] >= 8, "exponential: {gaps:?}");
    assert_ne!(hub.token().await, t1);
    let (s, _) = hub.readyz().await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_hanging_upstream_times_out_and_is_retried() {
    let hub = TestHub::with(Options {
        tickets: "[]",
        timeout_ms: 300,
        ..Options::default()
    })
    .await;
    let t1 = hub.token().await;
    hub.advance(7200 - 300);
    hub.fault(json!({"endpoint": "/cgi-bin/stable_token", "count": 2, "delay_ms": 2000}))
        .await;
    for _ in 0..100 {
        hub.run_due().await;
        if hub.issued("stable") == 2 {
            break;
        }
        assert_eq!(hub.token().await, t1);
        hub.advance(1);
    }
    assert_eq!(hub.issued("stable"), 2);
    let m = hub.metrics().await;
    assert!(m.contains("result=\"upstream_error\"} 2"), "{m}");
}

#[tokio::test]
async fn with_no_token_and_a_failing_upstream_clients_get_503_with_retry_after() {
    let hub = TestHub::with(Options {
        tickets: "[]",
        ..Options::default()
    })
    .await;
    hub.fault(json!({"endpoint": "/cgi-bin/stable_token", "count": 1, "http_status": 502}))
        .await;
    let r = hub
        .get_as(&format!("/v1/apps/{APPID}/access_token"), &hub.key)
        .await;
    assert_eq!(r.status(), 503);
    let r_retry_after: i64 = r
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("502"),
        "{v}"
    );
    // During the backoff, new requests do not hammer the platform.
    let calls = hub.calls("/cgi-bin/stable_token");
    for _ in 0..5 {
        let (s, _) = hub.get(&format!("/v1/apps/{APPID}/access_token")).await;
        assert_eq!(s, 503);
    }
    assert_eq!(hub.calls("/cgi-bin/stable_token"), calls);
    let retry_after: i64 = r_retry_after;
    hub.advance(retry_after);
    let (s, v) = hub.get(&format!("/v1/apps/{APPID}/access_token")).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn an_ip_whitelist_error_marks_the_account_unhealthy_names_the_ip_and_recovers() {
    let hub = TestHub::with(Options {
        tickets: "[]",
        ..Options::default()
    })
    .await;
    hub.sim_post(
        &format!("/_sim/accounts/{APPID}"),
        json!({"ip_whitelist": ["10.9.9.9"]}),
    )
    .await;
    let (s, v) = hub.get(&format!("/v1/apps/{APPID}/access_token")).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{v}"
    );
    let (s, r) = hub.readyz().await;
    assert_eq!(s, 503);
    assert!(
        r["problems"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{r}"
    );
    assert_eq!(r["problems"][0]["severity"], "unhealthy");
    // It retries slowly, not in a loop.
    let calls = hub.calls("/cgi-bin/stable_token");
    for _ in 0..10 {
        hub.run_due().await;
        hub.advance(10);
    }
    assert_eq!(
        hub.calls("/cgi-bin/stable_token"),
        calls,
        "no retry within the slow interval"
    );
    // The fix: allow the IP. No restart.
    hub.sim_post(
        &format!("/_sim/accounts/{APPID}"),
        json!({"ip_whitelist": ["10.9.9.9", "127.0.0.1"]}),
    )
    .await;
    hub.advance(300);
    hub.run_due().await;
    let (s, _) = hub.readyz().await;
    assert_eq!(s, 200);
    let (s, _) = hub.get(&format!("/v1/apps/{APPID}/access_token")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_used_up_daily_quota_pauses_fetching_until_the_next_beijing_day() {
    let mut o = Options {
        mode: "classic",
        tickets: "[]",
        ..Options::default()
    };
    o.world = world("token_daily_limit = 1");
    let hub = TestHub::with(o).await;
    let t1 = hub.token().await;
    // The platform rejects t1: the report needs a fetch, which hits 45009.
    hub.fault(json!({"endpoint": "/cgi-bin/openapi/quota/get", "count": 1, "errcode": 40001}))
        .await;
    let (_, v) = hub.invalidate(&t1).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("45009"),
        "{v}"
    );
    let calls = hub.calls("/cgi-bin/token");
    for _ in 0..20 {
        hub.run_due().await;
        hub.invalidate(&t1).await;
        hub.advance(60);
    }
    assert_eq!(
        hub.calls("/cgi-bin/token"),
        calls,
        "no call while the quota is used up"
    );
    let now = hub.now();
    let next_day = ((now + 8 * 3600) / 86400 + 1) * 86400 - 8 * 3600;
    hub.advance(next_day - now);
    hub.run_due().await;
    assert_eq!(hub.calls("/cgi-bin/token"), calls + 1);
    let (s, _) = hub.get(&format!("/v1/apps/{APPID}/access_token")).await;
    assert_eq!(s, 200);
}

/// WxJava #3043: a forced refresh against a platform that does not answer
/// hung its caller. Here no caller waits longer than
/// `refresh.wait_for_token_ms` (3 s in these tests) for a fetch the
/// platform holds for 8 s: first requests and a report of a dead token get
/// 503 with Retry-After, the one fetch finishes in the background, and
/// nobody's wait made a second one.
#[tokio::test]
async fn a_platform_that_holds_a_fetch_keeps_no_caller_past_the_wait_for_a_token() {
    let hub = TestHub::with(Options {
        tickets: "[]",
        timeout_ms: 20_000,
        ..Options::default()
    })
    .await;
    let bounded = |started: std::time::Instant, what: &str| {
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(6),
            "{what} waited {took:?} for a fetch the platform holds for 8 s"
        );
    };
    let hold = json!({"endpoint": "/cgi-bin/stable_token", "count": 1, "delay_ms": 8000});

    // No token yet: every first request waits at most the bound.
    hub.fault(hold.clone()).await;
    let started = std::time::Instant::now();
    let path = format!("/v1/apps/{APPID}/access_token");
    let answers = futures::future::join_all((0..4).map(|_| hub.get_as(&path, &hub.key))).await;
    bounded(started, "a first request");
    for r in answers {
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
    }
    let mut fetched = false;
    for _ in 0..200 {
        if hub.issued("stable") == 1 {
            fetched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(fetched, "the held fetch finishes");
    let t1 = hub.token().await;

    // The token killed elsewhere; the report of it forces a fetch the
    // platform holds again.
    hub.kill_token_elsewhere("stable").await;
    hub.fault(hold).await;
    let calls = hub.calls("/cgi-bin/stable_token");
    let started = std::time::Instant::now();
    let (s, v) = hub.invalidate(&t1).await;
    bounded(started, "the report of a dead token");
    assert_eq!(s, 503, "the fetch is still held: {v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    // A request meanwhile gets neither the token the platform rejected nor
    // a wait past the bound.
    let started = std::time::Instant::now();
    let (s, v) = hub.get(&path).await;
    bounded(started, "a request during the forced fetch");
    assert_eq!(s, 503, "the rejected token is not served: {v}");
    for _ in 0..200 {
        if hub.calls("/cgi-bin/stable_token") > calls && hub.issued("stable") == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, v) = hub.get(&path).await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["access_token"], t1.as_str());
    assert_eq!(
        hub.calls("/cgi-bin/stable_token") - calls,
        1,
        "one fetch for the report and every wait"
    );
}

/// A token the platform confirmed dead is not handed out again when its
/// replacement fails: callers get 503 with Retry-After (and no fetch of
/// their own), until the scheduler's retry brings a new one.
#[tokio::test]
async fn a_rejected_token_is_not_served_after_its_replacement_failed() {
    let hub = TestHub::with(Options {
        tickets: "[]",
        ..Options::default()
    })
    .await;
    let t1 = hub.token().await;
    hub.kill_token_elsewhere("stable").await;
    assert_ne!(hub.use_token(&t1).await, 0, "killed");
    hub.fault(json!({"endpoint": "/cgi-bin/stable_token", "count": 1, "errcode": -1}))
        .await;
    let (s, v) = hub.invalidate(&t1).await;
    assert_eq!(s, 503, "the replacement failed: {v}");
    let path = format!("/v1/apps/{APPID}/access_token");
    let calls = hub.calls("/cgi-bin/stable_token");
    let mut retry_after = 0;
    for _ in 0..5 {
        let r = hub.get_as(&path, &hub.key).await;
        assert_eq!(r.status(), 503);
        retry_after = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains("rejected"),
            "{v}"
        );
    }
    assert_eq!(
        hub.calls("/cgi-bin/stable_token"),
        calls,
        "no fetch of their own"
    );
    assert!(retry_after >= 1, "{retry_after}");
    hub.advance(retry_after);
    hub.run_due().await;
    let (s, v) = hub.get(&path).await;
    assert_eq!(s, 200, "{v}");
    let t2 = v["access_token"].as_str().unwrap();
    assert_ne!(t2, t1);
    assert_eq!(hub.use_token(t2).await, 0);
}
