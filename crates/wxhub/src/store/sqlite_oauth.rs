//! Web authorization's records in the SQLite store: pending states, their
//! outcomes, hand-over tickets and grants.

use rusqlite::{OptionalExtension, Transaction, params};

use super::sqlite::SqliteStore;
use super::{
    Consumed, FinishedSignIn, Grant, Redeemed, StateRecord, StoreError, open_grant, seal_grant,
};
use super::{STATE_GRACE, TICKET_GRACE};
use super::{Stage, scope_from_name, scope_name};

impl SqliteStore {
    /// Records a new pending authorization, unless the account already has
    /// `max_pending` states on file (after sweeping its expired ones):
    /// `Ok(false)` then.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_state(
        &self,
        id: &str,
        r: &StateRecord,
        now: i64,
        max_pending: u32,
    ) -> Result<bool, StoreError> {
        let (id, r) = (id.to_string(), r.clone());
        self.run(move |b| {
            let count = |tx: &Transaction<'_>| -> Result<u32, StoreError> {
                Ok(tx
                    .prepare_cached("SELECT COUNT(*) FROM oauth_states WHERE appid = ?1")?
                    .query_row(params![r.appid], |row| row.get(0))?)
            };
            let mut n = match b.states.get(&r.appid) {
                Some(n) => *n,
                None => count(b.tx)?,
            };
            if n >= max_pending {
                b.tx.prepare_cached(
                    "DELETE FROM oauth_states WHERE appid = ?1 AND expires_at < ?2",
                )?
                .execute(params![r.appid, now - STATE_GRACE])?;
                n = count(b.tx)?;
                if n >= max_pending {
                    b.states.insert(r.appid.clone(), n);
                    return Ok(false);
                }
            }
            b.tx.prepare_cached("INSERT INTO oauth_states (id, appid, want, stage, return_to, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
                .execute(params![id, r.appid, scope_name(r.want), r.stage.as_str(), r.return_to, r.expires_at])?;
            b.states.insert(r.appid.clone(), n + 1);
            Ok(true)
        })
        .await
    }

    /// Deletes states expired more than [`STATE_GRACE`] ago and tickets
    /// expired more than [`TICKET_GRACE`] ago. Returns how many of each.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn sweep(&self, now: i64) -> Result<(usize, usize), StoreError> {
        self.run(move |b| {
            let states =
                b.tx.prepare_cached("DELETE FROM oauth_states WHERE expires_at < ?1")?
                    .execute(params![now - STATE_GRACE])?;
            let tickets =
                b.tx.prepare_cached("DELETE FROM oauth_tickets WHERE expires_at < ?1")?
                    .execute(params![now - TICKET_GRACE])?;
            b.states.clear();
            Ok((states, tickets))
        })
        .await
    }

    /// Looks a state up without using it.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn peek_state(
        &self,
        appid: &str,
        id: &str,
    ) -> Result<Option<StateRecord>, StoreError> {
        let (appid, id) = (appid.to_string(), id.to_string());
        self.run(move |b| {
            Ok(b
            .tx
            .prepare_cached(
                "SELECT appid, want, stage, return_to, expires_at FROM oauth_states WHERE id = ?1 AND appid = ?2",
            )?
            .query_row(params![id, appid], state_record)
            .optional()?)
        })
        .await
    }

    /// Uses a state, once. `code_hash` is the hash of the code that came
    /// with it (None for a refusal).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn consume_state(
        &self,
        appid: &str,
        id: &str,
        code_hash: Option<&str>,
        now: i64,
    ) -> Result<Consumed, StoreError> {
        let (appid, id, code_hash) = (
            appid.to_string(),
            id.to_string(),
            code_hash.map(str::to_string),
        );
        self.run(move |b| {
            let changed = b.tx.prepare_cached("UPDATE oauth_states SET used_at = ?3, code_hash = ?4 WHERE id = ?1 AND appid = ?2 AND used_at IS NULL")?
                .execute(params![id, appid, now, code_hash])?;
            let row = b.tx
                .prepare_cached("SELECT appid, want, stage, return_to, expires_at, used_at, code_hash, result FROM oauth_states WHERE id = ?1 AND appid = ?2")?
                .query_row(params![id, appid], |r| {
                    Ok((
                        state_record(r)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                })
                .optional()?;
            Ok(match row {
                None => Consumed::Missing,
                Some((record, _, _, _)) if changed == 1 => Consumed::Fresh(record),
                Some((record, Some(used_at), Some(stored), result))
                    if code_hash.as_deref().is_some_and(|c| c == stored) =>
                {
                    Consumed::Again {
                        record,
                        used_at,
                        result,
                    }
                }
                Some((record, _, _, _)) => Consumed::Used(record),
            })
        })
        .await
    }

    /// Stores the outcome of a finished authorization on its state, for a
    /// repeated callback.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn set_state_result(
        &self,
        appid: &str,
        id: &str,
        result: &str,
    ) -> Result<(), StoreError> {
        let (appid, id, result) = (appid.to_string(), id.to_string(), result.to_string());
        self.run(move |b| {
            b.tx.prepare_cached(
                "UPDATE oauth_states SET result = ?3 WHERE id = ?1 AND appid = ?2",
            )?
            .execute(params![id, appid, result])?;
            Ok(())
        })
        .await
    }

    /// The stored outcome of a used state.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn state_result(&self, appid: &str, id: &str) -> Result<Option<String>, StoreError> {
        let (appid, id) = (appid.to_string(), id.to_string());
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("SELECT result FROM oauth_states WHERE id = ?1 AND appid = ?2")?
                .query_row(params![id, appid], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten())
        })
        .await
    }

    /// Whether a ticket exists, is unused and has not expired.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn ticket_live(&self, hash: &str, now: i64) -> Result<bool, StoreError> {
        let hash = hash.to_string();
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached(
                    "SELECT 1 FROM oauth_tickets WHERE hash = ?1 AND used = 0 AND expires_at > ?2",
                )?
                .query_row(params![hash, now], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    /// The account of an unused, unexpired ticket.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn ticket_appid(&self, hash: &str) -> Result<Option<String>, StoreError> {
        let hash = hash.to_string();
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("SELECT appid FROM oauth_tickets WHERE hash = ?1 AND used = 0")?
                .query_row(params![hash], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// Stores a hand-over ticket by its hash.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_ticket(
        &self,
        hash: &str,
        appid: &str,
        payload: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let _ = now;
        let (hash, appid, payload) = (hash.to_string(), appid.to_string(), payload.to_string());
        self.run(move |b| {
            b.tx.prepare_cached(
                "INSERT INTO oauth_tickets (hash, appid, payload, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![hash, appid, payload, expires_at])?;
            Ok(())
        })
        .await
    }

    /// Redeems a ticket once: (appid, payload) if it exists, is unused and unexpired.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn redeem_ticket(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let hash = hash.to_string();
        self.run(move |b| {
            Ok(b.tx
                .prepare_cached("UPDATE oauth_tickets SET used = 1 WHERE hash = ?1 AND used = 0 AND expires_at > ?2 RETURNING appid, payload")?
                .query_row(params![hash, now], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })
        .await
    }

    /// Stores (replaces) a grant.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let g = seal_grant(self.sealer(), g);
        self.run(move |b| {
            b.tx.prepare_cached("INSERT INTO grants (appid, openid, unionid, scope, snapshot, access_token, access_expires_at, refresh_token, refresh_expires_at, profile, profile_fetched_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (appid, openid) DO UPDATE SET unionid = excluded.unionid, scope = excluded.scope,
                   snapshot = excluded.snapshot, access_token = excluded.access_token,
                   access_expires_at = excluded.access_expires_at, refresh_token = excluded.refresh_token,
                   refresh_expires_at = excluded.refresh_expires_at, profile = excluded.profile,
                   profile_fetched_at = excluded.profile_fetched_at")?
                .execute(params![
                    g.appid, g.openid, g.unionid, g.scope, g.snapshot, g.access_token, g.access_expires_at,
                    g.refresh_token, g.refresh_expires_at, g.profile, g.profile_fetched_at
                ])?;
            Ok(())
        })
        .await
    }

    /// Stores a base-scope grant unless a userinfo grant whose refresh token
    /// is alive at `now` is on file.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_base_grant(&self, g: &Grant, now: i64) -> Result<(), StoreError> {
        let g = seal_grant(self.sealer(), g);
        self.run(move |b| upsert_base_grant(b.tx, &g, now)).await
    }

    /// Stores a finished sign-in in one write.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn finish_sign_in(&self, f: &FinishedSignIn<'_>) -> Result<(), StoreError> {
        let (appid, id, hash, payload, outcome) = (
            f.appid.to_string(),
            f.state_id.to_string(),
            f.ticket_hash.to_string(),
            f.payload.to_string(),
            f.outcome.to_string(),
        );
        let grant = f.base_grant.map(|g| seal_grant(self.sealer(), g));
        let (expires_at, now) = (f.ticket_expires_at, f.now);
        self.run(move |b| {
            if let Some(g) = &grant {
                upsert_base_grant(b.tx, g, now)?;
            }
            b.tx.prepare_cached(
                "INSERT INTO oauth_tickets (hash, appid, payload, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![hash, appid, payload, expires_at])?;
            b.tx.prepare_cached("UPDATE oauth_states SET result = ?3 WHERE id = ?1 AND appid = ?2")?
                .execute(params![id, appid, outcome])?;
            Ok(())
        })
        .await
    }

    /// Redeems a ticket once if `allowed` accepts its account.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn redeem_ticket_for(
        &self,
        hash: &str,
        now: i64,
        allowed: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Redeemed, StoreError> {
        let hash = hash.to_string();
        self.run(move |b| {
            let appid: Option<String> = b
                .tx
                .prepare_cached("SELECT appid FROM oauth_tickets WHERE hash = ?1 AND used = 0 AND expires_at > ?2")?
                .query_row(params![hash, now], |r| r.get(0))
                .optional()?;
            let Some(appid) = appid else {
                return Ok(Redeemed::Missing);
            };
            if !allowed(&appid) {
                return Ok(Redeemed::Forbidden(appid));
            }
            let payload: String = b
                .tx
                .prepare_cached("UPDATE oauth_tickets SET used = 1 WHERE hash = ?1 RETURNING payload")?
                .query_row(params![hash], |r| r.get(0))?;
            Ok(Redeemed::Done(appid, payload))
        })
        .await
    }

    /// A person's grant to an account.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn load_grant(&self, appid: &str, openid: &str) -> Result<Option<Grant>, StoreError> {
        let (appid, openid) = (appid.to_string(), openid.to_string());
        let grant = self.run(move |b| {
            Ok(b
            .tx
            .prepare_cached("SELECT appid, openid, unionid, scope, snapshot, access_token, access_expires_at, refresh_token, refresh_expires_at, profile, profile_fetched_at
                 FROM grants WHERE appid = ?1 AND openid = ?2")?
            .query_row(params![appid, openid], |r| {
                Ok(Grant {
                    appid: r.get(0)?,
                    openid: r.get(1)?,
                    unionid: r.get(2)?,
                    scope: r.get(3)?,
                    snapshot: r.get(4)?,
                    access_token: r.get(5)?,
                    access_expires_at: r.get(6)?,
                    refresh_token: r.get(7)?,
                    refresh_expires_at: r.get(8)?,
                    profile: r.get(9)?,
                    profile_fetched_at: r.get(10)?,
                })
            })
            .optional()?)
        })
        .await?;
        grant.map(|g| open_grant(self.sealer(), g)).transpose()
    }

    /// Forgets a grant (expired or revoked).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn delete_grant(&self, appid: &str, openid: &str) -> Result<(), StoreError> {
        let (appid, openid) = (appid.to_string(), openid.to_string());
        self.run(move |b| {
            b.tx.prepare_cached("DELETE FROM grants WHERE appid = ?1 AND openid = ?2")?
                .execute(params![appid, openid])?;
            Ok(())
        })
        .await
    }
}

/// A state record from a row's first five columns: appid, want, stage,
/// return_to, expires_at.
fn state_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<StateRecord> {
    let bad = |column: usize, name: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!("state record has a bad `{name}`").into(),
        )
    };
    let (want, stage): (String, String) = (r.get(1)?, r.get(2)?);
    Ok(StateRecord {
        appid: r.get(0)?,
        want: scope_from_name(&want).ok_or_else(|| bad(1, "want"))?,
        stage: Stage::parse(&stage).ok_or_else(|| bad(2, "stage"))?,
        return_to: r.get(3)?,
        expires_at: r.get(4)?,
    })
}

/// The grant, unless a userinfo grant whose refresh token is alive at `now`
/// is on file.
fn upsert_base_grant(tx: &Transaction<'_>, g: &Grant, now: i64) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO grants (appid, openid, unionid, scope, snapshot, access_token, access_expires_at, refresh_token, refresh_expires_at, profile, profile_fetched_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (appid, openid) DO UPDATE SET unionid = excluded.unionid, scope = excluded.scope,
           snapshot = excluded.snapshot, access_token = excluded.access_token,
           access_expires_at = excluded.access_expires_at, refresh_token = excluded.refresh_token,
           refresh_expires_at = excluded.refresh_expires_at, profile = excluded.profile,
           profile_fetched_at = excluded.profile_fetched_at
         WHERE NOT (grants.scope != 'snsapi_base' AND grants.refresh_expires_at > ?12)")?
        .execute(params![
            g.appid, g.openid, g.unionid, g.scope, g.snapshot, g.access_token, g.access_expires_at,
            g.refresh_token, g.refresh_expires_at, g.profile, g.profile_fetched_at, now
        ])?;
    Ok(())
}
