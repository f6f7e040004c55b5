//! Streams a Hugging Face checkpoint to disk: the safetensors header (JSON with each tensor's
//! dtype, shape and byte offsets, computable from the config alone) is written first, then each
//! tensor is generated and written in chunks, so memory use is one chunk, not the model.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::init::TensorGen;
use super::SynthOptions;
use crate::atomic_file::{write_atomic, AtomicFile};
use crate::checkpoint::{shapes, CheckpointError, MambaConfig, CONFIG_FILE, INDEX_FILE, SAFETENSORS_FILE};

/// Elements generated per write; 1 Mi f32 = 4 MiB of scratch.
const CHUNK: usize = 1 << 20;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |e| CheckpointError::io(path, e)
}

/// Writes config.json and model.safetensors (or `opts.shards` shards plus
/// model.safetensors.index.json) into `out_dir`, creating it. Returns the config written.
pub fn write_checkpoint(opts: &SynthOptions, out_dir: &Path) -> Result<MambaConfig, CheckpointError> {
    let config = opts.config()?;
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let mut cfg_json = config.to_hf_json();
    if let Value::Object(m) = &mut cfg_json {
        m.insert("torch_dtype".into(), json!(opts.dtype.name()));
    }

    let tensors = shapes::expected_tensors(&config);
    let elem = opts.dtype.size();
    let sizes: Vec<usize> = tensors.iter().map(|(_, s)| s.iter().product::<usize>() * elem).collect();
    let total: usize = sizes.iter().sum();
    let nshards = opts.shards.unwrap_or(1);
    if nshards > tensors.len() {
        return Err(CheckpointError::Synth {
            message: format!("{nshards} shards for {} tensors would leave some empty", tensors.len()),
        });
    }

    // Greedy split by bytes: a shard closes once it reaches its share of what is left, keeping
    // at least one tensor for every shard still to come.
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); nshards];
    let mut shard = 0;
    let mut acc = 0usize;
    let mut left = total;
    for (i, &size) in sizes.iter().enumerate() {
        let remaining_tensors = tensors.len() - i;
        let shards_after = nshards - shard - 1;
        if !groups[shard].is_empty()
            && shards_after > 0
            && (acc >= left.div_ceil(shards_after + 1) || remaining_tensors <= shards_after)
        {
            shard += 1;
            left -= acc;
            acc = 0;
        }
        groups[shard].push(i);
        acc += size;
    }

    let mut weight_map = Map::new();
    for (s, group) in groups.iter().enumerate() {
        let file_name = if nshards == 1 {
            SAFETENSORS_FILE.to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", s + 1, nshards)
        };
        let items: Vec<(&str, &[usize])> = group.iter().map(|&i| (tensors[i].0.as_str(), &tensors[i].1[..])).collect();
        write_safetensors_file(opts, &config, &out_dir.join(&file_name), &items)?;
        for (name, _) in &items {
            weight_map.insert(name.to_string(), json!(file_name));
        }
    }
    if nshards > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_json(&out_dir.join(INDEX_FILE), &index)?;
    }
    // Written last: a folder is a checkpoint once it has a config.
    write_json(&out_dir.join(CONFIG_FILE), &cfg_json)?;
    Ok(config)
}

fn write_json(path: &Path, v: &Value) -> Result<(), CheckpointError> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| CheckpointError::Json { path: path.to_path_buf(), error: e })?;
    write_atomic(path, |f| f.write_all((text + "\n").as_bytes())).map_err(io_err(path))
}

/// One safetensors file holding `items` in order.
fn write_safetensors_file(
    opts: &SynthOptions,
    config: &MambaConfig,
    path: &Path,
    items: &[(&str, &[usize])],
) -> Result<(), CheckpointError> {
    let elem = opts.dtype.size();
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt", "producer": "mambac synth"}));
    let mut offset = 0usize;
    for (name, shape) in items {
        let len = shape.iter().product::<usize>() * elem;
        header.insert(
            name.to_string(),
            json!({"dtype": opts.dtype.safetensors_name(), "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut hbytes = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| CheckpointError::Json { path: path.to_path_buf(), error: e })?;
    // Pad with spaces so the data starts 8-byte aligned, as the safetensors writer does.
    while hbytes.len() % 8 != 0 {
        hbytes.push(b' ');
    }

    let mut w = AtomicFile::create(path).map_err(io_err(path))?;
    w.write_all(&(hbytes.len() as u64).to_le_bytes()).map_err(io_err(path))?;
    w.write_all(&hbytes).map_err(io_err(path))?;
    let mut vals = Vec::with_capacity(CHUNK);
    let mut bytes = Vec::with_capacity(CHUNK * elem);
    for (name, shape) in items {
        let numel: usize = shape.iter().product();
        let mut g = TensorGen::new(config, name, shape, opts.seed);
        let mut done = 0;
        while done < numel {
            let n = CHUNK.min(numel - done);
            vals.clear();
            g.fill(&mut vals, n);
            bytes.clear();
            for &v in &vals {
                opts.dtype.push_f32(v, &mut bytes);
            }
            w.write_all(&bytes).map_err(io_err(path))?;
            done += n;
        }
    }
    w.commit().map_err(io_err(path))
}
