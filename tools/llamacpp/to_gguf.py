#!/usr/bin/env python3
"""Convert a Hugging Face Mamba(-1) checkpoint directory (config.json + model.safetensors, e.g.
what `mambac synth --preset 130m DIR` writes) to GGUF for llama.cpp, without torch.

It does what llama.cpp's convert_hf_to_gguf.py does for MambaModel (conversion/mamba.py and
ModelBase.prepare_tensors in conversion/base.py of the vendored llama.cpp), which needs torch:

  * tensor names through gguf-py's tensor map for MODEL_ARCH.MAMBA;
  * A = -exp(A_log); conv1d.weight {d_inner, 1, 4} squeezed to {d_inner, 4};
  * lm_head omitted when equal to the embeddings (tied) -- llama.cpp then reuses token_embd;
  * --outtype f16 (q8_0): 2-D .weight tensors in F16 (Q8_0), except ssm_conv1d; 1-D tensors,
    norms and ssm_a (no ".weight" suffix) stay F32; a tensor whose rows are not a multiple of
    32 (ssm_dt, 48 wide) falls back from Q8_0 to F16. --outtype f32: everything F32;
  * metadata keys of MambaModel.set_gguf_parameters (context length 2**20, feed-forward length
    0, head count 0, d_conv, d_inner, d_state, dt_rank, rms eps, dt_b_c_rms false, file type);
  * with no tokenizer files in the checkpoint: the builtin GPT-NeoX vocab
    (models/ggml-vocab-gpt-neox.gguf of llama.cpp) cut to the model's vocab size, as
    MambaModel.set_vocab does. llama-bench only feeds random token ids, so the vocab only has
    to load.

Uses the gguf-py package vendored with the llama.cpp source (tools/llamacpp/build.sh unpacks
it); it needs numpy, pyyaml, tqdm and requests, which build.sh installs into
${LLAMACPP_DIR:-/tmp/llamacpp}/venv.

    $LLAMACPP_DIR/venv/bin/python tools/llamacpp/to_gguf.py /tmp/130m /tmp/130m-f32.gguf --outtype f32
    $LLAMACPP_DIR/venv/bin/python tools/llamacpp/to_gguf.py /tmp/130m /tmp/130m-f16.gguf --outtype f16
"""
import argparse
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

PIN = "0.3.36"
DEFAULT_LLAMA_CPP = Path(os.environ.get("LLAMACPP_DIR", "/tmp/llamacpp")) / f"llama_cpp_python-{PIN}" / "vendor" / "llama.cpp"

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file as numpy arrays (memory-mapped; no torch needed)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] == "BF16":
            b, e = info["data_offsets"]
            raw = data[b:e].view(np.uint16).astype(np.uint32) << 16
            out[name] = raw.view(np.float32).reshape(info["shape"])
            continue
        b, e = info["data_offsets"]
        out[name] = data[b:e].view(ST_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def find(hp: dict, keys: list[str]):
    for k in keys:
        if k in hp:
            return hp[k]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--outtype", choices=["f32", "f16", "q8_0"], default="f32")
    ap.add_argument("--llama-cpp", type=Path, default=DEFAULT_LLAMA_CPP,
                    help="llama.cpp source tree (for gguf-py and the builtin vocab); default %(default)s")
    args = ap.parse_args()

    sys.path.insert(0, str(args.llama_cpp / "gguf-py"))
    import gguf

    hp = json.loads((args.model_dir / "config.json").read_text())
    d_model = find(hp, ["hidden_size", "d_model"])
    n_layer = find(hp, ["num_hidden_layers", "n_layer", "n_layers"])
    d_conv = find(hp, ["conv_kernel", "d_conv"]) or 4
    d_inner = find(hp, ["intermediate_size", "d_inner"]) or 2 * d_model
    d_state = find(hp, ["state_size", "d_state"]) or 16
    dt_rank = find(hp, ["time_step_rank", "dt_rank"]) or -(d_model // -16)
    rms_eps = find(hp, ["layer_norm_epsilon", "rms_norm_eps"]) or 1e-5
    pad = hp.get("pad_vocab_size_multiple", 8)
    vocab_size = -(hp["vocab_size"] // -pad) * pad
    assert d_inner == 2 * d_model, "llama.cpp's Mamba-1 needs expand 2"
    if hp.get("model_type") == "falcon_mamba":
        raise SystemExit("falcon_mamba (dt/B/C rms norms) not handled here")

    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[args.outtype]
    arch = gguf.MODEL_ARCH.MAMBA
    w = gguf.GGUFWriter(args.out, gguf.MODEL_ARCH_NAMES[arch])

    # general.* (what prepare_metadata would write for a local directory without a model card)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(args.model_dir.name)

    # MambaModel.set_gguf_parameters
    w.add_context_length(2**20)
    w.add_embedding_length(d_model)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_block_count(n_layer)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(dt_rank)
    w.add_layer_norm_rms_eps(rms_eps)
    w.add_ssm_dt_b_c_rms(False)
    w.add_file_type(ftype)

    # MambaModel.set_vocab without tokenizer files -> _set_vocab_builtin("gpt-neox", vocab_size)
    if (args.model_dir / "tokenizer.json").is_file() or (args.model_dir / "tokenizer.model").is_file():
        print("note: the checkpoint has tokenizer files; this script still writes the builtin "
              "GPT-NeoX vocab (enough for llama-bench)", file=sys.stderr)
    r = gguf.GGUFReader(args.llama_cpp / "models" / "ggml-vocab-gpt-neox.gguf", "r")
    K = gguf.Keys.Tokenizer
    w.add_tokenizer_model(bytes(r.get_field(K.MODEL).parts[-1]).decode())
    f = r.get_field(K.PRE)
    w.add_tokenizer_pre(bytes(f.parts[-1]).decode() if f else "mpt")
    f = r.get_field(K.LIST)
    tokens = [bytes(f.parts[i]) for i in f.data][:vocab_size]
    if len(tokens) < vocab_size:
        raise SystemExit(f"builtin vocab has {len(tokens)} tokens < {vocab_size}")
    w.add_token_list(tokens)
    f = r.get_field(K.TOKEN_TYPE)
    w.add_token_types([f.parts[i].tolist()[0] for i in f.data][:vocab_size])
    f = r.get_field(K.MERGES)
    w.add_token_merges([bytes(f.parts[i]) for i in f.data])
    for key, add in ((K.BOS_ID, w.add_bos_token_id), (K.EOS_ID, w.add_eos_token_id),
                     (K.UNK_ID, w.add_unk_token_id), (K.PAD_ID, w.add_pad_token_id)):
        if (f := r.get_field(key)) is not None:
            add(f.parts[-1].tolist()[0])

    # tensors
    files = sorted(args.model_dir.glob("*.safetensors"))
    if not files:
        raise SystemExit(f"no .safetensors in {args.model_dir}")
    tensors = {}
    for p in files:
        tensors.update(read_safetensors(p))
    tmap = gguf.get_tensor_name_map(arch, n_layer)
    tok_embd_name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_EMBD] + ".weight"
    output_name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT] + ".weight"
    tok_embd = None
    n_bytes = 0
    for name, data in tensors.items():
        new_name = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise SystemExit(f"cannot map tensor {name!r}")
        data = np.asarray(data, dtype=np.float32) if data.dtype != np.float16 else np.asarray(data)
        if name.endswith(".A_log"):
            data = -np.exp(data.astype(np.float32))
        if ".ssm_conv1d." in new_name:
            data = data.squeeze()
        if new_name == output_name and tok_embd is not None and np.array_equal(tok_embd, data):
            print(f"{output_name} equals {tok_embd_name}: omitted (tied)", file=sys.stderr)
            continue
        if new_name == tok_embd_name:
            tok_embd = data

        n_dims = data.ndim
        keep_f32 = (n_dims <= 1 or new_name.endswith("_norm.weight") or ".ssm_conv1d." in new_name
                    or new_name[-7:] not in (".weight", ".lora_a", ".lora_b"))
        data = np.ascontiguousarray(data, dtype=np.float32)
        if keep_f32 or args.outtype == "f32":
            qtype = gguf.GGMLQuantizationType.F32
        elif args.outtype == "f16":
            qtype = gguf.GGMLQuantizationType.F16
        else:
            qtype = gguf.GGMLQuantizationType.Q8_0
        try:
            out = gguf.quants.quantize(data, qtype)
        except gguf.QuantError:  # row length not a multiple of 32 (ssm_dt): F16, as the converter does
            qtype = gguf.GGMLQuantizationType.F16
            out = gguf.quants.quantize(data, qtype)
        n_bytes += out.nbytes
        shape_ = gguf.quant_shape_from_byte_shape(out.shape, qtype) if out.dtype == np.uint8 else out.shape
        shape = "{" + ", ".join(str(n) for n in reversed(shape_)) + "}"
        print(f"{new_name:28s} {qtype.name:4s} {shape}", file=sys.stderr)
        w.add_tensor(new_name, out, raw_dtype=qtype)

    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out} ({args.outtype}, {len(tensors)} source tensors, {n_bytes / 1e6:.1f} MB of tensor data)")


if __name__ == "__main__":
    main()
