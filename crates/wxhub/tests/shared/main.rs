//! Shared mode (`store = "redis"`): several hub processes on a real Redis.

mod basics;
mod cluster;
mod killed;
mod paused;
mod redis_restart;
