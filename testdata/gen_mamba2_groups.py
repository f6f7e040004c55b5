"""A synthetic Mamba-2 checkpoint with n_groups 2 and its float64 reference, in numpy alone.

`mamba2-tiny-hf` has one group, so a kernel or lowering that reads the wrong group of B and C
(or normalises over the whole width instead of per group) would still match it. This fixture has
2 groups of 2 heads, biases on in_proj and out_proj, an untied lm_head and a time_step_limit that
clamps dt on both sides. The reference computes the SSD with its quadratic "dual" form
(y = (L * C B^T) (dt x), L the cumulative decay mask; Dao & Gu 2024, section 4), not the
recurrence, so it shares no code path with mambac's step-by-step float64 interpreter.

    .venv/bin/python testdata/gen_mamba2_groups.py   # rewrites testdata/mamba2-groups2/
"""
import json
import os

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "mamba2-groups2")

CFG = dict(model_type="mamba2", architectures=["Mamba2ForCausalLM"], hidden_size=32, num_hidden_layers=2,
           num_heads=4, head_dim=16, n_groups=2, state_size=8, expand=2, conv_kernel=4, chunk_size=8,
           use_bias=True, use_conv_bias=True, tie_word_embeddings=False, layer_norm_epsilon=1e-5,
           time_step_limit=[0.05, 0.5], vocab_size=64, hidden_act="silu", rms_norm=True, residual_in_fp32=True)
BATCH, SEQLEN, SEED = 2, 13, 5


def weights(rng):
    c = CFG
    h, i, n, g, nh, k = c["hidden_size"], c["expand"] * c["hidden_size"], c["state_size"], c["n_groups"], \
        c["num_heads"], c["conv_kernel"]
    conv_dim = i + 2 * g * n
    f = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    w = {"backbone.embeddings.weight": f(c["vocab_size"], h), "backbone.norm_f.weight": 1 + f(h, scale=0.1),
         "lm_head.weight": f(c["vocab_size"], h, scale=0.2)}
    for layer in range(c["num_hidden_layers"]):
        p = f"backbone.layers.{layer}."
        w[p + "norm.weight"] = 1 + f(h, scale=0.1)
        w[p + "mixer.in_proj.weight"] = f(i + conv_dim + nh, h, scale=h ** -0.5)
        w[p + "mixer.in_proj.bias"] = f(i + conv_dim + nh, scale=0.1)
        w[p + "mixer.conv1d.weight"] = f(conv_dim, 1, k, scale=0.5)
        w[p + "mixer.conv1d.bias"] = f(conv_dim, scale=0.1)
        # Some heads' dt below 0.05 and some above 0.5 before the clamp.
        w[p + "mixer.dt_bias"] = np.array([-4.0, -1.5, 0.0, 1.0], np.float32)
        w[p + "mixer.A_log"] = f(nh, scale=0.5) + np.log(np.arange(1, nh + 1, dtype=np.float32))
        w[p + "mixer.D"] = f(nh)
        w[p + "mixer.norm.weight"] = 1 + f(i, scale=0.1)
        w[p + "mixer.out_proj.weight"] = f(h, i, scale=i ** -0.5)
        w[p + "mixer.out_proj.bias"] = f(h, scale=0.1)
    return w


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1 + np.exp(-x))


def softplus(x):
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def ssd_dual(x, dt, a, b, c):
    """x [L, P], dt [L], a scalar, b/c [L, N] of one head: y [L, P] and the final state [P, N]."""
    cum = np.cumsum(dt * a)
    seg = cum[:, None] - cum[None, :]                    # sum of dt*A over (s, t]
    mask = np.tril(np.exp(np.where(np.tril(np.ones_like(seg)) > 0, seg, -np.inf)))
    y = (mask * (c @ b.T)) @ (dt[:, None] * x)
    last = np.exp(cum[-1] - cum)                         # decay from s to the end
    state = (x * (dt * last)[:, None]).T @ b
    return y, state


def forward(w, ids, cfg=None):
    c = cfg or CFG
    h, i, n, g, nh, p, k = c["hidden_size"], c["expand"] * c["hidden_size"], c["state_size"], c["n_groups"], \
        c["num_heads"], c["head_dim"], c["conv_kernel"]
    lo, hi = c["time_step_limit"]
    eps = c["layer_norm_epsilon"]
    W = {key: v.astype(np.float64) for key, v in w.items()}
    hs = W["backbone.embeddings.weight"][ids]            # [B, L, H]
    bsz, seqlen = ids.shape
    states = {}
    for layer in range(c["num_hidden_layers"]):
        q = f"backbone.layers.{layer}.mixer."
        v = rms(hs, W[f"backbone.layers.{layer}.norm.weight"], eps)
        proj = v @ W[q + "in_proj.weight"].T + W[q + "in_proj.bias"]
        z, xbc, dt = proj[..., :i], proj[..., i:i + i + 2 * g * n], proj[..., 2 * i + 2 * g * n:]
        cw = W[q + "conv1d.weight"][:, 0, :]             # [C, K]
        padded = np.concatenate([np.zeros((bsz, k - 1, xbc.shape[-1])), xbc], axis=1)
        conv = sum(padded[:, j:j + seqlen, :] * cw[:, j] for j in range(k)) + W[q + "conv1d.bias"]
        states[f"conv_states.{layer}"] = padded[:, -k:, :].transpose(0, 2, 1)   # last K inputs
        xbc = silu(conv)
        x = xbc[..., :i].reshape(bsz, seqlen, nh, p)
        bm = xbc[..., i:i + g * n].reshape(bsz, seqlen, g, n)
        cm = xbc[..., i + g * n:].reshape(bsz, seqlen, g, n)
        dt = np.clip(softplus(dt + W[q + "dt_bias"]), lo, hi)
        a = -np.exp(W[q + "A_log"])
        y = np.zeros((bsz, seqlen, nh, p))
        ssm = np.zeros((bsz, nh, p, n))
        for bi in range(bsz):
            for hh in range(nh):
                grp = hh // (nh // g)
                y[bi, :, hh], ssm[bi, hh] = ssd_dual(x[bi, :, hh], dt[bi, :, hh], a[hh], bm[bi, :, grp], cm[bi, :, grp])
        y = y + W[q + "D"][:, None] * x
        states[f"ssm_states.{layer}"] = ssm
        if c.get("norm_before_gate", False):  # mamba_ssm's RMSNormGated flag
            grouped = y.reshape(bsz, seqlen, g, i // g)
            y = rms(grouped, 1.0, eps).reshape(bsz, seqlen, i) * W[q + "norm.weight"] * silu(z)
        else:
            gated = (y.reshape(bsz, seqlen, i) * silu(z)).reshape(bsz, seqlen, g, i // g)
            y = rms(gated, 1.0, eps).reshape(bsz, seqlen, i) * W[q + "norm.weight"]
        hs = hs + y @ W[q + "out_proj.weight"].T + W[q + "out_proj.bias"]
    logits = rms(hs, W["backbone.norm_f.weight"], eps) @ W["lm_head.weight"].T
    return logits, states


def main():
    rng = np.random.default_rng(SEED)
    w = weights(rng)
    ids = rng.integers(0, CFG["vocab_size"], (BATCH, SEQLEN)).astype(np.int64)
    logits, states = forward(w, ids)
    os.makedirs(OUT, exist_ok=True)
    save_file(w, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})
    ref = {"input_ids": ids, "logits": logits, **states}
    save_file({key: np.ascontiguousarray(v) for key, v in ref.items()}, os.path.join(OUT, "reference.safetensors"))
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CFG, f, indent=2)


if __name__ == "__main__":
    main()
