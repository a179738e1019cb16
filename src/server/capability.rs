//! `GET /fhir/metadata`: the CapabilityStatement, generated from what this server really
//! supports (the resource types and search parameters of the registry). Readable without
//! authorization, as US Core and the PDex kit require.

use crate::ops::Level;
use crate::search::{ParamType, Registry};
use crate::web::SharedState;
use crate::web::http::fhir_json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

fn type_code(kind: ParamType) -> &'static str {
    match kind {
        ParamType::Number => "number",
        ParamType::Date => "date",
        ParamType::String => "string",
        ParamType::Token => "token",
        ParamType::Reference => "reference",
        ParamType::Composite => "composite",
        ParamType::Quantity => "quantity",
        ParamType::Uri => "uri",
        ParamType::Special => "special",
    }
}

/// The CapabilityStatement as JSON. Built once at start-up (by `app::Server::bind_tls`, handed to `web::AppState::new`): it depends
/// only on the registry and the base URL.
pub fn capability_statement(
    registry: &Registry,
    base_url: &str,
    oauth: &crate::auth::AuthSettings,
) -> Value {
    let mut types: Vec<&str> = registry.resource_types();
    types.sort_unstable();
    let resources: Vec<Value> = types
        .iter()
        .map(|t| {
            let params: Vec<Value> = registry
                .for_type(t)
                .into_iter()
                .filter(|p| p.path.is_some() || p.code == "_id" || p.code == "_lastUpdated")
                .map(|p| json!({"name": p.code, "definition": p.url, "type": type_code(p.kind)}))
                .collect();
            let mut includes: Vec<String> = registry
                .for_type(t)
                .into_iter()
                .filter(|p| p.kind == ParamType::Reference && p.path.is_some())
                .map(|p| format!("{t}:{}", p.code))
                .collect();
            includes.push(format!("{t}:*"));
            // §pdex-98/225: every operation offered is declared, with the exact canonicals
            // (from the one table, `ops::OPERATIONS`).
            let operations: Vec<Value> = crate::ops::OPERATIONS
                .iter()
                .filter(|op| matches!(op.level, Level::Type(r) | Level::Instance(r) if r == *t))
                .map(|op| json!({"name": op.name, "definition": op.canonical}))
                .collect();
            let mut resource = json!({
                "type": t,
                "interaction": [
                    {"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "delete"},
                    {"code": "history-instance"}, {"code": "create"}, {"code": "search-type"}
                ],
                "versioning": "versioned",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchInclude": includes,
                "searchRevInclude": ["Provenance:target"],
                "searchParam": params,
            });
            if !operations.is_empty() {
                resource["operation"] = json!(operations);
            }
            let profiles = super::profiles::supported_profiles(t);
            if !profiles.is_empty() {
                resource["supportedProfile"] = json!(profiles);
            }
            resource
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "id": "pdex-server",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "pdex",
        "kind": "instance",
        "software": {"name": "pdex", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "pdex FHIR R4 server", "url": base_url},
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json", "application/json"],
        "rest": [{
            "mode": "server",
            "security": security(oauth),
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "operation": crate::ops::OPERATIONS
                .iter()
                .filter(|op| op.level == Level::System)
                .map(|op| json!({"name": op.name, "definition": op.canonical}))
                .collect::<Vec<_>>(),
            "searchParam": [
                {"name": "_count", "type": "number"},
                {"name": "_sort", "type": "string"},
                {"name": "_include", "type": "string"},
                {"name": "_revinclude", "type": "string"},
                {"name": "_summary", "type": "token"},
                {"name": "_total", "type": "token"},
                {"name": "_elements", "type": "string"}
            ]
        }]
    })
}

/// `rest.security`: the SMART-on-FHIR service code and the SMART v1 `oauth-uris` extension
/// (PDex 2.1 `payertopayerexchange.md`: "The security section within the Capability Statement
/// will define the SMART-on-FHIR endpoints for Access Tokens"; protocols.md §2.2).
fn security(oauth: &crate::auth::AuthSettings) -> Value {
    json!({
        "cors": true,
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"
            }],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"
        }],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": oauth.authorize_url()},
                {"url": "token", "valueUri": oauth.token_url()},
                {"url": "introspect", "valueUri": oauth.introspection_url()},
                {"url": "revoke", "valueUri": oauth.revocation_url()}
            ]
        }],
        "description": "Backend clients get tokens at the token endpoint with private_key_jwt or tls_client_auth (SMART Backend Services); members authorize apps at the authorize endpoint (SMART App Launch standalone launch, PKCE S256); discovery at .well-known/smart-configuration. 401: no valid access token; 403: the token's scopes do not cover the request."
    })
}

pub async fn metadata(
    State(state): State<SharedState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, crate::fhir::FhirError> {
    crate::web::http::check_format(&headers, &crate::web::http::query_pairs(q.as_deref()))?;
    Ok(fhir_json(StatusCode::OK, state.capability.clone()))
}
