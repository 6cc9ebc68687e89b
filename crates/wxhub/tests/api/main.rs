//! Black-box tests of the hub over HTTP on 127.0.0.1, against the simulator,
//! on the simulator's virtual clock. No test sleeps to let time pass.

mod helpers;

mod admin;
mod auth;
mod canary;
mod cli;
mod component;
mod console;
mod directory;
mod faults;
mod hardening;
mod lifecycle;
mod oauth;
mod proxy;
mod push;
mod push_ops;
mod push_support;
mod push_wechatpy;
mod seal;
mod subscriber;
mod tokens;
