//! Helpers shared by the REST test files.

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
