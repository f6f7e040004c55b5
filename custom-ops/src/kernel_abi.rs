//! The kernel ABI: one params struct per op, shared with C++ through `cxx` so the Rust side
//! (ORT registration, tests) and the C++/CUDA kernels cannot drift apart.
//!
//! The kernels know nothing about ONNX Runtime, TensorRT or Rust: they take a params struct whose
//! pointers address token-major buffers (docs/op-contract.md's layouts) and run. The buffers are
//! contiguous but for the `*_stride` fields: an input read as a slice of a packed last axis
//! (docs/op-contract.md "Sliced inputs") has its pointer at the slice's first element and its
//! row stride set to the packed row's length. The shape checks (cpp/shape_check.cpp) always set
//! every stride, and the CPU kernels use them as given; the CUDA entry points also take 0 as
//! "contiguous", for callers built before the fields existed.

#[cxx::bridge(namespace = "mambac")]
pub mod ffi {
    /// Element type of the `T` tensors of docs/op-contract.md. State, A, D and delta_bias are always f32.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[repr(u8)]
    enum ElemType {
        F32 = 0,
        F16 = 1,
        BF16 = 2,
    }

    /// SelectiveScan, docs/op-contract.md. Every pointer is the address of a buffer's first
    /// element read; 0 = absent. All are contiguous but z, b and c, whose rows are `*_stride`
    /// elements apart (dim, dstate, dstate when contiguous; more when sliced).
    ///
    ///   u, delta, z, y     [batch, seqlen, dim]            T   (z rows: z_stride apart)
    ///   a                  [dim, dstate]                    f32 (already negative)
    ///   b, c               [batch, seqlen, ngroups, dstate] T   (rows of dstate: b_stride, c_stride apart)
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
        z_stride: usize,
        b_stride: usize,
        c_stride: usize,
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

    /// SsdScan (docs/op-contract.md "SsdScan"), Mamba-2's scan: one scalar decay a head; head h
    /// reads group h / (heads / ngroups) of B and C. Every pointer is the address of a buffer's
    /// first element read; 0 = absent. All are contiguous but x, dt, b and c, whose token rows
    /// are `*_stride` elements apart (the contiguous row's length, or more when sliced; within a
    /// token row the heads, groups and states are contiguous).
    ///
    ///   x                  [batch, seqlen, heads, head_dim]    T   (token rows: x_stride apart;
    ///                                                              heads * head_dim when contiguous)
    ///   y                  [batch, seqlen, heads, head_dim]    T
    ///   dt                 [batch, seqlen, heads]              T   (rows: dt_stride apart; heads
    ///                                                              when contiguous, more when sliced)
    ///   a, d, dt_bias      [heads]                             f32 (a already negative)
    ///   b, c               [batch, seqlen, ngroups, dstate]    T   (token rows: b_stride, c_stride
    ///                                                              apart; ngroups * dstate when contiguous)
    ///   initial_state,
    ///   final_state        [batch, heads, head_dim, dstate]    f32
    ///   scratch            device scratch of the CUDA chunked prefill (`ssd_scan_scratch_bytes`
    ///                      in cpp/cuda/ssd_scan.h); 0 = none, and the CPU kernel reads none
    #[derive(Debug, Clone, Copy)]
    struct SsdScanParams {
        batch: usize,
        seqlen: usize,
        heads: usize,
        head_dim: usize,
        ngroups: usize,
        dstate: usize,
        elem: ElemType,
        dt_softplus: bool,
        dt_min: f32,
        dt_max: f32,
        dt_stride: usize,
        x_stride: usize,
        b_stride: usize,
        c_stride: usize,
        x: usize,
        dt: usize,
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        dt_bias: usize,
        initial_state: usize,
        y: usize,
        final_state: usize,
        scratch: usize,
    }

    /// CausalConv1d, docs/op-contract.md. Every pointer is the address of a buffer's first
    /// element read; 0 = absent. All are contiguous but x, whose rows are `x_stride` elements
    /// apart (dim when contiguous; more when sliced).
    ///
    ///   x, y               [batch, seqlen, dim]   T   (x rows: x_stride apart)
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
        x_stride: usize,
        x: usize,
        weight: usize,
        bias: usize,
        initial_state: usize,
        y: usize,
        final_state: usize,
    }

    /// AddRmsNorm (docs/op-contract.md "AddRmsNorm"): the residual add and the RMSNorm between two
    /// layers, over `rows = batch * seqlen` rows of `hidden`. Every pointer is the address of a
    /// contiguous buffer; 0 = absent (residual: the stream starts at x; residual_out: not wanted).
    ///
    /// rows is 0 when x is empty (hidden 0 included: no work, whatever batch and seqlen are).
    ///
    ///   x, y                   [rows, hidden]   T
    ///   residual, residual_out [rows, hidden]   f32
    ///   weight                 [hidden]         f32
    #[derive(Debug, Clone, Copy)]
    struct AddRmsNormParams {
        rows: usize,
        hidden: usize,
        elem: ElemType,
        eps: f32,
        x: usize,
        residual: usize,
        weight: usize,
        y: usize,
        residual_out: usize,
    }

    /// GatedRmsNorm (docs/op-contract.md "GatedRmsNorm"): Mamba-2's gated RMSNorm over
    /// `rows = batch * seqlen` rows of `d` channels, normalised in groups of `group_size`. Every
    /// pointer is the address of a buffer's first element read. All are contiguous but z, whose
    /// rows are `z_stride` elements apart (d when contiguous; more when sliced).
    ///
    /// rows is 0 when y is empty (d 0 included: no work, whatever batch and seqlen are).
    ///
    ///   y, out     [rows, d]   T   (z rows: z_stride apart)
    ///   z          [rows, d]   T
    ///   weight     [d]         f32
    #[derive(Debug, Clone, Copy)]
    struct GatedRmsNormParams {
        rows: usize,
        d: usize,
        group_size: usize,
        z_stride: usize,
        elem: ElemType,
        eps: f32,
        norm_before_gate: bool,
        y: usize,
        z: usize,
        weight: usize,
        out: usize,
    }

    /// MambaLayerStep (custom-ops/src/layer_step.rs has its equations): one layer's decode step,
    /// one token a sequence. Every pointer is the address of a contiguous buffer; 0 = absent.
    ///
    ///   residual_in, residual_out        [batch, 1, hidden]          f32
    ///   conv_state_in, conv_state_out    [batch, inner, width - 1]   T
    ///   ssm_state_in, ssm_state_out      [batch, inner, dstate]      f32
    ///   norm_weight                      [hidden]                    f32
    ///   in_proj_weight                   [hidden, 2 inner]           T   (stored [in, out])
    ///   in_proj_bias                     [2 inner]                   T
    ///   conv_weight                      [inner, width]              T
    ///   conv_bias                        [inner]                     T
    ///   x_proj_weight                    [inner, dt_rank + 2 dstate] T
    ///   dt_proj_weight                   [dt_rank, inner]            T
    ///   dt_bias, d                       [inner]                     f32
    ///   a                                [inner, dstate]             f32 (already negative)
    ///   out_proj_weight                  [inner, hidden]             T
    ///   out_proj_bias                    [hidden]                    T
    ///   scratch                          the CUDA kernels' float32 work space
    #[derive(Debug, Clone, Copy)]
    struct MambaLayerStepParams {
        batch: usize,
        hidden: usize,
        inner: usize,
        dstate: usize,
        dt_rank: usize,
        width: usize,
        elem: ElemType,
        eps: f32,
        residual_in: usize,
        residual_out: usize,
        conv_state_in: usize,
        conv_state_out: usize,
        ssm_state_in: usize,
        ssm_state_out: usize,
        norm_weight: usize,
        in_proj_weight: usize,
        in_proj_bias: usize,
        conv_weight: usize,
        conv_bias: usize,
        x_proj_weight: usize,
        dt_proj_weight: usize,
        dt_bias: usize,
        a: usize,
        d: usize,
        out_proj_weight: usize,
        out_proj_bias: usize,
        scratch: usize,
    }

    /// Mamba2LayerStep (custom-ops/src/mamba2_layer_step.rs has its equations): one Mamba-2
    /// layer's decode step, one token a sequence. `inner = heads * head_dim`, `conv_dim = inner +
    /// 2 * ngroups * dstate` (the conv runs over x, B and C together), `in_dim = inner + conv_dim +
    /// heads` (z, xBC, dt). Every pointer is the address of a contiguous buffer; 0 = absent.
    ///
    ///   residual_in, residual_out        [batch, 1, hidden]                   f32
    ///   conv_state_in, conv_state_out    [batch, conv_dim, width - 1]         T
    ///   ssm_state_in, ssm_state_out      [batch, heads, head_dim, dstate]     f32
    ///   norm_weight                      [hidden]                             f32
    ///   in_proj_weight                   [hidden, in_dim]                     T   (stored [in, out])
    ///   in_proj_bias                     [in_dim]                             T
    ///   conv_weight                      [conv_dim, width]                    T
    ///   conv_bias                        [conv_dim]                           T
    ///   dt_bias, a, d                    [heads]                              f32 (a already negative)
    ///   gate_norm_weight                 [inner]                              f32
    ///   out_proj_weight                  [inner, hidden]                      T
    ///   out_proj_bias                    [hidden]                             T
    ///   scratch                          the CUDA kernels' float32 work space
    #[derive(Debug, Clone, Copy)]
    struct Mamba2LayerStepParams {
        batch: usize,
        hidden: usize,
        heads: usize,
        head_dim: usize,
        ngroups: usize,
        dstate: usize,
        width: usize,
        elem: ElemType,
        eps: f32,
        dt_min: f32,
        dt_max: f32,
        norm_before_gate: bool,
        residual_in: usize,
        residual_out: usize,
        conv_state_in: usize,
        conv_state_out: usize,
        ssm_state_in: usize,
        ssm_state_out: usize,
        norm_weight: usize,
        in_proj_weight: usize,
        in_proj_bias: usize,
        conv_weight: usize,
        conv_bias: usize,
        dt_bias: usize,
        a: usize,
        d: usize,
        gate_norm_weight: usize,
        out_proj_weight: usize,
        out_proj_bias: usize,
        scratch: usize,
    }

    /// SsdScan's `head_dim`, `ngroups` and `dstate` attributes: the dims a packed (rank-3) x, B
    /// or C does not carry (docs/op-contract.md "Sliced inputs"). `i64::MIN` (`UNSET`) = the node
    /// does not set it; a set one is that dim, checked (1 to 2^31 - 1) by `check_ssd_scan`.
    // No PartialEq: cxx would export its C++ operator== from the library (test_library_symbols).
    #[derive(Debug, Clone, Copy)]
    struct SsdScanDims {
        head_dim: i64,
        ngroups: i64,
        dstate: i64,
    }

    /// One input as the shape checks see it: presence, ONNX element type code
    /// (`TensorProto.DataType`: 1 float, 10 float16, 16 bfloat16, ...) and dims. Dims past
    /// `MAX_RANK` are not stored; `rank` is always the true rank, so a rank error still reads right.
    /// `sliced`: the op reads channels `[offset, offset + count)` of the last axis (its
    /// `<input>_offset` attribute; docs/op-contract.md "Sliced inputs"), count set by the op.
    #[derive(Debug, Clone, Copy)]
    struct TensorDesc {
        present: bool,
        elem: i32,
        rank: usize,
        dims: [i64; 8],
        sliced: bool,
        offset: i64,
    }

    unsafe extern "C++" {
        include!("mambac/shape_check.h");
        include!("mambac/cpu_kernels.h");

        /// Checks SelectiveScan's 9 inputs (docs/op-contract.md order; absent = `present: false`) and
        /// returns the sizes and element type with every pointer 0. Err names the input, the
        /// expected and the actual shape or type.
        fn check_selective_scan(inputs: &[TensorDesc]) -> Result<SelectiveScanParams>;
        /// Same for SsdScan's 8 inputs and its dim attributes; the dt attributes are left
        /// false / 0.
        fn check_ssd_scan(inputs: &[TensorDesc], dims: &SsdScanDims) -> Result<SsdScanParams>;
        /// The CUDA scan's own limit on checked params (dstate <= 512, `kSsdMaxDstate`); Err
        /// names input 'B'. The CPU kernel has none.
        fn check_ssd_scan_cuda_limits(p: &SsdScanParams) -> Result<()>;
        /// Same for CausalConv1d's 4 inputs.
        fn check_causal_conv1d(inputs: &[TensorDesc]) -> Result<CausalConv1dParams>;
        /// Same for AddRmsNorm's 3 inputs (x, residual, weight); `eps` is left 0.
        fn check_add_rms_norm(inputs: &[TensorDesc]) -> Result<AddRmsNormParams>;
        /// Same for GatedRmsNorm's 3 inputs (y, z, weight) with the node's `group_size`, which
        /// must divide d; `eps` and `norm_before_gate` are left 0 / false.
        fn check_gated_rms_norm(inputs: &[TensorDesc], group_size: i64) -> Result<GatedRmsNormParams>;
        /// Same for MambaLayerStep's 15 inputs (`layer_step::slot` order); `eps` is left 0.
        fn check_mamba_layer_step(inputs: &[TensorDesc]) -> Result<MambaLayerStepParams>;
        /// The CUDA decode layer's own limits on checked params (batch <= 65535, dt_rank +
        /// 2 * dstate <= 12032); Err says which is exceeded. The CPU kernel has none.
        fn check_mamba_layer_step_cuda_limits(p: &MambaLayerStepParams) -> Result<()>;
        /// Same for Mamba2LayerStep's 14 inputs (`mamba2_layer_step::slot` order); the attributes
        /// (eps, dt_min, dt_max, norm_before_gate) are left 0 / false.
        fn check_mamba2_layer_step(inputs: &[TensorDesc]) -> Result<Mamba2LayerStepParams>;
        /// The CUDA Mamba-2 decode layer's own limit on checked params (batch <= 65535); Err says
        /// it is exceeded. The CPU kernel has none.
        fn check_mamba2_layer_step_cuda_limits(p: &Mamba2LayerStepParams) -> Result<()>;

        /// Number of independent work items; run them in any order, on any threads.
        fn selective_scan_cpu_tasks(p: &SelectiveScanParams) -> usize;
        /// Runs work item `task`. Err only if scratch memory cannot be had.
        fn selective_scan_cpu_run(p: &SelectiveScanParams, task: usize) -> Result<()>;
        /// One work item per (batch row, head).
        fn ssd_scan_cpu_tasks(p: &SsdScanParams) -> usize;
        /// Runs work item `task`. Err only if its state scratch cannot be had.
        fn ssd_scan_cpu_run(p: &SsdScanParams, task: usize) -> Result<()>;
        fn causal_conv1d_cpu_tasks(p: &CausalConv1dParams) -> usize;
        fn causal_conv1d_cpu_run(p: &CausalConv1dParams, task: usize) -> Result<()>;
        /// One work item per block of rows (`kAddRmsNormTaskElems` elements or one row).
        fn add_rms_norm_cpu_tasks(p: &AddRmsNormParams) -> usize;
        fn add_rms_norm_cpu_run(p: &AddRmsNormParams, task: usize) -> Result<()>;
        /// One work item per block of whole rows (`kGatedRmsNormTaskElems` elements or one row).
        fn gated_rms_norm_cpu_tasks(p: &GatedRmsNormParams) -> usize;
        fn gated_rms_norm_cpu_run(p: &GatedRmsNormParams, task: usize) -> Result<()>;
        /// The CPU kernel build in use: "avx512", "avx2" or "generic" (env `MAMBAC_CPU_ISA`
        /// can lower it, for tests and benchmarks).
        fn cpu_isa_name() -> &'static str;
    }
}

/// Dims of a `TensorDesc` that are stored (ranks above this are rejected by the checks).
pub const MAX_RANK: usize = 8;

impl ffi::TensorDesc {
    /// An absent optional input.
    pub fn absent() -> Self {
        ffi::TensorDesc { present: false, elem: 0, rank: 0, dims: [0; MAX_RANK], sliced: false, offset: 0 }
    }

    /// A present input of ONNX element type `elem` and shape `shape`.
    pub fn new(elem: i32, shape: &[i64]) -> Self {
        let mut dims = [0; MAX_RANK];
        for (d, s) in dims.iter_mut().zip(shape) {
            *d = *s;
        }
        ffi::TensorDesc { present: true, elem, rank: shape.len(), dims, sliced: false, offset: 0 }
    }

    /// The same input read from channel `offset` of its last axis on (an `<input>_offset`
    /// attribute); `None` leaves it whole.
    pub fn sliced_at(self, offset: Option<i64>) -> Self {
        match offset {
            Some(offset) => ffi::TensorDesc { sliced: true, offset, ..self },
            None => self,
        }
    }
}

impl ffi::SsdScanDims {
    /// The value of an attribute the node does not set.
    pub const UNSET: i64 = i64::MIN;

    /// No dim attribute set (every input whole, or only dt sliced).
    pub fn unset() -> Self {
        ffi::SsdScanDims { head_dim: Self::UNSET, ngroups: Self::UNSET, dstate: Self::UNSET }
    }

    /// From the node's attributes, in `head_dim`, `ngroups`, `dstate` order; `None` = not set.
    pub fn from_attrs([head_dim, ngroups, dstate]: [Option<i64>; 3]) -> Self {
        let v = |d: Option<i64>| d.unwrap_or(Self::UNSET);
        ffi::SsdScanDims { head_dim: v(head_dim), ngroups: v(ngroups), dstate: v(dstate) }
    }
}
