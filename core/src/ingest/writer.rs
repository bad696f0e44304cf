//! The ingest writer task: gathers queued requests into a batch, commits
//! it with consecutive seqs, answers every caller, and after a failed write
//! distrusts what it holds (see the module docs of `ingest`).

use super::*;

/// The ingest writer task (see the module docs of [`super`]).
pub(super) struct Writer {
    pub(super) store: SharedStore,
    pub(super) tail: Arc<Tail>,
    pub(super) config: IngestConfig,
    /// Seq of the next new event; advanced only after a successful commit.
    pub(super) next_seq: Seq,
    /// `Some` while writes fail: the store's state is unknown until the
    /// highest stored seq has been re-read. Until this instant requests are
    /// refused at once (no caller waits for a store known to be failing);
    /// then one batch, or the idle probe, tries the store again.
    pub(super) retry_at: Option<Instant>,
    pub(super) head_tx: watch::Sender<Seq>,
    pub(super) published: Arc<AtomicU64>,
    pub(super) metrics: Arc<CoreMetrics>,
    pub(super) health: Arc<StoreHealth>,
}

impl Writer {
    pub(super) async fn run(
        mut self,
        mut queue_rx: mpsc::Receiver<Pending>,
        cancel: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                biased;
                p = queue_rx.recv() => p,
                _ = cancel.cancelled() => None,
                _ = tokio::time::sleep_until(self.retry_at.unwrap_or_else(Instant::now)), if self.retry_at.is_some() => {
                    self.probe().await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let batch = self.gather(first, &mut queue_rx).await;
            self.commit(batch).await;
        }
        // Shutdown: refuse new requests, but commit (or fail) every request
        // already queued, so no caller is left without an answer.
        queue_rx.close();
        while let Some(first) = queue_rx.recv().await {
            let batch = self.gather(first, &mut queue_rx).await;
            self.commit(batch).await;
        }
        tracing::info!(head = self.next_seq - 1, "ingest writer stopped");
    }

    async fn gather(&self, first: Pending, queue_rx: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
        let deadline = Instant::now() + self.config.linger;
        let mut count = first.events.len();
        let mut batch = vec![first];
        while count < self.config.max_batch {
            let next = match queue_rx.try_recv() {
                Ok(p) => Some(p),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if self.config.linger.is_zero() {
                        None
                    } else {
                        tokio::time::timeout_at(deadline, queue_rx.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                }
            };
            let Some(p) = next else { break };
            count += p.events.len();
            batch.push(p);
        }
        batch
    }

    /// Re-reads the highest stored seq after a failed write. The head moves
    /// up to it (a commit whose answer was lost may have stored events that
    /// nobody was told about: they are delivered like any other).
    async fn reload(&mut self) -> Result<(), crate::store::StoreError> {
        let seq = self.store.next_seq().await?;
        let head = *self.head_tx.borrow();
        if seq - 1 < head {
            // Committed events vanished from the store: nothing here can
            // bring them back, but it must not pass silently.
            tracing::error!(
                head,
                stored = seq - 1,
                "the store holds fewer events than were committed"
            );
        }
        if seq != self.next_seq {
            tracing::warn!(
                expected = self.next_seq,
                stored = seq,
                "next seq re-read from the store after a failed write"
            );
        }
        self.next_seq = seq;
        if seq - 1 > head {
            self.head_tx.send_replace(seq - 1);
        }
        Ok(())
    }

    /// Records a failed write: refuse requests for a while, trust nothing
    /// held in memory until the store was re-read.
    fn failed(&mut self, error: &crate::store::StoreError) {
        self.health.write_failed("append", error);
        self.retry_at = Some(Instant::now() + PROBE_EVERY);
        self.tail.clear();
    }

    /// While writes fail and nothing is queued: re-read the store and try a
    /// write that changes nothing.
    async fn probe(&mut self) {
        let outcome = match self.store.probe_write().await {
            Ok(()) => self.reload().await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                self.health.write_ok("probe");
                self.retry_at = None;
            }
            Err(e) => {
                self.health.write_failed("probe", &e);
                self.retry_at = Some(Instant::now() + PROBE_EVERY);
            }
        }
    }

    fn refuse(&self, batch: Vec<Pending>, kind: &'static str) {
        self.metrics
            .publish_rejected
            .with_label_values(&["unavailable"])
            .inc_by(batch.iter().map(|p| p.events.len() as u64).sum());
        fail_all(batch, IngestError::Unavailable(kind));
    }

    async fn commit(&mut self, batch: Vec<Pending>) {
        if let Some(at) = self.retry_at {
            // Refuse at once while the store is known to fail, unless another
            // writer (results, the probe) has seen a write succeed since.
            if Instant::now() < at
                && let Some(f) = self.health.failure()
            {
                self.refuse(batch, f.kind);
                return;
            }
            if let Err(e) = self.reload().await {
                self.failed(&e);
                self.refuse(batch, e.kind());
                return;
            }
        }
        let published_at_us = now_us();
        let mut append = AppendBatch::new();
        let mut requests = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        // The requests' bytes stay taken until every reply below was sent.
        let mut bytes = Vec::with_capacity(batch.len());
        // Traced events: index in the batch, `publish` and `commit` spans,
        // ended with the replies.
        let event_count: usize = batch.iter().map(|p| p.events.len()).sum();
        let mut traced = Vec::new();
        let mut first = 0;
        for p in batch {
            bytes.push(p.bytes);
            for (i, publish) in p.spans {
                let commit = crate::trace::commit_span(&publish, event_count);
                traced.push((first + i, publish, commit));
            }
            first += p.events.len();
            let mut events = p.events.into_iter();
            let mut fingerprints = p.fingerprints.into_iter();
            for &size in &p.requests {
                let ids = (0..size).map(|_| new_id(published_at_us)).collect();
                append.push(
                    ids,
                    events.by_ref().take(size).collect(),
                    fingerprints.by_ref().take(size).collect(),
                );
            }
            requests.push(p.requests);
            replies.push(p.reply);
        }
        let started = std::time::Instant::now();
        match self
            .store
            .append(self.next_seq, published_at_us, &append)
            .await
        {
            Ok(outcomes) => {
                self.health.write_ok("append");
                self.retry_at = None;
                let mut stored = Vec::new();
                let (ids, events) = append.into_parts();
                let mut events = events.into_iter().zip(ids);
                let sizes = requests.iter().flatten();
                let (mut accepted, mut refused) = (0, 0);
                // Batch index of the next event, to find the traced ones.
                let (mut at, mut traced_next) = (0, traced.iter().peekable());
                for (&size, outcome) in sizes.zip(&outcomes) {
                    let mine = events.by_ref().take(size);
                    let Ok(appended) = outcome else {
                        // Skipped, so that the next request's seqs are not
                        // paired with this request's events.
                        if !self.config.unsafe_pair_after_refusal {
                            mine.for_each(drop);
                        }
                        refused += size as u64;
                        at += size;
                        continue;
                    };
                    accepted += size as u64;
                    for ((event, id), a) in mine.zip(appended) {
                        while let Some((i, publish, _)) = traced_next.next_if(|(i, ..)| *i <= at) {
                            if *i == at {
                                publish.record("seq", a.seq);
                            }
                        }
                        at += 1;
                        if !a.replayed {
                            stored.push(Arc::new(StoredEvent {
                                seq: a.seq,
                                id,
                                kind: event.kind,
                                key: event.key,
                                payload: event.payload,
                                published_at_us,
                                traceparent: event.traceparent,
                            }));
                        }
                    }
                }
                self.next_seq += stored.len() as u64;
                let took = started.elapsed().as_secs_f64();
                let m = &self.metrics;
                m.events_stored.inc_by(stored.len() as u64);
                m.publish_accepted.inc_by(accepted);
                if refused > 0 {
                    m.publish_rejected
                        .with_label_values(&["conflict"])
                        .inc_by(refused);
                }
                m.store_commit_seconds
                    .with_label_values(&["append"])
                    .observe(took);
                m.store_batch_events
                    .with_label_values(&["append"])
                    .observe(event_count as f64);
                self.published
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
                tracing::trace!(
                    events = event_count,
                    new = stored.len(),
                    refused,
                    took_us = started.elapsed().as_micros() as u64,
                    "committed batch"
                );
                if !stored.is_empty() {
                    self.tail.push(stored);
                    self.head_tx.send_replace(self.next_seq - 1);
                }
                // A replay (or a conflict's original) at or above the next
                // seq proves the store holds events this writer was never
                // told were committed (a commit that reported an error but
                // reached the file): adopt them, or they would never be
                // delivered.
                let named = outcomes.iter().flat_map(|o| match o {
                    Ok(appended) => appended.iter().map(|a| a.seq).max(),
                    Err(Conflict {
                        original: Original::Stored { seq },
                        ..
                    }) => Some(*seq),
                    Err(_) => None,
                });
                if let Some(max) = named.max()
                    && max >= self.next_seq
                {
                    tracing::warn!(
                        expected = self.next_seq,
                        stored = max,
                        "a replay revealed events committed by a write reported as failed"
                    );
                    self.next_seq = max + 1;
                    self.tail.clear();
                    self.head_tx.send_replace(max);
                }
                let mut outcomes = outcomes.into_iter();
                for (requests, reply) in requests.into_iter().zip(replies) {
                    let mine: Vec<RequestOutcome> =
                        outcomes.by_ref().take(requests.len()).collect();
                    // A caller that went away still had its events stored.
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                self.failed(&e);
                tracing::warn!(error = %e, events = event_count, "commit failed; answering 503 and re-reading the store");
                self.metrics
                    .publish_rejected
                    .with_label_values(&["unavailable"])
                    .inc_by(event_count as u64);
                let err = IngestError::Unavailable(e.kind());
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

fn fail_all(batch: Vec<Pending>, err: IngestError) {
    for p in batch {
        let _ = p.reply.send(Err(err.clone()));
    }
}

/// A new event id: 12 hex digits of milliseconds then 20 random hex digits,
/// so ids sort roughly by time and never collide in practice.
fn new_id(now_us: i64) -> String {
    let ms = (now_us / 1000) as u64 & 0xffff_ffff_ffff;
    let random = fastrand::u128(..) & ((1u128 << 80) - 1);
    format!("{ms:012x}{random:020x}")
}
