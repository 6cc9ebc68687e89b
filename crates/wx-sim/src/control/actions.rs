//! People's actions that push to the account's server beyond following
//! and texting (docs/platform.md §8.2): a menu click, a scan of a parametric
//! QR code by a follower, any other message type, and any other event. Each
//! is recorded in the push log and delivered with the platform's retries.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ControlError, Result, original_id, start_delivery};
use crate::Sim;
use crate::push;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClickBody {
    appid: String,
    /// The menu button's key.
    key: String,
    #[serde(default)]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScanBody {
    appid: String,
    /// The QR code's scene value.
    qr_scene: String,
    #[serde(default)]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnyBody {
    appid: String,
    /// `MsgType` for `/message` (`image`, `location`, …), `Event` for `/event`.
    #[serde(rename = "type")]
    kind: String,
    /// More elements, in order: name → text.
    #[serde(default)]
    fields: BTreeMap<String, String>,
    #[serde(default)]
    wait: bool,
}

/// The openid of a follower of `appid`, or why there is none: only
/// followers click menus, scan as followers or send messages.
fn follower_openid(sim: &Sim, appid: &str, id: &str) -> Result<String> {
    let st = sim.lock();
    if !st.people.contains_key(id) {
        return Err(ControlError::not_found(format!("no person with id {id:?}")));
    }
    if st.account(appid).is_none() {
        return Err(ControlError::not_found(format!(
            "no account with appid {appid:?}"
        )));
    }
    if !st.follows(appid, id) {
        return Err(ControlError::bad_request(format!(
            "{id} does not follow {appid}: only followers can do this"
        )));
    }
    Ok(crate::ids::openid(appid, id, false))
}

fn elements(fields: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    for (k, v) in fields {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ControlError::bad_request(format!(
                "fields: {k:?} is not an element name"
            )));
        }
        out.push_str(&format!("<{k}>{}</{k}>", push::cdata(v)));
    }
    Ok(out)
}

async fn event(
    sim: Arc<Sim>,
    appid: &str,
    openid: String,
    event: &str,
    extra: String,
    wait: bool,
) -> Value {
    let now = sim.clock.now();
    sim.lock().next_msg_id(appid);
    let xml = push::event_xml(&original_id(&sim, appid), &openid, now, event, &extra);
    let did = push::enqueue(&sim, appid, &openid, &format!("event:{event}"), xml);
    let mut v = start_delivery(sim, did, wait).await;
    v["openid"] = json!(openid);
    v
}

/// `POST /_sim/people/{id}/click`: a menu button (`CLICK`, `EventKey`).
pub(super) async fn click(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: std::result::Result<Json<ClickBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    let openid = follower_openid(&sim, &b.appid, &id)?;
    let extra = format!("<EventKey>{}</EventKey>", push::cdata(&b.key));
    Ok(Json(
        event(sim, &b.appid, openid, "CLICK", extra, b.wait).await,
    ))
}

/// `POST /_sim/people/{id}/scan`: a follower scans a parametric QR code
/// (`SCAN`, `EventKey` = the scene without prefix, `Ticket`). A person who
/// does not follow yet follows through it instead: use `/follow` with
/// `qr_scene`.
pub(super) async fn scan(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: std::result::Result<Json<ScanBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    let openid = follower_openid(&sim, &b.appid, &id)?;
    let extra = format!(
        "<EventKey>{}</EventKey><Ticket>{}</Ticket>",
        push::cdata(&b.qr_scene),
        push::cdata(&crate::ids::ticket())
    );
    Ok(Json(
        event(sim, &b.appid, openid, "SCAN", extra, b.wait).await,
    ))
}

/// `POST /_sim/people/{id}/message`: any message type with its elements
/// (`image` with `PicUrl` and `MediaId`, `location`, `link`, or a type the
/// platform may add), with a fresh `MsgId`.
pub(super) async fn message(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: std::result::Result<Json<AnyBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    if b.kind == "event" || b.kind.is_empty() {
        return Err(ControlError::bad_request(
            "type: a message type; events go to /event",
        ));
    }
    let openid = follower_openid(&sim, &b.appid, &id)?;
    let extra = elements(&b.fields)?;
    let now = sim.clock.now();
    let msg_id = sim.lock().next_msg_id(&b.appid);
    let xml = format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{now}</CreateTime><MsgType>{}</MsgType>{extra}<MsgId>{msg_id}</MsgId></xml>",
        push::cdata(&original_id(&sim, &b.appid)),
        push::cdata(&openid),
        push::cdata(&b.kind),
    );
    let did = push::enqueue(&sim, &b.appid, &openid, &b.kind, xml);
    let mut v = start_delivery(sim, did, b.wait).await;
    v["openid"] = json!(openid);
    v["msg_id"] = json!(msg_id.to_string());
    Ok(Json(v))
}

/// `POST /_sim/people/{id}/event`: any event with its elements (`VIEW`,
/// `LOCATION`, or one the platform may add).
pub(super) async fn any_event(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: std::result::Result<Json<AnyBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    if b.kind.is_empty() {
        return Err(ControlError::bad_request("type: the Event value"));
    }
    let openid = follower_openid(&sim, &b.appid, &id)?;
    let extra = elements(&b.fields)?;
    Ok(Json(
        event(sim, &b.appid, openid, &b.kind, extra, b.wait).await,
    ))
}
