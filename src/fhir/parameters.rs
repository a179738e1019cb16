//! The one reader of a FHIR `Parameters` body for operations whose inputs are simple values
//! (`$everything`, the Bulk Data and `$davinci-data-export` kick-offs): each top-level
//! `parameter` as a name and its value's text. Operations whose inputs are resources
//! (`$member-match`, `$bulk-member-match`) read their own profiled Parameters.

use super::FhirError;
use serde_json::Value;

/// One `parameter` of a Parameters body: its `name` and the text of its value — a primitive
/// `value[x]` as written (`valueString`, `valueInstant`, `valueCode`, … and numbers and
/// booleans as their JSON text), a `valueReference` as its `reference`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub value: String,
}

/// The parameters of `body`, which must be a `Parameters` resource. A parameter without a
/// name, without a value, or whose value is neither a primitive nor a reference (a
/// `resource`, `part`s, another complex type) is a 400 naming it.
pub fn read(body: &Value) -> Result<Vec<Parameter>, FhirError> {
    if body["resourceType"] != "Parameters" {
        return Err(FhirError::bad_request(
            "the body must be a FHIR Parameters resource",
        ));
    }
    let mut out = Vec::new();
    for p in body["parameter"].as_array().into_iter().flatten() {
        let name = p["name"]
            .as_str()
            .ok_or_else(|| FhirError::bad_request("a parameter has no name"))?;
        let value = p.as_object().and_then(|o| {
            o.iter()
                .filter(|(k, _)| k.starts_with("value"))
                .find_map(|(k, v)| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    Value::Object(_) if k == "valueReference" => {
                        v["reference"].as_str().map(str::to_owned)
                    }
                    _ => None,
                })
        });
        let value = value.ok_or_else(|| {
            FhirError::bad_request(format!(
                "parameter {name} has no value of a supported type (a primitive value[x] or a valueReference)"
            ))
        })?;
        out.push(Parameter {
            name: name.to_owned(),
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn primitives_and_references_are_read_others_refused() {
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "_since", "valueInstant": "2024-01-01T00:00:00Z"},
            {"name": "_count", "valueInteger": 10},
            {"name": "flag", "valueBoolean": true},
            {"name": "patient", "valueReference": {"reference": "Patient/a"}},
        ]});
        let got: Vec<(String, String)> = read(&body)
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.value))
            .collect();
        assert_eq!(
            got,
            [
                ("_since", "2024-01-01T00:00:00Z"),
                ("_count", "10"),
                ("flag", "true"),
                ("patient", "Patient/a")
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        for bad in [
            json!({"resourceType": "Patient"}),
            json!({"resourceType": "Parameters", "parameter": [{"valueString": "x"}]}),
            json!({"resourceType": "Parameters", "parameter": [{"name": "a"}]}),
            json!({"resourceType": "Parameters", "parameter": [{"name": "a", "valueCoding": {"code": "x"}}]}),
            json!({"resourceType": "Parameters", "parameter": [{"name": "a", "resource": {"resourceType": "Patient"}}]}),
        ] {
            assert_eq!(
                read(&bad).unwrap_err().status,
                axum::http::StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}
