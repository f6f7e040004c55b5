//! What the fused layer steps' CPU kernels share (`MambaLayerStep`, `Mamba2LayerStep`): T storage
//! with float32 arithmetic, the pick of a kernel's instance for T, views of the kernel ABI's
//! buffers, the activations, a row-major GEMV, and the check of the outputs both ops require.

use half::{bf16, f16};

use crate::error::OpError;
use crate::kernel_abi::ffi::ElemType;

/// An element type of the weights and activations: float32 arithmetic, T storage.
pub(crate) trait Elt: Copy {
    fn f(self) -> f32;
    fn t(v: f32) -> Self;
    /// `v` rounded to T, back in float32.
    fn round(v: f32) -> f32 {
        Self::t(v).f()
    }
}
impl Elt for f32 {
    fn f(self) -> f32 {
        self
    }
    fn t(v: f32) -> Self {
        v
    }
}
impl Elt for f16 {
    fn f(self) -> f32 {
        self.to_f32()
    }
    fn t(v: f32) -> Self {
        f16::from_f32(v)
    }
}
impl Elt for bf16 {
    fn f(self) -> f32 {
        self.to_f32()
    }
    fn t(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// Of a kernel's float32, float16 and bfloat16 instances, the one for `elem`.
pub(crate) fn for_elem<F>(elem: ElemType, [float32, float16, bfloat16]: [F; 3]) -> F {
    match elem {
        ElemType::F16 => float16,
        ElemType::BF16 => bfloat16,
        _ => float32,
    }
}

/// # Safety
/// `addr` is 0 or the address of `len` live elements of type E.
pub(crate) unsafe fn slice<'a, E>(addr: usize, len: usize) -> Option<&'a [E]> {
    // SAFETY: a non-zero `addr` holds `len` live elements of E (our contract).
    (addr != 0 && len > 0).then(|| unsafe { std::slice::from_raw_parts(addr as *const E, len) })
}

/// # Safety
/// As for [`slice`], and nothing else reads or writes those elements while the slice lives.
pub(crate) unsafe fn slice_mut<'a, E>(addr: usize, len: usize) -> &'a mut [E] {
    if addr == 0 || len == 0 {
        return &mut [];
    }
    // SAFETY: our contract.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut E, len) }
}

pub(crate) fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

pub(crate) fn softplus(v: f32) -> f32 {
    if v > 20.0 {
        v
    } else {
        v.exp().ln_1p()
    }
}

/// `out[n] += sum_k x[k] w[k, n]` for w `[K, N]` row-major: row by row, so the inner loop is a
/// contiguous axpy the compiler vectorises.
pub(crate) fn gemv_rows<E: Elt>(x: &[f32], w: &[E], n: usize, out: &mut [f32]) {
    for (k, &xk) in x.iter().enumerate() {
        for (o, &wv) in out.iter_mut().zip(&w[k * n..(k + 1) * n]) {
            *o += xk * wv.f();
        }
    }
}

/// Both steps need all three outputs, on buffers of their own: the kernels read a state while
/// other threads write its update, so in place is not allowed. `conv` is (input, output, whether
/// the state has any elements: width 1 has none); `work` is false for an empty batch.
pub(crate) fn check_step_outputs(
    op: &str,
    work: bool,
    conv: (usize, usize, bool),
    ssm: (usize, usize),
    residual_out: usize,
) -> Result<(), OpError> {
    let (conv_in, conv_out, conv_nonempty) = conv;
    if work && (conv_out == 0 && conv_nonempty || ssm.1 == 0 || residual_out == 0) {
        return Err(OpError::Check(format!(
            "{op}: outputs 'residual_out', 'conv_state_out' and 'ssm_state_out' are required"
        )));
    }
    if work && (conv_nonempty && conv_out == conv_in || ssm.1 == ssm.0) {
        return Err(OpError::Check(format!(
            "{op}: a state output is bound to its input's buffer; states cannot be updated in place"
        )));
    }
    Ok(())
}
