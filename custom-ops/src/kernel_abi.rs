//! The kernel ABI: one params struct per op, shared with C++ through `cxx` so the Rust side
//! (ORT registration, tests) and the C++/CUDA kernels cannot drift apart.
//!
//! The kernels know nothing about ONNX Runtime, TensorRT or Rust: they take a params struct whose
//! pointers address contiguous, token-major buffers (DESIGN.md's layouts) and run.

#[cxx::bridge(namespace = "mambac")]
pub mod ffi {
    /// Element type of the `T` tensors of DESIGN.md. State, A, D and delta_bias are always f32.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[repr(u8)]
    enum ElemType {
        F32 = 0,
        F16 = 1,
        BF16 = 2,
    }

    /// SelectiveScan, DESIGN.md. Every pointer is the address of a contiguous buffer; 0 = absent.
    ///
    ///   u, delta, z, y     [batch, seqlen, dim]            T
    ///   a                  [dim, dstate]                    f32 (already negative)
    ///   b, c               [batch, seqlen, ngroups, dstate] T
    ///   d, delta_bias      [dim]                            f32
    ///   initial_state,
    ///   final_state        [batch, dim, dstate]             f32
    #[derive(Debug, Clone, Copy)]
    struct SelectiveScanParams {
        batch: usize,
        seqlen: usize,
        dim: usize,
        dstate: usize,
        ngroups: usize,
        elem: ElemType,
        delta_softplus: bool,
        u: usize,
        delta: usize,
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        z: usize,
        delta_bias: usize,
        initial_state: usize,
        y: usize,
        final_state: usize,
    }

    /// CausalConv1d, DESIGN.md. Every pointer is the address of a contiguous buffer; 0 = absent.
    ///
    ///   x, y               [batch, seqlen, dim]   T
    ///   weight             [dim, width]           T
    ///   bias               [dim]                  T
    ///   initial_state,
    ///   final_state        [batch, dim, width-1]  T
    #[derive(Debug, Clone, Copy)]
    struct CausalConv1dParams {
        batch: usize,
        seqlen: usize,
        dim: usize,
        width: usize,
        elem: ElemType,
        silu: bool,
        x: usize,
        weight: usize,
        bias: usize,
        initial_state: usize,
        y: usize,
        final_state: usize,
    }
}
