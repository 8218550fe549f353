#!/usr/bin/env python3
"""Independent check of matpo's LoRA merge, written against PEFT's documented formula.

usage: check-peft-merge.py BASE_DIR ADAPTER_DIR MERGED_DIR [--tol 1e-5]

Reads the base model (model.safetensors + config.json), the PEFT adapter (adapter_config.json +
adapter_model.safetensors) and matpo's merged export with torch, parsing safetensors by hand
(8-byte little-endian header length, JSON header, raw data). For every adapted module it computes
    W' = W + B @ A * lora_alpha / r          (PEFT LoraLayer.merge, fan_in_fan_out false)
in float64 and compares it with the merged export tensor by tensor; every other tensor must equal
the base exactly. With tied embeddings the base's lm_head is its embed_tokens. Prints one line per
adapted group and a final "OK max_abs_diff=..." line; exits 1 when a difference exceeds --tol.
"""
import argparse
import json
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).to(torch.float64)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("adapter")
    ap.add_argument("merged")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()

    base_cfg = json.load(open(os.path.join(args.base, "config.json")))
    base = read_safetensors(os.path.join(args.base, "model.safetensors"))
    if "lm_head.weight" not in base and base_cfg.get("tie_word_embeddings", False):
        base["lm_head.weight"] = base["model.embed_tokens.weight"]
    ad_cfg = json.load(open(os.path.join(args.adapter, "adapter_config.json")))
    assert ad_cfg["peft_type"] == "LORA" and ad_cfg["task_type"] == "CAUSAL_LM", ad_cfg
    assert not ad_cfg.get("use_rslora") and not ad_cfg.get("fan_in_fan_out"), ad_cfg
    r = ad_cfg["r"]
    scale = ad_cfg["lora_alpha"] / r
    lora = read_safetensors(os.path.join(args.adapter, "adapter_model.safetensors"))
    merged = read_safetensors(os.path.join(args.merged, "model.safetensors"))

    expected = dict(base)
    adapted = 0
    for name, a in lora.items():
        if not name.endswith(".lora_A.weight"):
            continue
        prefix = name[: -len(".lora_A.weight")]
        b = lora[prefix + ".lora_B.weight"]
        assert prefix.startswith("base_model.model."), prefix
        target = prefix[len("base_model.model."):] + ".weight"
        assert target in expected, f"adapter module {prefix} has no base tensor {target}"
        assert a.shape[0] == r and b.shape[1] == r, (name, a.shape, b.shape)
        expected[target] = expected[target] + (b @ a) * scale
        adapted += 1
    assert adapted > 0 and adapted * 2 == len(lora), "adapter tensors must come in lora_A/lora_B pairs"

    if set(merged) != set(expected):
        print(f"tensor names differ: only merged {sorted(set(merged) - set(expected))}, "
              f"only expected {sorted(set(expected) - set(merged))}")
        return 1
    worst = 0.0
    worst_name = ""
    for name, want in expected.items():
        got = merged[name]
        if got.shape != want.shape:
            print(f"{name}: shape {list(got.shape)} != {list(want.shape)}")
            return 1
        d = (got - want).abs().max().item() if got.numel() else 0.0
        if d > worst:
            worst, worst_name = d, name
    print(f"{adapted} adapted modules, {len(expected)} tensors, r={r}, scale={scale:g}")
    if worst > args.tol:
        print(f"FAIL max_abs_diff={worst:.3e} at {worst_name} (tol {args.tol:g})")
        return 1
    print(f"OK max_abs_diff={worst:.3e} ({worst_name or 'all exact'}; tol {args.tol:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
