//! pytorch_model.bin entries: sizes checked against the storage records before anything is
//! read, deflate ratios no deflate stream can have refused, stored entries never copied, and
//! the CRC-32 of every entry read checked, each with the message naming the entry.

mod common;

#[path = "common/alloc_meter.rs"]
mod alloc_meter;

use std::io::{Read, Write};
use std::path::Path;

use common::{open_err, testdata};
use mambac_compiler::checkpoint::{Checkpoint, MAX_PICKLE_BYTES};

#[global_allocator]
static METER: alloc_meter::Meter = alloc_meter::Meter;

fn p_str(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

fn p_int(i: u32) -> Vec<u8> {
    let mut v = vec![b'J'];
    v.extend_from_slice(&i.to_le_bytes());
    v
}

/// `{name: _rebuild_tensor_v2(FloatStorage(key, numel), 0, (numel,), (1,), ...)}`.
fn one_tensor_pickle(name: &str, key: &str, numel: u32) -> Vec<u8> {
    let mut v = vec![0x80, 2, b'}', b'('];
    v.extend(p_str(name));
    v.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    v.extend(p_str("storage"));
    v.extend(b"ctorch\nFloatStorage\n");
    v.extend(p_str(key));
    v.extend(p_str("cpu"));
    v.extend(p_int(numel));
    v.extend(b"tQ");
    v.extend(p_int(0));
    v.push(b'(');
    v.extend(p_int(numel));
    v.extend(b"t(");
    v.extend(p_int(1));
    v.extend(b"t\x89ccollections\nOrderedDict\n)RtRu.");
    v
}

/// A folder with the tiny state-spaces config and a pytorch_model.bin of the given entries.
fn ssm_dir(entries: &[(&str, &[u8], zip::CompressionMethod)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata("mamba-tiny-ssm/config.json"), dir.path().join("config.json")).unwrap();
    let mut z = zip::ZipWriter::new(std::fs::File::create(dir.path().join("pytorch_model.bin")).unwrap());
    for (name, bytes, method) in entries {
        z.start_file(*name, zip::write::SimpleFileOptions::default().compression_method(*method)).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
    dir
}

/// Seeded, never-constant storage bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

/// The byte offset of entry `name`'s central directory record in `zip`.
fn central_record(zip: &[u8], name: &str) -> usize {
    let mut at = 0;
    loop {
        let i = zip[at..].windows(4).position(|w| w == b"PK\x01\x02").expect("central record") + at;
        let n = u16::from_le_bytes([zip[i + 28], zip[i + 29]]) as usize;
        if &zip[i + 46..i + 46 + n] == name.as_bytes() {
            return i;
        }
        at = i + 4;
    }
}

/// A copy of the fixture with every entry deflated.
fn deflated_fixture(dir: &Path) {
    std::fs::copy(testdata("mamba-tiny-ssm/config.json"), dir.join("config.json")).unwrap();
    let mut zin =
        zip::ZipArchive::new(std::fs::File::open(testdata("mamba-tiny-ssm/pytorch_model.bin")).unwrap()).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(dir.join("pytorch_model.bin")).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        zout.start_file(f.name(), opts).unwrap();
        zout.write_all(&buf).unwrap();
    }
    zout.finish().unwrap();
}

#[test]
fn a_flipped_bit_in_a_stored_tensor_entry_fails_its_crc() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata("mamba-tiny-ssm/config.json"), dir.path().join("config.json")).unwrap();
    let bin = dir.path().join("pytorch_model.bin");
    let mut bytes = std::fs::read(testdata("mamba-tiny-ssm/pytorch_model.bin")).unwrap();
    let (start, size, crc) = {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
        let f = z.by_name("pytorch_model/data/3").unwrap();
        assert_eq!(f.compression(), zip::CompressionMethod::Stored);
        (f.data_start() as usize, f.size() as usize, f.crc32())
    };
    bytes[start + size / 2] ^= 0x10;
    let computed = crc32fast::hash(&bytes[start..start + size]);
    std::fs::write(&bin, &bytes).unwrap();
    assert_eq!(
        open_err(dir.path()),
        format!(
            "{}: zip entry 'pytorch_model/data/3' fails its CRC-32 check (recorded {crc:08x}, computed \
             {computed:08x}): the file is damaged",
            bin.display()
        )
    );
}

#[test]
fn a_flipped_bit_in_a_deflated_entry_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    deflated_fixture(dir.path());
    let bin = dir.path().join("pytorch_model.bin");
    let good = std::fs::read(&bin).unwrap();
    let (start, csize) = {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(&good)).unwrap();
        let f = z.by_name("pytorch_model/data/0").unwrap();
        (f.data_start() as usize, f.compressed_size() as usize)
    };
    // Every bit of a few bytes in turn: each gives an error naming the entry (a CRC failure, an
    // invalid stream or a wrong size), never a silent read.
    for at in [start + 1, start + csize / 3, start + csize / 2, start + csize - 2] {
        for bit in 0..8 {
            let mut bytes = good.clone();
            bytes[at] ^= 1 << bit;
            std::fs::write(&bin, &bytes).unwrap();
            let msg = open_err(dir.path());
            assert!(msg.starts_with(&format!("{}: zip entry 'pytorch_model/data/0' ", bin.display())), "{msg}");
        }
    }
}

#[test]
fn an_entry_sized_unlike_its_storage_record() {
    let storage = noise(64 * 4, 1);
    let pkl = one_tensor_pickle("backbone.norm_f.weight", "0", 100);
    let d = ssm_dir(&[
        ("archive/data.pkl", &pkl, zip::CompressionMethod::Stored),
        ("archive/data/0", &storage, zip::CompressionMethod::Stored),
    ]);
    assert_eq!(
        open_err(d.path()),
        format!(
            "{}: zip entry 'archive/data/0' holds 256 bytes, but storage '0' is 100 elements of float32",
            d.path().join("pytorch_model.bin").display()
        )
    );
}

#[test]
fn a_deflate_ratio_no_stream_can_have_is_refused_before_inflating() {
    // 4 KiB that deflate to a few bytes, then the directory made to declare 3 GiB: the storage
    // record agrees, so only the ratio gives the lie away.
    let numel: u32 = 3 << 28; // 3 GiB of float32
    let pkl = one_tensor_pickle("backbone.norm_f.weight", "0", numel);
    let d = ssm_dir(&[
        ("archive/data.pkl", &pkl, zip::CompressionMethod::Stored),
        ("archive/data/0", &[0u8; 4096], zip::CompressionMethod::Deflated),
    ]);
    let bin = d.path().join("pytorch_model.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    let c = central_record(&bytes, "archive/data/0");
    let compressed = u32::from_le_bytes(bytes[c + 20..c + 24].try_into().unwrap());
    bytes[c + 24..c + 28].copy_from_slice(&(numel * 4).to_le_bytes());
    std::fs::write(&bin, &bytes).unwrap();
    let (msg, peak, _) = alloc_meter::measure(|| open_err(d.path()));
    assert_eq!(
        msg,
        format!(
            "{}: zip entry 'archive/data/0' declares 3221225472 bytes from {compressed} compressed, more than \
             deflate's 1032:1 expansion allows",
            bin.display()
        )
    );
    assert!(peak < 1 << 20, "{peak} bytes");
}

#[test]
fn a_pickle_over_the_limit_is_refused_before_it_is_read() {
    // 16 MiB + 1 of zeros, deflated to a few KiB.
    let pkl = vec![0u8; MAX_PICKLE_BYTES as usize + 1];
    let d = ssm_dir(&[("archive/data.pkl", &pkl, zip::CompressionMethod::Deflated)]);
    drop(pkl);
    let (msg, peak, _) = alloc_meter::measure(|| open_err(d.path()));
    assert_eq!(
        msg,
        format!(
            "{}: zip entry 'archive/data.pkl' is 16777217 bytes, more than the 16 MiB a pickle may have",
            d.path().join("pytorch_model.bin").display()
        )
    );
    assert!(peak < 1 << 20, "{peak} bytes");
}

#[test]
fn a_damaged_pickle_entry_fails_its_crc() {
    let pkl = one_tensor_pickle("backbone.norm_f.weight", "0", 64);
    let d = ssm_dir(&[
        ("archive/data.pkl", &pkl, zip::CompressionMethod::Stored),
        ("archive/data/0", &noise(256, 3), zip::CompressionMethod::Stored),
    ]);
    let bin = d.path().join("pytorch_model.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    // The tensor name's last byte: the pickle still parses, only the CRC can tell.
    let at = bytes.windows(22).position(|w| w == b"backbone.norm_f.weight").unwrap() + 21;
    bytes[at] = b'X';
    std::fs::write(&bin, &bytes).unwrap();
    let msg = open_err(d.path());
    assert!(
        msg.starts_with(&format!("{}: zip entry 'archive/data.pkl' fails its CRC-32 check (recorded ", bin.display())),
        "{msg}"
    );
}

#[test]
fn stored_entries_are_read_in_place() {
    // The embedding's storage is 256 KiB; opening allocates nothing that large.
    let (ck, _, largest) = alloc_meter::measure(|| Checkpoint::open(&testdata("mamba-tiny-ssm")).unwrap());
    assert_eq!(ck.tensor("backbone.embeddings.weight").unwrap().bytes.len(), 1024 * 64 * 4);
    assert!(largest < 128 << 10, "largest allocation {largest} bytes");
}

#[test]
fn deflated_entries_are_inflated_only_after_the_config_check() {
    let dir = tempfile::tempdir().unwrap();
    deflated_fixture(dir.path());
    // A config whose hidden size disagrees with the weights: refused before any entry inflates.
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(cfg.contains("\"d_model\": 64"));
    std::fs::write(dir.path().join("config.json"), cfg.replace("\"d_model\": 64", "\"d_model\": 128")).unwrap();
    let (msg, _, largest) = alloc_meter::measure(|| open_err(dir.path()));
    assert!(msg.contains("tensor 'backbone.embeddings.weight' has shape [1024, 64], expected [1024, 128]"), "{msg}");
    assert!(largest < 128 << 10, "largest allocation {largest} bytes");
    // With the right config they are inflated, once each.
    std::fs::write(dir.path().join("config.json"), &cfg).unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    let want = Checkpoint::open(&testdata("mamba-tiny-ssm")).unwrap();
    assert_eq!(
        *ck.tensor("backbone.norm_f.weight").unwrap().bytes,
        *want.tensor("backbone.norm_f.weight").unwrap().bytes
    );
}
