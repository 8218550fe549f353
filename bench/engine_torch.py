#!/usr/bin/env python3
"""PyTorch side of `npm run bench:engine`, and an independent numerical reference for our engine.

Builds the same decoder-only transformer (Llama / Qwen2 / Qwen3: RMSNorm, RoPE "rotate half" with
rope_theta, GQA, SwiGLU, optional qkv bias and q/k norm, tied or untied embeddings) in plain eager
PyTorch from a Hugging Face model directory written by matpo (config.json + F32 model.safetensors,
read here directly), then, as asked on the command line:

  logprobs  FILE.jsonl   -> one {"logprobs": [...]} per {"tokens": [...]} line (t = 1..n-1)
  train     B T steps    -> tokens/s of forward + backward + AdamW on random tokens
  decode    B P N        -> tokens/s of B concurrent sequences, P prompt + N new tokens, KV cache

Prints one JSON object on stdout. --threads sets torch.set_num_threads.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name}: only F32 is supported here, got {info['dtype']}")
        a, b = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(info["shape"])
    return out


class Model(torch.nn.Module):
    def __init__(self, cfg, tensors):
        super().__init__()
        self.V = cfg["vocab_size"]
        self.C = cfg["hidden_size"]
        self.H = cfg["num_attention_heads"]
        self.KV = cfg.get("num_key_value_heads", self.H)
        self.D = cfg.get("head_dim") or self.C // self.H
        self.L = cfg["num_hidden_layers"]
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = cfg.get("rope_theta", 10000.0)
        self.tied = cfg.get("tie_word_embeddings", False)
        self.p = torch.nn.ParameterDict({k.replace(".", "/"): torch.nn.Parameter(v.clone()) for k, v in tensors.items()})
        self.qk_norm = f"model/layers/0/self_attn/q_norm/weight" in self.p
        self.bias = f"model/layers/0/self_attn/q_proj/bias" in self.p
        inv = self.theta ** (-torch.arange(0, self.D, 2, dtype=torch.float64) / self.D)
        self.register_buffer("inv_freq", inv.float(), persistent=False)

    def w(self, name):
        return self.p[name.replace(".", "/")]

    def rms(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    def rope(self, x, pos):  # x [B, h, T, D], pos [T]
        f = pos.double()[:, None] * self.inv_freq.double()[None, :]
        emb = torch.cat([f, f], dim=-1)
        cos, sin = emb.cos().float(), emb.sin().float()
        x1, x2 = x[..., : self.D // 2], x[..., self.D // 2 :]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def forward(self, ids, cache=None, pos0=0):
        """ids [B, T]; cache: list of (k, v) [B, KV, S, D] preallocated, filled at pos0.. ."""
        B, T = ids.shape
        x = F.embedding(ids, self.w("model.embed_tokens.weight"))
        pos = torch.arange(pos0, pos0 + T)
        g = self.H // self.KV
        for l in range(self.L):
            p = f"model.layers.{l}."
            h = self.rms(x, self.w(p + "input_layernorm.weight"))
            q = F.linear(h, self.w(p + "self_attn.q_proj.weight"), self.w(p + "self_attn.q_proj.bias") if self.bias else None)
            k = F.linear(h, self.w(p + "self_attn.k_proj.weight"), self.w(p + "self_attn.k_proj.bias") if self.bias else None)
            v = F.linear(h, self.w(p + "self_attn.v_proj.weight"), self.w(p + "self_attn.v_proj.bias") if self.bias else None)
            q = q.view(B, T, self.H, self.D).transpose(1, 2)
            k = k.view(B, T, self.KV, self.D).transpose(1, 2)
            v = v.view(B, T, self.KV, self.D).transpose(1, 2)
            if self.qk_norm:
                q = self.rms(q, self.w(p + "self_attn.q_norm.weight"))
                k = self.rms(k, self.w(p + "self_attn.k_norm.weight"))
            q = self.rope(q, pos)
            k = self.rope(k, pos)
            if cache is not None:
                kc, vc = cache[l]
                kc[:, :, pos0 : pos0 + T] = k
                vc[:, :, pos0 : pos0 + T] = v
                k = kc[:, :, : pos0 + T]
                v = vc[:, :, : pos0 + T]
            k = k.repeat_interleave(g, dim=1)
            v = v.repeat_interleave(g, dim=1)
            s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.D))
            if T > 1:
                keys = torch.arange(pos0 + T)
                s = s.masked_fill(keys[None, :] > pos[:, None], float("-inf"))
            a = torch.softmax(s, dim=-1) @ v
            a = a.transpose(1, 2).reshape(B, T, self.H * self.D)
            x = x + F.linear(a, self.w(p + "self_attn.o_proj.weight"))
            h = self.rms(x, self.w(p + "post_attention_layernorm.weight"))
            m = F.silu(F.linear(h, self.w(p + "mlp.gate_proj.weight"))) * F.linear(h, self.w(p + "mlp.up_proj.weight"))
            x = x + F.linear(m, self.w(p + "mlp.down_proj.weight"))
        x = self.rms(x, self.w("model.norm.weight"))
        head = self.w("model.embed_tokens.weight") if self.tied else self.w("lm_head.weight")
        return x, head


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    return Model(cfg, read_safetensors(os.path.join(model_dir, "model.safetensors")))


def cmd_logprobs(model, path):
    out = []
    with torch.no_grad():
        for line in open(path):
            if not line.strip():
                continue
            toks = json.loads(line)["tokens"]
            ids = torch.tensor([toks])
            x, head = model(ids)
            lp = F.log_softmax(x[0] @ head.T, dim=-1)
            out.append([lp[t - 1, toks[t]].item() for t in range(1, len(toks))])
    return {"logprobs": out}


def cmd_train(model, B, T, steps):
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids = torch.randint(0, model.V, (B, T))
    times = []
    for _ in range(max(steps, 1) + (1 if steps > 1 else 0)):
        t0 = time.perf_counter()
        x, head = model(ids)
        logits = x[:, :-1] @ head.T
        loss = F.cross_entropy(logits.reshape(-1, model.V), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    best = min(times[1:]) if len(times) > 1 else times[0]  # the first step (warm-up) is dropped when there are several
    return {"tokens_per_s": B * T / best, "step_s": best}


def cmd_decode(model, B, P, N, reps):
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, model.V, (B, P), generator=g)
    best = math.inf
    with torch.no_grad():
        for _ in range(reps):
            cache = [(torch.zeros(B, model.KV, P + N, model.D), torch.zeros(B, model.KV, P + N, model.D)) for _ in range(model.L)]
            t0 = time.perf_counter()
            x, head = model(prompts, cache, 0)
            logits = x[:, -1] @ head.T
            for i in range(N):
                probs = torch.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=g)
                if i == N - 1:
                    break
                x, head = model(nxt, cache, P + i)
                logits = x[:, -1] @ head.T
            best = min(best, time.perf_counter() - t0)
    return {"tokens_per_s": B * N / best, "seconds": best}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("cmd", choices=["logprobs", "train", "decode"])
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    model = load(a.model)
    if a.cmd == "logprobs":
        r = cmd_logprobs(model, a.args[0])
    elif a.cmd == "train":
        r = cmd_train(model, int(a.args[0]), int(a.args[1]), int(a.args[2]))
    else:
        r = cmd_decode(model, int(a.args[0]), int(a.args[1]), int(a.args[2]), int(a.args[3]) if len(a.args) > 3 else 2)
    r["threads"] = torch.get_num_threads()
    # Debian's torch calls the system libblas.so.3 (netlib reference unless OpenBLAS/BLIS is installed)
    lib = "/usr/lib/x86_64-linux-gnu/libblas.so.3"
    r["blas"] = os.path.basename(os.path.dirname(os.path.realpath(lib))) if os.path.exists(lib) else "bundled"
    r["torch"] = torch.__version__
    json.dump(r, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
