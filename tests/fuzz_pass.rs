//! A short pass of every fuzz target (tests/fuzz/targets.rs) in `cargo test`: the stored
//! corpus, then a few thousand inputs made by mutating it with a seeded generator. The long,
//! coverage-guided runs use the libFuzzer crate in tests/fuzz (docs/reliability.md); any input
//! they find that fails goes into the corpus here, so it is replayed on every run.

#[path = "fuzz/targets.rs"]
mod targets;

use std::path::PathBuf;

/// Generated inputs per target, beyond the corpus.
const GENERATED: usize = 4_000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    entries.sort();
    entries
        .iter()
        .map(|path| std::fs::read(path).expect("a readable corpus file"))
        .collect()
}

/// xorshift64*: a small seeded generator, so that a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutation of `seed`, as a fuzzer makes them: flipped, inserted, removed and duplicated
/// bytes, and splices of interesting tokens.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"%",
        b"%2F",
        b"%zz",
        b"/..",
        b"/./",
        b"//",
        b"\"",
        b"\\u00",
        b"\\ud800",
        b"[",
        b"{",
        b"]",
        b"}",
        b"-",
        b"1e999",
        b"NaN",
        b"MSWR",
        b"\xff\xff\xff\xff",
        b"\0",
        b"(",
        b")",
        b"()",
        b"#|",
        b"|#",
        b"#;",
        b";",
        b"\\x",
        b"\\999",
    ];
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(5) {
            0 if !data.is_empty() => {
                let at = at.min(data.len() - 1);
                data[at] ^= 1 << rng.below(8);
            }
            1 => data.insert(at, rng.next() as u8),
            2 if at < data.len() => {
                data.remove(at);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            _ => {
                let end = (at + rng.below(16)).min(data.len());
                let copy = data[at..end].to_vec();
                data.splice(at..at, copy);
            }
        }
    }
    data
}

fn short_pass(target: &str) {
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "the {target} corpus is empty");
    for seed in &seeds {
        targets::run(target, seed);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for _ in 0..GENERATED {
        let seed = &seeds[rng.below(seeds.len())];
        targets::run(target, &mutate(&mut rng, seed));
    }
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    let names = ["route", "json", "journal", "config"];
    assert_eq!(targets::TARGETS, names);
}

#[test]
fn route() {
    short_pass("route");
}

#[test]
fn json() {
    short_pass("json");
}

#[test]
fn journal() {
    short_pass("journal");
}

#[test]
fn config() {
    short_pass("config");
}

/// Random bytes too, not only mutations of the corpus: every byte value as a mode.
#[test]
fn random_bytes_in_every_target() {
    let mut rng = Rng(7);
    for target in targets::TARGETS {
        for _ in 0..GENERATED {
            let length = rng.below(300);
            let data: Vec<u8> = (0..length).map(|_| rng.next() as u8).collect();
            targets::run(target, &data);
        }
    }
}
