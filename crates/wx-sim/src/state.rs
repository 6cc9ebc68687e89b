//! The platform's state and rules, as plain synchronous methods.
//!
//! Everything lives behind one `std::sync::Mutex` in [`crate::Sim`]: no method
//! here awaits, every critical section is a few map look-ups, and a single
//! lock keeps cross-cutting rules (a token fetch that kills the previous
//! token, a quota shared by endpoints) trivially consistent.
//!
//! § numbers refer to `docs/platform.md`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::{beijing_day, beijing_month, minute};
use crate::errors::{self as e, WxErr};
use crate::ids;
use crate::world::{Account, Consent, Person, World};

/// Which endpoint minted a global token; the two kinds never affect each other (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// `/cgi-bin/token`.
    Classic,
    /// `/cgi-bin/stable_token`.
    Stable,
}

/// A global, authorizer or component access token.
#[derive(Debug)]
pub(crate) struct TokenRec {
    pub(crate) appid: String,
    pub(crate) expires_at: i64,
    /// Set when a newer token superseded this one: it dies here even if
    /// `expires_at` is later.
    pub(crate) dead_at: Option<i64>,
}

impl TokenRec {
    pub(crate) fn kill_at(&mut self, t: i64) {
        let t = t.min(self.expires_at);
        self.dead_at = Some(self.dead_at.map_or(t, |d| d.min(t)));
    }

    pub(crate) fn alive(&self, now: i64) -> bool {
        now < self.expires_at && self.dead_at.is_none_or(|d| now < d)
    }
}

#[derive(Debug, Clone)]
struct CodeRec {
    appid: String,
    person: String,
    scope: String,
    created: i64,
    used: bool,
    snapshot: bool,
    /// The component whose web authorization on behalf minted it.
    component: Option<String>,
}

#[derive(Debug, Clone)]
struct SnsGrant {
    appid: String,
    person: String,
    openid: String,
    scope: String,
    snapshot: bool,
    expires_at: i64,
    component: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
/// Per-account counters served by `GET /_sim/stats`.
pub struct AppStats {
    /// New global tokens minted, by kind.
    pub tokens_issued: TokensIssued,
    /// Forced stable refreshes that minted a token.
    pub force_refreshes: u64,
    /// New tickets minted, by type.
    pub tickets_issued: BTreeMap<String, u64>,
    /// OAuth codes issued.
    pub codes_issued: u64,
    /// User (sns) access tokens issued, by exchange or refresh.
    pub sns_tokens_issued: u64,
    /// Requests received, by path (including faulted ones).
    pub calls: BTreeMap<String, u64>,
    /// Error answers, by errcode.
    pub errors: BTreeMap<String, u64>,
    /// Faults injected into this account's calls.
    pub faults_fired: u64,
    /// Push deliveries started.
    pub pushes: u64,
}

/// Tokens minted by each endpoint.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TokensIssued {
    /// By `/cgi-bin/token`.
    pub classic: u64,
    /// By `/cgi-bin/stable_token`.
    pub stable: u64,
    /// By a third-party platform's `api_query_auth` or `api_authorizer_token`.
    pub authorizer_access_token: u64,
}

/// Calls in one window (a day, a minute, a month).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counter {
    window: i64,
    used: u64,
}

impl Counter {
    pub(crate) fn used_in(&self, window: i64) -> u64 {
        if self.window == window { self.used } else { 0 }
    }
    pub(crate) fn bump(&mut self, window: i64) {
        if self.window != window {
            *self = Counter { window, used: 0 };
        }
        self.used += 1;
    }
}

#[derive(Debug, Clone)]
struct Follow {
    since: i64,
    scene: String,
    qr_scene: i64,
    qr_scene_str: String,
}

/// One account's live state.
#[derive(Debug)]
pub(crate) struct AppRt {
    pub(crate) account: Account,
    classic_gen: u64,
    classic_current: Option<String>,
    classic_previous: Option<String>,
    stable_current: Option<String>,
    stable_older: Vec<String>,
    last_force_at: Option<i64>,
    force_count: Counter,
    daily: HashMap<String, Counter>,
    per_minute: HashMap<String, Counter>,
    clear_quota: Counter,
    tickets: HashMap<String, (String, i64)>,
    /// person id → time of their latest snsapi_userinfo grant.
    userinfo_grants: HashMap<String, i64>,
    /// person id → follow; `follow_order` keeps user/get's order.
    follows: HashMap<String, Follow>,
    follow_order: Vec<String>,
    pub(crate) stats: AppStats,
    msg_id: u64,
    /// media_id → (Content-Type, bytes): temporary media to download.
    media: HashMap<String, (String, Vec<u8>)>,
}

/// Who an openid belongs to.
#[derive(Debug, Clone)]
pub(crate) struct OpenIdOwner {
    pub(crate) appid: String,
    pub(crate) person: String,
    pub(crate) snapshot: bool,
}

/// The whole simulated platform.
#[derive(Debug)]
pub struct SimState {
    pub(crate) world: World,
    pub(crate) apps: HashMap<String, AppRt>,
    pub(crate) people: BTreeMap<String, Person>,
    /// Global and authorizer access tokens: both work on the business APIs.
    pub(crate) tokens: HashMap<String, TokenRec>,
    sns_tokens: HashMap<String, SnsGrant>,
    refresh_tokens: HashMap<String, SnsGrant>,
    codes: HashMap<String, CodeRec>,
    pub(crate) openids: HashMap<String, OpenIdOwner>,
    pub(crate) unattributed_calls: BTreeMap<String, u64>,
    sns_gen: u64,
    last_prune: i64,
    /// Third-party platforms and their authorizations.
    pub(crate) components: crate::component::Components,
}

/// Default daily quotas by path (§3). `/cgi-bin/token` comes from the account.
fn default_daily_limit(path: &str) -> Option<u64> {
    match path {
        "/cgi-bin/stable_token" => Some(500_000),
        "/cgi-bin/user/info" => Some(500_000),
        "/cgi-bin/user/info/batchget" => Some(500_000),
        "/cgi-bin/user/get" => Some(500),
        // Undocumented ("非常有限"); a generous number keeps dev worlds usable.
        "/cgi-bin/ticket/getticket" => Some(100_000),
        // Undocumented too ("每个接口都有调用次数限制"); our choice, so that a hub
        // that confirms reported tokens with it cannot do so without bound.
        "/cgi-bin/openapi/quota/get" => Some(5_000),
        _ => None,
    }
}

/// Default per-minute limits by path (§2.2, §3).
fn default_minute_limit(path: &str) -> Option<u64> {
    match path {
        "/cgi-bin/stable_token" => Some(10_000),
        "/sns/oauth2/access_token" | "/sns/oauth2/refresh_token" | "/sns/userinfo" => Some(50_000),
        _ => None,
    }
}

/// Paths known to the quota APIs (`openapi/quota/get`).
pub(crate) const QUOTA_PATHS: &[&str] = &[
    "/cgi-bin/token",
    "/cgi-bin/stable_token",
    "/cgi-bin/ticket/getticket",
    "/cgi-bin/user/info",
    "/cgi-bin/user/info/batchget",
    "/cgi-bin/user/get",
    "/cgi-bin/clear_quota",
    "/cgi-bin/openapi/quota/get",
    "/sns/oauth2/access_token",
    "/sns/oauth2/refresh_token",
    "/sns/userinfo",
    "/sns/auth",
];

impl AppRt {
    fn new(account: Account) -> AppRt {
        AppRt {
            account,
            classic_gen: 80,
            classic_current: None,
            classic_previous: None,
            stable_current: None,
            stable_older: Vec::new(),
            last_force_at: None,
            force_count: Counter::default(),
            daily: HashMap::new(),
            per_minute: HashMap::new(),
            clear_quota: Counter::default(),
            tickets: HashMap::new(),
            userinfo_grants: HashMap::new(),
            follows: HashMap::new(),
            follow_order: Vec::new(),
            stats: AppStats::default(),
            msg_id: 6_054_768_590_064_713_728,
            media: HashMap::new(),
        }
    }

    fn daily_limit(&self, path: &str) -> Option<u64> {
        if let Some(l) = self.account.daily_limits.get(path) {
            return Some(*l);
        }
        if path == "/cgi-bin/token" {
            return Some(self.account.token_daily_limit);
        }
        default_daily_limit(path)
    }

    fn minute_limit(&self, path: &str) -> Option<u64> {
        self.account
            .minute_limits
            .get(path)
            .copied()
            .or_else(|| default_minute_limit(path))
    }
}

impl SimState {
    /// Builds the state of a fresh world at virtual time `now`.
    pub fn new(world: World, now: i64) -> SimState {
        let mut apps = HashMap::new();
        let mut openids = HashMap::new();
        for a in &world.accounts {
            for p in &world.people {
                for snapshot in [false, true] {
                    openids.insert(
                        ids::openid(&a.appid, &p.id, snapshot),
                        OpenIdOwner {
                            appid: a.appid.clone(),
                            person: p.id.clone(),
                            snapshot,
                        },
                    );
                }
            }
            apps.insert(a.appid.clone(), AppRt::new(a.clone()));
        }
        let components = crate::component::Components::new(&world, now);
        let mut people = BTreeMap::new();
        for p in &world.people {
            for appid in &p.follows {
                if let Some(app) = apps.get_mut(appid) {
                    app.follows.insert(
                        p.id.clone(),
                        Follow {
                            since: now - 30 * 86400,
                            scene: "ADD_SCENE_SEARCH".into(),
                            qr_scene: 0,
                            qr_scene_str: String::new(),
                        },
                    );
                    app.follow_order.push(p.id.clone());
                }
            }
            people.insert(p.id.clone(), p.clone());
        }
        SimState {
            world,
            apps,
            people,
            tokens: HashMap::new(),
            sns_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            codes: HashMap::new(),
            openids,
            unattributed_calls: BTreeMap::new(),
            sns_gen: 40,
            last_prune: now,
            components,
        }
    }

    /// Adds an account at run time, as if the world had listed it.
    pub(crate) fn add_account(&mut self, account: Account) {
        for p in self.people.keys() {
            for snapshot in [false, true] {
                self.openids.insert(
                    ids::openid(&account.appid, p, snapshot),
                    OpenIdOwner {
                        appid: account.appid.clone(),
                        person: p.clone(),
                        snapshot,
                    },
                );
            }
        }
        self.world.accounts.push(account.clone());
        self.apps.insert(account.appid.clone(), AppRt::new(account));
    }

    fn app(&mut self, appid: &str) -> Result<&mut AppRt, WxErr> {
        self.apps.get_mut(appid).ok_or(e::INVALID_APPID)
    }

    /// The account an appid names, if any.
    pub(crate) fn account(&self, appid: &str) -> Option<&Account> {
        self.apps.get(appid).map(|a| &a.account)
    }

    /// The appid owning a global or user token, for stats and faults.
    pub(crate) fn appid_of_token(&self, token: &str) -> Option<String> {
        self.tokens
            .get(token)
            .map(|t| t.appid.clone())
            .or_else(|| self.sns_tokens.get(token).map(|g| g.appid.clone()))
    }

    /// Counts a received request against its account (or the unattributed bucket).
    pub(crate) fn count_call(&mut self, appid: Option<&str>, path: &str) {
        match appid.and_then(|a| self.apps.get_mut(a)) {
            Some(app) => *app.stats.calls.entry(path.to_string()).or_default() += 1,
            None => *self.unattributed_calls.entry(path.to_string()).or_default() += 1,
        }
    }

    /// Counts an error answer.
    pub(crate) fn count_error(&mut self, appid: Option<&str>, code: i64) {
        if let Some(app) = appid.and_then(|a| self.apps.get_mut(a)) {
            *app.stats.errors.entry(code.to_string()).or_default() += 1;
        }
    }

    /// Counts a fired fault.
    pub(crate) fn count_fault(&mut self, appid: Option<&str>) {
        if let Some(app) = appid.and_then(|a| self.apps.get_mut(a)) {
            app.stats.faults_fired += 1;
        }
    }

    /// Drops records that can no longer matter, so a long dev session or a
    /// benchmark does not grow without bound. Dead tokens are kept a day so
    /// that they keep answering 40001/42001 rather than 40014.
    fn prune(&mut self, now: i64) {
        if now - self.last_prune < 3600 {
            return;
        }
        self.last_prune = now;
        let horizon = now - 86400;
        self.tokens
            .retain(|_, t| t.dead_at.unwrap_or(t.expires_at).min(t.expires_at) > horizon);
        self.sns_tokens.retain(|_, g| g.expires_at > horizon);
        // An expired refresh_token answers 42002 for as long as the
        // platform would remember it, not 40030 because it was forgotten.
        let memory = now - self.world.settings.refresh_token_memory;
        self.refresh_tokens.retain(|_, g| g.expires_at > memory);
        self.codes.retain(|_, c| c.created > horizon);
        self.components.prune(now);
    }

    // ----- the global access token -------------------------------------------------

    /// The one place every API that takes `access_token` checks it (§4):
    /// missing → 41001, unknown → 40014, superseded past its grace → 40001,
    /// past its expiry → 42001. Returns the owning appid.
    pub(crate) fn check_access_token(
        &self,
        token: Option<&str>,
        now: i64,
    ) -> Result<String, WxErr> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(e::ACCESS_TOKEN_MISSING)?;
        let rec = self.tokens.get(token).ok_or(e::INVALID_ACCESS_TOKEN)?;
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

    /// Checks appid and secret the way both token endpoints do, then the
    /// freeze and the IP whitelist.
    pub(crate) fn check_credentials(
        &mut self,
        appid: &str,
        secret: &str,
        ip: IpAddr,
    ) -> Result<(), WxErr> {
        let app = self.app(appid)?;
        if !constant_time_eq(app.account.secret.as_bytes(), secret.as_bytes()) {
            return Err(e::INVALID_APPSECRET);
        }
        if app.account.secret_frozen {
            return Err(e::SECRET_FROZEN);
        }
        let list = &app.account.ip_whitelist;
        if !list.is_empty() && !list.iter().any(|allowed| ip_matches(allowed, ip)) {
            return Err(e::ip_not_whitelisted(ip));
        }
        Ok(())
    }

    /// Charges one call to the daily and per-minute quotas (§3): 45009, 45011.
    pub(crate) fn charge(&mut self, appid: &str, path: &str, now: i64) -> Result<(), WxErr> {
        self.prune(now);
        let app = self.app(appid)?;
        let day = beijing_day(now);
        let min = minute(now);
        if let Some(limit) = app.daily_limit(path)
            && app.daily.get(path).map_or(0, |c| c.used_in(day)) >= limit
        {
            let token_endpoint = path == "/cgi-bin/token" || path == "/cgi-bin/stable_token";
            return Err(e::daily_quota(token_endpoint));
        }
        if let Some(limit) = app.minute_limit(path)
            && app.per_minute.get(path).map_or(0, |c| c.used_in(min)) >= limit
        {
            return Err(e::MINUTE_QUOTA);
        }
        app.daily.entry(path.to_string()).or_default().bump(day);
        app.per_minute
            .entry(path.to_string())
            .or_default()
            .bump(min);
        Ok(())
    }

    /// `/cgi-bin/token`: a new token each call; the previous one lives
    /// `token_grace_seconds` more, any older one dies now (§2.1, §12).
    pub(crate) fn issue_classic(&mut self, appid: &str, now: i64) -> Result<Value, WxErr> {
        let ttl = self.world.settings.access_token_ttl;
        let grace = self.world.settings.token_grace_seconds;
        let app = self.apps.get_mut(appid).ok_or(e::INVALID_APPID)?;
        app.classic_gen += 1;
        let token = ids::access_token(app.classic_gen);
        let older = app.classic_previous.take();
        let previous = app.classic_current.replace(token.clone());
        app.classic_previous = previous.clone();
        app.stats.tokens_issued.classic += 1;
        if let Some(t) = older.and_then(|t| self.tokens.get_mut(&t)) {
            t.kill_at(now);
        }
        if let Some(t) = previous.and_then(|t| self.tokens.get_mut(&t)) {
            t.kill_at(now + grace);
        }
        self.tokens.insert(
            token.clone(),
            TokenRec {
                appid: appid.to_string(),
                expires_at: now + ttl,
                dead_at: None,
            },
        );
        Ok(json!({"access_token": token, "expires_in": ttl}))
    }

    fn mint_stable(&mut self, appid: &str, now: i64) -> (String, i64) {
        let ttl = self.world.settings.access_token_ttl;
        let app = self.apps.get_mut(appid).expect("caller checked the appid");
        app.classic_gen += 1;
        let token = ids::access_token(app.classic_gen);
        if let Some(old) = app.stable_current.replace(token.clone()) {
            // Rotation happens only in a token's last minutes, so anything
            // older than the last few has expired on its own.
            app.stable_older.push(old);
            if app.stable_older.len() > 4 {
                app.stable_older.remove(0);
            }
        }
        app.stats.tokens_issued.stable += 1;
        self.tokens.insert(
            token.clone(),
            TokenRec {
                appid: appid.to_string(),
                expires_at: now + ttl,
                dead_at: None,
            },
        );
        (token, ttl)
    }

    /// `/cgi-bin/stable_token` (§2.2).
    pub(crate) fn issue_stable(
        &mut self,
        appid: &str,
        force: bool,
        now: i64,
    ) -> Result<Value, WxErr> {
        let settings = self.world.settings.clone();
        let current = {
            let app = self.app(appid)?;
            app.stable_current.clone()
        }
        .and_then(|t| {
            let rec = self.tokens.get(&t)?;
            rec.alive(now).then(|| (t.clone(), rec.expires_at - now))
        });
        if !force {
            if let Some((token, remaining)) = current {
                // At exactly the window's edge the token still has the
                // promised 300 s (expires_in >= 300, §2.2).
                if remaining >= settings.stable_rotate_window {
                    return Ok(json!({"access_token": token, "expires_in": remaining}));
                }
            }
            // Pre-rotation: the old token keeps working to its own expiry.
            let (token, ttl) = self.mint_stable(appid, now);
            return Ok(json!({"access_token": token, "expires_in": ttl}));
        }
        let day = beijing_day(now);
        let app = self.app(appid)?;
        let too_soon = app
            .last_force_at
            .is_some_and(|t| now - t < settings.stable_force_min_interval);
        if too_soon && let Some((token, remaining)) = current {
            // "否则不会刷新": the current token, no error.
            return Ok(json!({"access_token": token, "expires_in": remaining}));
        }
        if app.force_count.used_in(day) >= u64::from(settings.stable_force_daily_limit) {
            return Err(e::daily_quota(true));
        }
        app.force_count.bump(day);
        app.last_force_at = Some(now);
        app.stats.force_refreshes += 1;
        let mut doomed = std::mem::take(&mut app.stable_older);
        doomed.extend(app.stable_current.take());
        for t in doomed {
            if let Some(rec) = self.tokens.get_mut(&t) {
                rec.kill_at(now + settings.stable_force_grace_seconds);
            }
        }
        let (token, ttl) = self.mint_stable(appid, now);
        Ok(json!({"access_token": token, "expires_in": ttl}))
    }

    // ----- quota management --------------------------------------------------------

    /// Resets every daily counter of the account, within the monthly budget (§2.4).
    pub(crate) fn clear_quota(&mut self, appid: &str, now: i64) -> Result<Value, WxErr> {
        let limit = u64::from(self.world.settings.clear_quota_monthly_limit);
        let app = self.app(appid)?;
        let month = beijing_month(now);
        if app.clear_quota.used_in(month) >= limit {
            return Err(e::CLEAR_QUOTA_LIMIT);
        }
        app.clear_quota.bump(month);
        app.daily.clear();
        app.force_count = Counter::default();
        Ok(json!({"errcode": 0, "errmsg": "ok"}))
    }

    /// Puts a temporary media file (control API).
    pub(crate) fn put_media(
        &mut self,
        appid: &str,
        media_id: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(), WxErr> {
        let app = self.apps.get_mut(appid).ok_or(e::INVALID_APPID)?;
        app.media
            .insert(media_id.to_string(), (content_type.to_string(), body));
        Ok(())
    }

    /// `GET /cgi-bin/media/get`: the file's type and bytes, or 40007.
    pub(crate) fn media(&self, appid: &str, media_id: &str) -> Result<(String, Vec<u8>), WxErr> {
        let app = self.apps.get(appid).ok_or(e::INVALID_APPID)?;
        app.media.get(media_id).cloned().ok_or(e::INVALID_MEDIA_ID)
    }

    /// `openapi/quota/get` (§2.4).
    pub(crate) fn quota_get(&mut self, appid: &str, path: &str, now: i64) -> Result<Value, WxErr> {
        let app = self.app(appid)?;
        let day = beijing_day(now);
        let limit = app.daily_limit(path).unwrap_or(0);
        let used = app.daily.get(path).map_or(0, |c| c.used_in(day));
        Ok(json!({
            "errcode": 0, "errmsg": "ok",
            "quota": {"daily_limit": limit, "used": used, "remain": limit.saturating_sub(used)}
        }))
    }

    /// `openapi/quota/clear`: one API's counter.
    pub(crate) fn quota_clear(&mut self, appid: &str, path: &str) -> Result<Value, WxErr> {
        let app = self.app(appid)?;
        app.daily.remove(path);
        Ok(json!({"errcode": 0, "errmsg": "ok"}))
    }

    // ----- tickets -----------------------------------------------------------------

    /// `getticket`: the same ticket for its whole life, `expires_in` always
    /// the full lifetime (§7.1); independent of token refreshes (§12).
    pub(crate) fn ticket(&mut self, appid: &str, kind: &str, now: i64) -> Result<Value, WxErr> {
        let ttl = self.world.settings.ticket_ttl;
        let app = self.app(appid)?;
        let fresh = app
            .tickets
            .get(kind)
            .filter(|(_, issued)| now < issued + ttl)
            .map(|(t, _)| t.clone());
        let ticket = match fresh {
            Some(t) => t,
            None => {
                let t = ids::ticket();
                app.tickets.insert(kind.to_string(), (t.clone(), now));
                *app.stats
                    .tickets_issued
                    .entry(kind.to_string())
                    .or_default() += 1;
                t
            }
        };
        Ok(json!({"errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": ttl}))
    }

    // ----- users -------------------------------------------------------------------

    fn owner_in(&self, appid: &str, openid: &str) -> Result<OpenIdOwner, WxErr> {
        match self.openids.get(openid) {
            Some(o) if o.appid == appid && !o.snapshot => Ok(o.clone()),
            _ => Err(e::INVALID_OPENID),
        }
    }

    /// One `user/info` record, post-2021 fields (§6.1).
    pub(crate) fn user_info(&self, appid: &str, openid: &str, lang: &str) -> Result<Value, WxErr> {
        let owner = self.owner_in(appid, openid)?;
        let app = self.apps.get(appid).ok_or(e::INVALID_APPID)?;
        let person = self.people.get(&owner.person).ok_or(e::INVALID_OPENID)?;
        let unionid = person.unionid.clone().filter(|_| app.account.unionid_bound);
        let mut v = match app.follows.get(&owner.person) {
            Some(f) => json!({
                "subscribe": 1,
                "openid": openid,
                "language": lang,
                "subscribe_time": f.since,
                "remark": "",
                "groupid": 0,
                "tagid_list": [],
                "subscribe_scene": f.scene,
                "qr_scene": f.qr_scene,
                "qr_scene_str": f.qr_scene_str,
            }),
            None => json!({"subscribe": 0, "openid": openid, "tagid_list": []}),
        };
        if let Some(u) = unionid {
            v["unionid"] = Value::String(u);
        }
        Ok(v)
    }

    /// `user/get`: followers in follow order, pages of `user_get_page_size` (§6.3).
    pub(crate) fn user_list(&self, appid: &str, next_openid: &str) -> Result<Value, WxErr> {
        let app = self.apps.get(appid).ok_or(e::INVALID_APPID)?;
        let page = self.world.settings.user_get_page_size;
        let start = if next_openid.is_empty() {
            0
        } else {
            let owner = self.owner_in(appid, next_openid)?;
            app.follow_order
                .iter()
                .position(|p| *p == owner.person)
                .map(|i| i + 1)
                .ok_or(e::INVALID_OPENID)?
        };
        let slice: Vec<String> = app
            .follow_order
            .iter()
            .skip(start)
            .take(page)
            .map(|p| ids::openid(appid, p, false))
            .collect();
        let total = app.follow_order.len();
        let next = if start + slice.len() < total {
            slice.last().cloned().unwrap_or_default()
        } else {
            String::new()
        };
        let mut v = json!({"total": total, "count": slice.len(), "next_openid": next});
        if !slice.is_empty() {
            v["data"] = json!({ "openid": slice });
        }
        Ok(v)
    }

    /// Follows: returns the openid and whether anything changed.
    pub(crate) fn follow(
        &mut self,
        appid: &str,
        person: &str,
        scene: Option<&str>,
        qr_scene: Option<&str>,
        now: i64,
    ) -> Result<(String, bool), String> {
        if !self.people.contains_key(person) {
            return Err(format!("no person with id {person:?}"));
        }
        let app = self
            .apps
            .get_mut(appid)
            .ok_or_else(|| format!("no account with appid {appid:?}"))?;
        let openid = ids::openid(appid, person, false);
        if app.follows.contains_key(person) {
            return Ok((openid, false));
        }
        let scene = match (scene, qr_scene) {
            (Some(s), _) => s.to_string(),
            (None, Some(_)) => "ADD_SCENE_QR_CODE".into(),
            (None, None) => "ADD_SCENE_SEARCH".into(),
        };
        let (qr_scene, qr_scene_str) = match qr_scene {
            Some(q) => match q.parse::<i64>() {
                Ok(n) => (n, String::new()),
                Err(_) => (0, q.to_string()),
            },
            None => (0, String::new()),
        };
        app.follows.insert(
            person.to_string(),
            Follow {
                since: now,
                scene,
                qr_scene,
                qr_scene_str,
            },
        );
        app.follow_order.push(person.to_string());
        Ok((openid, true))
    }

    /// Unfollows: returns the openid and whether anything changed.
    pub(crate) fn unfollow(&mut self, appid: &str, person: &str) -> Result<(String, bool), String> {
        if !self.people.contains_key(person) {
            return Err(format!("no person with id {person:?}"));
        }
        let app = self
            .apps
            .get_mut(appid)
            .ok_or_else(|| format!("no account with appid {appid:?}"))?;
        let changed = app.follows.remove(person).is_some();
        app.follow_order.retain(|p| p != person);
        Ok((ids::openid(appid, person, false), changed))
    }

    /// A fresh 64-bit MsgId for a pushed message.
    pub(crate) fn next_msg_id(&mut self, appid: &str) -> u64 {
        self.apps.get_mut(appid).map_or(0, |a| {
            a.msg_id += 1;
            a.stats.pushes += 1;
            a.msg_id
        })
    }

    // ----- web authorization ------------------------------------------------------

    /// Whether a follower coming from the account's menu gets snsapi_userinfo silently.
    pub(crate) fn follows(&self, appid: &str, person: &str) -> bool {
        self.apps
            .get(appid)
            .is_some_and(|a| a.follows.contains_key(person))
    }

    /// The scripted decision of a person.
    pub(crate) fn consent_of(&self, person: &str) -> Option<(Consent, bool)> {
        self.people.get(person).map(|p| (p.consent, p.snapshot))
    }

    /// Issues a code after consent (or silently). Records a userinfo grant,
    /// which the 48001 quirk looks at (§12).
    pub(crate) fn issue_code(
        &mut self,
        appid: &str,
        person: &str,
        scope: &str,
        component: Option<&str>,
        now: i64,
    ) -> String {
        let snapshot =
            self.people.get(person).is_some_and(|p| p.snapshot) && scope != "snsapi_base";
        let code = ids::code();
        if let Some(app) = self.apps.get_mut(appid) {
            app.stats.codes_issued += 1;
            if scope != "snsapi_base" && !snapshot {
                app.userinfo_grants.insert(person.to_string(), now);
            }
        }
        self.codes.insert(
            code.clone(),
            CodeRec {
                appid: appid.to_string(),
                person: person.to_string(),
                scope: scope.to_string(),
                created: now,
                used: false,
                snapshot,
                component: component.map(str::to_string),
            },
        );
        code
    }

    fn grant_body(&self, token: &str, refresh: &str, g: &SnsGrant, with_unionid: bool) -> Value {
        let mut v = json!({
            "access_token": token,
            "expires_in": self.world.settings.sns_token_ttl,
            "refresh_token": refresh,
            "openid": g.openid,
            "scope": g.scope,
        });
        if g.snapshot {
            v["is_snapshotuser"] = json!(1);
        }
        if with_unionid
            && g.scope != "snsapi_base"
            && let Some(u) = self.unionid_for(&g.appid, &g.person, g.snapshot)
        {
            v["unionid"] = Value::String(u);
        }
        v
    }

    fn unionid_for(&self, appid: &str, person: &str, snapshot: bool) -> Option<String> {
        if !self.apps.get(appid)?.account.unionid_bound {
            return None;
        }
        if snapshot {
            return Some(ids::snapshot_unionid(person));
        }
        self.people.get(person)?.unionid.clone()
    }

    fn new_sns_token(&mut self, grant: &SnsGrant, now: i64) -> String {
        self.sns_gen += 1;
        let token = ids::access_token(self.sns_gen);
        let mut g = grant.clone();
        g.expires_at = now + self.world.settings.sns_token_ttl;
        if let Some(app) = self.apps.get_mut(&g.appid) {
            app.stats.sns_tokens_issued += 1;
        }
        self.sns_tokens.insert(token.clone(), g);
        token
    }

    /// `/sns/oauth2/access_token` (§5.2): codes are single-use (40163), live
    /// `code_ttl` (40029 or 42003) and are bound to their appid (40029).
    /// `component` is the third-party platform exchanging it on the
    /// account's behalf; a code minted for the other flow is 40029.
    pub(crate) fn exchange_code(
        &mut self,
        appid: &str,
        code: &str,
        component: Option<&str>,
        now: i64,
    ) -> Result<Value, WxErr> {
        let expired_code = self.world.settings.expired_code_errcode;
        let code_ttl = self.world.settings.code_ttl;
        let rec = match self.codes.get_mut(code) {
            Some(r) if r.appid == appid && r.component.as_deref() == component => r,
            _ => return Err(e::INVALID_CODE),
        };
        if rec.used {
            return Err(e::CODE_BEEN_USED);
        }
        if now >= rec.created + code_ttl {
            return Err(if expired_code == 42003 {
                e::CODE_EXPIRED
            } else {
                e::INVALID_CODE
            });
        }
        rec.used = true;
        let rec = rec.clone();
        let grant = SnsGrant {
            openid: ids::openid(appid, &rec.person, rec.snapshot),
            appid: rec.appid,
            person: rec.person,
            scope: rec.scope,
            snapshot: rec.snapshot,
            expires_at: now + self.world.settings.refresh_token_ttl,
            component: rec.component,
        };
        self.sns_gen += 1;
        let refresh = ids::refresh_token(self.sns_gen);
        self.refresh_tokens.insert(refresh.clone(), grant.clone());
        let token = self.new_sns_token(&grant, now);
        Ok(self.grant_body(&token, &refresh, &grant, true))
    }

    /// `/sns/oauth2/refresh_token` (§5.3, §12): the same refresh_token comes
    /// back and its 30-day clock is not extended.
    /// A refresh_token of one flow is unknown (40030) to the other.
    pub(crate) fn refresh_sns(
        &mut self,
        appid: &str,
        refresh: &str,
        component: Option<&str>,
        now: i64,
    ) -> Result<Value, WxErr> {
        let grant = match self.refresh_tokens.get(refresh) {
            Some(g) if g.appid == appid && g.component.as_deref() == component => g.clone(),
            _ => return Err(e::INVALID_REFRESH_TOKEN),
        };
        if now >= grant.expires_at {
            return Err(e::REFRESH_TOKEN_EXPIRED);
        }
        let token = self.new_sns_token(&grant, now);
        Ok(self.grant_body(&token, refresh, &grant, false))
    }

    fn check_sns_token(&self, token: Option<&str>, now: i64) -> Result<&SnsGrant, WxErr> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(e::ACCESS_TOKEN_MISSING)?;
        let g = self.sns_tokens.get(token).ok_or(e::INVALID_ACCESS_TOKEN)?;
        if now >= g.expires_at {
            return Err(e::ACCESS_TOKEN_EXPIRED);
        }
        Ok(g)
    }

    /// `/sns/auth` (§5.4).
    pub(crate) fn sns_auth(
        &self,
        token: Option<&str>,
        openid: &str,
        now: i64,
    ) -> Result<Value, WxErr> {
        let g = self.check_sns_token(token, now)?;
        if openid.is_empty() {
            return Err(e::OPENID_MISSING);
        }
        if g.openid != openid {
            return Err(e::INVALID_OPENID);
        }
        Ok(json!({"errcode": 0, "errmsg": "ok"}))
    }

    /// `/sns/userinfo` (§5.5) with the 48001 rule and its quirk (§12).
    pub(crate) fn sns_userinfo(
        &self,
        token: Option<&str>,
        openid: &str,
        now: i64,
    ) -> Result<Value, WxErr> {
        let g = self.check_sns_token(token, now)?;
        if openid.is_empty() {
            return Err(e::OPENID_MISSING);
        }
        if g.snapshot {
            return Err(e::API_UNAUTHORIZED);
        }
        let quirks = &self.world.quirks;
        let mut in_quirk = false;
        if g.scope == "snsapi_base" {
            let granted = self
                .apps
                .get(&g.appid)
                .and_then(|a| a.userinfo_grants.get(&g.person))
                .is_some_and(|t| now - t < self.world.settings.refresh_token_ttl);
            if !(quirks.base_userinfo_after_grant && granted) {
                return Err(e::API_UNAUTHORIZED);
            }
            in_quirk = true;
        }
        if g.openid != openid && !(in_quirk && quirks.userinfo_ignores_openid) {
            return Err(e::INVALID_OPENID);
        }
        let person = self.people.get(&g.person).ok_or(e::INVALID_OPENID)?;
        let mut v = json!({
            "openid": g.openid,
            "nickname": person.nickname,
            "sex": 0,
            "province": "",
            "city": "",
            "country": "",
            "headimgurl": person.headimgurl,
            "privilege": [],
        });
        if let Some(u) = self.unionid_for(&g.appid, &g.person, false) {
            v["unionid"] = Value::String(u);
        }
        Ok(v)
    }

    // ----- control -------------------------------------------------------------------

    /// Per-appid stats for `/_sim/stats`.
    pub(crate) fn stats(&self) -> Value {
        let apps: BTreeMap<&str, &AppStats> = self
            .apps
            .iter()
            .map(|(k, v)| (k.as_str(), &v.stats))
            .collect();
        json!({
            "apps": apps,
            "unattributed_calls": self.unattributed_calls,
            "components": self.components.stats(),
        })
    }
}

/// Whether a whitelist entry (an IP) admits the caller, treating IPv4-mapped
/// IPv6 addresses as their IPv4 form.
pub(crate) fn ip_matches(allowed: &str, ip: IpAddr) -> bool {
    let Ok(allowed) = allowed.parse::<IpAddr>() else {
        return false;
    };
    let norm = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    norm(allowed) == norm(ip)
}

/// Secrets are compared without an early exit, like the platform should.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
