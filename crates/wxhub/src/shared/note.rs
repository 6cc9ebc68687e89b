//! The pub/sub notes instances send each other, encoded and parsed here and
//! nowhere else. Two channels: `prefix:changes` (a credential changed, a
//! heartbeat, an owner's refusal) and `prefix:requests` (please refresh).
//! A note carries an account, a credential's store key and, for a refresh
//! request, the SHA-256 of the reported value: never a value.

/// Why an instance asks the owner to replace a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A caller reported it; the platform could not vouch either way (or
    /// nothing is held at all).
    Plain,
    /// A caller reported it and the platform confirmed it is dead.
    Rejected,
    /// Not rejected by the platform but doomed by a fetch whose token was
    /// thrown away: not a foreign refresh, and not a caller's doing.
    Doomed,
}

/// A note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// An instance's heartbeat.
    Heartbeat {
        /// Its name.
        instance: String,
    },
    /// The account's credential changed in Redis.
    Changed {
        /// The account.
        appid: String,
        /// The store key (`access_token:classic`, `ticket:jsapi`, ...).
        kind: String,
    },
    /// The owner will not replace a reported value: its caller budget is
    /// spent. The instances waiting on it answer at once.
    Refused {
        /// The account.
        appid: String,
        /// The store key.
        kind: String,
        /// SHA-256 (hex) of the reported value.
        failed_sha256: String,
        /// Seconds until a report could refresh again.
        retry_after: i64,
        /// Why, in words.
        reason: String,
    },
    /// Someone asks the owner to refresh.
    Request {
        /// The account.
        appid: String,
        /// The store key.
        kind: String,
        /// SHA-256 (hex) of the value that failed; None when none is held.
        failed_sha256: Option<String>,
        /// Why.
        why: RequestKind,
    },
}

impl Note {
    /// Whether it goes on the requests channel (else the changes channel).
    pub fn is_request(&self) -> bool {
        matches!(self, Note::Request { .. })
    }

    /// The payload as published.
    pub fn encode(&self) -> String {
        match self {
            Note::Heartbeat { instance } => format!("\theartbeat\t{instance}"),
            Note::Changed { appid, kind } => format!("{appid}\t{kind}"),
            Note::Refused {
                appid,
                kind,
                failed_sha256,
                retry_after,
                reason,
            } => format!(
                "{appid}\t{kind}\trefused\t{failed_sha256}\t{retry_after}\t{}",
                reason.replace(['\t', '\n'], " ")
            ),
            Note::Request {
                appid,
                kind,
                failed_sha256,
                why,
            } => format!(
                "{appid}\t{kind}\t{}{}",
                failed_sha256.as_deref().unwrap_or(""),
                match why {
                    RequestKind::Plain => "",
                    RequestKind::Rejected => "\trejected",
                    RequestKind::Doomed => "\tdoomed",
                }
            ),
        }
    }

    /// Parses a message of one of the two channels (`request`: the
    /// requests channel).
    pub fn parse(request: bool, payload: &str) -> Option<Note> {
        let mut parts = payload.split('\t');
        let appid = parts.next()?.to_string();
        let kind = parts.next()?.to_string();
        if appid.is_empty() && kind == "heartbeat" && !request {
            return Some(Note::Heartbeat {
                instance: parts.next()?.to_string(),
            });
        }
        if request {
            let failed = parts.next()?;
            return Some(Note::Request {
                appid,
                kind,
                failed_sha256: (!failed.is_empty()).then(|| failed.to_string()),
                why: match parts.next() {
                    Some("doomed") => RequestKind::Doomed,
                    Some("rejected") => RequestKind::Rejected,
                    _ => RequestKind::Plain,
                },
            });
        }
        match parts.next() {
            None => Some(Note::Changed { appid, kind }),
            Some("refused") => Some(Note::Refused {
                appid,
                kind,
                failed_sha256: parts.next()?.to_string(),
                retry_after: parts.next()?.parse().ok()?,
                reason: parts.next()?.to_string(),
            }),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_note_parses_back_to_itself() {
        let notes = [
            Note::Heartbeat {
                instance: "123-ab".into(),
            },
            Note::Changed {
                appid: "wx1".into(),
                kind: "access_token:stable".into(),
            },
            Note::Refused {
                appid: "wx1".into(),
                kind: "access_token:classic".into(),
                failed_sha256: "ab12".into(),
                retry_after: 30,
                reason: "no budget".into(),
            },
            Note::Request {
                appid: "wx1".into(),
                kind: "ticket:jsapi".into(),
                failed_sha256: None,
                why: RequestKind::Plain,
            },
            Note::Request {
                appid: "wx1".into(),
                kind: "access_token:classic".into(),
                failed_sha256: Some("ab12".into()),
                why: RequestKind::Rejected,
            },
            Note::Request {
                appid: "wx1".into(),
                kind: "access_token:classic".into(),
                failed_sha256: Some("ab12".into()),
                why: RequestKind::Doomed,
            },
        ];
        for n in notes {
            assert_eq!(Note::parse(n.is_request(), &n.encode()), Some(n.clone()));
        }
    }

    #[test]
    fn what_older_instances_send_still_parses() {
        assert_eq!(
            Note::parse(true, "wx1\tticket:jsapi\t"),
            Some(Note::Request {
                appid: "wx1".into(),
                kind: "ticket:jsapi".into(),
                failed_sha256: None,
                why: RequestKind::Plain
            })
        );
        assert_eq!(Note::parse(true, "wx1\tticket:jsapi"), None);
        assert_eq!(Note::parse(false, "wx1\tx\tsomething-new"), None);
        assert_eq!(
            Note::Refused {
                appid: "a".into(),
                kind: "k".into(),
                failed_sha256: "h".into(),
                retry_after: 1,
                reason: "tab\there".into()
            }
            .encode(),
            "a\tk\trefused\th\t1\ttab here"
        );
    }
}
