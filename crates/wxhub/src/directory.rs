//! Accounts and clients changed while the hub runs.
//!
//! The configuration file is the starting set. What the admin API changes
//! is stored as one row per account or client: a whole definition, a
//! change to a file entry's fields, or a removal. An account is what its
//! row says, or the file's entry when it has no row. A change is applied
//! where it is made at once; in shared mode the other instances read the
//! store's change log twice a second and apply it too.
//!
//! Every change is audited: who (the admin key, the name the caller gave in
//! `X-Wxhub-Actor`, its address), what (the fields given, by name), when.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::config::definition::{account_from_json, client_from_json, merge, patch_account};
use crate::config::{AccountConfig, ClientConfig, ConfigError};
use crate::error::ApiError;
use crate::store::directory::{AuditEntry, Changes, Section};
use crate::store::{Store, StoreError};

/// A stored row.
#[derive(Debug, Clone, PartialEq)]
enum Row {
    /// A whole definition (the body as given, secrets inline).
    Define(Map<String, Value>),
    /// Fields replacing those of the file's entry.
    Change(Map<String, Value>),
    /// Removed, though the file has it.
    Removed,
}

impl Row {
    fn encode(&self) -> String {
        match self {
            Row::Define(b) => json!({"form": "define", "body": b}),
            Row::Change(b) => json!({"form": "change", "body": b}),
            Row::Removed => json!({"form": "removed"}),
        }
        .to_string()
    }

    fn decode(text: &str) -> Result<Row, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let body = || match v.get("body") {
            Some(Value::Object(m)) => Ok(m.clone()),
            _ => Err("a stored row without its body".to_string()),
        };
        match v.get("form").and_then(Value::as_str) {
            Some("define") => Ok(Row::Define(body()?)),
            Some("change") => Ok(Row::Change(body()?)),
            Some("removed") => Ok(Row::Removed),
            _ => Err("a stored row of no known form".to_string()),
        }
    }
}

/// What a row does to the running hub.
#[derive(Debug)]
enum Effect {
    /// Nothing: the file's entry stands.
    Keep,
    /// This configuration.
    Set(Box<AccountConfig>),
    /// No such account.
    Remove,
}

/// Who made a change, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// Accounts and clients changed at run time.
#[derive(Debug)]
pub struct Directory {
    // The file's AppIDs. The file's entry itself is not kept: until a row
    // replaces it, it is what `creds` holds, and a change applies to that.
    file_accounts: std::collections::HashSet<Box<str>>,
    // The clients in force, read on every request.
    clients: RwLock<Arc<[ClientConfig]>>,
    // Client rows as stored.
    client_rows: Mutex<HashMap<String, Row>>,
    // Each row as last applied, so one applied here and then read again
    // from the log (or unchanged in a full reload) is not applied twice.
    applied: Mutex<HashMap<(Section, String), String>>,
    // The change log's position (shared mode).
    cursor: Mutex<String>,
    // One admin change at a time per instance: a change reads its row,
    // merges and writes it back.
    writing: tokio::sync::Mutex<()>,
}

/// A row as read before a change, to write only if it is still so.
#[derive(Debug)]
struct Read {
    stored: Option<String>,
    row: Option<Row>,
}

impl Read {
    fn etag(&self) -> String {
        etag_of(self.stored.as_deref())
    }
}

/// An account's version: a digest of its stored row (sealed rows differ
/// with every write, so every change is a new version).
fn etag_of(stored: Option<&str>) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(stored.unwrap_or("").as_bytes());
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// How often a change is tried again when another instance's change to the
/// same row lands between its read and its write.
const WRITE_TRIES: usize = 5;

fn busy(name: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "conflict",
        format!("{name} kept being changed by other instances meanwhile; try again"),
    )
}

/// The preconditions of an admin change to an account (RFC 9110 §13):
/// `If-Match` with the `ETag` of a `GET` (or `*`: it exists), so an
/// operator's change made from an older view fails with 412 instead of
/// undoing someone else's; and `If-None-Match: *` on `PUT`: create only.
#[derive(Debug, Default, Clone)]
pub struct Precondition {
    if_match: Option<Vec<String>>,
    if_none_match_any: bool,
}

impl Precondition {
    /// Reads `If-Match` and `If-None-Match` (only `*` is meaningful for
    /// the latter here).
    pub fn from_headers(h: &axum::http::HeaderMap) -> Precondition {
        let list = |name: &str| {
            let values: Vec<String> = h
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect();
            (!values.is_empty()).then_some(values)
        };
        Precondition {
            if_match: list("if-match"),
            if_none_match_any: list("if-none-match").is_some_and(|v| v.iter().any(|t| t == "*")),
        }
    }

    /// Whether a change may go ahead, given the current version (`None`:
    /// no such account).
    fn check(&self, current: Option<&str>) -> Result<(), ApiError> {
        let failed = |why: String| {
            Err(ApiError::new(
                axum::http::StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                why,
            ))
        };
        if let Some(tags) = &self.if_match {
            let holds = current.is_some_and(|now| {
                // Strong comparison: a weak tag never matches.
                tags.iter().any(|t| t == "*" || t == now)
            });
            if !holds {
                return failed(match current {
                    Some(now) => format!(
                        "If-Match: the account was changed since that version; it is now {now} (GET it again)"
                    ),
                    None => "If-Match: no such account".to_string(),
                });
            }
        }
        if self.if_none_match_any && current.is_some() {
            return failed("If-None-Match: *: the account exists".to_string());
        }
        Ok(())
    }
}

fn source_of(row: Option<&Row>) -> &'static str {
    match row {
        Some(Row::Define(_)) => "api",
        Some(Row::Change(_)) => "file+api",
        _ => "file",
    }
}

fn stored_error(e: StoreError) -> ApiError {
    ApiError::internal(e)
}

fn invalid(e: ConfigError) -> ApiError {
    ApiError::bad_request(format!("{}: {}", e.key, e.message))
}

impl Directory {
    /// The file's accounts and clients, before the store is read.
    pub fn new(accounts: &[AccountConfig], clients: &[ClientConfig]) -> Directory {
        Directory {
            file_accounts: accounts.iter().map(|a| a.appid.as_str().into()).collect(),
            clients: RwLock::new(clients.to_vec().into()),
            client_rows: Mutex::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            cursor: Mutex::new("0-0".to_string()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// The clients in force.
    pub fn clients(&self) -> Arc<[ClientConfig]> {
        self.clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn in_file(&self, appid: &str) -> bool {
        self.file_accounts.contains(appid)
    }

    /// Whether an account exists by its stored row (what every instance
    /// reads alike), not by what this instance has applied yet.
    fn exists(&self, appid: &str, read: &Read) -> bool {
        match read.row {
            Some(Row::Removed) => false,
            Some(_) => true,
            None => self.in_file(appid),
        }
    }

    /// Applies everything stored (at start-up, and after falling behind
    /// the change log).
    ///
    /// # Errors
    /// If the store cannot be read.
    pub async fn load(&self, app: &App) -> Result<(), StoreError> {
        let snapshot = app.store.dir_all().await?;
        let mut seen_accounts = std::collections::HashSet::new();
        for e in &snapshot.entries {
            if e.section == Section::Account {
                seen_accounts.insert(e.name.clone());
            }
            self.apply(app, e.section, &e.name, Some(&e.body)).await;
        }
        // A full reload after a gap: rows deleted meanwhile.
        let stale: Vec<(Section, String)> = self
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|(s, n)| {
                !snapshot
                    .entries
                    .iter()
                    .any(|e| e.section == *s && &e.name == n)
            })
            .cloned()
            .collect();
        for (section, name) in stale {
            self.apply(app, section, &name, None).await;
        }
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = snapshot.cursor;
        Ok(())
    }

    /// Applies one stored row (or its absence) to the running hub.
    async fn apply(&self, app: &App, section: Section, name: &str, stored: Option<&str>) {
        let key = (section, name.to_string());
        let text = match stored.map(|s| open(&app.store, section, name, s)) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                tracing::error!(section = section.as_str(), name, error = %e, "cannot read a stored directory row; left as it was");
                return;
            }
            None => None,
        };
        {
            let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
            if applied.get(&key).map(String::as_str) == text.as_deref() {
                return;
            }
        }
        let row = match text.as_deref().map(Row::decode) {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                tracing::error!(section = section.as_str(), name, error = %e, "a stored directory row does not decode; left as it was");
                return;
            }
            None => None,
        };
        match section {
            Section::Account => self.apply_account(app, name, row.as_ref()).await,
            Section::Client => {
                {
                    let mut rows = self.client_rows.lock().unwrap_or_else(|e| e.into_inner());
                    match row {
                        Some(r) => rows.insert(name.to_string(), r),
                        None => rows.remove(name),
                    };
                }
                self.rebuild_clients(app);
            }
        }
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        match text {
            Some(t) => applied.insert(key, t),
            None => applied.remove(&key),
        };
    }

    /// What a row (or none) makes of `appid`. A change applies to the
    /// account as held, which is the file's entry with the fields of an
    /// earlier change: a change row only ever follows no row or another
    /// change (a change to a defined account stays a definition, to a
    /// removed one is refused), and each field given replaces the whole
    /// field, so applying the merged change again gives the same account.
    fn effective(&self, app: &App, appid: &str, row: Option<&Row>) -> Result<Effect, ConfigError> {
        Ok(match row {
            None if self.in_file(appid) => Effect::Keep,
            None | Some(Row::Removed) => Effect::Remove,
            Some(Row::Define(b)) => Effect::Set(Box::new(account_from_json(
                appid,
                &Value::Object(b.clone()),
            )?)),
            Some(Row::Change(c)) => match app.creds.account(appid) {
                Some(current) => Effect::Set(Box::new(patch_account(
                    &current.cfg,
                    &Value::Object(c.clone()),
                )?)),
                None => Effect::Remove,
            },
        })
    }

    async fn apply_account(&self, app: &App, appid: &str, row: Option<&Row>) {
        match self.effective(app, appid, row) {
            Ok(Effect::Keep) => {}
            Ok(Effect::Set(cfg)) => {
                if let Err(e) = app.push.set_account(appid, Some(&cfg)) {
                    tracing::error!(account.appid = %appid, error = %e, "cannot apply push settings");
                }
                app.creds.upsert(*cfg).await;
            }
            Ok(Effect::Remove) => {
                let _ = app.push.set_account(appid, None);
                app.creds.remove(appid).await;
                app.metrics.forget_account(appid);
            }
            Err(e) => {
                tracing::error!(account.appid = %appid, key = %e.key, error = %e.message, "a stored account no longer validates; left as it was");
            }
        }
    }

    fn rebuild_clients(&self, app: &App) {
        let rows = self.client_rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<ClientConfig> = app
            .config
            .clients
            .iter()
            .filter(|c| !rows.contains_key(&*c.name))
            .cloned()
            .collect();
        for (name, row) in rows.iter() {
            if let Row::Define(b) = row {
                // Checked when it was made; an account removed since just
                // is not there to use.
                match client_from_json(&Value::Object(b.clone()), &|_| true, &app.config.limits) {
                    Ok(c) => out.push(c),
                    Err(e) => {
                        tracing::error!(client = %name, key = %e.key, error = %e.message, "a stored client no longer validates; not in force");
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        *self.clients.write().unwrap_or_else(|e| e.into_inner()) = out.into();
    }

    /// Reads the change log and applies what other instances changed,
    /// twice a second, until shutdown (shared mode).
    pub async fn run_watcher(
        self: Arc<Self>,
        app: Arc<App>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
            let since = self
                .cursor
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match app.store.dir_changes(&since).await {
                Ok(Changes::Some(changed, cursor)) => {
                    for (section, name) in changed {
                        match app.store.dir_get(section, &name).await {
                            Ok(body) => self.apply(&app, section, &name, body.as_deref()).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot read a changed directory row; reading everything again");
                                *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) =
                                    "0-0".to_string();
                                let _ = self.load(&app).await;
                                break;
                            }
                        }
                    }
                    let mut c = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
                    if *c == since {
                        *c = cursor;
                    }
                }
                Ok(Changes::Gap) => {
                    tracing::info!(
                        "fell behind the directory's change log; reading everything again"
                    );
                    if let Err(e) = self.load(&app).await {
                        tracing::warn!(error = %e, "cannot read the directory");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the directory's change log"),
            }
        }
    }

    /// A row as stored (what a change compares against when it writes)
    /// and as it reads.
    async fn read(&self, app: &App, section: Section, name: &str) -> Result<Read, ApiError> {
        let Some(stored) = app
            .store
            .dir_get(section, name)
            .await
            .map_err(stored_error)?
        else {
            return Ok(Read {
                stored: None,
                row: None,
            });
        };
        let text = open(&app.store, section, name, &stored).map_err(ApiError::internal)?;
        let row = Row::decode(&text).map_err(ApiError::internal)?;
        Ok(Read {
            stored: Some(stored),
            row: Some(row),
        })
    }

    async fn row(&self, app: &App, section: Section, name: &str) -> Result<Option<Row>, ApiError> {
        Ok(self.read(app, section, name).await?.row)
    }

    /// Stores a row (or deletes it) if it is still as `read`, audits the
    /// change and applies it here; the version written. `None`, with
    /// nothing done, when another instance changed it meanwhile.
    async fn commit(
        &self,
        app: &App,
        section: Section,
        name: &str,
        read: &Read,
        row: Option<Row>,
        audit: AuditEntry,
    ) -> Result<Option<String>, ApiError> {
        let text = row.as_ref().map(Row::encode);
        let sealed = text
            .as_deref()
            .map(|t| seal(&app.store, section, name, t))
            .transpose()
            .map_err(ApiError::internal)?;
        let written = app
            .store
            .dir_set(section, name, read.stored.as_deref(), sealed.as_deref())
            .await
            .map_err(stored_error)?;
        if !written {
            return Ok(None);
        }
        if let Err(e) = app.store.audit_append(&audit).await {
            tracing::error!(error = %e, action = %audit.action, target = %audit.target, "cannot write the audit log");
        }
        tracing::info!(actor = %audit.actor, action = %audit.action, target = %audit.target, fields = ?audit.fields, "directory changed");
        self.apply(app, section, name, sealed.as_deref()).await;
        Ok(Some(etag_of(sealed.as_deref())))
    }

    fn audit(
        app: &App,
        actor: &Actor,
        action: &str,
        target: &str,
        body: Option<&Value>,
    ) -> AuditEntry {
        AuditEntry {
            id: 0,
            at: app.clock.now(),
            actor: actor.0.clone(),
            action: action.to_string(),
            target: target.to_string(),
            fields: body
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Adds or replaces an account with a whole definition, if `cond`
    /// holds. Returns whether it is new, and its version.
    ///
    /// # Errors
    /// 400 naming the field; 412 when `cond` does not hold; 409 when
    /// other changes kept landing first; 500 on a store failure.
    pub async fn put_account(
        &self,
        app: &App,
        actor: &Actor,
        appid: &str,
        body: Value,
        cond: &Precondition,
    ) -> Result<(bool, String), ApiError> {
        let _one = self.writing.lock().await;
        let cfg = account_from_json(appid, &body).map_err(invalid)?;
        self.check_oauth(app, &cfg)?;
        let Value::Object(mut map) = body else {
            unreachable!("account_from_json takes objects only");
        };
        map.remove("appid");
        for _ in 0..WRITE_TRIES {
            let read = self.read(app, Section::Account, appid).await?;
            let new = !self.exists(appid, &read);
            cond.check((!new).then(|| read.etag()).as_deref())?;
            let action = if new {
                "account.create"
            } else {
                "account.replace"
            };
            let audit = Self::audit(app, actor, action, appid, Some(&Value::Object(map.clone())));
            let row = Some(Row::Define(map.clone()));
            if let Some(etag) = self
                .commit(app, Section::Account, appid, &read, row, audit)
                .await?
            {
                return Ok((new, etag));
            }
        }
        Err(busy(appid))
    }

    /// Records the platform's word on an account authorized to
    /// `component`: its administrator revoked it at `revoked_at`, or (with
    /// `None`) authorized it. Only `revoked_at` changes, so what an operator
    /// set on the account outlives a revocation and a new authorization; an
    /// account not stored yet is added as `fresh` (a revocation of one is
    /// nothing to record). An account of the configuration file gets
    /// `fresh` as its whole definition, as it always has.
    ///
    /// # Errors
    /// 409 `account_exists` when the stored account has its own secret or
    /// another platform; 409 when other changes kept landing first; 500 on
    /// a store failure.
    pub async fn record_authorization(
        &self,
        app: &App,
        actor: &Actor,
        appid: &str,
        component: &str,
        fresh: Value,
        revoked_at: Option<i64>,
    ) -> Result<(), ApiError> {
        let _one = self.writing.lock().await;
        let Value::Object(mut fresh) = fresh else {
            return Err(ApiError::internal(
                "an authorized account's definition is an object",
            ));
        };
        if let Some(at) = revoked_at {
            fresh.insert("revoked_at".into(), at.into());
        }
        let change = json!({ "revoked_at": revoked_at });
        for _ in 0..WRITE_TRIES {
            let read = self.read(app, Section::Account, appid).await?;
            let (action, body) = match read.row.clone() {
                Some(Row::Define(mut b)) => {
                    if b.get("component").and_then(Value::as_str) != Some(component) {
                        return Err(ApiError::new(
                            axum::http::StatusCode::CONFLICT,
                            "account_exists",
                            format!(
                                "{appid} is in this hub with its own secret or another platform; {component}'s word on it is not recorded"
                            ),
                        ));
                    }
                    let stored = b.get("revoked_at").and_then(Value::as_i64);
                    if stored.is_some() == revoked_at.is_some() {
                        return Ok(());
                    }
                    match revoked_at {
                        Some(at) => b.insert("revoked_at".into(), at.into()),
                        None => b.remove("revoked_at"),
                    };
                    ("account.change", b)
                }
                // The file's entry, changed at run time or not.
                Some(Row::Change(_)) => ("account.replace", fresh.clone()),
                None if self.in_file(appid) => ("account.replace", fresh.clone()),
                None | Some(Row::Removed) => {
                    if revoked_at.is_some() {
                        return Ok(());
                    }
                    ("account.create", fresh.clone())
                }
            };
            account_from_json(appid, &Value::Object(body.clone())).map_err(invalid)?;
            let fields = if action == "account.change" {
                change.clone()
            } else {
                Value::Object(body.clone())
            };
            let audit = Self::audit(app, actor, action, appid, Some(&fields));
            if self
                .commit(
                    app,
                    Section::Account,
                    appid,
                    &read,
                    Some(Row::Define(body)),
                    audit,
                )
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(busy(appid))
    }

    /// Changes the fields given of an account, if `cond` holds. A change
    /// made meanwhile on another instance is read and this one merged
    /// into it, so two changes of different fields both land. Returns the
    /// account's new version.
    ///
    /// # Errors
    /// 404 for no such account; 400 naming the field; 412 when `cond`
    /// does not hold; 409 when other changes kept landing first; 500 on a
    /// store failure.
    pub async fn patch_account(
        &self,
        app: &App,
        actor: &Actor,
        appid: &str,
        patch: Value,
        cond: &Precondition,
    ) -> Result<String, ApiError> {
        let _one = self.writing.lock().await;
        if !patch.is_object() {
            return Err(ApiError::bad_request("body: a change is a JSON object"));
        }
        for _ in 0..WRITE_TRIES {
            let read = self.read(app, Section::Account, appid).await?;
            let new_row = match read.row.clone() {
                Some(Row::Removed) => None,
                Some(Row::Define(mut b)) => {
                    merge(&mut b, &patch);
                    Some(Row::Define(b))
                }
                Some(Row::Change(mut c)) => {
                    merge(&mut c, &patch);
                    Some(Row::Change(c))
                }
                None if self.in_file(appid) => {
                    let mut c = Map::new();
                    merge(&mut c, &patch);
                    Some(Row::Change(c))
                }
                None => None,
            };
            let Some(new_row) = new_row else {
                return Err(ApiError::not_found(format!("no account {appid}")));
            };
            cond.check(Some(&read.etag()))?;
            // The change alone first, for errors naming its own fields.
            if let Some(current) = app.creds.account(appid) {
                patch_account(&current.cfg, &patch).map_err(invalid)?;
            }
            let Effect::Set(cfg) = self
                .effective(app, appid, Some(&new_row))
                .map_err(invalid)?
            else {
                return Err(ApiError::not_found(format!("no account {appid}")));
            };
            self.check_oauth(app, &cfg)?;
            let audit = Self::audit(app, actor, "account.change", appid, Some(&patch));
            if let Some(etag) = self
                .commit(app, Section::Account, appid, &read, Some(new_row), audit)
                .await?
            {
                return Ok(etag);
            }
        }
        Err(busy(appid))
    }

    /// Removes an account, if `cond` holds.
    ///
    /// # Errors
    /// 404 for no such account; 412 when `cond` does not hold; 409 when
    /// other changes kept landing first; 500 on a store failure.
    pub async fn remove_account(
        &self,
        app: &App,
        actor: &Actor,
        appid: &str,
        cond: &Precondition,
    ) -> Result<(), ApiError> {
        let _one = self.writing.lock().await;
        for _ in 0..WRITE_TRIES {
            let read = self.read(app, Section::Account, appid).await?;
            if !self.exists(appid, &read) {
                return Err(ApiError::not_found(format!("no account {appid}")));
            }
            cond.check(Some(&read.etag()))?;
            let row = if self.in_file(appid) {
                Some(Row::Removed)
            } else {
                None
            };
            let audit = Self::audit(app, actor, "account.remove", appid, None);
            if self
                .commit(app, Section::Account, appid, &read, row, audit)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(busy(appid))
    }

    /// Where an account's definition comes from (as [`Directory::source`])
    /// and its version, for `ETag` and `If-Match` (it changes with every
    /// change made through the admin API), from one read of its row.
    ///
    /// # Errors
    /// 500 on a store failure.
    pub async fn version(
        &self,
        app: &App,
        appid: &str,
    ) -> Result<(&'static str, String), ApiError> {
        let read = self.read(app, Section::Account, appid).await?;
        Ok((source_of(read.row.as_ref()), read.etag()))
    }

    /// Web authorization needs a state secret every instance shares.
    fn check_oauth(&self, app: &App, cfg: &AccountConfig) -> Result<(), ApiError> {
        if !cfg.oauth_return_origins.is_empty() && !app.config.oauth.state_secret_given {
            return Err(ApiError::bad_request(
                "oauth_return_origins: web authorization needs oauth.state_secret in the configuration file, and none is given",
            ));
        }
        Ok(())
    }

    /// Creates a client with a new key, returned once.
    ///
    /// # Errors
    /// 400 naming the field; 409 when the name is taken; 500 on a store
    /// failure.
    pub async fn create_client(
        &self,
        app: &App,
        actor: &Actor,
        mut body: Value,
    ) -> Result<(ClientConfig, String), ApiError> {
        let _one = self.writing.lock().await;
        let Some(map) = body.as_object_mut() else {
            return Err(ApiError::bad_request("body: a client is a JSON object"));
        };
        if map.contains_key("key_sha256") {
            return Err(ApiError::bad_request(
                "key_sha256: the hub makes the key and shows it once; give name, apps and limits",
            ));
        }
        let key = crate::auth::new_key();
        map.insert(
            "key_sha256".into(),
            Value::String(hex::encode(crate::auth::hash_key(&key))),
        );
        let exists = |a: &str| app.creds.account(a).is_some();
        let client = client_from_json(&body, &exists, &app.config.limits).map_err(invalid)?;
        if self.clients().iter().any(|c| c.name == client.name) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "conflict",
                format!("a client named {} exists: revoke it first", client.name),
            ));
        }
        let Value::Object(map) = body else {
            unreachable!("checked above");
        };
        let mut audited = map.clone();
        audited.remove("key_sha256");
        let audit = Self::audit(
            app,
            actor,
            "client.create",
            &client.name,
            Some(&Value::Object(audited)),
        );
        let read = self.read(app, Section::Client, &client.name).await?;
        let taken = || {
            ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "conflict",
                format!("a client named {} exists: revoke it first", client.name),
            )
        };
        // Revoked file clients keep a row; anything else stored is a client
        // another instance created meanwhile.
        if read.row.as_ref().is_some_and(|r| *r != Row::Removed) {
            return Err(taken());
        }
        if self
            .commit(
                app,
                Section::Client,
                &client.name,
                &read,
                Some(Row::Define(map)),
                audit,
            )
            .await?
            .is_none()
        {
            return Err(taken());
        }
        Ok((client, key))
    }

    /// Revokes a client: its key stops working at once.
    ///
    /// # Errors
    /// 404 for no such client; 500 on a store failure.
    pub async fn revoke_client(
        &self,
        app: &App,
        actor: &Actor,
        name: &str,
    ) -> Result<(), ApiError> {
        let _one = self.writing.lock().await;
        if !self.clients().iter().any(|c| &*c.name == name) {
            return Err(ApiError::not_found(format!("no client {name}")));
        }
        let in_file = app.config.clients.iter().any(|c| &*c.name == name);
        for _ in 0..WRITE_TRIES {
            let read = self.read(app, Section::Client, name).await?;
            if matches!(read.row, Some(Row::Removed)) {
                return Err(ApiError::not_found(format!("no client {name}")));
            }
            let row = in_file.then_some(Row::Removed);
            let audit = Self::audit(app, actor, "client.revoke", name, None);
            if self
                .commit(app, Section::Client, name, &read, row, audit)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(busy(name))
    }

    /// Where an account's definition comes from: `file`, `api` or
    /// `file+api` (the file's entry with fields changed).
    pub async fn source(&self, app: &App, appid: &str) -> Result<&'static str, ApiError> {
        Ok(source_of(
            self.row(app, Section::Account, appid).await?.as_ref(),
        ))
    }

    /// Where a client comes from: `file` or `api`.
    pub fn client_source(&self, name: &str) -> &'static str {
        let rows = self.client_rows.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(rows.get(name), Some(Row::Define(_))) {
            "api"
        } else {
            "file"
        }
    }
}

/// An account's configuration as the admin API shows it: everything but
/// its secrets.
pub fn account_view(cfg: &AccountConfig, source: &str) -> Value {
    json!({
        "appid": cfg.appid.as_str(),
        "name": cfg.name,
        "source": source,
        "kind": match cfg.kind {
            crate::config::AccountKind::Official => "official",
            crate::config::AccountKind::Website => "website",
        },
        "token_mode": cfg.token_mode.as_str(),
        "tickets": cfg.tickets.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "jssdk_domains": cfg.jssdk_domains,
        "oauth_return_origins": cfg.oauth_return_origins,
        "component": cfg.via.component().map(|c| c.as_str()),
        "revoked_at": match &cfg.via {
            crate::config::Via::Revoked { at, .. } => Some(*at),
            _ => None,
        },
        "paused": cfg.paused,
        "push": cfg.push.as_ref().map(|p| json!({
            "mode": p.mode.as_str(),
            "subscribers": p.subscribers.iter().map(|s| json!({
                "name": s.name,
                "url": s.url.as_str(),
            })).collect::<Vec<_>>(),
        })),
    })
}

/// A client as the admin API shows it: never its key or the key's hash.
pub fn client_view(c: &ClientConfig, source: &str) -> Value {
    json!({
        "name": &*c.name,
        "apps": &*c.apps,
        "components": &*c.components,
        "source": source,
        "limits": {
            "proxy": {"per_minute": c.limits.proxy.per_minute_avg(), "burst": c.limits.proxy.burst()},
            "invalidate": {"per_minute": c.limits.invalidate.per_minute_avg(), "burst": c.limits.invalidate.burst()},
        },
    })
}

// A row holds secrets (an AppSecret, push keys): sealed in the store when
// `store.encryption_key` is set, bound to its section and name.
fn aad(section: Section, name: &str) -> String {
    crate::seal::aad("directory", &[section.as_str(), name])
}

fn seal(store: &Store, section: Section, name: &str, text: &str) -> Result<String, StoreError> {
    Ok(store.seal(&aad(section, name), text))
}

fn open(store: &Store, section: Section, name: &str, stored: &str) -> Result<String, StoreError> {
    store.open(&aad(section, name), stored)
}
