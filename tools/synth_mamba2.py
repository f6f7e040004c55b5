"""A random-weight Mamba-2 checkpoint (Hugging Face Mamba2ForCausalLM layout) at a real model's
shape, for speed measurements: `mambac synth` writes Mamba-1 only. The values follow the scales of
transformers' Mamba2 init (dt log-uniform in [1e-3, 1e-1] through dt_bias, A = -[1, 16] per head)
so a forward pass stays numerically sane; they mean nothing else.

    .venv/bin/python tools/synth_mamba2.py /tmp/m2-130m                 # mamba2-130m's shape
    .venv/bin/python tools/synth_mamba2.py /tmp/m2 --layers 4 --groups 8
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file

# state-spaces/mamba2-130m: d_model 768, 24 layers, d_state 128, headdim 64, vocab padded to 50288.
SHAPE_130M = dict(hidden_size=768, num_hidden_layers=24, state_size=128, head_dim=64, n_groups=1,
                  vocab_size=50288)


def config(a):
    hidden, expand = a.hidden, 2
    return dict(model_type="mamba2", architectures=["Mamba2ForCausalLM"], hidden_size=hidden,
                num_hidden_layers=a.layers, num_heads=expand * hidden // a.head_dim, head_dim=a.head_dim,
                n_groups=a.groups, state_size=a.state, expand=expand, conv_kernel=4, chunk_size=256,
                use_bias=False, use_conv_bias=True, tie_word_embeddings=True, layer_norm_epsilon=1e-5,
                time_step_limit=[0.0, {"__float__": "Infinity"}], vocab_size=a.vocab, hidden_act="silu",
                rms_norm=True, residual_in_fp32=True, norm_before_gate=False)


def weights(c, rng):
    h, nh, n, g = c["hidden_size"], c["num_heads"], c["state_size"], c["n_groups"]
    i = c["expand"] * h
    conv_dim = i + 2 * g * n
    uniform = lambda bound, *s: rng.uniform(-bound, bound, s).astype(np.float32)  # noqa: E731
    w = {"backbone.embeddings.weight": (0.02 * rng.standard_normal((c["vocab_size"], h))).astype(np.float32),
         "backbone.norm_f.weight": np.ones(h, np.float32)}
    for layer in range(c["num_hidden_layers"]):
        p = f"backbone.layers.{layer}."
        dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), nh))
        w.update({
            p + "norm.weight": np.ones(h, np.float32),
            p + "mixer.in_proj.weight": uniform(h ** -0.5, 2 * i + 2 * g * n + nh, h),
            p + "mixer.conv1d.weight": uniform(0.5, conv_dim, 1, c["conv_kernel"]),
            p + "mixer.conv1d.bias": uniform(0.5, conv_dim),
            p + "mixer.dt_bias": (dt + np.log(-np.expm1(-dt))).astype(np.float32),  # softplus^-1(dt)
            p + "mixer.A_log": np.log(rng.uniform(1, 16, nh)).astype(np.float32),
            p + "mixer.D": np.ones(nh, np.float32),
            p + "mixer.norm.weight": np.ones(i, np.float32),
            p + "mixer.out_proj.weight": uniform(i ** -0.5, h, i),
        })
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    d = SHAPE_130M
    ap.add_argument("--hidden", type=int, default=d["hidden_size"])
    ap.add_argument("--layers", type=int, default=d["num_hidden_layers"])
    ap.add_argument("--state", type=int, default=d["state_size"])
    ap.add_argument("--head-dim", type=int, default=d["head_dim"])
    ap.add_argument("--groups", type=int, default=d["n_groups"])
    ap.add_argument("--vocab", type=int, default=d["vocab_size"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    c = config(a)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
    save_file(weights(c, np.random.default_rng(a.seed)), os.path.join(a.out, "model.safetensors"))


if __name__ == "__main__":
    main()
