//! Redis restarted (empty) in the middle of a run.

use std::time::{Duration, Instant};

use crate::cluster::{Cluster, Setup, free_port, spawn_redis_server, wait_port};

const PASSWORD: &str = "redis-canary-password-0123456789";

/// A private `redis-server` that keeps nothing on disk, so a restart
/// starts empty, as the machine's Redis does.
struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let p = port.to_string();
        let child = spawn_redis_server(&[
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            PASSWORD,
        ]);
        let r = PrivateRedis {
            port,
            child: Some(child),
        };
        wait_port(port, "redis-server");
        r
    }

    fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_costs_no_fetch_burst_and_everyone_recovers_stable() {
    redis_restart("stable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_costs_no_fetch_burst_and_everyone_recovers_classic() {
    redis_restart("classic").await;
}

async fn redis_restart(mode: &'static str) {
    let port = free_port();
    let mut redis = PrivateRedis::start(port);
    let mut c = Cluster::start(Setup {
        mode,
        redis: redis.url(),
        ..Setup::default()
    })
    .await;
    c.wait_owner(Duration::from_secs(10)).await;
    let (_, v) = c.token_from(0).await;
    let token = v["access_token"].as_str().unwrap().to_string();
    for i in c.live() {
        c.token_from(i).await;
    }
    c.advance(3600).await;
    let before = c.fetches();

    redis.stop();
    // Every instance notices, says so on /readyz, and keeps serving.
    for i in c.live() {
        let t = Instant::now();
        loop {
            let (s, v) = c.readyz(i).await;
            if s == 503 && v["shared"]["redis"]["up"] == false {
                let reason = v["shared"]["redis"]["reason"].as_str().unwrap();
                assert!(reason.contains("redis unreachable"), "{reason}");
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "hub {i}: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let m = c.metrics(i).await;
        assert!(m.contains("wxhub_redis_up 0"), "{m}");
    }
    // Into the refresh window: nobody may fetch blindly, and everyone
    // still serves the held, valid token.
    c.advance(7200 - 3600 - 100).await;
    for _ in 0..20 {
        for i in c.live() {
            let (s, v) = c.token_from(i).await;
            assert_eq!(s, 200, "hub {i}: {v}");
            assert_eq!(v["access_token"].as_str().unwrap(), token);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.fetches(), before, "no fetch while redis is away");
    assert_eq!(c.use_token(&token).await, 0);

    let _redis = PrivateRedis::start(port);
    // Back: one owner, which writes back or refreshes; one fetch at most
    // (the refresh that came due), and every instance ready and agreeing.
    c.wait_owner(Duration::from_secs(15)).await;
    let t = Instant::now();
    let fresh = loop {
        let mut tokens = Vec::new();
        let mut ready = true;
        for i in c.live() {
            let (s, v) = c.token_from(i).await;
            assert_eq!(s, 200, "hub {i}: {v}");
            tokens.push(v["access_token"].as_str().unwrap().to_string());
            ready &= c.readyz(i).await.0 == 200;
        }
        if ready && tokens.windows(2).all(|w| w[0] == w[1]) && tokens[0] != token {
            break tokens[0].clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no recovery: {tokens:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(c.fetches() - before, 1, "exactly the refresh that came due");
    assert_eq!(c.use_token(&fresh).await, 0);
    assert!(c.all_running(), "no instance crashed");
    for i in c.live() {
        let log = std::fs::read_to_string(&c.hub(i).log).unwrap();
        assert!(log.contains("redis reachable again"), "hub {i}:\n{log}");
        assert!(!log.contains(PASSWORD), "hub {i} logs the redis password");
        assert!(!c.readyz(i).await.1.to_string().contains(PASSWORD));
    }
}

/// Redis drops every pub/sub connection (as on a failover or a proxy
/// restart): the instances resubscribe, and a report sent to a follower
/// still reaches the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_subscriptions_are_reestablished() {
    let redis = PrivateRedis::start(free_port());
    let c = Cluster::start(Setup {
        redis: redis.url(),
        instances: 2,
        ..Setup::default()
    })
    .await;
    let (owner, _) = c.wait_owner(Duration::from_secs(10)).await;
    let follower = 1 - owner;
    let (_, v) = c.token_from(follower).await;
    let old = v["access_token"].as_str().unwrap().to_string();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 2, "one subscription per instance");
    let t = Instant::now();
    loop {
        let n: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{}:requests", c.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        if n[0].1 == 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "not resubscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.kill_token_elsewhere().await;
    let before = c.fetches();
    let (s, v) = c.invalidate_at(follower, &old).await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["access_token"].as_str().unwrap(), old);
    assert_eq!(c.fetches() - before, 1);
}

/// `rediss://` with a private CA (`store.tls_ca_file`), against a Redis that
/// speaks only TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca() {
    let dir =
        std::env::temp_dir().join(format!("wxhub-tls-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let p = port.to_string();
    let mut server = spawn_redis_server(&[
        "--port".as_ref(),
        "0".as_ref(),
        "--tls-port".as_ref(),
        p.as_ref(),
        "--bind".as_ref(),
        "127.0.0.1".as_ref(),
        "--tls-cert-file".as_ref(),
        cert_file.as_os_str(),
        "--tls-key-file".as_ref(),
        key_file.as_os_str(),
        "--tls-auth-clients".as_ref(),
        "no".as_ref(),
        "--save".as_ref(),
        "".as_ref(),
        "--appendonly".as_ref(),
        "no".as_ref(),
    ] as &[&std::ffi::OsStr]);
    wait_port(port, "redis-server (TLS)");
    {
        let c = Cluster::start(Setup {
            redis: format!("rediss://127.0.0.1:{port}"),
            redis_tls_ca: Some(cert_file.clone()),
            instances: 2,
            ..Setup::default()
        })
        .await;
        c.wait_owner(Duration::from_secs(10)).await;
        let (_, a) = c.token_from(0).await;
        let (_, b) = c.token_from(1).await;
        assert_eq!(a["access_token"], b["access_token"], "shared over TLS");
        assert_eq!(c.fetches(), 1);
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Redis away longer than the token lives: instances answer 503 with
/// Retry-After and say why, and still fetch nothing blindly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_away_past_expiry_instances_refuse_rather_than_fetch() {
    let port = free_port();
    let mut redis = PrivateRedis::start(port);
    let c = Cluster::start(Setup {
        mode: "stable",
        redis: redis.url(),
        instances: 2,
        ..Setup::default()
    })
    .await;
    c.wait_owner(Duration::from_secs(10)).await;
    for i in c.live() {
        assert_eq!(c.token_from(i).await.0, 200);
    }
    let before = c.fetches();
    redis.stop();
    c.advance(7300).await;
    for i in c.live() {
        let t = Instant::now();
        loop {
            let r = c
                .http
                .get(format!(
                    "{}/v1/apps/{}/access_token",
                    c.hub(i).base,
                    crate::cluster::APPID
                ))
                .bearer_auth(&c.key)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").is_some();
            let v: serde_json::Value = r.json().await.unwrap();
            if status == 503 {
                assert!(retry, "Retry-After");
                let msg = v["error"]["message"].as_str().unwrap();
                assert!(msg.contains("redis"), "{msg}");
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "hub {i}: {status} {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(c.fetches(), before, "nothing fetched blindly");
    let _redis = PrivateRedis::start(port);
    let t = Instant::now();
    loop {
        let mut ok = true;
        for i in c.live() {
            ok &= c.token_from(i).await.0 == 200;
        }
        if ok {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.fetches() - before, 1, "one fetch once Redis is back");
}
