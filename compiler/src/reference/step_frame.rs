//! What the two layer steps (MambaLayerStep, Mamba2LayerStep) compute alike around their SSMs,
//! in float64: the RMSNorm of the residual, in_proj, the causal conv's one step with its state
//! update, and out_proj added back to the residual. Each op's own part (Mamba-1's x_proj, dt_proj
//! and scan; Mamba-2's SSD step and gated norm) runs in between, as [`StepFrame::run`]'s `mixer`.

use std::ops::Range;

use mambac_op_schema::StepFrameSlots;

use super::silu;

/// The inputs both layer steps read alike. The widths differ by op: in_proj's outputs (Mamba:
/// `2 inner`, Mamba-2: `inner + conv_dim + heads`) and the conv's channels (`inner`, `conv_dim`).
pub struct StepFrame<'a> {
    pub batch: usize,
    pub hidden: usize,
    pub width: usize,
    /// The pre-norm's epsilon (Mamba-2's gated norm uses it too).
    pub eps: f64,
    /// `[batch, channels, width - 1]`, oldest first.
    pub conv_state: &'a [f64],
    /// `[batch, 1, hidden]`.
    pub residual: &'a [f64],
    pub norm_weight: &'a [f64],
    /// `[hidden, in_proj's outputs]`.
    pub in_proj_weight: &'a [f64],
    pub in_proj_bias: Option<&'a [f64]>,
    /// `[channels, width]`.
    pub conv_weight: &'a [f64],
    pub conv_bias: Option<&'a [f64]>,
    /// `[inner, hidden]`.
    pub out_proj_weight: &'a [f64],
    pub out_proj_bias: Option<&'a [f64]>,
}

/// `x [k] @ w [k, n] (+ bias)`.
pub(super) fn linear(x: &[f64], w: &[f64], n: usize, bias: Option<&[f64]>) -> Vec<f64> {
    let mut out = bias.map_or_else(|| vec![0.0; n], <[f64]>::to_vec);
    for (k, &xk) in x.iter().enumerate() {
        for (o, wv) in out.iter_mut().zip(&w[k * n..(k + 1) * n]) {
            *o += xk * wv;
        }
    }
    out
}

impl<'a> StepFrame<'a> {
    /// The frame of a layer-step node: its inputs at `slots` (the op's `FRAME`) through `input`
    /// (None: absent; the required ones must be present), and `[batch, hidden, width]`.
    pub fn of_node(
        slots: &StepFrameSlots,
        input: impl Fn(usize) -> Option<&'a [f64]>,
        [batch, hidden, width]: [usize; 3],
        eps: f64,
    ) -> Self {
        let required = |slot: usize| input(slot).expect("validated: required input present");
        StepFrame {
            batch,
            hidden,
            width,
            eps,
            conv_state: required(slots.conv_state),
            residual: required(slots.residual),
            norm_weight: required(slots.norm_weight),
            in_proj_weight: required(slots.in_proj_weight),
            in_proj_bias: input(slots.in_proj_bias),
            conv_weight: required(slots.conv_weight),
            conv_bias: input(slots.conv_bias),
            out_proj_weight: required(slots.out_proj_weight),
            out_proj_bias: input(slots.out_proj_bias),
        }
    }

    /// Runs the step row by row: `v = rmsnorm(residual) * norm_weight`, `proj = v @ in_proj`
    /// (`proj_width` outputs), the conv over `proj[conv_channels]`, then
    /// `y = mixer(batch row, proj, conv output)` and `residual + y @ out_proj`. Returns
    /// `(residual_out [batch, 1, hidden], conv_state_out [batch, channels, width - 1])`.
    pub(super) fn run(
        &self,
        proj_width: usize,
        conv_channels: Range<usize>,
        mut mixer: impl FnMut(usize, &[f64], &[f64]) -> Vec<f64>,
    ) -> (Vec<f64>, Vec<f64>) {
        let (h, k, channels) = (self.hidden, self.width, conv_channels.len());
        let past = k - 1;
        let mut res_out = Vec::with_capacity(self.batch * h);
        let mut conv_out = Vec::with_capacity(self.batch * channels * past);
        for b in 0..self.batch {
            let res = &self.residual[b * h..(b + 1) * h];
            let inv = 1.0 / (res.iter().map(|v| v * v).sum::<f64>() / h as f64 + self.eps).sqrt();
            let v: Vec<f64> = res.iter().zip(self.norm_weight).map(|(x, w)| x * inv * w).collect();
            let proj = linear(&v, self.in_proj_weight, proj_width, self.in_proj_bias);
            let x = &proj[conv_channels.clone()];
            let mut xc = vec![0.0; channels];
            for (c, xcv) in xc.iter_mut().enumerate() {
                let state = &self.conv_state[(b * channels + c) * past..(b * channels + c + 1) * past];
                let w = &self.conv_weight[c * k..(c + 1) * k];
                let window = || state.iter().chain(std::iter::once(&x[c]));
                *xcv =
                    silu(self.conv_bias.map_or(0.0, |cb| cb[c]) + window().zip(w).map(|(s, wk)| s * wk).sum::<f64>());
                // The window [state, x] less its oldest value (nothing for width 1).
                conv_out.extend(window().skip(1));
            }
            let y = mixer(b, &proj, &xc);
            let out = linear(&y, self.out_proj_weight, h, self.out_proj_bias);
            res_out.extend(res.iter().zip(&out).map(|(a, b)| a + b));
        }
        (res_out, conv_out)
    }
}
