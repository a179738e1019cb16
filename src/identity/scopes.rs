//! SMART scopes: parsing (v1 and v2 syntax, PDex operation scopes), negotiation at the token
//! endpoint (never wider than registered), and evaluation for an access context.
//!
//! Pure functions over strings; no I/O.
//!
//! Rules implemented (SMART App Launch 2.2 `scopes-and-launch-context.md`):
//! - v2 grammar `(patient|user|system)/(Type|*).[c][r][u][d][s][?param=value&…]`, suffix letters
//!   a non-empty subset of `cruds` in that order; anything else is not a scope we grant.
//! - v1 `.read` ⇒ `.rs`, `.write` ⇒ `.cud`, `.*` ⇒ `.cruds`; a granted v1 scope is answered in v1.
//! - PDex operation scopes: the HRex member-match OperationDefinition URL, both spellings of
//!   the bulk-member-match URL (PDex 2.1 `…/bulk-member-match`, 2.2 `…/BulkMemberMatch`),
//!   and the Group export scope, written `system.Group.u?code=…` in the IG (read as
//!   `system/Group.u?code=…`, protocols.md §2.5).
//! - Granular `?param=value` scopes (SMART v2 "finer-grained resource constraints") are
//!   granted only to member apps (`negotiate_launch`, typed `patient/` read scopes), and
//!   enforced by the store's access layer as row conditions on every read path
//!   ([`granular_reads`]); backend negotiation (`negotiate`) still grants none besides the
//!   Group export scope. The token response's `scope` shows what was granted.

/// HRex `$member-match` operation scope.
pub const MEMBER_MATCH: &str =
    "http://hl7.org/fhir/us/davinci-hrex/OperationDefinition/member-match";
/// PDex `$bulk-member-match` operation scope (2.2.0 canonical spelling).
pub const BULK_MEMBER_MATCH: &str =
    "http://hl7.org/fhir/us/davinci-pdex/OperationDefinition/BulkMemberMatch";
/// PDex 2.1.0 spelling of the bulk-member-match scope; treated as [`BULK_MEMBER_MATCH`].
pub const BULK_MEMBER_MATCH_2_1: &str =
    "http://hl7.org/fhir/us/davinci-pdex/OperationDefinition/bulk-member-match";
/// PDex Group data-export scope, in SMART-valid form.
pub const GROUP_EXPORT: &str = "system/Group.u?code=http://hl7.org/fhir/us/davinci-pdex/ValueSet/PDexMultiMemberMatchResultVS|match";

/// Launch context of a resource scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    Patient,
    User,
    System,
}

impl Context {
    fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// Permission bits in SMART v2 order.
pub const C: u8 = 1;
pub const R: u8 = 2;
pub const U: u8 = 4;
pub const D: u8 = 8;
pub const S: u8 = 16;
const LETTERS: [(char, u8); 5] = [('c', C), ('r', R), ('u', U), ('d', D), ('s', S)];

/// A resource scope such as `system/Patient.rs` or `patient/*.read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub context: Context,
    /// `None` for `*`.
    pub rtype: Option<String>,
    pub perms: u8,
    /// The granular `?…` part, if any.
    pub query: Option<String>,
    /// Written in v1 syntax (`read`, `write`, `*`).
    pub v1: bool,
}

/// One parsed scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Resource(ResourceScope),
    /// An operation scope, normalized (see [`normalize_operation`]).
    Operation(String),
    /// Something else (`launch/patient`, `openid`, `offline_access`, …): never granted to
    /// backend clients.
    Other(String),
}

/// The normalized spelling of an operation scope: both bulk-member-match URLs become
/// [`BULK_MEMBER_MATCH`], `system.Group.…` becomes `system/Group.…`.
pub fn normalize_operation(s: &str) -> String {
    if s == BULK_MEMBER_MATCH_2_1 {
        return BULK_MEMBER_MATCH.to_owned();
    }
    if let Some(rest) = s.strip_prefix("system.Group.") {
        return format!("system/Group.{rest}");
    }
    s.to_owned()
}

fn is_operation(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || normalize_operation(s) == GROUP_EXPORT
}

/// Parses one scope string; `None` when it is malformed (e.g. out-of-order `.dus`).
pub fn parse(s: &str) -> Option<Scope> {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return None;
    }
    if is_operation(s) {
        return Some(Scope::Operation(normalize_operation(s)));
    }
    let Some((ctx, rest)) = s.split_once('/') else {
        return Some(Scope::Other(s.to_owned()));
    };
    let context = match ctx {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        _ => return Some(Scope::Other(s.to_owned())),
    };
    let (head, query) = match rest.split_once('?') {
        Some((h, q)) if !q.is_empty() => (h, Some(q.to_owned())),
        Some(_) => return None,
        None => (rest, None),
    };
    let (rtype, perm) = head.split_once('.')?;
    let rtype = match rtype {
        "*" => None,
        t if t.starts_with(|c: char| c.is_ascii_uppercase())
            && t.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            Some(t.to_owned())
        }
        _ => return None,
    };
    let (perms, v1) = match perm {
        "read" => (R | S, true),
        "write" => (C | U | D, true),
        "*" => (C | R | U | D | S, true),
        p => (v2_perms(p)?, false),
    };
    if v1 && query.is_some() {
        return None;
    }
    Some(Scope::Resource(ResourceScope {
        context,
        rtype,
        perms,
        query,
        v1,
    }))
}

/// `cruds` letters in order, each at most once, at least one.
fn v2_perms(p: &str) -> Option<u8> {
    let mut bits = 0u8;
    let mut next = 0usize;
    for ch in p.chars() {
        let pos = LETTERS[next..].iter().position(|(l, _)| *l == ch)? + next;
        bits |= LETTERS[pos].1;
        next = pos + 1;
    }
    (bits != 0).then_some(bits)
}

impl ResourceScope {
    /// The scope as a string: v1 spelling when it was requested that way and still means
    /// exactly a v1 permission set, v2 otherwise.
    pub fn render(&self) -> String {
        let t = self.rtype.as_deref().unwrap_or("*");
        let perm = match (self.v1, self.perms) {
            (true, p) if p == R | S => "read".to_owned(),
            (true, p) if p == C | U | D => "write".to_owned(),
            (true, p) if p == C | R | U | D | S => "*".to_owned(),
            (_, p) => LETTERS
                .iter()
                .filter(|(_, b)| p & b != 0)
                .map(|(l, _)| *l)
                .collect(),
        };
        let mut s = format!("{}/{t}.{perm}", self.context.as_str());
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }

    /// Does this scope grant `perm` on `rtype`? A granular scope grants reads and searches
    /// only (the access layer then restricts the rows to its query), never writes, and only
    /// on its one type.
    pub fn covers(&self, rtype: &str, perm: u8) -> bool {
        let allowed = match &self.query {
            None => self.rtype.as_deref().is_none_or(|t| t == rtype),
            Some(_) => perm & !(R | S) == 0 && self.rtype.as_deref() == Some(rtype),
        };
        allowed && self.perms & perm != 0
    }
}

/// The identity and launch-context scopes of the authorization-code flow (SMART App Launch
/// `scopes-and-launch-context.md`), granted whenever they are asked for: the member in
/// context, OpenID Connect, the `fhirUser` claim, and refresh tokens. (`launch`, the EHR
/// launch, is not supported and never granted.)
pub const LAUNCH_SCOPES: [&str; 5] = [
    "launch/patient",
    "openid",
    "fhirUser",
    "offline_access",
    "online_access",
];

/// What an `app` client registered without `--scope` may be granted: reading the member's
/// whole record and recording the member's own Consents.
pub const APP_DEFAULT_SCOPES: [&str; 2] = ["patient/*.rs", "patient/Consent.c"];

/// Negotiation for the authorization-code flow: each requested `patient/` resource scope
/// intersected with the `ceiling` (never wider), plus the [`LAUNCH_SCOPES`] requested, in the
/// order asked.
pub fn negotiate_launch(requested: &[String], ceiling: &[String]) -> Vec<String> {
    let mut out: Vec<String> = requested
        .iter()
        .filter(|s| LAUNCH_SCOPES.contains(&s.as_str()))
        .cloned()
        .collect();
    out.dedup();
    for s in negotiate(Some(requested), ceiling, Context::Patient) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    // granular reads (`patient/Observation.rs?category=laboratory`) under an unrestricted
    // ceiling scope of their type
    let ceiling: Vec<ResourceScope> = ceiling
        .iter()
        .filter_map(|s| match parse(s) {
            Some(Scope::Resource(r)) if r.context == Context::Patient && r.query.is_none() => {
                Some(r)
            }
            _ => None,
        })
        .collect();
    for want in requested.iter().filter_map(|s| match parse(s) {
        Some(Scope::Resource(r)) if r.context == Context::Patient && r.query.is_some() => Some(r),
        _ => None,
    }) {
        let Some(t) = &want.rtype else { continue };
        let perms = ceiling
            .iter()
            .filter(|g| g.rtype.as_deref().is_none_or(|gt| gt == t))
            .fold(0, |acc, g| acc | (g.perms & want.perms & (R | S)));
        if perms != 0 {
            let s = ResourceScope { perms, ..want }.render();
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// The types `granted` lets a caller read only through granular scopes in `contexts`, each
/// with the queries it may read (ORed): the access layer's row conditions. A type that also
/// has an unrestricted read scope is not listed.
pub fn granular_reads(granted: &[String], contexts: &[Context]) -> Vec<(String, Vec<String>)> {
    let reads: Vec<ResourceScope> = granted
        .iter()
        .filter_map(|s| match parse(s) {
            Some(Scope::Resource(r)) if contexts.contains(&r.context) && r.perms & (R | S) != 0 => {
                Some(r)
            }
            _ => None,
        })
        .collect();
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in &reads {
        let (Some(t), Some(q)) = (&r.rtype, &r.query) else {
            continue;
        };
        let unrestricted = reads
            .iter()
            .any(|o| o.query.is_none() && o.rtype.as_deref().is_none_or(|ot| ot == t));
        if unrestricted {
            continue;
        }
        match out.iter_mut().find(|(ot, _)| ot == t) {
            Some((_, qs)) if !qs.contains(q) => qs.push(q.clone()),
            Some(_) => {}
            None => out.push((t.clone(), vec![q.clone()])),
        }
    }
    out
}

/// Splits a space-separated scope parameter.
pub fn split(scope: &str) -> Vec<String> {
    scope.split_whitespace().map(str::to_owned).collect()
}

/// Scope negotiation (SMART Backend Services: "assure that the scope requested is within the
/// scope pre-authorized to the client"): returns the granted scopes for `requested` (`None`:
/// everything registered) given the `registered` ones, keeping only resource scopes of the
/// `context` the grant supports. Each requested resource scope is intersected with every
/// registered one of the same context (type ∩ type, permissions ∩ permissions); operation
/// scopes are granted when registered. The result is never wider than `registered`.
pub fn negotiate(
    requested: Option<&[String]>,
    registered: &[String],
    context: Context,
) -> Vec<String> {
    let registered: Vec<Scope> = registered.iter().filter_map(|s| parse(s)).collect();
    let requested: Vec<Scope> = match requested {
        Some(r) => r.iter().filter_map(|s| parse(s)).collect(),
        None => registered.clone(),
    };
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for want in &requested {
        match want {
            Scope::Operation(op) if registered.iter().any(|g| g == want) => {
                push(op.clone());
            }
            Scope::Resource(w) if w.context == context && w.query.is_none() => {
                for g in &registered {
                    let Scope::Resource(g) = g else { continue };
                    if g.context != context || g.query.is_some() {
                        continue;
                    }
                    let rtype = match (&w.rtype, &g.rtype) {
                        (None, t) | (t, None) => t.clone(),
                        (Some(a), Some(b)) if a == b => Some(a.clone()),
                        _ => continue,
                    };
                    let perms = w.perms & g.perms;
                    if perms == 0 {
                        continue;
                    }
                    push(
                        ResourceScope {
                            context,
                            rtype,
                            perms,
                            query: None,
                            v1: w.v1,
                        }
                        .render(),
                    );
                }
            }
            _ => {}
        }
    }
    out
}

/// The registered scopes re-read for a patient-scoped (member) grant: each `system/` or
/// `patient/` resource scope becomes the `patient/` scope with only its read permissions
/// (`r`, `s`). Member tokens never write.
pub fn as_patient_read(registered: &[String]) -> Vec<String> {
    registered
        .iter()
        .filter_map(|s| match parse(s)? {
            Scope::Resource(r)
                if r.query.is_none()
                    && matches!(r.context, Context::System | Context::Patient)
                    && r.perms & (R | S) != 0 =>
            {
                Some(
                    ResourceScope {
                        context: Context::Patient,
                        perms: r.perms & (R | S),
                        ..r
                    }
                    .render(),
                )
            }
            _ => None,
        })
        .collect()
}

/// Does any of `granted` allow `perm` on `rtype` in one of `contexts`?
pub fn allows(granted: &[String], contexts: &[Context], rtype: &str, perm: u8) -> bool {
    granted.iter().any(|s| match parse(s) {
        Some(Scope::Resource(r)) => contexts.contains(&r.context) && r.covers(rtype, perm),
        _ => false,
    })
}

/// The resource types `granted` lets a caller read or search in `contexts`: `None` means
/// every type (a `*` scope).
pub fn readable_types(granted: &[String], contexts: &[Context]) -> Option<Vec<String>> {
    let mut types = Vec::new();
    for s in granted {
        if let Some(Scope::Resource(r)) = parse(s)
            && contexts.contains(&r.context)
            && r.perms & (R | S) != 0
            // a granular scope names its type (its rows restricted by `granular_reads`)
            && (r.query.is_none() || r.rtype.is_some())
        {
            match r.rtype {
                None => return None,
                Some(t) if !types.contains(&t) => types.push(t),
                Some(_) => {}
            }
        }
    }
    Some(types)
}

/// Was the operation scope `canonical` granted (either spelling)?
pub fn has_operation(granted: &[String], canonical: &str) -> bool {
    let want = normalize_operation(canonical);
    granted.iter().any(|s| normalize_operation(s) == want)
}

/// Do any of `granted` allow creating, updating or deleting?
pub fn any_write(granted: &[String]) -> bool {
    granted.iter().any(|s| match parse(s) {
        Some(Scope::Resource(r)) => r.query.is_none() && r.perms & (C | U | D) != 0,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        split(s)
    }

    #[test]
    fn launch_negotiation_keeps_launch_scopes_and_narrows_resource_scopes() {
        let ceiling = v("patient/*.rs patient/Consent.c");
        let got = negotiate_launch(
            &v("launch/patient openid fhirUser offline_access patient/*.rs launch system/*.rs"),
            &ceiling,
        );
        assert_eq!(
            got,
            v("launch/patient openid fhirUser offline_access patient/*.rs")
        );
        // v1 answered in v1; a write on Consent narrowed to create
        assert_eq!(
            negotiate_launch(&v("patient/*.read patient/Consent.write"), &ceiling),
            v("patient/*.read patient/Consent.c")
        );
        // never wider than the ceiling
        assert_eq!(
            negotiate_launch(&v("patient/Observation.cruds"), &ceiling),
            v("patient/Observation.rs")
        );
        assert!(
            negotiate_launch(&v("patient/Observation.rs"), &v("patient/Coverage.rs")).is_empty()
        );
        // granular reads under an unrestricted ceiling of their type
        assert_eq!(
            negotiate_launch(&v("patient/Observation.rs?category=laboratory"), &ceiling),
            v("patient/Observation.rs?category=laboratory")
        );
        assert_eq!(
            negotiate_launch(
                &v("patient/Observation.cruds?category=laboratory"),
                &ceiling
            ),
            v("patient/Observation.rs?category=laboratory"),
            "reads only"
        );
        assert!(negotiate_launch(&v("patient/*.rs?category=laboratory"), &ceiling).is_empty());
        assert!(
            negotiate_launch(
                &v("patient/Observation.rs?category=laboratory"),
                &v("patient/Coverage.rs")
            )
            .is_empty()
        );
    }

    #[test]
    fn granular_reads_are_listed_only_where_nothing_wider_is_granted() {
        let p = [Context::Patient];
        let g = v(
            "patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs patient/Condition.rs",
        );
        assert_eq!(
            granular_reads(&g, &p),
            vec![(
                "Observation".to_owned(),
                vec![
                    "category=laboratory".to_owned(),
                    "category=vital-signs".to_owned()
                ]
            )]
        );
        assert_eq!(readable_types(&g, &p), Some(v("Observation Condition")));
        assert!(allows(&g, &p, "Observation", S) && !allows(&g, &p, "Observation", C));
        assert!(!allows(&g, &p, "Patient", R), "only its own type");
        assert!(
            granular_reads(
                &v("patient/Observation.rs?category=laboratory patient/*.rs"),
                &p
            )
            .is_empty()
        );
    }

    #[test]
    fn parses_v1_and_v2() {
        let Some(Scope::Resource(r)) = parse("system/*.read") else {
            panic!()
        };
        assert_eq!((r.rtype, r.perms, r.v1), (None, R | S, true));
        let Some(Scope::Resource(r)) = parse("patient/Observation.rs") else {
            panic!()
        };
        assert_eq!(r.rtype.as_deref(), Some("Observation"));
        assert_eq!(r.perms, R | S);
        assert!(!r.v1);
        assert_eq!(parse("system/Patient.cruds").map(|_| ()), Some(()));
    }

    #[test]
    fn rejects_out_of_order_and_garbage() {
        for bad in [
            "system/*.dus",
            "system/*.rr",
            "system/*.",
            "system/*.x",
            "system/patient.rs",
            "system/*.read?x=1",
            "system/Patient.rs?",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(
            parse("launch/patient"),
            Some(Scope::Other("launch/patient".into()))
        );
    }

    #[test]
    fn operation_scope_spellings() {
        assert!(has_operation(&v(BULK_MEMBER_MATCH_2_1), BULK_MEMBER_MATCH));
        assert!(has_operation(&v(BULK_MEMBER_MATCH), BULK_MEMBER_MATCH_2_1));
        let typo = GROUP_EXPORT.replacen("system/", "system.", 1);
        assert!(has_operation(&[typo], GROUP_EXPORT));
        assert!(!has_operation(&v(MEMBER_MATCH), BULK_MEMBER_MATCH));
    }

    #[test]
    fn negotiation_never_widens() {
        let reg = v("system/Patient.rs system/Group.rs");
        assert_eq!(
            negotiate(Some(&v("system/*.read")), &reg, Context::System),
            v("system/Patient.read system/Group.read")
        );
        assert_eq!(
            negotiate(Some(&v("system/*.cruds")), &reg, Context::System),
            v("system/Patient.rs system/Group.rs")
        );
        assert_eq!(
            negotiate(Some(&v("system/Observation.rs")), &reg, Context::System),
            Vec::<String>::new()
        );
        let reg = v("system/*.rs");
        assert_eq!(
            negotiate(
                Some(&v("system/Patient.r system/Coverage.cruds")),
                &reg,
                Context::System
            ),
            v("system/Patient.r system/Coverage.rs")
        );
        // patient/ and user/ scopes are not grantable in a system context; granular never
        assert_eq!(
            negotiate(
                Some(&v("patient/*.rs user/*.rs system/Patient.rs?name=x")),
                &v("system/*.* patient/*.rs"),
                Context::System
            ),
            Vec::<String>::new()
        );
        // no scope requested: what is registered
        assert_eq!(
            negotiate(
                None,
                &v(&format!("system/*.rs {MEMBER_MATCH}")),
                Context::System
            ),
            v(&format!("system/*.rs {MEMBER_MATCH}"))
        );
        // operations only when registered
        assert_eq!(
            negotiate(
                Some(&v(&format!("{BULK_MEMBER_MATCH} {MEMBER_MATCH}"))),
                &v(BULK_MEMBER_MATCH_2_1),
                Context::System
            ),
            v(BULK_MEMBER_MATCH)
        );
    }

    #[test]
    fn evaluation() {
        let g = v("system/Patient.rs system/Observation.r patient/*.read");
        let sys = [Context::System, Context::User];
        assert!(allows(&g, &sys, "Patient", S));
        assert!(allows(&g, &sys, "Observation", R));
        assert!(!allows(&g, &sys, "Observation", S));
        assert!(!allows(&g, &sys, "Coverage", R));
        assert!(!allows(&g, &sys, "Patient", U));
        assert!(allows(&g, &[Context::Patient], "Coverage", R));
        assert_eq!(readable_types(&g, &sys), Some(v("Patient Observation")));
        assert_eq!(readable_types(&g, &[Context::Patient]), None);
        assert!(!any_write(&g));
        assert!(any_write(&v("system/Patient.u")));
    }

    #[test]
    fn member_grants_read_only() {
        assert_eq!(
            as_patient_read(&v(
                "system/*.cruds system/Patient.c patient/Coverage.rs user/*.rs"
            )),
            v("patient/*.rs patient/Coverage.rs")
        );
        assert_eq!(as_patient_read(&v("system/*.read")), v("patient/*.read"));
    }
}
