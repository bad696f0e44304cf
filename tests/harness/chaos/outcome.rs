//! What a chaos run found: the checker's report, the faults that fired,
//! and the verdict with its figures.

use super::*;

/// What a run did and what the checker found.
#[derive(Debug)]
pub struct ChaosOutcome {
    /// The checker's verdict.
    pub report: Report,
    /// The faults actually injected.
    pub faults: FaultCounts,
    /// True when every committed event was resolved before the drain timeout.
    pub drained: bool,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
    /// Wall-clock time from the first publish to the last acknowledgement.
    pub publish_elapsed: Duration,
    /// Wall-clock time from the end of publishing until every committed
    /// event was resolved (or the drain timeout).
    pub drain_elapsed: Duration,
    /// The last core's totals (they restart at each core restart).
    pub last_core_totals: pb::Totals,
    /// Proxy counters: connections, resets, frozen, bytes.
    pub proxy: (u64, u64, u64, u64),
    /// The webhook endpoint's answers: ok, 503, hung (when it ran).
    pub webhook: Option<(u64, u64, u64)>,
    /// Where the logs are (kept when the run is invalid or `keep` is set).
    pub dir: Option<PathBuf>,
}

impl ChaosOutcome {
    /// A human-readable summary, with the checker's report.
    pub fn summary(&self, config: &ChaosConfig) -> String {
        let f = &self.faults;
        let t = &self.last_core_totals;
        let (conns, resets, frozen, bytes) = self.proxy;
        let mut s = format!(
            "ackflow chaos run, seed {seed}\n\
             workload: {events} publishes at ~{rate}/s ({publishers} gRPC streams, {rest:.0} % REST), ack loss {ack:.0} %, duplication {dup:.0} %, event drop {drop:.0} %\n\
             ordering: {ordering}, processor concurrency {concurrency}; {keys} keys (skew {skew}), {unkeyed:.0} % without a key, {sleep:.0} % sleep events of {sleep_lo}-{sleep_hi} ms\n\
             faults injected: {pk} processor kills, {ck} core kills, {cp} core pauses, {pa} processor pauses ({sh} of the processor kills and pauses hit a standby), {pr} proxy resets, {ho} half-open episodes, {lw} latency windows, {pg} PostgreSQL restarts, {df} disk fills\n\
             proxy: {conns} connections, {resets} closed by reset, {frozen} frozen, {mib:.1} MiB forwarded\n\
             last core life: {retx} retransmits, {dd} duplicate drops, {da} duplicate acks\n\
             time: publishing {pub_s:.1} s, drain after it {drain_s:.1} s, whole run {all_s:.1} s; drained: {drained}\n",
            seed = config.seed,
            events = config.events,
            rate = config.rate,
            publishers = config.publishers,
            rest = config.rest_fraction * 100.0,
            ack = config.ack_loss * 100.0,
            dup = config.duplicate * 100.0,
            drop = config.drop_events * 100.0,
            ordering = config.ordering,
            concurrency = config.concurrency,
            keys = config.keys,
            skew = config.key_skew,
            unkeyed = config.unkeyed * 100.0,
            sleep = config.sleep_fraction * 100.0,
            sleep_lo = config.sleep_ms.0,
            sleep_hi = config.sleep_ms.1,
            pk = f.processor_kills,
            ck = f.core_kills,
            cp = f.core_pauses,
            pa = f.pauses,
            sh = f.standby_hits,
            pr = f.proxy_resets,
            ho = f.half_opens,
            lw = f.latency_windows,
            pg = f.pg_restarts,
            df = f.disk_fills,
            mib = bytes as f64 / (1024.0 * 1024.0),
            retx = t.retransmits,
            dd = t.duplicate_drops,
            da = t.duplicate_acks,
            pub_s = self.publish_elapsed.as_secs_f64(),
            drain_s = self.drain_elapsed.as_secs_f64(),
            all_s = self.elapsed.as_secs_f64(),
            drained = self.drained,
        );
        if !config.at_most_once.is_empty() {
            s.push_str(&format!(
                "at most once: {}{}\n",
                config.at_most_once.join(", "),
                if config.at_most_once_unenforced {
                    " (checker only: core not told, a negative control)"
                } else {
                    ""
                }
            ));
        }
        if let Some((ok, errors, hangs)) = self.webhook {
            s.push_str(&format!(
                "webhook ({:.0} % of events): {ok} calls answered, {errors} answered 503, {hangs} hung past {} ms\n",
                config.webhooks * 100.0,
                webhook::TIMEOUT_MS
            ));
        }
        s.push_str(&self.report.to_string());
        if let Some(dir) = &self.dir {
            s.push_str(&format!("\nlogs kept in {}", dir.display()));
        }
        s
    }
}
