//! Resource JSON handling that keeps the bytes we were given: a resource is split into its
//! top-level members as raw JSON (so nested decimals such as `1.50` keep their precision),
//! `id` and `meta` are set, and it is written back. Nothing below the top level is re-encoded.

use indexmap::IndexMap;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A resource as its top-level members, each kept as raw JSON text.
pub struct RawResource {
    members: IndexMap<String, Box<RawValue>>,
}

impl RawResource {
    /// Parses the top level of a JSON object.
    pub fn parse(text: &str) -> Result<RawResource, String> {
        let members: IndexMap<String, Box<RawValue>> =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        Ok(RawResource { members })
    }

    /// The `resourceType` member when it is a string.
    pub fn resource_type(&self) -> Option<String> {
        self.string_member("resourceType")
    }

    pub fn id(&self) -> Option<String> {
        self.string_member("id")
    }

    fn string_member(&self, name: &str) -> Option<String> {
        let raw = self.members.get(name)?;
        serde_json::from_str::<String>(raw.get()).ok()
    }

    /// Sets `id`, `meta.versionId` and `meta.lastUpdated`, keeping every other member and
    /// every other `meta` element as given. `id` and `meta` follow `resourceType`.
    pub fn set_identity(&mut self, id: &str, version: i64, last_updated: &str) {
        let mut meta: Map<String, Value> = self
            .members
            .get("meta")
            .and_then(|m| serde_json::from_str(m.get()).ok())
            .unwrap_or_default();
        meta.insert("versionId".into(), Value::String(version.to_string()));
        meta.insert("lastUpdated".into(), Value::String(last_updated.to_owned()));
        let meta = to_raw(&Value::Object(meta));
        let id = to_raw(&Value::String(id.to_owned()));
        let mut members = IndexMap::with_capacity(self.members.len() + 2);
        if let Some(rt) = self.members.shift_remove("resourceType") {
            members.insert("resourceType".to_owned(), rt);
        }
        self.members.shift_remove("id");
        self.members.shift_remove("meta");
        members.insert("id".to_owned(), id);
        members.insert("meta".to_owned(), meta);
        members.extend(self.members.drain(..));
        self.members = members;
    }

    /// Sets `id` (placed after `resourceType`), leaving `meta` alone.
    pub fn set_id(&mut self, id: &str) {
        let raw = to_raw(&Value::String(id.to_owned()));
        if let Some(slot) = self.members.get_mut("id") {
            *slot = raw;
        } else {
            self.members
                .shift_insert(1.min(self.members.len()), "id".to_owned(), raw);
        }
    }

    /// The resource as compact JSON text (nested members byte-for-byte as received).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.members).expect("raw members always serialise")
    }
}

fn to_raw(v: &Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).expect("a serialised Value is valid JSON")
}

/// Replaces whole JSON string literals equal to `from` by `to` (both given unquoted), in
/// raw JSON text: used to rewrite `urn:uuid:` references inside a transaction Bundle.
pub fn replace_string_literal(json: &str, from: &str, to: &str) -> String {
    let quoted_from = serde_json::to_string(from).expect("string");
    let quoted_to = serde_json::to_string(to).expect("string");
    json.replace(&quoted_from, &quoted_to)
}

/// Keeps only the listed top-level elements (plus `resourceType`, `id`, `meta`), and marks
/// the result SUBSETTED, as `_elements` asks.
pub fn select_elements(json: &str, elements: &[String]) -> String {
    let Ok(mut members) = serde_json::from_str::<IndexMap<String, Box<RawValue>>>(json) else {
        return json.to_owned();
    };
    members.retain(|k, _| {
        k == "resourceType" || k == "id" || k == "meta" || elements.iter().any(|e| e == k)
    });
    let mut meta: Map<String, Value> = members
        .get("meta")
        .and_then(|m| serde_json::from_str(m.get()).ok())
        .unwrap_or_default();
    let tags = meta.entry("tag").or_insert_with(|| Value::Array(vec![]));
    if let Value::Array(tags) = tags {
        tags.push(serde_json::json!({
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "SUBSETTED",
            "display": "subsetted"
        }));
    }
    members.insert("meta".into(), to_raw(&Value::Object(meta)));
    serde_json::to_string(&members).unwrap_or_else(|_| json.to_owned())
}

/// Drops `text` (`_summary=data`).
pub fn without_text(json: &str) -> String {
    let Ok(mut members) = serde_json::from_str::<IndexMap<String, Box<RawValue>>>(json) else {
        return json.to_owned();
    };
    members.shift_remove("text");
    serde_json::to_string(&members).unwrap_or_else(|_| json.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_precision() {
        let mut r = RawResource::parse(
            r#"{"resourceType":"Observation","valueQuantity":{"value":1.50,"unit":"mg"},"meta":{"source":"x"}}"#,
        )
        .unwrap();
        r.set_identity("o1", 2, "2024-01-01T00:00:00.000Z");
        let json = r.to_json();
        assert!(json.contains("1.50"), "{json}");
        assert!(
            json.starts_with(
                r#"{"resourceType":"Observation","id":"o1","meta":{"source":"x","versionId":"2""#
            ),
            "{json}"
        );
    }

    #[test]
    fn urn_uuid_rewrite_replaces_only_whole_literals() {
        let out = replace_string_literal(
            r#"{"subject":{"reference":"urn:uuid:abc"},"note":"urn:uuid:abcd"}"#,
            "urn:uuid:abc",
            "Patient/1",
        );
        assert_eq!(
            out,
            r#"{"subject":{"reference":"Patient/1"},"note":"urn:uuid:abcd"}"#
        );
    }
}
