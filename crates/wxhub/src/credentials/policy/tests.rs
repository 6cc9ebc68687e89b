//! The lifecycle's rules as tables (docs/lifecycle.md): each row an input
//! and what the policy must answer.

use wx_api::{ErrCode, WxError};

use super::*;
use crate::config::TicketKind;

const T: i64 = 1_700_000_000;
const TOKEN: CredKind = CredKind::AccessToken;
const JSAPI: CredKind = CredKind::Ticket(TicketKind::Jsapi);

fn settings() -> RefreshSettings {
    RefreshSettings::default()
}

fn cred(value: &str, fetched_at: i64, life: i64) -> Cred {
    Cred {
        value: Secret::new(value),
        expires_at: fetched_at + life,
        fetched_at,
        first_seen: fetched_at,
    }
}

fn holding(c: Cred) -> SlotState {
    SlotState {
        current: Some(c),
        ..SlotState::default()
    }
}

fn api_error(code: i64, endpoint: &'static str) -> WxError {
    WxError::Api {
        code: ErrCode::from_i64(code),
        errmsg: format!("error {code}"),
        rid: None,
        endpoint,
    }
}

#[test]
fn refreshes_are_planned_where_the_platform_allows_them() {
    let s = settings();
    let mut margin_1200 = settings();
    margin_1200.classic_margin_secs = 1200;
    // (mode, kind, lifetime, jitter, settings, planned at +seconds)
    let cases = [
        // Classic: 240 s before expiry, minus up to 30 s of jitter.
        (TokenMode::Classic, TOKEN, 7200, Jitter::NONE, &s, 6960),
        (TokenMode::Classic, TOKEN, 7200, Jitter::MOST, &s, 6930),
        // The margin never exceeds half the lifetime: no refresh loop for
        // short-lived tokens; the jitter stays within half the margin.
        (TokenMode::Classic, TOKEN, 100, Jitter::NONE, &s, 50),
        (TokenMode::Classic, TOKEN, 100, Jitter::MOST, &s, 25),
        (
            TokenMode::Classic,
            TOKEN,
            7200,
            Jitter::NONE,
            &margin_1200,
            6000,
        ),
        // Stable: inside the last 300 s, where the platform rotates.
        (TokenMode::Stable, TOKEN, 7200, Jitter::NONE, &s, 6960),
        (TokenMode::Stable, TOKEN, 7200, Jitter::MOST, &s, 6930),
        // Tickets: once expired, up to 5 s later.
        (TokenMode::Stable, JSAPI, 7200, Jitter::NONE, &s, 7200),
        (TokenMode::Classic, JSAPI, 7200, Jitter::MOST, &s, 7205),
    ];
    for (mode, kind, life, j, s, at) in cases {
        let c = cred("v", T, life);
        assert_eq!(
            plan(s, mode, kind, &c, j) - T,
            at,
            "{mode:?} {kind:?} {life} {j:?}"
        );
    }
    // Stable refreshes always land inside the rotation window, however
    // they are spread.
    for step in 0..100 {
        let at = plan(
            &s,
            TokenMode::Stable,
            TOKEN,
            &cred("v", T, 7200),
            Jitter::new(f64::from(step) / 100.0),
        );
        assert!(T + 7200 - at < TOKEN_GRACE && T + 7200 - at >= s.stable_refresh_before_secs);
    }
}

#[test]
fn clients_are_told_when_the_value_dies() {
    let s = settings();
    let mut margin_1200 = settings();
    margin_1200.classic_margin_secs = 1200;
    let c = cred("v", T, 7200);
    // (mode, kind, settings, next fetch at +s, told expires_at +s)
    let cases = [
        // The default 240 s margin lands the refresh in the old token's last
        // 300 s: it lives to its own expiry, which is what clients are told.
        (TokenMode::Classic, TOKEN, &s, 6960, 7200),
        // A larger margin: the old token dies 300 s after that refresh,
        // less a safety margin of 30 s.
        (TokenMode::Classic, TOKEN, &margin_1200, 6000, 6270),
        // A refresh already under way (an owner's fetch in flight).
        (TokenMode::Classic, TOKEN, &s, 100, 370),
        // Stable tokens and tickets live to their own expiry.
        (TokenMode::Stable, TOKEN, &s, 100, 7200),
        (TokenMode::Classic, JSAPI, &s, 100, 7200),
    ];
    for (mode, kind, s, next, told) in cases {
        assert_eq!(
            serve_until(s, mode, kind, &c, T + next) - T,
            told,
            "{mode:?} {kind:?} {next}"
        );
    }
    // Where the next fetch is: our plan alone; the owner's plan or its fetch
    // in flight when shared.
    let mut st = holding(c);
    st.next_refresh_at = T + 6960;
    st.shared.refresh_at = T + 6900;
    assert_eq!(next_fetch(false, &st, T), T + 6960);
    assert_eq!(next_fetch(true, &st, T), T + 6900);
    st.shared.pending_since = Some(T + 10);
    assert_eq!(next_fetch(true, &st, T + 20), T + 10);
    assert_eq!(
        next_fetch(false, &st, T + 7000),
        T + 7000,
        "never in the past"
    );
}

#[test]
fn fetches_are_admitted_once_and_never_in_a_loop() {
    let fresh = holding(cred("v", T, 7200));
    let mut due = holding(cred("v", T, 7200));
    due.next_refresh_at = T + 6960;
    let expired = holding(cred("v", T - 7200, 7200));
    let mut backing_off = SlotState {
        failures: 2,
        next_refresh_at: T + 8,
        ..SlotState::default()
    };
    backing_off.problem = Some(Problem {
        severity: Severity::Unhealthy,
        reason: "upstream failure: x".into(),
        since: T,
    });
    let quota = SlotState {
        blocked_until: T + 3600,
        ..holding(cred("v", T - 100, 7200))
    };
    let paused = SlotState {
        next_refresh_at: T,
        ..quota
    };
    let now = T + 100;
    let cases: Vec<(&str, Cause, &SlotState, Admission)> = vec![
        ("not yet due", Cause::Scheduled, &due, Admission::Skip),
        (
            "a caller with a valid value queued behind a fetch",
            Cause::Missing,
            &fresh,
            Admission::Skip,
        ),
        (
            "a caller with nothing",
            Cause::Missing,
            &expired,
            Admission::Fetch,
        ),
        // An invalidate that arrives after a refresh already replaced the
        // reported value: nothing to do.
        (
            "reported, already replaced",
            Cause::Reported { current: false },
            &fresh,
            Admission::Skip,
        ),
        (
            "reported, still current",
            Cause::Reported { current: true },
            &fresh,
            Admission::Fetch,
        ),
        (
            "doomed, already replaced",
            Cause::Doomed { current: false },
            &fresh,
            Admission::Skip,
        ),
        (
            "callers respect the backoff",
            Cause::Missing,
            &backing_off,
            Admission::Refuse {
                reason: "upstream failure: x".into(),
                retry_after: 8,
            },
        ),
        (
            "the schedule does not wait for itself",
            Cause::Scheduled,
            &backing_off,
            Admission::Fetch,
        ),
        (
            "a quota pause holds everyone",
            Cause::Scheduled,
            &paused,
            Admission::Refuse {
                reason: "fetching is paused".into(),
                retry_after: 3500,
            },
        ),
    ];
    for (what, cause, st, want) in cases {
        let now = if what == "callers respect the backoff" {
            T
        } else {
            now
        };
        assert_eq!(admit(cause, st, now), want, "{what}");
    }
}

#[test]
fn backoff_grows_to_its_cap_and_quotas_pause_to_the_next_day() {
    let s = settings();
    // (failures so far, earliest and latest gap in seconds)
    let gaps = [
        (0, 2, 2),
        (1, 4, 4),
        (2, 7, 9),
        (3, 13, 19),
        (4, 26, 38),
        (5, 52, 76),
        (6, 103, 153),
        (7, 205, 307),
        (8, 240, 360),
        (30, 240, 360),
    ];
    for (failures, low, high) in gaps {
        let st = SlotState {
            failures,
            ..SlotState::default()
        };
        for (j, want) in [(Jitter::NONE, low), (Jitter::MOST, high)] {
            let f = failed(&s, &st, TOKEN, FailureClass::Transient, "x".into(), T, j);
            assert_eq!(
                f.next_refresh_at - T,
                want,
                "after {failures} failures, {j:?}"
            );
            assert_eq!(f.failures, failures + 1);
            assert_eq!(
                f.problem.severity,
                Severity::Unhealthy,
                "nothing valid held"
            );
        }
    }
    // 45009: paused until 00:00 Beijing time, and the value still served.
    let (class, reason) = classify(&api_error(45009, "/cgi-bin/token"), T);
    let next_day = (crate::clock::beijing_day(T) + 1) * 86400 - 8 * 3600;
    assert_eq!(class, FailureClass::Quota(next_day));
    assert!(reason.contains("45009"), "{reason}");
    let st = holding(cred("v", T - 100, 7200));
    let f = failed(&s, &st, TOKEN, class, reason, T, Jitter::NONE);
    assert_eq!(
        (f.next_refresh_at, f.blocked_until),
        (next_day, Some(next_day))
    );
    assert_eq!(f.problem.severity, Severity::Degraded);
    assert!(
        f.problem
            .reason
            .contains("still serving the current access_token")
    );
    // 45011: the next minute.
    let (class, _) = classify(&api_error(45011, "/cgi-bin/stable_token"), T);
    assert_eq!(class, FailureClass::Quota((T / 60 + 1) * 60));
}

#[test]
fn configuration_errors_retry_slowly_and_name_the_fix() {
    let s = settings();
    // (errcode, endpoint, words the reason must hold)
    let cases = [
        (40013, "/cgi-bin/token", "accounts.appid"),
        (40125, "/cgi-bin/stable_token", "AppSecret is wrong"),
        (40001, "/cgi-bin/token", "AppSecret is wrong"),
        (40243, "/cgi-bin/token", "frozen"),
        (89503, "/cgi-bin/token", "approve"),
    ];
    for (code, endpoint, words) in cases {
        let (class, reason) = classify(&api_error(code, endpoint), T);
        assert_eq!(class, FailureClass::Config, "{code}");
        assert!(reason.contains(words), "{code}: {reason}");
        let st = holding(cred("v", T - 100, 7200));
        let f = failed(&s, &st, TOKEN, class, reason, T, Jitter::MOST);
        assert_eq!(f.next_refresh_at - T, s.config_error_retry_secs, "{code}");
        assert_eq!(f.problem.severity, Severity::Unhealthy, "a person must act");
    }
    // The same reason twice is no news; the first failure's time is kept.
    let st = SlotState {
        problem: Some(Problem {
            severity: Severity::Unhealthy,
            reason: "upstream failure: x".into(),
            since: T - 50,
        }),
        failures: 1,
        ..SlotState::default()
    };
    let f = failed(
        &s,
        &st,
        TOKEN,
        FailureClass::Transient,
        "upstream failure: x".into(),
        T,
        Jitter::NONE,
    );
    assert!(!f.news);
    assert_eq!(f.problem.since, T - 50);
    // A transport failure is transient.
    let e = WxError::Transport {
        kind: wx_api::error::TransportKind::Timeout,
        endpoint: "/cgi-bin/token",
        source: None,
    };
    assert_eq!(classify(&e, T).0, FailureClass::Transient);
}

#[test]
fn fetched_values_keep_their_first_sight() {
    let held = cred("ticket-1", T - 3600, 7200);
    // (kind, held, fetched value, expires_in, first_seen +s, expires_at +s)
    let cases = [
        (JSAPI, Some(&held), "ticket-1", 7200, -3600, 3600),
        (JSAPI, Some(&held), "ticket-2", 7200, 0, 7200),
        (JSAPI, None, "ticket-1", 7200, 0, 7200),
        (TOKEN, Some(&held), "ticket-1", 7200, 0, 7200),
    ];
    for (kind, held, value, expires_in, first, exp) in cases {
        let c = accept(kind, held, Secret::new(value), expires_in, T).expect("accepted");
        assert_eq!(
            (c.first_seen - T, c.expires_at - T, c.fetched_at),
            (first, exp, T),
            "{kind:?} {value}"
        );
    }
    // The platform handing back a ticket past its first-seen lifetime.
    let old = cred("ticket-1", T - 7300, 7200);
    assert!(accept(JSAPI, Some(&old), Secret::new("ticket-1"), 7200, T).is_err());
}

#[test]
fn stored_values_are_adopted_by_write_sequence() {
    let rec = |seq, exp: i64, value: &str| Record {
        value: Secret::new(value),
        expires_at: exp,
        fetched_at: T,
        first_seen: T,
        fence: 2,
        seq,
        refresh_at: T + 6960,
        pending_since: None,
    };
    let mut st = holding(cred("old", T - 100, 7200));
    st.shared.seq = 10;
    let empty = SlotState::default();
    // (state, record, shared, holding the lease, answer)
    let cases = [
        (
            &st,
            rec(11, T + 7200, "new"),
            false,
            false,
            Adoption::Take {
                changed: true,
                schedule: Schedule::Plan,
            },
        ),
        // After a takeover: the new owner's value, the new owner's plan.
        (
            &st,
            rec(11, T + 7200, "new"),
            true,
            false,
            Adoption::Take {
                changed: true,
                schedule: Schedule::FollowOwner(T + 6960),
            },
        ),
        // An owner's own write come back keeps its schedule.
        (
            &st,
            rec(11, T + 7200, "old"),
            true,
            true,
            Adoption::Take {
                changed: false,
                schedule: Schedule::Keep,
            },
        ),
        (
            &st,
            rec(10, T + 7200, "old"),
            true,
            false,
            Adoption::MarksOnly,
        ),
        (
            &st,
            rec(9, T + 7200, "older"),
            true,
            false,
            Adoption::Ignore,
        ),
        (&st, rec(11, T - 1, "dead"), true, false, Adoption::Ignore),
        (
            &empty,
            rec(0, T + 7200, "first"),
            false,
            false,
            Adoption::Take {
                changed: true,
                schedule: Schedule::Plan,
            },
        ),
    ];
    for (i, (st, r, shared, held, want)) in cases.into_iter().enumerate() {
        assert_eq!(adopt(st, &r, T, shared, held), want, "row {i}");
    }
    // A new owner refreshes at once after a classic fetch cut short, and
    // writes back what Redis lacks.
    assert!(refresh_after_takeover(TOKEN, TokenMode::Classic, true));
    assert!(!refresh_after_takeover(TOKEN, TokenMode::Stable, true));
    assert!(!refresh_after_takeover(JSAPI, TokenMode::Classic, true));
    assert!(!refresh_after_takeover(TOKEN, TokenMode::Classic, false));
    assert!(write_back(None, 0));
    assert!(write_back(Some(5), 6));
    assert!(!write_back(Some(6), 6));
}

#[test]
fn forced_refreshes_stop_at_the_platforms_twenty() {
    assert!(forced_left(0));
    assert!(forced_left(19));
    assert!(!forced_left(20));
    assert!(forced_exhausted_reason().contains("20 forced"));
}

#[test]
fn jitter_spreads_uniformly_and_stays_in_range() {
    assert_eq!(Jitter::NONE.of(30), 0);
    assert_eq!(Jitter::MOST.of(30), 30);
    assert_eq!(Jitter::new(0.5).of(9), 5);
    assert_eq!(Jitter::new(7.0).of(3), 3, "clamped");
    assert_eq!(Jitter::MOST.of(0), 0);
    assert_eq!(Jitter::MOST.of(-5), 0);
}

#[test]
fn a_restricted_or_unauthorized_account_is_checked_hourly_not_every_few_minutes() {
    let s = settings();
    for (code, words) in [
        (50002, "restricted"),
        (61023, "authorize the third-party platform again"),
    ] {
        let (class, reason) = classify(
            &api_error(code, "/cgi-bin/component/api_authorizer_token"),
            T,
        );
        assert_eq!(class, FailureClass::Suspended, "{code}");
        assert_eq!(class.label(), "config_error", "a documented result");
        assert!(reason.contains(words), "{code}: {reason}");
        assert!(reason.contains("hourly"), "{code}: {reason}");
        let st = holding(cred("v", T - 8000, 7200));
        let f = failed(&s, &st, TOKEN, class, reason, T, Jitter::MOST);
        assert_eq!(f.next_refresh_at - T, SUSPENDED_RETRY_SECS, "{code}");
        assert_eq!(f.problem.severity, Severity::Unhealthy);
    }
}
