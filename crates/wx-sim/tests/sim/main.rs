//! Black-box tests of the simulator over HTTP on 127.0.0.1. Time moves only
//! through `/_sim/clock/advance`.

mod helpers;

mod component;
mod control;
mod faults;
mod oauth;
mod push;
mod quotas;
mod stable;
mod tokens;
mod users;
