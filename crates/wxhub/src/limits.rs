//! Rate limits: what one caller may ask of the hub per unit of time.
//!
//! Every limit is a GCRA (generic cell rate algorithm) bucket: one number per
//! key, the "theoretical arrival time" of the next request, so a bucket costs
//! a few bytes and one comparison. Client limits (the proxy, invalidate
//! reports) are kept in Redis in shared mode, so a client that spreads its
//! calls over every instance still gets one budget; with Redis away they fall
//! back to this instance's own buckets rather than to no limit at all. The
//! per-IP limit of the anonymous web-authorization routes stays local: an
//! attacker must not be able to turn its requests into Redis writes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::Script;

use crate::store::RedisStore;

/// A rate with a burst: `burst` requests at once, then one per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    interval: Duration,
    burst: u32,
}

impl Rate {
    /// `per_minute` requests a minute on average, `burst` at once.
    pub fn per_minute(per_minute: u64, burst: u32) -> Rate {
        Rate {
            interval: Duration::from_nanos(60_000_000_000 / per_minute.max(1)),
            burst: burst.max(1),
        }
    }

    /// Requests a minute on average.
    pub fn per_minute_avg(&self) -> u64 {
        (60_000_000_000 / self.interval.as_nanos().max(1)) as u64
    }

    /// Requests that may pass at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How far ahead of now the next allowed arrival may run: `burst - 1`
    /// intervals (so `burst` requests pass at once).
    fn tolerance(&self) -> Duration {
        self.interval * (self.burst - 1)
    }
}

/// A rate-limited request: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Until the next request would pass.
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_secs(&self) -> i64 {
        (self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)).max(1) as i64
    }
}

/// Buckets kept in this process, at most `cap` of them.
#[derive(Debug)]
struct LocalBuckets<K> {
    start: Instant,
    cap: usize,
    // Key → theoretical arrival time, in nanoseconds since `start`.
    tats: Mutex<HashMap<K, u64>>,
}

impl<K: std::hash::Hash + Eq + Clone> LocalBuckets<K> {
    fn new(cap: usize) -> Self {
        LocalBuckets {
            start: Instant::now(),
            cap,
            tats: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, key: &K, rate: Rate) -> Result<(), Limited> {
        let now = self.start.elapsed().as_nanos() as u64;
        let interval = rate.interval.as_nanos() as u64;
        let tolerance = rate.tolerance().as_nanos() as u64;
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        if !tats.contains_key(key) && tats.len() >= self.cap {
            // A bucket whose arrival time has passed is full again: it
            // holds nothing worth keeping.
            tats.retain(|_, tat| *tat > now);
            if tats.len() >= self.cap {
                // More keys active at once than the hub keeps: refuse rather
                // than grow without bound or stop limiting.
                return Err(Limited {
                    retry_after: Duration::from_secs(1),
                });
            }
        }
        let tat = tats.get(key).copied().unwrap_or(0).max(now);
        if tat - now > tolerance {
            return Err(Limited {
                retry_after: Duration::from_nanos(tat - now - tolerance),
            });
        }
        tats.insert(key.clone(), tat + interval);
        Ok(())
    }
}

// GCRA on one key (Redis Cluster safe), on the Redis server's clock so
// instances with skewed clocks share one bucket. KEYS[1]: the bucket.
// ARGV: interval and tolerance in microseconds. Returns 0 when the request
// passes, else the microseconds to wait.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
        if tat < now then tat = now end
        local wait = tat - tonumber(ARGV[2]) - now
        if wait > 0 then return math.ceil(wait) end
        local new = tat + tonumber(ARGV[1])
        redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
        return 0
        ",
    )
});

/// What a client is limited on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientLimit {
    /// Proxied calls.
    Proxy,
    /// Invalidate reports.
    Invalidate,
    /// Starts of a third-party platform's authorization page, per
    /// platform (each costs a pre-auth code upstream).
    ComponentStart,
}

impl ClientLimit {
    fn label(self) -> &'static str {
        match self {
            ClientLimit::Proxy => "proxy",
            ClientLimit::Invalidate => "invalidate",
            ClientLimit::ComponentStart => "component_start",
        }
    }
}

/// Every rate limit of a running hub.
#[derive(Debug)]
pub struct Limiter {
    clients: LocalBuckets<(std::sync::Arc<str>, ClientLimit)>,
    ips: LocalBuckets<IpAddr>,
    redis: Option<RedisStore>,
}

/// Client buckets kept locally: one per client and limit, so this only
/// bounds a configuration with absurdly many clients.
const MAX_CLIENT_BUCKETS: usize = 100_000;
/// Client IPs tracked at once. Beyond this many distinct addresses active
/// within one bucket's refill time, new ones are refused until some refill.
const MAX_IP_BUCKETS: usize = 100_000;

impl Limiter {
    /// Limits kept in this process, or in `redis` for clients (shared mode).
    pub fn new(redis: Option<RedisStore>) -> Limiter {
        Limiter {
            clients: LocalBuckets::new(MAX_CLIENT_BUCKETS),
            ips: LocalBuckets::new(MAX_IP_BUCKETS),
            redis,
        }
    }

    /// Charges one request to a client's bucket.
    ///
    /// # Errors
    /// [`Limited`] when the client is over its rate.
    pub async fn client(
        &self,
        name: &std::sync::Arc<str>,
        limit: ClientLimit,
        rate: Rate,
    ) -> Result<(), Limited> {
        if let Some(redis) = &self.redis {
            let key = redis.key(&format!("rl:{}:{name}", limit.label()));
            let waited: Result<u64, _> = GCRA
                .key(key)
                .arg(rate.interval.as_micros() as u64)
                .arg(rate.tolerance().as_micros() as u64)
                .invoke_async(&mut redis.conn())
                .await;
            match waited {
                Ok(0) => return Ok(()),
                Ok(us) => {
                    return Err(Limited {
                        retry_after: Duration::from_micros(us),
                    });
                }
                // Redis away: this instance's own bucket still limits.
                Err(e) => {
                    tracing::debug!(error = %crate::store::StoreError::from(e), "rate limit falls back to this instance");
                }
            }
        }
        self.clients.check(&(name.clone(), limit), rate)
    }

    /// Charges one request to a client IP's bucket.
    ///
    /// # Errors
    /// [`Limited`] when the address is over its rate.
    pub fn ip(&self, ip: IpAddr, rate: Rate) -> Result<(), Limited> {
        self.ips.check(&canonical(ip), rate)
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address; IPv6 clients are
/// limited per /64, since one host usually holds the whole /64.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// An address range, `10.0.0.0/8` or `fd00::/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the last address in `X-Forwarded-For` that is not itself a trusted proxy
/// (the rightmost entries are the ones our own proxies wrote; anything to
/// their left came from the client and proves nothing).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    return ip;
                }
            }
            // Garbage where an address should be: stop believing the header.
            Err(_) => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_passes_its_burst_then_one_per_interval() {
        let b = LocalBuckets::new(10);
        let rate = Rate::per_minute(60, 3);
        for _ in 0..3 {
            assert!(b.check(&"k", rate).is_ok());
        }
        let wait = b.check(&"k", rate).unwrap_err();
        assert!(
            wait.retry_after <= Duration::from_secs(1) && wait.retry_after > Duration::ZERO,
            "{wait:?}"
        );
        assert_eq!(wait.retry_after_secs(), 1);
        assert!(b.check(&"other", rate).is_ok(), "keys are separate");
    }

    #[test]
    fn the_number_of_buckets_is_bounded() {
        let b = LocalBuckets::new(2);
        // A slow rate: a used bucket stays non-empty for a minute.
        let rate = Rate::per_minute(1, 1);
        assert!(b.check(&1, rate).is_ok());
        assert!(b.check(&2, rate).is_ok());
        assert!(b.check(&3, rate).is_err(), "no room for a third key");
        assert_eq!(b.tats.lock().unwrap().len(), 2);
    }

    #[test]
    fn cidrs_match_v4_v6_and_mapped_addresses() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["x", "10.0.0.0/33", "::/129", "10.0.0.0/-1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        // From an untrusted peer the header is ignored.
        assert_eq!(client_ip(outsider, Some("1.2.3.4"), &trusted), outsider);
        // From a trusted proxy: the rightmost untrusted hop.
        assert_eq!(
            client_ip(peer, Some("1.2.3.4, 198.51.100.7, 10.0.0.9"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap(),
            "what the client wrote on the left proves nothing"
        );
        assert_eq!(client_ip(peer, None, &trusted), peer);
        assert_eq!(
            client_ip(peer, Some("garbage, 10.0.0.9"), &trusted),
            "10.0.0.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, Some("1.2.3.4"), &[]), peer);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a = canonical("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = canonical("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(
            canonical("::ffff:1.2.3.4".parse().unwrap()),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
    }
}
