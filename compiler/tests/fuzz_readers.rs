//! Seeded fuzzing of the readers of untrusted files: the safetensors header, config.json, the
//! pickle machine and the torch zip. Valid inputs are mutated (bit flips, truncations,
//! splices, huge numbers) with a fixed seed; every case must return Ok or a typed error, never
//! panic, and never allocate more than a bound.
//!
//! It runs a few seconds per reader in CI. `MAMBAC_FUZZ_SCALE=N` runs N times the cases,
//! `MAMBAC_FUZZ_SEED` changes the seed; a failure prints the seed and case to reproduce it.

#[path = "common/alloc_meter.rs"]
mod alloc_meter;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mambac_compiler::checkpoint::{pickle, Checkpoint, MambaConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[global_allocator]
static METER: alloc_meter::Meter = alloc_meter::Meter;

/// No case may hold more than this at once, nor ask for more in one allocation.
const PEAK_BOUND: usize = 256 << 20;
const ALLOC_BOUND: usize = 64 << 20;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(name)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (seed, cases, time cap) for a reader whose CI share is `cases`.
fn plan(cases: usize, salt: u64) -> (u64, usize, Duration) {
    let scale = env_u64("MAMBAC_FUZZ_SCALE", 1).max(1);
    let seed = env_u64("MAMBAC_FUZZ_SEED", 0x6d61_6d62_6163) ^ salt;
    // The cap keeps a slow CI machine within its budget; the seed fixes which cases run.
    (seed, cases * scale as usize, Duration::from_secs(8 * scale))
}

const HUGE: [u64; 8] = [u64::MAX, u64::MAX / 2, 1 << 63, 1 << 62, 1 << 40, 1 << 32, (1 << 32) - 1, (1 << 31) - 1];

/// One mutation of `data`, its kind named for a failure report. Mutations favour the first
/// `hot` bytes, where the headers are.
fn mutate(rng: &mut StdRng, data: &[u8], hot: usize, text: bool) -> (Vec<u8>, &'static str) {
    let mut v = data.to_vec();
    let n = v.len().max(1);
    let pos =
        |rng: &mut StdRng| if rng.gen_bool(0.8) { rng.gen_range(0..hot.clamp(1, n)) } else { rng.gen_range(0..n) };
    let kind = rng.gen_range(0..7);
    let name = match kind {
        0 => {
            for _ in 0..rng.gen_range(1..=8) {
                let at = pos(rng);
                if at < v.len() {
                    v[at] ^= 1 << rng.gen_range(0..8);
                }
            }
            "bit flips"
        }
        1 => {
            let at = pos(rng);
            v.truncate(at);
            "truncation"
        }
        2 => {
            // Splice: a chunk of the input copied over another place.
            let (a, b) = (rng.gen_range(0..n), pos(rng));
            let len = rng.gen_range(1..=64).min(n - a);
            let chunk = data[a.min(data.len())..(a + len).min(data.len())].to_vec();
            for (i, c) in chunk.into_iter().enumerate() {
                if b + i < v.len() {
                    v[b + i] = c;
                }
            }
            "splice"
        }
        3 => {
            // A chunk duplicated in place (grows the input).
            let a = pos(rng).min(v.len());
            let len = rng.gen_range(1..=256).min(v.len() - a);
            let chunk = v[a..a + len].to_vec();
            v.splice(a..a, chunk);
            "duplication"
        }
        4 => {
            let a = pos(rng).min(v.len());
            let len = rng.gen_range(1..=64).min(v.len() - a);
            v.drain(a..a + len);
            "deletion"
        }
        5 if text => {
            // A run of digits replaced by a huge number.
            let digits: Vec<usize> = (0..v.len()).filter(|&i| v[i].is_ascii_digit()).collect();
            if let Some(&at) = digits.get(rng.gen_range(0..digits.len().max(1))) {
                let end = (at..v.len()).find(|&i| !v[i].is_ascii_digit()).unwrap_or(v.len());
                let big = match rng.gen_range(0..4) {
                    0 => HUGE[rng.gen_range(0..HUGE.len())].to_string(),
                    1 => "1e300".to_string(),
                    2 => "-1".to_string(),
                    _ => "99999999999999999999999999".to_string(),
                };
                v.splice(at..end, big.into_bytes());
            }
            "huge number"
        }
        _ => {
            // A little-endian huge number over 4 or 8 bytes.
            let at = pos(rng);
            let x = HUGE[rng.gen_range(0..HUGE.len())].to_le_bytes();
            let w = if rng.gen_bool(0.5) { 4 } else { 8 };
            for i in 0..w {
                if at + i < v.len() {
                    v[at + i] = x[i];
                }
            }
            "huge binary number"
        }
    };
    (v, name)
}

/// Runs `f` as one case: no panic, allocations within bounds.
fn case(what: &str, seed: u64, i: usize, kind: &str, f: impl FnOnce()) {
    let (r, peak, largest) = alloc_meter::measure(|| catch_unwind(AssertUnwindSafe(f)));
    let id = format!("{what} case {i} ({kind}), MAMBAC_FUZZ_SEED base seed {seed:#x}");
    assert!(r.is_ok(), "{id}: panicked");
    assert!(peak < PEAK_BOUND, "{id}: {peak} bytes live at once");
    assert!(largest < ALLOC_BOUND, "{id}: one allocation of {largest} bytes");
}

/// A folder holding config.json and one weights file, rewritten per case.
struct Folder {
    dir: tempfile::TempDir,
    file: &'static str,
}

impl Folder {
    fn new(fixture: &str, file: &'static str) -> Folder {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(testdata(fixture).join("config.json"), dir.path().join("config.json")).unwrap();
        Folder { dir, file }
    }

    fn open_with(&self, bytes: &[u8]) -> bool {
        std::fs::write(self.dir.path().join(self.file), bytes).unwrap();
        Checkpoint::open(self.dir.path()).is_ok()
    }
}

#[test]
fn fuzz_safetensors_header() {
    let (seed, cases, cap) = plan(1500, 1);
    let mut rng = StdRng::seed_from_u64(seed);
    let data = std::fs::read(testdata("mamba-tiny-hf/model.safetensors")).unwrap();
    let hot = 8 + u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    let folder = Folder::new("mamba-tiny-hf", "model.safetensors");
    assert!(folder.open_with(&data), "the fixture itself must open");
    let (t, mut errors) = (Instant::now(), 0);
    for i in 0..cases {
        if t.elapsed() > cap {
            break;
        }
        let (m, kind) = mutate(&mut rng, &data, hot, false);
        case("safetensors", seed, i, kind, || errors += usize::from(!folder.open_with(&m)));
    }
    report("safetensors", t, errors);
    // Mutations of the header must mostly be caught: a reader that accepts everything fails.
    assert!(errors > 0);
}

#[test]
fn fuzz_config_json() {
    let (seed, cases, cap) = plan(15000, 2);
    let mut rng = StdRng::seed_from_u64(seed);
    let texts: Vec<Vec<u8>> = ["mamba-tiny-hf", "mamba-tiny-ssm"]
        .iter()
        .map(|f| std::fs::read(testdata(f).join("config.json")).unwrap())
        .collect();
    let folder = Folder::new("mamba-tiny-hf", "model.safetensors");
    let weights = std::fs::read(testdata("mamba-tiny-hf/model.safetensors")).unwrap();
    std::fs::write(folder.dir.path().join("model.safetensors"), &weights).unwrap();
    let (t, mut errors) = (Instant::now(), 0);
    for i in 0..cases {
        if t.elapsed() > cap {
            break;
        }
        let text = &texts[i % 2];
        let (m, kind) = mutate(&mut rng, text, text.len(), true);
        case("config.json", seed, i, kind, || {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m) {
                errors += usize::from(MambaConfig::from_json(&v, Path::new("config.json")).is_err());
            }
            // A tenth of the HF cases go through the whole open, weights included.
            if i % 20 == 0 {
                std::fs::write(folder.dir.path().join("config.json"), &m).unwrap();
                let _ = Checkpoint::open(folder.dir.path());
            }
        });
    }
    report("config.json", t, errors);
    assert!(errors > 0);
}

#[test]
fn fuzz_pickle() {
    let (seed, cases, cap) = plan(20000, 3);
    let mut rng = StdRng::seed_from_u64(seed);
    let f = std::fs::File::open(testdata("mamba-tiny-ssm/pytorch_model.bin")).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let mut pkl = Vec::new();
    std::io::Read::read_to_end(&mut z.by_name("pytorch_model/data.pkl").unwrap(), &mut pkl).unwrap();
    assert!(pickle::load(&pkl).is_ok());
    let (t, mut errors) = (Instant::now(), 0);
    for i in 0..cases {
        if t.elapsed() > cap {
            break;
        }
        let (m, kind) = mutate(&mut rng, &pkl, pkl.len(), false);
        case("pickle", seed, i, kind, || errors += usize::from(pickle::load(&m).is_err()));
    }
    report("pickle", t, errors);
    assert!(errors > 0);
}

#[test]
fn fuzz_torch_zip() {
    let (seed, cases, cap) = plan(1200, 4);
    let mut rng = StdRng::seed_from_u64(seed);
    let data = std::fs::read(testdata("mamba-tiny-ssm/pytorch_model.bin")).unwrap();
    let folder = Folder::new("mamba-tiny-ssm", "pytorch_model.bin");
    assert!(folder.open_with(&data), "the fixture itself must open");
    // Headers: the first entries (data.pkl) and the central directory at the end.
    let tail = data.len().saturating_sub(4096);
    let (t, mut errors) = (Instant::now(), 0);
    for i in 0..cases {
        if t.elapsed() > cap {
            break;
        }
        let (m, kind) = if i % 2 == 0 {
            mutate(&mut rng, &data, 4096, false)
        } else {
            // Mutate the central directory: rotate it to the front, mutate, rotate back.
            let mut r = data[tail..].to_vec();
            r.extend_from_slice(&data[..tail]);
            let (mut m, kind) = mutate(&mut rng, &r, 4096, false);
            let k = (data.len() - tail).min(m.len());
            m.rotate_left(k);
            (m, kind)
        };
        case("torch zip", seed, i, kind, || errors += usize::from(!folder.open_with(&m)));
    }
    report("torch zip", t, errors);
    assert!(errors > 0);
}

/// For a run with --nocapture: how far the time allowed got.
fn report(what: &str, t: Instant, errors: usize) {
    eprintln!("fuzz {what}: {errors} errors in {:.1?}", t.elapsed());
}
