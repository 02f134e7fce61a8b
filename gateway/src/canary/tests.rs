use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::engine::{verdict, Verdict};
use super::state::{Action, CanaryState};
use super::window::Window;
use super::*;
use crate::config::CanaryConfig;

fn spec(extra: &str) -> CanarySpec {
    let text = format!(
        r#"
[[routes]]
name = "checkout"
method = "POST"
path = "/orders"
upstream = "orders"
mode = "passthrough"
canary = {{ mode = "async", sticky = "header:X-Customer-Id", interval = "10m", {extra} }}
"#
    );
    #[derive(serde::Deserialize)]
    struct Doc {
        routes: Vec<crate::config::RouteConfig>,
    }
    let doc: Doc = toml::from_str(&text).expect("toml");
    let c: CanaryConfig = doc.routes[0].canary.clone().expect("canary");
    let up = crate::config::UpstreamConfig {
        url: "http://127.0.0.1:1".into(),
        timeout_ms: 1000,
        max_concurrency: 256,
        breaker_failures: 5,
        breaker_open_ms: 5000,
    };
    let arm = Arc::new(crate::routing::Route {
        name: "checkout".into(),
        method: http::Method::POST,
        path: "/orders".into(),
        mode: crate::config::Mode::Async,
        upstream: Arc::new(crate::upstream::Upstream::new("orders", &up).expect("upstream")),
        event: None,
        shadow: None,
        canary: None,
        arm: Some(Arm::Canary),
    });
    CanarySpec::new(&c, arm).expect("valid")
}

fn customer(i: usize) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("x-customer-id", format!("c-{i}").parse().expect("value"));
    h
}

#[test]
fn each_step_sends_its_share_of_10000_customers_to_the_canary() {
    let spec = spec("min_requests = 10");
    for percent in [1.0, 5.0, 25.0, 50.0, 100.0] {
        let n = 10_000;
        let canary = (0..n)
            .filter(|i| {
                choose("checkout", &spec, percent, &customer(*i), None, None).0 == Arm::Canary
            })
            .count();
        let share = canary as f64 / n as f64;
        let p = percent / 100.0;
        // Four standard deviations of a binomial share.
        let tolerance = 4.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-9;
        assert!(
            (share - p).abs() <= tolerance,
            "step {percent}%: share {share} outside {p} ± {tolerance}"
        );
    }
}

#[test]
fn a_customer_stays_in_its_arm_and_stays_in_the_canary_as_it_grows() {
    let spec = spec("min_requests = 10");
    for i in 0..2_000 {
        let h = customer(i);
        let at = |p: f64| choose("checkout", &spec, p, &h, None, None).0;
        let first = at(25.0);
        assert!((0..5).all(|_| at(25.0) == first), "customer {i} moved");
        if at(5.0) == Arm::Canary {
            assert_eq!(at(25.0), Arm::Canary, "customer {i} left the canary at 25%");
            assert_eq!(at(50.0), Arm::Canary);
        }
    }
    // Without the attribute: base, whatever the share.
    let (arm, reason) = choose(
        "checkout",
        &spec,
        100.0,
        &http::HeaderMap::new(),
        None,
        None,
    );
    assert_eq!((arm, reason), (Arm::Base, Reason::NoAttribute));
}

#[test]
fn x_canary_is_honoured_only_from_trusted_sources() {
    let spec = spec(r#"override_from = ["10.0.0.0/8", "::1"]"#);
    let mut h = customer(1);
    h.insert("x-canary", "always".parse().expect("value"));
    let trusted: IpAddr = "10.1.2.3".parse().expect("ip");
    let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
    let stranger: IpAddr = "192.168.1.1".parse().expect("ip");
    assert_eq!(
        choose("checkout", &spec, 0.0, &h, Some(trusted), None).0,
        Arm::Canary
    );
    assert_eq!(
        choose("checkout", &spec, 0.0, &h, Some(mapped), None).0,
        Arm::Canary
    );
    assert_eq!(
        choose("checkout", &spec, 0.0, &h, Some(stranger), None).0,
        Arm::Base
    );
    h.insert("x-canary", "never".parse().expect("value"));
    assert_eq!(
        choose("checkout", &spec, 100.0, &h, Some(trusted), None).0,
        Arm::Base
    );
    assert_eq!(
        choose("checkout", &spec, 100.0, &h, Some(stranger), None).0,
        Arm::Canary
    );
}

#[test]
fn cookies_and_keys_can_be_the_sticky_attribute() {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::COOKIE,
        "a=1; session=abc ; b=2".parse().expect("value"),
    );
    let cookie = Sticky::parse("cookie:session").expect("valid");
    assert_eq!(sticky_value(&cookie, &h, None), Some("abc"));
    assert_eq!(sticky_value(&Sticky::Key, &h, Some("c-9")), Some("c-9"));
    assert!(Sticky::parse("query:x").is_err());
    assert!(Sticky::parse("header:bad header").is_err());
}

#[test]
fn no_verdict_below_min_requests_then_rollback_or_step_up_on_the_figures() {
    let spec = spec("min_requests = 50, max_error_rate = 0.1, max_p99_ms = 200");
    let steps = spec.steps.clone();
    let state = CanaryState::start("checkout", (crate::config::Mode::Async, ""), 1, "r", &steps);
    let mut w = Window::new(Duration::from_secs(60));
    for _ in 0..49 {
        w.record(0, Duration::from_millis(5), true);
    }
    let now = state.since_ms + 3_600_000;
    assert!(matches!(
        verdict(&spec, &state, &w.figures(1), now),
        Verdict::Wait(_)
    ));
    w.record(0, Duration::from_millis(5), true);
    assert!(matches!(
        verdict(&spec, &state, &w.figures(1), now),
        Verdict::Rollback(_)
    ));

    let mut slow = Window::new(Duration::from_secs(60));
    for _ in 0..100 {
        slow.record(0, Duration::from_millis(400), false);
    }
    match verdict(&spec, &state, &slow.figures(1), now) {
        Verdict::Rollback(why) => assert!(why.contains("p99"), "{why}"),
        other => panic!("expected a rollback, got {other:?}"),
    }

    let mut good = Window::new(Duration::from_secs(60));
    for _ in 0..100 {
        good.record(0, Duration::from_millis(3), false);
    }
    assert!(matches!(
        verdict(&spec, &state, &good.figures(1), state.since_ms + 1_000),
        Verdict::Healthy(_)
    ));
    assert!(matches!(
        verdict(&spec, &state, &good.figures(1), now),
        Verdict::StepUp(_)
    ));
    let rolled = state
        .next(Action::Rollback, "r", "x", None, &steps)
        .expect("rollback");
    assert!(matches!(
        verdict(&spec, &rolled, &good.figures(1), now),
        Verdict::Wait(_)
    ));
}

#[test]
fn bad_canary_settings_are_all_reported() {
    let c = CanaryConfig {
        mode: crate::config::Mode::Async,
        upstream: None,
        steps: vec![5.0, 1.0, 150.0],
        interval: "soon".into(),
        window: "10ms".into(),
        sticky: "ip".into(),
        max_error_rate: 2.0,
        max_p99_ms: None,
        max_shadow_diff_rate: Some(-1.0),
        min_requests: 0,
        override_from: vec!["everyone".into()],
        release: String::new(),
    };
    let problems = check(&c);
    assert_eq!(problems.len(), 9, "{problems:#?}");
}
