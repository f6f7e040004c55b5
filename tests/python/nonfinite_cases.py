"""Seeded op inputs with NaN, +inf and -inf injected at random positions, and the comparison that
says a kernel agrees with the float64 reference on them: the same NaN, +inf and -inf positions,
and the op tolerance tier on every element the reference keeps finite (ops_reference.mismatch).

Shared by tests/python/test_ops_nonfinite.py (the CPU builds through onnxruntime) and
tests/python/gpu/test_nonfinite_cuda.py (the CUDA kernels through their C entry points), so both
back ends see the same cases.
"""

import numpy as np

from ops_reference import CONV_INPUTS, SCAN_INPUTS

try:
    import ml_dtypes
except ImportError:
    ml_dtypes = None

SPECIALS = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}
NP_DTYPES = {"float32": np.float32, "float16": np.float16}
if ml_dtypes is not None:
    NP_DTYPES["bfloat16"] = ml_dtypes.bfloat16

# (seqlen, dim, dstate, ngroups): the tiled path across tile boundaries (128 and 256 steps), with
# the register-resident (16) and any-count (3, 1) state chunks, and the short (decode) path with
# dstates that leave padding lanes in the last vector (17, 1) and one that does not (16).
TILED_SHAPES = [(300, 48, 16, 2), (300, 40, 3, 1), (260, 24, 1, 1)]
SHORT_SHAPES = [(3, 130, 17, 2), (5, 48, 16, 1), (2, 40, 1, 1)]
CONV_SHAPES = [(300, 48, 4), (3, 130, 4), (64, 40, 2), (7, 48, 5)]  # (seqlen, dim, width)


def rand(rng, shape, dtype, scale=1.0, shift=0.0):
    a = rng.standard_normal(shape).astype(np.float32) * scale + shift
    return a.astype(NP_DTYPES[dtype])


def inject(rng, array, value, count):
    """A copy of `array` with `value` at `count` random positions."""
    out = np.array(array, copy=True)
    flat = out.reshape(-1)
    if flat.size:
        flat[rng.choice(flat.size, size=min(count, flat.size), replace=False)] = value
    return out


def dtypes():
    return [d for d in ("float32", "float16", "bfloat16") if d in NP_DTYPES]


def scan_cases():
    """Every input x every special value, each on a tiled and a short shape (cycling through
    TILED_SHAPES and SHORT_SHAPES), cycling dtype; delta_softplus off for every fifth (input, value) pair."""
    cases = []
    for i, (name, special) in enumerate((n, s) for n in SCAN_INPUTS for s in SPECIALS):
        for j in range(2):
            seqlen, dim, dstate, ngroups = (TILED_SHAPES, SHORT_SHAPES)[j][i % 3]
            k = len(cases)
            cases.append(dict(input=name, special=special, dtype=dtypes()[k % len(dtypes())], seqlen=seqlen,
                              dim=dim, dstate=dstate, ngroups=ngroups, batch=2, delta_softplus=int(i % 5 != 4),
                              seed=1000 + k))
    return cases


def scan_feeds(c):
    """All nine inputs (seeded, as tests/python/test_ops.py draws them), one with specials."""
    rng = np.random.default_rng(c["seed"])
    b, L, d, n, g, t = c["batch"], c["seqlen"], c["dim"], c["dstate"], c["ngroups"], c["dtype"]
    sp = c["delta_softplus"]
    f = {
        "u": rand(rng, (b, L, d), t),
        "delta": rand(rng, (b, L, d), t, 0.5, -1.0) if sp else np.abs(rand(rng, (b, L, d), t, 0.3)) + NP_DTYPES[t](0.01),
        "A": -np.exp(rng.standard_normal((d, n)).astype(np.float32)),
        "B": rand(rng, (b, L, g, n), t),
        "C": rand(rng, (b, L, g, n), t),
        "D": rand(rng, (d,), "float32"),
        "z": rand(rng, (b, L, d), t),
        "delta_bias": rand(rng, (d,), "float32", 0.5) if sp else np.abs(rand(rng, (d,), "float32", 0.1)),
        "initial_state": rand(rng, (b, d, n), "float32"),
    }
    f[c["input"]] = inject(rng, f[c["input"]], SPECIALS[c["special"]], 3)
    return f


def conv_cases():
    cases = []
    for i, (name, special) in enumerate((n, s) for n in CONV_INPUTS for s in SPECIALS):
        seqlen, dim, width = CONV_SHAPES[i % len(CONV_SHAPES)]
        cases.append(dict(input=name, special=special, dtype=dtypes()[i % len(dtypes())], seqlen=seqlen, dim=dim,
                          width=width, batch=2, silu=i % 3 != 2, seed=2000 + i))
    return cases


def conv_feeds(c):
    rng = np.random.default_rng(c["seed"])
    b, L, d, k, t = c["batch"], c["seqlen"], c["dim"], c["width"], c["dtype"]
    f = {
        "x": rand(rng, (b, L, d), t),
        "weight": rand(rng, (d, k), t, 0.5),
        "bias": rand(rng, (d,), t),
        "initial_state": rand(rng, (b, d, k - 1), t),
    }
    f[c["input"]] = inject(rng, f[c["input"]], SPECIALS[c["special"]], 3)
    return f


def case_id(c):
    return "-".join(f"{k}={v}" for k, v in c.items() if k != "seed")
