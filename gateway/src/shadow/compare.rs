//! Comparing two answers: status, chosen headers, and JSON bodies field by
//! field (by JSON pointer), with ignore globs and a numeric tolerance.
//! Non-JSON bodies are compared by bytes.

use serde_json::Value;

/// An answer, buffered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// How to compare.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// JSON pointer globs to ignore (`/items/*/updatedAt`; `*` is one segment).
    pub ignore: Vec<String>,
    /// Headers to compare (lowercase).
    pub headers: Vec<String>,
    /// Numbers closer than this are equal.
    pub tolerance: f64,
}

/// Paths where `a` and `b` differ: `status`, `header:<name>`, a JSON
/// pointer, or `body` for non-JSON bodies.
pub fn diff(a: &Answer, b: &Answer, rules: &Rules) -> Vec<String> {
    let mut out = Vec::new();
    if a.status != b.status {
        out.push("status".to_string());
    }
    for name in &rules.headers {
        let get = |x: &Answer| {
            x.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if get(a) != get(b) {
            out.push(format!("header:{name}"));
        }
    }
    match (
        serde_json::from_slice::<Value>(&a.body),
        serde_json::from_slice::<Value>(&b.body),
    ) {
        (Ok(x), Ok(y)) => json(&x, &y, &mut String::new(), rules, &mut out),
        _ if a.body != b.body => out.push("body".to_string()),
        _ => {}
    }
    out
}

fn ignored(path: &str, rules: &Rules) -> bool {
    rules.ignore.iter().any(|glob| {
        let g: Vec<&str> = glob.split('/').collect();
        let p: Vec<&str> = path.split('/').collect();
        // A glob also covers everything below what it names.
        g.len() <= p.len() && g.iter().zip(&p).all(|(g, p)| *g == "*" || g == p)
    })
}

fn json(a: &Value, b: &Value, path: &mut String, rules: &Rules, out: &mut Vec<String>) {
    if ignored(path, rules) {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => json(v, w, path, rules, out),
                    _ if ignored(path, rules) => {}
                    _ => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                match (x.get(i), y.get(i)) {
                    (Some(v), Some(w)) => json(v, w, path, rules, out),
                    _ if ignored(path, rules) => {}
                    _ => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            if (x - y).abs() > rules.tolerance {
                out.push(if path.is_empty() {
                    "/".into()
                } else {
                    path.clone()
                });
            }
        }
        (x, y) if x != y => out.push(if path.is_empty() {
            "/".into()
        } else {
            path.clone()
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn json_bodies_are_compared_field_by_field_with_rules() {
        let a = answer(
            200,
            r#"{"id":1,"total":10.0,"items":[{"sku":"A","updatedAt":"x"}],"gone":1}"#,
        );
        let b = answer(
            200,
            r#"{"id":1,"total":10.0004,"items":[{"sku":"B","updatedAt":"y"}],"new":2}"#,
        );
        let rules = Rules {
            ignore: vec!["/items/*/updatedAt".into()],
            headers: vec!["content-type".into()],
            tolerance: 0.001,
        };
        assert_eq!(diff(&a, &b, &rules), vec!["/gone", "/items/0/sku", "/new"]);
        let strict = Rules::default();
        assert!(diff(&a, &b, &strict).contains(&"/total".to_string()));
    }

    #[test]
    fn status_headers_and_non_json_bodies() {
        let mut b = answer(201, "plain");
        b.headers[0].1 = "text/plain".into();
        let rules = Rules {
            headers: vec!["content-type".into()],
            ..Rules::default()
        };
        assert_eq!(
            diff(&answer(200, "plain"), &b, &rules),
            vec!["status", "header:content-type"]
        );
        assert_eq!(
            diff(&answer(200, "a"), &answer(200, "b"), &Rules::default()),
            vec!["body"]
        );
    }
}
