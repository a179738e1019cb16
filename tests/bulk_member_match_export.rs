//! `Group/{id}/$davinci-data-export` on a Matched Group from `$bulk-member-match`, on the real
//! job engine: consent re-checked per member when the job runs (a consent revoked after the
//! match leaves that member out, reported), the `patient` subset (non-members ignored and
//! reported), `_type` / `_typeFilter`, the PDex 2.1 / 2.2 `_since` rule, `exportType`, and
//! another payer refused.
//!
//! Until the authorization server is in `main`, only admin and operator contexts pass the
//! type scope checks, so the export is kicked off with the new payer's organization on an
//! admin-kind context (the consent re-check keys on the organization); the refusal of another
//! payer uses a payer-kind context, whose Group reads go through the ownership rule.

mod common;
#[path = "support/jobs.rs"]
mod jobs;

use axum::http::{HeaderMap, HeaderValue};
use common::{Backend, TestServer, backends};
use pdex::auth::{AccessContext, ClientKind, DataScope, OrgIdentifier};
use pdex::bulk::request::RawParam;
use pdex::config::{PdexVersion, ServerConfig};
use pdex::ops::bulk_member_match::OPERATION;
use pdex::ops::davinci_data_export::{self, EXPORT_TYPE_PAYER_TO_PAYER};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
const NEW_PAYER_NPI: &str = "0123456789";

fn demo_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

fn member(id: &str) -> Value {
    let all: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(demo_dir().join("members.json")).unwrap())
            .unwrap();
    all.into_iter().find(|m| m["patient_id"] == id).unwrap()
}

async fn server(b: &Backend, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let s = TestServer::start_with(b, configure).await;
    let r = pdex::import::import(&s.state.store, &[demo_dir()], Default::default())
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    s
}

fn org(npi: &str) -> OrgIdentifier {
    OrgIdentifier {
        system: NPI.into(),
        value: npi.into(),
    }
}

fn payer(npi: &str) -> AccessContext {
    AccessContext {
        client_id: Some(format!("payer-{npi}")),
        kind: ClientKind::Payer,
        organization: Some(org(npi)),
        scopes: vec![OPERATION.into(), "system/Group.rs".into()],
        scope: DataScope::Patients(vec![]),
        allow_sensitive: false,
        can_write: false,
        cert_thumbprint: None,
    }
}

fn day(offset_days: i64) -> String {
    let d = chrono::Utc::now().date_naive() + chrono::Duration::days(offset_days);
    d.format("%Y-%m-%d").to_string()
}

fn bundle_for(m: &Value) -> Value {
    let input: Value = serde_json::from_str(include_str!(
        "fixtures/pdex/Parameters-payer-multi-member-match-in.json"
    ))
    .unwrap();
    let mut b = input["parameter"][0].clone();
    for p in b["part"].as_array_mut().unwrap() {
        let name = p["name"].as_str().unwrap().to_owned();
        let r = &mut p["resource"];
        match name.as_str() {
            "MemberPatient" => {
                r["id"] = json!(format!("sent-{}", m["patient_id"].as_str().unwrap()));
                r["name"] = json!([{"family": m["family"], "given": m["given"]}]);
                r["birthDate"] = m["birthDate"].clone();
                r["gender"] = m["gender"].clone();
            }
            "CoverageToMatch" => {
                r["identifier"] = json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "value": m["member_id"]}]);
                r["subscriberId"] = m["subscriber_id"].clone();
            }
            "Consent" => r["provision"]["period"] = json!({"start": day(-10), "end": day(80)}),
            _ => {}
        }
    }
    b
}

fn async_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("prefer", HeaderValue::from_static("respond-async"));
    h
}

/// Matches `ids` for the new payer; returns the Matched Group's id.
async fn matched_group(s: &TestServer, ids: &[&str]) -> String {
    let body = json!({"resourceType": "Parameters", "parameter": ids.iter().map(|i| bundle_for(&member(i))).collect::<Vec<_>>()});
    let url = format!("{}/Group/$bulk-member-match", s.state.base_url);
    let resp = pdex::ops::bulk_match_job::kickoff(
        &s.state,
        &payer(NEW_PAYER_NPI),
        &async_headers(),
        &body.to_string(),
        &url,
    )
    .await
    .unwrap();
    let id = jobs::job_id(&resp);
    jobs::files(&s.state, &id).await;
    id
}

/// The new payer's export context (see the module comment).
fn exporter() -> AccessContext {
    let mut ctx = payer(NEW_PAYER_NPI);
    ctx.kind = ClientKind::Admin;
    ctx.scope = DataScope::All;
    ctx.scopes.push("system/*.rs".into());
    ctx
}

fn params(pairs: &[(&str, &str)]) -> Vec<RawParam> {
    pairs
        .iter()
        .map(|(n, v)| RawParam {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

async fn export(
    s: &TestServer,
    ctx: &AccessContext,
    group: &str,
    raw: Vec<RawParam>,
) -> jobs::Files {
    let url = format!("{}/Group/{group}/$davinci-data-export", s.state.base_url);
    let resp =
        davinci_data_export::kickoff(&s.state, ctx, group, raw, true, &async_headers(), &url)
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    jobs::files(&s.state, &jobs::job_id(&resp)).await
}

/// Ids per exported type, and the error-file diagnostics.
fn summary(files: &jobs::Files) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut errors = Vec::new();
    for (section, rtype, lines) in files {
        if section == "error" {
            errors.extend(
                lines
                    .iter()
                    .map(|l| l["issue"][0]["diagnostics"].as_str().unwrap().to_owned()),
            );
        } else if section == "output" {
            let mut ids: Vec<String> = lines
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            match out.iter_mut().find(|(t, _)| t == rtype) {
                Some((_, v)) => v.extend(ids),
                None => out.push((rtype.clone(), ids)),
            }
        }
    }
    (out, errors)
}

fn ids_of<'a>(s: &'a [(String, Vec<String>)], rtype: &str) -> Vec<&'a str> {
    s.iter()
        .find(|(t, _)| t == rtype)
        .map(|(_, v)| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn consent_is_rechecked_per_member_and_the_parameters_apply() {
    for b in backends() {
        let s = server(&b, |_| {}).await;
        let group = matched_group(&s, &["m000001", "m000003", "m000007"]).await;
        let ctx = exporter();
        let p2p = ("exportType", EXPORT_TYPE_PAYER_TO_PAYER);

        // all three consented: their Patients are exported
        let (out, errors) =
            summary(&export(&s, &ctx, &group, params(&[p2p, ("_type", "Patient")])).await);
        assert_eq!(ids_of(&out, "Patient"), ["m000001", "m000003", "m000007"]);
        assert!(errors.is_empty(), "{errors:?}");

        // the member withdraws consent after the match: left out at execution, reported
        let n = pdex::consent::stored::revoke(&s.state.store, "m000003", &org(NEW_PAYER_NPI))
            .await
            .unwrap();
        assert_eq!(n, 1);
        let (out, errors) = summary(
            &export(
                &s,
                &ctx,
                &group,
                params(&[p2p, ("_type", "Patient,Coverage")]),
            )
            .await,
        );
        assert_eq!(ids_of(&out, "Patient"), ["m000001", "m000007"]);
        assert!(
            ids_of(&out, "Coverage")
                .iter()
                .all(|c| !c.starts_with("m000003"))
        );
        assert!(!ids_of(&out, "Coverage").is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("Patient/m000003"), "{errors:?}");

        // patient subset: non-members are ignored and reported
        let (out, errors) = summary(
            &export(
                &s,
                &ctx,
                &group,
                params(&[
                    ("patient", "Patient/m000001"),
                    ("patient", "Patient/m000002"),
                    ("_type", "Patient"),
                ]),
            )
            .await,
        );
        assert_eq!(ids_of(&out, "Patient"), ["m000001"]);
        assert!(errors.iter().any(|e| e.contains("m000002")), "{errors:?}");

        // _typeFilter filters (a new match for m000003 stores a new consent)
        let group2 = matched_group(&s, &["m000001", "m000003"]).await;
        let (out, _) = summary(
            &export(
                &s,
                &ctx,
                &group2,
                params(&[("_type", "Patient"), ("_typeFilter", "Patient?gender=male")]),
            )
            .await,
        );
        assert_eq!(ids_of(&out, "Patient"), ["m000003"]);

        // unknown exportType → 400; another payer cannot export (or see) the Group
        let url = format!("{}/Group/{group}/$davinci-data-export", s.state.base_url);
        let e = davinci_data_export::kickoff(
            &s.state,
            &ctx,
            &group,
            params(&[("exportType", "hl7.fhir.us.davinci-pdex#provider-delta")]),
            true,
            &async_headers(),
            &url,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = davinci_data_export::kickoff(
            &s.state,
            &payer("1111111111"),
            &group,
            params(&[p2p]),
            true,
            &async_headers(),
            &url,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        s.stop().await;
    }
}

#[tokio::test]
async fn the_since_rule_follows_the_pdex_version() {
    for version in [PdexVersion::V21, PdexVersion::V22] {
        for b in backends() {
            let s = server(&b, |c| c.exchange.pdex_version = version).await;
            let group = matched_group(&s, &["m000001"]).await;
            // one of the member's Coverages was last updated six years ago
            let six_years_ago = chrono::Utc::now().timestamp_millis() - 6 * 366 * 86_400_000;
            let old = member("m000001")["coverage_id"]
                .as_str()
                .unwrap()
                .to_string();
            s.state
                .store
                .db
                .fetch(
                    "UPDATE resources SET last_updated = ? WHERE rtype = 'Coverage' AND id = ?",
                    &[six_years_ago.into(), old.as_str().into()],
                )
                .await
                .unwrap();
            let ctx = exporter();
            for since in [None, Some("2015-01-01T00:00:00Z")] {
                let mut raw = vec![("_type", "Patient,Coverage")];
                if let Some(v) = since {
                    raw.push(("_since", v));
                }
                let (out, errors) = summary(&export(&s, &ctx, &group, params(&raw)).await);
                let coverages = ids_of(&out, "Coverage");
                match version {
                    // data limited to five years; an older _since is moved, and we say so
                    PdexVersion::V21 => {
                        assert!(!coverages.contains(&old.as_str()), "{coverages:?}");
                        assert_eq!(ids_of(&out, "Patient"), ["m000001"]);
                        assert_eq!(
                            since.is_some(),
                            errors.iter().any(|e| e.contains("five years")),
                            "{errors:?}"
                        );
                    }
                    // never rewritten, nothing cut off
                    PdexVersion::V22 => {
                        assert!(coverages.contains(&old.as_str()), "{coverages:?}");
                        assert!(errors.is_empty(), "{errors:?}");
                    }
                }
            }
            s.stop().await;
        }
    }
}
