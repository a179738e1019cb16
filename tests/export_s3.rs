//! The S3-compatible export storage against a real S3 API server: moto's (`pip install
//! 'moto[server]'`, which provides `moto_server`). The export's files are uploaded to the
//! bucket, downloaded through pdex (whole and by range), and removed from the bucket on
//! DELETE. Without `moto_server` on PATH the test says so and checks nothing (under CI it fails).

mod common;

use common::{TestServer, backends};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn exports_are_stored_in_and_removed_from_an_s3_bucket() {
    if Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        // CI installs moto (.ci/run), so there a missing server is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "moto_server is not installed but CI is set: .ci/run should have installed it"
        );
        eprintln!(
            "moto_server is not installed (pip install 'moto[server]'): S3 storage not exercised"
        );
        return;
    }
    let port = free_port();
    let _moto = Moto(
        Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http.get(&endpoint).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "moto_server did not start");
    // create the bucket (moto accepts any credentials)
    let resp = http
        .put(format!("{endpoint}/pdex-test"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    // SAFETY: set before any server (and its threads reading the environment) starts, and
    // this test binary runs this one test.
    unsafe {
        std::env::set_var("AWS_ENDPOINT", &endpoint);
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
    }

    for backend in backends() {
        let server = TestServer::start_with(&backend, |c| {
            c.bulk.storage = "s3://pdex-test/exports".into();
            c.bulk.file_size_bytes = 200;
        })
        .await;
        let mut data = vec![json!({"resourceType":"Patient","id":"p1"})];
        for i in 0..10 {
            data.push(json!({"resourceType":"Observation","id":format!("o{i}"),"status":"final","code":{"text":"t"},"subject":{"reference":"Patient/p1"}}));
        }
        server.load(&data).await;
        let resp = server
            .client
            .get(server.url("$export"))
            .header("Prefer", "respond-async")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let poll = resp.headers()["content-location"]
            .to_str()
            .unwrap()
            .to_owned();
        let job = poll.rsplit('/').next().unwrap().to_owned();
        let manifest: Value = loop {
            let resp = server.client.get(&poll).send().await.unwrap();
            match resp.status().as_u16() {
                202 => tokio::time::sleep(Duration::from_secs(1)).await,
                200 => break resp.json().await.unwrap(),
                s => panic!("{s}: {}", resp.text().await.unwrap()),
            }
        };
        let mut ids = Vec::new();
        for item in manifest["output"].as_array().unwrap() {
            let url = item["url"].as_str().unwrap();
            let text = server
                .client
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                ids.push(format!(
                    "{}/{}",
                    v["resourceType"].as_str().unwrap(),
                    v["id"].as_str().unwrap()
                ));
            }
            // the object is in the bucket, under the configured prefix
            let name = url.rsplit('/').next().unwrap();
            let object = http
                .get(format!("{endpoint}/pdex-test/exports/{job}/{name}"))
                .send()
                .await
                .unwrap();
            assert_eq!(object.status(), 200);
            assert_eq!(object.text().await.unwrap(), text);
            let part = server
                .client
                .get(url)
                .header("Range", "bytes=2-9")
                .send()
                .await
                .unwrap();
            assert_eq!(part.status(), 206);
            assert_eq!(part.text().await.unwrap(), &text[2..10]);
        }
        ids.sort();
        assert_eq!(ids.len(), 11, "{backend:?}");
        assert!(
            manifest["output"].as_array().unwrap().len() > 3,
            "split into parts"
        );
        // nothing is kept on local disk but the (now empty) spool
        assert!(!server.exports.path().join("files").join(&job).exists());

        assert_eq!(
            server.client.delete(&poll).send().await.unwrap().status(),
            202
        );
        for _ in 0..20 {
            if server
                .state
                .bulk
                .storage
                .size(&job, "00000-Patient.ndjson")
                .await
                .unwrap()
                .is_none()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            server
                .state
                .bulk
                .storage
                .size(&job, "00000-Patient.ndjson")
                .await
                .unwrap()
                .is_none(),
            "removed from the bucket"
        );
        server.stop().await;
    }
}
