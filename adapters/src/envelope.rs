//! Reading a gateway event back off the wire: Confluent framing and the
//! CloudEvents headers.

use gateway::schema::confluent_unframe;

/// The parts of a gateway event a consumer needs before decoding the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope<'a> {
    /// Schema id from the Confluent framing.
    pub schema_id: u32,
    /// The Avro datum.
    pub datum: &'a [u8],
    /// `ce_id`
    pub id: Option<&'a str>,
    /// `ce_type` (schema full name)
    pub event_type: Option<&'a str>,
    /// `ce_source` (route)
    pub source: Option<&'a str>,
}

/// Splits a record into its envelope; `None` if the value is not
/// Confluent-framed.
pub fn envelope<'a>(value: &'a [u8], headers: &'a [(String, String)]) -> Option<EventEnvelope<'a>> {
    let (schema_id, datum) = confluent_unframe(value)?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    Some(EventEnvelope {
        schema_id,
        datum,
        id: header("ce_id"),
        event_type: header("ce_type"),
        source: header("ce_source"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_reads_framing_and_cloudevents_headers() {
        let value = gateway::schema::confluent_frame(42, b"\x02ok");
        let headers = vec![
            ("ce_id".to_string(), "e-1".to_string()),
            ("ce_type".to_string(), "com.shop.OrderCreated".to_string()),
        ];
        let env = envelope(&value, &headers).expect("framed");
        assert_eq!(env.schema_id, 42);
        assert_eq!(env.datum, b"\x02ok");
        assert_eq!(env.id, Some("e-1"));
        assert_eq!(env.event_type, Some("com.shop.OrderCreated"));
        assert_eq!(env.source, None);
        assert!(envelope(b"not framed", &headers).is_none());
    }
}
