//! Third-party platforms (第三方平台) in the credentials machinery
//! (`component-platform.md` §12).
//!
//! A component is an account whose access-token slot holds the
//! `component_access_token`; an authorized account is one whose
//! access-token slot is fetched with `api_authorizer_token`. So both get
//! the single flight, the schedule with jitter, the pacing, the caller
//! budget, the history, the metrics and, in shared mode, the leases and
//! fenced writes of every account. This file holds what differs: the two
//! upstream calls, and the two values beside the tokens that the hub must
//! keep: the newest verify ticket (per component) and each authorizer's
//! refresh token, both stored (sealed when the store is encrypted) under
//! the account's AppID with their own store keys.

use wx_api::WxError;
use wx_api::endpoint::component::{
    AuthorizerRefreshToken, ComponentAccessToken, ComponentVerifyTicket,
};

use super::Credentials;
use super::model::{Account, Cred, CredKind, Secret, Trigger};

/// The store key of a component's newest verify ticket.
pub const TICKET_KEY: &str = "component_verify_ticket";
/// The store key of an authorizer's refresh token.
pub const REFRESH_TOKEN_KEY: &str = "authorizer_refresh_token";
/// How long the platform accepts a ticket (§2.2).
pub const TICKET_TTL: i64 = 12 * 3600;
/// A newest ticket older than this means pushes stopped: the hub asks the
/// platform to restart them (`api_start_push_ticket`).
pub const TICKET_RESTART_AFTER: i64 = 3600;
/// At most one such request per component this often.
const RESTART_EVERY: i64 = 600;
/// A refresh token does not expire while the authorization stands; the
/// record needs an expiry all the same.
const NEVER: i64 = i64::MAX / 4;

/// A failure of the hub's own before or around an upstream call, in the
/// error type fetches return (its text is the reason status shows).
pub(crate) fn hub_error(reason: impl Into<std::borrow::Cow<'static, str>>) -> WxError {
    WxError::InvalidInput {
        reason: reason.into(),
    }
}

/// The newest verify ticket a component holds, for status.
#[derive(Debug, Clone, Copy)]
pub struct TicketAge {
    /// `CreateTime` of the newest ticket.
    pub created_at: i64,
    /// Seconds since then.
    pub age: i64,
}

impl Credentials {
    /// Stores a pushed verify ticket if it is newer (by `CreateTime`) than
    /// the one held, and if the component holds no valid token yet, fetches
    /// one with it. Returns whether it was newer.
    ///
    /// # Errors
    /// On a storage failure: the push is then not acknowledged, and the
    /// platform's next one (ten minutes later) tries again.
    pub async fn take_ticket(
        &self,
        component: &str,
        ticket: ComponentVerifyTicket,
        create_time: i64,
    ) -> Result<bool, crate::store::StoreError> {
        let now = self.clock.now();
        let record = Cred {
            value: Secret::new(ticket.expose_secret()),
            expires_at: create_time + TICKET_TTL,
            fetched_at: create_time,
            first_seen: now,
        }
        .record(0, 0);
        // Not under a lease: whichever instance the platform reaches stores
        // it, and the newest CreateTime wins, in the store's own check.
        self.store
            .write_newest(component, TICKET_KEY, &record)
            .await
    }

    /// The newest stored verify ticket's age, if any.
    pub async fn ticket_age(&self, component: &str) -> Option<TicketAge> {
        let rec = self
            .store
            .load_credential(component, TICKET_KEY)
            .await
            .ok()??;
        Some(TicketAge {
            created_at: rec.fetched_at,
            age: self.clock.now() - rec.fetched_at,
        })
    }

    /// `api_component_token` with the newest stored ticket. Without one
    /// inside its 12 h nothing is sent: a null ticket only earns 61006.
    pub(crate) async fn fetch_component_token(
        &self,
        account: &Account,
    ) -> Result<(String, i64), WxError> {
        let appid = account.appid();
        let now = self.clock.now();
        let rec = self
            .store
            .load_credential(appid, TICKET_KEY)
            .await
            .map_err(|_| hub_error("the stored verify ticket cannot be read"))?;
        if rec
            .as_ref()
            .is_none_or(|r| now - r.fetched_at > TICKET_RESTART_AFTER)
        {
            self.restart_ticket_pushes(account, now).await;
        }
        let Some(rec) = rec.filter(|r| now < r.expires_at) else {
            return Err(hub_error(format!(
                "waiting for a component_verify_ticket: none received in the last 12 hours; the platform pushes one every 10 minutes to /component/{appid}/events"
            )));
        };
        let ticket = ComponentVerifyTicket::new(rec.value.expose_secret());
        let resp = self
            .wx
            .component_token(&account.cfg.appid, &account.cfg.secret, &ticket)
            .await?;
        Ok((
            resp.component_access_token.into_secret(),
            resp.expires_in as i64,
        ))
    }

    /// Pushes stopped (no ticket for an hour): asks the platform to restart
    /// them, at most once per 10 minutes per component. The platform pushes
    /// at once when it restarts them.
    async fn restart_ticket_pushes(&self, account: &Account, now: i64) {
        let appid = account.appid();
        {
            let mut last = self.push_restarts.lock().unwrap_or_else(|e| e.into_inner());
            if last.get(appid).is_some_and(|t| now - t < RESTART_EVERY) {
                return;
            }
            last.insert(appid.to_string(), now);
        }
        match self
            .wx
            .start_push_ticket(&account.cfg.appid, &account.cfg.secret)
            .await
        {
            Ok(()) => {
                self.metrics.inc(
                    "wxhub_component_push_restarts_total",
                    &[("component", appid)],
                );
                tracing::warn!(component.appid = %appid, "no verify ticket for over an hour: asked the platform to restart its pushes (api_start_push_ticket)");
            }
            Err(e) => {
                tracing::warn!(component.appid = %appid, error = %e, "no verify ticket for over an hour, and api_start_push_ticket failed");
            }
        }
    }

    /// The component's token, valid now: from memory, or by refreshing it
    /// (single flight with every other caller).
    pub(crate) async fn component_token_value(
        &self,
        component: &Account,
    ) -> Result<ComponentAccessToken, WxError> {
        if let Some(s) = self.served(component, &component.token) {
            return Ok(ComponentAccessToken::new(s.value.expose_secret()));
        }
        // Shared mode: another instance may own the component's refresh;
        // its latest write is in the store.
        if self.shared.is_some() {
            let _ = self.reload(component, &component.token).await;
            if let Some(s) = self.served(component, &component.token) {
                return Ok(ComponentAccessToken::new(s.value.expose_secret()));
            }
        }
        Box::pin(self.refresh(component, CredKind::AccessToken, Trigger::Missing))
            .await
            .map_err(|e| hub_error(format!("no component token: {e}")))?;
        self.served(component, &component.token)
            .map(|s| ComponentAccessToken::new(s.value.expose_secret()))
            .ok_or_else(|| hub_error("no component token"))
    }

    /// Runs `call` with the component's token; a token error there (the
    /// token superseded or expired while current) refreshes it once, under
    /// the caller budget, and calls again.
    pub(crate) async fn with_component_token<T, F, Fut>(
        &self,
        component: &Account,
        call: F,
    ) -> Result<T, WxError>
    where
        F: Fn(ComponentAccessToken) -> Fut,
        Fut: std::future::Future<Output = Result<T, WxError>>,
    {
        let mut retried = false;
        loop {
            let token = self.component_token_value(component).await?;
            let failed = Secret::new(token.expose_secret());
            match call(token).await {
                Err(e) if e.is_token_invalid() && !retried => {
                    retried = true;
                    tracing::info!(component.appid = %component.appid(), "a component call hit a token error; refreshing the component token once");
                    let _ = Box::pin(self.refresh(
                        component,
                        CredKind::AccessToken,
                        Trigger::Reported {
                            failed,
                            rejected: true,
                        },
                    ))
                    .await;
                }
                other => return other,
            }
        }
    }

    /// The authorizer's stored refresh token.
    async fn refresh_token(&self, appid: &str) -> Result<Option<AuthorizerRefreshToken>, WxError> {
        let rec = self
            .store
            .load_credential(appid, REFRESH_TOKEN_KEY)
            .await
            .map_err(|_| hub_error("the stored refresh token cannot be read"))?;
        Ok(rec.map(|r| AuthorizerRefreshToken::new(r.value.expose_secret())))
    }

    /// Writes an authorizer's refresh token: under the account's fence in
    /// shared mode, like its tokens. Done before the access token obtained
    /// with it is held or served.
    pub(crate) async fn save_refresh_token(
        &self,
        appid: &str,
        token: &AuthorizerRefreshToken,
        fence: u64,
    ) -> Result<(), WxError> {
        let now = self.clock.now();
        let record = Cred {
            value: Secret::new(token.expose_secret()),
            expires_at: NEVER,
            fetched_at: now,
            first_seen: now,
        }
        .record(fence, 0);
        let holder = self
            .shared
            .as_ref()
            .map_or_else(String::new, |sh| sh.holder(fence));
        match self
            .store
            .write_credential(appid, REFRESH_TOKEN_KEY, &record, &holder)
            .await
        {
            Ok(crate::store::Written::Stored(_)) => Ok(()),
            Ok(crate::store::Written::Refused) => Err(hub_error(
                "a newer refresh lease holder exists: the refresh token it holds stands",
            )),
            Err(e) => {
                tracing::error!(account.appid = %appid, error = %e, "cannot store the authorizer refresh token; its access token is not served");
                Err(hub_error("the refresh token could not be stored"))
            }
        }
    }

    /// `api_authorizer_token` with the stored refresh token. The refresh
    /// token returned is stored before the access token is. 61023 reads the
    /// current refresh token back from `api_get_authorizer_list` once.
    pub(crate) async fn fetch_authorizer_token(
        &self,
        account: &Account,
        component: &wx_api::AppId,
        fence: u64,
    ) -> Result<(String, i64), WxError> {
        let appid = account.appid();
        let comp = self.account(component.as_str()).ok_or_else(|| {
            hub_error(format!(
                "the third-party platform {} is not configured",
                component.as_str()
            ))
        })?;
        let mut reconciled = false;
        loop {
            let Some(rt) = self.refresh_token(appid).await? else {
                return Err(hub_error(
                    "no authorizer_refresh_token is stored for this account: its administrator must authorize the third-party platform again",
                ));
            };
            let result = self
                .with_component_token(&comp, |ct| {
                    let rt = &rt;
                    async move {
                        self.wx
                            .authorizer_token(component, &ct, &account.cfg.appid, rt)
                            .await
                    }
                })
                .await;
            match result {
                Ok(r) => {
                    // An updateauthorized may have stored a rotated refresh
                    // token while this call was out; the echo of the one
                    // this call used must not overwrite it.
                    let replaced = self
                        .refresh_token(appid)
                        .await?
                        .is_some_and(|now_stored| !now_stored.ct_eq(&rt));
                    if !(replaced && r.authorizer_refresh_token.ct_eq(&rt)) {
                        self.save_refresh_token(appid, &r.authorizer_refresh_token, fence)
                            .await?;
                    }
                    return Ok((r.authorizer_access_token.into_secret(), r.expires_in as i64));
                }
                Err(e)
                    if !reconciled
                        && e.errcode() == Some(wx_api::ErrCode::AuthorizerRefreshTokenInvalid) =>
                {
                    reconciled = true;
                    tracing::warn!(account.appid = %appid, "the platform rejected the stored refresh token (61023); reading the current one back from api_get_authorizer_list");
                    // Tried once more with what the list says, even if it
                    // is the one held: the platform's answer decides.
                    match self.listed_refresh_token(&comp, appid).await {
                        Some(listed) => {
                            if !listed.ct_eq(&rt) {
                                self.save_refresh_token(appid, &listed, fence).await?;
                            }
                        }
                        None => return Err(e),
                    }
                }
                Err(e) => {
                    if e.errcode() == Some(wx_api::ErrCode::ComponentUnauthorized) {
                        let _ = self
                            .revoked
                            .send((component.as_str().to_string(), appid.to_string()));
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The accounts the platform says revoked their authorization (61003),
    /// once: for the task that records it (`component::run_revoker`).
    pub fn take_revocations(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<(String, String)>> {
        self.revoked_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The refresh token `api_get_authorizer_list` has for `appid`, page by
    /// page (500 each).
    async fn listed_refresh_token(
        &self,
        comp: &Account,
        appid: &str,
    ) -> Option<AuthorizerRefreshToken> {
        let page = wx_api::endpoint::component::MAX_AUTHORIZER_PAGE;
        let mut offset = 0u64;
        // Bounded: 200 pages are 100,000 authorizers.
        for _ in 0..200 {
            let list = self
                .with_component_token(comp, |ct| async move {
                    self.wx
                        .authorizer_list(&comp.cfg.appid, &ct, offset, page)
                        .await
                })
                .await
                .ok()?;
            let n = list.list.len() as u64;
            if let Some(found) = list
                .list
                .into_iter()
                .find(|l| l.authorizer_appid.as_str() == appid)
            {
                return found.refresh_token;
            }
            offset += n;
            if n == 0 || offset >= list.total_count {
                return None;
            }
        }
        None
    }

    /// After `api_query_auth`: stores the refresh token first, then the
    /// access token, so the account (added to the directory next) starts
    /// from them without a fetch. Whichever instance the event or the
    /// administrator reaches does this, lease or not: both values are new
    /// from the platform, and the newest write wins (`write_newest`).
    ///
    /// # Errors
    /// On a storage failure, when nothing must be said to have worked.
    pub async fn store_authorization(
        &self,
        appid: &str,
        refresh_token: &AuthorizerRefreshToken,
        access: Option<(String, i64)>,
    ) -> Result<(), WxError> {
        let now = self.clock.now();
        let record = |value: &str, expires_at: i64| {
            Cred {
                value: Secret::new(value),
                expires_at,
                fetched_at: now,
                first_seen: now,
            }
            .record(0, 0)
        };
        self.store
            .write_newest(
                appid,
                REFRESH_TOKEN_KEY,
                &record(refresh_token.expose_secret(), NEVER),
            )
            .await
            .map_err(|e| {
                tracing::error!(account.appid = %appid, error = %e, "cannot store the authorizer refresh token");
                hub_error("the refresh token could not be stored")
            })?;
        if let Some((value, expires_in)) = access {
            let key = format!(
                "access_token:{}",
                crate::config::TokenMode::Classic.as_str()
            );
            let mut rec = record(&value, now + expires_in);
            // The refresh is planned as for a fetched token: an instance
            // that reads the record follows this plan, not "due now".
            rec.refresh_at = super::policy::plan(
                &self.settings,
                crate::config::TokenMode::Classic,
                CredKind::AccessToken,
                &Cred::from_record(&rec),
                Self::jitter(),
            );
            if let Err(e) = self.store.write_newest(appid, &key, &rec).await {
                tracing::warn!(account.appid = %appid, error = %e, "cannot store the authorizer access token; it will be fetched with the refresh token");
            }
            // Held already (updateauthorized, or the return handler after
            // the event): the new token replaces the held one, which the
            // platform retires.
            if let Some(account) = self.account(appid)
                && let Some(slot) = account.slot(CredKind::AccessToken)
            {
                if self.shared.is_some() {
                    let _ = self.reload(&account, slot).await;
                } else {
                    let mut r = rec;
                    r.seq = slot.lock().shared.seq + 1;
                    self.adopt(&account, slot, r);
                }
            }
        }
        Ok(())
    }

    /// Drops a revoked account's stored tokens (its refresh token included:
    /// the platform killed it, and a later authorization brings a new one).
    pub async fn forget_revoked(&self, appid: &str) {
        let mut keys = vec![
            REFRESH_TOKEN_KEY.to_string(),
            format!(
                "access_token:{}",
                crate::config::TokenMode::Classic.as_str()
            ),
        ];
        for t in ["jsapi", "wx_card"] {
            keys.push(format!("ticket:{t}"));
        }
        if let Err(e) = self.store.forget_credentials(appid, keys).await {
            tracing::warn!(account.appid = %appid, error = %e, "cannot forget a revoked account's tokens");
        }
    }

    /// How many accounts are authorized to `component` now.
    pub fn authorizer_count(&self, component: &str) -> usize {
        self.read_accounts()
            .values()
            .filter(|a| {
                matches!(&a.cfg.via, crate::config::Via::Authorizer(c) if c.as_str() == component)
            })
            .count()
    }
}

impl Credentials {
    /// A newer verify ticket was stored: a component waiting for one (no
    /// valid token) fetches now rather than at its next retry.
    pub fn ticket_arrived(self: &std::sync::Arc<Self>, component: &str) {
        let Some(account) = self.account(component) else {
            return;
        };
        if self.served(&account, &account.token).is_some() {
            return;
        }
        {
            // The wait for a ticket was not the platform failing: the
            // backoff it earned ends with the ticket.
            let mut st = account.token.lock();
            if st.blocked_until <= self.clock.now() {
                st.failures = 0;
                st.next_refresh_at = self.clock.now();
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            if this.shared.is_some()
                && this
                    .shared
                    .as_ref()
                    .and_then(|sh| sh.holding(account.appid()))
                    .is_none()
            {
                // The lease holder's own retry picks the ticket up.
                return;
            }
            if let Err(e) = this
                .refresh(&account, CredKind::AccessToken, Trigger::Missing)
                .await
            {
                tracing::warn!(component.appid = %account.appid(), error = %e, "cannot fetch the component token with the new ticket");
            }
        });
    }
}
