//! Shared mode (`store = "redis"`): several hub processes on a real Redis.

mod basics;
mod cluster;
mod component;
mod console;
mod directory;
mod killed;
mod paused;
mod push;
mod redis_restart;
mod sentinel;

/// The push tests' subscriber, shared with the API tests (which use the
/// rest of it).
#[path = "../api/subscriber.rs"]
#[allow(dead_code)]
mod subscriber;
