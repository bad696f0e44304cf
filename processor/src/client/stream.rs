//! One stream to core, as the processor runs it: the loop that feeds the
//! [`Receiver`](ackflow_proto::protocol::receiver::Receiver) from core's
//! messages, hands the runs it starts to the executor, sends acks in
//! batches with the receiver's progress, and reports status; and, at
//! every turn, whether this processor may start events at all
//! (`hold.rs`).

use std::time::{Duration, Instant};

use ackflow_proto::protocol::lanes::Ordering;
use ackflow_proto::protocol::receiver::Action;
use ackflow_proto::rt::sleep_until;
use ackflow_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CORE_SILENT, Life, MAX_ACKS_PER_MESSAGE, STATUS_EVERY};
use crate::executor::Done;
use crate::hold::{Hold, Turn};

/// What woke the stream loop.
enum Wake {
    Cancelled,
    Message(Result<Option<pb::CoreMessage>, tonic::Status>),
    Done(Done),
    /// Fresh claims of at-most-once events to send.
    Claims,
    Status,
    /// Fault injection: cut the stream.
    Cut,
}

impl Life {
    /// Runs one connected stream until it ends; returns why. Starts are
    /// held once it has ended, whatever the reason: core may hand this
    /// processor's events to a standby before it is welcomed again (after
    /// `--processor-return-grace-ms`, sooner after a core restart), and
    /// the runs must not go on with their lanes' queues meanwhile.
    pub(super) async fn stream(
        &mut self,
        inbound: &mut tonic::Streaming<pb::CoreMessage>,
        out_tx: mpsc::Sender<pb::ProcessorMessage>,
        cancel: &CancellationToken,
    ) -> String {
        let reason = self.stream_loop(inbound, out_tx, cancel).await;
        // Held, nothing starts; what a run finishes meanwhile is cached
        // and goes out on the next stream.
        let actions = self.set_held(true);
        self.perform(actions, &mut Vec::new());
        reason
    }

    async fn stream_loop(
        &mut self,
        inbound: &mut tonic::Streaming<pb::CoreMessage>,
        out_tx: mpsc::Sender<pb::ProcessorMessage>,
        cancel: &CancellationToken,
    ) -> String {
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        let cut_after = match self.faults.cut_every_s {
            0 => None,
            s => Some(tokio::time::Instant::now() + Duration::from_secs(u64::from(s))),
        };
        let mut acks: Vec<pb::Ack> = Vec::new();
        self.reported = None;
        // Claims made on a stream that ended get their answer on this one.
        if !send_claims(&out_tx, self.permits.waiting()).await {
            return "outbound closed".into();
        }
        // Nothing starts until this stream is welcomed (see `hold.rs`).
        let mut hold = Hold::new(Instant::now());
        let actions = self.set_held(true);
        self.perform(actions, &mut acks);
        loop {
            let wake = tokio::select! {
                _ = cancel.cancelled() => Wake::Cancelled,
                msg = inbound.message() => Wake::Message(msg),
                Some(done) = self.done_rx.recv() => Wake::Done(done),
                _ = self.permits.fresh() => Wake::Claims,
                _ = status_tick.tick() => Wake::Status,
                _ = sleep_until(cut_after) => Wake::Cut,
            };
            // Before anything is handled: after a stall, what the stream
            // holds may be stale and core may have handed over.
            let now = Instant::now();
            let turn = hold.turn(now);
            if let Turn::Stalled(gap) = turn {
                let actions = self.set_held(true);
                self.perform(actions, &mut acks);
                // What a run handed back is this life's bookkeeping, not the
                // stream's: dropped, its lane would wait for it for ever.
                // (Its acks are cached, and go out again when core asks.)
                if let Wake::Done(done) = wake {
                    self.on_done(done, &mut acks);
                }
                return format!(
                    "this process stalled for {} ms: core may have handed its events to a standby",
                    gap.as_millis()
                );
            }
            self.held.turned(now, &hold);
            if let Wake::Message(Ok(Some(msg))) = &wake {
                match &msg.body {
                    Some(pb::core_message::Body::Welcome(w)) => {
                        hold.on_welcome(w.processor_silence_ms, now)
                    }
                    _ => hold.on_heard(now),
                }
            }
            let held = match (&wake, turn) {
                // Heard just now on a welcomed stream.
                (Wake::Message(Ok(Some(_))), _) if hold.welcomed() => false,
                (_, turn) => turn == Turn::Held,
            };
            // Held at once; released only once the message is handled, so
            // that a welcome's floor drops what this life kept from before
            // (resolved elsewhere meanwhile) before anything starts.
            if held && !self.receiver.is_held() {
                tracing::debug!("starts held while core may deliver elsewhere");
                let actions = self.set_held(true);
                self.perform(actions, &mut acks);
            }
            let reason = match wake {
                Wake::Cancelled => Some("shutting down".to_string()),
                Wake::Message(Ok(Some(msg))) => {
                    // Answered before anything else: the round trip core
                    // measures is the path's, not this loop's work.
                    if let Some(pb::core_message::Body::Heartbeat(hb)) = &msg.body
                        && hb.probe != 0
                    {
                        let echo = pb::ProcessorMessage {
                            body: Some(pb::processor_message::Body::Echo(pb::Echo {
                                probe: hb.probe,
                            })),
                        };
                        if out_tx.send(echo).await.is_err() {
                            return "outbound closed".into();
                        }
                    }
                    self.on_message(msg, &mut acks).await;
                    None
                }
                Wake::Message(Ok(None)) => Some("core closed the stream".to_string()),
                Wake::Message(Err(status)) => Some(format!("stream error: {}", status.message())),
                Wake::Done(done) => {
                    self.on_done(done, &mut acks);
                    while acks.len() < MAX_ACKS_PER_MESSAGE {
                        match self.done_rx.try_recv() {
                            Ok(done) => self.on_done(done, &mut acks),
                            Err(_) => break,
                        }
                    }
                    None
                }
                Wake::Claims => {
                    let fresh = self.permits.take_fresh();
                    (!send_claims(&out_tx, fresh).await).then(|| "outbound closed".to_string())
                }
                // A standby reports nothing: core reads nothing from it
                // until it is welcomed.
                Wake::Status if !hold.welcomed() => None,
                Wake::Status => {
                    let status = self.status();
                    if hold.silent_for(now).is_some_and(|s| s > CORE_SILENT) {
                        Some(format!("core silent for {} s", CORE_SILENT.as_secs()))
                    } else if out_tx.send(status).await.is_err()
                        || !send_claims(&out_tx, self.permits.waiting()).await
                    {
                        Some("outbound closed".to_string())
                    } else {
                        None
                    }
                }
                Wake::Cut => Some("fault injection: stream cut".to_string()),
            };
            if let Some(reason) = reason {
                return reason;
            }
            if !held && self.receiver.is_held() {
                let actions = self.set_held(false);
                self.perform(actions, &mut acks);
            }
            // A standby's acks wait for its welcome, like its reports.
            if hold.welcomed()
                && (!acks.is_empty() || self.progress_moved())
                && !self.flush(&out_tx, &mut acks).await
            {
                return "outbound closed".into();
            }
        }
    }

    async fn on_message(&mut self, msg: pb::CoreMessage, acks: &mut Vec<pb::Ack>) {
        let actions = match msg.body {
            Some(pb::core_message::Body::Welcome(welcome)) => {
                tracing::info!(
                    session = welcome.session,
                    acked_floor = welcome.acked_floor,
                    window = welcome.window,
                    paused = welcome.paused,
                    ordering = ?welcome.ordering(),
                    new_stream = welcome.new_stream,
                    "welcome"
                );
                if welcome.new_stream {
                    // Before the runs may go on: one handed out earlier
                    // stops at its next event (see `hold.rs`).
                    self.held.new_stream();
                    self.receiver.on_new_stream();
                }
                let mut actions = self.receiver.on_welcome(
                    welcome.acked_floor,
                    welcome.window,
                    welcome.paused,
                    Ordering::from_welcome(welcome.ordering),
                );
                actions.extend(self.receiver.pass_over(&welcome.resolved_above));
                actions
            }
            Some(pb::core_message::Body::Events(batch)) => {
                if self.faults.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(self.faults.delay_ms)))
                        .await;
                }
                let mut actions = self.receiver.on_floor(batch.acked_floor);
                for event in batch.events {
                    if self.rng.f64() < self.faults.drop_events {
                        continue;
                    }
                    if self.rng.f64() < self.faults.duplicate {
                        actions.extend(self.receiver.on_event(event.clone()));
                    }
                    if event.attempt > 1 {
                        let (seq, attempt) = (event.seq, event.attempt);
                        let got = self.receiver.on_event(event);
                        tracing::debug!(
                            seq,
                            attempt,
                            next_expected = self.receiver.next_expected(),
                            received_below = self.receiver.received_below(),
                            started = got.iter().any(|a| matches!(a, Action::Start(_))),
                            "copy received"
                        );
                        actions.extend(got);
                        continue;
                    }
                    actions.extend(self.receiver.on_event(event));
                }
                actions
            }
            Some(pb::core_message::Body::Control(control)) => match control.command {
                Some(pb::control::Command::Pause(_)) => {
                    tracing::info!("paused by core");
                    self.receiver.set_paused(true)
                }
                Some(pb::control::Command::Resume(_)) => {
                    tracing::info!("resumed by core");
                    self.receiver.set_paused(false)
                }
                Some(pb::control::Command::Faults(faults)) => {
                    tracing::info!(?faults, "fault settings changed");
                    self.faults = faults;
                    Vec::new()
                }
                None => Vec::new(),
            },
            Some(pb::core_message::Body::Heartbeat(hb)) => {
                let mut actions = self.receiver.on_floor(hb.acked_floor);
                actions.extend(self.receiver.pass_over(&hb.resolved_above));
                actions
            }
            Some(pb::core_message::Body::Permits(permits)) => {
                self.permits.answer(&permits.granted, &permits.refused);
                Vec::new()
            }
            None => Vec::new(),
        };
        self.perform(actions, acks);
    }

    /// Starts runs (they outlive the stream: their acks are cached and sent
    /// on whichever stream is up when they finish) and collects acks.
    fn perform(&mut self, actions: Vec<Action>, acks: &mut Vec<pb::Ack>) {
        for action in actions {
            match action {
                Action::Start(run) => self.executor.start(run),
                Action::Ack(ack) => acks.push(ack),
            }
        }
    }

    /// Holds or releases starts, in the receiver and in the runs.
    fn set_held(&mut self, held: bool) -> Vec<Action> {
        let held = held && self.held.enforced();
        if held && !self.held.set(true) {
            // After the flag is set: a start logged later than this line
            // did not see the hold (see `processed_log.rs`).
            self.log.hold();
        } else if !held {
            self.held.set(false);
        }
        self.receiver.set_held(held)
    }

    fn on_done(&mut self, done: Done, acks: &mut Vec<pb::Ack>) {
        for seq in done.skipped {
            let actions = self.receiver.on_skipped(seq);
            self.perform(actions, acks);
        }
        let mut unprocessed = Some(done.unprocessed);
        for ack in done.acks {
            let actions = if ack.retry {
                // Only the last ack of a run asks to retry.
                let rest = unprocessed.take().unwrap_or_default();
                self.receiver.on_retry_later(ack, rest)
            } else {
                self.receiver.on_processed(ack)
            };
            self.perform(actions, acks);
        }
        // Left over without a retry: the run stopped because starts were
        // held, and these go back to their lane.
        if let Some(rest) = unprocessed.filter(|rest| !rest.is_empty()) {
            let actions = self.receiver.on_returned(rest);
            self.perform(actions, acks);
        }
    }

    /// Whether the receiver holds events (or awaits copies) that core has
    /// not heard of on this stream.
    fn progress_moved(&self) -> bool {
        match &self.reported {
            Some((below, awaiting)) => {
                *below != self.receiver.received_below() || *awaiting != self.receiver.awaiting()
            }
            None => self.receiver.received_below() != 0,
        }
    }

    /// Sends the acks collected (an empty batch when only the progress
    /// moved) with the receiver's progress.
    async fn flush(
        &mut self,
        out_tx: &mpsc::Sender<pb::ProcessorMessage>,
        acks: &mut Vec<pb::Ack>,
    ) -> bool {
        let mut batch = std::mem::take(acks);
        if self.faults.drop_acks > 0.0 {
            let rate = self.faults.drop_acks;
            batch.retain(|_| self.rng.f64() >= rate);
        }
        if batch.is_empty() && !self.progress_moved() {
            return true;
        }
        let (received_below, awaiting) = (self.receiver.received_below(), self.receiver.awaiting());
        self.reported = Some((received_below, awaiting.clone()));
        let msg = pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Acks(pb::AckBatch {
                acks: batch,
                processed_below: self.receiver.processed_below(),
                received_below,
                awaiting,
            })),
        };
        out_tx.send(msg).await.is_ok()
    }

    fn status(&mut self) -> pb::ProcessorMessage {
        let c = self.receiver.counters();
        let m = &self.metrics;
        m.duplicate_drops.inc_by(
            c.duplicate_drops
                .saturating_sub(self.synced.duplicate_drops),
        );
        m.acks_resent
            .inc_by(c.acks_resent.saturating_sub(self.synced.acks_resent));
        m.handed_over
            .inc_by(c.handed_over.saturating_sub(self.synced.handed_over));
        self.synced = c;
        m.paused.set(i64::from(self.receiver.is_paused()));
        m.buffered.set(self.receiver.buffered() as i64);
        m.next_expected.set(self.receiver.next_expected() as i64);
        m.running.set(self.receiver.running() as i64);
        m.lanes_active.set(self.receiver.lanes_active() as i64);
        pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Status(pb::ProcessorStatus {
                next_expected: self.receiver.next_expected(),
                paused: self.receiver.is_paused(),
                duplicate_drops: c.duplicate_drops,
                acks_resent: c.acks_resent,
                buffered: self.receiver.buffered() as u32,
                processed: c.processed,
                faults: Some(self.faults),
                running: self.receiver.running() as u32,
                concurrency: self.receiver.concurrency() as u32,
                lanes_active: self.receiver.lanes_active() as u32,
                processed_below: self.receiver.processed_below(),
                received_below: self.receiver.received_below(),
                awaiting: self.receiver.awaiting(),
                webhooks: self
                    .config
                    .webhooks
                    .iter()
                    .map(|t| pb::WebhookStatus {
                        kind: t.kind.clone(),
                        calls: self.receiver.running_of(&t.kind).unwrap_or_default() as u32,
                        cap: self.config.webhook_concurrency,
                    })
                    .collect(),
            })),
        }
    }
}

/// Sends claims (`Claims`), if any; false when the stream is gone.
async fn send_claims(out_tx: &mpsc::Sender<pb::ProcessorMessage>, seqs: Vec<u64>) -> bool {
    if seqs.is_empty() {
        return true;
    }
    let msg = pb::ProcessorMessage {
        body: Some(pb::processor_message::Body::Claims(pb::Claims { seqs })),
    };
    out_tx.send(msg).await.is_ok()
}
