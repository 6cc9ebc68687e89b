//! The platform's side of `/push/{appid}`: the handshake, and a push
//! checked, written and answered within the platform's 5 s.

use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use wx_api::push::{KeyUsed, PushError, PushMessage, PushQuery, Reply};

use super::{Gateway, PushAccount, payload};
use crate::config::Subscriber;
use crate::error::ApiError;
use crate::store::push::{Accepted, NewPush};

/// Replies larger than this are refused (a passive reply is a few KiB).
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// How the stored reply marker says "answered, nothing to say".
const NO_REPLY: &str = "0";

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn xml(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The rejection of a push: a status, a stable code, a metric reason.
fn refusal(e: &PushError) -> (ApiError, &'static str) {
    let (status, code, reason) = match e {
        PushError::SignatureMismatch | PushError::MissingParameter(_) => {
            (StatusCode::UNAUTHORIZED, "push_signature", "signature")
        }
        PushError::AppIdMismatch => (StatusCode::BAD_REQUEST, "push_appid", "appid"),
        PushError::EncryptionRequired => (
            StatusCode::BAD_REQUEST,
            "push_encryption_required",
            "plaintext",
        ),
        PushError::BodyTooLarge { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "too_large",
        ),
        PushError::Base64
        | PushError::CiphertextLength
        | PushError::Padding
        | PushError::PlaintextLength
        | PushError::InvalidKey => (StatusCode::BAD_REQUEST, "push_undecryptable", "decrypt"),
        _ => (StatusCode::BAD_REQUEST, "push_malformed", "xml"),
    };
    (ApiError::new(status, code, e.to_string()), reason)
}

impl Gateway {
    fn lock_asking(&self) -> std::sync::MutexGuard<'_, super::Asking> {
        self.asking.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A platform retry of a push whose replier is still being asked in
    /// this process: the first one's answer, once it has it (at most
    /// `left`). Across instances a retry gets `success` instead.
    async fn same_answer(&self, appid: &str, dedup_key: &str, left: Duration) -> Option<String> {
        let rx = self
            .lock_asking()
            .get(&format!("{appid}:{dedup_key}"))
            .cloned();
        let mut rx = rx?;
        match tokio::time::timeout(left, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => v.clone().flatten(),
            _ => None,
        }
    }

    fn account_or_404(&self, appid: &str) -> Result<std::sync::Arc<PushAccount>, ApiError> {
        self.account(appid).ok_or_else(|| {
            ApiError::not_found(format!(
                "{appid} takes no pushes here (accounts[].push is not configured)"
            ))
        })
    }

    fn reject(&self, appid: &str, e: ApiError, reason: &'static str) -> ApiError {
        self.metrics.inc(
            "wxhub_push_rejected_total",
            &[("appid", appid), ("reason", reason)],
        );
        // Never the body, the query (signatures) or a key: the reason only.
        tracing::warn!(account.appid = %appid, reason, "push refused");
        e
    }

    /// `GET /push/{appid}`: the platform checks the URL (§8.1). The echostr
    /// goes back verbatim, plain even in safe mode.
    ///
    /// # Errors
    /// 404 for an account without push; 401 for a bad signature.
    pub fn verify(&self, appid: &str, query: &str) -> Result<Response, ApiError> {
        let account = self.account_or_404(appid)?;
        let q = PushQuery::from_query_str(query);
        match account.crypto(self.clock.now()).verify_url(&q) {
            Ok(echostr) => Ok(text(StatusCode::OK, echostr.to_string())),
            Err(e) => {
                let (err, reason) = refusal(&e);
                Err(self.reject(appid, err, reason))
            }
        }
    }

    /// `POST /push/{appid}`: checks, writes, answers. See the module doc.
    ///
    /// # Errors
    /// 404, 401, 400 or 413 for what the platform did not send; 503 when
    /// the store cannot take the write, or `push.max_pending_writes` pushes
    /// already wait for theirs (the platform sends it again).
    pub async fn receive(
        self: &std::sync::Arc<Self>,
        appid: &str,
        query: &str,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let started = Instant::now();
        let account = self.account_or_404(appid)?;
        let now = self.clock.now();
        let q = PushQuery::from_query_str(query);
        let opened = account.crypto(now).open(&q, body).map_err(|e| {
            let (err, reason) = refusal(&e);
            self.reject(appid, err, reason)
        })?;
        let ts: i64 = q
            .timestamp
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if (now - ts).abs() > account.config.max_clock_skew_secs {
            let e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "push_stale",
                "the push's timestamp is too far from now (accounts[].push.max_clock_skew_secs)",
            );
            return Err(self.reject(appid, e, "stale"));
        }
        let msg = opened.message;
        // Kept as the platform wrote it (decrypted in safe mode).
        let raw_xml = String::from_utf8(opened.plaintext)
            .map_err(|_| ApiError::bad_request("push body is not UTF-8"))?;
        let (msg_type, event) = payload::kind_of(&msg);
        let replier = account
            .config
            .replier()
            .filter(|r| r.wants(&msg_type, event.as_deref()));
        let dedup_key = payload::dedup_key(&msg);
        let message_id = payload::new_message_id();
        let new = NewPush {
            appid: appid.to_string(),
            dedup_key: dedup_key.clone(),
            message_id: message_id.clone(),
            openid: msg.from_user_name.as_str().to_string(),
            raw_xml,
            received_at: now,
            subscribers: account
                .config
                .subscribers
                .iter()
                .filter(|s| s.wants(&msg_type, event.as_deref()))
                .map(|s| s.name.clone())
                .collect(),
            follow: payload::follow_change(&msg),
            max_backlog: account.config.max_backlog,
            keep_until: now + self.settings.keep_secs,
        };
        // Refused at once rather than queued: the platform sends it again
        // (after 5 s, three times), and the answer costs nothing here.
        let Ok(permit) = self.writing.try_acquire() else {
            let e = ApiError::overloaded(
                "too many pushes are waiting to be stored (push.max_pending_writes); the platform will retry",
            );
            self.metrics.inc(
                "wxhub_push_rejected_total",
                &[("appid", appid), ("reason", "overloaded")],
            );
            // Not a warning per push: a line each would add to the overload.
            tracing::debug!(account.appid = %appid, "push refused: overloaded");
            return Err(e);
        };
        let accepted = self.store.push_accept(&new).await.map_err(|e| {
            tracing::error!(account.appid = %appid, error = %e, "cannot write a push; the platform will send it again");
            ApiError::unavailable("the push could not be stored; the platform will retry", 1)
        });
        drop(permit);
        let accepted = accepted?;
        let reply = match accepted {
            Accepted::Duplicate { reply, .. } => {
                self.metrics.inc(
                    "wxhub_push_received_total",
                    &[("appid", appid), ("result", "duplicate")],
                );
                match reply {
                    Some(r) => r.strip_prefix('1').map(str::to_owned),
                    None => {
                        let left = account
                            .config
                            .reply_deadline
                            .saturating_sub(started.elapsed());
                        self.same_answer(appid, &dedup_key, left).await
                    }
                }
            }
            Accepted::New { dropped } => {
                self.metrics.inc(
                    "wxhub_push_received_total",
                    &[("appid", appid), ("result", "new")],
                );
                for sub in dropped {
                    self.metrics.inc(
                        "wxhub_push_deliveries_total",
                        &[
                            ("appid", appid),
                            ("subscriber", &sub),
                            ("result", "dropped"),
                        ],
                    );
                    tracing::warn!(account.appid = %appid, subscriber = %sub, "subscriber queue full (max_backlog): message not queued for it");
                }
                self.wake.notify_one();
                match replier {
                    Some(r) => {
                        let deadline = account
                            .config
                            .reply_deadline
                            .saturating_sub(started.elapsed());
                        self.clone()
                            .reply_for(account.clone(), r.clone(), msg.clone(), new, deadline)
                            .await
                    }
                    None => None,
                }
            }
        };
        let resp = self.answer(&account, &q, opened.key, reply, now);
        self.metrics.observe(
            "wxhub_push_ack_seconds",
            &[("appid", appid)],
            started.elapsed().as_secs_f64(),
        );
        Ok(resp)
    }

    /// The answer to the platform: the reply (sealed with the key the push
    /// came with), else `success`, or an empty body for an encrypted push
    /// (§8.3: the safe choice there).
    fn answer(
        &self,
        account: &PushAccount,
        q: &PushQuery,
        key: Option<KeyUsed>,
        reply: Option<String>,
        now: i64,
    ) -> Response {
        match (reply, key) {
            (Some(r), None) => xml(r),
            (Some(r), Some(k)) => {
                let nonce = q.nonce.clone().unwrap_or_default();
                match account
                    .crypto(now)
                    .seal_reply(&r, now.max(0) as u64, &nonce, k)
                {
                    Ok(sealed) => xml(sealed),
                    Err(e) => {
                        tracing::error!(account.appid = %account.appid.as_str(), error = %e, "cannot encrypt the passive reply");
                        text(StatusCode::OK, String::new())
                    }
                }
            }
            (None, None) => text(StatusCode::OK, wx_api::push::SUCCESS.to_string()),
            (None, Some(_)) => text(StatusCode::OK, String::new()),
        }
    }

    /// Asks the replier in a task of its own, so that the platform dropping
    /// its connection (it sends again after 5 s) does not cancel the call;
    /// a retry meanwhile waits for the same answer. An answer is recorded
    /// for later duplicates, and marks the replier's queue entry done.
    async fn reply_for(
        self: std::sync::Arc<Self>,
        account: std::sync::Arc<PushAccount>,
        r: Subscriber,
        msg: PushMessage,
        new: NewPush,
        deadline: Duration,
    ) -> Option<String> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let key = format!("{}:{}", new.appid, new.dedup_key);
        self.lock_asking().insert(key.clone(), rx);
        let task = tokio::spawn(async move {
            let answered = self.ask_replier(&account, &r, &msg, &new, deadline).await;
            if let Some(reply) = &answered {
                let marker = reply
                    .as_ref()
                    .map_or(NO_REPLY.to_string(), |x| format!("1{x}"));
                let stored = self
                    .store
                    .push_set_reply(&new.appid, &new.dedup_key, &new.message_id, &marker)
                    .await;
                if let Err(e) = stored {
                    tracing::warn!(account.appid = %new.appid, error = %e, "cannot record the passive reply");
                }
            }
            let reply = answered.flatten();
            let _ = tx.send(Some(reply.clone()));
            self.lock_asking().remove(&key);
            reply
        });
        task.await.ok().flatten()
    }

    /// Calls the replier synchronously, at most `deadline`. Its answer: the
    /// passive reply XML, `{"text": "..."}`, or `success`/empty/204 for none.
    /// `None`: it did not answer in time; its queue entry (written with the
    /// push) then delivers the message to it later like to any other.
    async fn ask_replier(
        &self,
        account: &PushAccount,
        r: &Subscriber,
        msg: &PushMessage,
        new: &NewPush,
        deadline: Duration,
    ) -> Option<Option<String>> {
        let appid = account.appid.as_str();
        let delivery_id = format!("{}.{}", new.message_id, r.name);
        let follower = if payload::is_subscribe(msg) {
            // Only what is cached: no upstream call inside the 5 s.
            self.store
                .follower(appid, &new.openid)
                .await
                .ok()
                .flatten()
                .and_then(|f| serde_json::to_value(f).ok())
        } else {
            None
        };
        let env = payload::Envelope {
            appid,
            message_id: &new.message_id,
            delivery_id: &delivery_id,
            received_at: new.received_at,
            attempt: 1,
            follower,
        };
        let body = payload::body(&env, msg, &new.raw_xml).to_string();
        let call = self.post(
            &self.http,
            r,
            &delivery_id,
            body.into_bytes(),
            deadline.min(r.timeout),
        );
        let outcome = match call.await {
            Ok((status, bytes)) if status.is_success() => {
                parse_reply(msg, &bytes, self.clock.now())
            }
            Ok((status, _)) => Err(format!("HTTP {}", status.as_u16())),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(reply) => {
                let result = if reply.is_some() { "replied" } else { "none" };
                self.metrics.inc(
                    "wxhub_push_replies_total",
                    &[("appid", appid), ("result", result)],
                );
                Some(reply)
            }
            Err(e) => {
                self.metrics.inc(
                    "wxhub_push_replies_total",
                    &[("appid", appid), ("result", "failed")],
                );
                tracing::warn!(account.appid = %appid, subscriber = %r.name, error = %e, "no passive reply in time; answering success, delivering later");
                None
            }
        }
    }
}

/// A replier's answer as the passive reply XML, or `None` for no reply.
fn parse_reply(msg: &PushMessage, body: &[u8], now: i64) -> Result<Option<String>, String> {
    let s = std::str::from_utf8(body)
        .map_err(|_| "reply is not UTF-8".to_string())?
        .trim();
    if s.is_empty() || s == wx_api::push::SUCCESS {
        return Ok(None);
    }
    if s.starts_with("<xml") && s.ends_with("</xml>") {
        return Ok(Some(s.to_string()));
    }
    if s.starts_with('{') {
        let v: Value = serde_json::from_str(s).map_err(|_| "reply is not JSON".to_string())?;
        if let Some(t) = v.get("text").and_then(Value::as_str) {
            return Ok(Some(Reply::text_to(msg, now, t).to_xml()));
        }
        if let Some(x) = v.get("xml").and_then(Value::as_str) {
            return Ok(Some(x.to_string()));
        }
        return Ok(None);
    }
    Err("reply is neither XML, JSON, success nor empty".into())
}

/// Reads at most `limit` bytes of a response.
pub(super) async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if out.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

impl Gateway {
    /// POSTs a signed delivery; the status and at most 64 KiB of the body.
    pub(super) async fn post(
        &self,
        via: &reqwest::Client,
        s: &Subscriber,
        delivery_id: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let ts = self.clock.now();
        let signature = payload::sign(&s.secret, ts, &body);
        let call = async {
            let resp = via
                .post(s.url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-wxhub-delivery", delivery_id)
                .header("x-wxhub-timestamp", ts.to_string())
                .header("x-wxhub-signature", signature)
                .body(body)
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = read_capped(resp, MAX_REPLY_BYTES).await?;
            Ok((status, bytes))
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
    }
}
