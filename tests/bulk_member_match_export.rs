//! `Group/{id}/$davinci-data-export` on a Matched Group from `$bulk-member-match`, over HTTP
//! with real payer tokens, on the real job engine: consent re-checked per member when the job
//! runs (a consent revoked with `pdex consent revoke` after the match leaves that member out,
//! reported), each member's own sensitivity allowance (`#sensitive` releases that member's
//! sensitive data, `#regular` does not), the `patient` subset (non-members ignored and
//! reported), `_type` / `_typeFilter`, the PDex 2.1 / 2.2 `_since` rule, `exportType`, and
//! another payer refused (the Group, the export and the first payer's job).

mod common;
#[path = "support/jobs.rs"]
mod jobs;
#[path = "support/release.rs"]
mod release;

use common::{ClientSpec, TestServer, backends};
use pdex::config::PdexVersion;
use pdex::identity::ClientKind;
use pdex::ops::davinci_data_export::EXPORT_TYPE_PAYER_TO_PAYER;

const OPERATION: &str = "http://hl7.org/fhir/us/davinci-pdex/OperationDefinition/BulkMemberMatch";
const DATA_EXPORT: &str =
    "http://hl7.org/fhir/us/davinci-atr/OperationDefinition/davinci-data-export";
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const NEW_PAYER: &str = "http://hl7.org/fhir/sid/us-npi|0123456789";
const OTHER_PAYER: &str = "http://hl7.org/fhir/sid/us-npi|1111111111";
const SENSITIVE: &str =
    "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition-hrex-consent.html#sensitive";

/// A payer client of `organization` with the bulk match and export scopes, and a reqwest
/// client carrying a fresh token of it.
async fn payer(s: &TestServer, organization: &str) -> Client {
    let client = s
        .register_client(ClientSpec {
            name: format!("payer {organization}"),
            kind: ClientKind::Payer,
            organization: Some(organization.into()),
            scopes: format!("system/*.rs {OPERATION} {DATA_EXPORT}"),
            ..ClientSpec::default()
        })
        .await;
    s.http(&client.token(s).await)
}

fn day(offset_days: i64) -> String {
    let d = chrono::Utc::now().date_naive() + chrono::Duration::days(offset_days);
    d.format("%Y-%m-%d").to_string()
}

fn bundle_for(m: &Value, policy: Option<&str>) -> Value {
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
            "Consent" => {
                r["provision"]["period"] = json!({"start": day(-10), "end": day(80)});
                if let Some(uri) = policy {
                    r["policy"] = json!([{"uri": uri}]);
                }
            }
            _ => {}
        }
    }
    b
}

/// `$bulk-member-match` of `ids` (with the IG example's `#regular` consent, or `policy`) by
/// `http`, over HTTP; returns the Matched Group's id.
async fn matched_group_with(s: &TestServer, http: &Client, ids: &[(&str, Option<&str>)]) -> String {
    let body = json!({"resourceType": "Parameters", "parameter": ids.iter().map(|(i, p)| bundle_for(&common::demo_member(i), *p)).collect::<Vec<_>>()});
    let resp = http
        .post(s.url("Group/$bulk-member-match"))
        .header("Prefer", "respond-async")
        .header("Content-Type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let poll = jobs::accepted(resp).await;
    let files = jobs::download(http, &jobs::manifest(&s.state, http, &poll).await).await;
    let group = files
        .iter()
        .flat_map(|(_, _, lines)| lines)
        .find(|g| g["resourceType"] == "Group" && g["code"]["coding"][0]["code"] == "match")
        .expect("a Matched Group");
    group["id"].as_str().unwrap().to_owned()
}

async fn matched_group(s: &TestServer, http: &Client, ids: &[&str]) -> String {
    let ids: Vec<(&str, Option<&str>)> = ids.iter().map(|i| (*i, None)).collect();
    matched_group_with(s, http, &ids).await
}

/// `POST Group/{group}/$davinci-data-export` with `params` as a Parameters body.
async fn kickoff(
    s: &TestServer,
    http: &Client,
    group: &str,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let parameter: Vec<Value> = params
        .iter()
        .map(|(n, v)| match *n {
            "patient" => json!({"name": n, "valueReference": {"reference": v}}),
            _ => json!({"name": n, "valueString": v}),
        })
        .collect();
    http.post(s.url(&format!("Group/{group}/$davinci-data-export")))
        .header("Prefer", "respond-async")
        .header("Content-Type", "application/fhir+json")
        .body(json!({"resourceType": "Parameters", "parameter": parameter}).to_string())
        .send()
        .await
        .unwrap()
}

/// Runs an export to its manifest and downloads its files, as `http`.
async fn export(
    s: &TestServer,
    http: &Client,
    group: &str,
    params: &[(&str, &str)],
) -> jobs::Files {
    let poll = jobs::accepted(kickoff(s, http, group, params).await).await;
    jobs::download(http, &jobs::manifest(&s.state, http, &poll).await).await
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
        let s = TestServer::start_demo(&b, |_| {}).await;
        let new_payer = payer(&s, NEW_PAYER).await;
        let group = matched_group(&s, &new_payer, &["m000001", "m000003", "m000007"]).await;
        let p2p = ("exportType", EXPORT_TYPE_PAYER_TO_PAYER);

        // all three consented: their Patients are exported
        let (out, errors) =
            summary(&export(&s, &new_payer, &group, &[p2p, ("_type", "Patient")]).await);
        assert_eq!(ids_of(&out, "Patient"), ["m000001", "m000003", "m000007"]);
        assert!(errors.is_empty(), "{errors:?}");

        // the member withdraws consent after the match (the operator runs `pdex consent
        // revoke`): left out at execution, reported
        assert_eq!(common::revoke_consent_with_cli(&s, "m000003", NEW_PAYER), 1);
        assert_eq!(
            common::revoke_consent_with_cli(&s, "m000003", NEW_PAYER),
            0,
            "nothing left to revoke"
        );
        let (out, errors) = summary(
            &export(
                &s,
                &new_payer,
                &group,
                &[p2p, ("_type", "Patient,Coverage")],
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
                &new_payer,
                &group,
                &[
                    ("patient", "Patient/m000001"),
                    ("patient", "Patient/m000002"),
                    ("_type", "Patient"),
                ],
            )
            .await,
        );
        assert_eq!(ids_of(&out, "Patient"), ["m000001"]);
        assert!(errors.iter().any(|e| e.contains("m000002")), "{errors:?}");

        // _typeFilter filters (a new match for m000003 stores a new consent)
        let group2 = matched_group(&s, &new_payer, &["m000001", "m000003"]).await;
        let (out, _) = summary(
            &export(
                &s,
                &new_payer,
                &group2,
                &[("_type", "Patient"), ("_typeFilter", "Patient?gender=male")],
            )
            .await,
        );
        assert_eq!(ids_of(&out, "Patient"), ["m000003"]);

        // unknown exportType → 400
        let resp = kickoff(
            &s,
            &new_payer,
            &group,
            &[("exportType", "hl7.fhir.us.davinci-pdex#provider-delta")],
        )
        .await;
        common::assert_outcome(resp, StatusCode::BAD_REQUEST).await;
        s.stop().await;
    }
}

#[tokio::test]
async fn another_payer_sees_neither_the_group_nor_the_export_nor_the_job() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let new_payer = payer(&s, NEW_PAYER).await;
        let other = payer(&s, OTHER_PAYER).await;
        let group = matched_group(&s, &new_payer, &["m000001"]).await;

        // the Group: 404 to the other payer (existence not revealed), 200 to its owner
        let resp = new_payer
            .get(s.url(&format!("Group/{group}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = other
            .get(s.url(&format!("Group/{group}")))
            .send()
            .await
            .unwrap();
        common::assert_outcome(resp, StatusCode::NOT_FOUND).await;
        // the export of it: 404, through $davinci-data-export and plain Group $export
        common::assert_outcome(
            kickoff(&s, &other, &group, &[]).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        let resp = other
            .get(s.url(&format!("Group/{group}/$export")))
            .header("Prefer", "respond-async")
            .send()
            .await
            .unwrap();
        common::assert_outcome(resp, StatusCode::NOT_FOUND).await;

        // the owner's job: the other payer can neither poll, download nor cancel it
        let poll =
            jobs::accepted(kickoff(&s, &new_payer, &group, &[("_type", "Patient")]).await).await;
        let manifest = jobs::manifest(&s.state, &new_payer, &poll).await;
        let file = manifest["output"][0]["url"].as_str().unwrap();
        for resp in [
            other.get(&poll).send().await.unwrap(),
            other.get(file).send().await.unwrap(),
            other.delete(&poll).send().await.unwrap(),
        ] {
            assert!(
                matches!(resp.status().as_u16(), 403 | 404),
                "{}",
                resp.status()
            );
        }
        // …while another token of the owning client (a fresh one) may
        let again = jobs::manifest(&s.state, &new_payer, &poll).await;
        assert_eq!(again["output"], manifest["output"]);
        s.stop().await;
    }
}

#[tokio::test]
async fn each_members_consent_decides_their_sensitive_data() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        let new_payer = payer(&s, NEW_PAYER).await;
        // two members with sensitive data: one consents to all data, one to regular only
        let (all_data, regular_only) = ("m000002", "m000010");
        let group = matched_group_with(
            &s,
            &new_payer,
            &[(all_data, Some(SENSITIVE)), (regular_only, None)],
        )
        .await;
        let files = export(&s, &new_payer, &group, &[]).await;
        let exported: std::collections::BTreeSet<(String, String)> = files
            .iter()
            .filter(|(section, _, _)| section == "output")
            .flat_map(|(_, t, lines)| {
                lines
                    .iter()
                    .map(move |l| (t.clone(), l["id"].as_str().unwrap().to_owned()))
            })
            .collect();
        let stored = |patient: &'static str, sensitive: bool| {
            let store = &s.state.store;
            async move {
                // the PDex 2.1 five-year window on care dates (`care_end`, computed at write time)
                let window =
                    pdex::store::release::years_before(chrono::Utc::now().timestamp_millis(), 5);
                let rows = store
                    .db
                    .fetch(
                        "SELECT rtype, id, CASE WHEN care_end IS NULL OR care_end >= ? THEN 1 ELSE 0 END \
                         FROM resources WHERE patient_id = ? AND sensitive = ? AND deleted = 0",
                        &[window.into(), patient.into(), sensitive.into()],
                    )
                    .await
                    .unwrap();
                rows.into_iter()
                    .map(|r| ((r.text(0).unwrap(), r.text(1).unwrap()), r.flag(2).unwrap()))
                    .collect::<Vec<_>>()
            }
        };
        for patient in [all_data, regular_only] {
            let sensitive = stored(patient, true).await;
            assert!(
                !sensitive.is_empty(),
                "{patient} has sensitive data in the demo set"
            );
            for (key, in_window) in &sensitive {
                assert_eq!(
                    exported.contains(key),
                    patient == all_data && *in_window,
                    "{key:?} of {patient}"
                );
            }
            // regular data of both goes out within the window, ExplanationOfBenefit subject to
            // the release rules
            let regular = stored(patient, false).await;
            assert!(regular.iter().any(|(_, w)| *w));
            for (key, in_window) in regular
                .iter()
                .filter(|((t, _), _)| t != "ExplanationOfBenefit")
            {
                assert_eq!(exported.contains(key), *in_window, "{key:?} of {patient}");
            }
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn the_since_rule_follows_the_pdex_version() {
    for version in [PdexVersion::V21, PdexVersion::V22] {
        for b in backends() {
            let s = TestServer::start_demo(&b, |c| c.exchange.pdex_version = version).await;
            let new_payer = payer(&s, NEW_PAYER).await;
            let group = matched_group(&s, &new_payer, &["m000001"]).await;
            // one of the member's Coverages was last updated six years ago
            let six_years_ago = chrono::Utc::now().timestamp_millis() - 6 * 366 * 86_400_000;
            let old = common::demo_member("m000001")["coverage_id"]
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
            for since in [None, Some("2015-01-01T00:00:00Z")] {
                let mut raw = vec![("_type", "Patient,Coverage")];
                if let Some(v) = since {
                    raw.push(("_since", v));
                }
                let (out, errors) = summary(&export(&s, &new_payer, &group, &raw).await);
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

/// Issue 14: the export releases exactly what the payer's member-scoped read of the same
/// resources gives — claims as the non-financial view, a stale prior authorization withheld,
/// nothing older than the five-year window, sensitive data only under `#sensitive` — because
/// both read through the store's one `access::View`.
#[tokio::test]
async fn the_export_releases_what_the_payers_direct_read_does() {
    for b in backends() {
        let s = TestServer::start_demo(&b, |_| {}).await;
        s.load(&release::fixtures()).await;
        let client = s
            .register_client(ClientSpec {
                name: "payer".into(),
                kind: ClientKind::Payer,
                organization: Some(NEW_PAYER.into()),
                scopes: format!("system/*.rs {OPERATION} {DATA_EXPORT}"),
                ..ClientSpec::default()
            })
            .await;
        let http = s.http(&client.token(&s).await);
        let group = matched_group(&s, &http, &[release::MEMBER]).await;
        let files = export(
            &s,
            &http,
            &group,
            &[("_type", "ExplanationOfBenefit,Observation")],
        )
        .await;
        let exported: std::collections::BTreeMap<String, Value> = files
            .iter()
            .filter(|(section, _, _)| section == "output")
            .flat_map(|(_, _, lines)| lines)
            .map(|r| {
                (
                    format!(
                        "{}/{}",
                        r["resourceType"].as_str().unwrap(),
                        r["id"].as_str().unwrap()
                    ),
                    r.clone(),
                )
            })
            .collect();
        // the bulk match stored the member's consent: the same payer's member token reads
        let reader = s.http(
            &client
                .member_token(&s, &format!("Patient/{}", release::MEMBER))
                .await,
        );
        for r in release::fixtures() {
            let k = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            let resp = reader.get(s.url(&k)).send().await.unwrap();
            match resp.status() {
                StatusCode::OK => {
                    let read: Value = resp.json().await.unwrap();
                    assert_eq!(exported.get(&k), Some(&read), "{k}");
                }
                StatusCode::NOT_FOUND => assert!(!exported.contains_key(&k), "{k} exported"),
                other => panic!("{k}: {other}"),
            }
        }
        let claim = &exported["ExplanationOfBenefit/eob-claim"];
        assert!(
            claim.get("payment").is_none() && claim.get("total").is_none(),
            "{claim}"
        );
        assert!(exported.contains_key("ExplanationOfBenefit/eob-pa-current"));
        for gone in [
            "ExplanationOfBenefit/eob-pa-stale",
            "Observation/obs-old",
            "Observation/obs-2015",
            "Observation/obs-sensitive",
            "Observation/obs-other",
        ] {
            assert!(!exported.contains_key(gone), "{gone} exported");
        }
        // nothing of any type older than the window: every exported Observation has a care
        // date within five years
        let floor = pdex::store::release::years_before(chrono::Utc::now().timestamp_millis(), 5);
        for (k, r) in &exported {
            if let Some(when) = r["effectiveDateTime"].as_str() {
                let high = pdex::fhir::datetime::parse(when).unwrap().high;
                assert!(high >= floor, "{k} ({when}) is older than the window");
            }
        }
        s.stop().await;
    }
}
