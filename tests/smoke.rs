mod common;

#[tokio::test]
async fn put_then_get_round_trips_over_a_real_socket() {
    let server = common::TestServer::start().await;
    let client = reqwest::Client::new();
    let put = client
        .put(server.url("/keys/a%2Fb"))
        .header("X-Write-Timestamp", common::T0.to_string())
        .header("Content-Type", "text/plain")
        .body("hello")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 201);
    let got = client
        .get(server.url("/keys/a%2Fb"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert_eq!(got.text().await.expect("body"), "hello");
    server.stop().await;
}
