//! Deterministic simulation of message-switch-rs (issue 4).
//!
//! The real server runs on a turmoil host over simulated TCP; seeded swarms of RPC callers,
//! RPC servers and raw protocol actors run on client hosts; a seeded schedule injects
//! connection drops, holds, partitions, latency spikes and crashes (of clients and of the
//! switch); a liveness phase follows; checkers judge the recorded history against the five
//! invariants. An exhaustive check drives the engine directly through every short command
//! sequence. See `docs/simulation.md` for how to run, replay and extend it.
//!
//! Environment:
//! - `SIM_SEED=n` runs only seed `n` (and prints its plan and history tail);
//! - `SIM_SEEDS=n` runs `n` seeds, starting at `SIM_SEED_START` (default 0), each in a child
//!   process, `SIM_JOBS` at a time (default 1);
//! - `SIM_DUMP=path` (with `SIM_SEED`) writes the whole history to `path`;
//! - `SIM_EXHAUSTIVE_DEPTH=n` sets the exhaustive check's depth (default 6);
//! - `SIM_VERBOSE=1` prints a summary line per seed;
//! - `SIM_HOSTILE_SEED=n` runs only hostile seed `n` (`sim/hostile.rs`), `SIM_HOSTILE_SEEDS=n`
//!   runs `n` of them from `SIM_SEED_START`.

mod check;
mod conn;
mod exhaustive;
mod harness;
mod history;
mod hostile;
mod limits;
mod net;
mod rng;
mod workload;

use std::time::Instant;

/// Seeds the default `cargo test` run covers, besides the regression seeds below.
const DEFAULT_SEEDS: u64 = 8;

/// Seeds that once found a bug; they stay in the default run.
/// - 189: RPC callers of one process shared a reply queue and acked each other's responses
///   (a harness bug; the checker of invariant 4 caught it as calls timing out after the heal).
/// - 580: a connect abandoned by its timeout mid-handshake left the switch's accepted end open
///   for ever, which turmoil allows but a kernel would reset (a harness bug, fixed in
///   `Net::connect`; the leak checker of invariant 5 caught it).
/// - 5977: a client process that returned while a connect was in flight left that connect's
///   task, and so both ends of the connection, alive for ever: turmoil keeps a finished
///   host's tasks without polling them, where an operating system would close the sockets of
///   an exited process (a harness bug, fixed in `World::exit_process`; the leak checker of
///   invariant 5 caught it, in the 10,000-seed soak).
/// - 9, 25: durable with lazy acks and switch crashes; with a deliberate bug that never
///   journalled a lazy ack, acked requests came back after a crash although a later Send had
///   had its (synced) 200 (invariant 2). Kept as the lazy-ack window's check.
/// - 15: durable with strict acks, a slow disk and switch crashes; with a deliberate bug that
///   kept a store its Ack claimed to have withdrawn from the journal's inbox, acked requests
///   came back after a crash (invariant 2). Kept as the withdrawal's check (seed 11 caught it
///   too).
const REGRESSION_SEEDS: &[u64] = &[9, 15, 25, 189, 580, 5977];

/// The summary line's count of stores withdrawn by their Acks (summed like the limits' hits).
const WITHDRAWN: &str = "stores_withdrawn";

/// Hostile seeds the default run covers (each attack in memory and durable).
const DEFAULT_HOSTILE_SEEDS: u64 = 6;

/// Runs one seed and judges it. Returns the violations, printed with the seed and the tail of
/// the history.
fn run_seed(seed: u64, verbose: bool) -> Result<u64, String> {
    let run = harness::run(seed);
    let violations = check::check(&run);
    judge(&run, violations, verbose, "SIM_SEED", "simulation_seeds")
}

/// Runs hostile seed `seed` (`sim/hostile.rs`) and judges it by every invariant and by the
/// hostile checker's bound.
fn run_hostile_seed(seed: u64, verbose: bool) -> Result<u64, String> {
    let run = harness::run_plan(hostile::plan(seed));
    let mut violations = check::check(&run);
    violations.extend(hostile::check(&run));
    if verbose {
        println!("{}", hostile::summary(&run));
    }
    judge(
        &run,
        violations,
        verbose,
        "SIM_HOSTILE_SEED",
        "hostile_seeds",
    )
}

/// Prints a run's summary line (verbose) and, if there are violations, returns its failure
/// report, which names the seed and how to replay it (`seed_var`, `test`).
fn judge(
    run: &harness::RunResult,
    violations: Vec<check::Violation>,
    verbose: bool,
    seed_var: &str,
    test: &str,
) -> Result<u64, String> {
    let seed = run.plan.seed;
    let digest = history::digest(&run.events);
    if let Ok(path) = std::env::var("SIM_DUMP") {
        // The whole history, for digging into a failure.
        let _ = std::fs::write(&path, history::tail(&run.events, usize::MAX));
    }
    if verbose {
        let calls = run
            .events
            .iter()
            .filter(|e| matches!(e.what, history::What::CallEnd { .. }))
            .count();
        let ops = run
            .events
            .iter()
            .filter(|e| matches!(e.what, history::What::Invoke { .. }))
            .count();
        let switch_crashes = run
            .plan
            .faults
            .iter()
            .filter(|(_, action)| *action == harness::Action::CrashSwitch)
            .count();
        // Each incarnation's journal counts its own snapshots: add up each one's last count.
        let mut journal_by_epoch = std::collections::BTreeMap::new();
        for event in &run.events {
            if let history::What::Probe(probe) = &event.what {
                journal_by_epoch.insert(probe.epoch, (probe.compactions, probe.stores_withdrawn));
            }
        }
        let compactions: u64 = journal_by_epoch.values().map(|(c, _)| c).sum();
        let withdrawn: u64 = journal_by_epoch.values().map(|(_, w)| w).sum();
        let storage =
            match run.plan.durability {
                Some(durability) => format!(
                    "durable ({compactions} snapshots, compacting from {}, {:?} acks)",
                    durability.compaction_bytes_min.map_or(
                        "the default".to_owned(),
                        |bytes| format!("{} KiB", bytes >> 10)
                    ),
                    durability.ack_sync
                ),
                None => "in-memory".to_owned(),
            };
        let limits_drawn = run
            .plan
            .limits
            .as_ref()
            .map_or("default limits".to_owned(), |l| {
                format!("limits {}", l.describe())
            });
        println!(
            "seed {}: {storage}, {} hosts, {} faults ({switch_crashes} switch crashes), {ops} \
             requests, {calls} calls, {} connections, {:.1}s virtual, digest {digest:016x}; \
             {limits_drawn}; hits: {} {WITHDRAWN}={withdrawn}",
            run.plan.seed,
            run.plan.hosts.len(),
            run.plan.faults.len(),
            run.conns.len(),
            run.end_us as f64 / 1e6,
            limits::format_hits(&limits::hits(&run.events)),
        );
    }
    if violations.is_empty() {
        return Ok(digest);
    }
    let mut report = format!(
        "SIM FAILURE: seed {seed} (replay with {seed_var}={seed} cargo test --test sim -- \
         --nocapture {test})\n{} violation(s):\n",
        violations.len()
    );
    for violation in violations.iter().take(20) {
        report.push_str(&format!("  {violation}\n"));
    }
    report.push_str(&format!("plan: {:?}\n", run.plan));
    report.push_str("history tail:\n");
    report.push_str(&history::tail(&run.events, 60));
    Err(report)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The seeds to run: `SIM_SEED`, or `SIM_SEEDS` from `SIM_SEED_START`, or the default set.
fn seeds() -> Vec<u64> {
    if let Some(seed) = env_u64("SIM_SEED") {
        return vec![seed];
    }
    let start = env_u64("SIM_SEED_START").unwrap_or(0);
    let count = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let mut seeds: Vec<u64> = (start..start + count).collect();
    if std::env::var("SIM_SEEDS").is_err() {
        seeds.extend_from_slice(REGRESSION_SEEDS);
    }
    seeds
}

/// Runs every seed in a child process of this test binary (`SIM_SEED=n`), `SIM_JOBS` at a
/// time (default 1). A fresh process per seed is what makes a reported seed replay exactly:
/// turmoil derives each host runtime's clock from the real clock when the runtime is created,
/// and a later run in the same process can shift a delivery by a tick.
fn run_children(
    seeds: &[u64],
    verbose: bool,
    hits: &mut std::collections::BTreeMap<String, u64>,
    (test, seed_var): (&str, &str),
) -> Vec<u64> {
    let jobs = env_u64("SIM_JOBS").unwrap_or(1).max(1) as usize;
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut running: std::collections::VecDeque<(u64, std::process::Child)> =
        std::collections::VecDeque::new();
    let mut failures = Vec::new();
    let finish = |seed: u64,
                  child: std::process::Child,
                  failures: &mut Vec<u64>,
                  hits: &mut std::collections::BTreeMap<String, u64>| {
        let output = child.wait_with_output().expect("a seed's child process");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stdout.lines() {
            limits::add_parsed_hits(line, hits);
        }
        if verbose {
            // libtest prints `test simulation_seeds ... ` before the summary, on its line.
            for line in stdout
                .lines()
                .filter_map(|l| l.find("seed ").map(|at| &l[at..]))
            {
                println!("{line}");
            }
        }
        if !output.status.success() {
            eprintln!("{stderr}");
            failures.push(seed);
        }
    };
    for &seed in seeds {
        if running.len() >= jobs {
            if let Some((seed, child)) = running.pop_front() {
                finish(seed, child, &mut failures, hits);
            }
        }
        let child = std::process::Command::new(&exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(seed_var, seed.to_string())
            .env("SIM_CHILD", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn a seed's child process");
        running.push_back((seed, child));
    }
    while let Some((seed, child)) = running.pop_front() {
        finish(seed, child, &mut failures, hits);
    }
    failures
}

#[test]
fn simulation_seeds() {
    let verbose = std::env::var("SIM_VERBOSE").is_ok() || std::env::var("SIM_SEED").is_ok();
    let began = Instant::now();
    let seeds = seeds();
    let mut hits = std::collections::BTreeMap::new();
    let failures = if std::env::var("SIM_SEED").is_ok() {
        seeds
            .iter()
            .copied()
            .filter(|&seed| match run_seed(seed, verbose) {
                Ok(_) => false,
                Err(report) => {
                    eprintln!("{report}");
                    true
                }
            })
            .collect()
    } else {
        run_children(&seeds, verbose, &mut hits, ("simulation_seeds", "SIM_SEED"))
    };
    println!(
        "simulation: {} seeds, {} failed {:?}, {:.1}s",
        seeds.len(),
        failures.len(),
        failures,
        began.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    // Issue 12: every limit is reached somewhere in the default seed set, so that no change
    // can silently stop exercising one.
    if std::env::var("SIM_SEED").is_err() && std::env::var("SIM_SEEDS").is_err() {
        println!("limits hit over the default seeds: {hits:?}");
        let never: Vec<&str> = limits::LIMIT_NAMES
            .into_iter()
            .filter(|name| hits.get(*name).copied().unwrap_or(0) == 0)
            .collect();
        assert!(
            never.is_empty(),
            "limits never hit over the default seeds: {never:?} (hits: {hits:?})"
        );
        // Issue 20: some Ack withdraws its message's unwritten store (and the crash checks
        // then judge it), so that the path cannot silently stop being exercised.
        assert!(
            hits.get(WITHDRAWN).copied().unwrap_or(0) > 0,
            "no Ack withdrew an unwritten store over the default seeds (hits: {hits:?})"
        );
    }
}

/// The hostile seeds (`sim/hostile.rs`): one client churns connections, floods a queue or
/// hammers Transfers beside three RPC pairs, which must not notice (invariant 6).
#[test]
fn hostile_seeds() {
    if std::env::var("SIM_CHILD").is_ok() && std::env::var("SIM_HOSTILE_SEED").is_err() {
        return;
    }
    let verbose = std::env::var("SIM_VERBOSE").is_ok() || std::env::var("SIM_HOSTILE_SEED").is_ok();
    let began = Instant::now();
    let failures: Vec<u64> = if let Some(seed) = env_u64("SIM_HOSTILE_SEED") {
        match run_hostile_seed(seed, verbose) {
            Ok(_) => Vec::new(),
            Err(report) => {
                eprintln!("{report}");
                vec![seed]
            }
        }
    } else {
        let start = env_u64("SIM_SEED_START").unwrap_or(0);
        let count = env_u64("SIM_HOSTILE_SEEDS").unwrap_or(DEFAULT_HOSTILE_SEEDS);
        let seeds: Vec<u64> = (start..start + count).collect();
        let mut hits = std::collections::BTreeMap::new();
        run_children(
            &seeds,
            verbose,
            &mut hits,
            ("hostile_seeds", "SIM_HOSTILE_SEED"),
        )
    };
    println!(
        "hostile simulation: {} failed {failures:?}, {:.1}s",
        failures.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "failing hostile seeds: {failures:?}");
}

/// One seed, run twice (each in a fresh process, as every seed is run), must produce the same
/// history.
#[test]
fn a_seed_replays_exactly() {
    if std::env::var("SIM_CHILD").is_ok() {
        return;
    }
    let seed = env_u64("SIM_SEED").unwrap_or(7);
    let exe = std::env::current_exe().expect("the test binary's path");
    let digest = || {
        let output = std::process::Command::new(&exe)
            .args(["--exact", "simulation_seeds", "--nocapture"])
            .env("SIM_SEED", seed.to_string())
            .env("SIM_CHILD", "1")
            .output()
            .expect("run a seed in a child process");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout
            .split_whitespace()
            .skip_while(|word| *word != "digest")
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no digest in the output of seed {seed}: {stdout}"))
    };
    let (first, second) = (digest(), digest());
    assert_eq!(first, second, "seed {seed} is not deterministic");
}

#[test]
fn engine_exhaustive() {
    if std::env::var("SIM_CHILD").is_ok() {
        return;
    }
    exhaustive::run();
}
