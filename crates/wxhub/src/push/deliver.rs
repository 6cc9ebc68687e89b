//! The subscribers' side: one worker delivers every queue entry this
//! instance is responsible for.
//!
//! Per subscriber it keeps a *lane*: the entries of its queue in order. Each
//! round it starts the first entry of every person (`FromUserName`) that is
//! due and not already in flight, so one person's messages arrive in order
//! while a slow or failing person holds up nobody else; attempts across all
//! lanes are capped by `push.max_in_flight`. A failed attempt is retried
//! with exponential backoff and jitter until the account's retry window is
//! over, then parked. The lane lives in memory, the entries in the store: a
//! restarted hub (or, in shared mode, the next lease holder) takes them over.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use rand::Rng;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use wx_api::push::PushMessage;
use wx_api::{AccessToken, OpenId};

use super::{Gateway, PushAccount, payload};
use crate::config::Subscriber;
use crate::credentials::CredKind;
use crate::store::push::Queued;

/// Entries read from the store per lane and round.
const FETCH: usize = 500;

/// The least time between the starts of two rounds.
const ROUND_GAP: std::time::Duration = std::time::Duration::from_millis(2);

/// The longest a round waits for pushes to be written: under sustained
/// load deliveries still start at least this often.
const MAX_YIELD: std::time::Duration = std::time::Duration::from_millis(250);

/// How often a waiting round looks again.
const YIELD_STEP: std::time::Duration = std::time::Duration::from_millis(1);

/// Waits while `pending()` pushes wait for their write, at most
/// [`MAX_YIELD`]. At ordinary rates no push is waiting and a round starts
/// at once.
async fn yield_to_pushes(pending: impl Fn() -> usize) {
    let started = tokio::time::Instant::now();
    while pending() > 0 && started.elapsed() < MAX_YIELD {
        tokio::time::sleep(YIELD_STEP).await;
    }
}

/// Entries a lane holds in memory; the rest wait in the store and are read
/// as these go.
const LANE_CAP: usize = 5_000;

/// One subscriber's queue as this instance sees it: each person's entries
/// in order, so a round looks at one head per person, not every entry.
#[derive(Debug, Default)]
struct Lane {
    people: HashMap<String, VecDeque<Queued>>,
    len: usize,
    // People with an attempt in flight: their next entry waits.
    busy: HashSet<String>,
    // The last entry read, so the next read continues after it.
    last: Option<(u64, u64)>,
    taken_over: bool,
}

impl Lane {
    fn add(&mut self, q: Queued) {
        if self.last.is_some_and(|l| q.order <= l) {
            return;
        }
        self.last = Some(q.order);
        self.len += 1;
        self.people
            .entry(q.openid.clone())
            .or_default()
            .push_back(q);
    }

    /// Replaces (or, with `None`, removes) the head of `openid` if it is
    /// the entry `order`.
    fn settle_head(&mut self, openid: &str, order: (u64, u64), with: Option<Queued>) {
        let Some(list) = self.people.get_mut(openid) else {
            return;
        };
        if list.front().is_some_and(|h| h.order == order) {
            match with {
                Some(q) => list[0] = q,
                None => {
                    list.pop_front();
                    self.len -= 1;
                }
            }
        }
        if list.is_empty() {
            self.people.remove(openid);
        }
    }
}

/// What an attempt came to.
enum Outcome {
    Delivered,
    // Boxed: an entry can carry its message.
    Retry(Box<Queued>),
    Parked,
    // A store failure: the entry stays as it was and is tried next round.
    Unchanged,
}

/// A finished delivery attempt: its lane (account, subscriber), its place
/// in the queue, the person, and what happened.
type Attempt = ((String, String), (u64, u64), String, Outcome);

impl Gateway {
    /// Runs the delivery worker until `shutdown` on a thread of its own,
    /// with its own runtime, at a lower CPU priority than the rest of the
    /// hub (Linux: nice 10). When the cores are busy, the platform's pushes
    /// (answered within 5 s, or sent again) go first and deliveries use
    /// what is left; the queue is durable, so they only wait. An idle
    /// machine gives the thread all it asks for.
    pub async fn run_worker_thread(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let _ = self.main.set(tokio::runtime::Handle::current());
        let (done, ended) = tokio::sync::oneshot::channel();
        let gw = self.clone();
        let rx = shutdown.clone();
        let spawned = std::thread::Builder::new()
            .name("wxhub-deliver".into())
            .spawn(move || {
                lower_priority();
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(gw.run_worker(rx)),
                    Err(e) => tracing::error!(error = %e, "cannot start the delivery runtime"),
                }
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => {
                let _ = ended.await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the delivery thread: delivering beside the rest");
                self.run_worker(shutdown).await;
            }
        }
    }

    /// Runs the delivery worker until `shutdown`.
    pub async fn run_worker(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut lanes: HashMap<(String, String), Lane> = HashMap::new();
        let mut running: JoinSet<Attempt> = JoinSet::new();
        let mut last_round: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.tick) => {}
                () = self.wake.notified() => {}
                Some(done) = running.join_next(), if !running.is_empty() => {
                    // The person's next entry can start now.
                    if let Ok((lane_key, order, openid, outcome)) = done {
                        settle(&mut lanes, lane_key, order, &openid, outcome);
                    }
                }
                _ = shutdown.changed() => break,
            }
            // Every push wakes the worker, and a round reads each lane from
            // the store: under load, one round per ROUND_GAP takes what
            // arrived meanwhile, instead of a read per push competing with
            // the pushes' own writes.
            if let Some(t) = last_round {
                tokio::time::sleep_until(t + ROUND_GAP).await;
            }
            while let Some(done) = running.try_join_next() {
                if let Ok((lane_key, order, openid, outcome)) = done {
                    settle(&mut lanes, lane_key, order, &openid, outcome);
                }
            }
            // Under a burst the platform's pushes come first: each waits
            // for its durable write before it is answered (within 5 s, or
            // the platform sends it again), and a round's reads, deliveries
            // and cursor moves compete with those writes for the cores and
            // the store. The queue is durable, so deliveries only wait.
            let writes = self.settings.max_pending_writes;
            yield_to_pushes(|| writes.saturating_sub(self.writing.available_permits())).await;
            last_round = Some(tokio::time::Instant::now());
            self.round(&mut lanes, &mut running).await;
        }
        // In-flight attempts finish (or time out) before the store closes.
        while running.join_next().await.is_some() {}
    }

    /// One round: refresh every lane from the store and start what is due.
    async fn round(
        self: &Arc<Self>,
        lanes: &mut HashMap<(String, String), Lane>,
        running: &mut JoinSet<Attempt>,
    ) {
        let now = self.clock.now();
        let accounts: Vec<Arc<PushAccount>> = self.accounts();
        for account in accounts {
            let appid = account.appid.as_str().to_string();
            if !self.delivers(&appid) {
                // Another instance holds the account: forget the lanes, and
                // take the queue over again when the lease comes back.
                lanes.retain(|(a, _), _| a != &appid);
                continue;
            }
            for sub in &account.config.subscribers {
                let key = (appid.clone(), sub.name.clone());
                let lane = lanes.entry(key.clone()).or_default();
                if let Err(e) = self.refill(&appid, &sub.name, lane).await {
                    tracing::warn!(account.appid = %appid, subscriber = %sub.name, error = %e, "cannot read the delivery queue");
                    continue;
                }
                let mut start = Vec::new();
                for (openid, list) in &lane.people {
                    if lane.busy.contains(openid) {
                        continue;
                    }
                    if running.len() + start.len() >= self.settings.max_in_flight {
                        break;
                    }
                    if let Some(q) = list.front().filter(|q| q.next_at <= now) {
                        start.push(q.clone());
                    }
                }
                for q in start {
                    lane.busy.insert(q.openid.clone());
                    let (gw, account, sub, key) =
                        (self.clone(), account.clone(), sub.clone(), key.clone());
                    running.spawn(async move {
                        let (order, openid) = (q.order, q.openid.clone());
                        let outcome = gw.attempt(&account, &sub, q).await;
                        (key, order, openid, outcome)
                    });
                }
            }
        }
    }

    /// Reads what the lane lacks: everything once (taking over entries an
    /// earlier deliverer left), then what was queued since.
    async fn refill(
        &self,
        appid: &str,
        sub: &str,
        lane: &mut Lane,
    ) -> Result<(), crate::store::StoreError> {
        let room = LANE_CAP.saturating_sub(lane.len);
        if room == 0 {
            return Ok(());
        }
        let fresh = if lane.taken_over {
            self.store
                .push_fetch(appid, sub, lane.last, &self.instance, room.min(FETCH))
                .await?
        } else {
            // Everything, past the cap: in shared mode what is not claimed
            // now would stay with the instance that died. The store's
            // max_backlog bounds it.
            let all = self
                .store
                .push_take_over(appid, sub, &self.instance, usize::MAX)
                .await?;
            lane.taken_over = true;
            all
        };
        for q in fresh {
            lane.add(q);
        }
        Ok(())
    }

    /// One delivery attempt of `q` to `sub`, and its bookkeeping.
    async fn attempt(&self, account: &PushAccount, sub: &Subscriber, mut q: Queued) -> Outcome {
        let appid = account.appid.as_str();
        let count = |result: &str| {
            self.metrics.inc(
                "wxhub_push_deliveries_total",
                &[
                    ("appid", appid),
                    ("subscriber", &sub.name),
                    ("result", result),
                ],
            );
        };
        // The replier's entry needs the reply as it is now, not as it was
        // when the entry was read.
        let carried = q.message.take().filter(|_| !sub.replier);
        // The time before the read, not after: a reply stored between the
        // read and a late look at the clock (this thread runs at a lower
        // priority and can wait seconds under load) would otherwise be
        // taken for one never given, and the replier sent the message again.
        let read_at = self.clock.now();
        let read = match carried {
            Some(m) => Ok(Some(m)),
            None => self.store.push_message(appid, &q).await,
        };
        let msg = match read {
            Ok(Some(m)) => m,
            Ok(None) => {
                tracing::error!(account.appid = %appid, subscriber = %sub.name, "queued message no longer stored; dropping its entry");
                return self.finish(appid, &sub.name, &q).await;
            }
            Err(e) => {
                tracing::warn!(account.appid = %appid, error = %e, "cannot read a queued message");
                return Outcome::Unchanged;
            }
        };
        if sub.replier {
            // Answered synchronously already: nothing more to send.
            if msg.reply.is_some() {
                return self.finish(appid, &sub.name, &q).await;
            }
            // The synchronous call may still be running (here or on another
            // instance): its deadline, and a second, first.
            let wait = account.config.reply_deadline.as_secs() as i64 + 2;
            if read_at < msg.received_at + wait {
                return Outcome::Retry(Box::new(Queued {
                    next_at: msg.received_at + wait,
                    ..q
                }));
            }
        }
        let Ok(parsed) = PushMessage::parse(msg.raw_xml.as_bytes()) else {
            tracing::error!(account.appid = %appid, "stored message does not parse; dropping its entry");
            return self.finish(appid, &sub.name, &q).await;
        };
        let follower = if payload::is_subscribe(&parsed) {
            Some(
                self.follower_with_profile(account, &parsed.from_user_name)
                    .await,
            )
        } else {
            None
        };
        let delivery_id = format!("{}.{}", q.message_id, sub.name);
        let env = payload::Envelope {
            appid,
            message_id: &q.message_id,
            delivery_id: &delivery_id,
            received_at: msg.received_at,
            attempt: q.attempts + 1,
            follower,
        };
        let body = payload::body(&env, &parsed, &msg.raw_xml)
            .to_string()
            .into_bytes();
        let error = match self
            .post(&self.deliver_http, sub, &delivery_id, body, sub.timeout)
            .await
        {
            Ok((status, _)) if status.is_success() => {
                count("delivered");
                return match self.finish(appid, &sub.name, &q).await {
                    Outcome::Unchanged => Outcome::Unchanged,
                    _ => Outcome::Delivered,
                };
            }
            Ok((status, _)) => format!("HTTP {}", status.as_u16()),
            Err(e) => e,
        };
        count("failed");
        let now = self.clock.now();
        q.attempts += 1;
        q.last_error = Some(error);
        if now - q.first_at >= account.config.retry_window_secs {
            return match self
                .store
                .push_park(appid, &sub.name, &q, now, account.config.max_backlog)
                .await
            {
                Ok(forgotten) => {
                    count("parked");
                    tracing::warn!(account.appid = %appid, subscriber = %sub.name, attempts = q.attempts, forgotten, "delivery parked after its retry window");
                    Outcome::Parked
                }
                Err(e) => {
                    tracing::warn!(account.appid = %appid, error = %e, "cannot park a delivery");
                    Outcome::Unchanged
                }
            };
        }
        q.next_at = now + self.backoff(q.attempts);
        match self.store.push_retry(appid, &sub.name, &q).await {
            Ok(()) => Outcome::Retry(Box::new(q)),
            Err(e) => {
                tracing::warn!(account.appid = %appid, error = %e, "cannot record a failed delivery");
                Outcome::Unchanged
            }
        }
    }

    async fn finish(&self, appid: &str, sub: &str, q: &Queued) -> Outcome {
        match self.store.push_done(appid, sub, q).await {
            Ok(()) => Outcome::Delivered,
            Err(e) => {
                tracing::warn!(account.appid = %appid, error = %e, "cannot mark a delivery done");
                Outcome::Unchanged
            }
        }
    }

    /// `initial · 2^(attempts−1)`, capped, then ±20 % jitter so retries of
    /// many entries do not arrive at a recovering subscriber together.
    fn backoff(&self, attempts: u32) -> i64 {
        let s = &self.settings;
        let base = s
            .backoff_initial_secs
            .saturating_mul(1i64 << attempts.saturating_sub(1).min(30))
            .min(s.backoff_max_secs);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        ((base as f64) * jitter).round().max(1.0) as i64
    }

    /// The follower record with a profile from `/cgi-bin/user/info`
    /// (global token), reused for `profile_cache_secs` and fetched at most
    /// `profile_fetches_per_minute` times a minute. A fetch that cannot be
    /// made leaves `profile` empty with the reason; the delivery goes on.
    async fn follower_with_profile(&self, account: &PushAccount, openid: &OpenId) -> Value {
        let appid = account.appid.as_str();
        let now = self.clock.now();
        let record = self
            .store
            .follower(appid, openid.as_str())
            .await
            .ok()
            .flatten();
        let fresh = record.as_ref().is_some_and(|f| {
            f.profile.is_some()
                && f.profile_fetched_at
                    .is_some_and(|t| now - t < account.config.profile_cache_secs)
        });
        let mut out = record.map_or_else(|| json!({ "openid": openid.as_str() }), |f| json!(f));
        if fresh {
            return out;
        }
        let counted = |result: &str| {
            self.metrics.inc(
                "wxhub_push_profile_fetches_total",
                &[("appid", appid), ("result", result)],
            );
        };
        if !self.take_profile_fetch(appid, account.config.profile_fetches_per_minute, now) {
            counted("rate_limited");
            out["profile_error"] = json!("profile_fetches_per_minute reached");
            return out;
        }
        // On the hub's main runtime: a token fetch started here is shared
        // with every other caller waiting for it, and must not live on the
        // delivery thread's runtime (it ends with the worker).
        let (creds, wx, id, who) = (
            self.creds.clone(),
            self.wx.clone(),
            appid.to_string(),
            openid.clone(),
        );
        let fetch = async move {
            let token = match creds.get(&id, CredKind::AccessToken).await {
                Ok(s) => AccessToken::new(s.value.expose_secret()),
                Err(e) => return Err(("no_token", format!("no access token: {e}"))),
            };
            wx.user_info(&token, &who)
                .await
                .map_err(|e| ("failed", e.to_string()))
        };
        let fetched = match self.main.get() {
            Some(main) => main
                .spawn(fetch)
                .await
                .unwrap_or_else(|e| Err(("failed", e.to_string()))),
            None => fetch.await,
        };
        match fetched {
            Ok(u) => {
                counted("ok");
                let profile = json!({
                    "subscribe": u.subscribe,
                    "openid": u.openid.as_str(),
                    "unionid": u.unionid.as_ref().map(|x| x.as_str().to_string()),
                    "subscribe_time": u.subscribe_time,
                    "remark": u.remark,
                    "groupid": u.groupid,
                    "tagid_list": u.tagid_list,
                    "subscribe_scene": u.subscribe_scene,
                    "qr_scene": u.qr_scene,
                    "qr_scene_str": u.qr_scene_str,
                    "nickname": u.nickname,
                    "headimgurl": u.headimgurl,
                });
                if let Err(e) = self
                    .store
                    .follower_profile(appid, openid.as_str(), &profile, now)
                    .await
                {
                    tracing::warn!(account.appid = %appid, error = %e, "cannot store a follower profile");
                }
                out["profile"] = profile;
                out["profile_fetched_at"] = json!(now);
            }
            Err((result, e)) => {
                counted(result);
                out["profile_error"] = json!(e);
            }
        }
        out
    }
}

/// Applies a finished attempt to its lane.
fn settle(
    lanes: &mut HashMap<(String, String), Lane>,
    key: (String, String),
    order: (u64, u64),
    openid: &str,
    outcome: Outcome,
) {
    let Some(lane) = lanes.get_mut(&key) else {
        return;
    };
    lane.busy.remove(openid);
    match outcome {
        Outcome::Delivered | Outcome::Parked => lane.settle_head(openid, order, None),
        Outcome::Retry(q) => lane.settle_head(openid, order, Some(*q)),
        Outcome::Unchanged => {}
    }
}

/// Lowers the calling thread's CPU priority (Linux applies `setpriority`
/// to one thread, by its id). Raising niceness needs no privilege; a
/// failure leaves the thread as it was.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(error = %e, "cannot lower the delivery thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::{MAX_YIELD, yield_to_pushes};

    #[tokio::test(start_paused = true)]
    async fn a_round_starts_at_once_when_no_push_waits() {
        let started = tokio::time::Instant::now();
        yield_to_pushes(|| 0).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_waits_for_pending_pushes_and_goes_when_they_are_written() {
        let pending = AtomicUsize::new(3);
        let started = tokio::time::Instant::now();
        let wait = yield_to_pushes(|| pending.load(Ordering::Relaxed));
        let written = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            pending.store(0, Ordering::Relaxed);
        };
        tokio::join!(wait, written);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(20) && waited <= Duration::from_millis(22),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sustained_pushes_hold_a_round_back_at_most_the_bound() {
        let started = tokio::time::Instant::now();
        yield_to_pushes(|| 1).await;
        let waited = started.elapsed();
        assert!(
            waited >= MAX_YIELD && waited <= MAX_YIELD + Duration::from_millis(2),
            "{waited:?}"
        );
    }
}
