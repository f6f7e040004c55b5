//! The weights a stateful model and its decode graph share, loaded onto the device once and given
//! to both sessions. ORT's `AddInitializer` uses a value that is already on the session's device
//! as is, so the two sessions hold one copy of the weights instead of two (2 x 5.5 GB for the
//! 2.8b float16 model otherwise).
//!
//! `AddInitializer` takes only tensors that do not own their memory: each weight is copied to the
//! device into a tensor we own, and the sessions get a non-owning view of it. Both live here, and
//! this must outlive the sessions (StatefulSession drops it last).

use std::any::Any;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use half::{bf16, f16};
use mambac_compiler::emit::decode_graph::{initializers, InitializerData, InitializerRef};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::value::{PrimitiveTensorElementType, Shape, Tensor, TensorRefMut};
use ort::AsPointer;

use crate::error::{fail, Error, Result};

/// Initializers smaller than this stay per session (norm weights, biases, shape constants).
const MIN_SHARED_BYTES: u64 = 64 * 1024;

/// One shared weight: its name, the device tensor that owns the memory and the view the
/// sessions are given.
pub struct SharedWeight {
    pub name: CString,
    view: *const ort::sys::OrtValue,
    _owner: Box<dyn Any>,
    _view: Box<dyn Any>,
}

/// Weights given to sessions instead of their own (ORT's `AddInitializer`); empty by default.
#[derive(Default)]
pub struct SharedWeights(Vec<SharedWeight>);

impl SharedWeights {
    /// Gives every weight to the session `builder` will make (ORT's `AddInitializer`).
    pub fn add_to(&self, builder: &ort::session::builder::SessionBuilder) -> Result<()> {
        let api = ort::api();
        for w in &self.0 {
            // SAFETY: the builder's options and the view are live; ORT keeps the pointer, and the
            // view outlives the session (see the module docs).
            let status = unsafe { (api.AddInitializer)(builder.ptr().cast_mut(), w.name.as_ptr(), w.view) };
            crate::environment::status_result(status)
                .map_err(|source| Error::SharedWeightRefused { name: w.name.to_string_lossy().into_owned(), source })?;
        }
        Ok(())
    }
}

/// The decode graph's float initializers of at least 64 KiB (`MIN_SHARED_BYTES`), on CUDA device 0.
pub fn load_for_cuda(decode_graph: &Path) -> Result<SharedWeights> {
    // The device copies below run through ORT, which needs its environment first.
    crate::environment::init_ort()?;
    let refs = initializers(decode_graph)
        .map_err(|source| Error::Initializers { path: decode_graph.to_path_buf(), source })?;
    let mut out = Vec::new();
    for r in refs {
        if ![1, 10, 16].contains(&r.data_type) {
            continue;
        }
        let bytes = read(&r)?;
        if (bytes.len() as u64) < MIN_SHARED_BYTES {
            continue;
        }
        let w = match r.data_type {
            1 => shared::<f32>(&r, &bytes)?,
            10 => shared::<f16>(&r, &bytes)?,
            _ => shared::<bf16>(&r, &bytes)?,
        };
        out.push(w);
    }
    Ok(SharedWeights(out))
}

fn shared<T: PrimitiveTensorElementType + bytemuck::Pod + std::fmt::Debug + 'static>(
    r: &InitializerRef,
    bytes: &[u8],
) -> Result<SharedWeight> {
    let err = |what: &str, e: ort::Error| Error::Ort { what: format!("initializer '{}': {what}", r.name), source: e };
    let host = Tensor::from_array((r.dims.clone(), collect::<T>(bytes))).map_err(|e| err("host tensor", e))?;
    let mut owner = host.to(AllocationDevice::CUDA, 0).map_err(|e| err("copying to the device", e))?;
    let info = MemoryInfo::new(AllocationDevice::CUDA, 0, AllocatorType::Device, MemoryType::Default)
        .map_err(|e| err("memory info", e))?;
    // SAFETY: the pointer is `owner`'s device buffer of exactly this shape and type, and `owner`
    // is kept beside the view for as long as the view lives.
    let view: TensorRefMut<'static, T> =
        unsafe { TensorRefMut::from_raw(info, owner.data_ptr_mut(), Shape::new(r.dims.clone())) }
            .map_err(|e| err("device view", e))?;
    let name = CString::new(r.name.clone())
        .map_err(|_| Error::BadWeight(format!("initializer name {:?} has a NUL byte", r.name)))?;
    Ok(SharedWeight { name, view: view.ptr(), _owner: Box::new(owner), _view: Box::new(view) })
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
            let io = |what: String| move |source| Error::Io { what, source };
            let mut f =
                File::open(path).map_err(io(format!("initializer '{}': opening {}", r.name, path.display())))?;
            f.seek(SeekFrom::Start(*offset)).map_err(io(format!(
                "initializer '{}': seeking {}",
                r.name,
                path.display()
            )))?;
            let mut b = vec![0u8; *length as usize];
            f.read_exact(&mut b).map_err(io(format!(
                "initializer '{}': reading {} bytes at {offset} of {}",
                r.name,
                length,
                path.display()
            )))?;
            b
        }
    };
    if want != Some(bytes.len() as u64) {
        fail!(BadWeight, "initializer '{}': {} bytes of data for dims {:?}", r.name, bytes.len(), r.dims);
    }
    Ok(bytes)
}
