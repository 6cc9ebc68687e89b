//! Hand-over tickets: how a sign-in's result reaches the business server.

use hmac::Mac;
use serde_json::Value;

use super::sha256_hex;
use super::state::HmacSha256;
use crate::app::App;
use crate::error::ApiError;
use crate::store::Redeemed;

/// The hand-over ticket of one callback: derived from the state and the
/// code it came with, so a replayed callback names the same ticket instead
/// of minting another one.
pub(super) fn derive_ticket(key: &[u8], appid: &str, id: &str, code_hash: &str) -> String {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"wxhub-hand-over-ticket\0");
    m.update(appid.as_bytes());
    m.update(b"\0");
    m.update(id.as_bytes());
    m.update(b"\0");
    m.update(code_hash.as_bytes());
    format!("wxt{}", hex::encode(&m.finalize().into_bytes()[..24]))
}

/// Redeems a hand-over ticket for a client allowed to use its account.
///
/// # Errors
/// [`ApiError`]: 404 unknown, used or expired; 403 another account's; 500
/// when the store fails or holds a result that does not read.
pub async fn redeem(
    app: &App,
    allowed: impl Fn(&str) -> bool + Send + 'static,
    ticket: &str,
) -> Result<Value, ApiError> {
    let now = app.clock.now();
    let hash = sha256_hex(ticket);
    let redeemed = app
        .store
        .redeem_ticket_for(&hash, now, allowed)
        .await
        .map_err(|e| ApiError::internal(format_args!("redeeming a ticket: {e}")))?;
    match redeemed {
        // The hub wrote this payload itself: one that does not parse is ours.
        Redeemed::Done(_, payload) => serde_json::from_str(&payload)
            .map_err(|e| ApiError::internal(format_args!("a stored sign-in result: {e}"))),
        Redeemed::Forbidden(appid) => Err(ApiError::forbidden(format!(
            "this client may not use account {appid}"
        ))),
        Redeemed::Missing => Err(ApiError::not_found("unknown, used or expired ticket")),
    }
}
