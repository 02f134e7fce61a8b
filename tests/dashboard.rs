//! The migration dashboard in a real headless Chromium (Debian's chromium
//! and chromedriver; `.ci/run` installs them): it loads with no external
//! resource, lists the routes, refuses a flip without a token, and flips a
//! mode with one.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use gateway_tests::{config_text, wait_until, TestGateway};
use serde_json::json;
use wiremock::MockServer;

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let child = Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {binary} ({e}): install Debian's chromium and chromium-driver (.ci/run does)")
        });
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    wait_until(Duration::from_secs(20), "chromedriver answers", || async {
        reqwest::get(&status).await.is_ok()
    })
    .await
    .expect("chromedriver up");
    Driver { child, url }
}

#[tokio::test]
async fn the_dashboard_lists_routes_and_flips_a_mode_with_a_token() {
    let legacy = MockServer::start().await;
    let gw = TestGateway::start_with_files(
        &config_text(
            "embedded",
            3000,
            &format!(
                r#"
[upstreams.users]
url = "{legacy}"

[[routes]]
name = "register-user"
method = "POST"
path = "/users"
upstream = "users"
mode = "passthrough"
topic = "users.user-registered"
schema = "com.shop.UserRegistered"
key = "/userId"

[[routes]]
name = "get-user"
method = "GET"
path = "/users/{{id}}"
upstream = "users"
mode = "passthrough"

[admin]
tokens_file = "tokens.toml"
"#,
                legacy = legacy.uri()
            ),
        ),
        &[("tokens.toml", "[tokens]\nops = \"ops-secret\"\n")],
    )
    .await
    .expect("gateway");

    // Self-contained: no resource from anywhere else, and the browser is told so.
    let page = gw
        .http
        .get(format!("{}/dashboard", gw.admin))
        .send()
        .await
        .expect("page");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = page.text().await.expect("html");
    let script = gw
        .http
        .get(format!("{}/dashboard.js", gw.admin))
        .send()
        .await
        .expect("script")
        .text()
        .await
        .expect("js");
    assert!(
        !html.contains("://") && !script.contains("://"),
        "the page names no external URL"
    );

    let driver = driver().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");

    let result = async {
        browser.goto(&format!("{}/dashboard", gw.admin)).await?;
        let row = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(r#"tr[data-route="register-user"]"#))
            .await?;
        let shown = row.find(Locator::Css(".mode")).await?.text().await?;
        assert_eq!(shown, "passthrough");
        let listed = browser
            .find_all(Locator::Css("tbody tr[data-route]"))
            .await?;
        assert_eq!(listed.len(), 2, "every route is listed");

        // Without a token the flip is refused, and says so. (Rows are
        // updated in place, so these elements stay valid across refreshes.)
        let select = row.find(Locator::Css("select")).await?;
        select.select_by_value("dual-write").await?;
        row.find(Locator::Css(r#"button[data-action="flip"]"#))
            .await?
            .click()
            .await?;
        let status = browser.find(Locator::Id("status")).await?;
        wait_until(Duration::from_secs(10), "the refusal is shown", || async {
            status.text().await.is_ok_and(|t| t.starts_with("401"))
        })
        .await
        .expect("refused");
        assert_eq!(
            gw.route_mode("register-user")
                .await
                .expect("routes")
                .as_deref(),
            Some("passthrough")
        );

        // With the token it flips, and the page shows it.
        browser
            .find(Locator::Id("token"))
            .await?
            .send_keys("ops-secret")
            .await?;
        let row = browser
            .find(Locator::Css(r#"tr[data-route="register-user"]"#))
            .await?;
        row.find(Locator::Css("select"))
            .await?
            .select_by_value("dual-write")
            .await?;
        row.find(Locator::Css(r#"button[data-action="flip"]"#))
            .await?
            .click()
            .await?;
        wait_until(
            Duration::from_secs(10),
            "the page shows the new mode",
            || async {
                match browser
                    .find(Locator::Css(r#"tr[data-route="register-user"] .mode"#))
                    .await
                {
                    Ok(e) => e.text().await.is_ok_and(|t| t == "dual-write"),
                    Err(_) => false,
                }
            },
        )
        .await
        .expect("shown");
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    let _ = browser.close().await;
    result.expect("browser steps");
    assert_eq!(
        gw.route_mode("register-user")
            .await
            .expect("routes")
            .as_deref(),
        Some("dual-write")
    );
    let audit: serde_json::Value = gw
        .http
        .get(format!("{}/admin/audit", gw.admin))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    assert_eq!(
        audit["changes"][0]["by"], "ops",
        "the flip is audited under the token's name"
    );
}
