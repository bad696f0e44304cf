//! Helpers shared by core's test files: REST responses, and the
//! PostgreSQL server they use.

use axum::http::StatusCode;
use axum::response::Response;
use http_body_util::BodyExt;

/// Status, content type and body text of a response.
pub async fn read_response(response: Response) -> (StatusCode, String, String) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the body can be read")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// The PostgreSQL server the tests use: `ACKFLOW_TEST_PG`, else
/// `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn pg_server() -> String {
    std::env::var("ACKFLOW_TEST_PG")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Creates a private schema `<prefix>_<random>` on [`pg_server`] and returns
/// the server and the schema; fails, never skips, when PostgreSQL is
/// unreachable.
pub async fn pg_schema(prefix: &str) -> (String, String) {
    use sqlx::Connection;
    let server = pg_server();
    let schema = format!("{prefix}_{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff);
    let mut conn = sqlx::PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {server} is unreachable: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create schema");
    (server, schema)
}
