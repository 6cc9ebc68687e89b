//! The control API under `/_sim/`: clock, stats, faults, accounts, people's
//! actions, push log and reset. Errors are `{"error":{"code","message"}}`.
//!
//! § numbers refer to `docs/platform.md`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

mod actions;

use crate::Sim;
use crate::faults::FaultSpec;
use crate::push;
use crate::world::{Consent, PushMode};

/// A control API error.
pub(crate) struct ControlError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ControlError {
    pub(crate) fn bad_request(message: impl Into<String>) -> ControlError {
        ControlError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ControlError {
        ControlError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    pub(crate) fn conflict(message: impl Into<String>) -> ControlError {
        ControlError {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: message.into(),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<JsonRejection> for ControlError {
    fn from(r: JsonRejection) -> ControlError {
        ControlError::bad_request(r.body_text())
    }
}

pub(crate) type Result<T> = std::result::Result<T, ControlError>;

pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/clock", get(clock))
        .route("/_sim/clock/advance", post(clock_advance))
        .route("/_sim/clock/set", post(clock_set))
        .route("/_sim/stats", get(stats))
        .route("/_sim/world", get(world))
        .route(
            "/_sim/faults",
            get(faults_list).post(faults_add).delete(faults_clear),
        )
        .route("/_sim/accounts/{appid}", post(account_patch))
        .route("/_sim/openid", get(openid))
        .route("/_sim/people/{id}/consent", post(person_consent))
        .route("/_sim/people/{id}/follow", post(person_follow))
        .route("/_sim/people/{id}/unfollow", post(person_unfollow))
        .route("/_sim/people/{id}/text", post(person_text))
        .route("/_sim/people/{id}/click", post(actions::click))
        .route("/_sim/people/{id}/scan", post(actions::scan))
        .route("/_sim/people/{id}/message", post(actions::message))
        .route("/_sim/people/{id}/event", post(actions::any_event))
        .route("/_sim/push/verify", post(push_verify))
        .route("/_sim/push/log", get(push_log))
        .route("/_sim/push/deliveries/{id}", get(push_delivery))
        .route("/_sim/media", post(put_media))
        .route("/_sim/reset", post(reset))
        .merge(crate::component::control::routes())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaBody {
    appid: String,
    media_id: String,
    content_type: String,
    /// The file's bytes, as text.
    body: String,
}

/// `POST /_sim/media`: a temporary media file `GET /cgi-bin/media/get` serves.
async fn put_media(
    State(sim): State<Arc<Sim>>,
    body: std::result::Result<Json<MediaBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(m) = body?;
    if m.media_id.is_empty() {
        return Err(ControlError::bad_request("media_id: required"));
    }
    sim.lock()
        .put_media(&m.appid, &m.media_id, &m.content_type, m.body.into_bytes())
        .map_err(|_| ControlError::not_found(format!("no account with appid {:?}", m.appid)))?;
    Ok(Json(json!({"media_id": m.media_id})))
}

async fn clock(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!({"now": sim.clock.now(), "mode": sim.clock.mode()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: i64,
}

async fn clock_advance(
    State(sim): State<Arc<Sim>>,
    body: std::result::Result<Json<Advance>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(a) = body?;
    if a.seconds < 0 {
        return Err(ControlError::bad_request(
            "seconds: must not be negative; use /_sim/clock/set to go back",
        ));
    }
    Ok(Json(json!({"now": sim.clock.advance(a.seconds)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetClock {
    now: i64,
}

async fn clock_set(
    State(sim): State<Arc<Sim>>,
    body: std::result::Result<Json<SetClock>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(s) = body?;
    Ok(Json(json!({"now": sim.clock.set(s.now)})))
}

async fn stats(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let mut v = sim.lock().stats();
    let pending = sim
        .deliveries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|d| d.status == push::DeliveryStatus::Pending)
        .count();
    v["pending_deliveries"] = json!(pending);
    v["now"] = json!(sim.clock.now());
    Json(v)
}

async fn world(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let st = sim.lock();
    let mut w = st.world.clone();
    w.accounts = st
        .world
        .accounts
        .iter()
        .map(|a| st.account(&a.appid).cloned().unwrap_or_else(|| a.clone()))
        .collect();
    w.people = st.people.values().cloned().collect();
    Json(serde_json::to_value(w).unwrap_or(Value::Null))
}

async fn faults_list(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let faults = sim.faults.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Json(json!({ "faults": faults }))
}

async fn faults_add(
    State(sim): State<Arc<Sim>>,
    body: std::result::Result<Json<FaultSpec>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(spec) = body?;
    let id = sim.next_id.fetch_add(1, Ordering::Relaxed);
    let fault = spec.into_fault(id).map_err(ControlError::bad_request)?;
    let mut faults = sim.faults.lock().unwrap_or_else(|e| e.into_inner());
    faults.push(fault.clone());
    sim.fault_count.store(faults.len(), Ordering::Relaxed);
    Ok(Json(json!({ "fault": fault })))
}

async fn faults_clear(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let mut faults = sim.faults.lock().unwrap_or_else(|e| e.into_inner());
    let n = faults.len();
    faults.clear();
    sim.fault_count.store(0, Ordering::Relaxed);
    Json(json!({ "cleared": n }))
}

/// Changes to an account at run time, e.g. allowing an IP after a 40164.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountPatch {
    secret: Option<String>,
    secret_frozen: Option<bool>,
    ip_whitelist: Option<Vec<String>>,
    oauth_domains: Option<Vec<String>>,
    verified: Option<bool>,
    token_daily_limit: Option<u64>,
    push_url: Option<String>,
    push_token: Option<String>,
    encoding_aes_key: Option<String>,
    push_mode: Option<PushMode>,
    restricted: Option<bool>,
}

async fn account_patch(
    State(sim): State<Arc<Sim>>,
    Path(appid): Path<String>,
    body: std::result::Result<Json<AccountPatch>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(p) = body?;
    let mut st = sim.lock();
    let mut account = st
        .account(&appid)
        .cloned()
        .ok_or_else(|| ControlError::not_found(format!("no account with appid {appid:?}")))?;
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = p.$f { account.$f = v; } )* };
    }
    set!(
        secret,
        secret_frozen,
        ip_whitelist,
        oauth_domains,
        verified,
        token_daily_limit,
        push_mode,
        restricted
    );
    if let Some(v) = p.push_url {
        account.push_url = Some(v);
    }
    if let Some(v) = p.push_token {
        account.push_token = Some(v);
    }
    if let Some(v) = p.encoding_aes_key {
        account.encoding_aes_key = Some(v);
    }
    // Reuse the world's validation so a patch cannot make an account the
    // world file could not describe.
    let mut probe = st.world.clone();
    probe.accounts = vec![account.clone()];
    probe.people.clear();
    probe
        .validate()
        .map_err(|e| ControlError::bad_request(e.to_string().replace("accounts[0].", "")))?;
    if let Some(app) = st.apps.get_mut(&appid) {
        app.account = account;
    }
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
struct OpenIdQuery {
    appid: String,
    person: String,
    #[serde(default)]
    snapshot: bool,
}

async fn openid(State(sim): State<Arc<Sim>>, Query(q): Query<OpenIdQuery>) -> Result<Json<Value>> {
    let st = sim.lock();
    if st.account(&q.appid).is_none() {
        return Err(ControlError::not_found(format!(
            "no account with appid {:?}",
            q.appid
        )));
    }
    if !st.people.contains_key(&q.person) {
        return Err(ControlError::not_found(format!(
            "no person with id {:?}",
            q.person
        )));
    }
    Ok(Json(
        json!({"openid": crate::ids::openid(&q.appid, &q.person, q.snapshot)}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentBody {
    consent: Consent,
}

async fn person_consent(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: std::result::Result<Json<ConsentBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(c) = body?;
    let mut st = sim.lock();
    let person = st
        .people
        .get_mut(&id)
        .ok_or_else(|| ControlError::not_found(format!("no person with id {id:?}")))?;
    person.consent = c.consent;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    appid: String,
    /// subscribe_scene, e.g. ADD_SCENE_QR_CODE.
    scene: Option<String>,
    /// A parametric QR code's scene: adds `EventKey qrscene_…` and a Ticket.
    qr_scene: Option<String>,
    /// Text message content.
    content: Option<String>,
    /// Wait for the delivery to finish and return it.
    #[serde(default)]
    wait: bool,
}

async fn start_delivery(sim: Arc<Sim>, id: String, wait: bool) -> Value {
    if wait {
        let d = push::deliver(sim, id.clone()).await;
        json!({"delivery_id": id, "delivery": d})
    } else {
        tokio::spawn(push::deliver(sim, id.clone()));
        json!({"delivery_id": id})
    }
}

fn original_id(sim: &Sim, appid: &str) -> String {
    sim.lock()
        .account(appid)
        .map(|a| a.original_id.clone())
        .unwrap_or_default()
}

async fn person_follow(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: std::result::Result<Json<ActionBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    let now = sim.clock.now();
    let (openid, changed) = sim
        .lock()
        .follow(
            &b.appid,
            &id,
            b.scene.as_deref(),
            b.qr_scene.as_deref(),
            now,
        )
        .map_err(ControlError::not_found)?;
    let extra = match &b.qr_scene {
        Some(q) => format!(
            "<EventKey>{}</EventKey><Ticket>{}</Ticket>",
            push::cdata(&format!("qrscene_{q}")),
            push::cdata(&crate::ids::ticket())
        ),
        None => String::new(),
    };
    // Following again through a QR code is a SCAN event (§8.2); following
    // again otherwise changes nothing and pushes nothing.
    let event = match (changed, &b.qr_scene) {
        (true, _) => "subscribe",
        (false, Some(_)) => "SCAN",
        (false, None) => return Ok(Json(json!({"openid": openid, "changed": false}))),
    };
    let extra = if event == "SCAN" {
        extra.replace("qrscene_", "")
    } else {
        extra
    };
    sim.lock().next_msg_id(&b.appid);
    let xml = push::event_xml(&original_id(&sim, &b.appid), &openid, now, event, &extra);
    let did = push::enqueue(&sim, &b.appid, &openid, &format!("event:{event}"), xml);
    let mut v = start_delivery(sim, did, b.wait).await;
    v["openid"] = json!(openid);
    v["changed"] = json!(changed);
    Ok(Json(v))
}

async fn person_unfollow(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: std::result::Result<Json<ActionBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    let now = sim.clock.now();
    let (openid, changed) = sim
        .lock()
        .unfollow(&b.appid, &id)
        .map_err(ControlError::not_found)?;
    if !changed {
        return Ok(Json(json!({"openid": openid, "changed": false})));
    }
    sim.lock().next_msg_id(&b.appid);
    let xml = push::event_xml(
        &original_id(&sim, &b.appid),
        &openid,
        now,
        "unsubscribe",
        "",
    );
    let did = push::enqueue(&sim, &b.appid, &openid, "event:unsubscribe", xml);
    let mut v = start_delivery(sim, did, b.wait).await;
    v["openid"] = json!(openid);
    v["changed"] = json!(true);
    Ok(Json(v))
}

async fn person_text(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: std::result::Result<Json<ActionBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    let content = b
        .content
        .clone()
        .ok_or_else(|| ControlError::bad_request("content: required for a text message"))?;
    let now = sim.clock.now();
    let openid = {
        let st = sim.lock();
        if !st.people.contains_key(&id) {
            return Err(ControlError::not_found(format!("no person with id {id:?}")));
        }
        if st.account(&b.appid).is_none() {
            return Err(ControlError::not_found(format!(
                "no account with appid {:?}",
                b.appid
            )));
        }
        if !st.follows(&b.appid, &id) {
            return Err(ControlError::bad_request(format!(
                "{id} does not follow {}: only followers can message an account",
                b.appid
            )));
        }
        crate::ids::openid(&b.appid, &id, false)
    };
    let msg_id = sim.lock().next_msg_id(&b.appid);
    let xml = push::text_xml(&original_id(&sim, &b.appid), &openid, now, &content, msg_id);
    let did = push::enqueue(&sim, &b.appid, &openid, "text", xml);
    let mut v = start_delivery(sim, did, b.wait).await;
    v["openid"] = json!(openid);
    v["msg_id"] = json!(msg_id.to_string());
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    appid: String,
}

async fn push_verify(
    State(sim): State<Arc<Sim>>,
    body: std::result::Result<Json<VerifyBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    push::verify(&sim, &b.appid)
        .await
        .map(Json)
        .map_err(ControlError::bad_request)
}

#[derive(Deserialize)]
struct LogQuery {
    appid: Option<String>,
}

async fn push_log(State(sim): State<Arc<Sim>>, Query(q): Query<LogQuery>) -> Json<Value> {
    let log = sim.deliveries.lock().unwrap_or_else(|e| e.into_inner());
    let items: Vec<&push::Delivery> = log
        .iter()
        .filter(|d| q.appid.as_deref().is_none_or(|a| a == d.appid))
        .collect();
    Json(json!({ "deliveries": items }))
}

async fn push_delivery(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Result<Json<Value>> {
    let log = sim.deliveries.lock().unwrap_or_else(|e| e.into_inner());
    log.iter()
        .find(|d| d.id == id)
        .map(|d| Json(json!(d)))
        .ok_or_else(|| ControlError::not_found(format!("no delivery {id:?}")))
}

async fn reset(State(sim): State<Arc<Sim>>) -> Json<Value> {
    sim.reset();
    Json(json!({"ok": true, "now": sim.clock.now()}))
}
