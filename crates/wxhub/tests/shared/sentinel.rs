//! Redis Sentinel: the hub asks the Sentinels for the primary, and follows
//! it through a failover without a restart.

use std::time::{Duration, Instant};

use crate::cluster::{APPID, Cluster, Setup, free_port, spawn_redis_server, wait_port};

/// A process killed when dropped.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server(args: &[&str]) -> Proc {
    Proc(spawn_redis_server(args))
}

fn data_node(port: u16, extra: &[&str]) -> Proc {
    let p = port.to_string();
    let mut args = vec![
        "--port",
        &p,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    args.extend_from_slice(extra);
    let proc = redis_server(&args);
    wait_port(port, "redis-server");
    proc
}

async fn query(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await
}

async fn replication(port: u16) -> String {
    query(port, &["INFO", "replication"])
        .await
        .ok()
        .and_then(|v| redis::from_redis_value::<String>(&v).ok())
        .unwrap_or_default()
}

async fn stored_token(port: u16, prefix: &str) -> Option<String> {
    let key = format!("{prefix}:{{{APPID}}}:cred:access_token:classic");
    query(port, &["HGET", &key, "v"])
        .await
        .ok()
        .and_then(|v| redis::from_redis_value::<Option<String>>(&v).ok())
        .flatten()
}

async fn until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_follows_the_primary_that_sentinel_names_through_a_failover() {
    let (pm, pr, ps) = (free_port(), free_port(), free_port());
    let primary = data_node(pm, &[]);
    let pm_s = pm.to_string();
    let _replica = data_node(pr, &["--replicaof", "127.0.0.1", &pm_s]);
    let dir = std::env::temp_dir().join(format!("wxhub-sentinel-{}-{ps}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {ps}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor wxm 127.0.0.1 {pm} 1\n\
             sentinel down-after-milliseconds wxm 500\n\
             sentinel failover-timeout wxm 3000\n",
            dir.display()
        ),
    )
    .unwrap();
    let _sentinel = redis_server(&[conf.to_str().unwrap(), "--sentinel"]);
    wait_port(ps, "the sentinel");
    until("the replica in sync", Duration::from_secs(15), || async {
        replication(pr).await.contains("master_link_status:up")
    })
    .await;
    until(
        "the sentinel sees the replica",
        Duration::from_secs(15),
        || async {
            query(ps, &["SENTINEL", "REPLICAS", "wxm"])
                .await
                .ok()
                .and_then(|v| redis::from_redis_value::<Vec<redis::Value>>(&v).ok())
                .is_some_and(|r| !r.is_empty())
        },
    )
    .await;

    // The URL's host is not used (nothing listens on port 1): the
    // Sentinels name the primary.
    let c = Cluster::start(Setup {
        instances: 2,
        redis: "redis://127.0.0.1:1/0".into(),
        store_extra: format!("sentinels = [\"127.0.0.1:{ps}\"]\nsentinel_master = \"wxm\""),
        ..Setup::default()
    })
    .await;
    let (s, v) = c.token_from(0).await;
    assert_eq!(s, 200, "{v}\n{}", c.log(0));
    let t1 = v["access_token"].as_str().unwrap().to_string();
    // The write lands right after the callers waiting for it are answered.
    until(
        "the token stored on the primary",
        Duration::from_secs(5),
        || async { stored_token(pm, &c.prefix).await.as_deref() == Some(t1.as_str()) },
    )
    .await;

    // The other instance has read it too, so both hold it when Redis goes
    // (it follows the owner's writes; until then it had nothing to serve:
    // a flake seen in CI).
    for i in 0..2 {
        let (s, v) = c.token_from(i).await;
        assert_eq!(
            (s, v["access_token"].as_str()),
            (200, Some(t1.as_str())),
            "hub {i} holds the token before the failover"
        );
    }

    // The primary dies; Sentinel promotes the replica.
    drop(primary);
    until("the replica promoted", Duration::from_secs(30), || async {
        replication(pr).await.contains("role:master")
    })
    .await;
    for i in 0..2 {
        let (s, v) = c.token_from(i).await;
        assert_eq!(
            (s, v["access_token"].as_str()),
            (200, Some(t1.as_str())),
            "hub {i} serves what it holds"
        );
    }

    // A refresh after the failover is written to the new primary, and every
    // instance serves it.
    c.kill_token_elsewhere().await;
    let t = Instant::now();
    let t2 = loop {
        let (s, v) = c.invalidate_at(1, &t1).await;
        match v["access_token"].as_str() {
            Some(t) if s == 200 && t != t1 => break t.to_string(),
            _ => {}
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no new token after the report: {s} {v}\n{}",
            c.log(1)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    until(
        "the new token written to the new primary",
        Duration::from_secs(5),
        || async { stored_token(pr, &c.prefix).await.as_deref() == Some(t2.as_str()) },
    )
    .await;
    until(
        "both hubs serve the new token",
        Duration::from_secs(10),
        || {
            let (c, t2) = (&c, &t2);
            async move {
                let mut all = true;
                for i in 0..2 {
                    let (s, v) = c.token_from(i).await;
                    all &= s == 200 && v["access_token"].as_str() == Some(t2.as_str());
                }
                all
            }
        },
    )
    .await;
    let moved = "sentinel names a new redis primary";
    assert!(
        c.logged(0, moved) || c.logged(1, moved),
        "neither hub logged the move:\n{}\n{}",
        c.log(0),
        c.log(1)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
