//! The member's pages (HTML from `templates/`, rendered by askama with HTML escaping; never
//! string-built): the sign-in page, the authorization page, the account page and the error
//! page, and the
//! response headers every page carries (no caching, no framing, no referrer, a strict
//! content security policy).
//!
//! The form contract (DESIGN.md §5) lives in the templates: the sign-in form's `username`
//! and `password`; the authorization form's radio group `sensitive` (`share` | `withhold`,
//! withhold checked) and its submit buttons `decision` (`approve` | `deny`); every other
//! field is hidden.

use crate::identity::scopes::{self, Scope};
use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The name the pages show for the plan.
const PLAN: &str = "Your health plan";

/// The app asking, as the pages name it.
pub struct AppNames {
    pub name: String,
    /// The organization behind it, in words (`NPI 1234567893`).
    pub organization: Option<String>,
}

impl AppNames {
    pub fn of(client: &super::clients::Client) -> AppNames {
        AppNames {
            name: client.name.clone(),
            organization: client
                .organization
                .as_ref()
                .map(|o| match o.system.as_str() {
                    "http://hl7.org/fhir/sid/us-npi" => format!("NPI {}", o.value),
                    "urn:oid:2.16.840.1.113883.6.300" => format!("NAIC {}", o.value),
                    _ => format!("{} ({})", o.value, o.system),
                }),
        }
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignInPage<'a> {
    pub plan: &'a str,
    /// The app asking (the authorization flow); `None` on the account page's sign-in.
    pub app: Option<&'a AppNames>,
    pub action: &'a str,
    pub request: &'a str,
    pub csrf: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "authorize.html")]
pub struct AuthorizePage<'a> {
    pub plan: &'a str,
    pub app: &'a AppNames,
    pub action: &'a str,
    pub request: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub asks: Vec<String>,
    /// Whose records, when the login may act for more than one person: (Patient id, words).
    pub people: &'a [(String, String)],
}

/// One authorization on the account page.
pub struct AccountEntry {
    /// The authorization's id (the revoke form's hidden `grant`).
    pub id: String,
    pub name: String,
    pub organization: Option<String>,
    /// When it was given, `YYYY-MM-DD`.
    pub when: String,
    /// Whose records, when the login acts for someone else (`Patient/…`); else empty.
    pub for_whom: String,
    /// `shared` or `withheld`.
    pub sensitive: &'static str,
    pub asks: Vec<String>,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    plan: &'a str,
    username: &'a str,
    csrf: &'a str,
    revoke_action: &'a str,
    entries: &'a [AccountEntry],
    notice: Option<&'a str>,
}

/// The account page: what the member has authorized, each with its revoke form.
pub fn account(
    username: &str,
    csrf: &str,
    revoke_action: &str,
    entries: &[AccountEntry],
    notice: Option<&str>,
) -> Response {
    render(
        StatusCode::OK,
        AccountPage {
            plan: PLAN,
            username,
            csrf,
            revoke_action,
            entries,
            notice,
        },
    )
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    plan: &'a str,
    heading: &'a str,
    message: &'a str,
}

/// The sign-in page (status 200, or 401 after a refused sign-in).
pub fn sign_in(
    status: StatusCode,
    app: Option<&AppNames>,
    action: &str,
    request: &str,
    csrf: &str,
    error: Option<&str>,
) -> Response {
    render(
        status,
        SignInPage {
            plan: PLAN,
            app,
            action,
            request,
            csrf,
            error,
        },
    )
}

/// The authorization page.
pub fn authorize(
    app: &AppNames,
    action: &str,
    request: &str,
    csrf: &str,
    username: &str,
    granted: &[String],
    people: &[(String, String)],
) -> Response {
    render(
        StatusCode::OK,
        AuthorizePage {
            plan: PLAN,
            app,
            action,
            request,
            csrf,
            username,
            asks: describe(granted),
            people,
        },
    )
}

/// A Patient in words for its representative: "Given Family, born YYYY-MM-DD".
pub fn person_words(patient: &serde_json::Value) -> String {
    let name = &patient["name"][0];
    let given: Vec<&str> = name["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str())
        .collect();
    let mut words = format!(
        "{} {}",
        given.join(" "),
        name["family"].as_str().unwrap_or("")
    )
    .trim()
    .to_owned();
    if let Some(born) = patient["birthDate"].as_str() {
        words.push_str(&format!(", born {born}"));
    }
    words
}

/// An error page with `status` (never a redirect).
pub fn error(status: StatusCode, message: &str) -> Response {
    let heading = match status {
        StatusCode::BAD_REQUEST => "This request cannot be handled",
        StatusCode::FORBIDDEN => "This form has expired",
        StatusCode::NOT_FOUND => "Page not found",
        StatusCode::SERVICE_UNAVAILABLE => "Please try again in a moment",
        s if s.is_server_error() => "Something went wrong",
        _ => "This request cannot be handled",
    };
    render(
        status,
        ErrorPage {
            plan: PLAN,
            heading,
            message,
        },
    )
}

fn render(status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(html) => with_page_headers((status, html).into_response()),
        Err(e) => {
            tracing::error!(target: "pdex::auth", error = %e, "cannot render a page");
            with_page_headers(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>Error</title><p>Something went wrong.</p>",
                )
                    .into_response(),
            )
        }
    }
}

/// The headers of every page: HTML, never cached (they carry CSRF tokens), never framed
/// (clickjacking of the Allow button), no referrer (the URL carries the request), and a
/// policy that allows nothing but the page's own inline styles. (`form-action` is left out
/// on purpose: browsers apply it to the redirect to the app that follows the decision.)
pub fn with_page_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Plain-language lines for what the granted scopes allow.
pub fn describe(granted: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for s in granted {
        match scopes::parse(s) {
            Some(Scope::Resource(r)) => {
                let mut what = r.rtype.as_deref().map_or_else(
                    || "all of your health and claims records".to_owned(),
                    |t| format!("your {}", type_words(t)),
                );
                if let Some(q) = &r.query {
                    what.push_str(&format!(" (only those with {})", q.replace('&', " and ")));
                }
                if r.perms & (scopes::R | scopes::S) != 0 {
                    push(format!("See {what}"));
                }
                if r.perms & scopes::C != 0 {
                    push(format!("Record {what} for you"));
                }
            }
            Some(Scope::Other(o)) => match o.as_str() {
                "openid" | "fhirUser" => push("Know who you are (your member record)".into()),
                "launch/patient" => push("Know which member's records you chose".into()),
                "offline_access" => {
                    push("Keep this access after you close the app, until it is stopped".into())
                }
                "online_access" => push("Keep this access while you use the app".into()),
                _ => {}
            },
            _ => {}
        }
    }
    out
}

fn type_words(rtype: &str) -> String {
    match rtype {
        "Patient" => "member details (name, birth date, contact details)".into(),
        "Coverage" => "insurance coverage".into(),
        "ExplanationOfBenefit" => "claims".into(),
        "Condition" => "conditions and diagnoses".into(),
        "Observation" => "test results and measurements".into(),
        "MedicationRequest" | "MedicationDispense" => "medications".into(),
        "Immunization" => "immunizations".into(),
        "AllergyIntolerance" => "allergies".into(),
        "Procedure" => "procedures".into(),
        "Encounter" => "visits".into(),
        "Consent" => "consent decisions".into(),
        "DocumentReference" => "documents and notes".into(),
        other => format!("{other} records"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_in_plain_language() {
        let lines = describe(&scopes::split(
            "launch/patient openid fhirUser offline_access patient/*.rs patient/Consent.c",
        ));
        assert_eq!(
            lines,
            vec![
                "Know which member's records you chose",
                "Know who you are (your member record)",
                "Keep this access after you close the app, until it is stopped",
                "See all of your health and claims records",
                "Record your consent decisions for you",
            ]
        );
    }

    #[test]
    fn pages_escape_what_they_show() {
        let app = AppNames {
            name: "<script>x</script>".into(),
            organization: None,
        };
        let resp = sign_in(StatusCode::OK, Some(&app), "/a", "r", "c", None);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let page = SignInPage {
            plan: PLAN,
            app: Some(&app),
            action: "/a",
            request: "r",
            csrf: "c",
            error: None,
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>x"));
        assert!(page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"));
    }
}
