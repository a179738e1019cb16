//! Parsing a FHIR search request (query pairs or a POST `_search` form) into a typed
//! [`SearchRequest`], checked against the parameter registry: unknown parameters,
//! unsupported modifiers and malformed values are rejected with a message that says which.

use super::registry::{ParamType, Registry};
use crate::fhir::datetime::{self, DateRange, Prefix};
use crate::fhir::text::normalize;

/// Default and largest page sizes.
pub const DEFAULT_COUNT: usize = 50;
pub const MAX_COUNT: usize = 1000;
/// Most values one parameter may OR together (each becomes a bound SQL parameter).
pub const MAX_OR_VALUES: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub rtype: String,
    /// ANDed filters.
    pub filters: Vec<Filter>,
    pub count: usize,
    pub sort: Vec<SortKey>,
    pub include: Vec<IncludeSpec>,
    pub revinclude: Vec<IncludeSpec>,
    pub summary_count: bool,
    pub summary_data: bool,
    pub total_accurate: bool,
    pub elements: Option<Vec<String>>,
    /// Opaque keyset cursor from a `next` link.
    pub cursor: Option<String>,
    /// Parameters ignored under `Prefer: handling=lenient`, with the reason.
    pub ignored: Vec<String>,
    /// The parameters to repeat in paging links (all but `_cursor`).
    pub echo: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub code: String,
    pub kind: ParamType,
    pub modifier: Option<Modifier>,
    /// ORed values (empty for `:missing`).
    pub values: Vec<FilterValue>,
    /// `subject:Patient.name=x`: the filter applies to the referenced resources.
    pub chain: Option<Box<Chain>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub target_types: Vec<String>,
    pub filter: Filter,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Modifier {
    Missing(bool),
    Exact,
    Contains,
    Not,
    Text,
    Identifier,
    /// A reference type modifier, e.g. `subject:Patient`.
    Type(String),
    Below,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    /// `code`, `system|code`, `|code`, `system|`.
    Token {
        system: TokenSystem,
        code: Option<String>,
    },
    /// Normalised and raw search text.
    String {
        normalized: String,
        raw: String,
    },
    Date {
        prefix: Prefix,
        range: DateRange,
    },
    /// A number or quantity: the implicit range of the search value (from its precision).
    Quantity {
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Reference {
        target_type: Option<String>,
        id: Option<String>,
        url: String,
    },
    /// `_id` values and uri values.
    Exact(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenSystem {
    Any,
    None,
    Is(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub code: String,
    pub kind: ParamType,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IncludeSpec {
    pub source_type: String,
    /// `None` for `*`.
    pub param: Option<String>,
    pub target_type: Option<String>,
    pub iterate: bool,
}

/// A 400-class problem with the request, in words for the client.
pub type ParseError = String;

/// Parses `pairs` (already percent-decoded) for a search on `rtype`.
/// `base_url` is the server's FHIR base (to recognise absolute references to ourselves).
pub fn parse(
    registry: &Registry,
    rtype: &str,
    pairs: &[(String, String)],
    base_url: &str,
    lenient: bool,
) -> Result<SearchRequest, ParseError> {
    let mut req = SearchRequest {
        rtype: rtype.to_owned(),
        filters: vec![],
        count: DEFAULT_COUNT,
        sort: vec![],
        include: vec![],
        revinclude: vec![],
        summary_count: false,
        summary_data: false,
        total_accurate: false,
        elements: None,
        cursor: None,
        ignored: vec![],
        echo: vec![],
    };
    for (name, value) in pairs {
        // No database text can hold NUL (Postgres refuses it) and no FHIR value contains
        // one (R4 §2.24.0.1: strings exclude control characters): a plain 400, lenient or
        // not, in every parameter type.
        if name.contains('\0') || value.contains('\0') {
            return Err(format!(
                "the search parameter {:?} contains a NUL character",
                name.replace('\0', "\\0")
            ));
        }
        if name != "_cursor" {
            req.echo.push((name.clone(), value.clone()));
        }
        let result = parse_pair(registry, &mut req, name, value, base_url);
        if let Err(e) = result {
            if lenient && !matches!(name.as_str(), "_count" | "_cursor") {
                req.ignored.push(e);
            } else {
                return Err(e);
            }
        }
    }
    Ok(req)
}

fn parse_pair(
    registry: &Registry,
    req: &mut SearchRequest,
    name: &str,
    value: &str,
    base_url: &str,
) -> Result<(), ParseError> {
    match name {
        "_format" | "_pretty" => Ok(()),
        "_count" => {
            let n: usize = value
                .parse()
                .map_err(|_| format!("_count must be a non-negative integer, not {value:?}"))?;
            req.count = n.min(MAX_COUNT);
            Ok(())
        }
        "_cursor" => {
            req.cursor = Some(value.to_owned());
            Ok(())
        }
        "_summary" => match value {
            "count" => {
                req.summary_count = true;
                Ok(())
            }
            "data" => {
                req.summary_data = true;
                Ok(())
            }
            "false" => Ok(()),
            other => Err(format!(
                "_summary={other} is not supported (supported: count, data, false)"
            )),
        },
        // fhirpy's `.count()` sends `_totalMethod`; it asks nothing of us beyond a total.
        "_totalMethod" => Ok(()),
        "_total" => match value {
            "accurate" => {
                req.total_accurate = true;
                Ok(())
            }
            "none" | "estimate" => Ok(()),
            other => Err(format!(
                "_total={other} is not one of none, estimate, accurate"
            )),
        },
        "_elements" => {
            let list: Vec<String> = value
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            req.elements.get_or_insert_with(Vec::new).extend(list);
            Ok(())
        }
        "_sort" => {
            for key in value.split(',').filter(|s| !s.is_empty()) {
                let (descending, code) = match key.strip_prefix('-') {
                    Some(c) => (true, c),
                    None => (false, key),
                };
                let param = registry.get(&req.rtype, code).ok_or_else(|| {
                    format!("cannot sort {} by unknown parameter {code:?}", req.rtype)
                })?;
                if !matches!(
                    param.kind,
                    ParamType::Date
                        | ParamType::String
                        | ParamType::Token
                        | ParamType::Number
                        | ParamType::Quantity
                ) && code != "_id"
                {
                    return Err(format!("sorting by {code} is not supported"));
                }
                req.sort.push(SortKey {
                    code: code.to_owned(),
                    kind: param.kind,
                    descending,
                });
            }
            Ok(())
        }
        "_include"
        | "_revinclude"
        | "_include:iterate"
        | "_revinclude:iterate"
        | "_include:recurse"
        | "_revinclude:recurse" => {
            let iterate = name.contains(':');
            let rev = name.starts_with("_revinclude");
            let spec = parse_include(registry, value, iterate)?;
            if rev {
                &mut req.revinclude
            } else {
                &mut req.include
            }
            .push(spec);
            Ok(())
        }
        _ if name.starts_with('_')
            && !matches!(
                name.split(':').next().unwrap_or_default(),
                "_id" | "_lastUpdated" | "_tag" | "_profile" | "_security" | "_source"
            ) =>
        {
            Err(format!("the search parameter {name} is not supported"))
        }
        _ => {
            let filter = parse_filter(registry, &req.rtype, name, value, base_url)?;
            req.filters.push(filter);
            Ok(())
        }
    }
}

fn parse_include(
    registry: &Registry,
    value: &str,
    iterate: bool,
) -> Result<IncludeSpec, ParseError> {
    let parts: Vec<&str> = value.split(':').collect();
    let bad =
        || format!("_include/_revinclude value {value:?} is not Type:param[:TargetType] or *");
    if parts == ["*"] {
        return Err("_include=* without a source type is not supported; use Type:*".into());
    }
    if parts.len() < 2 || parts.len() > 3 {
        return Err(bad());
    }
    let source_type = parts[0].to_owned();
    if !registry.has_type(parts[0]) {
        return Err(format!("unknown resource type {:?} in {value:?}", parts[0]));
    }
    let param = if parts[1] == "*" {
        None
    } else {
        let p = registry
            .get(parts[0], parts[1])
            .ok_or_else(|| format!("{} has no search parameter {:?}", parts[0], parts[1]))?;
        if p.kind != ParamType::Reference {
            return Err(format!(
                "{}:{} is not a reference parameter",
                parts[0], parts[1]
            ));
        }
        Some(parts[1].to_owned())
    };
    Ok(IncludeSpec {
        source_type,
        param,
        target_type: parts.get(2).map(|s| s.to_string()),
        iterate,
    })
}

/// Parses one `name[:modifier][.chain]=value` filter.
fn parse_filter(
    registry: &Registry,
    rtype: &str,
    name: &str,
    value: &str,
    base_url: &str,
) -> Result<Filter, ParseError> {
    let (head, chained) = match name.split_once('.') {
        Some((h, rest)) => (h, Some(rest)),
        None => (name, None),
    };
    let (code, modifier_text) = match head.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (head, None),
    };
    let param = registry
        .get(rtype, code)
        .ok_or_else(|| format!("unknown search parameter {code:?} for {rtype}"))?;
    let kind = param.kind;
    if param.path.is_none() && code != "_id" && code != "_lastUpdated" {
        return Err(format!(
            "the search parameter {code} ({kind:?}) is not supported yet"
        ));
    }
    if let Some(rest) = chained {
        if kind != ParamType::Reference {
            return Err(format!(
                "{code} is not a reference parameter and cannot be chained"
            ));
        }
        let target_types: Vec<String> = match modifier_text {
            Some(t) => vec![t.to_owned()],
            None => param.targets.clone(),
        };
        let (inner_code, _) = rest.split_once(':').unwrap_or((rest, ""));
        let usable: Vec<String> = target_types
            .into_iter()
            .filter(|t| registry.get(t, inner_code).is_some())
            .collect();
        if usable.is_empty() {
            return Err(format!(
                "no target type of {code} has a search parameter {inner_code:?}"
            ));
        }
        if rest.contains('.') {
            return Err("chains deeper than one level are not supported".into());
        }
        let inner = parse_filter(registry, &usable[0], rest, value, base_url)?;
        return Ok(Filter {
            code: code.to_owned(),
            kind,
            modifier: None,
            values: vec![],
            chain: Some(Box::new(Chain {
                target_types: usable,
                filter: inner,
            })),
        });
    }
    let modifier = match modifier_text {
        None => None,
        Some("missing") => {
            let m = match value {
                "true" => true,
                "false" => false,
                _ => return Err(format!("{name} takes true or false, not {value:?}")),
            };
            return Ok(Filter {
                code: code.to_owned(),
                kind,
                modifier: Some(Modifier::Missing(m)),
                values: vec![],
                chain: None,
            });
        }
        Some("exact") if kind == ParamType::String => Some(Modifier::Exact),
        Some("contains") if kind == ParamType::String => Some(Modifier::Contains),
        Some("not") if kind == ParamType::Token => Some(Modifier::Not),
        Some("text") if kind == ParamType::Token => Some(Modifier::Text),
        Some("identifier") if kind == ParamType::Reference => Some(Modifier::Identifier),
        Some("below") if kind == ParamType::Uri => Some(Modifier::Below),
        Some(t) if kind == ParamType::Reference && crate::fhir::looks_like_type(t) => {
            if !registry.has_type(t) {
                return Err(format!("{t:?} is not a resource type"));
            }
            Some(Modifier::Type(t.to_owned()))
        }
        Some(m) => {
            return Err(format!(
                "the modifier :{m} is not supported on {code} ({kind:?})"
            ));
        }
    };
    let mut values = Vec::new();
    for raw in split_unescaped(value, ',') {
        if raw.is_empty() {
            continue;
        }
        values.push(parse_value(code, kind, modifier.as_ref(), &raw, base_url)?);
    }
    if values.is_empty() {
        return Err(format!("the search parameter {name} has no value"));
    }
    if values.len() > MAX_OR_VALUES {
        return Err(format!(
            "{name} has {} comma-separated values; at most {MAX_OR_VALUES} are accepted",
            values.len()
        ));
    }
    Ok(Filter {
        code: code.to_owned(),
        kind,
        modifier,
        values,
        chain: None,
    })
}

fn parse_value(
    code: &str,
    kind: ParamType,
    modifier: Option<&Modifier>,
    raw: &str,
    base_url: &str,
) -> Result<FilterValue, ParseError> {
    if code == "_id" {
        return Ok(FilterValue::Exact(raw.to_owned()));
    }
    match kind {
        ParamType::Token if matches!(modifier, Some(Modifier::Text)) => Ok(FilterValue::String {
            normalized: normalize(raw),
            raw: raw.to_owned(),
        }),
        ParamType::Token => {
            let parts = split_unescaped(raw, '|');
            match parts.as_slice() {
                [code] => Ok(FilterValue::Token {
                    system: TokenSystem::Any,
                    code: Some(code.clone()),
                }),
                [system, code] => Ok(FilterValue::Token {
                    system: if system.is_empty() {
                        TokenSystem::None
                    } else {
                        TokenSystem::Is(system.clone())
                    },
                    code: (!code.is_empty()).then(|| code.clone()),
                }),
                _ => Err(format!("token value {raw:?} has more than one unescaped |")),
            }
        }
        ParamType::String => Ok(FilterValue::String {
            normalized: normalize(raw),
            raw: raw.to_owned(),
        }),
        ParamType::Uri => Ok(FilterValue::Exact(raw.to_owned())),
        ParamType::Date => {
            let (prefix, rest) = split_prefix(raw);
            let range = datetime::parse(rest)
                .ok_or_else(|| format!("{code}: {rest:?} is not a valid FHIR date or dateTime"))?;
            Ok(FilterValue::Date { prefix, range })
        }
        ParamType::Number | ParamType::Quantity => {
            let (prefix, rest) = split_prefix(raw);
            let parts = split_unescaped(rest, '|');
            let number = parts.first().map(String::as_str).unwrap_or_default();
            let (value, low, high) = parse_number(number)
                .ok_or_else(|| format!("{code}: {number:?} is not a number"))?;
            let (system, unit) = match parts.as_slice() {
                [_] => (None, None),
                [_, s, c] => (
                    (!s.is_empty()).then(|| s.clone()),
                    (!c.is_empty()).then(|| c.clone()),
                ),
                _ => return Err(format!("{code}: {raw:?} is not number|system|code")),
            };
            if kind == ParamType::Number && (system.is_some() || unit.is_some()) {
                return Err(format!("{code} is a number parameter and takes no units"));
            }
            Ok(FilterValue::Quantity {
                prefix,
                value,
                low,
                high,
                system,
                code: unit,
            })
        }
        ParamType::Reference => Ok(parse_reference(raw, modifier, base_url)),
        _ => Err(format!("{code}: {kind:?} parameters are not supported yet")),
    }
}

/// `123`, `Patient/123`, `https://our.base/fhir/Patient/123`, or a foreign absolute URL.
fn parse_reference(raw: &str, modifier: Option<&Modifier>, base_url: &str) -> FilterValue {
    if matches!(modifier, Some(Modifier::Identifier)) {
        return FilterValue::Reference {
            target_type: None,
            id: None,
            url: raw.to_owned(),
        };
    }
    let type_modifier = match modifier {
        Some(Modifier::Type(t)) => Some(t.clone()),
        _ => None,
    };
    let local = raw
        .strip_prefix(base_url.trim_end_matches('/'))
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(raw);
    let is_absolute = local.contains("://");
    let segments: Vec<&str> = local.split('/').collect();
    match segments.as_slice() {
        [id] if !is_absolute => FilterValue::Reference {
            target_type: type_modifier,
            id: Some((*id).to_owned()),
            url: raw.to_owned(),
        },
        [t, id] if !is_absolute && crate::fhir::looks_like_type(t) => FilterValue::Reference {
            target_type: Some((*t).to_owned()),
            id: Some((*id).to_owned()),
            url: raw.to_owned(),
        },
        _ => FilterValue::Reference {
            target_type: None,
            id: None,
            url: raw.to_owned(),
        },
    }
}

fn split_prefix(raw: &str) -> (Prefix, &str) {
    for (text, p) in Prefix::ALL {
        if let Some(rest) = raw.strip_prefix(text)
            && rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        {
            return (p, rest);
        }
    }
    (Prefix::Eq, raw)
}

/// A decimal and the implicit range its precision gives (FHIR search "number": `100` means
/// [99.5, 100.5), `1e2` the same, `100.00` means [99.995, 100.005)).
pub fn parse_number(text: &str) -> Option<(f64, f64, f64)> {
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    let (mantissa, exponent) = match text.to_ascii_lowercase().split_once('e') {
        Some((m, e)) => (m.to_owned(), e.parse::<i32>().ok()?),
        None => (text.to_owned(), 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len() as i32);
    let half = 0.5 * 10f64.powi(exponent - decimals);
    Some((value, value - half, value + half))
}

/// Splits on `sep` except where escaped with a backslash; unescapes `\,`, `\|`, `\$`, `\\`.
pub fn split_unescaped(value: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == sep => parts.last_mut().expect("non-empty").push(n),
                Some(n) => {
                    let last = parts.last_mut().expect("non-empty");
                    // Keep escapes meant for a later split.
                    if n == ',' || n == '|' || n == '$' || n == '\\' {
                        last.push('\\');
                    }
                    last.push(n);
                }
                None => parts.last_mut().expect("non-empty").push('\\'),
            }
        } else if c == sep {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("non-empty").push(c);
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn number_precision() {
        assert_eq!(parse_number("100"), Some((100.0, 99.5, 100.5)));
        let (_, lo, hi) = parse_number("100.00").unwrap();
        assert!((lo - 99.995).abs() < 1e-9 && (hi - 100.005).abs() < 1e-9);
        assert!(parse_number("abc").is_none());
        assert!(parse_number("NaN").is_none());
    }

    #[test]
    fn escapes() {
        assert_eq!(split_unescaped(r"a\,b,c", ','), vec!["a,b", "c"]);
        assert_eq!(split_unescaped(r"s\|x|c", '|'), vec!["s|x", "c"]);
        assert_eq!(split_unescaped("a,,b", ','), vec!["a", "", "b"]);
    }

    proptest! {
        #[test]
        fn split_never_panics_and_roundtrips_plain(parts in proptest::collection::vec("[a-z0-9]{0,5}", 1..5)) {
            let joined = parts.join(",");
            prop_assert_eq!(split_unescaped(&joined, ','), parts);
        }

        #[test]
        fn escaped_commas_stay_in_one_value(a in "[a-z]{1,5}", b in "[a-z]{1,5}") {
            let v = format!("{a}\\,{b}");
            prop_assert_eq!(split_unescaped(&v, ','), vec![format!("{a},{b}")]);
        }

        #[test]
        fn number_range_contains_value(n in -1.0e6f64..1.0e6f64, d in 0usize..4) {
            let text = format!("{n:.d$}");
            let (v, lo, hi) = parse_number(&text).unwrap();
            prop_assert!(lo <= v && v <= hi);
        }

        #[test]
        fn prefix_split_is_total(s in ".{0,12}") {
            let (_, rest) = split_prefix(&s);
            prop_assert!(s.ends_with(rest));
        }
    }
}
