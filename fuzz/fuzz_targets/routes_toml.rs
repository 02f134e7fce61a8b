//! routes.toml text → parse → whole-file validation → route table. Any
//! input must give a table or a list of problems, never a panic.
#![no_main]

mod common;

use gateway::config::LoadedConfig;
use gateway::routing::{build, SchemaIds};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = LoadedConfig::parse(text, common::repo_root()) else {
        return;
    };
    if loaded.config.validate().is_empty() {
        let _ = common::runtime().block_on(build(&loaded, &SchemaIds::Local));
    }
});
