//! Where the hub keeps what must outlive a process: credentials, counters,
//! caller budgets, pending web authorizations, hand-over tickets and grants.
//!
//! Two back ends behind one enum: the embedded SQLite file (the default, one
//! instance) and Redis (several instances sharing state, see
//! [`crate::shared`]). An enum rather than a trait object: there are exactly
//! two, and async methods stay plain `async fn`. Every operation exists on
//! both; the credential operations that only mean something with several
//! instances (fenced writes, the mark of a fetch in flight) are no-ops on
//! SQLite, whose one process is always the writer.

pub mod directory;
mod history_store;
pub mod push;
mod push_redis;
mod push_sqlite;
mod redis_creds;
mod redis_oauth;
mod redis_store;
mod sqlite;
mod sqlite_oauth;

pub use redis_oauth::GRANT_GRACE;
pub use redis_store::{COUNTER_TTL, RedisStore};
pub use sqlite::SqliteStore;

use wx_api::oauth::Scope;

use crate::credentials::Secret;
use crate::seal::{SealError, Sealer, aad};

/// The associated data of a credential's value: sealed under it, the value
/// opens only as this account's credential of this kind.
pub(crate) fn credential_aad(appid: &str, key: &str) -> String {
    aad("cred", &[appid, key])
}

/// The associated data of a grant's token (`access_token` or
/// `refresh_token`).
pub(crate) fn grant_aad(field: &str, appid: &str, openid: &str) -> String {
    aad(&format!("grant.{field}"), &[appid, openid])
}

/// The grant with its two tokens sealed, as it is written.
pub(crate) fn seal_grant(sealer: &Sealer, g: &Grant) -> Grant {
    let mut sealed = g.clone();
    sealed.access_token = sealer.seal(
        &grant_aad("access_token", &g.appid, &g.openid),
        &g.access_token,
    );
    sealed.refresh_token = sealer.seal(
        &grant_aad("refresh_token", &g.appid, &g.openid),
        &g.refresh_token,
    );
    sealed
}

/// A grant as read, its two tokens opened.
pub(crate) fn open_grant(sealer: &Sealer, mut g: Grant) -> Result<Grant, StoreError> {
    g.access_token = sealer
        .open(
            &grant_aad("access_token", &g.appid, &g.openid),
            &g.access_token,
        )?
        .value;
    g.refresh_token = sealer
        .open(
            &grant_aad("refresh_token", &g.appid, &g.openid),
            &g.refresh_token,
        )?
        .value;
    Ok(g)
}

/// A credential (access token or ticket) as stored. SQLite keeps the first
/// four fields; Redis all of them.
#[derive(Clone, Debug)]
pub struct Record {
    /// The value.
    pub value: Secret,
    /// When the platform stops accepting it (Unix seconds).
    pub expires_at: i64,
    /// When it was fetched.
    pub fetched_at: i64,
    /// When this value was first seen (tickets repeat).
    pub first_seen: i64,
    /// Shared mode: the fencing number of the lease it was written under.
    pub fence: u64,
    /// Shared mode: the write's place in the account's history, larger is
    /// newer also across a Redis restart (the Redis server's clock in
    /// microseconds when that is larger than the last one plus one); 0 before
    /// it is written.
    pub seq: u64,
    /// Shared mode: the owner's planned refresh time, from which every
    /// instance derives the `expires_at` it tells clients.
    pub refresh_at: i64,
    /// Shared mode: when the owner started an upstream fetch that has not
    /// been written yet: in classic mode the value above dies 300 s after
    /// that at the latest.
    pub pending_since: Option<i64>,
}

/// What a credential write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored, as this sequence number (0 on SQLite).
    Stored(u64),
    /// Refused: a newer lease holder exists (shared mode only).
    Refused,
}

/// A storage failure; never contains a credential.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub(crate) fn new(message: impl Into<String>) -> StoreError {
        StoreError(message.into())
    }
}

impl From<SealError> for StoreError {
    fn from(e: SealError) -> Self {
        // Names records and key ids, never a value or a key.
        StoreError(e.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        // redis-rs errors carry the command's kind and the server's message,
        // never its arguments, so no credential can leak through here.
        StoreError(format!("redis: {e}"))
    }
}

/// How long a state is kept after it expires (a late callback can still be
/// offered a "start again" link), counted against the account's
/// `oauth.max_pending_states` until then.
pub const STATE_GRACE: i64 = 600;
/// How long a hand-over ticket is kept after it expires.
pub const TICKET_GRACE: i64 = 600;

/// A pending web authorization, keyed by the id inside its `state`.
#[derive(Debug, Clone)]
pub struct StateRecord {
    /// The account.
    pub appid: String,
    /// What the page asked for; stored by [`scope_name`].
    pub want: Scope,
    /// Which round of the sign-in this state is for; stored by [`Stage::as_str`].
    pub stage: Stage,
    /// Where the person goes back to.
    pub return_to: String,
    /// When the state stops being accepted.
    pub expires_at: i64,
}

/// How a state record stores what its page asked for: `base`, `userinfo`
/// or `login`, the authorize route's own names.
pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::SnsapiBase => "base",
        Scope::SnsapiUserinfo => "userinfo",
        Scope::SnsapiLogin => "login",
    }
}

/// The inverse of [`scope_name`].
pub fn scope_from_name(name: &str) -> Option<Scope> {
    [Scope::SnsapiBase, Scope::SnsapiUserinfo, Scope::SnsapiLogin]
        .into_iter()
        .find(|s| scope_name(*s) == name)
}

/// Which round of a sign-in a state is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A page that wants the profile: the silent `snsapi_base` round first.
    Probe,
    /// After a probe found no usable userinfo grant: `snsapi_userinfo`.
    Consent,
    /// A page that wants the openid only: `snsapi_base`.
    Base,
    /// Website QR login: `snsapi_login`.
    Login,
}

impl Stage {
    const ALL: [Stage; 4] = [Stage::Probe, Stage::Consent, Stage::Base, Stage::Login];

    /// The stored name: `probe`, `consent`, `base` or `login`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Probe => "probe",
            Stage::Consent => "consent",
            Stage::Base => "base",
            Stage::Login => "login",
        }
    }

    /// The inverse of [`Stage::as_str`].
    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The scope WeChat is asked for in this round.
    pub fn scope(self) -> Scope {
        match self {
            Stage::Probe | Stage::Base => Scope::SnsapiBase,
            Stage::Consent => Scope::SnsapiUserinfo,
            Stage::Login => Scope::SnsapiLogin,
        }
    }
}

/// What consuming a state found.
#[derive(Debug)]
pub enum Consumed {
    /// First use: go ahead.
    Fresh(StateRecord),
    /// Used before with the same code (WeChat's double redirect): the
    /// stored result, if the first request has finished.
    Again {
        /// The state.
        record: StateRecord,
        /// When it was first used.
        used_at: i64,
        /// The first request's result, once it is stored.
        result: Option<String>,
    },
    /// Used before with another code, or for a refusal.
    Used(StateRecord),
    /// Unknown.
    Missing,
}

/// A finished sign-in, as [`Store::finish_sign_in`] writes it.
#[derive(Debug)]
pub struct FinishedSignIn<'a> {
    /// The account.
    pub appid: &'a str,
    /// The state's id.
    pub state_id: &'a str,
    /// SHA-256 of the hand-over ticket.
    pub ticket_hash: &'a str,
    /// What redeeming the ticket answers.
    pub payload: &'a str,
    /// When the ticket stops being redeemable.
    pub ticket_expires_at: i64,
    /// What a replayed callback repeats.
    pub outcome: &'a str,
    /// A base-scope grant to keep, unless a better one is on file.
    pub base_grant: Option<&'a Grant>,
    /// Now.
    pub now: i64,
}

/// What redeeming a hand-over ticket found.
#[derive(Debug)]
pub enum Redeemed {
    /// Unknown, used or expired.
    Missing,
    /// Another account's: not redeemed.
    Forbidden(String),
    /// Redeemed: the account and the payload.
    Done(String, String),
}

/// A person's grant to an account (网页授权).
#[derive(Clone)]
pub struct Grant {
    /// The account.
    pub appid: String,
    /// The person's openid.
    pub openid: String,
    /// Their unionid, when returned.
    pub unionid: Option<String>,
    /// `snsapi_base`, `snsapi_userinfo` or `snsapi_login`.
    pub scope: String,
    /// A snapshot-page (快照页) user with virtual ids.
    pub snapshot: bool,
    /// The user access token.
    pub access_token: String,
    /// When it expires.
    pub access_expires_at: i64,
    /// The refresh token.
    pub refresh_token: String,
    /// When the refresh token (and so the grant) expires.
    pub refresh_expires_at: i64,
    /// The profile JSON, when fetched.
    pub profile: Option<String>,
    /// When it was fetched.
    pub profile_fetched_at: Option<i64>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("appid", &self.appid)
            .field("scope", &self.scope)
            .field("access_token", &"[redacted]")
            .field("refresh_token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The configured store.
#[derive(Debug)]
pub enum Store {
    /// The embedded SQLite file.
    Sqlite(SqliteStore),
    /// A Redis server shared by several instances.
    Redis(RedisStore),
}

/// The `Store` methods that only pass the call on to the backend, from
/// their signatures: `fn name(args) -> T;` becomes `pub async fn name(&self,
/// args) -> Result<T, StoreError>` calling the backend's method of that name.
macro_rules! delegate {
    ($($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(
            $(#[$meta])*
            pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret, StoreError> {
                match self {
                    Store::Sqlite(s) => s.$name($($arg),*).await,
                    Store::Redis(r) => r.$name($($arg),*).await,
                }
            }
        )*
    };
}

impl Store {
    /// The Redis back end, in shared mode.
    pub fn redis(&self) -> Option<&RedisStore> {
        match self {
            Store::Redis(r) => Some(r),
            Store::Sqlite(_) => None,
        }
    }

    /// The sealer of this store's values.
    pub fn sealer(&self) -> &Sealer {
        match self {
            Store::Sqlite(s) => s.sealer(),
            Store::Redis(r) => r.sealer(),
        }
    }

    /// Seals `plain` for the record `aad` (see [`crate::seal::aad`]: the
    /// record's kind and identity, e.g. `aad("account", &[appid])`) under
    /// `store.encryption_key`, for a value the caller writes to the store
    /// itself; without a key, returns it unchanged.
    ///
    /// # Security
    /// The result is safe to store; `plain` is not.
    pub fn seal(&self, aad: &str, plain: &str) -> String {
        self.sealer().seal(aad, plain)
    }

    /// Opens a value [`Store::seal`] sealed for the record `aad`. Plaintext
    /// (written before encryption was turned on) comes back as itself.
    ///
    /// # Errors
    /// The value is sealed under a key that is not configured, was altered,
    /// or belongs to another record; the error names the configuration
    /// keys and the record, never the value.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<String, StoreError> {
        Ok(self.sealer().open(aad, sealed)?.value)
    }

    /// Finishes with the store: SQLite runs what is queued and closes the
    /// file (another hub may then open it at once); Redis needs nothing.
    pub async fn close(&self) {
        if let Store::Sqlite(s) = self {
            s.close().await;
        }
    }

    delegate! {
        /// Shared mode: marks an upstream fetch of `key` as started, checking in
        /// Redis that `holder` still holds the lease. `Ok(false)`: it does not;
        /// do not fetch. Always `Ok(true)` on SQLite.
        ///
        /// # Errors
        /// On a storage failure: do not fetch either.
        fn begin_fetch(appid: &str, key: &str, holder: &str, now: i64) -> bool;

        /// Shared mode: clears the mark of the fetch begun at `started` after
        /// the platform answered it with an error (nothing was minted).
        ///
        /// # Errors
        /// On a storage failure.
        fn end_fetch(appid: &str, key: &str, holder: &str, started: i64) -> ();

        /// Shared mode: marks the stored value as doomed by a fetch begun at
        /// `started` whose token was thrown away (its write was refused).
        ///
        /// # Errors
        /// On a storage failure.
        fn mark_minted(appid: &str, key: &str, started: i64) -> ();

        /// Forgets expired states and tickets (Redis expires its own).
        ///
        /// # Errors
        /// On a storage failure.
        fn sweep(now: i64) -> (usize, usize);

        /// The stored credential `key` (`access_token:stable`, `ticket:jsapi`,
        /// …) of `appid`.
        ///
        /// # Errors
        /// On a storage failure or a damaged record.
        fn load_credential(appid: &str, key: &str) -> Option<Record>;

        /// Writes a fetched credential. On Redis the write is fenced: it lands
        /// only while `holder` (`instance:fence`) holds the account's lease and
        /// no write under a higher fencing number is stored, and every instance
        /// is told; on SQLite it is a plain upsert.
        ///
        /// # Errors
        /// On a storage failure.
        fn write_credential(appid: &str, key: &str, record: &Record, holder: &str) -> Written;

        /// Writes a value that any instance may receive (a third-party
        /// platform's verify ticket), without a lease: it lands only if its
        /// `fetched_at` is newer than the stored one's. `Ok(false)` when it
        /// was not.
        ///
        /// # Errors
        /// On a storage failure.
        fn write_newest(appid: &str, key: &str, record: &Record) -> bool;

        /// Adds one to a per-day counter and returns the new value.
        ///
        /// # Errors
        /// On a storage failure.
        fn bump(appid: &str, name: &str, day: i64) -> i64;

        /// Whether a caller-triggered refresh fits the budget of (`appid`,
        /// `scope`); with `take`, records it when it does. See [`crate::budget`].
        ///
        /// # Errors
        /// On a storage failure.
        fn budget(appid: &str, scope: &str, budget: crate::budget::Budget, now: i64, take: bool) -> crate::budget::Decision;

        /// A per-day counter.
        ///
        /// # Errors
        /// On a storage failure.
        fn counter(appid: &str, name: &str, day: i64) -> i64;

        /// Records a new pending authorization, unless the account already has
        /// `max_pending` on file: `Ok(false)` then.
        ///
        /// # Errors
        /// On a storage failure.
        fn save_state(id: &str, r: &StateRecord, now: i64, max_pending: u32) -> bool;

        /// Stores a base-scope grant unless a userinfo grant that still works
        /// (its refresh token alive at `now`) is on file: a silent base round
        /// must not downgrade what a person consented to.
        ///
        /// # Errors
        /// On a storage failure.
        fn save_base_grant(g: &Grant, now: i64) -> ();

        /// Stores a finished sign-in in one write: its hand-over ticket (by
        /// hash), on its state the outcome a replayed callback repeats, and a
        /// base-scope grant to keep (as [`Store::save_base_grant`]).
        ///
        /// # Errors
        /// On a storage failure.
        fn finish_sign_in(f: &FinishedSignIn<'_>) -> ();

        /// Redeems a hand-over ticket once, if `allowed` says its account may be
        /// used by the caller; see [`Redeemed`].
        ///
        /// # Errors
        /// On a storage failure.
        fn redeem_ticket_for(hash: &str, now: i64, allowed: impl Fn(&str) -> bool + Send + 'static) -> Redeemed;

        /// Looks a state up without using it.
        ///
        /// # Errors
        /// On a storage failure.
        fn peek_state(appid: &str, id: &str) -> Option<StateRecord>;

        /// Uses a state, once; see [`Consumed`].
        ///
        /// # Errors
        /// On a storage failure.
        fn consume_state(appid: &str, id: &str, code_hash: Option<&str>, now: i64) -> Consumed;

        /// Stores the outcome of a finished authorization on its state.
        ///
        /// # Errors
        /// On a storage failure.
        fn set_state_result(appid: &str, id: &str, result: &str) -> ();

        /// The stored outcome of a used state.
        ///
        /// # Errors
        /// On a storage failure.
        fn state_result(appid: &str, id: &str) -> Option<String>;

        /// Whether a hand-over ticket exists, is unused and has not expired.
        ///
        /// # Errors
        /// On a storage failure.
        fn ticket_live(hash: &str, now: i64) -> bool;

        /// The account of an unused, unexpired hand-over ticket.
        ///
        /// # Errors
        /// On a storage failure.
        fn ticket_appid(hash: &str) -> Option<String>;

        /// Stores a hand-over ticket by its hash.
        ///
        /// # Errors
        /// On a storage failure.
        fn save_ticket(hash: &str, appid: &str, payload: &str, expires_at: i64, now: i64) -> ();

        /// Redeems a ticket once: (appid, payload) if it exists, is unused and unexpired.
        ///
        /// # Errors
        /// On a storage failure.
        fn redeem_ticket(hash: &str, now: i64) -> Option<(String, String)>;

        /// Stores (replaces) a grant.
        ///
        /// # Errors
        /// On a storage failure.
        fn save_grant(g: &Grant) -> ();

        /// A person's grant to an account.
        ///
        /// # Errors
        /// On a storage failure.
        fn load_grant(appid: &str, openid: &str) -> Option<Grant>;

        /// Forgets a grant (expired or revoked).
        ///
        /// # Errors
        /// On a storage failure.
        fn delete_grant(appid: &str, openid: &str) -> ();

        /// Every stored directory entry (accounts and clients changed at
        /// run time) and the change log's position.
        ///
        /// # Errors
        /// On a storage failure.
        fn dir_all() -> directory::Snapshot;

        /// One directory entry's stored body.
        ///
        /// # Errors
        /// On a storage failure.
        fn dir_get(section: directory::Section, name: &str) -> Option<String>;

        /// Stores (`Some`) or deletes (`None`) a directory entry if it is
        /// still `expect` (what the change read; `None`: absent), and in
        /// shared mode logs the change for the other instances. False,
        /// with nothing written, when it changed since it was read.
        ///
        /// # Errors
        /// On a storage failure.
        fn dir_set(section: directory::Section, name: &str, expect: Option<&str>, body: Option<&str>) -> bool;

        /// Directory changes logged after `since` (shared mode).
        ///
        /// # Errors
        /// On a storage failure.
        fn dir_changes(since: &str) -> directory::Changes;

        /// Forgets a removed account's stored credentials.
        ///
        /// # Errors
        /// On a storage failure.
        fn forget_credentials(appid: &str, keys: Vec<String>) -> ();

        /// Adds a refresh-history entry (see [`crate::history`]), dropping
        /// the account's entries older than `keep_from` or beyond `cap`.
        ///
        /// # Errors
        /// On a storage failure.
        fn history_add(appid: &str, entry: &crate::history::Entry, keep_from: i64, cap: usize) -> ();

        /// The account's newest `limit` refresh-history entries at or after
        /// `since`, newest first.
        ///
        /// # Errors
        /// On a storage failure.
        fn history(appid: &str, since: i64, limit: usize) -> Vec<crate::history::Entry>;

        /// Drops refresh-history entries older than `keep_from`.
        ///
        /// # Errors
        /// On a storage failure.
        fn history_sweep(keep_from: i64) -> usize;

        /// Appends to the audit log.
        ///
        /// # Errors
        /// On a storage failure.
        fn audit_append(e: &directory::AuditEntry) -> ();

        /// The newest audit entries.
        ///
        /// # Errors
        /// On a storage failure.
        fn audit_list(limit: usize, before: Option<u64>) -> Vec<directory::AuditEntry>;

        /// Writes a verified push before the platform is answered: the
        /// message unless its duplicate key is on file, a queue entry per
        /// subscriber with room, the follower change; atomically.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_accept(p: &push::NewPush) -> push::Accepted;

        /// Records the passive reply a message was answered with, so that
        /// its duplicates are answered the same.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_set_reply(appid: &str, dedup_key: &str, message_id: &str, reply: &str) -> ();

        /// New queue entries of a subscriber for this instance to deliver.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_fetch(appid: &str, sub: &str, after: Option<(u64, u64)>, instance: &str, limit: usize) -> Vec<push::Queued>;

        /// Every queue entry of a subscriber, taken over by this instance
        /// (shared mode: from a deliverer that died).
        ///
        /// # Errors
        /// On a storage failure.
        fn push_take_over(appid: &str, sub: &str, instance: &str, limit: usize) -> Vec<push::Queued>;

        /// The message of a queue entry.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_message(appid: &str, q: &push::Queued) -> Option<push::StoredMessage>;

        /// A delivered entry leaves the queue.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_done(appid: &str, sub: &str, q: &push::Queued) -> ();

        /// Records a failed attempt and the next one's time.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_retry(appid: &str, sub: &str, q: &push::Queued) -> ();

        /// Parks an entry whose retry window is over; returns how many old
        /// parked entries the cap `max` forgot.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_park(appid: &str, sub: &str, q: &push::Queued, now: i64, max: u32) -> u64;

        /// Parked deliveries, oldest first.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_parked(appid: &str, subs: &[String], limit: usize) -> Vec<push::Parked>;

        /// Puts a parked delivery back in its queue with a new retry window.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_replay(appid: &str, id: &str, now: i64, keep_secs: i64) -> bool;

        /// Queued and parked entries of one subscriber.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_backlog(appid: &str, sub: &str) -> push::Backlog;

        /// Forgets what is kept past its time for subscribers no longer
        /// in `live` (account, name): SQLite forgets delivered messages
        /// past their time, and what gone subscribers left of them; Redis
        /// expires messages by itself and forgets the queues of
        /// subscribers gone for `keep_secs`. Returns how many messages
        /// (SQLite) or queues (Redis) went.
        ///
        /// # Errors
        /// On a storage failure.
        fn push_sweep(now: i64, live: &[(String, String)], keep_secs: i64) -> usize;

        /// A follower record.
        ///
        /// # Errors
        /// On a storage failure.
        fn follower(appid: &str, openid: &str) -> Option<push::Follower>;

        /// Follower records by openid after `after`.
        ///
        /// # Errors
        /// On a storage failure.
        fn followers(appid: &str, after: &str, limit: usize) -> Vec<push::Follower>;

        /// Stores a fetched profile on the follower record.
        ///
        /// # Errors
        /// On a storage failure.
        fn follower_profile(appid: &str, openid: &str, profile: &serde_json::Value, now: i64) -> ();
    }
}

#[cfg(test)]
mod tests {
    use super::Record;
    use crate::credentials::Secret;

    #[test]
    fn records_hide_their_value() {
        let r = Record {
            value: Secret::new("SECRET-TOKEN"),
            expires_at: 1,
            fetched_at: 0,
            first_seen: 0,
            fence: 1,
            seq: 1,
            refresh_at: 0,
            pending_since: None,
        };
        assert!(!format!("{r:?}").contains("SECRET"));
    }
}
