//! A generated data set imports cleanly into every configured store, and what a requesting
//! payer knows about a member (from `members.json`) finds that member through search.

mod common;

use common::{TestServer, backends};
use serde_json::Value;

#[tokio::test]
async fn generated_data_imports_into_every_store_and_is_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    let summary = pdex::synth::run(&pdex::synth::SynthOptions {
        members: 12,
        seed: 5,
        out: out.clone(),
        start_year: 2020,
        sensitive_share: 0.3,
    })
    .unwrap();
    let expected: u64 = summary.counts.iter().map(|(_, n)| n).sum();
    let members: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("members.json")).unwrap()).unwrap();
    for b in backends() {
        let s = TestServer::start(&b).await;
        let result = pdex::import::import(
            &s.state.store,
            std::slice::from_ref(&out),
            Default::default(),
        )
        .await
        .unwrap();
        assert!(result.errors.is_empty(), "{:?}", result.errors);
        assert_eq!(
            result.created, expected,
            "every generated resource stored on {b:?}"
        );
        for m in &members {
            let id = m["patient_id"].as_str().unwrap();
            let member_id = m["member_id"].as_str().unwrap();
            let found = s
                .ids(&format!(
                    "Patient?identifier={member_id}&birthdate={}",
                    m["birthDate"].as_str().unwrap()
                ))
                .await;
            assert!(found.contains(&id.to_owned()), "{member_id} → {found:?}");
            let coverage = s.ids(&format!("Coverage?beneficiary=Patient/{id}")).await;
            assert!(coverage.contains(&m["coverage_id"].as_str().unwrap().to_owned()));
        }
        // sensitive members' labelled data is flagged at write time
        let flagged = s
            .state
            .store
            .db
            .fetch("SELECT COUNT(*) FROM resources WHERE sensitive = 1", &[])
            .await
            .unwrap();
        let any_sensitive = members.iter().any(|m| m["has_sensitive"] == true);
        assert_eq!(flagged[0].int(0).unwrap() > 0, any_sensitive);
        s.stop().await;
    }
}
