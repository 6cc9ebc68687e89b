//! The upstream calls themselves: the access token (classic or stable),
//! and tickets, which need a valid token and replace a rejected one first.

use std::time::{Duration, Instant};

use wx_api::WxError;

use super::Credentials;
use super::component::hub_error;
use super::model::{Account, CredKind, Secret, Served, Trigger};
use crate::config::{TicketKind, TokenMode, Via};

/// Spaces upstream fetches at most `per_second` apart, whatever triggers
/// them: a hub that starts with 100,000 accounts and nothing stored, or
/// finds them all due in one minute, walks through them at a pace the
/// platform takes, in deadline order (docs/operations.md, "Sizing").
#[derive(Debug)]
pub(crate) struct Pace {
    gap: Duration,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pace {
    pub(crate) fn new(per_second: u32) -> Pace {
        Pace {
            gap: Duration::from_secs(1) / per_second.max(1),
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this fetch's turn.
    pub(crate) async fn turn(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + self.gap;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

impl Credentials {
    /// The upstream call, timed.
    pub(crate) async fn fetch(
        &self,
        account: &Account,
        kind: CredKind,
        force: bool,
        fence: u64,
    ) -> Result<(String, i64), WxError> {
        let started = Instant::now();
        let result = match (kind, &account.cfg.via) {
            (CredKind::AccessToken, Via::Own) => self.fetch_token(account, force).await,
            (CredKind::AccessToken, Via::Component) => self.fetch_component_token(account).await,
            (CredKind::AccessToken, Via::Authorizer(c)) => {
                self.fetch_authorizer_token(account, c, fence).await
            }
            (CredKind::AccessToken, Via::Revoked { .. }) => Err(hub_error(
                "the account's authorization of its third-party platform was revoked",
            )),
            (CredKind::Ticket(t), _) => self.fetch_ticket(account, t).await,
        };
        let endpoint = match (kind, &account.cfg.via) {
            (CredKind::AccessToken, Via::Component) => "/cgi-bin/component/api_component_token",
            (CredKind::AccessToken, Via::Authorizer(_) | Via::Revoked { .. }) => {
                "/cgi-bin/component/api_authorizer_token"
            }
            (CredKind::AccessToken, _) if account.cfg.token_mode == TokenMode::Classic => {
                "/cgi-bin/token"
            }
            (CredKind::AccessToken, _) => "/cgi-bin/stable_token",
            (CredKind::Ticket(_), _) => "/cgi-bin/ticket/getticket",
        };
        self.metrics.observe(
            "wxhub_upstream_duration_seconds",
            &[("endpoint", endpoint)],
            started.elapsed().as_secs_f64(),
        );
        result
    }

    async fn fetch_token(&self, account: &Account, force: bool) -> Result<(String, i64), WxError> {
        let cfg = &account.cfg;
        let resp = match cfg.token_mode {
            TokenMode::Classic => self.wx.fetch_access_token(&cfg.appid, &cfg.secret).await?,
            TokenMode::Stable => {
                self.wx
                    .fetch_stable_access_token(&cfg.appid, &cfg.secret, force)
                    .await?
            }
        };
        Ok((resp.access_token.into_secret(), resp.expires_in as i64))
    }

    /// Fetches a ticket with the current token; a token error there is a
    /// token problem: the platform rejected the token, which is replaced
    /// (within the caller budget), and the fetch retried once.
    async fn fetch_ticket(
        &self,
        account: &Account,
        kind: TicketKind,
    ) -> Result<(String, i64), WxError> {
        let mut retried = false;
        loop {
            let token = self.token_for_ticket(account).await?;
            let token = wx_api::AccessToken::new(token.value.expose_secret());
            let result = match kind {
                TicketKind::Jsapi => self
                    .wx
                    .jsapi_ticket(&token)
                    .await
                    .map(|r| (r.ticket.into_secret(), r.expires_in as i64)),
                TicketKind::WxCard => self
                    .wx
                    .card_ticket(&token)
                    .await
                    .map(|r| (r.ticket.into_secret(), r.expires_in as i64)),
            };
            match result {
                Err(e) if e.is_token_invalid() && !retried => {
                    retried = true;
                    tracing::info!(account.appid = %account.appid(), "ticket fetch hit a token error; refreshing the token once");
                    let _ = Box::pin(self.refresh(
                        account,
                        CredKind::AccessToken,
                        Trigger::Reported {
                            failed: Secret::new(token.expose_secret()),
                            rejected: true,
                        },
                    ))
                    .await;
                }
                other => return other,
            }
        }
    }

    async fn token_for_ticket(&self, account: &Account) -> Result<Served, WxError> {
        if let Some(s) = self.served(account, &account.token) {
            return Ok(s);
        }
        match Box::pin(self.refresh(account, CredKind::AccessToken, Trigger::Missing)).await {
            Ok(()) => self
                .served(account, &account.token)
                .ok_or_else(|| WxError::InvalidInput {
                    reason: "no valid access token".into(),
                }),
            Err(e) => Err(WxError::InvalidInput {
                reason: format!("no valid access token: {e}").into(),
            }),
        }
    }
}
