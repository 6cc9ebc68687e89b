//! Control API for components (`/_sim/components/*`) and run-time accounts
//! (`POST /_sim/accounts`). Errors as the rest of the control API.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ALL_FUNCS;
use super::pusher;
use crate::Sim;
use crate::control::{ControlError, Result};
use crate::world::{Account, World};

pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/accounts", post(create_account))
        .route("/_sim/components/{appid}", post(patch_component))
        .route("/_sim/components/{appid}/ticket", post(ticket))
        .route("/_sim/components/{appid}/pusher", post(pusher_switch))
        .route("/_sim/components/{appid}/authorize", post(authorize))
        .route("/_sim/components/{appid}/unauthorize", post(unauthorize))
        .route(
            "/_sim/components/{appid}/authorizers/{authorizer}",
            get(authorizer),
        )
        .route(
            "/_sim/components/{appid}/refresh_token/check",
            post(refresh_check),
        )
}

fn no_component(appid: &str) -> ControlError {
    ControlError::not_found(format!("no component with appid {appid:?}"))
}

/// `POST /_sim/accounts`: an `[[accounts]]` entry as JSON → 201; 409 when
/// the appid is taken (by an account or a component).
async fn create_account(
    State(sim): State<Arc<Sim>>,
    body: std::result::Result<Json<Account>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let Json(account) = body?;
    let mut st = sim.lock();
    // Only this account is validated: re-validating the whole world per
    // call would make a thousand creations quadratic.
    let probe = World {
        clock: Default::default(),
        settings: st.world.settings.clone(),
        quirks: st.world.quirks.clone(),
        accounts: vec![account.clone()],
        people: Vec::new(),
        components: Vec::new(),
    };
    probe
        .validate()
        .map_err(|e| ControlError::bad_request(e.to_string().replace("accounts[0].", "")))?;
    if st.account(&account.appid).is_some() || st.components.contains(&account.appid) {
        return Err(ControlError::conflict(format!(
            "appid {:?} exists",
            account.appid
        )));
    }
    let appid = account.appid.clone();
    st.add_account(account);
    Ok((StatusCode::CREATED, Json(json!({"appid": appid}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentPatch {
    event_url: Option<String>,
    message_url: Option<String>,
}

/// `POST /_sim/components/{appid}` `{"event_url"?, "message_url"?}`: points
/// the platform's pushes somewhere else, as an operator editing the
/// platform's settings does; `wxhub dev` learns the hub's port only after
/// the simulator is up.
async fn patch_component(
    State(sim): State<Arc<Sim>>,
    Path(appid): Path<String>,
    body: std::result::Result<Json<ComponentPatch>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(patch) = body?;
    for (name, url) in [
        ("event_url", &patch.event_url),
        ("message_url", &patch.message_url),
    ] {
        if let Some(u) = url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ControlError::bad_request(format!(
                "{name}: an http or https URL"
            )));
        }
    }
    let mut st = sim.lock();
    let c = st
        .components
        .config_mut(&appid)
        .ok_or_else(|| no_component(&appid))?;
    if let Some(u) = patch.event_url {
        c.event_url = Some(u);
    }
    if let Some(u) = patch.message_url {
        c.message_url = Some(u);
    }
    Ok(Json(
        json!({"appid": appid, "event_url": c.event_url, "message_url": c.message_url}),
    ))
}

/// `POST /_sim/components/{appid}/ticket`: a new ticket pushed now.
async fn ticket(State(sim): State<Arc<Sim>>, Path(appid): Path<String>) -> Result<Json<Value>> {
    pusher::push_ticket(sim, appid.clone())
        .await
        .map(Json)
        .ok_or_else(|| no_component(&appid))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PusherBody {
    running: bool,
}

/// `POST /_sim/components/{appid}/pusher`: stops or restarts the regular pusher.
async fn pusher_switch(
    State(sim): State<Arc<Sim>>,
    Path(appid): Path<String>,
    body: std::result::Result<Json<PusherBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    let now = sim.clock.now();
    let was = sim
        .lock()
        .components
        .set_pusher(&appid, b.running, now)
        .ok_or_else(|| no_component(&appid))?;
    Ok(Json(json!({"running": b.running, "was_running": was})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeBody {
    authorizer_appid: String,
    func_ids: Option<Vec<u32>>,
}

/// `POST /_sim/components/{appid}/authorize`: what an administrator approving
/// on the page does, without a pre-auth code.
async fn authorize(
    State(sim): State<Arc<Sim>>,
    Path(appid): Path<String>,
    body: std::result::Result<Json<AuthorizeBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    let funcs = b.func_ids.unwrap_or_else(|| ALL_FUNCS.to_vec());
    let now = sim.clock.now();
    let approval = {
        let mut st = sim.lock();
        if !st.components.contains(&appid) {
            return Err(no_component(&appid));
        }
        if st.account(&b.authorizer_appid).is_none() {
            return Err(ControlError::not_found(format!(
                "no account with appid {:?}",
                b.authorizer_appid
            )));
        }
        st.approve(&appid, &b.authorizer_appid, &funcs, None, now)
            .map_err(ControlError::bad_request)?
    };
    let delivered = pusher::push_event(sim, &appid, approval.info_type, approval.xml).await;
    Ok(Json(json!({
        "auth_code": approval.code,
        "expires_in": approval.expires_in,
        "info_type": approval.info_type,
        "event_delivered": delivered,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizerBody {
    authorizer_appid: String,
}

/// `POST /_sim/components/{appid}/unauthorize`: the administrator revokes.
async fn unauthorize(
    State(sim): State<Arc<Sim>>,
    Path(appid): Path<String>,
    body: std::result::Result<Json<AuthorizerBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    let now = sim.clock.now();
    let xml = {
        let mut st = sim.lock();
        if !st.components.contains(&appid) {
            return Err(no_component(&appid));
        }
        st.unauthorize(&appid, &b.authorizer_appid, now)
            .map_err(ControlError::bad_request)?
    };
    let delivered = pusher::push_event(sim, &appid, "unauthorized", xml).await;
    Ok(Json(json!({"event_delivered": delivered})))
}

/// `GET /_sim/components/{appid}/authorizers/{authorizer}`.
async fn authorizer(
    State(sim): State<Arc<Sim>>,
    Path((appid, authorizer)): Path<(String, String)>,
) -> Result<Json<Value>> {
    sim.lock()
        .components
        .authorizer_report(&appid, &authorizer)
        .map(Json)
        .ok_or_else(|| no_component(&appid))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    authorizer_appid: String,
    refresh_token: String,
}

/// `POST /_sim/components/{appid}/refresh_token/check`: would it be accepted?
async fn refresh_check(
    State(sim): State<Arc<Sim>>,
    Path(appid): Path<String>,
    body: std::result::Result<Json<CheckBody>, JsonRejection>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    let now = sim.clock.now();
    sim.lock()
        .components
        .refresh_token_valid(&appid, &b.authorizer_appid, &b.refresh_token, now)
        .map(|valid| Json(json!({"valid": valid})))
        .ok_or_else(|| no_component(&appid))
}
