// LoRA in the engine and on disk: optimizer steps move only the adapter (base bytes identical, state
// sized for the adapter); the PEFT layout exactly (file names, config fields, tensor names, shapes);
// save/load round trip gives identical logprobs; the merged export equals base + adapter; the KV-cache
// decode path gives the training forward's logprobs; malformed adapters fail naming file and field;
// and, when Debian's torch is present, an independent Python merge reproduces the merged export.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getKernels } from '../engine/index.ts';
import { FileFormatError, InvalidArgumentError } from '../core/errors.ts';
import { presetConfig, type ModelConfig } from './config.ts';
import { saveModelDir } from './checkpoint.ts';
import { Decoder } from './decode.ts';
import { Engine } from './engine.ts';
import { buildLayout, initParams } from './params.ts';
import { readSafetensorsHeader } from './safetensors.ts';
import { Rng } from '../util/rng.ts';
import { maxDiff, plainDatum, summedNll } from '../testing/datums.ts';

const kernels = getKernels();

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'matpo-lora-'));
}

/** A tiny base model directory (tied or not), weights with spread so every module matters. */
function baseDir(overrides: Partial<ModelConfig> = {}): { dir: string; cfg: ModelConfig } {
  const cfg = presetConfig('micro', { vocabSize: 48, maxPositionEmbeddings: 64, ...overrides });
  const layout = buildLayout(cfg);
  const w = new Float32Array(layout.total);
  initParams(w, layout, { ...cfg, initializerRange: 0.15 }, 5);
  const dir = tmp();
  saveModelDir(dir, { config: cfg, layout, weights: w });
  return { dir, cfg };
}

const SEQS = [
  [1, 7, 9, 3, 22, 40, 2, 2, 17],
  [5, 6, 7, 8],
  [30, 31, 1, 0, 12, 44],
];
const LORA = { rank: 4, alpha: 8, trainAttn: true, trainMlp: true, trainUnembed: true, seed: 3 };

function train(e: Engine, steps: number): number[] {
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    losses.push(
      e.forwardBackward(
        SEQS.map((s) => plainDatum(s)),
        summedNll,
      ).loss,
    );
    e.optimStep({ learningRate: 1e-2 });
  }
  return losses;
}

for (const tied of [false, true]) {
  const what = `LoRA engine (${tied ? 'tied' : 'untied'} embeddings)`;
  test(`${what}: steps train only the adapter; save/load and merged export reproduce it`, () => {
    const { dir, cfg } = baseDir({ tieWordEmbeddings: tied });
    const out = tmp();
    try {
      const e = Engine.load(dir, kernels);
      const base = e.forward(SEQS);
      const w0 = Buffer.from(Float32Array.from(e.weights).buffer);
      e.enableLora(LORA);
      assert.equal(e.m.length, e.lora!.total, 'optimizer moments cover the adapter only');
      assert.deepEqual(e.forward(SEQS).logprobs, base.logprobs, 'B = 0: unchanged at start');
      const losses = train(e, 6);
      assert.ok(losses[5] < losses[0] - 0.5, `loss should fall: ${losses.map((l) => l.toFixed(3)).join(' ')}`);
      const w1 = Buffer.from(e.weights.buffer, e.weights.byteOffset, e.weights.byteLength);
      assert.ok(w1.equals(w0), 'base weights must be byte-identical');
      assert.equal(e.step, 6);
      const trained = e.forward(SEQS);
      assert.ok(maxDiff(trained.logprobs, base.logprobs) > 1e-2);

      // save / load round trip: identical logprobs (f32 on disk, bit-exact)
      e.saveAdapter(join(out, 'adapter'));
      const e2 = Engine.load(dir, kernels);
      e2.loadAdapter(join(out, 'adapter'));
      assert.deepEqual(e2.forward(SEQS).logprobs, trained.logprobs);
      assert.deepEqual(e2.lora!.config(), LORA);

      // merged export: a plain model directory whose logprobs equal base + adapter
      e.saveMerged(join(out, 'merged'));
      const merged = Engine.load(join(out, 'merged'), kernels);
      assert.equal(merged.lora, null);
      assert.equal(merged.cfg.tieWordEmbeddings, false, 'an adapted lm_head unties the merged model');
      const dm = maxDiff(merged.forward(SEQS).logprobs, trained.logprobs);
      assert.ok(dm < 1e-4, `merged vs adapter logprobs differ by ${dm}`);
      process.stdout.write(`# merged vs base+adapter logprobs (${tied ? 'tied' : 'untied'}): max abs diff ${dm.toExponential(2)}\n`);

      // optimizer state of the adapter round-trips; a full-model state does not load into it
      e.saveOptimizerState(join(out, 'opt'));
      e2.loadOptimizerState(join(out, 'opt'));
      assert.deepEqual(e2.m, e.m);
      assert.equal(e2.step, 6);
      assert.throws(
        () => merged.loadOptimizerState(join(out, 'opt')),
        (err: unknown) => err instanceof FileFormatError && /params/.test(err.message),
        'a full-model engine refuses the adapter optimizer state',
      );
      // `save` on a LoRA engine writes the adapter
      e.save(join(out, 'saved'));
      assert.deepEqual(readdirSync(join(out, 'saved')).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
      void cfg;
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test("LoRA KV-cache decode (prefill + one token at a time) gives the training forward's logprobs", async () => {
  const { dir, cfg } = baseDir({ family: 'qwen2', qkvBias: true, qkNorm: false });
  try {
    const e = Engine.load(dir, kernels);
    e.enableLora(LORA);
    train(e, 3);
    const want = e.forward(SEQS).logprobs;
    const dec = new Decoder(cfg, e.weights, kernels, { slots: 2, capacity: 16 });
    dec.setLora(e.lora);
    const V = cfg.vocabSize;
    let worst = 0;
    for (const [si, seq] of SEQS.entries()) {
      const slot = dec.allocSlot();
      const half = Math.ceil(seq.length / 2);
      const rows: Float32Array[] = [];
      const pre = dec.forward([{ slot, tokens: seq.slice(0, half), startPos: 0, allLogits: true }])[0];
      for (let r = 0; r < half; r++) rows.push(pre.slice(r * V, (r + 1) * V));
      for (let t = half; t < seq.length; t++) rows.push(dec.forward([{ slot, tokens: [seq[t]], startPos: t }])[0].slice());
      for (let t = 1; t < seq.length; t++) {
        const row = rows[t - 1];
        let mx = -Infinity;
        for (const x of row) mx = Math.max(mx, x);
        let z = 0;
        for (const x of row) z += Math.exp(x - mx);
        const lp = row[seq[t]] - mx - Math.log(z);
        worst = Math.max(worst, Math.abs(lp - want[si][t]));
      }
      dec.freeSlot(slot);
    }
    assert.ok(worst < 1e-4, `decode vs training forward: ${worst}`);
    // the engine's sampler runs base + adapter too: greedy continuation scored by forward has the sampled logprobs
    const s = await e.sampler().generate([1, 7, 9], { maxNewTokens: 5, temperature: 0 });
    const f = e.forward([[1, 7, 9, ...s.tokens]]).logprobs[0];
    s.logprobs.forEach((lp, i) => assert.ok(Math.abs(lp - f[3 + i]) < 1e-4, `sampled logprob ${lp} vs forward ${f[3 + i]}`));
    e.sampler().close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('PEFT layout: file names, adapter_config.json fields, tensor names and shapes', () => {
  const { dir, cfg } = baseDir({ family: 'qwen3', qkNorm: true, tieWordEmbeddings: false });
  const out = tmp();
  try {
    const e = Engine.load(dir, kernels);
    e.enableLora({ ...LORA, rank: 2, alpha: 16 });
    e.saveAdapter(out);
    assert.deepEqual(readdirSync(out).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    const c = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(c.peft_type, 'LORA');
    assert.equal(c.task_type, 'CAUSAL_LM');
    assert.equal(c.r, 2);
    assert.equal(c.lora_alpha, 16);
    assert.equal(c.lora_dropout, 0);
    assert.equal(c.bias, 'none');
    assert.equal(c.fan_in_fan_out, false);
    assert.equal(c.use_rslora, false);
    assert.equal(c.use_dora, false);
    assert.equal(c.base_model_name_or_path, dir);
    assert.deepEqual(c.target_modules, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'lm_head']);
    const h = readSafetensorsHeader(join(out, 'adapter_model.safetensors'));
    const { hiddenSize: C, numHeads: H, numKvHeads: KV, headDim: D, intermediateSize: F, vocabSize: V } = cfg;
    const want = new Map<string, number[]>();
    const shapes: Record<string, [string, number, number]> = {
      q_proj: ['self_attn', H * D, C],
      k_proj: ['self_attn', KV * D, C],
      v_proj: ['self_attn', KV * D, C],
      o_proj: ['self_attn', C, H * D],
      gate_proj: ['mlp', F, C],
      up_proj: ['mlp', F, C],
      down_proj: ['mlp', C, F],
    };
    for (let l = 0; l < cfg.numLayers; l++) {
      for (const [m, [group, o, i]] of Object.entries(shapes)) {
        want.set(`base_model.model.model.layers.${l}.${group}.${m}.lora_A.weight`, [2, i]);
        want.set(`base_model.model.model.layers.${l}.${group}.${m}.lora_B.weight`, [o, 2]);
      }
    }
    want.set('base_model.model.lm_head.lora_A.weight', [2, C]);
    want.set('base_model.model.lm_head.lora_B.weight', [V, 2]);
    assert.deepEqual([...h.tensors.keys()].sort(), [...want.keys()].sort());
    for (const [name, shape] of want) {
      assert.deepEqual(h.tensors.get(name)!.shape, shape, name);
      assert.equal(h.tensors.get(name)!.dtype, 'F32');
    }
    assert.equal(h.metadata.format, 'pt');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

test('malformed adapters fail with one line naming the file and field', () => {
  const { dir } = baseDir();
  const out = tmp();
  try {
    const e = Engine.load(dir, kernels);
    e.enableLora({ ...LORA, trainUnembed: false });
    e.saveAdapter(out);
    const cfgFile = join(out, 'adapter_config.json');
    const good = readFileSync(cfgFile, 'utf8');
    const edit = (f: (c: Record<string, unknown>) => void) => {
      const c = JSON.parse(good);
      f(c);
      writeFileSync(cfgFile, JSON.stringify(c));
    };
    const fails = (field: RegExp) =>
      assert.throws(
        () => Engine.load(dir, kernels).loadAdapter(out),
        (err: unknown) => err instanceof FileFormatError && field.test(err.message) && !err.message.includes('\n'),
      );
    edit((c) => {
      c.peft_type = 'IA3';
    });
    fails(/adapter_config\.json.*peft_type/);
    edit((c) => {
      c.target_modules = ['q_proj', 'embed_tokens'];
    });
    fails(/target_modules.*embed_tokens/);
    edit((c) => {
      c.use_dora = true;
    });
    fails(/use_dora/);
    edit((c) => {
      c.r = 8;
    });
    fails(/adapter_model\.safetensors.*lora_A\.weight.*shape/);
    edit((c) => {
      c.target_modules = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'lm_head'];
    });
    fails(/missing tensor|lm_head/);
    writeFileSync(cfgFile, good);
    assert.throws(() => Engine.load(dir, kernels).loadAdapter(join(out, 'nope')), FileFormatError);
    assert.throws(() => Engine.load(dir, kernels).saveAdapter(out), InvalidArgumentError);
    Engine.load(dir, kernels).loadAdapter(out); // the untouched adapter still loads
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

/** Debian's torch lives in /usr/bin/python3; a python3 earlier on PATH may lack it. */
const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0) ?? null;

test(
  'an independent torch merge (W + B·A·alpha/r) of the PEFT adapter reproduces the merged export',
  { skip: python === null && 'python3 with torch is not available (python3 -c "import torch" failed)' },
  () => {
    const { dir } = baseDir({ tieWordEmbeddings: true });
    const out = tmp();
    try {
      const e = Engine.load(dir, kernels);
      e.enableLora({ ...LORA, rank: 3, alpha: 7 });
      // a random adapter (not just trained a little) so the merge has something to show
      const rng = new Rng(1);
      for (let i = 0; i < e.lora!.total; i++) e.lora!.params[i] = (rng.next() - 0.5) * 0.5;
      e.saveAdapter(join(out, 'adapter'));
      e.saveMerged(join(out, 'merged'));
      const script = fileURLToPath(new URL('../../scripts/check-peft-merge.py', import.meta.url));
      const r = spawnSync(python!, [script, dir, join(out, 'adapter'), join(out, 'merged'), '--tol', '1e-5'], { encoding: 'utf8' });
      assert.equal(r.status, 0, `check-peft-merge.py failed:\n${r.stdout}\n${r.stderr}`);
      const line = r.stdout.trim().split('\n').pop()!;
      assert.match(line, /^OK /);
      process.stdout.write(`# ${line}\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  },
);
