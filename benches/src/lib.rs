//! Shared pieces of the benchmark binaries: the deterministic data set and
//! small timing and table helpers.
//!
//! Every figure is reported as a ratio against a baseline measured in the same
//! run on the same data, because these machines are noisy: absolute numbers
//! move between runs, ratios much less.

use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A small, fast, seedable generator (splitmix64); the data set must be the
/// same in every run and for every system measured.
pub struct Rng(u64);

impl Rng {
    /// A generator from a fixed seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// A lowercase ASCII word of `len` letters.
    pub fn word(&mut self, len: usize) -> String {
        (0..len).map(|_| (b'a' + self.below(26) as u8) as char).collect()
    }
}

/// The fixed seed of the data set.
pub const SEED: u64 = 0x5EED_2026;

/// Statuses a task can have.
pub const STATUSES: [&str; 4] = ["open", "doing", "review", "closed"];

/// One benchmark document of about 216 bytes as JSON: 10 fields, among them a
/// nested object of 2 fields and an array of 1 to 3 strings; `_id` is a
/// random 16-hex-character string.
pub fn document(rng: &mut Rng, i: u64) -> Value {
    let tags: Vec<String> = (0..1 + rng.below(3)).map(|_| rng.word(5)).collect();
    json!({
        "_id": format!("{:016x}", rng.next_u64()),
        "title": rng.word(24),
        "status": STATUSES[rng.below(4) as usize],
        "priority": 1 + rng.below(5),
        "created_at": 1_767_225_600_000u64 + i * 1_000,
        "score": (rng.below(100_000) as f64) / 100.0,
        "done": rng.below(2) == 1,
        "owner": rng.word(8),
        "tags": tags,
        "meta": { "source": rng.word(6), "rev": rng.below(1000) },
    })
}

/// The data set: `n` documents from the fixed seed.
pub fn dataset(n: u64) -> Vec<Value> {
    let mut rng = Rng::new(SEED);
    (0..n).map(|i| document(&mut rng, i)).collect()
}

/// The documents of [`dataset`], one at a time, without holding them all
/// (the memory workload measures the system, not the generator).
pub fn dataset_iter(n: u64) -> impl Iterator<Item = Value> {
    let mut rng = Rng::new(SEED);
    (0..n).map(move |i| document(&mut rng, i))
}

/// The top-level scalar fields the edit workloads change.
pub const EDITED_FIELDS: [&str; 6] = ["title", "status", "priority", "score", "done", "owner"];

/// One single-field edit of a record: set `field` of record `id` to `value`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldEdit {
    /// The record's `_id`.
    pub id: String,
    /// One of [`EDITED_FIELDS`].
    pub field: &'static str,
    /// The new value (same type as the field's).
    pub value: Value,
}

/// A new value for `field`, of the type the data set gives it.
pub fn field_value(rng: &mut Rng, field: &str) -> Value {
    match field {
        "title" => json!(rng.word(24)),
        "status" => json!(STATUSES[rng.below(4) as usize]),
        "priority" => json!(1 + rng.below(5)),
        "score" => json!((rng.below(100_000) as f64) / 100.0),
        "done" => json!(rng.below(2) == 1),
        _ => json!(rng.word(8)),
    }
}

fn random_edit(rng: &mut Rng, ids: &[String]) -> FieldEdit {
    let id = ids[rng.below(ids.len() as u64) as usize].clone();
    let field = EDITED_FIELDS[rng.below(EDITED_FIELDS.len() as u64) as usize];
    let value = field_value(rng, field);
    FieldEdit { id, field, value }
}

/// `n` random single-field edits of the records `ids`, from `seed`.
pub fn field_edits(seed: u64, ids: &[String], n: usize) -> Vec<FieldEdit> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| random_edit(&mut rng, ids)).collect()
}

/// Two replicas' offline edits, `n` each: `same_percent` of the pairs hit
/// the same record and field on both sides (with different values, so
/// they conflict), the rest are drawn independently.
pub fn concurrent_edits(seed: u64, ids: &[String], n: usize, same_percent: u64) -> [Vec<FieldEdit>; 2] {
    let mut rng = Rng::new(seed);
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let ea = random_edit(&mut rng, ids);
        let eb = if rng.below(100) < same_percent {
            let mut value = field_value(&mut rng, ea.field);
            while value == ea.value {
                value = field_value(&mut rng, ea.field);
            }
            FieldEdit { value, ..ea.clone() }
        } else {
            random_edit(&mut rng, ids)
        };
        a.push(ea);
        b.push(eb);
    }
    [a, b]
}

/// CPU time this thread has used: on a shared machine, wall time also
/// holds waiting (for the disk, for other processes' turns), which this
/// leaves out.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` and returns how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Prints a table with a header row; columns are padded to fit.
pub fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    print_aligned(title, header, rows, false);
}

/// [`print_table`] with every column aligned left (for text).
pub fn print_left_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    print_aligned(title, header, rows, true);
}

fn print_aligned(title: &str, header: &[&str], rows: &[Vec<String>], left: bool) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    println!("\n{title}");
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| if left { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.iter().map(|s| s.to_string()).collect());
    println!(
        "|{}|",
        widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|")
    );
    for r in rows {
        line(r.clone());
    }
}
