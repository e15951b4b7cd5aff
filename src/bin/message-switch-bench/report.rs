//! The results of one run and their Markdown rendering: tables per section, every figure
//! next to its ratio to the floor, and the targets.

use std::fmt::Write;
use std::time::Duration;

use crate::child::load_average;
use crate::fsync::Syncs;
use crate::measure::{Latencies, Throughput};
use crate::original;
use crate::repeats::{self, Pair};
use crate::scale::{Fanout, IdleCost, Memory};
use crate::{Key, Plan, Section, Storage, Transport};

/// Concurrency whose floor the fan-out figure is compared with (its senders' count).
const FANOUT_FLOOR_CONCURRENCY: usize = 16;

/// Switch CPU per RPC of the real pattern at one caller that issue 14 asks for, in µs.
const REAL_CPU_TARGET_US: f64 = 60.0;

/// NATS's broker CPU per request/reply at 16 callers on the same machine (issue 14), in µs:
/// the target for the RPC cells at concurrency 16.
const NATS_CPU_US: f64 = 27.0;

/// Switch CPU per HTTP exchange ÷ the echo's per round trip that issue 20 asks for at 16
/// callers, and at one caller (no worse than before the issue: 1.06).
const EXCHANGE_RATIO_BUSY: f64 = 1.3;
const EXCHANGE_RATIO_IDLE: f64 = 1.06;

/// fdatasync latencies a durable RPC at one caller may add to the in-memory p50: two syncs
/// are on its critical path (the request's and the response's), plus a margin.
const SYNCS_ALLOWED: f64 = 2.5;

/// Everything one run measured.
pub struct Report {
    plan: Plan,
    load_before: String,
    load_after: String,
    /// Floor cells (storage always memory).
    pub floor: Vec<(Key, Throughput)>,
    /// RPC cells.
    pub rpc: Vec<(Key, Throughput)>,
    /// Real-pattern cells.
    pub real: Vec<(Key, Throughput)>,
    /// `fdatasync` probes alone, one before each durable cell.
    pub fsync: Vec<Syncs>,
    /// `fdatasync` probes beside a spinning thread, one before each durable cell.
    pub fsync_busy: Vec<Syncs>,
    /// The fan-out figure.
    pub fanout: Option<Fanout>,
    /// The send cost with and without idle waiters.
    pub idle: Option<IdleCost>,
    /// The memory figure.
    pub memory: Option<Memory>,
    /// The original's RPC pairs (`original-pairs`), run or skipped.
    pub original: Option<original::Outcome>,
    /// The busy exchange target's cells measured again, pair by pair (`repeats`).
    pub exchange_repeats: Vec<Pair>,
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
            real: Vec::new(),
            fsync: Vec::new(),
            fsync_busy: Vec::new(),
            fanout: None,
            idle: None,
            memory: None,
            original: None,
            exchange_repeats: Vec::new(),
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
        if self.plan.has(Section::Real) {
            self.real_table(&mut out);
        }
        if self.plan.server_threads.len() > 1 {
            self.threads_table(&mut out);
        }
        if !self.fsync.is_empty() {
            self.durable_table(&mut out);
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
        if let Some(outcome) = &self.original {
            original::render(&mut out, outcome);
        }
        self.targets(&mut out);
        self.exchange_targets(&mut out);
        out
    }

    fn header(&self, out: &mut String) {
        let timing = self.plan.timing;
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let _ = writeln!(out, "# message-switch-bench\n");
        let _ = writeln!(
            out,
            "{} run: {:.2} s windows after {:.2} s warm-up; 100-byte bodies; {cores} cores; \
             load average (1 min) {} at the start, {} at the end; server runtime threads: \
             {} (1 = current-thread runtime).\n",
            if self.plan.quick { "Quick" } else { "Full" },
            timing.window.as_secs_f64(),
            timing.warmup.as_secs_f64(),
            self.load_before,
            self.load_after,
            self.plan
                .server_threads
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
    }

    fn floor_table(&self, out: &mut String) {
        let _ = writeln!(out, "## Floor: HTTP/1.1 keep-alive echo round trips\n");
        let _ = writeln!(
            out,
            "| transport | threads | conc | RT/s | p50 µs | p99 µs | echo CPU µs/RT | \
             bench CPU µs/RT |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for (key, floor) in &self.floor {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
                transport_name(key.transport),
                key.threads,
                key.concurrency,
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
             switch CPU ÷ echo-server CPU per round trip (echo server with the same runtime \
             threads).\n"
        );
        let _ = writeln!(
            out,
            "| transport | threads | statedir | conc | RPC/s | ÷ floor | p50 µs | ÷ floor | \
             p99 µs | ÷ floor | switch CPU µs/RPC | ÷ echo | bench CPU µs/RPC | HTTP req/RPC |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (key, rpc) in &self.rpc {
            let floor = self.floor_of(key);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                transport_name(key.transport),
                key.threads,
                storage_name(key.storage),
                key.concurrency,
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
                requests_per_rpc(rpc),
            );
        }
        out.push('\n');
    }

    fn real_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## The real clients' pattern: RPC as the OCaml library makes it (Unix)\n"
        );
        let _ = writeln!(
            out,
            "Per RPC: the caller's CreatePersistent and Send on one connection, the service's \
             Transfer, its response Send and its Ack on a shared reply connection, the \
             caller's listener's Transfer and Ack (7 exchanges; fewer per RPC when a Transfer \
             returns several messages). \"CPU µs/exchange\" is the switch's CPU per RPC ÷ the \
             HTTP requests it served per RPC; \"echo µs/RT\" is the echo server's CPU per \
             round trip at the same concurrency and threads, and \"÷ echo\" their ratio.\n"
        );
        let _ = writeln!(
            out,
            "| threads | statedir | callers | RPC/s | p50 µs | p99 µs | max ms | \
             switch CPU µs/RPC | HTTP req/RPC | switch CPU µs/exchange | echo µs/RT | ÷ echo | \
             bench CPU µs/RPC |"
        );
        let _ = writeln!(
            out,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (key, real) in &self.real {
            let floor = self.floor_of(key).map(Throughput::server_cpu_per_operation);
            let per_exchange = per_exchange(real);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                key.threads,
                storage_name(key.storage),
                key.concurrency,
                real.per_second(),
                micros(real.latency.p50()),
                micros(real.latency.p99()),
                millis(real.latency.quantile(1.0)),
                micros(real.server_cpu_per_operation()),
                requests_per_rpc(real),
                per_exchange.map_or_else(|| "–".to_owned(), micros),
                floor.map_or_else(|| "–".to_owned(), micros),
                per_exchange.map_or_else(|| "–".to_owned(), |e| ratio_of(e, floor)),
                micros(real.client_cpu_per_operation()),
            );
        }
        out.push('\n');
    }

    /// Every cell at another thread count against the same cell at the first (the default).
    fn threads_table(&self, out: &mut String) {
        let base = self.plan.threads();
        let _ = writeln!(
            out,
            "## Runtime threads: each cell against the same cell with {base} thread(s)\n"
        );
        let _ = writeln!(
            out,
            "Ratios of the same run (cells interleaved): above 1 means more for the other \
             thread count.\n"
        );
        let _ = writeln!(
            out,
            "| workload | transport | statedir | conc | threads | RPC/s ratio | p50 ratio | \
             switch CPU/RPC ratio | switch CPU µs/RPC ({base} / other) |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|");
        let workloads = [
            ("floor", &self.floor),
            ("rpc", &self.rpc),
            ("real", &self.real),
        ];
        for (name, cells) in workloads {
            for (key, other) in cells.iter().filter(|(k, _)| k.threads != base) {
                let base_key = Key {
                    threads: base,
                    ..*key
                };
                let Some((_, first)) = cells.iter().find(|(k, _)| *k == base_key) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                    transport_name(key.transport),
                    storage_name(key.storage),
                    key.concurrency,
                    key.threads,
                    ratio(other.per_second(), Some(first.per_second())),
                    ratio_of(other.latency.p50(), Some(first.latency.p50())),
                    ratio_of(
                        other.server_cpu_per_operation(),
                        Some(first.server_cpu_per_operation())
                    ),
                    micros(first.server_cpu_per_operation()),
                    micros(other.server_cpu_per_operation()),
                );
            }
        }
        out.push('\n');
    }

    /// The disk's floor, and every durable cell against its in-memory twin.
    fn durable_table(&self, out: &mut String) {
        let fsync = latencies(&self.fsync);
        let sync_cpu = cpu_per_sync(&self.fsync);
        let _ = writeln!(out, "## Durable cells against the disk\n");
        let _ = writeln!(
            out,
            "`fdatasync` of a 160-byte append in the scratch directory (where the state \
             directories are), probed for an eighth of a window before each durable cell, \
             alone and then beside a spinning thread. On a virtual machine an idle CPU makes \
             the sync's completion wait for the host to run it again: a switch waiting for its \
             journal with nothing else to do (one caller) is in the first case, a busy one in \
             the second.\n"
        );
        let _ = writeln!(
            out,
            "| probe | syncs | p50 µs | p99 µs | max ms | CPU µs/sync |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for (name, probes) in [
            ("alone", &self.fsync),
            ("beside a busy thread", &self.fsync_busy),
        ] {
            let measured = latencies(probes);
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                measured.count(),
                micros(measured.p50()),
                micros(measured.p99()),
                millis(measured.quantile(1.0)),
                micros(cpu_per_sync(probes)),
            );
        }
        let _ = writeln!(
            out,
            "\nEach durable cell against the in-memory cell of the same workload, transport, \
             callers and threads. \"syncs/RPC\" are the switch's journal syncs per RPC; \
             \"model\" is the in-memory CPU per RPC + syncs/RPC × the probe's CPU per sync \
             (alone), to compare with the measured durable CPU per RPC. \"bound\" is the \
             in-memory p50 + {SYNCS_ALLOWED} × the lone probe's p50. \"max ms\" is the \
             longest call in each window (the switches compact every {} MiB of \
             journal).\n",
            self.plan.compaction_bytes_min >> 20,
        );
        let _ = writeln!(
            out,
            "| workload | transport | threads | conc | RPC/s ÷ memory | switch CPU ÷ memory | \
             syncs/RPC | CPU µs/RPC durable / model | p50 µs memory / durable | bound µs | \
             durable p50 ÷ bound | max ms memory / durable |"
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (name, cells) in [("rpc", &self.rpc), ("real", &self.real)] {
            for (key, durable) in cells.iter().filter(|(k, _)| k.storage.is_durable()) {
                let memory_key = Key {
                    storage: Storage::Memory,
                    ..*key
                };
                let Some((_, memory)) = cells.iter().find(|(k, _)| *k == memory_key) else {
                    continue;
                };
                let bound = memory.latency.p50() + fsync.p50().mul_f64(SYNCS_ALLOWED);
                let syncs = durable.syncs_per_operation.unwrap_or(0.0);
                let model = memory.server_cpu_per_operation() + sync_cpu.mul_f64(syncs);
                let _ = writeln!(
                    out,
                    "| {name}{} | {} | {} | {} | {} | {} | {syncs:.2} | {} / {} | {} / {} | {} \
                     | {} | {} / {} |",
                    lazy_suffix(key.storage),
                    transport_name(key.transport),
                    key.threads,
                    key.concurrency,
                    ratio(durable.per_second(), Some(memory.per_second())),
                    ratio_of(
                        durable.server_cpu_per_operation(),
                        Some(memory.server_cpu_per_operation())
                    ),
                    micros(durable.server_cpu_per_operation()),
                    micros(model),
                    micros(memory.latency.p50()),
                    micros(durable.latency.p50()),
                    micros(bound),
                    ratio_of(durable.latency.p50(), Some(bound)),
                    millis(memory.latency.quantile(1.0)),
                    millis(durable.latency.quantile(1.0)),
                );
            }
        }
        out.push('\n');
    }

    fn fanout_table(&self, out: &mut String, fanout: &Fanout) {
        let floor = self.floor_of(&self.key(FANOUT_FLOOR_CONCURRENCY));
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
        let floor = self.floor_of(&self.key(1));
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
        let mut rows: Vec<(String, String, String, bool)> = Vec::new();
        let threads = self.plan.threads();
        self.real_targets(threads, &mut rows);
        for (key, rpc) in &self.rpc {
            if key.concurrency == 16 && key.threads == threads && key.storage == Storage::Memory {
                let cpu = rpc.server_cpu_per_operation().as_secs_f64() * 1e6;
                rows.push((
                    format!(
                        "RPC, 16 callers, {}: switch CPU per RPC (NATS's)",
                        transport_name(key.transport)
                    ),
                    format!("{cpu:.1} µs"),
                    format!("≤ {NATS_CPU_US} µs"),
                    cpu <= NATS_CPU_US,
                ));
            }
        }
        self.durable_targets(threads, &mut rows);
        if let Some(idle) = &self.idle {
            let latency = ratio_value(idle.with.latency.p50(), idle.without.latency.p50());
            let cpu = ratio_value(
                idle.with.server_cpu_per_operation(),
                idle.without.server_cpu_per_operation(),
            );
            rows.push((
                format!("Send with {} idle waiters ÷ none: p50 latency", idle.idle),
                format!("{latency:.2}"),
                "≤ 1.2".into(),
                latency <= 1.2,
            ));
            rows.push((
                format!("Send with {} idle waiters ÷ none: switch CPU", idle.idle),
                format!("{cpu:.2}"),
                "≤ 1.2".into(),
                cpu <= 1.2,
            ));
        }
        if let Some(memory) = &self.memory {
            let overhead = memory.overhead_per_message();
            rows.push((
                format!("overhead per queued message ({} messages)", memory.messages),
                format!("{overhead:.0} B"),
                "≤ 300 B".into(),
                overhead <= 300.0,
            ));
        }
        target_table(
            out,
            &format!(
                "Targets (issue 14; the last three from issue 6), with {threads} runtime \
                 thread(s)"
            ),
            rows,
        );
    }

    /// Issue 20's targets on the cost of an exchange: the switch's CPU per HTTP exchange
    /// against the echo's per round trip (same concurrency and threads, in memory), and the
    /// original's Unix pair against the OCaml switch.
    fn exchange_targets(&self, out: &mut String) {
        let threads = self.plan.threads();
        let mut rows: Vec<(String, String, String, bool)> = Vec::new();
        let cells = [
            ("RPC", &self.rpc, 16, EXCHANGE_RATIO_BUSY),
            ("real pattern", &self.real, 16, EXCHANGE_RATIO_BUSY),
            ("real pattern", &self.real, 1, EXCHANGE_RATIO_IDLE),
        ];
        for (name, cells, concurrency, goal) in cells {
            let key = Key {
                threads,
                ..self.key(concurrency)
            };
            let Some((_, cell)) = cells.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            let (Some(exchange), Some(floor)) = (per_exchange(cell), self.floor_of(&key)) else {
                continue;
            };
            let mut ratio = ratio_value(exchange, floor.server_cpu_per_operation());
            let mut repeated = String::new();
            if name == "RPC" && concurrency == repeats::CONCURRENCY {
                if let Some((median, all)) = self.median_with_repeats(ratio) {
                    repeated = format!(
                        "; median of {} side-by-side pairs, this one first: {all}",
                        self.exchange_repeats.len() + 1
                    );
                    ratio = median;
                }
            }
            let user_share = |total: Duration, user: Option<Duration>| match user {
                Some(user) if !total.is_zero() => {
                    format!(
                        ", {:.0} % user",
                        100.0 * user.as_secs_f64() / total.as_secs_f64()
                    )
                }
                _ => String::new(),
            };
            rows.push((
                format!(
                    "{name}, {concurrency} caller(s), Unix, in memory: switch CPU per exchange \
                     ({} µs{}) ÷ echo per round trip ({} µs{}){repeated}",
                    micros(exchange),
                    user_share(
                        cell.server_cpu_per_operation(),
                        cell.server_user_cpu_per_operation()
                    ),
                    micros(floor.server_cpu_per_operation()),
                    user_share(
                        floor.server_cpu_per_operation(),
                        floor.server_user_cpu_per_operation()
                    ),
                ),
                format!("{ratio:.2}"),
                format!("≤ {goal}"),
                ratio <= goal,
            ));
        }
        if let Some(original::Outcome::Runs(runs)) = &self.original {
            if let Some(ratio) = original::cpu_ratio(runs, original::Pair::Unix) {
                rows.push((
                    "the original's Unix RPC pair: our switch's CPU per RPC ÷ the OCaml \
                     switch's"
                        .into(),
                    format!("{ratio:.2}"),
                    format!("≤ {}", original::CPU_RATIO_TARGET),
                    ratio <= original::CPU_RATIO_TARGET,
                ));
            }
        }
        target_table(
            out,
            &format!(
                "Targets (issue 20: the cost of an exchange), with {threads} runtime thread(s)"
            ),
            rows,
        );
    }

    fn real_targets(&self, threads: u16, rows: &mut Vec<(String, String, String, bool)>) {
        let key = Key {
            storage: Storage::Memory,
            ..self.key(1)
        };
        let key = Key { threads, ..key };
        let Some((_, real)) = self.real.iter().find(|(k, _)| *k == key) else {
            return;
        };
        let cpu = real.server_cpu_per_operation().as_secs_f64() * 1e6;
        let echo = self
            .floor_of(&key)
            .map(|f| {
                format!(
                    " (echo: {} µs per exchange)",
                    micros(f.server_cpu_per_operation())
                )
            })
            .unwrap_or_default();
        rows.push((
            format!("real pattern, 1 caller: switch CPU per RPC{echo}"),
            format!("{cpu:.1} µs"),
            format!("≤ {REAL_CPU_TARGET_US} µs"),
            cpu <= REAL_CPU_TARGET_US,
        ));
    }

    fn durable_targets(&self, threads: u16, rows: &mut Vec<(String, String, String, bool)>) {
        let fsync = latencies(&self.fsync);
        for (name, cells) in [("RPC", &self.rpc), ("real pattern", &self.real)] {
            let cell = |storage, concurrency| {
                cells
                    .iter()
                    .find(|(k, _)| {
                        k.transport == Transport::Unix
                            && k.threads == threads
                            && k.storage == storage
                            && k.concurrency == concurrency
                    })
                    .map(|(_, cell)| cell)
            };
            if let (Some(memory), Some(durable)) =
                (cell(Storage::Memory, 16), cell(Storage::Statedir, 16))
            {
                let throughput = durable.per_second() / memory.per_second().max(1e-9);
                let cpu = ratio_value(
                    durable.server_cpu_per_operation(),
                    memory.server_cpu_per_operation(),
                );
                rows.push((
                    format!("{name}, 16 callers, Unix: durable RPC/s ÷ in-memory"),
                    format!("{throughput:.2}"),
                    "≥ 0.6".into(),
                    throughput >= 0.6,
                ));
                rows.push((
                    format!("{name}, 16 callers, Unix: durable switch CPU/RPC ÷ in-memory"),
                    format!("{cpu:.2}"),
                    "≤ 1.5".into(),
                    cpu <= 1.5,
                ));
            }
            if let (Some(memory), Some(durable), false) = (
                cell(Storage::Memory, 1),
                cell(Storage::Statedir, 1),
                self.fsync.is_empty(),
            ) {
                let bound = memory.latency.p50() + fsync.p50().mul_f64(SYNCS_ALLOWED);
                rows.push((
                    format!(
                        "{name}, 1 caller, Unix: durable p50 (bound: memory p50 + \
                         {SYNCS_ALLOWED} × lone fdatasync p50)"
                    ),
                    format!("{} µs", micros(durable.latency.p50())),
                    format!("≤ {} µs", micros(bound)),
                    durable.latency.p50() <= bound,
                ));
            }
            if let (Some(memory), Some(lazy)) =
                (cell(Storage::Memory, 16), cell(Storage::StatedirLazy, 16))
            {
                let throughput = lazy.per_second() / memory.per_second().max(1e-9);
                rows.push((
                    format!("{name}, 16 callers, Unix: durable, lazy acks, RPC/s ÷ in-memory"),
                    format!("{throughput:.2}"),
                    "≥ 0.7".into(),
                    throughput >= 0.7,
                ));
            }
            let longest = cells
                .iter()
                .filter(|(k, _)| k.storage.is_durable())
                .map(|(_, cell)| cell.latency.quantile(1.0))
                .max();
            if let Some(longest) = longest {
                rows.push((
                    format!("{name}, durable cells: longest call (compaction included)"),
                    format!("{} ms", millis(longest)),
                    "≤ 50 ms".into(),
                    longest <= std::time::Duration::from_millis(50),
                ));
            }
        }
    }

    /// The Unix, in-memory key at `concurrency` with the first thread count: the floor of
    /// the sections that run once.
    fn key(&self, concurrency: usize) -> Key {
        Key {
            transport: Transport::Unix,
            storage: Storage::Memory,
            concurrency,
            threads: self.plan.threads(),
        }
    }

    /// The median of `main` (the main cells' ratio) and the repeated pairs' ratios, and all
    /// of them as text in their order; `None` without repeats.
    fn median_with_repeats(&self, main: f64) -> Option<(f64, String)> {
        if self.exchange_repeats.is_empty() {
            return None;
        }
        let mut ratios = vec![main];
        ratios.extend(self.exchange_repeats.iter().filter_map(|pair| {
            per_exchange(&pair.rpc)
                .map(|exchange| ratio_value(exchange, pair.floor.server_cpu_per_operation()))
        }));
        let all = ratios
            .iter()
            .map(|ratio| format!("{ratio:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        Some((repeats::median(&ratios)?, all))
    }

    /// The floor cell of the same transport, concurrency and threads as `key`.
    fn floor_of(&self, key: &Key) -> Option<&Throughput> {
        let floor_key = Key {
            storage: Storage::Memory,
            ..*key
        };
        self.floor
            .iter()
            .find(|(k, _)| *k == floor_key)
            .map(|(_, floor)| floor)
    }
}

/// A table of targets under `heading` (nothing without rows): what, measured, goal, met.
fn target_table(out: &mut String, heading: &str, rows: Vec<(String, String, String, bool)>) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "## {heading}\n");
    let _ = writeln!(out, "| target | measured | goal | met |");
    let _ = writeln!(out, "|---|---:|---:|---|");
    for (what, measured, goal, met) in rows {
        let met = if met { "yes" } else { "**no**" };
        let _ = writeln!(out, "| {what} | {measured} | {goal} | {met} |");
    }
    out.push('\n');
}

/// Every `fdatasync` the probes timed.
fn latencies(probes: &[Syncs]) -> Latencies {
    Latencies::from_samples(probes.iter().map(|p| p.latencies_ns.clone()))
}

/// The CPU the kernel charged per probed `fdatasync`.
fn cpu_per_sync(probes: &[Syncs]) -> Duration {
    let cpu = probes.iter().map(|p| p.cpu).sum();
    let syncs = probes.iter().map(|p| p.latencies_ns.len() as u64).sum();
    crate::measure::per_operation(cpu, syncs)
}

/// HTTP requests the switch served per RPC, as text.
fn requests_per_rpc(cell: &Throughput) -> String {
    cell.requests_per_operation
        .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"))
}

/// The switch's CPU per HTTP exchange of an RPC cell.
fn per_exchange(cell: &Throughput) -> Option<Duration> {
    let requests = cell.requests_per_operation.filter(|r| *r > 0.0)?;
    Some(cell.server_cpu_per_operation().div_f64(requests))
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
        Storage::StatedirLazy => "yes, lazy acks",
    }
}

/// How the durable cells' table names a lazy-ack switch's rows.
fn lazy_suffix(storage: Storage) -> &'static str {
    match storage {
        Storage::StatedirLazy => ", lazy acks",
        Storage::Memory | Storage::Statedir => "",
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
