//! The counting front itself: the upstream counts every scenario relies on must be exact.

use crate::support::{assert_layout_holds, blobs, image, skopeo_pull};
use trow_tests::oci::{client, send};
use trow_tests::upstream::{Front, Reply, Scripted, Upstream, describe};

/// The front counts what it forwards exactly: requests on keep-alive connections, bodies (with
/// Content-Length or chunked) that contain request lines, HEADs, pipelined requests, concurrent
/// clients, and a real client (skopeo) against a real registry.
#[tokio::test(flavor = "multi_thread")]
async fn the_counting_front_counts_every_request_exactly() {
    let backend = Scripted::start("127.0.0.30:0", |r| {
        Reply::ok("text/plain", r.target.clone().into_bytes())
    });
    let front = Front::start("127.0.0.30:0", backend.addr);
    let base = format!("http://{}", front.addr);
    let reqs = &front.requests;

    // Keep-alive: one client, many requests.
    let c = client();
    for i in 0..20 {
        let r = send(c.get(format!("{base}/v2/a/blobs/b{i}"))).await;
        r.assert_status(200);
        assert_eq!(
            r.text(),
            format!("/v2/a/blobs/b{i}"),
            "answer to the wrong request"
        );
    }
    for _ in 0..5 {
        send(c.head(format!("{base}/v2/a/manifests/m")))
            .await
            .assert_status(200);
    }
    // Bodies that look like requests are bodies.
    let fake = b"GET /v2/fake HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    send(
        c.post(format!("{base}/v2/a/blobs/uploads/"))
            .body(fake.clone()),
    )
    .await
    .assert_status(200);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"abc\r\n0\r\n\r\nGET /v2/evil HTTP/1.1\r\n\r\n".to_vec()),
        Ok(fake.clone()),
        Ok(b"tail".to_vec()),
    ];
    send(
        c.patch(format!("{base}/v2/a/blobs/uploads/u"))
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
    )
    .await
    .assert_status(200);
    // Pipelined: three requests in one write.
    let pipelined = tokio::task::spawn_blocking({
        let addr = front.addr;
        move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(
                b"GET /v2/p/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/p/2 HTTP/1.1\r\nHost: x\r\n\r\n\
                  GET /v2/p/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).unwrap();
            got
        }
    })
    .await
    .unwrap();
    assert_eq!(
        pipelined.matches("HTTP/1.1 200 OK").count(),
        3,
        "{pipelined}"
    );
    // Concurrent clients.
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let url = format!("{base}/v2/c/blobs/x{}", i % 3);
            tokio::spawn(async move { send(client().get(url)).await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }

    let all = reqs.all();
    assert_eq!(all.len(), 20 + 5 + 2 + 3 + 30, "{}", describe(&all));
    for i in 0..20 {
        assert_eq!(reqs.count("GET", &format!("/v2/a/blobs/b{i}")), 1);
    }
    assert_eq!(reqs.count("HEAD", "/v2/a/manifests/m"), 5);
    assert_eq!(reqs.count("POST", "/v2/a/blobs/uploads/"), 1);
    assert_eq!(reqs.count("PATCH", "/v2/a/blobs/uploads/u"), 1);
    for i in 1..=3 {
        assert_eq!(reqs.count("GET", &format!("/v2/p/{i}")), 1);
    }
    assert_eq!(
        reqs.count_where(|r| r.path().starts_with("/v2/c/blobs/")),
        30
    );
    assert_eq!(
        reqs.count_where(|r| r.target.contains("fake") || r.target.contains("evil")),
        0
    );
    // Keep-alive connections carried several requests each (hyper may open a second one while
    // the first is on its way back to the pool), and the pipelined three shared one.
    assert!(
        reqs.connections() < 27 + 30,
        "{} connections:\n{}",
        reqs.connections(),
        describe(&all)
    );
    let piped: Vec<usize> = all
        .iter()
        .filter(|r| r.path().starts_with("/v2/p/"))
        .map(|r| r.connection)
        .collect();
    assert!(piped.windows(2).all(|w| w[0] == w[1]), "{}", describe(&all));
    assert_eq!(
        backend.requests.all().len(),
        all.len(),
        "the backend saw other requests"
    );

    // A real client against a real registry: skopeo fetches each blob once.
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    let up = Upstream::start("127.0.0.30", 0);
    up.push(&img.oci_ref(), "count/me:1.0");
    assert!(
        up.requests().all().is_empty(),
        "seeding must bypass the front"
    );
    skopeo_pull(
        &format!("{}/count/me:1.0", up.addr()),
        &tmp.path().join("out"),
        "1.0",
    );
    assert_layout_holds(&tmp.path().join("out"), "1.0", &img);
    for d in blobs(&img) {
        assert_eq!(
            up.requests().blob_gets(&d),
            1,
            "{}",
            up.requests().describe()
        );
    }
}
