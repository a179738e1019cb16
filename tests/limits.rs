//! Every cost a client can cause is bounded (issue 15), over real HTTP on every configured
//! store: a search's parameters and sort keys are capped (400 `too-costly`), a search that
//! runs past its bound is stopped and answered 503 with `Retry-After` (never a 500), and
//! while expensive searches run, tokens are still issued and reads by id still answer —
//! searches have connections of their own.

mod common;

use common::{TestServer, backends};
use reqwest::StatusCode;
use serde_json::Value;

fn repeated(param: &str, n: usize) -> String {
    vec![param; n].join("&")
}

#[tokio::test]
async fn search_size_is_capped_with_too_costly() {
    for b in backends() {
        let s = TestServer::start(&b).await;
        // at the limits: fine
        let ok = s
            .get(&format!("Patient?{}", repeated("family=a", 64)))
            .await;
        assert_eq!(ok.status(), StatusCode::OK);
        let ok = s
            .get("Patient?_sort=family,given,birthdate,gender,_id,_lastUpdated,address,name")
            .await;
        assert_eq!(ok.status(), StatusCode::OK);
        // past them: 400 too-costly, whatever the parameters are
        for query in [
            format!("Patient?{}", repeated("family=a", 65)),
            "Patient?_sort=family,given,birthdate,gender,_id,_lastUpdated,address,name,telecom"
                .to_owned(),
            format!("Patient?{}", repeated("_sort=family", 9)),
        ] {
            let body = common::assert_outcome(s.get(&query).await, StatusCode::BAD_REQUEST).await;
            assert_eq!(body["issue"][0]["code"], "too-costly", "{body}");
        }
        // a 100,000-parameter POST _search is a 400 too, not a 500
        let form = repeated("family=a", 100_000);
        let resp = s
            .client
            .post(s.url("Patient/_search"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        let body = common::assert_outcome(resp, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["issue"][0]["code"], "too-costly", "{body}");
        s.stop().await;
    }
}

#[tokio::test]
async fn a_search_past_its_time_bound_is_503_and_does_not_starve_tokens_or_reads() {
    for b in backends() {
        // many repeated filters are expensive to plan and run on PostgreSQL; allow them here
        // so that a search outlasts a 1 s bound
        let s = TestServer::start_with(&b, |c| {
            c.limits.search_max_parameters = 1_000;
            c.limits.search_timeout_seconds = 1;
        })
        .await;
        s.load(&[serde_json::json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Able"}]})])
            .await;
        let query = format!("Patient?{}", repeated("name:contains=a", 400));
        let searches: Vec<_> = (0..8)
            .map(|_| {
                let c = s.client.clone();
                let url = s.url(&query);
                tokio::spawn(async move { c.get(url).send().await.unwrap() })
            })
            .collect();
        // meanwhile: a token and a read by id
        assert_eq!(
            s.admin.request_token(&s, None).await.status(),
            StatusCode::OK
        );
        assert_eq!(s.get("Patient/p1").await.status(), StatusCode::OK);
        for h in searches {
            let resp = h.await.unwrap();
            let status = resp.status();
            let retry_after = resp.headers().contains_key("retry-after");
            let body: Value = resp.json().await.unwrap();
            match status {
                StatusCode::OK => assert_eq!(body["resourceType"], "Bundle"),
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(retry_after, "{body}");
                    assert_eq!(body["issue"][0]["code"], "too-costly", "{body}");
                }
                other => panic!("{other}: {body}"),
            }
        }
        if b.is_postgres() {
            // PostgreSQL stops such a search at the bound
            let resp = s.get(&query).await;
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        // and serves the next request normally
        assert_eq!(s.get("Patient?name=able").await.status(), StatusCode::OK);
        s.stop().await;
    }
}

/// Writes `prefix` at once, then `bytes` one at a time, `pause` apart, until the server
/// closes the connection or everything is sent; then reads to EOF. Returns what the server
/// sent. Bounded: 30 s.
async fn dribble(addr: &str, prefix: &[u8], bytes: &[u8], pause: std::time::Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let work = async {
        tcp.write_all(prefix).await.unwrap();
        for b in bytes {
            if tcp.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got).await;
        got
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), work)
        .await
        .expect("the server closed the dribbling connection within 30 s")
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    for b in backends() {
        let s = TestServer::start_with(&b, |c| {
            c.limits.header_read_timeout_seconds = 1;
            c.limits.body_read_timeout_seconds = 1;
        })
        .await;
        let addr = s
            .base
            .trim_start_matches("http://")
            .trim_end_matches("/fhir")
            .to_owned();
        let pause = std::time::Duration::from_millis(300);
        // headers that never end: closed (hyper's header read timeout)
        let headers = b"GET /fhir/metadata HTTP/1.1\r\nHost: pdex\r\nX-Slow: 0123456789012345678901234567890123456789\r\n";
        dribble(&addr, b"", headers, pause).await;
        // a body that never ends: 408 with an OperationOutcome, then closed
        let head = b"POST /fhir/Patient/_search HTTP/1.1\r\nHost: pdex\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n";
        let got = dribble(&addr, head, &[b'a'; 200], pause).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(
            text.contains("OperationOutcome") && text.contains("\"timeout\""),
            "{text}"
        );
        // ordinary requests are unaffected
        assert_eq!(s.get("metadata").await.status(), StatusCode::OK);
        s.stop().await;

        // --max-connections 1: a second connection is not served while the first is open
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let s = TestServer::start_with(&b, |c| c.limits.max_connections = 1).await;
        let addr = s
            .base
            .trim_start_matches("http://")
            .trim_end_matches("/fhir")
            .to_owned();
        let request = b"GET /health HTTP/1.1\r\nHost: pdex\r\n\r\n";
        let mut first = tokio::net::TcpStream::connect(&addr).await.unwrap();
        first.write_all(request).await.unwrap();
        let mut buf = [0u8; 512];
        let n = first.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // the first connection stays open (keep-alive); the second waits to be accepted
        let mut second = tokio::net::TcpStream::connect(&addr).await.unwrap();
        second.write_all(request).await.unwrap();
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(500), second.read(&mut buf))
                .await;
        assert!(early.is_err(), "served beyond max_connections");
        drop(first); // frees the slot
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), second.read(&mut buf))
            .await
            .expect("the second connection is served once the first closes")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        s.stop().await;
    }
}

/// Issue 15 item 2: when the client goes away mid-search, the query stops — PostgreSQL used
/// to run it on until its statement timeout, holding a search connection. A search that
/// takes far longer than the poll below (with a 600 s statement timeout) is sent over a raw
/// connection, which is closed once PostgreSQL runs the query; its query must then leave
/// `pg_stat_activity` (bounded poll, 20 s), and later searches are answered normally on the
/// pool's connections. PostgreSQL only: SQLite cannot stop a statement from outside.
#[tokio::test]
async fn a_search_is_cancelled_when_its_client_goes_away() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let Some(common::Backend::Postgres(admin_url)) =
        backends().into_iter().find(|b| b.is_postgres())
    else {
        eprintln!("skipped: needs PDEX_TEST_POSTGRES_URL");
        return;
    };
    let b = common::Backend::Postgres(admin_url.clone());
    let s = TestServer::start_with(&b, |c| {
        c.limits.search_max_parameters = 1_000;
        c.limits.search_timeout_seconds = 600;
    })
    .await;
    s.load(&[
        serde_json::json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Able"}]}),
    ])
    .await;
    let database = url::Url::parse(&s.db.url).unwrap().path()[1..].to_owned();
    let watcher = sqlx::PgPool::connect(&admin_url).await.unwrap();
    let running = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' \
             AND query LIKE '%idx_string%' AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_one(&watcher)
        .await
        .unwrap()
    };
    let poll = |want_running: bool| async move {
        for _ in 0..200 {
            if (running().await > 0) == want_running {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };

    let token = s.admin.token(&s).await;
    let addr = s
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/fhir")
        .to_owned();
    let query = repeated("name:contains=a", 900);
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET /fhir/Patient?{query} HTTP/1.1\r\nHost: pdex\r\nAuthorization: Bearer {token}\r\nAccept: application/fhir+json\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert!(
        poll(true).await,
        "the search reached PostgreSQL within 20 s"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        running().await > 0,
        "the search is still running half a second later (it must outlast the poll below)"
    );
    drop(tcp); // the client goes away
    assert!(
        poll(false).await,
        "the search stopped within 20 s of its client going away (statement timeout: 600 s)"
    );
    // the search connections are back in step: every one of them answers
    for _ in 0..10 {
        assert_eq!(s.get("Patient?name=able").await.status(), StatusCode::OK);
    }
    watcher.close().await;
    s.stop().await;
}
