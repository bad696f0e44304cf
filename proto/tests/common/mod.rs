//! What the protocol's property tests share.

/// Cases per property: 1,024, or `ACKFLOW_PROPTEST_CASES` for a longer soak.
pub fn cases() -> u32 {
    std::env::var("ACKFLOW_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}
