//! Confluent wire format (magic byte, schema id, datum) and Avro decoding of
//! arbitrary bytes, as a consumer of the gateway's topics does: never a
//! panic, never unbounded allocation.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((_id, datum)) = gateway::schema::confluent_unframe(data) {
        for schema in common::catalog().iter() {
            let _ = schema.decode(datum);
        }
    }
});
