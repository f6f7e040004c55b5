//! What generation state needs, checked against the memory the process can get before it is
//! allocated. A failed allocation aborts the process (Rust's allocator) or comes back from ONNX
//! Runtime as an error naming no argument; checked first, the user gets the figure and the limit.
//!
//! The limit is the smaller of the host's available memory (`MemAvailable` in /proc/meminfo) and
//! what `ulimit -v` leaves of the address space (its limit less the process's current size).
//! Where neither can be read (not Linux), nothing is checked.

use crate::error::{Error, Result};

/// Memory the process can still get, and where that figure comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Available {
    pub bytes: u128,
    pub source: String,
}

/// `MemAvailable` from /proc/meminfo's text, in bytes.
fn mem_available(meminfo: &str) -> Option<u128> {
    kib_field(meminfo, "MemAvailable:")
}

/// A "Name:   123 kB" line's value in bytes.
fn kib_field(text: &str, key: &str) -> Option<u128> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u128 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft address-space limit from /proc/self/limits' text (None when unlimited).
fn address_space_limit(limits: &str) -> Option<u128> {
    let line = limits.lines().find(|l| l.starts_with("Max address space"))?;
    line["Max address space".len()..].split_whitespace().next()?.parse().ok()
}

/// The smaller of what the host has available and what `ulimit -v` leaves, from the three
/// files' text.
fn available_from(meminfo: Option<&str>, limits: Option<&str>, status: Option<&str>) -> Option<Available> {
    let host =
        meminfo.and_then(mem_available).map(|b| Available { bytes: b, source: "MemAvailable in /proc/meminfo".into() });
    let ulimit = limits.and_then(address_space_limit).map(|limit| {
        let used = status.and_then(|s| kib_field(s, "VmSize:")).unwrap_or(0);
        Available {
            bytes: limit.saturating_sub(used),
            source: format!("ulimit -v {} less the {} the process has mapped", human(limit), human(used)),
        }
    });
    match (host, ulimit) {
        (Some(h), Some(u)) => Some(if u.bytes < h.bytes { u } else { h }),
        (h, u) => h.or(u),
    }
}

pub fn available() -> Option<Available> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    available_from(
        read("/proc/meminfo").as_deref(),
        read("/proc/self/limits").as_deref(),
        read("/proc/self/status").as_deref(),
    )
}

/// Fails when `need` bytes are more than the process can get; `what` says what needs them.
pub fn check(need: u128, what: impl FnOnce() -> String) -> Result<()> {
    check_against(need, available(), what)
}

pub(crate) fn check_against(need: u128, avail: Option<Available>, what: impl FnOnce() -> String) -> Result<()> {
    match avail {
        Some(available) if need > available.bytes => Err(Error::OutOfMemory { what: what(), need, available }),
        _ => Ok(()),
    }
}

/// Bytes in binary units with one decimal: "3.0 GiB".
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24000000 kB\nMemFree:        2000000 kB\nMemAvailable:   20971520 kB\n";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
                          Max stack size            8388608              unlimited            bytes     \n\
                          Max address space         4294967296           unlimited            bytes     \n";
    const UNLIMITED: &str = "Max address space         unlimited            unlimited            bytes     \n";
    const STATUS: &str = "Name:\tmambac\nVmPeak:\t 1100000 kB\nVmSize:\t 1048576 kB\n";

    #[test]
    fn takes_the_smaller_of_host_memory_and_ulimit() {
        let a = available_from(Some(MEMINFO), Some(LIMITS), Some(STATUS)).unwrap();
        assert_eq!(a.bytes, 3 << 30);
        assert_eq!(a.source, "ulimit -v 4.0 GiB less the 1.0 GiB the process has mapped");
        let a = available_from(Some(MEMINFO), Some(UNLIMITED), Some(STATUS)).unwrap();
        assert_eq!(a, Available { bytes: 20 << 30, source: "MemAvailable in /proc/meminfo".into() });
        assert_eq!(available_from(None, None, None), None);
    }

    #[test]
    fn refuses_more_than_is_available_with_the_figures() {
        let avail = available_from(Some(MEMINFO), Some(LIMITS), Some(STATUS));
        let e = check_against(5 << 30, avail.clone(), || "the states of 8 sequences need".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the states of 8 sequences need 5.0 GiB of memory, more than the 3.0 GiB available \
             (ulimit -v 4.0 GiB less the 1.0 GiB the process has mapped)"
        );
        assert!(check_against(2 << 30, avail, || unreachable!()).is_ok());
        assert!(check_against(u128::MAX, None, || unreachable!()).is_ok());
    }

    #[test]
    fn formats_bytes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(u128::MAX), format!("{:.1} EiB", u128::MAX as f64 / (1u128 << 60) as f64));
    }

    #[test]
    fn reads_this_process() {
        // On Linux both files exist; the figure is positive and below the host's total.
        if cfg!(target_os = "linux") {
            let a = available().expect("/proc is readable");
            assert!(a.bytes > 0, "{a:?}");
        }
    }
}
