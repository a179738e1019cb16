//! Validation of a resource against the FHIR R4 structure, the check every write goes
//! through (`store::prepare`): element names, JSON types, primitive formats, cardinality,
//! required elements, choice types, the codes of required bindings, primitive extensions,
//! and contained / Bundle entry resources recursively.
//!
//! The rules are data, not code: `vendor/fhir-r4/structure.json` (generated from the R4
//! 4.0.1 JSON schema by `vendor/fhir-r4/generate.py`) is embedded in the binary and compiled
//! once, on first use or at start-up ([`init`]), into lookup tables and regexes. Nothing
//! here knows a particular resource.
//!
//! Every problem is reported as an [`Issue`] whose `expression` is the element's FHIRPath
//! (`Patient.name[0].given[1]`, `Observation.valueQuantity.value`).

use super::error::{Issue, IssueType};
use regex::Regex;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::LazyLock;

/// The generated R4 structure data.
static STRUCTURE_JSON: &str = include_str!("../../vendor/fhir-r4/structure.json");

static SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::compile(STRUCTURE_JSON).expect("vendor/fhir-r4/structure.json"));

/// A report is capped: a resource that is wrong everywhere gets this many issues.
const MAX_ISSUES: usize = 100;

/// Compiles the validator now (start-up), so that the first write does not pay for it.
pub fn init() {
    LazyLock::force(&SCHEMA);
}

/// Is `name` a concrete FHIR R4 resource type (R4 resourcelist.html)?
pub fn is_resource_type(name: &str) -> bool {
    SCHEMA.resources.contains_key(name)
}

/// Checks `resource` (a parsed resource, `resourceType` included) against R4. Returns every
/// issue found, errors and warnings (severity `error` / `warning`), errors first; none when
/// the resource is valid. With `lenient` (`Prefer: handling=lenient`), unknown elements are
/// warnings instead of errors.
pub fn validate(resource: &Value, lenient: bool) -> Vec<Issue> {
    let mut w = Walker {
        s: &SCHEMA,
        lenient,
        issues: Vec::new(),
        path: String::with_capacity(64),
    };
    match resource {
        Value::Object(obj) => w.resource(obj, true),
        _ => w.issue(
            IssueType::Structure,
            "a resource must be a JSON object".into(),
        ),
    }
    // errors first: the first issue is the one a one-line report shows
    w.issues.sort_by_key(|i| i.severity != "error");
    w.issues
}

/// What JSON a primitive is written as (R4 json.html#primitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Json {
    String,
    Number,
    Boolean,
}

#[derive(Debug)]
struct Primitive {
    name: String,
    json: Json,
    /// The R4 regex (datatypes.html), anchored.
    pattern: Option<Regex>,
    /// Integer types: the value must be an integer in this range (R4 datatypes.html:
    /// integer is 32 bit; positiveInt 1.., unsignedInt 0..).
    range: Option<(i64, i64)>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Primitive(usize),
    /// Narrative.div (R4 narrative.html: XHTML, a `div` element, in JSON a string).
    Xhtml,
    Complex(usize),
    /// A resource in an element (`contained`, `Bundle.entry.resource`,
    /// `Parameters.parameter.resource`): validated as a resource of its own type.
    Resource,
}

#[derive(Debug)]
struct Element {
    kind: Kind,
    array: bool,
    /// The codes of a required binding (R4 terminologies.html#required).
    codes: Option<HashSet<String>>,
    /// Index of its choice group in the type (R4 formats.html#choice: `value[x]`).
    choice: Option<usize>,
}

#[derive(Debug)]
struct Required {
    /// How the element is named in an issue (`status`, `value[x]`).
    shown: String,
    any_of: Vec<String>,
}

#[derive(Debug)]
struct TypeDef {
    elements: HashMap<String, Element>,
    /// Elements with min 1, each as the names any one of which makes it present: `name` and
    /// `_name`, or for a choice (`value[x]`) every member and its `_` form.
    required: Vec<Required>,
    /// Choice groups: the base name (`value`) of each.
    choices: Vec<String>,
}

#[derive(Debug)]
struct Schema {
    primitives: Vec<Primitive>,
    types: Vec<TypeDef>,
    /// The R4 resource types, to their type.
    resources: HashMap<String, usize>,
    /// `Element` (id, extension): the type of a primitive's `_name`.
    element_type: usize,
}

impl Schema {
    fn compile(text: &str) -> Result<Schema, String> {
        let data: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let prims = data["primitives"].as_object().ok_or("no primitives")?;
        let mut primitives = Vec::new();
        let mut prim_index = HashMap::new();
        for (name, p) in prims {
            let json = match p["json"].as_str() {
                Some("string") => Json::String,
                Some("number") => Json::Number,
                Some("boolean") => Json::Boolean,
                other => return Err(format!("primitive {name}: json {other:?}")),
            };
            let pattern = match p["pattern"].as_str() {
                Some(re) => {
                    Some(Regex::new(&ascii_whitespace(re)).map_err(|e| format!("{name}: {e}"))?)
                }
                None => None,
            };
            let range = match name.as_str() {
                "integer" => Some((i32::MIN as i64, i32::MAX as i64)),
                "positiveInt" => Some((1, i32::MAX as i64)),
                "unsignedInt" => Some((0, i32::MAX as i64)),
                _ => None,
            };
            prim_index.insert(name.clone(), primitives.len());
            primitives.push(Primitive {
                name: name.clone(),
                json,
                pattern,
                range,
            });
        }
        let types_in = data["types"].as_object().ok_or("no types")?;
        let type_index: HashMap<&str, usize> = types_in
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        let mut types = Vec::with_capacity(types_in.len());
        let mut resources = HashMap::new();
        for (i, (name, t)) in types_in.iter().enumerate() {
            if t["resource"].as_bool() == Some(true) {
                resources.insert(name.clone(), i);
            }
            let mut choices = Vec::new();
            let mut choice_of = HashMap::new();
            for (base, members) in t["choices"].as_object().ok_or("no choices")? {
                for m in members.as_array().ok_or("choice members")? {
                    choice_of.insert(m.as_str().unwrap_or_default().to_owned(), choices.len());
                }
                choices.push(base.clone());
            }
            let mut elements = HashMap::new();
            let mut required = Vec::new();
            for (ename, e) in t["elements"].as_object().ok_or("no elements")? {
                let ty = e[0].as_str().ok_or("element type")?;
                let kind = match ty {
                    "xhtml" => Kind::Xhtml,
                    "ResourceList" => Kind::Resource,
                    _ => match prim_index.get(ty) {
                        Some(&p) => Kind::Primitive(p),
                        None => Kind::Complex(
                            *type_index
                                .get(ty)
                                .ok_or_else(|| format!("{name}.{ename}: unknown type {ty}"))?,
                        ),
                    },
                };
                if e[2].as_bool() == Some(true) {
                    required.push(Required {
                        shown: ename.clone(),
                        any_of: vec![ename.clone(), format!("_{ename}")],
                    });
                }
                let codes = e[3].as_array().map(|codes| {
                    codes
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                });
                elements.insert(
                    ename.clone(),
                    Element {
                        kind,
                        array: e[1].as_bool() == Some(true),
                        codes,
                        choice: choice_of.get(ename).copied(),
                    },
                );
            }
            // A choice with min 1 (R4 formats §2.1.0.2): one of its members must be present.
            for base in t["required_choices"].as_array().into_iter().flatten() {
                let base = base.as_str().ok_or("required choice")?;
                let members = t["choices"][base]
                    .as_array()
                    .ok_or_else(|| format!("{name}: required choice {base} has no members"))?;
                let any_of = members
                    .iter()
                    .filter_map(Value::as_str)
                    .flat_map(|m| [m.to_owned(), format!("_{m}")])
                    .collect();
                required.push(Required {
                    shown: format!("{base}[x]"),
                    any_of,
                });
            }
            types.push(TypeDef {
                elements,
                required,
                choices,
            });
        }
        let element_type = *type_index.get("Element").ok_or("no Element type")?;
        Ok(Schema {
            primitives,
            types,
            resources,
            element_type,
        })
    }
}

/// The R4 regexes are written for Java, whose `\s` is ASCII whitespace (`[ \t\n\x0B\f\r]`,
/// the FHIR validator's reading): `[ \r\n\t\S]+` (string) refuses only vertical tab and form
/// feed, not a no-break space. The `regex` crate's `\s` is Unicode, so rewrite `\s` / `\S` as
/// the ASCII class `[[:space:]]` and its negation.
fn ascii_whitespace(re: &str) -> String {
    let mut out = String::with_capacity(re.len() + 16);
    let mut in_class = false;
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('s') if in_class => out.push_str("[:space:]"),
                Some('S') if in_class => out.push_str("[:^space:]"),
                Some('s') => out.push_str("[[:space:]]"),
                Some('S') => out.push_str("[^[:space:]]"),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

struct Walker<'a> {
    s: &'a Schema,
    lenient: bool,
    issues: Vec<Issue>,
    /// The FHIRPath of the element being checked.
    path: String,
}

impl Walker<'_> {
    fn issue(&mut self, code: IssueType, diagnostics: String) {
        self.issue_at(code, diagnostics, "error");
    }

    fn issue_at(&mut self, code: IssueType, diagnostics: String, severity: &'static str) {
        // past the cap, still the first error: lenient warnings must not hide one
        let first_error = severity == "error" && !self.issues.iter().any(|i| i.severity == "error");
        if self.issues.len() < MAX_ISSUES || first_error {
            self.issues.push(Issue {
                severity,
                code,
                diagnostics,
                expression: Some(self.path.clone()),
            });
        }
    }

    /// A resource at `self.path` (empty at the root: the path starts with its type).
    fn resource(&mut self, obj: &Map<String, Value>, root: bool) {
        let rtype = match obj.get("resourceType") {
            Some(Value::String(t)) => t,
            Some(_) => {
                let at = self.path.len();
                self.path.push_str(if root {
                    "resourceType"
                } else {
                    ".resourceType"
                });
                self.issue(IssueType::Structure, "resourceType must be a string".into());
                self.path.truncate(at);
                return;
            }
            None => {
                self.issue(
                    IssueType::Required,
                    "a resource needs a resourceType".into(),
                );
                return;
            }
        };
        // R4 resourcelist.html: only the R4 resource types (not the abstract Resource and
        // DomainResource, nor another vendor's types).
        let Some(&t) = self.s.resources.get(rtype.as_str()) else {
            let at = self.path.len();
            if root {
                self.path.push_str(rtype);
            } else {
                self.path.push_str(".resourceType");
            }
            self.issue(
                IssueType::Structure,
                format!("{rtype:?} is not a FHIR R4 resource type"),
            );
            self.path.truncate(at);
            return;
        };
        let at = self.path.len();
        if root {
            self.path.push_str(rtype);
        }
        self.object(t, obj, true);
        self.path.truncate(at);
    }

    /// An object of complex type `t` at `self.path`.
    fn object(&mut self, t: usize, obj: &Map<String, Value>, is_resource: bool) {
        let td = &self.s.types[t];
        // choice groups already present: (group, member name)
        let mut chosen: Vec<(usize, &str)> = Vec::new();
        for (k, v) in obj {
            if is_resource && k == "resourceType" {
                continue;
            }
            let at = self.path.len();
            // R4 json.html#primitive: `_name` carries the id and extensions of primitive
            // `name` (an object, or an array parallel to `name`'s).
            if let Some(base) = k.strip_prefix('_') {
                self.path.push('.');
                self.path.push_str(base);
                match td.elements.get(base) {
                    Some(e) if matches!(e.kind, Kind::Primitive(_)) => {
                        self.primitive_extension(e, k, v, obj.get(base));
                    }
                    _ => self.unknown(k),
                }
                self.path.truncate(at);
                continue;
            }
            self.path.push('.');
            self.path.push_str(k);
            match td.elements.get(k.as_str()) {
                None => self.unknown(k),
                Some(e) => {
                    if let Some(g) = e.choice {
                        // R4 formats.html#choice: only one of the `[x]` types may be present.
                        if let Some((_, other)) = chosen.iter().find(|(cg, _)| *cg == g) {
                            let other = *other;
                            self.issue(
                                IssueType::Structure,
                                format!(
                                    "{}[x] may have only one type: both {other} and {k} are present",
                                    td.choices[g]
                                ),
                            );
                        } else {
                            chosen.push((g, k));
                        }
                    }
                    self.element(e, k, v, obj);
                }
            }
            self.path.truncate(at);
        }
        // Cardinality min 1 (R4 elementdefinition.html#min); a primitive may be present by
        // its `_name` alone (an extension instead of a value, R4 json.html#primitive).
        for req in &td.required {
            if !req.any_of.iter().any(|n| obj.contains_key(n)) {
                let name = &req.shown;
                let at = self.path.len();
                self.path.push('.');
                self.path.push_str(name);
                self.issue(
                    IssueType::Required,
                    format!("{name} is required (minimum cardinality 1)"),
                );
                self.path.truncate(at);
            }
        }
    }

    /// R4 json.html: "unknown elements" are an error, unless the client asked for lenient
    /// handling (R4 http.html#lenient), then a warning.
    fn unknown(&mut self, name: &str) {
        let lenient = self.lenient;
        self.issue_at(
            IssueType::Structure,
            format!("unknown element {name:?}"),
            if lenient { "warning" } else { "error" },
        );
    }

    /// Element `e` named `name`, value `v`, of object `parent`, at `self.path`.
    fn element(&mut self, e: &Element, name: &str, v: &Value, parent: &Map<String, Value>) {
        match (e.array, v) {
            (true, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let at = self.path.len();
                    let _ = write!(self.path, "[{i}]");
                    if item.is_null() {
                        // R4 json.html#primitive: null only as a placeholder for an item
                        // whose value is in the parallel `_name` array.
                        let placeholder = matches!(e.kind, Kind::Primitive(_))
                            && parent.contains_key(&format!("_{name}"));
                        if !placeholder {
                            self.issue(IssueType::Structure, "null is not allowed here".into());
                        }
                    } else {
                        self.value(e, item);
                    }
                    self.path.truncate(at);
                }
            }
            // R4 json.html: repeating elements are arrays, even with one item.
            (true, _) => self.issue(
                IssueType::Structure,
                format!("{name} repeats: it must be an array"),
            ),
            (false, Value::Array(_)) => self.issue(
                IssueType::Structure,
                format!("{name} has at most one value (maximum cardinality 1): not an array"),
            ),
            (false, _) => self.value(e, v),
        }
    }

    fn value(&mut self, e: &Element, v: &Value) {
        match e.kind {
            Kind::Primitive(p) => {
                if self.primitive(p, v)
                    && let (Some(codes), Value::String(code)) = (&e.codes, v)
                    && !codes.contains(code.as_str())
                {
                    // R4 terminologies.html#required: the code must be from the value set.
                    let mut known: Vec<&str> = codes.iter().map(String::as_str).collect();
                    known.sort_unstable();
                    let shown = if known.len() > 12 {
                        format!("{} … ({} codes)", known[..12].join(", "), known.len())
                    } else {
                        known.join(", ")
                    };
                    self.issue(
                        IssueType::CodeInvalid,
                        format!("{code:?} is not in the required value set ({shown})"),
                    );
                }
            }
            Kind::Xhtml => match v {
                // R4 narrative.html: the narrative is an XHTML `div` element, in JSON a
                // string (json.html#xhtml).
                Value::String(s) if s.trim_start().starts_with("<div") => {}
                Value::String(_) => self.issue(
                    IssueType::Value,
                    "the narrative must be an XHTML <div> element".into(),
                ),
                _ => self.issue(
                    IssueType::Structure,
                    "the narrative div must be a JSON string of XHTML".into(),
                ),
            },
            Kind::Complex(t) => match v {
                Value::Object(obj) => self.object(t, obj, false),
                _ => self.issue(
                    IssueType::Structure,
                    format!("must be a JSON object, not {}", json_kind(v)),
                ),
            },
            Kind::Resource => match v {
                Value::Object(obj) => self.resource(obj, false),
                _ => self.issue(
                    IssueType::Structure,
                    format!("must be a resource (a JSON object), not {}", json_kind(v)),
                ),
            },
        }
    }

    /// A primitive value: its JSON type, then its format. True when it is valid.
    fn primitive(&mut self, p: usize, v: &Value) -> bool {
        let prim = &self.s.primitives[p];
        // R4 json.html#primitive: boolean and the numbers are JSON booleans and numbers,
        // every other primitive a JSON string.
        let ok = match (prim.json, v) {
            (Json::Boolean, Value::Bool(_)) => true,
            (Json::Number, Value::Number(n)) => match prim.range {
                None => true,
                Some((lo, hi)) => match n.as_i64() {
                    Some(i) if (lo..=hi).contains(&i) => true,
                    Some(i) => {
                        let msg = format!("{i} is out of range for {} ({lo}..{hi})", prim.name);
                        self.issue(IssueType::Value, msg);
                        return false;
                    }
                    None => {
                        let msg = format!("{n} is not a valid {} (a whole number)", prim.name);
                        self.issue(IssueType::Value, msg);
                        return false;
                    }
                },
            },
            (Json::String, Value::String(s)) => match &prim.pattern {
                Some(re) if !re.is_match(s) => {
                    let msg = format!("{s:?} is not a valid {}", prim.name);
                    self.issue(IssueType::Value, msg);
                    return false;
                }
                _ => true,
            },
            _ => false,
        };
        if !ok {
            let want = match prim.json {
                Json::Boolean => "a JSON boolean",
                Json::Number => "a JSON number",
                Json::String => "a JSON string",
            };
            let msg = format!("a {} must be {want}, not {}", prim.name, json_kind(v));
            self.issue(IssueType::Structure, msg);
        }
        ok
    }

    /// `_name` of primitive element `e`: an Element (id, extension) or, for a repeating
    /// element, an array of them (or null) parallel to `name`'s.
    fn primitive_extension(&mut self, e: &Element, key: &str, v: &Value, value: Option<&Value>) {
        let element = self.s.element_type;
        match (e.array, v) {
            (true, Value::Array(items)) => {
                if let Some(Value::Array(values)) = value
                    && values.len() != items.len()
                {
                    self.issue(
                        IssueType::Structure,
                        format!(
                            "{key} has {} items and {} has {}: the arrays must be parallel",
                            items.len(),
                            &key[1..],
                            values.len()
                        ),
                    );
                }
                for (i, item) in items.iter().enumerate() {
                    let at = self.path.len();
                    let _ = write!(self.path, "[{i}]");
                    match item {
                        Value::Null => {}
                        Value::Object(obj) => self.object(element, obj, false),
                        _ => self.issue(
                            IssueType::Structure,
                            format!("{key} items must be objects (id, extension) or null"),
                        ),
                    }
                    self.path.truncate(at);
                }
            }
            (true, _) => self.issue(
                IssueType::Structure,
                format!("{key} must be an array, parallel to {}", &key[1..]),
            ),
            (false, Value::Object(obj)) => self.object(element, obj, false),
            (false, _) => self.issue(
                IssueType::Structure,
                format!("{key} must be an object (id, extension)"),
            ),
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::{SCHEMA, is_resource_type, validate};
    use serde_json::{Value, json};

    /// Is `value` a valid `prim` (the JSON type and the R4 regex or range)?
    fn valid(prim: &str, value: Value) -> bool {
        let p = SCHEMA
            .primitives
            .iter()
            .position(|p| p.name == prim)
            .unwrap_or_else(|| panic!("no primitive {prim}"));
        let mut w = super::Walker {
            s: &SCHEMA,
            lenient: false,
            issues: vec![],
            path: String::new(),
        };
        let ok = w.primitive(p, &value);
        assert_eq!(ok, w.issues.is_empty());
        ok
    }

    fn expressions(resource: Value) -> Vec<String> {
        validate(&resource, false)
            .into_iter()
            .filter(|i| i.severity == "error")
            .map(|i| i.expression.unwrap_or_default())
            .collect()
    }

    #[test]
    fn dates() {
        // R4 datatypes.html#date: YYYY, YYYY-MM or YYYY-MM-DD, no time, no zone
        for ok in ["1980", "1980-02", "1980-02-29", "0001", "2024-12-31"] {
            assert!(valid("date", json!(ok)), "{ok}");
        }
        for bad in [
            "not-a-date",
            "1980-13",
            "1980-00",
            "1980-02-32",
            "80-02-01",
            "1980-2-1",
            "1980-02-01T00:00:00Z",
            "0000",
            "1980/02/01",
            "1980-02-01 ",
        ] {
            assert!(!valid("date", json!(bad)), "{bad}");
        }
        assert!(!valid("date", json!(1980)));
    }

    #[test]
    fn date_times_and_instants() {
        // R4 datatypes.html#dateTime: a time needs seconds and a zone
        for ok in [
            "2015",
            "2015-02",
            "2015-02-07",
            "2015-02-07T13:28:17-05:00",
            "2017-01-01T00:00:00.000Z",
            "2017-01-01T00:00:60Z",
            "2017-01-01T00:00:00+14:00",
        ] {
            assert!(valid("dateTime", json!(ok)), "{ok}");
        }
        for bad in [
            "2015-02-07T13:28",
            "2015-02-07T13:28:17",
            "2015-02-07T24:00:00Z",
            "2015-02-07T13:28:17+15:00",
            "2015-02-07 13:28:17Z",
            "yesterday",
        ] {
            assert!(!valid("dateTime", json!(bad)), "{bad}");
        }
        // R4 datatypes.html#instant: always to the second, with a zone
        assert!(valid("instant", json!("2015-02-07T13:28:17.239+02:00")));
        for bad in ["2015-02-07", "2015-02-07T13:28:17", "2015"] {
            assert!(!valid("instant", json!(bad)), "{bad}");
        }
        // R4 datatypes.html#time
        assert!(valid("time", json!("13:28:17")));
        assert!(valid("time", json!("13:28:17.5")));
        for bad in ["13:28", "25:00:00", "13:28:17Z"] {
            assert!(!valid("time", json!(bad)), "{bad}");
        }
    }

    #[test]
    fn identifiers_and_uris() {
        // R4 datatypes.html#id
        assert!(valid("id", json!("a-Z.09")));
        assert!(valid("id", json!("x".repeat(64))));
        assert!(!valid("id", json!("x".repeat(65))));
        assert!(!valid("id", json!("a_b")));
        assert!(!valid("id", json!("a b")));
        // R4 datatypes.html#code: no leading, trailing or double whitespace
        assert!(valid("code", json!("final")));
        assert!(valid("code", json!("a b")));
        for bad in [" a", "a ", "a  b"] {
            assert!(!valid("code", json!(bad)), "{bad:?}");
        }
        // R4 datatypes.html#uri, url, canonical: no whitespace
        for p in ["uri", "url", "canonical"] {
            assert!(valid(p, json!("http://example.org/fhir|1.0")), "{p}");
            assert!(!valid(p, json!("http://example.org/a b")), "{p}");
        }
        // R4 datatypes.html#oid, #uuid
        assert!(valid("oid", json!("urn:oid:2.16.840.1.113883")));
        assert!(!valid("oid", json!("2.16.840")));
        assert!(!valid("oid", json!("urn:oid:3.1")));
        assert!(!valid("oid", json!("urn:oid:1.02")));
        assert!(valid(
            "uuid",
            json!("urn:uuid:c757873d-ec9a-4326-a141-556f43239520")
        ));
        assert!(!valid(
            "uuid",
            json!("urn:uuid:C757873D-EC9A-4326-A141-556F43239520")
        ));
        assert!(!valid(
            "uuid",
            json!("c757873d-ec9a-4326-a141-556f43239520")
        ));
    }

    #[test]
    fn numbers_booleans_strings() {
        // R4 datatypes.html#decimal: a JSON number
        assert!(valid("decimal", json!(12.5)));
        assert!(valid("decimal", json!(-3)));
        assert!(!valid("decimal", json!("12")));
        // R4 datatypes.html#integer: 32 bit, no fraction
        assert!(valid("integer", json!(-2147483648i64)));
        assert!(!valid("integer", json!(2147483648i64)));
        assert!(!valid("integer", json!(1.5)));
        assert!(!valid("integer", json!("1")));
        assert!(valid("positiveInt", json!(1)));
        assert!(!valid("positiveInt", json!(0)));
        assert!(valid("unsignedInt", json!(0)));
        assert!(!valid("unsignedInt", json!(-1)));
        // R4 datatypes.html#boolean: JSON true / false only
        assert!(valid("boolean", json!(true)));
        assert!(!valid("boolean", json!("yes")));
        assert!(!valid("boolean", json!("true")));
        assert!(!valid("boolean", json!(1)));
        // R4 datatypes.html#string: `[ \r\n\t\S]+` read as Java does (ASCII \s)
        assert!(valid("string", json!("Anne\u{a0}Marie\n")));
        assert!(!valid("string", json!("a\u{b}b")));
        assert!(!valid("string", json!(12)));
        assert!(valid("markdown", json!("# Title\n\n*text*")));
        // R4 datatypes.html#base64Binary
        assert!(valid("base64Binary", json!("aGVsbG8=")));
        assert!(valid("base64Binary", json!("aGVs bG8=")));
        assert!(!valid("base64Binary", json!("aGVsbG8")));
        assert!(!valid("base64Binary", json!("a*==")));
    }

    #[test]
    fn resource_types() {
        assert!(is_resource_type("Patient"));
        assert!(is_resource_type("ExplanationOfBenefit"));
        assert!(is_resource_type("VisionPrescription"));
        // abstract, or not FHIR (the schema's vendor's own types)
        for not in [
            "Resource",
            "DomainResource",
            "Bot",
            "Agent",
            "Project",
            "Element",
        ] {
            assert!(!is_resource_type(not), "{not}");
        }
        assert_eq!(SCHEMA.resources.len(), 146);
    }

    #[test]
    fn paths_name_the_element() {
        assert_eq!(
            expressions(json!({"resourceType": "Patient", "birthDate": "not-a-date"})),
            ["Patient.birthDate"]
        );
        assert_eq!(
            expressions(json!({"resourceType": "Patient", "name": [{"given": ["a", 1]}]})),
            ["Patient.name[0].given[1]"]
        );
        assert_eq!(
            expressions(json!({"resourceType": "Observation", "status": "final",
                "code": {"text": "x"}, "valueQuantity": {"value": "12"}})),
            ["Observation.valueQuantity.value"]
        );
        assert_eq!(
            expressions(json!({"resourceType": "Observation", "status": "final"})),
            ["Observation.code"]
        );
        assert_eq!(
            expressions(json!({"resourceType": "Patient", "gender": "sometimes"})),
            ["Patient.gender"]
        );
        assert_eq!(
            expressions(json!({"resourceType": "Patient", "deceasedBoolean": false,
                "deceasedDateTime": "2020"})),
            ["Patient.deceasedDateTime"]
        );
        assert_eq!(
            expressions(json!({"resourceType": "Patient",
                "contained": [{"resourceType": "Bot"}]})),
            ["Patient.contained[0].resourceType"]
        );
        assert_eq!(
            expressions(json!({"resourceType": "Bundle", "type": "collection",
                "entry": [{"resource": {"resourceType": "Patient", "active": "yes"}}]})),
            ["Bundle.entry[0].resource.active"]
        );
        assert_eq!(
            expressions(json!({"resourceType": "Patient",
                "_birthDate": {"extension": [{"valueCode": "unknown"}]}})),
            ["Patient.birthDate.extension[0].url"]
        );
        assert_eq!(
            expressions(json!({"resourceType": "Patient", "meta": {"author": {"reference": "x"}}})),
            ["Patient.meta.author"]
        );
        // valid, with primitive extensions and null placeholders
        assert!(
            validate(
                &json!({"resourceType": "Patient", "id": "p1",
                "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
                "name": [{"given": ["a", null], "_given": [null, {"extension": [
                    {"url": "http://example.org/x", "valueString": "b"}]}]}],
                "_birthDate": {"id": "b"},
                "extension": [{"url": "http://example.org/e", "valueQuantity": {"value": 1.5}}]}),
                false
            )
            .is_empty()
        );
    }

    #[test]
    fn many_warnings_do_not_hide_an_error() {
        let mut r = json!({"resourceType": "Patient"});
        for i in 0..150 {
            r[format!("bogus{i}")] = json!(i);
        }
        r["birthDate"] = json!("not-a-date");
        let issues = validate(&r, true);
        assert_eq!(issues[0].severity, "error");
        assert_eq!(issues[0].expression.as_deref(), Some("Patient.birthDate"));
        assert_eq!(issues.len(), 101);
    }

    #[test]
    fn lenient_makes_unknown_elements_warnings() {
        let r = json!({"resourceType": "Patient", "bogus": 1, "birthDate": "1980"});
        let strict = validate(&r, false);
        assert_eq!(strict.len(), 1);
        assert_eq!(strict[0].severity, "error");
        let lenient = validate(&r, true);
        assert_eq!(lenient.len(), 1);
        assert_eq!(lenient[0].severity, "warning");
        assert_eq!(lenient[0].expression.as_deref(), Some("Patient.bogus"));
    }
}

#[cfg(test)]
mod data {
    use super::validate;
    use std::path::Path;

    /// Every resource in `dir`'s `.ndjson` and `.json` files (a Bundle's entries included,
    /// since the validator walks them): (file:line, issues).
    fn problems(dir: &Path) -> Vec<String> {
        let mut out = vec![];
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            if f.is_dir() {
                out.extend(problems(&f));
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            let docs: Vec<(usize, &str)> = match f.extension().and_then(|e| e.to_str()) {
                Some("ndjson") => text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .collect(),
                Some("json") => vec![(0, text.as_str())],
                _ => continue,
            };
            for (n, doc) in docs {
                let v: serde_json::Value = serde_json::from_str(doc).unwrap();
                if v.get("resourceType").is_none() {
                    continue;
                }
                for i in validate(&v, false) {
                    out.push(format!(
                        "{}:{}: {} {}",
                        f.display(),
                        n + 1,
                        i.expression.unwrap_or_default(),
                        i.diagnostics
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn the_demo_data_and_the_examples_are_valid_r4() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut all = problems(&root.join("fixtures/demo"));
        all.extend(problems(&root.join("examples")));
        assert!(
            all.is_empty(),
            "{} problems:\n{}",
            all.len(),
            all.join("\n")
        );
    }
}
