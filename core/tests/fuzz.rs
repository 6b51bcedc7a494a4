//! The DAG decoder against mutated files: the example DAGs and the corpus of broken files, each
//! mutated many times over (bytes flipped, inserted, deleted, lines duplicated, dropped or
//! swapped, pieces of other files spliced in, aliases multiplied), from a fixed seed so a
//! failure reproduces. Every case must end without a panic and within its time, and either
//! give a DAG or problems that each have a place in the file and a message on one line.
//!
//! `UPDRAFT_FUZZ_CASES` sets the number of cases (default 30,000, a few seconds in a debug build);
//! `UPDRAFT_FUZZ_SEED` the seed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use updraft_core::dag::{LoadOptions, decode};
use updraft_core::text::one_line;

/// xorshift64*: small, fast, and the same sequence on every machine.
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

/// Bytes that mean something to YAML or to the decoder, to insert more often than noise.
const TOKENS: &[&str] = &[
    ":",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "'",
    "\"",
    "\n",
    "\n  ",
    "\t",
    "#",
    "---\n",
    "...\n",
    "|\n",
    ">-\n",
    "?",
    "{{ ds }}",
    "{{",
    "}}",
    "{% if %}",
    "null",
    "~",
    "0x",
    "-1",
    "1e999",
    ".nan",
    "\u{0}",
    "\u{1b}[31m",
    "\u{feff}",
    "é",
    "😀",
    "\\",
    "depends_on: [",
    "tasks:",
    "schedule: ",
    "version: 1",
    "run: ",
    "exec: [",
    "retries: ",
    "timeout: ",
    "@daily",
    "* * * * *",
    "0 0 30 2 *",
    "env: {",
    "params: {",
    "trigger_rule: ",
];

fn mutate(rng: &mut Rng, text: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = text.to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(9) {
            0 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                bytes[at] ^= 1 << rng.below(8);
            }
            1 => bytes.insert(at, rng.next() as u8),
            2 if at < bytes.len() => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 | 4 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            5 => {
                // A line repeated, dropped or moved.
                let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
                if lines.len() > 1 {
                    let mut lines: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
                    let from = rng.below(lines.len());
                    match rng.below(3) {
                        0 => {
                            let copy = lines[from].clone();
                            lines.insert(rng.below(lines.len()), copy);
                        }
                        1 => {
                            lines.remove(from);
                        }
                        _ => {
                            let to = rng.below(lines.len());
                            lines.swap(from, to);
                        }
                    }
                    bytes = lines.concat();
                }
            }
            6 => {
                let other = &others[rng.below(others.len())];
                let start = rng.below(other.len());
                let end = (start + rng.below(200)).min(other.len());
                bytes.splice(at..at, other[start..end].iter().copied());
            }
            7 => {
                // An anchor and many aliases of it.
                let aliases = vec!["*z"; 1 + rng.below(40)].join(", ");
                let extra = format!("\nz: &z [1, 2, 3]\ny: [{aliases}]\n");
                bytes.extend_from_slice(extra.as_bytes());
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for folder in ["dags", "tests/dags/broken"] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[test]
fn mutated_dag_files_give_a_dag_or_located_one_line_problems_without_panic_or_hang() {
    let files = corpus();
    assert!(files.len() > 20, "the corpus is there");
    let others: Vec<Vec<u8>> = files.iter().map(|(_, bytes)| bytes.clone()).collect();
    let cases = setting("UPDRAFT_FUZZ_CASES", 30_000);
    let seed = setting("UPDRAFT_FUZZ_SEED", 0x005e_ed0f_da65);
    let mut rng = Rng(seed | 1);
    let options = LoadOptions::default();
    let (mut valid, mut refused) = (0, 0);
    for case in 0..cases {
        let (path, original) = &files[rng.below(files.len())];
        let mutated = mutate(&mut rng, original, &others);
        // A file is text: bytes that are not UTF-8 are refused before decoding.
        let text = String::from_utf8_lossy(&mutated);
        let began = Instant::now();
        let result = std::panic::catch_unwind(|| decode("fuzz.yaml", &text, &options));
        let took = began.elapsed();
        let context = || {
            format!(
                "case {case} (seed {seed:#x}), a mutation of {}:\n{text}",
                path.display()
            )
        };
        let Ok(result) = result else {
            panic!("decode panicked on {}", context());
        };
        assert!(
            took < Duration::from_secs(5),
            "decode took {took:?} on {}",
            context()
        );
        match result {
            Ok(_) => valid += 1,
            Err(diagnostics) => {
                refused += 1;
                assert!(
                    !diagnostics.is_empty(),
                    "no problem given for {}",
                    context()
                );
                // Lines as YAML counts them: a lone carriage return breaks a line too.
                let lines = text
                    .replace("\r\n", "\n")
                    .replace('\r', "\n")
                    .lines()
                    .count()
                    .max(1) as u32;
                for diagnostic in diagnostics {
                    let pos = diagnostic.pos;
                    assert!(
                        pos.line >= 1 && pos.line <= lines + 1 && pos.col >= 1,
                        "unlocated problem {pos} \"{}\" on {}",
                        diagnostic.message,
                        context()
                    );
                    let shown = one_line(&diagnostic.message);
                    assert!(!shown.is_empty() && !shown.contains('\n'), "{}", context());
                }
            }
        }
    }
    eprintln!("{cases} cases: {valid} valid, {refused} refused");
    assert!(
        refused > 0 && valid > 0,
        "the mutations reach both outcomes"
    );
}
