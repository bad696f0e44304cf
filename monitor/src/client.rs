//! The monitor's link to core: the `Admin.Watch` stream and the commands.
//!
//! [`watch`] keeps one watch stream open for the life of the dashboard. It
//! forwards every update into the app's channel and reports the state of
//! the connection; when the stream fails or ends it reconnects with
//! exponential backoff (250 ms doubling to 5 s, with jitter) and counts the
//! wait down on screen. [`Commander`] sends the operator's commands
//! (pause, resume, faults, requeue) on a separate lazily connected channel,
//! each in its own task so a slow core never freezes the screen; every
//! outcome comes back as a line for the event log.

use std::time::Duration;

use ackflow_proto::client::leader::{self, Rotation};
use ackflow_proto::client::{Bearer, reconnect_delay, tls};
use ackflow_proto::token::Token;
use ackflow_proto::v1 as pb;
use anyhow::Context;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::app::{AppEvent, Command, CommandOutcome, ConnState};

/// First wait before reconnecting.
const RECONNECT_MIN: Duration = Duration::from_millis(250);
/// Longest wait before reconnecting.
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Core sends a snapshot about every 200 ms; this long without any update
/// means the stream is stuck even if TCP has not noticed.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a command may take before it is reported as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the countdown to the next try is refreshed on screen.
const COUNTDOWN_STEP: Duration = Duration::from_secs(1);

/// An `Admin` client that sends the bearer token.
pub type AdminClient = pb::admin_client::AdminClient<InterceptedService<Channel, Bearer>>;

/// Where core is and how to authenticate to it. Several cores sharing one
/// database (one leads, the others stand by and refuse) are tried in turn;
/// the one the watch stream reached last also gets the commands.
#[derive(Clone)]
pub struct Core {
    /// The address (or addresses, comma-separated) as shown on screen.
    pub url: String,
    endpoints: Vec<(String, Endpoint)>,
    /// The endpoint in use.
    rotation: Rotation,
    bearer: Bearer,
}

impl Core {
    /// Core at `url` (`http://host:port`; a bare `host:port` gets `http://`;
    /// several, comma-separated). A token goes in clear text to a loopback
    /// address only: beyond it, `url` must be `https://`.
    pub fn new(url: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let mut endpoints = Vec::new();
        for url in leader::urls(url) {
            let url = if url.contains("://") {
                url
            } else {
                format!("http://{url}")
            };
            if token.is_some() {
                tls::check_token_transport(&url)?;
            }
            let endpoint = ackflow_proto::client::endpoint(&url)
                .with_context(|| format!("--core {url:?} is not a valid URL"))?;
            endpoints.push((url, endpoint));
        }
        anyhow::ensure!(!endpoints.is_empty(), "--core names no URL");
        let bearer = Bearer::new(token.map(Token::from).as_ref())?;
        Ok(Self {
            url: endpoints
                .iter()
                .map(|(url, _)| url.as_str())
                .collect::<Vec<_>>()
                .join(","),
            rotation: Rotation::new(endpoints.len()),
            endpoints,
            bearer,
        })
    }

    /// Adds TLS when a URL is `https://`: core's certificate must chain
    /// to the CA in `ca` and name `domain` (default: the URL's host).
    pub fn with_tls(
        mut self,
        ca: Option<&std::path::Path>,
        domain: Option<&str>,
    ) -> anyhow::Result<Self> {
        for (url, endpoint) in &mut self.endpoints {
            *endpoint = tls::configure(endpoint.clone(), url, ca, domain)?;
        }
        Ok(self)
    }

    /// The endpoint in use, and its URL.
    fn endpoint(&self) -> &(String, Endpoint) {
        &self.endpoints[self.rotation.current()]
    }

    /// Moves on to the next core; true when every core has been tried
    /// since the first (time to back off).
    fn next(&self) -> bool {
        self.rotation.advance()
    }

    /// A command sender. Each command dials the core in use then (a
    /// connection per command: they come from a person's keys).
    pub fn commander(&self, events_tx: mpsc::Sender<AppEvent>) -> Commander {
        Commander {
            core: self.clone(),
            events_tx,
        }
    }
}

/// Keeps a watch stream open until `cancel` or until the app is gone,
/// forwarding updates and connection changes into `events_tx`.
pub async fn watch(core: Core, events_tx: mpsc::Sender<AppEvent>, cancel: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let state = ConnState::Connecting {
            attempt: failures + 1,
            next_retry: Duration::ZERO,
        };
        if events_tx.send(AppEvent::Connection(state)).await.is_err() {
            return;
        }
        let ended = tokio::select! {
            _ = cancel.cancelled() => return,
            ended = watch_once(&core, &events_tx) => ended,
        };
        let error = match ended {
            Ended::AppGone => return,
            Ended::Failed { error, was_up } => {
                if was_up {
                    failures = 0;
                }
                error
            }
        };
        tracing::warn!(core = %core.endpoint().0, %error, "admin watch ended");
        // Several cores: the next one at once, the backoff after a round.
        if !core.next() {
            continue;
        }
        failures += 1;
        if events_tx
            .send(AppEvent::Connection(ConnState::Unreachable { error }))
            .await
            .is_err()
        {
            return;
        }
        let retry_at = Instant::now() + reconnect_delay(failures, RECONNECT_MIN, RECONNECT_MAX);
        loop {
            let left = retry_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let state = ConnState::Connecting {
                attempt: failures + 1,
                next_retry: left,
            };
            if events_tx.send(AppEvent::Connection(state)).await.is_err() {
                return;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(left.min(COUNTDOWN_STEP)) => {}
            }
        }
    }
}

/// How one watch stream ended.
enum Ended {
    /// The app's channel closed: the dashboard is gone.
    AppGone,
    /// The connection failed or the stream ended. `was_up` tells whether the
    /// stream had delivered anything (then the backoff starts over).
    Failed { error: String, was_up: bool },
}

async fn watch_once(core: &Core, events_tx: &mpsc::Sender<AppEvent>) -> Ended {
    let failed = |error: String, was_up| Ended::Failed { error, was_up };
    let (url, endpoint) = core.endpoint();
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => return failed(error_chain(&e), false),
    };
    let mut client = pb::admin_client::AdminClient::with_interceptor(channel, core.bearer.clone());
    let mut stream = match client.watch(pb::WatchRequest {}).await {
        Ok(response) => response.into_inner(),
        Err(status) => return failed(describe_status(&status), false),
    };
    tracing::info!(core = %url, "watching core");
    if events_tx
        .send(AppEvent::Connection(ConnState::Connected))
        .await
        .is_err()
    {
        return Ended::AppGone;
    }
    loop {
        let message = match tokio::time::timeout(STALL_TIMEOUT, stream.message()).await {
            Err(_) => {
                return failed(
                    format!("no update from core for {}s", STALL_TIMEOUT.as_secs()),
                    true,
                );
            }
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => return failed("core closed the watch stream".into(), true),
            Ok(Err(status)) => return failed(describe_status(&status), true),
        };
        if let Some(update) = message.update {
            // Waiting here when the app is slow is fine: core drops feed
            // events for a slow watcher and says so with `Lagged`.
            if events_tx.send(AppEvent::Admin(update)).await.is_err() {
                return Ended::AppGone;
            }
        }
    }
}

/// `err` and its causes, joined with `: `, repeated links skipped.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// A status in words: its message (or its code's meaning) and its cause.
fn describe_status(status: &tonic::Status) -> String {
    let mut text = if status.message().is_empty() {
        status.code().description().to_string()
    } else {
        status.message().to_string()
    };
    if status.code() == tonic::Code::Unauthenticated {
        text.push_str(" (set --token or ACKFLOW_ADMIN_TOKEN to core's --admin-token)");
    }
    if let Some(source) = std::error::Error::source(status) {
        // The message often repeats the start of its cause; say it once.
        let cause = error_chain(source);
        if cause.contains(&text) {
            text = cause;
        } else if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// Sends the operator's commands to core.
#[derive(Clone)]
pub struct Commander {
    core: Core,
    events_tx: mpsc::Sender<AppEvent>,
}

impl Commander {
    /// Sends `command` in the background; its outcome arrives as an
    /// [`AppEvent::CommandDone`]. Commands that are not for core (quit, the
    /// demo's rate) are ignored.
    pub fn execute(&self, command: Command) {
        let mut client = pb::admin_client::AdminClient::with_interceptor(
            self.core.endpoint().1.connect_lazy(),
            self.core.bearer.clone(),
        );
        let events_tx = self.events_tx.clone();
        tokio::spawn(async move {
            let Some(outcome) = send(&mut client, command).await else {
                return;
            };
            // The dashboard may be gone; then nobody needs to know.
            let _ = events_tx.send(AppEvent::CommandDone(outcome)).await;
        });
    }
}

/// Words for a relayed control command.
fn relayed(what: &str, relayed: bool) -> String {
    if relayed {
        format!("{what}: relayed to the processor")
    } else {
        format!("{what}: no processor connected; it applies when one connects")
    }
}

async fn send(client: &mut AdminClient, command: Command) -> Option<CommandOutcome> {
    let outcome = match command {
        Command::Pause => outcome(
            "pause",
            timed(client.pause(pb::PauseRequest {})).await,
            |r| relayed("pause", r.relayed),
        ),
        Command::Resume => outcome(
            "resume",
            timed(client.resume(pb::ResumeRequest {})).await,
            |r| relayed("resume", r.relayed),
        ),
        Command::SetFaults(faults) => {
            outcome("set faults", timed(client.set_faults(faults)).await, |r| {
                relayed("set faults", r.relayed)
            })
        }
        Command::Requeue(seq) => {
            let what = format!("requeue seq {seq}");
            let result = timed(client.requeue(pb::RequeueRequest { seq })).await;
            outcome(&what, result, |r| {
                format!("{what}: published again as seq {}", r.new_seq)
            })
        }
        Command::Quit | Command::RateUp | Command::RateDown => return None,
    };
    if outcome.ok {
        tracing::info!(text = %outcome.text, "command done");
    } else {
        tracing::warn!(text = %outcome.text, "command failed");
    }
    Some(outcome)
}

/// Awaits a call with [`COMMAND_TIMEOUT`]; an error is already in words.
async fn timed<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(describe_status(&status)),
        Err(_) => Err(format!(
            "no answer from core within {}s",
            COMMAND_TIMEOUT.as_secs()
        )),
    }
}

fn outcome<T>(
    what: &str,
    result: Result<T, String>,
    ok: impl FnOnce(T) -> String,
) -> CommandOutcome {
    match result {
        Ok(reply) => CommandOutcome {
            ok: true,
            text: ok(reply),
        },
        Err(error) => CommandOutcome {
            ok: false,
            text: format!("{what} failed: {error}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_cores_are_tried_in_turn() {
        let core = Core::new("127.0.0.1:1, http://127.0.0.1:2", None).expect("valid");
        assert_eq!(core.url, "http://127.0.0.1:1,http://127.0.0.1:2");
        assert_eq!(core.endpoint().0, "http://127.0.0.1:1");
        assert!(!core.next(), "one core left to try before backing off");
        // The commander shares the choice.
        assert_eq!(core.clone().endpoint().0, "http://127.0.0.1:2");
        assert!(core.next(), "a whole round: back off");
        assert_eq!(core.endpoint().0, "http://127.0.0.1:1");
        assert!(Core::new(" , ", None).is_err());
    }

    #[test]
    fn urls_without_a_scheme_get_http() {
        let core = Core::new("127.0.0.1:50051", None).expect("valid");
        assert_eq!(core.url, "http://127.0.0.1:50051");
        assert!(Core::new("http://exa mple:1", None).is_err());
    }

    #[test]
    fn a_token_goes_in_clear_text_to_loopback_only() {
        let token = Some("admin-token-0123456789");
        assert!(Core::new("127.0.0.1:50051", token).is_ok());
        assert!(Core::new("http://localhost:50051", token).is_ok());
        assert!(Core::new("https://core.example:50051", token).is_ok());
        assert!(Core::new("http://core.example:50051", None).is_ok());
        for url in ["http://core.example:50051", "10.0.0.1:50051"] {
            let err = Core::new(url, token).err().expect("refused");
            assert!(err.to_string().contains("clear text"), "{url}: {err}");
        }
    }

    #[test]
    fn statuses_read_as_sentences() {
        let status = tonic::Status::unauthenticated("missing or wrong bearer token");
        assert_eq!(
            describe_status(&status),
            "missing or wrong bearer token (set --token or ACKFLOW_ADMIN_TOKEN to core's --admin-token)"
        );
        let status = tonic::Status::new(tonic::Code::Unavailable, "");
        assert_eq!(
            describe_status(&status),
            "The service is currently unavailable"
        );
    }

    #[tokio::test]
    async fn an_absent_core_is_reported_and_retried() {
        // Bind and drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let core = Core::new(&format!("http://127.0.0.1:{port}"), None).expect("valid");
        let (events_tx, mut events_rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch(core, events_tx, cancel.clone()));
        let mut seen = Vec::new();
        while let Some(AppEvent::Connection(state)) = events_rx.recv().await {
            let again = matches!(state, ConnState::Connecting { attempt: 2, .. });
            seen.push(state);
            if again {
                break;
            }
        }
        cancel.cancel();
        task.await.expect("watch task");
        assert!(matches!(seen[0], ConnState::Connecting { attempt: 1, .. }));
        match &seen[1] {
            ConnState::Unreachable { error } => {
                assert!(
                    error.contains("refused") || error.contains("connect"),
                    "{error}"
                )
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
