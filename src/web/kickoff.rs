//! The one extractor of an asynchronous kick-off ([`KickOff`]): the caller's access, the
//! method, the URL as requested, the headers and the body — what every kick-off handler
//! (Bulk `$export` at each level, `$davinci-data-export`, `$bulk-member-match`) needs, read
//! once, with the Bulk Data rules shared by all of them: `Prefer: respond-async` and
//! `Accept` ([`KickOff::check_headers`]), parameters from the query (GET) or a `Parameters`
//! body (POST) ([`KickOff::params`]), and the manifest's `request` URL
//! ([`KickOff::request_url`]).

use super::http::{body_text, check_format, query_pairs};
use super::{Access, SharedState};
use crate::fhir::FhirError;
use crate::fhir::parameters::Parameter;
use crate::identity::AccessContext;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

/// See the module doc.
pub struct KickOff {
    pub ctx: AccessContext,
    pub method: Method,
    pub uri: OriginalUri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The FHIR base of the listener the kick-off came in on (`web::Base`): the polling URL
    /// and the manifest are handed out on it.
    pub base: String,
}

impl FromRequest<SharedState> for KickOff {
    type Rejection = Response;
    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Access(ctx) = Access::from_request_parts(&mut parts, state).await?;
        let uri = OriginalUri::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Ok(super::Base(base)) = super::Base::from_request_parts(&mut parts, state).await;
        let req = Request::from_parts(parts, body);
        let method = req.method().clone();
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(KickOff {
            ctx,
            method,
            uri,
            headers,
            body,
            base,
        })
    }
}

impl KickOff {
    /// Was it a POST (parameters in a `Parameters` body; Bulk STU2 `patient` is POST-only)?
    pub fn is_post(&self) -> bool {
        self.method == Method::POST
    }

    /// The kick-off parameters: from the query of a GET, from the `Parameters` body of a
    /// POST (Bulk STU2 kick-off).
    pub fn params(&self) -> Result<Vec<Parameter>, FhirError> {
        if self.is_post() {
            let text = body_text(&self.headers, &self.body)?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| FhirError::bad_request(format!("the body is not JSON: {e}")))?;
            crate::fhir::parameters::read(&value)
        } else {
            Ok(query_pairs(self.uri.query())
                .into_iter()
                .map(|(name, value)| Parameter { name, value })
                .collect())
        }
    }

    /// The body as text (a kick-off whose body is a profiled resource of its own).
    pub fn body_text(&self) -> Result<String, FhirError> {
        body_text(&self.headers, &self.body)
    }

    /// The headers every kick-off checks: `Prefer: respond-async` is required (Bulk STU2
    /// lets the server reject or default; PDex makes it a SHALL, §pdex-147), and `Accept`,
    /// when sent, must allow `application/fhir+json`.
    pub fn check_headers(&self) -> Result<(), FhirError> {
        check_respond_async(&self.headers)
    }

    /// The kick-off URL as the manifest's `request` reports it, on the listener's base (with
    /// the query of a GET).
    pub fn request_url(&self) -> String {
        let base_url = &self.base;
        let path = self.uri.path();
        let tail = path.strip_prefix("/fhir").unwrap_or(path);
        match self.uri.query() {
            Some(q) if !self.is_post() && !q.is_empty() => format!("{base_url}{tail}?{q}"),
            _ => format!("{base_url}{tail}"),
        }
    }
}

/// See [`KickOff::check_headers`].
fn check_respond_async(headers: &HeaderMap) -> Result<(), FhirError> {
    let respond_async = headers.get_all("prefer").iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .split([',', ';'])
            .any(|p| p.trim() == "respond-async")
    });
    if !respond_async {
        return Err(FhirError::bad_request(
            "an export runs asynchronously: send Prefer: respond-async",
        ));
    }
    check_format(headers, &[])
}
