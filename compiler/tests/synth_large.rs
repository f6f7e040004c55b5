//! Writing a full-size synthetic checkpoint: streamed, so peak memory stays far below the
//! checkpoint's size, and fast enough for benchmarks. Ignored by default (5.6 GB of disk);
//! run with `cargo test --release -p mambac-compiler --test synth_large -- --ignored`.
//! MAMBAC_SYNTH_PRESET picks another preset (default 2.8b).

use std::time::Instant;

use mambac_compiler::checkpoint::{shapes, Checkpoint, DType};
use mambac_compiler::synth::{self, Preset, SynthOptions};

/// Peak resident memory of this process, from /proc (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
#[ignore = "writes a multi-gigabyte checkpoint"]
fn full_size_float16_checkpoint_is_streamed() {
    let preset = std::env::var("MAMBAC_SYNTH_PRESET").ok().and_then(|s| Preset::parse(&s)).unwrap_or(Preset::B2_8);
    let mut o = SynthOptions::new(preset);
    o.dtype = DType::F16;
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let config = synth::write_checkpoint(&o, dir.path()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let params: usize = shapes::expected_tensors(&config).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let size = std::fs::metadata(dir.path().join("model.safetensors")).unwrap().len();
    let peak = peak_rss().unwrap_or(0);
    eprintln!(
        "{}: {params} parameters, {:.2} GB written in {secs:.1} s ({:.0} MB/s), peak RSS {} MB",
        preset.name(),
        size as f64 / 1e9,
        size as f64 / 1e6 / secs,
        peak / 1_000_000
    );
    assert!(size as usize >= params * 2);
    // Streaming: peak memory is a few chunk buffers, not the checkpoint.
    assert!(peak < 512 << 20, "peak RSS {peak} bytes");

    // It opens, and a sampled tensor has the values the generator gives.
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.config, config);
    let name = "backbone.layers.3.mixer.A_log";
    assert_eq!(*ck.tensor(name).unwrap().bytes, synth::tensor_bytes(&o, name).unwrap()[..]);
}
