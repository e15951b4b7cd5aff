//! The results of one run and their Markdown rendering: tables per section, every figure
//! next to its ratio to the floor, and the targets.

use std::fmt::Write;
use std::time::Duration;

use crate::child::load_average;
use crate::measure::Throughput;
use crate::scale::{Fanout, IdleCost, Memory};
use crate::{Plan, Section, Storage, Transport};

/// Concurrency whose floor the fan-out figure is compared with (its senders' count).
const FANOUT_FLOOR_CONCURRENCY: usize = 16;

/// Everything one run measured.
pub struct Report {
    plan: Plan,
    load_before: String,
    load_after: String,
    /// Floor cells.
    pub floor: Vec<(Transport, usize, Throughput)>,
    /// RPC cells.
    pub rpc: Vec<(Transport, Storage, usize, Throughput)>,
    /// The fan-out figure.
    pub fanout: Option<Fanout>,
    /// The send cost with and without idle waiters.
    pub idle: Option<IdleCost>,
    /// The memory figure.
    pub memory: Option<Memory>,
}

impl Report {
    /// An empty report for `plan`; notes the load average now.
    pub fn new(plan: Plan) -> Report {
        Report {
            plan,
            load_before: load_average(),
            load_after: String::new(),
            floor: Vec::new(),
            rpc: Vec::new(),
            fanout: None,
            idle: None,
            memory: None,
        }
    }

    /// Notes the load average at the end of the run.
    pub fn finish(&mut self) {
        self.load_after = load_average();
    }

    /// The report as Markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        if self.plan.has(Section::Floor) {
            self.floor_table(&mut out);
        }
        if self.plan.has(Section::Rpc) {
            self.rpc_table(&mut out);
        }
        if let Some(fanout) = &self.fanout {
            self.fanout_table(&mut out, fanout);
        }
        if let Some(idle) = &self.idle {
            self.idle_table(&mut out, idle);
        }
        if let Some(memory) = &self.memory {
            memory_table(&mut out, memory);
        }
        self.targets(&mut out);
        out
    }

    fn header(&self, out: &mut String) {
        let timing = self.plan.timing;
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let _ = writeln!(out, "# message-switch-bench\n");
        let _ = writeln!(
            out,
            "{} run: {:.2} s windows after {:.2} s warm-up; 100-byte bodies; {cores} cores; \
             load average (1 min) {} at the start, {} at the end; server runtime worker \
             threads: {}.\n",
            if self.plan.quick { "Quick" } else { "Full" },
            timing.window.as_secs_f64(),
            timing.warmup.as_secs_f64(),
            self.load_before,
            self.load_after,
            self.plan.server_threads.map_or_else(
                || "tokio's default (one per core)".to_owned(),
                |n| n.to_string()
            ),
        );
    }

    fn floor_table(&self, out: &mut String) {
        let _ = writeln!(out, "## Floor: HTTP/1.1 keep-alive echo round trips\n");
        let _ = writeln!(
            out,
            "| transport | conc | RT/s | p50 µs | p99 µs | echo CPU µs/RT | bench CPU µs/RT |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for (transport, concurrency, floor) in &self.floor {
            let _ = writeln!(
                out,
                "| {} | {concurrency} | {:.0} | {} | {} | {} | {} |",
                transport_name(*transport),
                floor.per_second(),
                micros(floor.latency.p50()),
                micros(floor.latency.p99()),
                micros(floor.server_cpu_per_operation()),
                micros(floor.client_cpu_per_operation()),
            );
        }
        out.push('\n');
    }

    fn rpc_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## RPC: `Client::call` → switch → `serve` (echo) → switch → caller\n"
        );
        let _ = writeln!(
            out,
            "Ratios are to the floor cell of the same transport and concurrency: RPC/s ÷ \
             floor RT/s, p50 ÷ floor p50 (= the RPC in floor round trips), p99 ÷ floor p99, \
             switch CPU ÷ echo-server CPU per round trip.\n"
        );
        let _ = writeln!(
            out,
            "| transport | statedir | conc | RPC/s | ÷ floor | p50 µs | ÷ floor | p99 µs | \
             ÷ floor | switch CPU µs/RPC | ÷ echo | bench CPU µs/RPC | HTTP req/RPC |"
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (transport, storage, concurrency, rpc) in &self.rpc {
            let floor = self.floor_of(*transport, *concurrency);
            let _ = writeln!(
                out,
                "| {} | {} | {concurrency} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                transport_name(*transport),
                storage_name(*storage),
                rpc.per_second(),
                ratio(rpc.per_second(), floor.map(Throughput::per_second)),
                micros(rpc.latency.p50()),
                ratio_of(rpc.latency.p50(), floor.map(|f| f.latency.p50())),
                micros(rpc.latency.p99()),
                ratio_of(rpc.latency.p99(), floor.map(|f| f.latency.p99())),
                micros(rpc.server_cpu_per_operation()),
                ratio_of(
                    rpc.server_cpu_per_operation(),
                    floor.map(Throughput::server_cpu_per_operation)
                ),
                micros(rpc.client_cpu_per_operation()),
                rpc.requests_per_operation
                    .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}")),
            );
        }
        out.push('\n');
    }

    fn fanout_table(&self, out: &mut String, fanout: &Fanout) {
        let floor = self.floor_of(Transport::Unix, FANOUT_FLOOR_CONCURRENCY);
        let per_second = fanout.delivered as f64 / fanout.cpu.elapsed.as_secs_f64().max(1e-9);
        let cpu = crate::measure::per_operation(fanout.cpu.server, fanout.delivered);
        let _ = writeln!(
            out,
            "## Fan-out: one message to each of {} queues\n",
            fanout.queues
        );
        let _ = writeln!(
            out,
            "Each queue has one listener (its own connection: Transfer, then Ack); a round sends \
             one request to every queue over {} connections and ends when every listener has \
             acked its message. Unix socket, no statedir. Ratios: messages/s ÷ floor RT/s and \
             switch CPU ÷ echo CPU per RT, both at concurrency {FANOUT_FLOOR_CONCURRENCY}.\n",
            crate::FANOUT_SENDERS
        );
        let _ = writeln!(
            out,
            "| rounds | round p50 ms | round p99 ms | messages/s | ÷ floor | \
             switch CPU µs/message | ÷ echo |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {per_second:.0} | {} | {} | {} |\n",
            fanout.rounds.count(),
            millis(fanout.rounds.p50()),
            millis(fanout.rounds.p99()),
            ratio(per_second, floor.map(Throughput::per_second)),
            micros(cpu),
            ratio_of(cpu, floor.map(Throughput::server_cpu_per_operation)),
        );
    }

    fn idle_table(&self, out: &mut String, idle: &IdleCost) {
        let floor = self.floor_of(Transport::Unix, 1);
        let _ = writeln!(
            out,
            "## A Send with {} idle Transfers parked on other queues, against none\n",
            idle.idle
        );
        let _ = writeln!(
            out,
            "Two switches side by side (Unix socket, no statedir), one with the parked \
             Transfers (each on its own queue and connection), one without; on each, one \
             connection sends 100-byte requests one after another to a queue nobody listens \
             on. The window is cut into slices that alternate between the two switches, so \
             that both see the same background load. \"÷ floor\" is p50 ÷ the floor's p50 at \
             concurrency 1.\n"
        );
        let _ = writeln!(
            out,
            "| parked Transfers | sends/s | p50 µs | ÷ floor | p99 µs | switch CPU µs/send |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
        for (parked, phase) in [(0, &idle.without), (idle.idle, &idle.with)] {
            let _ = writeln!(
                out,
                "| {parked} | {:.0} | {} | {} | {} | {} |",
                phase.per_second(),
                micros(phase.latency.p50()),
                ratio_of(phase.latency.p50(), floor.map(|f| f.latency.p50())),
                micros(phase.latency.p99()),
                micros(phase.server_cpu_per_operation()),
            );
        }
        let _ = writeln!(
            out,
            "| ratio | {} | {} | | {} | {} |\n",
            ratio(idle.with.per_second(), Some(idle.without.per_second())),
            ratio_of(idle.with.latency.p50(), Some(idle.without.latency.p50())),
            ratio_of(idle.with.latency.p99(), Some(idle.without.latency.p99())),
            ratio_of(
                idle.with.server_cpu_per_operation(),
                Some(idle.without.server_cpu_per_operation())
            ),
        );
    }

    fn targets(&self, out: &mut String) {
        let mut rows: Vec<(String, String, &str, Option<bool>)> = Vec::new();
        let rpc_of = |transport, concurrency| {
            self.rpc
                .iter()
                .find(|(t, s, c, _)| *t == transport && *s == Storage::Memory && *c == concurrency)
        };
        if let (Some((.., rpc)), Some(floor)) = (
            rpc_of(Transport::Unix, 1),
            self.floor_of(Transport::Unix, 1),
        ) {
            let rts = ratio_value(rpc.latency.p50(), floor.latency.p50());
            rows.push((
                "RPC at concurrency 1, Unix: p50 in floor round trips".into(),
                format!("{rts:.2}"),
                "≤ 4",
                Some(rts <= 4.0),
            ));
        }
        for (transport, storage, concurrency, rpc) in &self.rpc {
            if *concurrency == 16 {
                let cpu = rpc.server_cpu_per_operation().as_secs_f64() * 1e6;
                rows.push((
                    format!(
                        "switch CPU per RPC at concurrency 16, {}, {}",
                        transport_name(*transport),
                        storage_name(*storage)
                    ),
                    format!("{cpu:.1} µs"),
                    "≤ 20 µs",
                    Some(cpu <= 20.0),
                ));
            }
        }
        if let Some(idle) = &self.idle {
            let latency = ratio_value(idle.with.latency.p50(), idle.without.latency.p50());
            let cpu = ratio_value(
                idle.with.server_cpu_per_operation(),
                idle.without.server_cpu_per_operation(),
            );
            rows.push((
                format!("Send with {} idle waiters ÷ none: p50 latency", idle.idle),
                format!("{latency:.2}"),
                "≤ 1.2",
                Some(latency <= 1.2),
            ));
            rows.push((
                format!("Send with {} idle waiters ÷ none: switch CPU", idle.idle),
                format!("{cpu:.2}"),
                "≤ 1.2",
                Some(cpu <= 1.2),
            ));
        }
        if let Some(memory) = &self.memory {
            let overhead = memory.overhead_per_message();
            rows.push((
                format!("overhead per queued message ({} messages)", memory.messages),
                format!("{overhead:.0} B"),
                "≤ 300 B",
                Some(overhead <= 300.0),
            ));
        }
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "## Targets (issue 6)\n");
        let _ = writeln!(out, "| target | measured | goal | met |");
        let _ = writeln!(out, "|---|---:|---:|---|");
        for (what, measured, goal, met) in rows {
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            let _ = writeln!(out, "| {what} | {measured} | {goal} | {met} |");
        }
        out.push('\n');
    }

    fn floor_of(&self, transport: Transport, concurrency: usize) -> Option<&Throughput> {
        self.floor
            .iter()
            .find(|(t, c, _)| *t == transport && *c == concurrency)
            .map(|(_, _, floor)| floor)
    }
}

fn memory_table(out: &mut String, memory: &Memory) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let per_message =
        memory.rss_after.saturating_sub(memory.rss_before) as f64 / memory.messages.max(1) as f64;
    let overhead = memory.overhead_per_message();
    let _ = writeln!(
        out,
        "## Memory: {} queued 100-byte messages\n",
        memory.messages
    );
    let _ = writeln!(
        out,
        "All in one queue, sent over {} connections to a fresh switch (Unix socket, no \
         statedir); RSS from /proc/PID/status before and after.\n",
        crate::MEMORY_SENDERS
    );
    let _ = writeln!(
        out,
        "| RSS before MiB | RSS after MiB | bytes/message | overhead beyond payload B | \
         ÷ payload | fill msgs/s |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {:.1} | {:.1} | {per_message:.0} | {overhead:.0} | {:.2} | {:.0} |\n",
        mib(memory.rss_before),
        mib(memory.rss_after),
        overhead / crate::rpc::PAYLOAD.len() as f64,
        memory.messages as f64 / memory.elapsed.as_secs_f64().max(1e-9),
    );
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Unix => "Unix",
        Transport::Tcp => "TCP",
    }
}

fn storage_name(storage: Storage) -> &'static str {
    match storage {
        Storage::Memory => "no",
        Storage::Statedir => "yes",
    }
}

fn micros(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1e6)
}

fn millis(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

fn ratio(value: f64, base: Option<f64>) -> String {
    match base {
        Some(base) if base > 0.0 => format!("{:.2}", value / base),
        _ => "–".to_owned(),
    }
}

fn ratio_of(value: Duration, base: Option<Duration>) -> String {
    ratio(value.as_secs_f64(), base.map(|b| b.as_secs_f64()))
}

fn ratio_value(value: Duration, base: Duration) -> f64 {
    value.as_secs_f64() / base.as_secs_f64().max(1e-12)
}
