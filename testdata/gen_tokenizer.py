"""Writes testdata/mamba-tiny-hf/tokenizer.json: a byte-level BPE of exactly the tiny model's
1024 ids, so the README's text examples (`generate --prompt ... --tokenizer tokenizer.json`)
run on the bundled checkpoint. Ids 0-255 are the bytes (GPT-2's byte-to-character map), 256-1023
merges of letter pairs; the model's weights are random, so the text it writes is too.
Deterministic; `python3 testdata/gen_tokenizer.py` rewrites the same file."""

import json
from pathlib import Path


def bytes_to_unicode():
    """GPT-2's map of the 256 bytes to printable characters (ByteLevel's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def main():
    chars = bytes_to_unicode()
    vocab = {chars[b]: b for b in range(256)}
    merges = []
    space = chars[ord(" ")]
    firsts = [space] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    seconds = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    for a in firsts:
        for b in seconds:
            if len(vocab) == 1024:
                break
            vocab[a + b] = len(vocab)
            merges.append([a, b])
    assert len(vocab) == 1024
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    out = Path(__file__).resolve().parent / "mamba-tiny-hf" / "tokenizer.json"
    out.write_text(json.dumps(tok, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(vocab)} tokens)")


if __name__ == "__main__":
    main()
