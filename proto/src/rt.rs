//! Small tokio helpers the binaries share (core, the processor, the
//! monitor all depend on this crate, and on no other of ours in common).
//! Only with the `grpc` feature.

use tokio::time::Instant;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: how core and the processor are
/// asked to stop. (The monitor also stops on SIGHUP; see its `run.rs`.)
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Sleeps until `deadline`; never resolves without one. For a `select!`
/// branch whose timer may be off.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
