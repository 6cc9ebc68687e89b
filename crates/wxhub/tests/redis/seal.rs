//! Secrets at rest in Redis: values sealed, fencing untouched by a re-seal,
//! wrong or missing keys refused.

use std::collections::HashMap;
use std::sync::Arc;

use redis::AsyncCommands;
use wxhub::credentials::Secret;
use wxhub::seal::{EncryptionKey, Resealed, Sealer, StoreKeys};
use wxhub::store::{Grant, Record, RedisStore, Written};

const KEY_A: &str = "4a1f9c0e7b3d5a2f8e6c1b0d9a7f3e5c2b8d6a4f1e0c9b7a5d3f2e1c0b9a8d7f";
const KEY_B: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff1";
const TOKEN: &str = "CANARY-redis-token-6f1d";
const ACCESS: &str = "CANARY-redis-user-access-77ab";
const REFRESH: &str = "CANARY-redis-user-refresh-91cd";
const K: &str = "access_token:stable";

fn sealer(current: Option<&str>, previous: Option<&str>) -> Arc<Sealer> {
    let key = |h: &str| EncryptionKey::from_hex(h).unwrap();
    Arc::new(Sealer::new(&StoreKeys {
        current: current.map(key),
        previous: previous.map(key),
    }))
}

async fn connect(prefix: &str, s: Arc<Sealer>) -> Result<RedisStore, String> {
    let r = RedisStore::connect(&crate::url(), prefix)
        .await
        .expect("a Redis for tests (WXHUB_TEST_REDIS)")
        .with_sealer(s);
    r.prepare_keys().await.map_err(|e| e.to_string())?;
    Ok(r)
}

/// Every field of every key under the prefix, as `redis-cli` would show it.
async fn dump(r: &RedisStore) -> String {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", r.prefix()))
        .query_async(&mut r.conn())
        .await
        .unwrap();
    let mut out = String::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut r.conn())
            .await
            .unwrap();
        let text = if kind == "hash" {
            let h: HashMap<String, String> = r.conn().hgetall(&k).await.unwrap();
            format!("{h:?}")
        } else {
            let v: Option<String> = r.conn().get(&k).await.unwrap();
            format!("{v:?}")
        };
        out.push_str(&format!("{k} {text}\n"));
    }
    out
}

async fn fencing(r: &RedisStore) -> (String, String) {
    let h: HashMap<String, String> = r
        .conn()
        .hgetall(r.app_key("wx1", &format!("cred:{K}")))
        .await
        .unwrap();
    (h["fence"].clone(), h["seq"].clone())
}

fn grant() -> Grant {
    Grant {
        appid: "wx1".into(),
        openid: "o1".into(),
        unionid: None,
        scope: "snsapi_userinfo".into(),
        snapshot: false,
        access_token: ACCESS.into(),
        access_expires_at: 9_000,
        refresh_token: REFRESH.into(),
        refresh_expires_at: 90_000,
        profile: None,
        profile_fetched_at: None,
    }
}

#[tokio::test]
async fn redis_values_are_sealed_upgraded_rotated_and_fencing_is_untouched() {
    let prefix = crate::unique_prefix("seal");
    // A store from before encryption: plaintext.
    let plain = connect(&prefix, Arc::new(Sealer::plaintext()))
        .await
        .unwrap();
    let _: () = plain
        .conn()
        .set(plain.app_key("wx1", "lease"), "a:1")
        .await
        .unwrap();
    let record = Record {
        value: Secret::new(TOKEN),
        expires_at: 9_000,
        fetched_at: 1_000,
        first_seen: 1_000,
        fence: 1,
        seq: 0,
        refresh_at: 8_000,
        pending_since: None,
    };
    assert!(matches!(
        plain
            .write_credential("wx1", K, &record, "a:1")
            .await
            .unwrap(),
        Written::Stored(_)
    ));
    plain.save_grant(&grant()).await.unwrap();
    assert!(dump(&plain).await.contains(TOKEN), "the control: plaintext");
    let before = fencing(&plain).await;

    // Upgrade in place.
    let a = connect(&prefix, sealer(Some(KEY_A), None)).await.unwrap();
    let d = dump(&a).await;
    for canary in [TOKEN, ACCESS, REFRESH, KEY_A] {
        assert!(!d.contains(canary), "{canary} in redis: {d}");
    }
    assert_eq!(fencing(&a).await, before, "fence and seq untouched");
    let loaded = a.load_credential("wx1", K).await.unwrap().unwrap();
    assert_eq!(loaded.value.expose_secret(), TOKEN);
    let g = a.load_grant("wx1", "o1").await.unwrap().unwrap();
    assert_eq!(
        (g.access_token.as_str(), g.refresh_token.as_str()),
        (ACCESS, REFRESH)
    );
    // A second start has nothing left to do.
    assert_eq!(a.prepare_keys().await.unwrap(), Resealed::default());

    // Wrong key, no key: refused, naming the configuration key.
    let e = connect(&prefix, sealer(Some(KEY_B), None))
        .await
        .expect_err("wrong key");
    assert!(
        e.contains("store.encryption_key") && !e.contains(KEY_A),
        "{e}"
    );
    let e = connect(&prefix, Arc::new(Sealer::plaintext()))
        .await
        .expect_err("no key");
    assert!(e.contains("store.encryption_key is not set"), "{e}");
    // A plaintext-mode reader that runs anyway cannot read garbage.
    assert!(plain.load_credential("wx1", K).await.is_err());

    // Rotation: A is the previous key.
    let b = RedisStore::connect(&crate::url(), &prefix)
        .await
        .unwrap()
        .with_sealer(sealer(Some(KEY_B), Some(KEY_A)));
    let done = b.prepare_keys().await.unwrap();
    assert_eq!((done.plaintext, done.previous, done.skipped), (0, 3, 0));
    assert_eq!(fencing(&b).await, before, "fence and seq untouched");
    let b = connect(&prefix, sealer(Some(KEY_B), None)).await.unwrap();
    assert_eq!(
        b.load_credential("wx1", K)
            .await
            .unwrap()
            .unwrap()
            .value
            .expose_secret(),
        TOKEN
    );
    assert_eq!(
        b.load_grant("wx1", "o1")
            .await
            .unwrap()
            .unwrap()
            .refresh_token,
        REFRESH
    );
    // New writes are sealed too.
    let next = Record {
        value: Secret::new("CANARY-second-token"),
        fence: 1,
        ..record
    };
    b.write_credential("wx1", K, &next, "a:1").await.unwrap();
    assert!(!dump(&b).await.contains("CANARY-second-token"));
    assert_eq!(
        b.load_credential("wx1", K)
            .await
            .unwrap()
            .unwrap()
            .value
            .expose_secret(),
        "CANARY-second-token"
    );

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut b.conn())
        .await
        .unwrap();
    let _: () = b.conn().del(keys).await.unwrap();
}
