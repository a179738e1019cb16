//! Index-value extraction at write time: turns a resource into the rows of the search index
//! tables, by evaluating every indexed parameter of the resource's type (expressions are
//! compiled once, in the registry) and converting the values by FHIR type.

use crate::fhir::{datetime, text};
use crate::search::fhirpath::{self, reference_parts};
use crate::search::registry::{ParamType, Registry};
use serde_json::{Map, Value};

/// All index rows for one resource.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IndexEntries {
    pub tokens: Vec<TokenEntry>,
    pub strings: Vec<StringEntry>,
    pub dates: Vec<DateEntry>,
    pub quantities: Vec<QuantityEntry>,
    pub references: Vec<ReferenceEntry>,
}

/// token and uri parameters. For reference parameters, `Reference.identifier` is also
/// emitted here under the parameter code suffixed with `:identifier` (for the
/// `:identifier` modifier).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenEntry {
    pub param: String,
    pub system: Option<String>,
    pub code: String,
    /// Normalised (see `fhir::text::normalize`) display / text, for the `:text` modifier.
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StringEntry {
    pub param: String,
    /// `fhir::text::normalize(value)`: for the default (starts-with) and `:contains` matches.
    pub normalized: String,
    /// The value as written: for `:exact`.
    pub exact: String,
}

/// date parameters: the instant range the value covers, epoch milliseconds, both inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DateEntry {
    pub param: String,
    pub low: i64,
    pub high: i64,
}

/// number and quantity parameters (numbers have neither system nor code).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityEntry {
    pub param: String,
    pub value: f64,
    pub system: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReferenceEntry {
    pub param: String,
    /// `Patient` for `Patient/123`, `http://x/fhir/Patient/123` (last two segments).
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// The reference (or canonical) as written.
    pub url: String,
}

// Quantities are compared by their bits, so that entries can be deduplicated by hash.
impl Eq for QuantityEntry {}

impl std::hash::Hash for QuantityEntry {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.param.hash(h);
        self.value.to_bits().hash(h);
        self.system.hash(h);
        self.code.hash(h);
    }
}

/// Tails up to this long are deduplicated by comparison; longer ones (a Group's thousands of
/// members) by hash, which keeps the extraction linear.
const LINEAR_DEDUP: usize = 32;

/// Removes later duplicates among the entries one parameter emitted (those since `start`:
/// a parameter's entries are contiguous), keeping the first of each in order.
fn dedup_tail<T: Eq + std::hash::Hash>(v: &mut Vec<T>, start: usize) {
    let n = v.len() - start;
    if n < 2 {
        return;
    }
    if n <= LINEAR_DEDUP {
        let mut i = start + 1;
        while i < v.len() {
            if v[start..i].contains(&v[i]) {
                v.remove(i);
            } else {
                i += 1;
            }
        }
        return;
    }
    let tail = v.split_off(start);
    let mut seen = std::collections::HashSet::with_capacity(tail.len());
    let keep: Vec<bool> = tail.iter().map(|e| seen.insert(e)).collect();
    drop(seen);
    v.extend(
        tail.into_iter()
            .zip(keep)
            .filter_map(|(e, k)| k.then_some(e)),
    );
}

/// Index of the first entry of the current parameter in each vector.
#[derive(Clone, Copy)]
struct Starts {
    tokens: usize,
    strings: usize,
    dates: usize,
    quantities: usize,
    references: usize,
}

fn get_str<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn norm_opt(s: Option<&str>) -> Option<String> {
    s.map(text::normalize).filter(|n| !n.is_empty())
}

/// Extracts the index rows of `resource` (whose `resourceType` is `resource_type`).
pub fn extract(registry: &Registry, resource_type: &str, resource: &Value) -> IndexEntries {
    let mut out = IndexEntries::default();
    for (param, expr) in registry.indexed(resource_type) {
        let starts = Starts {
            tokens: out.tokens.len(),
            strings: out.strings.len(),
            dates: out.dates.len(),
            quantities: out.quantities.len(),
            references: out.references.len(),
        };
        let code = param.code.as_str();
        for node in fhirpath::evaluate(expr, resource) {
            let ty = node.fhir_type.as_deref();
            match param.kind {
                ParamType::Token => token(code, node.value, ty, &mut out),
                ParamType::Uri => {
                    if let Some(s) = node.value.as_str().filter(|s| !s.is_empty()) {
                        out.tokens.push(TokenEntry {
                            param: code.to_string(),
                            system: None,
                            code: s.to_string(),
                            text: None,
                        });
                    }
                }
                ParamType::String => string(code, node.value, &mut out),
                ParamType::Date => date(code, node.value, ty, &mut out),
                ParamType::Number | ParamType::Quantity => quantity(code, node.value, ty, &mut out),
                ParamType::Reference => reference(code, node.value, &mut out),
                ParamType::Composite | ParamType::Special => {}
            }
        }
        dedup_tail(&mut out.tokens, starts.tokens);
        dedup_tail(&mut out.strings, starts.strings);
        dedup_tail(&mut out.dates, starts.dates);
        dedup_tail(&mut out.quantities, starts.quantities);
        dedup_tail(&mut out.references, starts.references);
    }
    out
}

fn push_token(
    out: &mut IndexEntries,
    param: &str,
    system: Option<&str>,
    code: &str,
    text: Option<String>,
) {
    // A code-less entry carries only text (a CodeableConcept with just `text`), for `:text`.
    if code.is_empty() && text.is_none() {
        return;
    }
    out.tokens.push(TokenEntry {
        param: param.to_string(),
        system: system.filter(|s| !s.is_empty()).map(str::to_string),
        code: code.to_string(),
        text,
    });
}

fn token(param: &str, v: &Value, ty: Option<&str>, out: &mut IndexEntries) {
    match v {
        Value::String(s) => push_token(out, param, None, s, None),
        Value::Bool(b) => push_token(out, param, None, if *b { "true" } else { "false" }, None),
        Value::Number(n) => push_token(out, param, None, &n.to_string(), None),
        Value::Object(m) => {
            let is_cc = ty == Some("CodeableConcept")
                || m.contains_key("coding")
                || (ty.is_none()
                    && m.contains_key("text")
                    && !m.contains_key("code")
                    && !m.contains_key("value"));
            if is_cc {
                let cc_text = get_str(m, "text");
                let mut any_coding = false;
                for coding in m
                    .get("coding")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(c) = coding.as_object()
                        && let Some(code) = get_str(c, "code")
                    {
                        // `:text` matches the concept's text or the coding's display.
                        let both = match (cc_text, get_str(c, "display")) {
                            (Some(t), Some(d)) => Some(format!("{t} {d}")),
                            (t, d) => t.or(d).map(str::to_owned),
                        };
                        let text = norm_opt(both.as_deref());
                        push_token(out, param, get_str(c, "system"), code, text);
                        any_coding = true;
                    }
                }
                if !any_coding && cc_text.is_some() {
                    push_token(out, param, None, "", norm_opt(cc_text));
                }
            } else if let Some(code) = get_str(m, "code") {
                // Coding (also the code of a Quantity).
                let text = norm_opt(get_str(m, "display"));
                push_token(out, param, get_str(m, "system"), code, text);
            } else if let Some(value) = get_str(m, "value") {
                // Identifier (system is a URI) or ContactPoint (system is phone/email/…).
                let text = norm_opt(
                    m.get("type")
                        .and_then(|t| t.get("text"))
                        .and_then(Value::as_str),
                );
                push_token(out, param, get_str(m, "system"), value, text);
            }
        }
        _ => {}
    }
}

/// HumanName and Address parts that string parameters match.
const STRING_PARTS: &[&str] = &[
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
    "text",
];

fn push_string(out: &mut IndexEntries, param: &str, s: &str) {
    if s.trim().is_empty() {
        return;
    }
    out.strings.push(StringEntry {
        param: param.to_string(),
        normalized: text::normalize(s),
        exact: s.to_string(),
    });
}

fn string(param: &str, v: &Value, out: &mut IndexEntries) {
    match v {
        Value::String(s) => push_string(out, param, s),
        Value::Object(m) => {
            for key in STRING_PARTS {
                match m.get(*key) {
                    Some(Value::String(s)) => push_string(out, param, s),
                    Some(Value::Array(items)) => {
                        for s in items.iter().filter_map(Value::as_str) {
                            push_string(out, param, s);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn push_date(out: &mut IndexEntries, param: &str, low: i64, high: i64) {
    out.dates.push(DateEntry {
        param: param.to_string(),
        low,
        high,
    });
}

/// A Period as (low, high); open ends are `i64::MIN`/`i64::MAX`. `None` when it has no
/// bound or a bound that does not parse.
fn period(m: &Map<String, Value>) -> Option<(i64, i64)> {
    let start = m.get("start").and_then(Value::as_str);
    let end = m.get("end").and_then(Value::as_str);
    if start.is_none() && end.is_none() {
        return None;
    }
    let low = match start {
        Some(s) => datetime::parse(s)?.low,
        None => i64::MIN,
    };
    let high = match end {
        Some(s) => datetime::parse(s)?.high,
        None => i64::MAX,
    };
    Some((low, high))
}

fn date(param: &str, v: &Value, ty: Option<&str>, out: &mut IndexEntries) {
    match v {
        Value::String(s) => {
            if let Some(r) = datetime::parse(s) {
                push_date(out, param, r.low, r.high);
            }
        }
        Value::Object(m) => {
            let is_timing =
                ty == Some("Timing") || m.contains_key("event") || m.contains_key("repeat");
            if is_timing {
                for e in m
                    .get("event")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if let Some(r) = datetime::parse(e) {
                        push_date(out, param, r.low, r.high);
                    }
                }
                if let Some(bp) = m
                    .get("repeat")
                    .and_then(|r| r.get("boundsPeriod"))
                    .and_then(Value::as_object)
                    && let Some((low, high)) = period(bp)
                {
                    push_date(out, param, low, high);
                }
            } else if let Some((low, high)) = period(m) {
                push_date(out, param, low, high);
            }
        }
        _ => {}
    }
}

fn push_quantity(
    out: &mut IndexEntries,
    param: &str,
    value: f64,
    system: Option<&str>,
    code: Option<&str>,
) {
    if !value.is_finite() {
        return;
    }
    out.quantities.push(QuantityEntry {
        param: param.to_string(),
        value,
        system: system.map(str::to_string),
        code: code.map(str::to_string),
    });
}

/// A Quantity-like object (Quantity, Age, Duration, SimpleQuantity, Distance, Count, Money).
fn quantity_object(param: &str, m: &Map<String, Value>, out: &mut IndexEntries) {
    let Some(value) = m.get("value").and_then(Value::as_f64) else {
        return;
    };
    if let Some(currency) = get_str(m, "currency") {
        push_quantity(
            out,
            param,
            value,
            Some("urn:iso:std:iso:4217"),
            Some(currency),
        );
    } else {
        let code = get_str(m, "code").or_else(|| get_str(m, "unit"));
        push_quantity(out, param, value, get_str(m, "system"), code);
    }
}

fn quantity(param: &str, v: &Value, ty: Option<&str>, out: &mut IndexEntries) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                push_quantity(out, param, f, None, None);
            }
        }
        Value::Object(m) => {
            if ty == Some("Range") || m.contains_key("low") || m.contains_key("high") {
                for bound in ["low", "high"] {
                    if let Some(q) = m.get(bound).and_then(Value::as_object) {
                        quantity_object(param, q, out);
                    }
                }
            } else {
                quantity_object(param, m, out);
            }
        }
        _ => {}
    }
}

fn push_reference(out: &mut IndexEntries, param: &str, url: &str, target: Option<(&str, &str)>) {
    out.references.push(ReferenceEntry {
        param: param.to_string(),
        target_type: target.map(|(t, _)| t.to_string()),
        target_id: target.map(|(_, id)| id.to_string()),
        url: url.to_string(),
    });
}

fn reference(param: &str, v: &Value, out: &mut IndexEntries) {
    match v {
        // canonical / uri values of reference parameters.
        Value::String(s) if !s.is_empty() => push_reference(out, param, s, None),
        Value::Object(m) => {
            if let Some(r) = get_str(m, "reference") {
                push_reference(out, param, r, reference_parts(r));
            } else if let (Some(rt), Some(id)) = (get_str(m, "resourceType"), get_str(m, "id")) {
                // A resource reached directly (`Bundle.entry[0].resource`).
                let url = format!("{rt}/{id}");
                push_reference(out, param, &url, Some((rt, id)));
            }
            if let Some(ident) = m.get("identifier").and_then(Value::as_object)
                && let Some(value) = get_str(ident, "value")
            {
                let key = format!("{param}:identifier");
                push_token(out, &key, get_str(ident, "system"), value, None);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::OnceLock;

    fn registry() -> &'static Registry {
        static R: OnceLock<Registry> = OnceLock::new();
        R.get_or_init(|| Registry::load_builtin().unwrap())
    }

    fn ex(v: &Value) -> IndexEntries {
        extract(registry(), v["resourceType"].as_str().unwrap(), v)
    }

    fn ms(s: &str) -> (i64, i64) {
        let r = datetime::parse(s).unwrap();
        (r.low, r.high)
    }

    fn tokens<'a>(e: &'a IndexEntries, p: &str) -> Vec<&'a TokenEntry> {
        e.tokens.iter().filter(|t| t.param == p).collect()
    }

    #[test]
    fn a_large_group_indexes_each_member_once_in_order() {
        // 3,000 members, every one listed twice: past LINEAR_DEDUP the tail is deduplicated
        // by hash at the end of the parameter, and the first occurrences keep their order.
        let members: Vec<Value> = (0..6000)
            .map(|i| json!({"entity": {"reference": format!("Patient/p{}", i % 3000)}}))
            .collect();
        let g =
            json!({"resourceType": "Group", "type": "person", "actual": true, "member": members});
        let entries = ex(&g);
        let refs: Vec<&str> = entries
            .references
            .iter()
            .filter(|r| r.param == "member")
            .map(|r| r.target_id.as_deref().unwrap())
            .collect();
        let want: Vec<String> = (0..3000).map(|i| format!("p{i}")).collect();
        assert_eq!(refs, want);
        // and a short tail is still deduplicated as it is pushed
        let two = json!({"resourceType": "Group", "type": "person", "actual": true,
            "member": [{"entity": {"reference": "Patient/a"}}, {"entity": {"reference": "Patient/a"}}]});
        assert_eq!(
            ex(&two)
                .references
                .iter()
                .filter(|r| r.param == "member")
                .count(),
            1
        );
    }

    #[test]
    fn token_shapes() {
        let obs = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-1", "display": "Thing"},
                                {"system": "http://x", "display": "no code"}],
                     "text": "Blood Pressure"},
            "identifier": [{"system": "urn:s", "value": "v1", "type": {"text": "MRN"}}]});
        let e = ex(&obs);
        let code = tokens(&e, "code");
        assert_eq!(code.len(), 1);
        assert_eq!(code[0].system.as_deref(), Some("http://loinc.org"));
        assert_eq!(code[0].code, "1-1");
        assert_eq!(code[0].text.as_deref(), Some("blood pressure thing"));
        assert_eq!(tokens(&e, "status")[0].code, "final");
        // a concept with only text is still findable by :text
        let text_only = json!({"resourceType": "Observation", "status": "final", "code": {"text": "Free note"}});
        let code = tokens(&ex(&text_only), "code")
            .into_iter()
            .cloned()
            .collect::<Vec<_>>();
        assert_eq!(code.len(), 1);
        assert_eq!(
            (code[0].code.as_str(), code[0].text.as_deref()),
            ("", Some("free note"))
        );
        let id = tokens(&e, "identifier");
        assert_eq!(id[0].system.as_deref(), Some("urn:s"));
        assert_eq!(
            (id[0].code.as_str(), id[0].text.as_deref()),
            ("v1", Some("mrn"))
        );

        let p = json!({"resourceType": "Patient", "active": true, "deceasedBoolean": false,
            "telecom": [{"system": "email", "value": "a@b.c"}, {"system": "phone", "value": "1"}]});
        let e = ex(&p);
        assert_eq!(tokens(&e, "active")[0].code, "true");
        assert_eq!(tokens(&e, "deceased")[0].code, "false");
        let email = tokens(&e, "email");
        assert_eq!(email.len(), 1);
        assert_eq!(email[0].system.as_deref(), Some("email"));
        assert_eq!(email[0].code, "a@b.c");
        assert_eq!(tokens(&e, "telecom").len(), 2);
    }

    #[test]
    fn strings_dates_quantities() {
        let p = json!({"resourceType": "Patient",
            "name": [{"family": "Núñez-Smith", "given": ["Ana", "María"], "prefix": ["Dr."]}],
            "address": [{"line": ["1 Main St"], "city": "Springfield", "postalCode": "12345"}],
            "birthDate": "1980-05"});
        let e = ex(&p);
        let fam: Vec<_> = e.strings.iter().filter(|s| s.param == "family").collect();
        assert_eq!(fam.len(), 1);
        assert_eq!(fam[0].normalized, "nunez smith");
        assert_eq!(fam[0].exact, "Núñez-Smith");
        let name: Vec<_> = e
            .strings
            .iter()
            .filter(|s| s.param == "name")
            .map(|s| s.normalized.as_str())
            .collect();
        assert_eq!(name, vec!["nunez smith", "ana", "maria", "dr"]);
        assert!(
            e.strings
                .iter()
                .any(|s| s.param == "address-city" && s.normalized == "springfield")
        );
        assert!(
            e.strings
                .iter()
                .any(|s| s.param == "address" && s.exact == "1 Main St")
        );
        let bd: Vec<_> = e.dates.iter().filter(|d| d.param == "birthdate").collect();
        assert_eq!(
            (bd[0].low, bd[0].high),
            (ms("1980-05-01").0, ms("1980-05-31").1)
        );

        let obs = json!({"resourceType": "Observation",
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
            "effectivePeriod": {"start": "2020-01-01"},
            "component": [{"valueRange": {"low": {"value": 1, "unit": "kg"}, "high": {"value": 2, "unit": "kg"}}}]});
        let e = ex(&obs);
        let vq: Vec<_> = e
            .quantities
            .iter()
            .filter(|q| q.param == "value-quantity")
            .collect();
        assert_eq!(vq.len(), 1);
        assert_eq!(vq[0].value, 120.0);
        assert_eq!(vq[0].code.as_deref(), Some("mm[Hg]"));
        let d: Vec<_> = e.dates.iter().filter(|d| d.param == "date").collect();
        assert_eq!((d[0].low, d[0].high), (ms("2020-01-01").0, i64::MAX));
        let cvq: Vec<_> = e
            .quantities
            .iter()
            .filter(|q| q.param == "component-value-quantity")
            .collect();
        assert!(cvq.is_empty(), "a Range is not a Quantity");

        let claim = json!({"resourceType": "ExplanationOfBenefit",
            "item": [{"servicedDate": "2021-03-04"}, {"servicedPeriod": {"start": "2021-03-01", "end": "2021-03-02"}}],
            "total": [{"amount": {"value": 10.5, "currency": "USD"}}]});
        let e = ex(&claim);
        let sd: Vec<_> = e
            .dates
            .iter()
            .filter(|d| d.param == "service-date")
            .map(|d| (d.low, d.high))
            .collect();
        assert_eq!(
            sd,
            vec![ms("2021-03-04"), (ms("2021-03-01").0, ms("2021-03-02").1)]
        );
        let ssd: Vec<_> = e
            .dates
            .iter()
            .filter(|d| d.param == "service-start-date")
            .map(|d| (d.low, d.high))
            .collect();
        assert_eq!(ssd, vec![ms("2021-03-04"), ms("2021-03-01")]);
    }

    #[test]
    fn references() {
        let obs = json!({"resourceType": "Observation",
            "subject": {"reference": "https://x/fhir/Patient/123/_history/2",
                        "identifier": {"system": "urn:mbi", "value": "M1"}},
            "performer": [{"reference": "urn:uuid:abc"}, {"reference": "#c1"}, {"display": "x"}],
            "basedOn": [{"reference": "ServiceRequest/9"}, {"reference": "ServiceRequest/9"}]});
        let e = ex(&obs);
        let subj: Vec<_> = e
            .references
            .iter()
            .filter(|r| r.param == "subject")
            .collect();
        assert_eq!(subj.len(), 1);
        assert_eq!(subj[0].target_type.as_deref(), Some("Patient"));
        assert_eq!(subj[0].target_id.as_deref(), Some("123"));
        assert_eq!(subj[0].url, "https://x/fhir/Patient/123/_history/2");
        assert!(
            e.references
                .iter()
                .any(|r| r.param == "patient" && r.target_id.as_deref() == Some("123"))
        );
        let ident = tokens(&e, "subject:identifier");
        assert_eq!(ident.len(), 1);
        assert_eq!(
            (ident[0].system.as_deref(), ident[0].code.as_str()),
            (Some("urn:mbi"), "M1")
        );
        let perf: Vec<_> = e
            .references
            .iter()
            .filter(|r| r.param == "performer")
            .collect();
        assert_eq!(perf.len(), 2);
        assert!(
            perf.iter()
                .all(|r| r.target_type.is_none() && r.target_id.is_none())
        );
        // Duplicates collapse.
        assert_eq!(
            e.references
                .iter()
                .filter(|r| r.param == "based-on")
                .count(),
            1
        );

        let q =
            json!({"resourceType": "Questionnaire", "derivedFrom": ["http://x/Questionnaire/q|1"]});
        let e = ex(&q);
        let d: Vec<_> = e
            .references
            .iter()
            .filter(|r| r.param == "derived-from")
            .collect();
        assert_eq!(
            d.len(),
            0,
            "Questionnaire has no derived-from parameter in R4"
        );
        let pd = json!({"resourceType": "PlanDefinition", "relatedArtifact": [
            {"type": "derived-from", "resource": "http://x/Library/l"}]});
        let e = ex(&pd);
        let d: Vec<_> = e
            .references
            .iter()
            .filter(|r| r.param == "derived-from")
            .collect();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].url.as_str(), d[0].target_type.as_deref()),
            ("http://x/Library/l", None)
        );
    }

    #[test]
    fn never_panics() {
        let odd = [
            json!({"resourceType": "Patient", "name": 5, "birthDate": "not a date",
                   "telecom": [null, {"system": 1}], "identifier": {"value": ""},
                   "deceasedDateTime": "1999", "link": [{"other": "Patient/1"}]}),
            json!({"resourceType": "Observation", "valueQuantity": {"value": "x"},
                   "effectiveTiming": {"event": [1, "2020"], "repeat": {"boundsPeriod": 3}},
                   "subject": [[{"reference": 7}]]}),
            json!({"resourceType": "ExplanationOfBenefit", "billablePeriod": {"start": "junk"}}),
        ];
        for v in &odd {
            let _ = ex(v);
        }
        for t in registry().resource_types() {
            let _ = extract(
                registry(),
                t,
                &json!({"resourceType": t, "id": 1, "meta": []}),
            );
            let _ = extract(registry(), t, &json!([]));
            let _ = extract(registry(), t, &json!(null));
        }
        let e = ex(&odd[0]);
        assert!(e.dates.iter().any(|d| d.param == "death-date"));
        assert!(!e.dates.iter().any(|d| d.param == "birthdate"));
    }
}

/// Extraction over real IG example resources (copied into `tests/fixtures/search/`), with
/// expected entries computed by hand.
#[cfg(test)]
mod fixture_tests {
    use super::*;
    use std::sync::OnceLock;

    fn registry() -> &'static Registry {
        static R: OnceLock<Registry> = OnceLock::new();
        R.get_or_init(|| Registry::load_builtin().unwrap())
    }

    fn load(text: &str) -> IndexEntries {
        let v: Value = serde_json::from_str(text).unwrap();
        extract(registry(), v["resourceType"].as_str().unwrap(), &v)
    }

    fn token(param: &str, system: Option<&str>, code: &str, text: Option<&str>) -> TokenEntry {
        TokenEntry {
            param: param.into(),
            system: system.map(Into::into),
            code: code.into(),
            text: text.map(Into::into),
        }
    }

    fn reference(param: &str, url: &str, t: Option<(&str, &str)>) -> ReferenceEntry {
        ReferenceEntry {
            param: param.into(),
            target_type: t.map(|t| t.0.into()),
            target_id: t.map(|t| t.1.into()),
            url: url.into(),
        }
    }

    fn date(param: &str, low: i64, high: i64) -> DateEntry {
        DateEntry {
            param: param.into(),
            low,
            high,
        }
    }

    #[test]
    fn coverage_full() {
        let e = load(include_str!(
            "../../tests/fixtures/search/Coverage-full.json"
        ));
        assert!(
            e.tokens
                .contains(&token("subscriber-id", None, "97531", None))
        );
        assert!(e.tokens.contains(&token(
            "identifier",
            Some("http://example.org/new-payer/identifiers/coverage"),
            "234567",
            None
        )));
        assert!(e.tokens.contains(&token(
            "type",
            Some("https://nahdo.org/sopt"),
            "2",
            Some("medicaid")
        )));
        assert!(e.tokens.contains(&token("status", None, "active", None)));
        assert!(e.tokens.contains(&token(
            "_profile",
            None,
            "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/hrex-coverage",
            None
        )));
        let pat = "http://example.org/new-payer/fhir/Patient/pat1";
        assert!(
            e.references
                .contains(&reference("patient", pat, Some(("Patient", "pat1"))))
        );
        assert!(
            e.references
                .contains(&reference("beneficiary", pat, Some(("Patient", "pat1"))))
        );
        assert!(e.references.contains(&reference(
            "payor",
            "Organization/full",
            Some(("Organization", "full"))
        )));
        // No subscriber element: `subscriberId` must not leak into the subscriber reference.
        assert!(!e.references.iter().any(|r| r.param == "subscriber"));
        assert!(e.strings.is_empty());
    }

    #[test]
    fn explanation_of_benefit_prior_auth() {
        let e = load(include_str!(
            "../../tests/fixtures/search/ExplanationOfBenefit-PDexPriorAuth1.json"
        ));
        // billablePeriod 2021-10-01 .. 2021-10-31, whole days, UTC.
        let period = date("service-date", 1_633_046_400_000, 1_635_724_799_999);
        let service: Vec<_> = e
            .dates
            .iter()
            .filter(|d| d.param == "service-date")
            .collect();
        assert_eq!(service, vec![&period]);
        assert!(e.dates.contains(&date(
            "billable-period-start",
            1_633_046_400_000,
            1_633_132_799_999
        )));
        // created 2021-09-20T00:00:00+00:00: one second.
        assert!(
            e.dates
                .contains(&date("created", 1_632_096_000_000, 1_632_096_000_999))
        );
        assert!(
            e.references
                .contains(&reference("patient", "Patient/1", Some(("Patient", "1"))))
        );
        assert!(e.references.contains(&reference(
            "insurer",
            "Organization/Payer1",
            Some(("Organization", "Payer1"))
        )));
        assert!(e.references.contains(&reference(
            "provider",
            "Organization/Payer2",
            Some(("Organization", "Payer2"))
        )));
        assert!(e.tokens.contains(&token(
            "type",
            Some("http://terminology.hl7.org/CodeSystem/claim-type"),
            "institutional",
            Some("institutional")
        )));
        assert!(
            e.tokens
                .contains(&token("use", None, "preauthorization", None))
        );
        assert!(e.tokens.contains(&token(
            "identifier",
            Some("https://www.exampleplan.com/fhir/EOBIdentifier"),
            "PA123412341234123412341234",
            None
        )));
    }

    #[test]
    fn patient_1() {
        let e = load(include_str!("../../tests/fixtures/search/Patient-1.json"));
        let family: Vec<_> = e.strings.iter().filter(|s| s.param == "family").collect();
        assert_eq!(family.len(), 1);
        assert_eq!(family[0].normalized, "appleseed");
        assert_eq!(family[0].exact, "Appleseed");
        let given: Vec<_> = e.strings.iter().filter(|s| s.param == "given").collect();
        assert_eq!(given[0].normalized, "johnny");
        // birthDate 1986-01-01: the whole day.
        assert!(
            e.dates
                .contains(&date("birthdate", 504_921_600_000, 505_007_999_999))
        );
        assert!(e.tokens.contains(&token("gender", None, "male", None)));
        assert!(
            e.tokens
                .contains(&token("phone", Some("phone"), "(443)555-1212", None))
        );
        assert_eq!(
            e.tokens.iter().filter(|t| t.param == "identifier").count(),
            4
        );
        assert!(e.tokens.contains(&token("deceased", None, "false", None)));
        assert!(
            e.strings
                .iter()
                .any(|s| s.param == "address-city" && s.normalized == "pittsburgh")
        );
        assert!(
            e.strings
                .iter()
                .any(|s| s.param == "address-postalcode" && s.exact == "12519")
        );
        assert!(
            e.strings
                .iter()
                .any(|s| s.param == "address" && s.normalized == "123 main street")
        );
    }

    #[test]
    fn provenance_1000001() {
        let e = load(include_str!(
            "../../tests/fixtures/search/Provenance-1000001.json"
        ));
        assert!(e.references.contains(&reference(
            "target",
            "Bundle/2000002",
            Some(("Bundle", "2000002"))
        )));
        // The target is a Bundle, so `patient` (target.where(resolve() is Patient)) is empty.
        assert!(!e.references.iter().any(|r| r.param == "patient"));
        assert!(e.references.contains(&reference(
            "agent",
            "Organization/Payer1",
            Some(("Organization", "Payer1"))
        )));
        assert!(e.tokens.contains(&token(
            "agent-type",
            Some("http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type"),
            "transmitter",
            Some("transmitter")
        )));
        // recorded 2020-07-09T15:26:23.217+00:00: one millisecond.
        assert!(
            e.dates
                .contains(&date("recorded", 1_594_308_383_217, 1_594_308_383_217))
        );
        // entity.what has only a display: nothing to index.
        assert!(!e.references.iter().any(|r| r.param == "entity"));
    }
}
