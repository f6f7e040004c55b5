//! Running a kernel's independent work items on ORT's intra-op thread pool
//! (`KernelContext_ParallelFor`), so the session's `intra_op_num_threads` is respected.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use ort_sys::OrtKernelContext;

use crate::error::{panic_message, OpError};
use crate::ort_api::{api, check};

/// One work item; returns an error message on failure.
pub type Task<'a> = dyn Fn(usize) -> Result<(), String> + Sync + 'a;

struct Job<'a> {
    task: &'a Task<'a>,
    /// The first failure; the others are dropped (one message is enough).
    failure: Mutex<Option<String>>,
}

/// Called by ORT's pool threads; must not unwind into them.
unsafe extern "C" fn run_one(data: *mut c_void, index: usize) {
    // SAFETY: `data` is the `Job` that `parallel_for` keeps alive until ParallelFor returns.
    let job = unsafe { &*(data as *const Job) };
    let result = match catch_unwind(AssertUnwindSafe(|| (job.task)(index))) {
        Ok(r) => r,
        Err(payload) => Err(format!("panic: {}", panic_message(payload.as_ref()))),
    };
    if let Err(message) = result {
        if let Ok(mut slot) = job.failure.lock() {
            slot.get_or_insert(message);
        }
    }
}

/// Runs `task(0..count)` on the context's thread pool and waits for all of them.
///
/// # Safety
/// `ctx` is the live kernel context of the current compute call.
pub unsafe fn parallel_for(
    ctx: *mut OrtKernelContext,
    count: usize,
    op: &'static str,
    task: &Task<'_>,
) -> Result<(), OpError> {
    if count == 0 {
        return Ok(());
    }
    let job = Job { task, failure: Mutex::new(None) };
    if count == 1 {
        // SAFETY: `job` outlives the call.
        unsafe { run_one(&job as *const Job as *mut c_void, 0) };
    } else {
        // num_batch 0: ORT splits the range over its threads itself.
        // SAFETY: `ctx` is live (our contract); ParallelFor returns only when every `run_one`
        // has, so `job` outlives them all, and `check` gets the status it returned.
        unsafe {
            check(
                (api().KernelContext_ParallelFor)(ctx, run_one, count, 0, &job as *const Job as *mut c_void),
                op,
                "KernelContext_ParallelFor",
            )?
        };
    }
    match job.failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        None => Ok(()),
        Some(message) => Err(OpError::Kernel { op, message }),
    }
}
