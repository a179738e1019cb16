//! Bundle builders that splice stored resource JSON into the response text without
//! re-encoding it.

use serde_json::{Value, json};

/// One entry of a Bundle under construction.
pub struct Entry {
    pub full_url: Option<String>,
    /// Raw JSON text of the resource.
    pub resource: Option<String>,
    /// `search`, `request` or `response` members, as JSON values.
    pub extra: Vec<(&'static str, Value)>,
}

/// Writes a Bundle: `head` members (type, total, link, …) then the entries.
pub fn write_bundle(bundle_type: &str, head: Vec<(&str, Value)>, entries: &[Entry]) -> String {
    let mut out = String::with_capacity(
        256 + entries
            .iter()
            .map(|e| e.resource.as_ref().map_or(64, |r| r.len() + 96))
            .sum::<usize>(),
    );
    out.push_str(r#"{"resourceType":"Bundle","id":""#);
    out.push_str(&uuid::Uuid::new_v4().to_string());
    out.push_str(r#"","meta":{"lastUpdated":""#);
    out.push_str(&super::datetime::format_instant(
        chrono::Utc::now().timestamp_millis(),
    ));
    out.push_str(r#""},"type":"#);
    out.push_str(&json!(bundle_type).to_string());
    for (k, v) in head {
        out.push(',');
        out.push_str(&json!(k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    if !entries.is_empty() {
        out.push_str(r#","entry":["#);
        for (i, e) in entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            let mut first = true;
            let mut sep = |out: &mut String| {
                if !first {
                    out.push(',');
                }
                first = false;
            };
            if let Some(u) = &e.full_url {
                sep(&mut out);
                out.push_str(r#""fullUrl":"#);
                out.push_str(&json!(u).to_string());
            }
            if let Some(r) = &e.resource {
                sep(&mut out);
                out.push_str(r#""resource":"#);
                out.push_str(r);
            }
            for (k, v) in &e.extra {
                sep(&mut out);
                out.push_str(&json!(k).to_string());
                out.push(':');
                out.push_str(&v.to_string());
            }
            out.push('}');
        }
        out.push(']');
    }
    out.push('}');
    out
}
