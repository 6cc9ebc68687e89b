//! A component's own pushes to its `event_url` (§2.1, §6.1): the regular
//! verify ticket, and the authorization events.
//!
//! The ticket schedule runs on the virtual clock, which in tests moves only
//! when told; a real-time tick every 50 ms notices an advance promptly, and
//! a jump over several intervals pushes once (the newest ticket), as a
//! platform that had been pushing all along would leave the hub with only
//! its latest ticket mattering.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

use crate::Sim;
use crate::push::{self, DeliveryStatus};

/// How often the pusher looks at the virtual clock, real time.
const TICK: Duration = Duration::from_millis(50);

/// Runs until `shutdown` turns true.
pub(crate) async fn run(sim: Arc<Sim>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let now = sim.clock.now();
        let due = {
            let mut st = sim.lock();
            let interval = st.world.settings.ticket_push_interval;
            st.components.due_pushes(now, interval)
        };
        for component in due {
            tokio::spawn(push_ticket(sim.clone(), component));
        }
    }
}

/// Mints a ticket and pushes it once, no retry (§14). Returns
/// `{"ticket","delivered","status","body"}`; `None` for an unknown component.
pub(crate) async fn push_ticket(sim: Arc<Sim>, component: String) -> Option<Value> {
    let now = sim.clock.now();
    let (ticket, xml) = sim.lock().components.new_ticket(&component, now)?;
    let id = push::enqueue_info(&sim, &component, "component_verify_ticket", xml);
    let d = push::deliver(sim.clone(), id).await;
    let delivered = d
        .as_ref()
        .is_some_and(|d| d.status == DeliveryStatus::Delivered);
    if delivered {
        sim.lock().components.ticket_delivered(&component);
    }
    let last = d.as_ref().and_then(|d| d.attempts.last());
    Some(json!({
        "ticket": ticket,
        "delivered": delivered,
        "status": last.and_then(|a| a.http_status),
        "body": last.and_then(|a| a.reply.clone()),
        "delivery_id": d.as_ref().map(|d| d.id.clone()),
    }))
}

/// Pushes an authorization event with the usual retries; returns once the
/// first attempt is over, with whether it was delivered.
pub(crate) async fn push_event(
    sim: Arc<Sim>,
    component: &str,
    info_type: &str,
    xml: String,
) -> bool {
    let id = push::enqueue_info(&sim, component, info_type, xml);
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(push::deliver_notify(sim, id, Some(tx)));
    match rx.await {
        Ok(first) => first.outcome == "replied",
        // No attempt at all: no event URL, or the URL could not be built.
        Err(_) => {
            let _ = task.await;
            false
        }
    }
}
