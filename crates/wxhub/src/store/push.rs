//! What the push gateway keeps: each message once (with its duplicate key
//! and, once known, the passive reply it was answered with), each
//! subscriber's queue of what it has not yet received (a stream entry per
//! message in Redis; in SQLite a read position, with rows only for entries
//! that failed or were replayed), parked deliveries, and one follower
//! record per person and account. See `push_sqlite.rs` and `push_redis.rs`.

use serde::{Deserialize, Serialize};

/// A verified push, to be written before the platform is answered.
#[derive(Clone)]
pub struct NewPush {
    /// The account.
    pub appid: String,
    /// `m:<MsgId>`, or `e:<FromUserName>:<CreateTime>:<Event>` for events.
    pub dedup_key: String,
    /// A fresh random id; a duplicate keeps the first one's.
    pub message_id: String,
    /// `FromUserName`: deliveries to one subscriber keep this person's order.
    pub openid: String,
    /// The plaintext document (decrypted in safe mode).
    pub raw_xml: String,
    /// When the hub received it.
    pub received_at: i64,
    /// The subscribers whose filter it passes.
    pub subscribers: Vec<String>,
    /// A follow or unfollow to record.
    pub follow: Option<FollowChange>,
    /// A subscriber with this many entries queued does not get it (it is
    /// counted as dropped for that subscriber); the others do.
    pub max_backlog: u32,
    /// The message record, and so its duplicate detection, is kept until then.
    pub keep_until: i64,
}

/// What a person wrote (and the reply they got) stays out of `Debug`, so a
/// stray `{:?}` in a log line carries sizes, not messages.
struct Bytes<'a>(&'a str);

impl std::fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl std::fmt::Debug for NewPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPush")
            .field("appid", &self.appid)
            .field("message_id", &self.message_id)
            .field("raw_xml", &Bytes(&self.raw_xml))
            .field("received_at", &self.received_at)
            .field("subscribers", &self.subscribers)
            .field("follow", &self.follow)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredMessage")
            .field("message_id", &self.message_id)
            .field("raw_xml", &Bytes(&self.raw_xml))
            .field("received_at", &self.received_at)
            .field("reply", &self.reply.as_deref().map(Bytes))
            .finish_non_exhaustive()
    }
}

/// A subscribe or unsubscribe event's effect on the follower record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowChange {
    /// `subscribe`, at `CreateTime`.
    Subscribe(i64),
    /// `unsubscribe`, at `CreateTime`.
    Unsubscribe(i64),
}

/// What writing a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// New: written and queued, except for these subscribers, whose queue
    /// was full.
    New {
        /// Subscribers that did not get it.
        dropped: Vec<String>,
    },
    /// Seen before (a platform retry, or the same push through another
    /// instance): nothing written; the first one's id and reply.
    Duplicate {
        /// The first one's id.
        message_id: String,
        /// The reply it was answered with, once known.
        reply: Option<String>,
    },
}

/// One message waiting for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its place in the subscriber's queue: in SQLite the message's row as
    /// `(row, 0)`, or `(last row at the time, n)` for a replayed entry; a
    /// Redis stream id `ms-n` as `(ms, n)`.
    pub order: (u64, u64),
    /// The message.
    pub message_id: String,
    /// The person, for ordering.
    pub openid: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before then (Unix seconds).
    pub next_at: i64,
    /// When it was queued (or replayed): the retry window starts there.
    pub first_at: i64,
    /// The last attempt's failure.
    pub last_error: Option<String>,
    /// SQLite: the message's row, so it is read without an index on its id.
    pub row: Option<i64>,
    /// The message, when the store read it with the entry (SQLite), so the
    /// worker does not read it again.
    pub message: Option<StoredMessage>,
}

impl Queued {
    /// The Redis stream id of this entry.
    pub fn stream_id(&self) -> String {
        format!("{}-{}", self.order.0, self.order.1)
    }
}

/// A stored message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Its id.
    pub message_id: String,
    /// The person.
    pub openid: String,
    /// The plaintext document.
    pub raw_xml: String,
    /// When the hub received it.
    pub received_at: i64,
    /// Set once the replier answered: `0` for no reply, `1` and the XML.
    pub reply: Option<String>,
}

/// A delivery that failed for its whole retry window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parked {
    /// Its id, for replaying it.
    pub id: String,
    /// The subscriber.
    pub subscriber: String,
    /// The message.
    pub message_id: String,
    /// The person.
    pub openid: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was parked.
    pub parked_at: i64,
    /// The last failure.
    pub error: String,
}

/// A person's relation to an account, from subscribe and unsubscribe events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Follower {
    /// The person.
    pub openid: String,
    /// Whether they follow now.
    pub subscribed: bool,
    /// The last subscribe event's `CreateTime`.
    pub subscribed_at: Option<i64>,
    /// The last unsubscribe event's `CreateTime`.
    pub unsubscribed_at: Option<i64>,
    /// The `/cgi-bin/user/info` answer (JSON), when fetched.
    pub profile: Option<serde_json::Value>,
    /// When it was fetched.
    pub profile_fetched_at: Option<i64>,
}

impl Follower {
    /// The record after `change`; a change older than the one on record
    /// (events can arrive out of order across retries) leaves `subscribed`.
    pub fn apply(mut self, change: FollowChange) -> Follower {
        let last = self
            .subscribed_at
            .max(self.unsubscribed_at)
            .unwrap_or(i64::MIN);
        match change {
            FollowChange::Subscribe(at) => {
                self.subscribed_at = Some(self.subscribed_at.map_or(at, |s| s.max(at)));
                if at >= last {
                    self.subscribed = true;
                }
            }
            FollowChange::Unsubscribe(at) => {
                self.unsubscribed_at = Some(self.unsubscribed_at.map_or(at, |s| s.max(at)));
                if at >= last {
                    self.subscribed = false;
                }
            }
        }
        self
    }

    /// A record for someone not seen before.
    pub fn new(openid: &str) -> Follower {
        Follower {
            openid: openid.to_string(),
            subscribed: false,
            subscribed_at: None,
            unsubscribed_at: None,
            profile: None,
            profile_fetched_at: None,
        }
    }
}

/// Waiting entries of one subscriber.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Backlog {
    /// Queued for delivery (including retries).
    pub queued: u64,
    /// Parked after their retry window.
    pub parked: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_changes_keep_the_latest() {
        let f = Follower::new("o1").apply(FollowChange::Subscribe(10));
        assert!(f.subscribed);
        let f = f.apply(FollowChange::Unsubscribe(20));
        assert!(!f.subscribed);
        // A late retry of the older subscribe does not undo the unfollow.
        let f = f.apply(FollowChange::Subscribe(10));
        assert!(!f.subscribed);
        let f = f.apply(FollowChange::Subscribe(30));
        assert!(f.subscribed);
        assert_eq!(f.subscribed_at, Some(30));
        assert_eq!(f.unsubscribed_at, Some(20));
    }

    #[test]
    fn debug_shows_no_message_text_or_reply() {
        let m = StoredMessage {
            message_id: "id1".into(),
            openid: "oPERSON".into(),
            raw_xml: "<xml><Content>my phone is 13800000000</Content></xml>".into(),
            received_at: 1,
            reply: Some("1<xml><Content>secret answer</Content></xml>".into()),
        };
        let shown = format!("{m:?}");
        assert!(
            !shown.contains("13800000000") && !shown.contains("secret answer"),
            "{shown}"
        );
        assert!(shown.contains("id1") && shown.contains("bytes"), "{shown}");
        let p = NewPush {
            appid: "wx1".into(),
            dedup_key: "m:1".into(),
            message_id: "id1".into(),
            openid: "oPERSON".into(),
            raw_xml: m.raw_xml.clone(),
            received_at: 1,
            subscribers: vec!["crm".into()],
            follow: None,
            max_backlog: 1,
            keep_until: 2,
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("13800000000"), "{shown}");
    }
}
