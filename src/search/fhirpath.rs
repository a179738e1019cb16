//! A FHIRPath subset: exactly the forms that occur in the search parameter expressions we
//! index: dotted paths (arrays flatten), `|` unions, `.ofType(T)` / `as T` on choice
//! elements, un-suffixed choice elements (`item.serviced` finds `servicedDate` or
//! `servicedPeriod`), `[n]` indexing, `.where(resolve() is T)`, `.where(field = 'literal')`,
//! `.extension('url')`, `.exists()` and the single boolean form
//! `X.exists() and X != false` used by `Patient-deceased`.

use serde_json::Value;

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Expr {
    pieces: Vec<Piece>,
}

/// One `|` alternative: a root type and a chain of steps.
#[derive(Debug, Clone)]
struct Piece {
    /// `None` for `Resource`/`DomainResource` (applies to every resource).
    root: Option<String>,
    steps: Vec<Step>,
    terminal: Terminal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminal {
    /// The nodes themselves.
    Nodes,
    /// `.exists()`: one boolean.
    Exists,
    /// `X.exists() and X != false`: one boolean.
    ExistsNotFalse,
}

#[derive(Debug, Clone)]
enum Step {
    /// A child element. `choice`: when the key is absent, look for `name` + a type suffix.
    /// `fhir_type`: the type the name itself tells (e.g. `valueDateTime` → `dateTime`).
    /// `index`: `name[n]`.
    Child {
        name: String,
        choice: bool,
        fhir_type: Option<&'static str>,
        index: Option<usize>,
    },
    /// `name.ofType(T)`: the key `name` + `T` (choice) or the plain key `name` when its
    /// value has the shape of `T`.
    ChildOfType {
        name: String,
        typed_key: String,
        ty: &'static str,
    },
    /// `.ofType(T)` / `as T` after something that is not a plain element.
    OfType(&'static str),
    /// `.where(resolve() is T)`.
    ResolvesTo(String),
    /// `.where(field = 'value')`.
    FieldEquals(String, String),
}

/// A value reached by an expression together with its FHIR type when the path tells it
/// (choice elements such as `value[x]` resolve to e.g. `valueQuantity` → `Quantity`).
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub value: &'a Value,
    /// FHIR type name when known from a choice suffix or `ofType`, e.g. `Quantity`, `Period`.
    pub fhir_type: Option<String>,
}

/// FHIR R4 data type names that can appear as choice suffixes, as the FHIR type name.
const TYPES: &[&str] = &[
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "CodeableConcept",
    "Coding",
    "ContactPoint",
    "Count",
    "Distance",
    "Duration",
    "HumanName",
    "Identifier",
    "Money",
    "Period",
    "Quantity",
    "Range",
    "Ratio",
    "Reference",
    "SampledData",
    "Signature",
    "Timing",
    "ContactDetail",
    "Contributor",
    "DataRequirement",
    "Expression",
    "ParameterDefinition",
    "RelatedArtifact",
    "TriggerDefinition",
    "UsageContext",
    "Dosage",
    "Meta",
];

/// Choice elements (`name[x]`) of R4 that search expressions may name without a type
/// suffix. Only these names trigger the suffix scan, so that e.g. `Coverage.subscriber`
/// never picks up the unrelated `subscriberId`.
const CHOICE_NAMES: &[&str] = &[
    "abatement",
    "age",
    "allowed",
    "asNeeded",
    "born",
    "collected",
    "created",
    "deceased",
    "defaultValue",
    "definition",
    "diagnosis",
    "effective",
    "event",
    "identified",
    "item",
    "medication",
    "multipleBirth",
    "occurred",
    "occurrence",
    "onset",
    "performed",
    "probability",
    "procedure",
    "reported",
    "scheduled",
    "serviced",
    "source",
    "target",
    "timing",
    "used",
    "value",
];

/// The FHIR type named by a choice suffix (`Date` → `date`, `Period` → `Period`).
fn type_from_suffix(suffix: &str) -> Option<&'static str> {
    let mut chars = suffix.chars();
    let first = chars.next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    let rest = chars.as_str();
    TYPES.iter().copied().find(|t| {
        t.len() == suffix.len()
            && t[1..] == *rest
            && t.as_bytes()[0].eq_ignore_ascii_case(&(first as u8))
    })
}

/// A canonical type name from an `ofType(T)` / `as T` argument.
fn known_type(name: &str) -> Option<&'static str> {
    TYPES.iter().copied().find(|t| *t == name)
}

fn capitalize(t: &str) -> String {
    let mut s = String::with_capacity(t.len());
    let mut chars = t.chars();
    if let Some(c) = chars.next() {
        s.push(c.to_ascii_uppercase());
    }
    s.push_str(chars.as_str());
    s
}

// ---------------------------------------------------------------------------------------
// Tokenizer and parser.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(usize),
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Pipe,
    Eq,
    NotEq,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'.' => {
                out.push(Tok::Dot);
                i += 1;
            }
            b'(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            b'[' => {
                out.push(Tok::LBracket);
                i += 1;
            }
            b']' => {
                out.push(Tok::RBracket);
                i += 1;
            }
            b'|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            b'=' => {
                out.push(Tok::Eq);
                i += 1;
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                out.push(Tok::NotEq);
                i += 2;
            }
            b'\'' => {
                let start = i + 1;
                let end = s[start..]
                    .find('\'')
                    .ok_or_else(|| format!("unterminated string in `{s}`"))?;
                out.push(Tok::Str(s[start..start + end].to_string()));
                i = start + end + 1;
            }
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let n = s[start..i]
                    .parse()
                    .map_err(|_| format!("bad number in `{s}`"))?;
                out.push(Tok::Int(n));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(s[start..i].to_string()));
            }
            _ => return Err(format!("unsupported character `{}` in `{s}`", c as char)),
        }
    }
    Ok(out)
}

struct Parser<'t> {
    toks: &'t [Tok],
    pos: usize,
}

/// A path under construction: root and steps (before `Piece` finalisation).
#[derive(Debug, Clone)]
struct PathBuf {
    root: String,
    steps: Vec<Step>,
    terminal: Terminal,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<&'t Tok> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }

    fn expect(&mut self, t: &Tok) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(format!("expected {t:?}, found {other:?}")),
        }
    }

    fn ident(&mut self) -> Result<&'t str, String> {
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    fn peek_ident(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == name)
    }

    /// union := term ('|' term)*
    fn union(&mut self) -> Result<Vec<PathBuf>, String> {
        let mut out = self.term()?;
        while self.peek() == Some(&Tok::Pipe) {
            self.pos += 1;
            out.extend(self.term()?);
        }
        Ok(out)
    }

    /// term := postfix (('as' | 'is') Type)? ('and' postfix '!=' 'false')?
    fn term(&mut self) -> Result<Vec<PathBuf>, String> {
        let mut paths = self.postfix()?;
        if self.peek_ident("as") {
            self.pos += 1;
            let ty = self.ident()?;
            let ty = known_type(ty).ok_or_else(|| format!("unknown type `{ty}`"))?;
            for p in &mut paths {
                apply_of_type(p, ty)?;
            }
        }
        if self.peek_ident("and") {
            // Only `X.exists() and X != false`.
            self.pos += 1;
            let rhs = self.postfix()?;
            self.expect(&Tok::NotEq)?;
            if !self.peek_ident("false") {
                return Err("only `X.exists() and X != false` is supported".into());
            }
            self.pos += 1;
            let [lhs] = paths.as_mut_slice() else {
                return Err("`and` over a union is not supported".into());
            };
            let [rhs] = rhs.as_slice() else {
                return Err("`and` over a union is not supported".into());
            };
            if lhs.terminal != Terminal::Exists
                || rhs.terminal != Terminal::Nodes
                || lhs.root != rhs.root
                || format!("{:?}", lhs.steps) != format!("{:?}", rhs.steps)
            {
                return Err("only `X.exists() and X != false` is supported".into());
            }
            lhs.terminal = Terminal::ExistsNotFalse;
        }
        Ok(paths)
    }

    /// postfix := primary ('.' member | '[' int ']')*
    fn postfix(&mut self) -> Result<Vec<PathBuf>, String> {
        let mut paths = match self.next() {
            Some(Tok::LParen) => {
                let inner = self.union()?;
                self.expect(&Tok::RParen)?;
                inner
            }
            Some(Tok::Ident(root)) if root.starts_with(|c: char| c.is_ascii_uppercase()) => {
                vec![PathBuf {
                    root: root.clone(),
                    steps: Vec::new(),
                    terminal: Terminal::Nodes,
                }]
            }
            // A path relative to the resource (`name | alias` in InsurancePlan-name).
            Some(Tok::Ident(name)) => vec![PathBuf {
                root: String::new(),
                steps: vec![child_step(name)],
                terminal: Terminal::Nodes,
            }],
            other => return Err(format!("expected a path, found {other:?}")),
        };
        loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.pos += 1;
                    let name = self.ident()?;
                    if self.peek() == Some(&Tok::LParen) {
                        self.pos += 1;
                        self.function(name, &mut paths)?;
                    } else {
                        for p in &mut paths {
                            check_open(p)?;
                            p.steps.push(child_step(name));
                        }
                    }
                }
                Some(Tok::LBracket) => {
                    self.pos += 1;
                    let n = match self.next() {
                        Some(Tok::Int(n)) => *n,
                        other => return Err(format!("expected an index, found {other:?}")),
                    };
                    self.expect(&Tok::RBracket)?;
                    for p in &mut paths {
                        match p.steps.last_mut() {
                            Some(Step::Child {
                                index: index @ None,
                                ..
                            }) => *index = Some(n),
                            _ => return Err("indexing is only supported on an element".into()),
                        }
                    }
                }
                _ => return Ok(paths),
            }
        }
    }

    /// After `name(`: parses the arguments and the closing parenthesis.
    fn function(&mut self, name: &str, paths: &mut [PathBuf]) -> Result<(), String> {
        match name {
            "ofType" => {
                let ty = self.ident()?;
                let ty = known_type(ty).ok_or_else(|| format!("unknown type `{ty}`"))?;
                self.expect(&Tok::RParen)?;
                for p in paths.iter_mut() {
                    apply_of_type(p, ty)?;
                }
            }
            "exists" => {
                self.expect(&Tok::RParen)?;
                for p in paths.iter_mut() {
                    check_open(p)?;
                    p.terminal = Terminal::Exists;
                }
            }
            "extension" => {
                let url = match self.next() {
                    Some(Tok::Str(s)) => s.clone(),
                    other => return Err(format!("expected an extension url, found {other:?}")),
                };
                self.expect(&Tok::RParen)?;
                for p in paths.iter_mut() {
                    check_open(p)?;
                    p.steps.push(Step::Child {
                        name: "extension".into(),
                        choice: false,
                        fhir_type: None,
                        index: None,
                    });
                    p.steps.push(Step::FieldEquals("url".into(), url.clone()));
                }
            }
            "where" => {
                let step = if self.peek_ident("resolve") {
                    self.pos += 1;
                    self.expect(&Tok::LParen)?;
                    self.expect(&Tok::RParen)?;
                    if !self.peek_ident("is") {
                        return Err("expected `resolve() is Type`".into());
                    }
                    self.pos += 1;
                    Step::ResolvesTo(self.ident()?.to_string())
                } else {
                    let field = self.ident()?.to_string();
                    self.expect(&Tok::Eq)?;
                    let value = match self.next() {
                        Some(Tok::Str(s)) => s.clone(),
                        other => return Err(format!("expected a string, found {other:?}")),
                    };
                    Step::FieldEquals(field, value)
                };
                self.expect(&Tok::RParen)?;
                for p in paths.iter_mut() {
                    check_open(p)?;
                    p.steps.push(step.clone());
                }
            }
            other => return Err(format!("unsupported function `{other}()`")),
        }
        Ok(())
    }
}

/// The step for a plain element name.
fn child_step(name: &str) -> Step {
    Step::Child {
        name: name.to_string(),
        choice: CHOICE_NAMES.contains(&name),
        fhir_type: CHOICE_NAMES
            .iter()
            .find_map(|c| name.strip_prefix(c).and_then(type_from_suffix)),
        index: None,
    }
}

/// No step may follow `.exists()`.
fn check_open(p: &PathBuf) -> Result<(), String> {
    if p.terminal == Terminal::Nodes {
        Ok(())
    } else {
        Err("nothing may follow `.exists()`".into())
    }
}

fn apply_of_type(p: &mut PathBuf, ty: &'static str) -> Result<(), String> {
    check_open(p)?;
    match p.steps.last() {
        Some(Step::Child {
            name,
            fhir_type: None,
            index: None,
            ..
        }) => {
            let name = name.clone();
            let typed_key = format!("{name}{}", capitalize(ty));
            p.steps.pop();
            p.steps.push(Step::ChildOfType {
                name,
                typed_key,
                ty,
            });
        }
        _ => p.steps.push(Step::OfType(ty)),
    }
    Ok(())
}

/// Compiles `expression` (may contain `|` unions).
pub fn compile(expression: &str) -> Result<Expr, String> {
    let toks = tokenize(expression)?;
    let mut parser = Parser {
        toks: &toks,
        pos: 0,
    };
    let paths = parser.union()?;
    if parser.pos != toks.len() {
        return Err(format!(
            "unexpected {:?} in `{expression}`",
            toks[parser.pos]
        ));
    }
    let pieces = paths
        .into_iter()
        .map(|p| Piece {
            root: match p.root.as_str() {
                "" | "Resource" | "DomainResource" => None,
                _ => Some(p.root),
            },
            steps: p.steps,
            terminal: p.terminal,
        })
        .collect();
    Ok(Expr { pieces })
}

/// The root type names of an expression's pieces (`None` for `Resource`/`DomainResource`).
impl Expr {
    pub fn roots(&self) -> impl Iterator<Item = Option<&str>> {
        self.pieces.iter().map(|p| p.root.as_deref())
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation.

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// Evaluates `expr` against a resource; arrays are flattened, as FHIRPath collections are.
/// Pieces rooted at a type other than the resource's `resourceType` yield nothing.
pub fn evaluate<'a>(expr: &Expr, resource: &'a Value) -> Vec<Node<'a>> {
    let mut out = Vec::new();
    let rtype = resource.get("resourceType").and_then(Value::as_str);
    for piece in &expr.pieces {
        if let Some(root) = &piece.root
            && rtype.is_some_and(|t| t != root)
        {
            continue;
        }
        match piece.terminal {
            Terminal::Nodes => walk(&piece.steps, resource, None, &mut out),
            Terminal::Exists | Terminal::ExistsNotFalse => {
                let mut tmp = Vec::new();
                walk(&piece.steps, resource, None, &mut tmp);
                let b = if piece.terminal == Terminal::Exists {
                    !tmp.is_empty()
                } else {
                    !tmp.is_empty() && tmp.iter().all(|n| n.value != &FALSE)
                };
                out.push(Node {
                    value: if b { &TRUE } else { &FALSE },
                    fhir_type: Some("boolean".into()),
                });
            }
        }
    }
    out
}

/// Emits `value` (flattening arrays) into the next steps.
fn emit<'a>(rest: &[Step], value: &'a Value, ty: Option<&'static str>, out: &mut Vec<Node<'a>>) {
    match value {
        Value::Array(items) => {
            for item in items {
                walk(rest, item, ty, out);
            }
        }
        Value::Null => {}
        v => walk(rest, v, ty, out),
    }
}

fn walk<'a>(steps: &[Step], value: &'a Value, ty: Option<&'static str>, out: &mut Vec<Node<'a>>) {
    let Some((step, rest)) = steps.split_first() else {
        out.push(Node {
            value,
            fhir_type: ty.map(str::to_string),
        });
        return;
    };
    match step {
        Step::Child {
            name,
            choice,
            fhir_type,
            index,
        } => {
            let Value::Object(map) = value else { return };
            if let Some(v) = map.get(name) {
                match (index, v) {
                    (Some(i), Value::Array(items)) => {
                        if let Some(item) = items.get(*i) {
                            walk(rest, item, *fhir_type, out);
                        }
                    }
                    (Some(0), v) => emit(rest, v, *fhir_type, out),
                    (Some(_), _) => {}
                    (None, v) => emit(rest, v, *fhir_type, out),
                }
            } else if *choice {
                for (k, v) in map {
                    if let Some(t) = k.strip_prefix(name.as_str()).and_then(type_from_suffix) {
                        emit(rest, v, Some(t), out);
                    }
                }
            }
        }
        Step::ChildOfType {
            name,
            typed_key,
            ty: t,
        } => {
            let Value::Object(map) = value else { return };
            if let Some(v) = map.get(typed_key) {
                emit(rest, v, Some(t), out);
            } else if let Some(v) = map.get(name) {
                match v {
                    Value::Array(items) => {
                        for item in items.iter().filter(|i| has_shape(i, t)) {
                            walk(rest, item, Some(t), out);
                        }
                    }
                    v if has_shape(v, t) => walk(rest, v, Some(t), out),
                    _ => {}
                }
            }
        }
        Step::OfType(t) => {
            if ty.map_or_else(|| has_shape(value, t), |known| known == *t) {
                walk(rest, value, Some(t), out);
            }
        }
        Step::ResolvesTo(t) => {
            let target = value
                .get("reference")
                .and_then(Value::as_str)
                .and_then(reference_parts);
            if target.is_some_and(|(rt, _)| rt == t) {
                walk(rest, value, ty, out);
            }
        }
        Step::FieldEquals(field, expected) => {
            if value.get(field).and_then(Value::as_str) == Some(expected.as_str()) {
                walk(rest, value, ty, out);
            }
        }
    }
}

/// Could `v` be a value of FHIR type `t`? (Used where the JSON key does not tell.)
fn has_shape(v: &Value, t: &str) -> bool {
    match v {
        Value::Bool(_) => t == "boolean",
        Value::Number(_) => matches!(t, "decimal" | "integer" | "positiveInt" | "unsignedInt"),
        Value::String(_) => t.starts_with(|c: char| c.is_ascii_lowercase()) && t != "boolean",
        Value::Object(m) => {
            t.starts_with(|c: char| c.is_ascii_uppercase())
                && match t {
                    "Reference" => {
                        m.contains_key("reference")
                            || m.contains_key("identifier")
                            || m.contains_key("display")
                    }
                    "CodeableConcept" => m.contains_key("coding") || m.contains_key("text"),
                    "Coding" => m.contains_key("code") || m.contains_key("system"),
                    "Quantity" | "Age" | "Duration" | "Distance" | "Count" => {
                        m.contains_key("value") || m.contains_key("code")
                    }
                    "Period" => m.contains_key("start") || m.contains_key("end"),
                    "Range" => m.contains_key("low") || m.contains_key("high"),
                    "Identifier" => m.contains_key("value") || m.contains_key("system"),
                    _ => true,
                }
        }
        _ => false,
    }
}

/// The `(type, id)` of a literal reference: the last two path segments when they look like
/// `Type/id` (`Patient/123`, `https://x/fhir/Patient/123`, `Patient/123/_history/2`).
/// `None` for `urn:uuid:…`, `#contained` and anything else.
pub fn reference_parts(reference: &str) -> Option<(&str, &str)> {
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let r = reference.split(['?', '#']).next().unwrap_or(reference);
    let mut segs = r.rsplit('/');
    let mut last = segs.next()?;
    let mut prev = segs.next()?;
    if prev == "_history" {
        let _version = last;
        last = segs.next()?;
        prev = segs.next()?;
    }
    let is_type = prev.starts_with(|c: char| c.is_ascii_uppercase())
        && prev.bytes().all(|b| b.is_ascii_alphanumeric());
    let is_id = !last.is_empty()
        && last.len() <= 64
        && last
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    (is_type && is_id).then_some((prev, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expr: &str, v: &Value) -> Vec<(Value, Option<String>)> {
        let e = compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        evaluate(&e, v)
            .into_iter()
            .map(|n| (n.value.clone(), n.fhir_type))
            .collect()
    }

    #[test]
    fn dotted_paths_flatten_arrays() {
        let p = json!({"resourceType": "Patient", "name": [
            {"given": ["A", "B"]}, {"given": ["C"]}
        ]});
        let got = eval("Patient.name.given", &p);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].0, json!("C"));
        assert!(eval("Patient.address.city", &p).is_empty());
        // Pieces for another type yield nothing.
        assert!(eval("Practitioner.name.given", &p).is_empty());
        assert_eq!(eval("Practitioner.name | Patient.name", &p).len(), 2);
        assert_eq!(eval("Resource.name", &p).len(), 2);
        assert_eq!(eval("name | alias", &p).len(), 2, "relative paths");
    }

    #[test]
    fn choice_elements() {
        let eob = json!({"resourceType": "ExplanationOfBenefit", "item": [
            {"servicedDate": "2020-01-01"},
            {"servicedPeriod": {"start": "2020-02-01"}},
            {"serviced": "weird"}
        ]});
        let got = eval("ExplanationOfBenefit.item.serviced", &eob);
        assert_eq!(got[0], (json!("2020-01-01"), Some("date".into())));
        assert_eq!(got[1].1.as_deref(), Some("Period"));
        assert_eq!(got[2].1, None);
        let got = eval(
            "ExplanationOfBenefit.item.serviced.ofType(Period).start",
            &eob,
        );
        assert_eq!(got, vec![(json!("2020-02-01"), None)]);
        let got = eval("(ExplanationOfBenefit.item.serviced as date)", &eob);
        assert_eq!(got.len(), 2, "the plain `serviced` string passes as a date");
        // Not a choice name: no suffix scan.
        let cov = json!({"resourceType": "Coverage", "subscriberId": "X"});
        assert!(eval("Coverage.subscriber", &cov).is_empty());
    }

    #[test]
    fn of_type_and_parentheses() {
        let obs = json!({"resourceType": "Observation",
            "valueCodeableConcept": {"text": "Positive"}});
        let got = eval("(Observation.value.ofType(CodeableConcept)).text", &obs);
        assert_eq!(got, vec![(json!("Positive"), None)]);
        assert!(eval("Observation.value.ofType(Quantity)", &obs).is_empty());
        let g = json!({"resourceType": "Group", "characteristic": [
            {"valueReference": {"reference": "Practitioner/1"}},
            {"valueBoolean": true}
        ]});
        let got = eval("Group.characteristic.value.ofType(Reference)", &g);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.as_deref(), Some("Reference"));
        // ofType on a plain (non-choice) element checks the shape.
        let c = json!({"resourceType": "X", "target": [{"reference": "Patient/1"}, "http://u"]});
        assert_eq!(eval("X.target.ofType(Reference)", &c).len(), 1);
        assert_eq!(eval("X.target.ofType(uri)", &c).len(), 1);
    }

    #[test]
    fn where_filters() {
        let o = json!({"resourceType": "Observation", "subject": {"reference": "Patient/1"},
            "performer": [{"reference": "http://x/fhir/Practitioner/2/_history/3"},
                          {"reference": "Patient/9"}]});
        assert_eq!(
            eval("Observation.subject.where(resolve() is Patient)", &o).len(),
            1
        );
        assert!(eval("Observation.subject.where(resolve() is Group)", &o).is_empty());
        assert_eq!(
            eval("Observation.performer.where(resolve() is Practitioner)", &o).len(),
            1
        );
        let p = json!({"resourceType": "Patient", "telecom": [
            {"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}]});
        let got = eval("Patient.telecom.where(system='email')", &p);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0["value"], "a@b");
    }

    #[test]
    fn extensions() {
        let p = json!({"resourceType": "Patient", "extension": [
            {"url": "http://race", "extension": [
                {"url": "ombCategory", "valueCoding": {"code": "2106-3"}},
                {"url": "text", "valueString": "White"}]},
            {"url": "http://other", "valueCode": "x"}]});
        let got = eval(
            "Patient.extension.where(url = 'http://race').extension.value.code",
            &p,
        );
        assert_eq!(got, vec![(json!("2106-3"), None)]);
        let got = eval("Patient.extension('http://other').value", &p);
        assert_eq!(got, vec![(json!("x"), Some("code".into()))]);
        let got = eval("Patient.extension.where(url='http://other').valueCode", &p);
        assert_eq!(got, vec![(json!("x"), Some("code".into()))]);
    }

    #[test]
    fn deceased_boolean() {
        let e = "Patient.deceased.exists() and Patient.deceased != false";
        let alive = json!({"resourceType": "Patient"});
        let no = json!({"resourceType": "Patient", "deceasedBoolean": false});
        let yes = json!({"resourceType": "Patient", "deceasedBoolean": true});
        let date = json!({"resourceType": "Patient", "deceasedDateTime": "2020"});
        assert_eq!(eval(e, &alive)[0].0, json!(false));
        assert_eq!(eval(e, &no)[0].0, json!(false));
        assert_eq!(eval(e, &yes)[0].0, json!(true));
        assert_eq!(eval(e, &date)[0].0, json!(true));
        assert_eq!(eval("Patient.deceased.exists()", &no)[0].0, json!(true));
    }

    #[test]
    fn indexing() {
        let b = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Composition", "id": "c"}},
            {"resource": {"resourceType": "Patient", "id": "p"}}]});
        let got = eval("Bundle.entry[0].resource", &b);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0["id"], "c");
    }

    #[test]
    fn unsupported_forms_are_errors() {
        for e in [
            "Patient.name.first()",
            "Patient.name.where(given.exists())",
            "Patient.x + 1",
            "Patient.x and Patient.y",
            "Patient.a.exists().b",
            "Patient.value.ofType(Nonsense)",
            "'literal'",
            "Patient.name[",
        ] {
            assert!(compile(e).is_err(), "{e}");
        }
    }

    #[test]
    fn reference_parsing() {
        assert_eq!(reference_parts("Patient/123"), Some(("Patient", "123")));
        assert_eq!(
            reference_parts("https://x/fhir/Patient/123"),
            Some(("Patient", "123"))
        );
        assert_eq!(
            reference_parts("Patient/123/_history/2"),
            Some(("Patient", "123"))
        );
        assert_eq!(reference_parts("urn:uuid:1234"), None);
        assert_eq!(reference_parts("#p1"), None);
        assert_eq!(reference_parts("123"), None);
        assert_eq!(reference_parts("patient/123"), None);
    }

    #[test]
    fn never_panics_on_odd_json() {
        let e = compile("Patient.name.given | Patient.extension('u').value.code").unwrap();
        for v in [
            json!(null),
            json!(1),
            json!([1, 2]),
            json!({"resourceType": 5, "name": "x"}),
            json!({"name": [null, 1, [2], {"given": {"a": 1}}]}),
        ] {
            let _ = evaluate(&e, &v);
        }
    }
}
