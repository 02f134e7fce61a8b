//! Route matching on the example shop's table: any method and path (raw
//! bytes) is matched or not, never a panic.
#![no_main]

mod common;

use std::sync::OnceLock;

use gateway::config::LoadedConfig;
use gateway::routing::{build, SchemaIds};
use gateway::routing::RouteTable;
use libfuzzer_sys::fuzz_target;

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let loaded = LoadedConfig::read(&common::repo_root().join("routes.toml")).expect("routes.toml");
        common::runtime()
            .block_on(build(&loaded, &SchemaIds::Local))
            .unwrap_or_else(|p| panic!("routes.toml builds: {p:?}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, path)) = data.split_first() else {
        return;
    };
    let method = match m % 5 {
        0 => http::Method::GET,
        1 => http::Method::POST,
        2 => http::Method::PUT,
        3 => http::Method::DELETE,
        _ => http::Method::PATCH,
    };
    let path = String::from_utf8_lossy(path);
    if let Some(found) = table().lookup(&method, &path) {
        // A match names a route of the table, with its parameters.
        assert!(table().routes().iter().any(|r| r.name == found.route.name));
    }
});
