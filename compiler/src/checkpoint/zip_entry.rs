//! Entries of a zip archive held in memory (a memory map), read with their sizes and CRC-32
//! checked. The zip crate parses the central directory; the bytes are read here so that a
//! stored entry is a slice of the map (never copied), a deflated one is inflated only up to
//! the size it declares, and both are checked against the CRC the archive records.

use std::io::{Cursor, Read};
use std::ops::Range;

use zip::{CompressionMethod, ZipArchive};

/// Deflate cannot expand by more than about 1032:1 (a 258-byte match per 2 bits at best); a
/// larger declared ratio is a lie meant to make a reader allocate.
pub(crate) const MAX_DEFLATE_RATIO: u64 = 1032;

/// One entry as the central directory describes it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    deflated: bool,
    data_start: u64,
    compressed: u64,
    /// Uncompressed size, as declared.
    pub size: u64,
    crc32: u32,
}

/// What is wrong with an entry; the caller adds the file name.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("{0}")]
    Zip(String),
    #[error("zip entry '{name}' runs past the end of the file")]
    PastEnd { name: String },
    #[error("zip entry '{name}' uses compression {method}; torch archives are stored or deflated")]
    Method { name: String, method: String },
    #[error("zip entry '{name}' is stored uncompressed, but its sizes differ ({compressed} and {size} bytes)")]
    StoredSizes { name: String, compressed: u64, size: u64 },
    #[error(
        "zip entry '{name}' declares {size} bytes from {compressed} compressed, more than deflate's \
         {MAX_DEFLATE_RATIO}:1 expansion allows"
    )]
    Ratio { name: String, size: u64, compressed: u64 },
    #[error("zip entry '{name}' is {size} bytes, more than the {limit_mib} MiB {what} may have")]
    TooLarge { name: String, size: u64, limit_mib: u64, what: &'static str },
    #[error("zip entry '{name}' holds {size} bytes, but storage '{key}' is {numel} elements of {dtype}")]
    StorageSize { name: String, size: u64, key: String, numel: usize, dtype: String },
    #[error("zip entry '{name}' does not inflate: {detail}")]
    Inflate { name: String, detail: String },
    #[error("zip entry '{name}' inflates to a size other than the {size} bytes it declares")]
    InflatedSize { name: String, size: u64 },
    #[error("zip entry '{name}' fails its CRC-32 check (recorded {recorded:08x}, computed {computed:08x}): the file is damaged")]
    Crc { name: String, recorded: u32, computed: u32 },
}

/// Every entry of the archive in `buf`, in directory order.
pub(crate) fn directory(buf: &[u8]) -> Result<Vec<Entry>, EntryError> {
    let mut zip = ZipArchive::new(Cursor::new(buf)).map_err(|e| EntryError::Zip(e.to_string()))?;
    let mut out = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let f = zip.by_index_raw(i).map_err(|e| EntryError::Zip(e.to_string()))?;
        let name = f.name().to_string();
        let deflated = match f.compression() {
            CompressionMethod::Stored => false,
            CompressionMethod::Deflated => true,
            other => return Err(EntryError::Method { name, method: other.to_string() }),
        };
        let e = Entry {
            name,
            deflated,
            data_start: f.data_start(),
            compressed: f.compressed_size(),
            size: f.size(),
            crc32: f.crc32(),
        };
        out.push(e);
    }
    Ok(out)
}

impl Entry {
    pub(crate) fn is_deflated(&self) -> bool {
        self.deflated
    }

    /// Where the entry's (possibly compressed) bytes lie in an archive of `len` bytes, with its
    /// declared sizes checked: equal when stored, no more than deflate can give when deflated.
    pub(crate) fn raw_range(&self, len: usize) -> Result<Range<usize>, EntryError> {
        let end = self.data_start.checked_add(self.compressed).filter(|&e| e <= len as u64);
        let Some(end) = end else { return Err(EntryError::PastEnd { name: self.name.clone() }) };
        if !self.deflated && self.compressed != self.size {
            return Err(EntryError::StoredSizes {
                name: self.name.clone(),
                compressed: self.compressed,
                size: self.size,
            });
        }
        if self.deflated && self.size > self.compressed.saturating_mul(MAX_DEFLATE_RATIO).max(64) {
            return Err(EntryError::Ratio { name: self.name.clone(), size: self.size, compressed: self.compressed });
        }
        // end <= len, so both fit in usize.
        Ok(self.data_start as usize..end as usize)
    }

    /// Refuses an entry declared larger than `limit` bytes before anything is read.
    pub(crate) fn check_limit(&self, limit: u64, what: &'static str) -> Result<(), EntryError> {
        if self.size > limit {
            return Err(EntryError::TooLarge {
                name: self.name.clone(),
                size: self.size,
                limit_mib: limit >> 20,
                what,
            });
        }
        Ok(())
    }

    /// The entry's bytes with the CRC checked: a slice of `buf` when stored, else inflated into
    /// a buffer of exactly the declared size.
    pub(crate) fn read<'b>(&self, buf: &'b [u8]) -> Result<std::borrow::Cow<'b, [u8]>, EntryError> {
        let raw = &buf[self.raw_range(buf.len())?];
        let bytes = if self.deflated { std::borrow::Cow::Owned(self.inflate(raw)?) } else { raw.into() };
        self.check_crc(&bytes)?;
        Ok(bytes)
    }

    fn inflate(&self, raw: &[u8]) -> Result<Vec<u8>, EntryError> {
        // size <= compressed * 1032 <= the file's length * 1032: sized by the file, not a lie.
        let size = usize::try_from(self.size)
            .map_err(|_| EntryError::InflatedSize { name: self.name.clone(), size: self.size })?;
        let mut out = Vec::with_capacity(size);
        flate2::read::DeflateDecoder::new(raw)
            .take(self.size + 1)
            .read_to_end(&mut out)
            .map_err(|e| EntryError::Inflate { name: self.name.clone(), detail: e.to_string() })?;
        if out.len() != size {
            return Err(EntryError::InflatedSize { name: self.name.clone(), size: self.size });
        }
        Ok(out)
    }

    pub(crate) fn check_crc(&self, bytes: &[u8]) -> Result<(), EntryError> {
        let computed = crc32fast::hash(bytes);
        if computed != self.crc32 {
            return Err(EntryError::Crc { name: self.name.clone(), recorded: self.crc32, computed });
        }
        Ok(())
    }
}
