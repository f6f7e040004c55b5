//! Where tensor bytes live once a checkpoint is open: memory maps of the weight files (or, for
//! the rare compressed zip entry, an owned buffer) and, per stored name, a byte range in one.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::dtype::DType;
use super::error::CheckpointError;
use super::zip_entry::Entry;

/// Bytes of one weight file.
pub(crate) enum Backing {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// Maps a file read-only. Empty files cannot be mapped on Linux, so they become an empty buffer
/// (the readers then report them as truncated).
pub(crate) fn map_file(path: &Path) -> Result<Backing, CheckpointError> {
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let len = file.metadata().map_err(|e| CheckpointError::io(path, e))?.len();
    if len == 0 {
        return Ok(Backing::Owned(Vec::new()));
    }
    // SAFETY: the map is read-only and private to this process. If another process truncates
    // the file while it is open, reads may fault, as with every mmap-based reader (safetensors,
    // torch); checkpoints are not rewritten while a compiler reads them.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))?;
    Ok(Backing::Mmap(map))
}

/// A dtype as the file spells it: one mambac reads, or another one, kept by name so that it is
/// an error only if the model actually needs that tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredDType {
    Known(DType),
    Other(String),
}

/// One stored tensor: which backing, which bytes.
#[derive(Debug, Clone)]
pub(crate) struct RawTensor {
    pub backing: usize,
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
    /// The file it came from, for error messages.
    pub file: PathBuf,
}

/// A zip entry whose bytes are read only once the tensors have been checked against
/// config.json: CRC-checked in place when `backing == source` (stored), else inflated from
/// `source` into `backing`.
pub(crate) struct Deferred {
    pub backing: usize,
    pub source: usize,
    pub entry: Entry,
    pub file: PathBuf,
}

#[derive(Default)]
pub(crate) struct Store {
    backings: Vec<Backing>,
    pub tensors: HashMap<String, RawTensor>,
    /// Weight files in the order they were read.
    pub files: Vec<PathBuf>,
    pub deferred: Vec<Deferred>,
}

impl Store {
    /// Adds a backing and returns its index for [`RawTensor::backing`].
    pub(crate) fn add_backing(&mut self, b: Backing) -> usize {
        self.backings.push(b);
        self.backings.len() - 1
    }

    pub(crate) fn backing_count(&self) -> usize {
        self.backings.len()
    }

    /// Reads the deferred zip entries: each is CRC-checked, and a deflated one inflated into
    /// its backing. Pages of a mapped entry are released once checked.
    pub(crate) fn finish_reads(&mut self) -> Result<(), CheckpointError> {
        for d in std::mem::take(&mut self.deferred) {
            let src = self.backing(d.source);
            let bytes = d.entry.read(src).map_err(|e| super::torch_zip::entry_error(&d.file, e))?;
            if d.backing == d.source {
                let start = bytes.as_ptr() as usize - src.as_ptr() as usize;
                self.release_range(d.source, start..start + bytes.len());
            } else {
                let owned = bytes.into_owned();
                self.backings[d.backing] = Backing::Owned(owned);
            }
        }
        Ok(())
    }

    pub(crate) fn backing(&self, i: usize) -> &[u8] {
        self.backings.get(i).map(Backing::bytes).unwrap_or(&[])
    }

    /// The bytes of a tensor; the range was checked against the backing when it was added.
    pub(crate) fn bytes(&self, t: &RawTensor) -> &[u8] {
        self.backing(t.backing).get(t.range.clone()).unwrap_or(&[])
    }

    /// Drops the resident pages of a mapped tensor: a caller that has consumed it (emission
    /// writes each weight once) keeps the process's resident set at about one tensor instead of
    /// the whole checkpoint. The data stays readable: the kernel re-reads it from the file.
    pub(crate) fn release(&self, t: &RawTensor) {
        self.release_range(t.backing, t.range.clone())
    }

    fn release_range(&self, backing: usize, range: Range<usize>) {
        if let Some(Backing::Mmap(m)) = self.backings.get(backing) {
            const PAGE: usize = 4096;
            let start = range.start / PAGE * PAGE;
            let end = range.end.min(m.len());
            if end > start {
                // SAFETY: a read-only, file-backed private map: after MADV_DONTNEED the pages are
                // faulted back in from the file, so no reader can observe different bytes.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
    }

    /// Inserts a tensor, refusing a second tensor of the same name from another file.
    pub(crate) fn insert(&mut self, name: String, t: RawTensor) -> Result<(), CheckpointError> {
        if let Some(prev) = self.tensors.get(&name) {
            return Err(CheckpointError::DuplicateTensor { name, path: prev.file.clone(), other: t.file });
        }
        self.tensors.insert(name, t);
        Ok(())
    }
}
