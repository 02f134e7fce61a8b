//! JSON body → Avro datum for each of the repo's schemas. Whatever the body,
//! the conversion gives a datum or a list of field errors; a datum it
//! produced must decode again with the same schema.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let schemas: Vec<_> = common::catalog().iter().collect();
    let schema = schemas[usize::from(pick) % schemas.len()];
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    if let Ok(datum) = schema.encode_json(&json) {
        schema
            .decode(&datum)
            .expect("a datum the gateway encoded decodes with its schema");
    }
});
