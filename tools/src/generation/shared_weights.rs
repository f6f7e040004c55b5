//! The weights a stateful model and its decode graph share, loaded onto the device once and given
//! to both sessions. ORT's `AddInitializer` uses a value that is already on the session's device
//! as is, so the two sessions hold one copy of the weights instead of two (2 x 5.5 GB for the
//! 2.8b float16 model otherwise).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use mambac_compiler::emit::decode_graph::{initializers, InitializerData, InitializerRef};
use ort::memory::AllocationDevice;
use ort::value::{DynValue, Tensor};

/// Initializers smaller than this stay per session (norm weights, biases, shape constants).
const MIN_SHARED_BYTES: u64 = 64 * 1024;

pub type SharedWeights = Vec<(String, Arc<DynValue>)>;

/// The decode graph's float initializers of at least [`MIN_SHARED_BYTES`], on CUDA device 0.
pub fn load_for_cuda(decode_graph: &Path) -> Result<SharedWeights> {
    let refs = initializers(decode_graph).with_context(|| format!("reading the initializers of {}", decode_graph.display()))?;
    let mut out = Vec::new();
    for r in refs {
        if ![1, 10, 16].contains(&r.data_type) {
            continue;
        }
        let bytes = read(&r)?;
        if (bytes.len() as u64) < MIN_SHARED_BYTES {
            continue;
        }
        let shape: Vec<i64> = r.dims.clone();
        let dev = |e: ort::Error| anyhow!("initializer '{}': copying to the device: {e}", r.name);
        let host_err = |e: ort::Error| anyhow!("initializer '{}': {e}", r.name);
        let value: DynValue = match r.data_type {
            1 => Tensor::from_array((shape, collect::<f32>(&bytes))).map_err(host_err)?.to(AllocationDevice::CUDA, 0).map_err(dev)?.into_dyn(),
            10 => Tensor::from_array((shape, collect::<f16>(&bytes))).map_err(host_err)?.to(AllocationDevice::CUDA, 0).map_err(dev)?.into_dyn(),
            _ => Tensor::from_array((shape, collect::<bf16>(&bytes))).map_err(host_err)?.to(AllocationDevice::CUDA, 0).map_err(dev)?.into_dyn(),
        };
        out.push((r.name, Arc::new(value)));
    }
    Ok(out)
}

/// Little-endian bytes as elements (the vector is aligned for T; the bytes need not be).
fn collect<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let n = bytes.len() / std::mem::size_of::<T>();
    let mut v = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(&bytes[..n * std::mem::size_of::<T>()]);
    v
}

fn read(r: &InitializerRef) -> Result<Vec<u8>> {
    let elem = match r.data_type {
        1 => 4,
        _ => 2,
    };
    let want = r.dims.iter().try_fold(elem as u64, |n, &d| u64::try_from(d).ok().and_then(|d| n.checked_mul(d)));
    let bytes = match &r.data {
        InitializerData::Inline(b) => b.clone(),
        InitializerData::External { path, offset, length } => {
            let mut f = File::open(path).with_context(|| format!("initializer '{}': opening {}", r.name, path.display()))?;
            f.seek(SeekFrom::Start(*offset)).with_context(|| format!("initializer '{}': seeking {}", r.name, path.display()))?;
            let mut b = vec![0u8; *length as usize];
            f.read_exact(&mut b).with_context(|| format!("initializer '{}': reading {} bytes at {offset} of {}", r.name, length, path.display()))?;
            b
        }
    };
    if want != Some(bytes.len() as u64) {
        bail!("initializer '{}': {} bytes of data for dims {:?}", r.name, bytes.len(), r.dims);
    }
    Ok(bytes)
}
