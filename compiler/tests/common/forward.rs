//! An independent float64 Mamba-1 forward pass written straight from the paper / Hugging Face's
//! `MambaMixer.slow_forward`, reading the checkpoint directly (no IR, no passes). The variant tests
//! check the compiler's graphs against it on checkpoints the fixtures do not cover.

use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::reference::{silu, softplus};

fn t(ckpt: &Checkpoint, name: &str) -> Vec<f64> {
    ckpt.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}")).to_f64()
}

/// `y[r, :] = x[r, :] @ W^T (+ b)` for `W [out, inp]`.
fn linear(x: &[f64], w: &[f64], b: Option<&[f64]>, inp: usize, out: usize) -> Vec<f64> {
    let rows = x.len() / inp;
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut acc = b.map_or(0.0, |b| b[o]);
            for i in 0..inp {
                acc += x[r * inp + i] * w[o * inp + i];
            }
            y[r * out + o] = acc;
        }
    }
    y
}

fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let h = w.len();
    x.chunks(h)
        .flat_map(|row| {
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / h as f64 + eps).sqrt();
            row.iter().zip(w).map(move |(v, wk)| v * inv * wk).collect::<Vec<_>>()
        })
        .collect()
}

/// Logits `[batch, seqlen, vocab]` for token ids `[batch, seqlen]`.
pub fn forward(ckpt: &Checkpoint, ids: &[usize], batch: usize) -> Vec<f64> {
    let c = &ckpt.config;
    let (h, inter, n, k, r, v) =
        (c.hidden_size, c.intermediate_size, c.state_size, c.conv_kernel, c.time_step_rank, c.vocab_size);
    let l = ids.len() / batch;
    let emb = t(ckpt, "backbone.embeddings.weight");
    let mut hidden: Vec<f64> = ids.iter().flat_map(|&id| emb[id * h..(id + 1) * h].to_vec()).collect();
    for layer in 0..c.num_hidden_layers {
        let p = |s: &str| format!("backbone.layers.{layer}.{s}");
        let normed = rms_norm(&hidden, &t(ckpt, &p("norm.weight")), c.layer_norm_epsilon);
        let in_b = c.use_bias.then(|| t(ckpt, &p("mixer.in_proj.bias")));
        let xz = linear(&normed, &t(ckpt, &p("mixer.in_proj.weight")), in_b.as_deref(), h, 2 * inter);
        let conv_w = t(ckpt, &p("mixer.conv1d.weight")); // [I, 1, K]
        let conv_b = c.use_conv_bias.then(|| t(ckpt, &p("mixer.conv1d.bias")));
        let a: Vec<f64> = t(ckpt, &p("mixer.A_log")).iter().map(|x| -x.exp()).collect();
        let d = t(ckpt, &p("mixer.D"));
        let x_proj = t(ckpt, &p("mixer.x_proj.weight"));
        let dt_w = t(ckpt, &p("mixer.dt_proj.weight"));
        let dt_b = t(ckpt, &p("mixer.dt_proj.bias"));
        let mut y = vec![0.0; batch * l * inter];
        for b in 0..batch {
            let row = |tt: usize| (b * l + tt) * 2 * inter;
            // conv + SiLU
            let mut xc = vec![0.0; l * inter];
            for tt in 0..l {
                for ch in 0..inter {
                    let mut acc = conv_b.as_ref().map_or(0.0, |cb| cb[ch]);
                    for j in 0..k {
                        let src = tt as isize + j as isize - (k as isize - 1);
                        if src >= 0 {
                            acc += conv_w[ch * k + j] * xz[row(src as usize) + ch];
                        }
                    }
                    xc[tt * inter + ch] = silu(acc);
                }
            }
            let dbc = linear(&xc, &x_proj, None, inter, r + 2 * n);
            let mut state = vec![0.0; inter * n];
            for tt in 0..l {
                let dbc_t = &dbc[tt * (r + 2 * n)..(tt + 1) * (r + 2 * n)];
                let (dt_low, bm, cm) = (&dbc_t[..r], &dbc_t[r..r + n], &dbc_t[r + n..]);
                for ch in 0..inter {
                    let dt_raw: f64 = (0..r).map(|j| dt_w[ch * r + j] * dt_low[j]).sum::<f64>() + dt_b[ch];
                    let dt = softplus(dt_raw);
                    let u = xc[tt * inter + ch];
                    let mut acc = 0.0;
                    for s in 0..n {
                        let hs = &mut state[ch * n + s];
                        *hs = (dt * a[ch * n + s]).exp() * *hs + dt * bm[s] * u;
                        acc += cm[s] * *hs;
                    }
                    let z = xz[row(tt) + inter + ch];
                    y[(b * l + tt) * inter + ch] = (acc + d[ch] * u) * silu(z);
                }
            }
        }
        let out_b = c.use_bias.then(|| t(ckpt, &p("mixer.out_proj.bias")));
        let out = linear(&y, &t(ckpt, &p("mixer.out_proj.weight")), out_b.as_deref(), inter, h);
        hidden.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
    }
    let normed = rms_norm(&hidden, &t(ckpt, "backbone.norm_f.weight"), c.layer_norm_epsilon);
    let head = if c.tie_word_embeddings { emb } else { t(ckpt, "lm_head.weight") };
    linear(&normed, &head, None, h, v)
}
