//! The third-party platform (第三方平台, "component"): verify tickets,
//! component tokens, pre-auth codes, authorizations, authorizer tokens and
//! the on-behalf web authorization (`component-platform.md`, cited as §N in
//! this module and its children).
//!
//! The rules are synchronous methods on [`SimState`], under the simulator's
//! one lock: an authorizer access token lives in the same map as the
//! accounts' own tokens, so every business API accepts it through the one
//! token check and charges the account's own quota (§10), and a revocation
//! kills it in the same critical section that ends the authorization.
//!
//! - `api`: `/cgi-bin/component/*` and `/sns/oauth2/component/*`.
//! - `page`: the authorization page (componentloginpage, bindcomponent).
//! - `pusher`: the regular verify-ticket pushes and the event pushes.
//! - `control`: `/_sim/components/*` and `POST /_sim/accounts`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::clock::beijing_day;
use crate::errors::{self as e, WxErr};
use crate::ids;
use crate::push::cdata;
use crate::state::{Counter, SimState, TokenRec, constant_time_eq, ip_matches};
use crate::world::{AccountKind, Component, World};

pub(crate) mod api;
pub(crate) mod control;
pub(crate) mod page;
pub(crate) mod pusher;

/// The permission sets (权限集) the page offers, all checked by default (§5.1).
pub(crate) const ALL_FUNCS: &[u32] = &[1, 2, 3, 4, 7, 11, 15];

/// 消息管理: the account's messages go to the component's message URL (§6.2).
const FUNC_MESSAGES: u32 = 1;
/// 网页服务: web authorization on behalf (§7).
pub(crate) const FUNC_WEB: u32 = 4;

/// Options of `api_get_authorizer_option` and their allowed values (§5.5).
const OPTIONS: &[(&str, &[&str])] = &[
    ("location_report", &["0", "1", "2"]),
    ("voice_recognize", &["0", "1"]),
    ("customer_service", &["0", "1"]),
];

/// Tickets kept per component so that an old one answers 61005 rather than
/// 61006; far more than 12 h of regular pushes.
const TICKETS_KEPT: usize = 2_000;

/// One account's authorization of one component.
#[derive(Debug, Default)]
struct Authz {
    authorized: bool,
    func_ids: Vec<u32>,
    auth_time: i64,
    refresh_token: String,
    /// The refresh token an update rotated away, and when it stops working.
    old_refresh: Option<(String, i64)>,
    /// The current refresh token has been handed out by `api_query_auth`.
    exchanged: bool,
    current: Option<String>,
    previous: Option<String>,
    daily: Counter,
    tokens_issued: u64,
    refresh_rejections: u64,
    options: BTreeMap<String, String>,
}

/// A component's live state.
#[derive(Debug)]
struct ComponentRt {
    cfg: Component,
    current: Option<String>,
    previous: Option<String>,
    token_daily: Counter,
    pusher_running: bool,
    next_push_at: i64,
    /// Tickets in issue order, oldest first.
    tickets: Vec<(String, i64)>,
    authorizers: BTreeMap<String, Authz>,
    tokens_issued: u64,
    calls: BTreeMap<String, u64>,
    tickets_pushed: u64,
    tickets_delivered: u64,
}

/// What the authorization page was opened with, checked again when the
/// admin approves, so the form cannot widen it.
#[derive(Debug, Clone)]
pub(crate) struct PageCtx {
    pub(crate) redirect_uri: url::Url,
    pub(crate) biz_appid: Option<String>,
    pub(crate) auth_type: u8,
}

#[derive(Debug)]
struct PreAuth {
    component: String,
    expires_at: i64,
    used: bool,
    page: Option<PageCtx>,
}

#[derive(Debug)]
struct AuthCode {
    component: String,
    authorizer: String,
    expires_at: i64,
    used: bool,
}

/// Every component and everything they issued.
#[derive(Debug)]
pub(crate) struct Components {
    by_appid: BTreeMap<String, ComponentRt>,
    /// Component access tokens; never valid on the business APIs.
    tokens: HashMap<String, TokenRec>,
    preauth: HashMap<String, PreAuth>,
    codes: HashMap<String, AuthCode>,
    token_gen: u64,
}

/// An approval, as the page or the control API made it.
#[derive(Debug)]
pub(crate) struct Approval {
    pub(crate) code: String,
    pub(crate) expires_in: i64,
    pub(crate) info_type: &'static str,
    pub(crate) xml: String,
}

impl Components {
    /// The components of a fresh world; running pushers push at once.
    pub(crate) fn new(world: &World, now: i64) -> Components {
        let by_appid = world
            .components
            .iter()
            .map(|c| {
                (
                    c.appid.clone(),
                    ComponentRt {
                        cfg: c.clone(),
                        current: None,
                        previous: None,
                        token_daily: Counter::default(),
                        pusher_running: c.ticket_push,
                        next_push_at: now,
                        tickets: Vec::new(),
                        authorizers: BTreeMap::new(),
                        tokens_issued: 0,
                        calls: BTreeMap::new(),
                        tickets_pushed: 0,
                        tickets_delivered: 0,
                    },
                )
            })
            .collect();
        Components {
            by_appid,
            tokens: HashMap::new(),
            preauth: HashMap::new(),
            codes: HashMap::new(),
            token_gen: 30,
        }
    }

    /// Whether `appid` is a component's.
    pub(crate) fn contains(&self, appid: &str) -> bool {
        self.by_appid.contains_key(appid)
    }

    /// A component's configuration, to change its URLs at run time.
    pub(crate) fn config_mut(&mut self, appid: &str) -> Option<&mut Component> {
        self.by_appid.get_mut(appid).map(|c| &mut c.cfg)
    }

    /// A component's configuration.
    pub(crate) fn config(&self, appid: &str) -> Option<&Component> {
        self.by_appid.get(appid).map(|c| &c.cfg)
    }

    /// The component that receives `authorizer`'s messages: one the account
    /// authorized with 消息管理 and that has a message URL. The platform
    /// grants a permission set to one component only, so the first is it.
    pub(crate) fn message_route(&self, authorizer: &str) -> Option<String> {
        self.by_appid
            .values()
            .find(|c| {
                c.cfg.message_url.is_some()
                    && c.authorizers
                        .get(authorizer)
                        .is_some_and(|a| a.authorized && a.func_ids.contains(&FUNC_MESSAGES))
            })
            .map(|c| c.cfg.appid.clone())
    }

    /// Counts a call of a component API against its component.
    pub(crate) fn count_call(&mut self, component: &str, path: &str) -> bool {
        match self.by_appid.get_mut(component) {
            Some(c) => {
                *c.calls.entry(path.to_string()).or_default() += 1;
                true
            }
            None => false,
        }
    }

    /// The component owning a component access token.
    pub(crate) fn appid_of_token(&self, token: &str) -> Option<String> {
        self.tokens.get(token).map(|t| t.appid.clone())
    }

    /// Drops what can no longer matter (called from the state's hourly prune).
    pub(crate) fn prune(&mut self, now: i64) {
        let horizon = now - 86400;
        self.tokens
            .retain(|_, t| t.dead_at.unwrap_or(t.expires_at).min(t.expires_at) > horizon);
        self.preauth.retain(|_, p| p.expires_at > horizon);
        self.codes.retain(|_, c| c.expires_at > horizon);
    }

    /// Components whose regular push is due; each is rescheduled one
    /// interval from now, so a jump over several intervals pushes once.
    pub(crate) fn due_pushes(&mut self, now: i64, interval: i64) -> Vec<String> {
        let mut due = Vec::new();
        for c in self.by_appid.values_mut() {
            if c.pusher_running && now >= c.next_push_at {
                c.next_push_at = now + interval;
                if c.cfg.event_url.is_some() {
                    due.push(c.cfg.appid.clone());
                }
            }
        }
        due
    }

    /// Starts or stops the regular pusher; a start pushes at once. Returns
    /// whether it was running before.
    pub(crate) fn set_pusher(&mut self, component: &str, running: bool, now: i64) -> Option<bool> {
        let c = self.by_appid.get_mut(component)?;
        let was = c.pusher_running;
        c.pusher_running = running;
        if running && !was {
            c.next_push_at = now;
        }
        Some(was)
    }

    /// A new ticket and its push XML (§2.1).
    pub(crate) fn new_ticket(&mut self, component: &str, now: i64) -> Option<(String, String)> {
        let c = self.by_appid.get_mut(component)?;
        let ticket = ids::component_ticket();
        if c.tickets.len() >= TICKETS_KEPT {
            c.tickets.remove(0);
        }
        c.tickets.push((ticket.clone(), now));
        if c.cfg.event_url.is_some() {
            c.tickets_pushed += 1;
        }
        let xml = format!(
            "<xml><AppId>{}</AppId><CreateTime>{now}</CreateTime><InfoType>{}</InfoType><ComponentVerifyTicket>{}</ComponentVerifyTicket></xml>",
            cdata(component),
            cdata("component_verify_ticket"),
            cdata(&ticket)
        );
        Some((ticket, xml))
    }

    /// Counts a ticket push the event URL answered with `success`.
    pub(crate) fn ticket_delivered(&mut self, component: &str) {
        if let Some(c) = self.by_appid.get_mut(component) {
            c.tickets_delivered += 1;
        }
    }

    /// `components` of `/_sim/stats`.
    pub(crate) fn stats(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .by_appid
            .iter()
            .map(|(appid, c)| {
                (
                    appid.clone(),
                    json!({
                        "tokens_issued": {"component_access_token": c.tokens_issued},
                        "calls": c.calls,
                        "tickets_pushed": c.tickets_pushed,
                        "tickets_delivered": c.tickets_delivered,
                        "authorizers": c.authorizers.values().filter(|a| a.authorized).count(),
                        "pusher_running": c.pusher_running,
                    }),
                )
            })
            .collect();
        Value::Object(map)
    }

    /// `GET /_sim/components/{appid}/authorizers/{authorizer}`.
    pub(crate) fn authorizer_report(&self, component: &str, authorizer: &str) -> Option<Value> {
        let c = self.by_appid.get(component)?;
        let a = c.authorizers.get(authorizer);
        Some(json!({
            "authorized": a.is_some_and(|a| a.authorized),
            "func_ids": a.filter(|a| a.authorized).map(|a| a.func_ids.clone()).unwrap_or_default(),
            "authorizer_tokens_issued": a.map_or(0, |a| a.tokens_issued),
            "refresh_token_rejections": a.map_or(0, |a| a.refresh_rejections),
            "current_refresh_token_works": a.is_some_and(|a| a.authorized && !a.refresh_token.is_empty()),
        }))
    }

    /// Whether a refresh token would be accepted now, without counting a call.
    pub(crate) fn refresh_token_valid(
        &self,
        component: &str,
        authorizer: &str,
        token: &str,
        now: i64,
    ) -> Option<bool> {
        let c = self.by_appid.get(component)?;
        Some(
            c.authorizers
                .get(authorizer)
                .is_some_and(|a| refresh_matches(a, token, now)),
        )
    }
}

fn refresh_matches(a: &Authz, token: &str, now: i64) -> bool {
    if !a.authorized || token.is_empty() {
        return false;
    }
    constant_time_eq(a.refresh_token.as_bytes(), token.as_bytes())
        || a.old_refresh.as_ref().is_some_and(|(old, until)| {
            now < *until && constant_time_eq(old.as_bytes(), token.as_bytes())
        })
}

fn func_info(func_ids: &[u32]) -> Value {
    Value::Array(
        func_ids
            .iter()
            .map(|id| json!({"funcscope_category": {"id": id}}))
            .collect(),
    )
}

impl SimState {
    fn component_mut(&mut self, appid: &str) -> Result<&mut ComponentRt, WxErr> {
        self.components
            .by_appid
            .get_mut(appid)
            .ok_or(e::INVALID_COMPONENT)
    }

    /// The component IP whitelist (§1): 61004 naming the caller.
    pub(crate) fn component_ip(&self, component: &str, ip: IpAddr) -> Result<(), WxErr> {
        let c = self
            .components
            .by_appid
            .get(component)
            .ok_or(e::INVALID_COMPONENT)?;
        let list = &c.cfg.ip_whitelist;
        if !list.is_empty() && !list.iter().any(|allowed| ip_matches(allowed, ip)) {
            return Err(e::component_ip_not_registered(ip));
        }
        Ok(())
    }

    /// The component token check of every component API: missing → 41001,
    /// an account's or authorizer's token → 48001, unknown → 40014,
    /// superseded → 40001, expired → 42001 (§3, §7).
    pub(crate) fn check_component_token(
        &self,
        token: Option<&str>,
        now: i64,
    ) -> Result<String, WxErr> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(e::ACCESS_TOKEN_MISSING)?;
        let Some(rec) = self.components.tokens.get(token) else {
            return Err(if self.tokens.contains_key(token) {
                e::API_UNAUTHORIZED
            } else {
                e::INVALID_ACCESS_TOKEN
            });
        };
        if let Some(dead) = rec.dead_at
            && now >= dead
            && dead < rec.expires_at
        {
            return Err(e::INVALID_CREDENTIAL);
        }
        if now >= rec.expires_at {
            return Err(e::ACCESS_TOKEN_EXPIRED);
        }
        Ok(rec.appid.clone())
    }

    /// `api_component_token` (§3): appid, secret, whitelist, ticket, quota;
    /// then a new token, the previous one living `component_grace` more.
    pub(crate) fn component_token(
        &mut self,
        appid: &str,
        secret: &str,
        ticket: &str,
        ip: IpAddr,
        now: i64,
    ) -> Result<Value, WxErr> {
        let s = self.world.settings.clone();
        if appid.is_empty() {
            return Err(e::INVALID_APPID);
        }
        let c = match self.components.by_appid.get_mut(appid) {
            Some(c) => c,
            None if self.apps.contains_key(appid) => return Err(e::INVALID_COMPONENT),
            None => return Err(e::INVALID_APPID),
        };
        if secret.is_empty() {
            return Err(e::APPSECRET_MISSING);
        }
        if !constant_time_eq(c.cfg.secret.as_bytes(), secret.as_bytes()) {
            return Err(e::INVALID_APPSECRET);
        }
        let list = &c.cfg.ip_whitelist;
        if !list.is_empty() && !list.iter().any(|allowed| ip_matches(allowed, ip)) {
            return Err(e::component_ip_not_registered(ip));
        }
        let issued = c
            .tickets
            .iter()
            .rev()
            .find(|(t, _)| !ticket.is_empty() && constant_time_eq(t.as_bytes(), ticket.as_bytes()))
            .map(|(_, at)| *at)
            .ok_or(e::TICKET_INVALID)?;
        if now >= issued + s.component_ticket_ttl {
            return Err(e::TICKET_EXPIRED);
        }
        let day = beijing_day(now);
        if c.token_daily.used_in(day) >= s.component_token_daily_limit {
            return Err(e::daily_quota(false));
        }
        c.token_daily.bump(day);
        c.tokens_issued += 1;
        self.components.token_gen += 1;
        let token = ids::access_token(self.components.token_gen);
        let c = self
            .components
            .by_appid
            .get_mut(appid)
            .ok_or(e::INVALID_COMPONENT)?;
        let older = c.previous.take();
        let previous = c.current.replace(token.clone());
        c.previous = previous.clone();
        let tokens = &mut self.components.tokens;
        if let Some(t) = older.and_then(|t| tokens.get_mut(&t)) {
            t.kill_at(now);
        }
        if let Some(t) = previous.and_then(|t| tokens.get_mut(&t)) {
            t.kill_at(now + s.component_grace);
        }
        tokens.insert(
            token.clone(),
            TokenRec {
                appid: appid.to_string(),
                expires_at: now + s.component_token_ttl,
                dead_at: None,
                component: None,
            },
        );
        Ok(json!({"component_access_token": token, "expires_in": s.component_token_ttl}))
    }

    /// `api_create_preauthcode` (§4.1).
    pub(crate) fn create_preauth(&mut self, component: &str, now: i64) -> Result<Value, WxErr> {
        let ttl = self.world.settings.preauth_ttl;
        self.component_mut(component)?;
        // Codes nobody used must not pile up in a long session.
        self.components.preauth.retain(|_, p| p.expires_at > now);
        let code = ids::preauth_code();
        self.components.preauth.insert(
            code.clone(),
            PreAuth {
                component: component.to_string(),
                expires_at: now + ttl,
                used: false,
                page: None,
            },
        );
        Ok(json!({"pre_auth_code": code, "expires_in": ttl}))
    }

    /// Checks a pre-auth code for the page: the component's, unused, unexpired.
    pub(crate) fn check_preauth(
        &self,
        component: &str,
        code: &str,
        now: i64,
    ) -> Result<Option<PageCtx>, &'static str> {
        match self.components.preauth.get(code) {
            Some(p) if p.component == component && !p.used => {
                if now >= p.expires_at {
                    Err("pre_auth_code 已过期 (expired)")
                } else {
                    Ok(p.page.clone())
                }
            }
            Some(p) if p.used => Err("pre_auth_code 已被使用 (already used)"),
            _ => Err("pre_auth_code 无效 (invalid)"),
        }
    }

    /// Remembers what the page was opened with.
    pub(crate) fn set_page_ctx(&mut self, code: &str, ctx: PageCtx) {
        if let Some(p) = self.components.preauth.get_mut(code) {
            p.page = Some(ctx);
        }
    }

    /// The official accounts an administrator may authorize on the page.
    pub(crate) fn authorizable(
        &self,
        component: &str,
        biz_appid: Option<&str>,
    ) -> Vec<(String, String)> {
        let Some(c) = self.components.by_appid.get(component) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = self
            .world
            .accounts
            .iter()
            .filter(|a| a.kind == AccountKind::Official)
            .filter(|a| biz_appid.is_none_or(|b| b == a.appid))
            .filter(|a| c.cfg.published || c.cfg.test_accounts.contains(&a.appid))
            .map(|a| {
                let name = self
                    .apps
                    .get(&a.appid)
                    .map_or_else(|| a.name.clone(), |app| app.account.name.clone());
                (a.appid.clone(), name)
            })
            .collect();
        out.sort();
        out
    }

    /// An administrator approves (§4.2, §6.1): the pre-auth code, when given,
    /// is used up; a new authorization code; `authorized`, or
    /// `updateauthorized` when the account had already authorized.
    pub(crate) fn approve(
        &mut self,
        component: &str,
        authorizer: &str,
        func_ids: &[u32],
        preauth: Option<&str>,
        now: i64,
    ) -> Result<Approval, String> {
        let s = self.world.settings.clone();
        let c = self
            .components
            .by_appid
            .get(component)
            .ok_or_else(|| format!("no component with appid {component:?}"))?;
        let account = self
            .apps
            .get(authorizer)
            .map(|a| &a.account)
            .ok_or_else(|| format!("no account with appid {authorizer:?}"))?;
        if account.kind != AccountKind::Official {
            return Err(format!("{authorizer} is not an official account"));
        }
        if !c.cfg.published && !c.cfg.test_accounts.iter().any(|t| t == authorizer) {
            return Err(format!(
                "the platform is not published (全网发布) and {authorizer} is not in its test_accounts"
            ));
        }
        if func_ids.is_empty() {
            return Err("func_ids: grant at least one permission set".into());
        }
        if let Some(bad) = func_ids.iter().find(|f| !ALL_FUNCS.contains(f)) {
            return Err(format!("func_ids: {bad} is not one of {ALL_FUNCS:?}"));
        }
        if let Some(code) = preauth {
            match self.components.preauth.get_mut(code) {
                Some(p) if p.component == component && !p.used && now < p.expires_at => {
                    p.used = true;
                }
                _ => return Err("pre_auth_code is invalid, expired or already used".into()),
            }
        }
        let mut funcs = func_ids.to_vec();
        funcs.sort_unstable();
        funcs.dedup();
        let c = self
            .component_mut(component)
            .map_err(|e| e.msg.to_string())?;
        let a = c.authorizers.entry(authorizer.to_string()).or_default();
        let info_type = if a.authorized {
            if s.rotate_on_update {
                let old = std::mem::replace(&mut a.refresh_token, ids::authorizer_refresh_token());
                a.old_refresh = Some((old, now + s.authorizer_grace));
                a.exchanged = false;
            }
            "updateauthorized"
        } else {
            a.authorized = true;
            a.auth_time = now;
            a.refresh_token = ids::authorizer_refresh_token();
            a.old_refresh = None;
            a.exchanged = false;
            "authorized"
        };
        a.func_ids = funcs;
        let code = ids::auth_code();
        self.components.codes.retain(|_, c| c.expires_at > now);
        self.components.codes.insert(
            code.clone(),
            AuthCode {
                component: component.to_string(),
                authorizer: authorizer.to_string(),
                expires_at: now + s.auth_code_ttl,
                used: false,
            },
        );
        let preauth_xml = preauth
            .map(|p| format!("<PreAuthCode>{}</PreAuthCode>", cdata(p)))
            .unwrap_or_default();
        let xml = format!(
            "<xml><AppId>{}</AppId><CreateTime>{now}</CreateTime><InfoType>{}</InfoType><AuthorizerAppid>{}</AuthorizerAppid><AuthorizationCode>{}</AuthorizationCode><AuthorizationCodeExpiredTime>{}</AuthorizationCodeExpiredTime>{preauth_xml}</xml>",
            cdata(component),
            cdata(info_type),
            cdata(authorizer),
            cdata(&code),
            cdata(&(now + s.auth_code_ttl).to_string()),
        );
        Ok(Approval {
            code,
            expires_in: s.auth_code_ttl,
            info_type,
            xml,
        })
    }

    /// The administrator revokes (§6.1): the account's authorizer tokens and
    /// refresh tokens die at once. Returns the `unauthorized` push XML.
    pub(crate) fn unauthorize(
        &mut self,
        component: &str,
        authorizer: &str,
        now: i64,
    ) -> Result<String, String> {
        let c = self
            .components
            .by_appid
            .get_mut(component)
            .ok_or_else(|| format!("no component with appid {component:?}"))?;
        let a = c
            .authorizers
            .get_mut(authorizer)
            .filter(|a| a.authorized)
            .ok_or_else(|| format!("{authorizer} has not authorized {component}"))?;
        a.authorized = false;
        a.func_ids.clear();
        a.refresh_token.clear();
        a.old_refresh = None;
        a.exchanged = false;
        for t in [a.current.take(), a.previous.take()].into_iter().flatten() {
            if let Some(rec) = self.tokens.get_mut(&t) {
                rec.kill_at(now);
            }
        }
        // A code of the ended authorization must not revive a later one.
        self.components
            .codes
            .retain(|_, c| !(c.component == component && c.authorizer == authorizer));
        Ok(format!(
            "<xml><AppId>{}</AppId><CreateTime>{now}</CreateTime><InfoType>{}</InfoType><AuthorizerAppid>{}</AuthorizerAppid></xml>",
            cdata(component),
            cdata("unauthorized"),
            cdata(authorizer),
        ))
    }

    /// A new authorizer access token; the previous one lives
    /// `authorizer_grace` more, any older one dies now (§14).
    fn mint_authorizer_token(&mut self, component: &str, authorizer: &str, now: i64) -> String {
        let ttl = self.world.settings.authorizer_token_ttl;
        let grace = self.world.settings.authorizer_grace;
        self.components.token_gen += 1;
        let token = ids::access_token(self.components.token_gen);
        if let Some(a) = self
            .components
            .by_appid
            .get_mut(component)
            .and_then(|c| c.authorizers.get_mut(authorizer))
        {
            let older = a.previous.take();
            let previous = a.current.replace(token.clone());
            a.previous = previous.clone();
            a.tokens_issued += 1;
            if let Some(t) = older.and_then(|t| self.tokens.get_mut(&t)) {
                t.kill_at(now);
            }
            if let Some(t) = previous.and_then(|t| self.tokens.get_mut(&t)) {
                t.kill_at(now + grace);
            }
        }
        if let Some(app) = self.apps.get_mut(authorizer) {
            app.stats.tokens_issued.authorizer_access_token += 1;
        }
        self.tokens.insert(
            token.clone(),
            TokenRec {
                appid: authorizer.to_string(),
                expires_at: now + ttl,
                dead_at: None,
                component: Some(component.to_string()),
            },
        );
        token
    }

    /// The authorizer an authorization code names, for stats.
    pub(crate) fn code_authorizer(&self, code: &str) -> Option<String> {
        self.components
            .codes
            .get(code)
            .map(|c| c.authorizer.clone())
    }

    /// `api_query_auth` (§5.1): 61009 unknown or another component's, 61010
    /// expired; each exchange mints an access token, the refresh token stays.
    pub(crate) fn query_auth(
        &mut self,
        component: &str,
        code: &str,
        now: i64,
    ) -> Result<Value, WxErr> {
        let single_use = self.world.settings.auth_code_single_use;
        let rec = match self.components.codes.get_mut(code) {
            Some(r) if r.component == component => r,
            _ => return Err(e::AUTH_CODE_INVALID),
        };
        if now >= rec.expires_at {
            return Err(e::AUTH_CODE_EXPIRED);
        }
        if rec.used && single_use {
            return Err(e::AUTH_CODE_INVALID);
        }
        rec.used = true;
        let authorizer = rec.authorizer.clone();
        let (refresh, funcs) = {
            let a = self
                .components
                .by_appid
                .get_mut(component)
                .and_then(|c| c.authorizers.get_mut(&authorizer))
                .filter(|a| a.authorized)
                .ok_or(e::NOT_AUTHORIZED)?;
            a.exchanged = true;
            (a.refresh_token.clone(), a.func_ids.clone())
        };
        let token = self.mint_authorizer_token(component, &authorizer, now);
        Ok(json!({"authorization_info": {
            "authorizer_appid": authorizer,
            "authorizer_access_token": token,
            "expires_in": self.world.settings.authorizer_token_ttl,
            "authorizer_refresh_token": refresh,
            "func_info": func_info(&funcs),
        }}))
    }

    /// `api_authorizer_token` (§5.2): 61003 not authorized, 50002 restricted,
    /// 61023 wrong or stale refresh token, 45009 per-authorizer daily limit.
    /// The refresh token is echoed, never rotated.
    pub(crate) fn authorizer_token(
        &mut self,
        component: &str,
        authorizer: &str,
        refresh: &str,
        now: i64,
    ) -> Result<Value, WxErr> {
        let limit = self.world.settings.authorizer_token_daily_limit;
        let restricted = self
            .apps
            .get(authorizer)
            .is_some_and(|a| a.account.restricted);
        let a = self
            .components
            .by_appid
            .get_mut(component)
            .ok_or(e::INVALID_COMPONENT)?
            .authorizers
            .get_mut(authorizer)
            .filter(|a| a.authorized)
            .ok_or(e::NOT_AUTHORIZED)?;
        if restricted {
            return Err(e::USER_LIMITED);
        }
        if !refresh_matches(a, refresh, now) {
            a.refresh_rejections += 1;
            return Err(e::INVALID_AUTHORIZER_REFRESH_TOKEN);
        }
        let day = beijing_day(now);
        if a.daily.used_in(day) >= limit {
            return Err(e::daily_quota(false));
        }
        a.daily.bump(day);
        // The current one: the same as sent, unless an update rotated it and
        // the caller still holds the old one in its grace.
        let current_refresh = a.refresh_token.clone();
        let token = self.mint_authorizer_token(component, authorizer, now);
        Ok(json!({
            "authorizer_access_token": token,
            "expires_in": self.world.settings.authorizer_token_ttl,
            "authorizer_refresh_token": current_refresh,
        }))
    }

    fn authz(&self, component: &str, authorizer: &str) -> Result<&Authz, WxErr> {
        self.components
            .by_appid
            .get(component)
            .ok_or(e::INVALID_COMPONENT)?
            .authorizers
            .get(authorizer)
            .filter(|a| a.authorized)
            .ok_or(e::NOT_AUTHORIZED)
    }

    /// Whether the account currently grants `func` to the component.
    pub(crate) fn grants(&self, component: &str, authorizer: &str, func: u32) -> Result<(), WxErr> {
        let a = self.authz(component, authorizer)?;
        if a.func_ids.contains(&func) {
            Ok(())
        } else {
            Err(WxErr::new(61007, "api is unauthorized to component"))
        }
    }

    /// The permission set a business API needs when called with an
    /// authorizer token (§13: 61007 when the account did not grant it).
    /// APIs not listed need none.
    pub(crate) fn check_authorizer_scope(&self, token: &str, path: &str) -> Result<(), WxErr> {
        let Some(component) = self.tokens.get(token).and_then(|t| t.component.as_deref()) else {
            return Ok(());
        };
        let func = match path {
            "/cgi-bin/user/info" | "/cgi-bin/user/info/batchget" | "/cgi-bin/user/get" => 2,
            "/cgi-bin/media/get" => 11,
            _ => return Ok(()),
        };
        let appid = &self.tokens[token].appid;
        self.grants(component, appid, func)
    }

    /// `api_get_authorizer_info` (§5.3).
    pub(crate) fn authorizer_info(
        &self,
        component: &str,
        authorizer: &str,
    ) -> Result<Value, WxErr> {
        let a = self.authz(component, authorizer)?;
        let account = &self.apps.get(authorizer).ok_or(e::INVALID_APPID)?.account;
        let mut auth = json!({
            "authorizer_appid": authorizer,
            "func_info": func_info(&a.func_ids),
        });
        if a.exchanged {
            auth["authorizer_refresh_token"] = json!(a.refresh_token);
        }
        Ok(json!({
            "authorizer_info": {
                "nick_name": account.name,
                "head_img": "",
                "service_type_info": {"id": 2},
                "verify_type_info": {"id": if account.verified { 0 } else { -1 }},
                "user_name": account.original_id,
                "principal_name": "",
                "alias": "",
                "business_info": {"open_store": 0, "open_scan": 0, "open_pay": 0, "open_card": 0, "open_shake": 0},
                "qrcode_url": "",
                "account_status": 1,
            },
            "authorization_info": auth,
        }))
    }

    /// `api_get_authorizer_list` (§5.4): current authorizations in order of
    /// authorization; `refresh_token` only once a code was exchanged.
    pub(crate) fn authorizer_list(
        &self,
        component: &str,
        offset: i64,
        count: i64,
    ) -> Result<Value, WxErr> {
        if offset < 0 || !(1..=500).contains(&count) {
            return Err(e::INVALID_ARGS);
        }
        let c = self
            .components
            .by_appid
            .get(component)
            .ok_or(e::INVALID_COMPONENT)?;
        let mut all: Vec<(&String, &Authz)> =
            c.authorizers.iter().filter(|(_, a)| a.authorized).collect();
        all.sort_by_key(|(appid, a)| (a.auth_time, *appid));
        let list: Vec<Value> = all
            .iter()
            .skip(offset as usize)
            .take(count as usize)
            .map(|(appid, a)| {
                let mut v = json!({"authorizer_appid": appid, "auth_time": a.auth_time});
                if a.exchanged {
                    v["refresh_token"] = json!(a.refresh_token);
                }
                v
            })
            .collect();
        Ok(json!({"total_count": all.len(), "list": list}))
    }

    /// `api_get_authorizer_option` / `api_set_authorizer_option` (§5.5).
    pub(crate) fn authorizer_option(
        &mut self,
        component: &str,
        authorizer: &str,
        name: &str,
        set: Option<&str>,
    ) -> Result<Value, WxErr> {
        self.authz(component, authorizer)?;
        let (_, allowed) = OPTIONS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or(e::INVALID_OPTION_NAME)?;
        let a = self
            .components
            .by_appid
            .get_mut(component)
            .and_then(|c| c.authorizers.get_mut(authorizer))
            .ok_or(e::NOT_AUTHORIZED)?;
        match set {
            Some(v) => {
                if !allowed.contains(&v) {
                    return Err(e::INVALID_OPTION_VALUE);
                }
                a.options.insert(name.to_string(), v.to_string());
                Ok(json!({"errcode": 0, "errmsg": "ok"}))
            }
            None => {
                let v = a.options.get(name).cloned().unwrap_or_else(|| "0".into());
                Ok(json!({"authorizer_appid": authorizer, "option_name": name, "option_value": v}))
            }
        }
    }

    /// `api_start_push_ticket` (§2.2): secret check, then restarts a stopped
    /// pusher (which pushes at once).
    pub(crate) fn start_push_ticket(
        &mut self,
        component: &str,
        secret: &str,
        now: i64,
    ) -> Result<Value, WxErr> {
        if component.is_empty() {
            return Err(e::APPID_MISSING);
        }
        let c = self
            .components
            .by_appid
            .get(component)
            .ok_or(e::INVALID_APPID)?;
        if secret.is_empty() {
            return Err(e::APPSECRET_MISSING);
        }
        if !constant_time_eq(c.cfg.secret.as_bytes(), secret.as_bytes()) {
            return Err(e::INVALID_APPSECRET);
        }
        let was = self
            .components
            .set_pusher(component, true, now)
            .unwrap_or(true);
        Ok(if was {
            json!({"errcode": 0, "errmsg": "in a normal state"})
        } else {
            json!({"errcode": 0, "errmsg": "ok"})
        })
    }
}
