//! Core's admin stream into state: snapshots (sparklines, the floor
//! holder let go), the feed (results, retransmits, duplicates, dead and
//! requeued events, pauses, connections) as rows and log lines, and the
//! monitor's own connection to core.

use ackflow_proto::v1 as pb;

use super::*;

impl App {
    pub(super) fn on_admin(&mut self, update: pb::watch_response::Update) {
        use pb::watch_response::Update;
        self.ticks_since_update = 0;
        match update {
            Update::Snapshot(snapshot) => {
                self.core_time_us = Some(snapshot.taken_at_us);
                self.on_snapshot(snapshot);
            }
            Update::Feed(feed) => {
                self.core_time_us = Some(self.core_time_us.unwrap_or(0).max(feed.at_us));
                self.on_feed(feed);
            }
            Update::Lagged(missed) => self.push_log(
                None,
                LogKind::Lagged,
                format!("lagged: missed {missed} events"),
            ),
        }
    }

    pub(super) fn on_snapshot(&mut self, snapshot: pb::Snapshot) {
        let new = snapshot.totals.unwrap_or_default();
        // Counts per snapshot interval from the totals. The first snapshot
        // has nothing to compare with; a total that went down (core or the
        // processor restarted) counts as zero, not as a huge jump.
        let (retransmits, duplicate_drops) = match self.snapshot.as_ref().and_then(|s| s.totals) {
            Some(old) => (
                new.retransmits.saturating_sub(old.retransmits),
                new.duplicate_drops.saturating_sub(old.duplicate_drops),
            ),
            None => (0, 0),
        };
        push_bounded(&mut self.retransmit_samples, retransmits, SPARKLINE_SAMPLES);
        push_bounded(
            &mut self.duplicate_drop_samples,
            duplicate_drops,
            SPARKLINE_SAMPLES,
        );
        self.note_floor_released(&snapshot);
        self.snapshot = Some(snapshot);
        self.scroll.in_flight = self
            .scroll
            .in_flight
            .min(self.in_flight().len().saturating_sub(1));
        self.selected_dead = self.selected_dead.min(self.dead().len().saturating_sub(1));
        if self.focus == Focus::Dead && self.dead().is_empty() {
            self.focus = Focus::InFlight;
        }
    }

    /// Logs a floor holder held long once a newer snapshot has another one
    /// (or none): the lanes line shows it only while it lasts. The time is
    /// the last one seen, so short by at most one snapshot interval.
    pub(super) fn note_floor_released(&mut self, new: &pb::Snapshot) {
        let Some(old) = self.snapshot.as_ref().and_then(|s| s.floor_holder.clone()) else {
            return;
        };
        let released = new
            .floor_holder
            .as_ref()
            .is_none_or(|holder| holder.seq != old.seq);
        if !released || old.held_us <= FLOOR_HELD_LONG_US {
            return;
        }
        let key = if old.key.is_empty() {
            "no key".to_string()
        } else {
            format!("key {}", crate::fmt::fmt_key(&old.key, 24))
        };
        self.push_log(
            Some(new.taken_at_us),
            LogKind::FloorHeld,
            format!(
                "floor held {} by seq {} ({key})",
                crate::fmt::fmt_us(old.held_us),
                old.seq
            ),
        );
    }

    pub(super) fn on_feed(&mut self, feed: pb::FeedEvent) {
        use pb::feed_event::Kind;
        let at = Some(feed.at_us);
        let Some(kind) = feed.kind else {
            return;
        };
        match kind {
            Kind::Result(result) => {
                push_bounded(&mut self.results, result, MAX_RESULTS);
                // Someone reading older results keeps seeing the same rows.
                if self.scroll.results > 0 {
                    self.scroll.results =
                        (self.scroll.results + 1).min(self.results.len().saturating_sub(1));
                }
            }
            Kind::Retransmit(r) => self.push_log(
                at,
                LogKind::Retransmit,
                format!(
                    "retransmit seq {} attempt {} (next in {})",
                    r.seq,
                    r.attempt,
                    crate::fmt::fmt_us(r.backoff_us)
                ),
            ),
            Kind::Retry(r) => self.push_log(
                at,
                LogKind::Retry,
                format!(
                    "retry later: seq {}{} attempt {} asked, sent again in {}: {}",
                    r.seq,
                    if r.key.is_empty() {
                        String::new()
                    } else {
                        format!(" (key {})", r.key)
                    },
                    r.attempt,
                    crate::fmt::fmt_us(r.after_us),
                    r.reason
                ),
            ),
            Kind::Duplicate(d) => self.push_log(
                at,
                LogKind::Duplicate,
                format!(
                    "duplicate drop: processor dropped {} (total {})",
                    d.count, d.total
                ),
            ),
            Kind::Connection(c) => {
                let who = if c.processor_id.is_empty() {
                    "processor".to_string()
                } else {
                    format!("processor {}", c.processor_id)
                };
                let text = if c.connected {
                    format!("{who} connected (session {})", c.session)
                } else if c.session == 0 {
                    // A hot standby (the reason says whom it waits behind),
                    // or a processor gone for good whose keys moved.
                    format!("{who} {}", c.reason)
                } else if c.reason.is_empty() {
                    format!("{who} disconnected (session {})", c.session)
                } else {
                    format!("{who} disconnected (session {}): {}", c.session, c.reason)
                };
                self.push_log(at, LogKind::Connection, text);
            }
            Kind::Pause(p) => {
                let text = if p.paused {
                    "processor paused"
                } else {
                    "processor resumed"
                };
                self.push_log(at, LogKind::Pause, text.to_string());
            }
            Kind::Dead(d) => self.push_log(
                at,
                LogKind::Dead,
                format!(
                    "dead: seq {} parked after {} {}: {}",
                    d.seq,
                    d.attempts,
                    if d.attempts == 1 {
                        "attempt"
                    } else {
                        "attempts"
                    },
                    d.reason
                ),
            ),
            Kind::Requeued(r) => self.push_log(
                at,
                LogKind::Requeued,
                format!(
                    "requeued: seq {} published again as seq {}",
                    r.seq, r.new_seq
                ),
            ),
        }
    }

    pub(super) fn on_connection(&mut self, state: ConnState) {
        match &state {
            ConnState::Connected => {
                if self.conn != ConnState::Connected {
                    self.push_log(
                        None,
                        LogKind::Monitor,
                        format!("watching core at {}", self.core_addr),
                    );
                }
                self.last_error = None;
                self.ticks_since_update = 0;
            }
            ConnState::Unreachable { error } => {
                // A core that stays down fails the same way on every try;
                // one log line per distinct failure is enough.
                if self.conn == ConnState::Connected {
                    self.push_log(
                        None,
                        LogKind::Error,
                        format!("lost core at {}: {error}", self.core_addr),
                    );
                } else if self.last_error.as_ref() != Some(error) {
                    self.push_log(
                        None,
                        LogKind::Error,
                        format!("core unreachable at {}: {error}", self.core_addr),
                    );
                }
                self.last_error = Some(error.clone());
            }
            ConnState::Connecting { .. } => {}
        }
        self.conn = state;
    }
}
