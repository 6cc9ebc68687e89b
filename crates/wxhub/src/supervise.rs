//! The hub's background tasks (refresher, lease loop, subscriber, sweeper),
//! watched. Each runs until shutdown; one that ends or panics before then
//! would leave a hub that answers HTTP but refreshes nothing, so it stops
//! the hub with an error (and the process with a non-zero exit) instead:
//! a supervisor (systemd, Kubernetes) restarts a process that dies, not
//! one that quietly stopped working.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinSet};

/// Background tasks, by name.
#[derive(Debug, Default)]
pub struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

impl Supervisor {
    /// Starts a task that is meant to run until shutdown.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// Waits for the first task to end, and says which and how. Pending
    /// forever while every task runs (or when there are none).
    pub async fn first_end(&mut self) -> String {
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => format!("{} ended", self.name(id)),
            Some(Err(e)) => {
                let name = self.name(e.id());
                if e.is_panic() {
                    format!("{name} panicked: {}", panic_message(e.into_panic()))
                } else {
                    format!("{name} was cancelled")
                }
            }
            None => std::future::pending().await,
        }
    }

    fn name(&self, id: Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("a background task")
    }

    /// After shutdown was signalled: waits (at most `grace`) for the tasks
    /// to finish, then aborts what is left.
    pub async fn stop(mut self, grace: Duration) {
        let drained = tokio::time::timeout(grace, async {
            while let Some(ended) = self.tasks.join_next_with_id().await {
                if let Err(e) = ended
                    && e.is_panic()
                {
                    tracing::error!(
                        task = self.name(e.id()),
                        "background task panicked while stopping"
                    );
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("background tasks did not stop in time; aborting them");
            self.tasks.abort_all();
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_named_with_its_message() {
        let mut s = Supervisor::default();
        s.spawn("sleeper", std::future::pending());
        s.spawn("refresher", async { panic!("slot state poisoned") });
        let end = tokio::time::timeout(Duration::from_secs(5), s.first_end())
            .await
            .expect("noticed at once");
        assert_eq!(end, "refresher panicked: slot state poisoned");
        s.stop(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_task_that_returns_early_is_noticed_too() {
        let mut s = Supervisor::default();
        s.spawn("lease loop", async {});
        assert_eq!(s.first_end().await, "lease loop ended");
    }

    #[tokio::test]
    async fn with_every_task_running_nothing_ends() {
        let mut s = Supervisor::default();
        s.spawn("sweeper", std::future::pending());
        let end = tokio::time::timeout(Duration::from_millis(100), s.first_end()).await;
        assert!(end.is_err(), "{end:?}");
    }
}
