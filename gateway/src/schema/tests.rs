use super::*;
use serde_json::json;

const ORDER: &str = r#"{
  "type": "record", "name": "OrderCreated", "namespace": "com.shop",
  "fields": [
    {"name": "orderId", "type": "string"},
    {"name": "customerId", "type": "string"},
    {"name": "items", "type": {"type": "array", "items": {
      "type": "record", "name": "LineItem",
      "fields": [
        {"name": "sku", "type": "string"},
        {"name": "quantity", "type": "int"}
      ]}}},
    {"name": "currency", "type": "string", "default": "EUR"},
    {"name": "coupon", "type": ["null", "string"], "default": null},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}, "default": "NEW"},
    {"name": "placedAt", "type": {"type": "long", "logicalType": "timestamp-millis"}, "default": 0}
  ]
}"#;

fn order() -> EventSchema {
    EventSchema::parse(ORDER, "order.avsc").expect("valid schema")
}

fn decode(schema: &EventSchema, bytes: &[u8]) -> apache_avro::types::Value {
    schema.decode(bytes).expect("decodes")
}

#[test]
fn valid_body_round_trips_with_defaults_filled() {
    let s = order();
    let bytes = s
        .encode_json(&json!({
            "orderId": "o-1", "customerId": "c-9",
            "items": [{"sku": "A", "quantity": 2}],
            "coupon": "SPRING",
            "placedAt": "2026-01-02T03:04:05Z"
        }))
        .expect("valid");
    let apache_avro::types::Value::Record(fields) = decode(&s, &bytes) else {
        panic!("not a record");
    };
    let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(
        get("currency"),
        Some(apache_avro::types::Value::String("EUR".into()))
    );
    assert_eq!(
        get("coupon"),
        Some(apache_avro::types::Value::Union(
            1,
            Box::new(apache_avro::types::Value::String("SPRING".into()))
        ))
    );
    assert_eq!(
        get("status"),
        Some(apache_avro::types::Value::Enum(0, "NEW".into()))
    );
    assert_eq!(
        get("placedAt"),
        Some(apache_avro::types::Value::TimestampMillis(
            1_767_323_045_000
        ))
    );
}

#[test]
fn every_offending_field_is_listed_by_pointer() {
    let errors = order()
        .encode_json(&json!({
            "orderId": 5,
            "items": [{"sku": "A", "quantity": "two"}, {"sku": "B", "quantity": 1, "colour": "red"}],
            "status": "LOST"
        }))
        .expect_err("invalid");
    let at = |p: &str| errors.iter().find(|e| e.pointer == p).cloned();
    let order_id = at("/orderId").expect("orderId reported");
    assert_eq!(order_id.expected, "string");
    assert_eq!(order_id.found, "number 5");
    assert_eq!(
        at("/customerId").expect("missing reported").found,
        "missing (required field)"
    );
    assert_eq!(at("/items/0/quantity").expect("quantity").expected, "int");
    assert!(at("/items/1/colour").is_some(), "{errors:#?}");
    assert!(at("/status").expect("enum").expected.contains("NEW"));
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[test]
fn int_out_of_range_is_rejected() {
    let errors = order()
        .encode_json(&json!({
            "orderId": "o", "customerId": "c",
            "items": [{"sku": "A", "quantity": 3_000_000_000_i64}]
        }))
        .expect_err("out of range");
    assert_eq!(errors[0].pointer, "/items/0/quantity");
}

#[test]
fn non_object_body_is_reported_at_root() {
    let errors = order().encode_json(&json!([1, 2])).expect_err("array body");
    assert_eq!(errors[0].pointer, "");
    assert!(errors[0].expected.contains("com.shop.OrderCreated"));
}

#[test]
fn top_level_must_be_a_record() {
    let err = EventSchema::parse(r#""string""#, "x.avsc").expect_err("not a record");
    assert!(err.contains("must be a record"), "{err}");
}

#[test]
fn local_id_is_stable_and_changes_with_the_schema() {
    let a = order().local_id();
    assert_eq!(a, order().local_id());
    let changed = ORDER.replace("\"EUR\"", "\"USD\"");
    let b = EventSchema::parse(&changed, "x.avsc")
        .expect("valid")
        .local_id();
    // Defaults are not part of the canonical form, so the id stays the same.
    assert_eq!(a, b);
    let renamed = ORDER.replace("\"orderId\"", "\"id\"");
    let c = EventSchema::parse(&renamed, "x.avsc")
        .expect("valid")
        .local_id();
    assert_ne!(a, c);
}

#[test]
fn confluent_framing_round_trips() {
    let framed = confluent_frame(0x0102_0304, b"abc");
    assert_eq!(&framed[..5], &[0, 1, 2, 3, 4]);
    assert_eq!(confluent_unframe(&framed), Some((0x0102_0304, &b"abc"[..])));
    assert_eq!(confluent_unframe(b"\x01abcd"), None);
}

#[test]
fn unknown_fields_can_be_ignored_per_policy() {
    let body = json!({
        "orderId": "o", "customerId": "c", "items": [], "debug": true,
    });
    let errors = order().encode_json(&body).expect_err("rejected by default");
    assert_eq!(errors[0].pointer, "/debug");
    let bytes = order().encode_json_with(&body, true).expect("ignored");
    let apache_avro::types::Value::Record(fields) = decode(&order(), &bytes) else {
        panic!("not a record");
    };
    assert!(fields.iter().all(|(k, _)| k != "debug"));
}
