import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { presetConfig, toHFConfig } from './config.ts';
import { buildLayout, initParams } from './params.ts';
import { loadModelDir, saveModelDir } from './checkpoint.ts';
import { readSafetensorsHeader, writeSafetensors } from './safetensors.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'matpo-ckpt-'));

function micro(overrides = {}) {
  const config = presetConfig('micro', { eosTokenId: 3, bosTokenId: 1, ...overrides });
  const layout = buildLayout(config);
  const weights = new Float32Array(layout.total);
  initParams(weights, layout, config, 7);
  // Non-trivial norms so a layout mix-up cannot hide behind all-ones vectors.
  for (let i = 0; i < weights.length; i++) if (weights[i] === 1) weights[i] = 1 + (i % 13) * 0.01;
  return { config, layout, weights };
}

function fakeTokenizerDir(): string {
  const dir = tmp();
  writeFileSync(join(dir, 'tokenizer.json'), '{"model":{}}');
  writeFileSync(join(dir, 'tokenizer_config.json'), '{"chat_template":"x"}');
  writeFileSync(join(dir, 'chat_template.jinja'), '{{ x }}');
  return dir;
}

test('checkpoint: f32 save/load is bit-exact, with HF file set and names', () => {
  const m = micro();
  const dir = join(tmp(), 'model');
  saveModelDir(dir, { ...m, tokenizerDir: fakeTokenizerDir() });
  assert.deepEqual(readdirSync(dir).sort(), [
    'chat_template.jinja',
    'config.json',
    'generation_config.json',
    'model.safetensors',
    'tokenizer.json',
    'tokenizer_config.json',
  ]);
  const header = readSafetensorsHeader(join(dir, 'model.safetensors'));
  assert.deepEqual(
    [...header.tensors.keys()],
    m.layout.tensors.map((t) => t.name),
  );
  assert.deepEqual(header.tensors.get('model.layers.1.self_attn.k_proj.weight')!.shape, [16, 32]);
  assert.equal(header.tensors.get('model.embed_tokens.weight')!.dtype, 'F32');
  const gen = JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8'));
  assert.equal(gen.eos_token_id, 3);
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  assert.deepEqual(cfg, toHFConfig(m.config));
  const back = loadModelDir(dir);
  assert.deepEqual(back.config, m.config);
  assert.deepEqual(back.weights, m.weights);
  assert.ok(!readdirSync(dir).some((f) => f.includes('.tmp-')), 'no temporary files left');
});

test('checkpoint: sharded save writes an index and reloads bit-exactly; bf16 round trip is stable', () => {
  const m = micro();
  const dir = join(tmp(), 'sharded');
  saveModelDir(dir, { ...m, maxShardBytes: 20_000 });
  const files = readdirSync(dir);
  const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
  assert.ok(shards.length >= 3, `several shards (${shards.join(',')})`);
  assert.ok(!files.includes('model.safetensors'));
  const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
  assert.equal(Object.keys(index.weight_map).length, m.layout.tensors.length);
  assert.equal(index.metadata.total_size, m.weights.length * 4);
  assert.deepEqual(loadModelDir(dir).weights, m.weights);
  // Saving again unsharded into the same directory leaves no stale shards or index behind.
  saveModelDir(dir, m);
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.includes('safetensors')),
    ['model.safetensors'],
  );
  assert.deepEqual(loadModelDir(dir).weights, m.weights);

  const bdir = join(tmp(), 'bf16');
  saveModelDir(bdir, { ...m, dtype: 'BF16' });
  assert.equal(JSON.parse(readFileSync(join(bdir, 'config.json'), 'utf8')).torch_dtype, 'bfloat16');
  const once = loadModelDir(bdir);
  assert.equal(once.config.torchDtype, 'bfloat16');
  let maxRel = 0;
  for (let i = 0; i < m.weights.length; i++)
    maxRel = Math.max(maxRel, Math.abs(once.weights[i] - m.weights[i]) / (Math.abs(m.weights[i]) + 1e-30));
  assert.ok(maxRel > 0 && maxRel <= 2 ** -8, `bf16 relative error ${maxRel}`);
  const b2 = join(tmp(), 'bf16b');
  saveModelDir(b2, { config: once.config, layout: once.layout, weights: once.weights, dtype: 'BF16' });
  assert.deepEqual(loadModelDir(b2).weights, once.weights);
});

test('checkpoint: tied models may carry lm_head; untied ones must', () => {
  const tied = micro({ tieWordEmbeddings: true });
  const dir = join(tmp(), 'tied');
  saveModelDir(dir, tied);
  // Rewrite with an extra lm_head.weight, as some exporters do.
  const emb = tied.layout.byName.get('model.embed_tokens.weight')!;
  const tensors = tied.layout.tensors.map((t) => ({
    name: t.name,
    shape: t.shape,
    data: tied.weights.subarray(t.offset, t.offset + t.size),
  }));
  writeSafetensors(join(dir, 'model.safetensors'), [
    ...tensors,
    { name: 'lm_head.weight', shape: emb.shape, data: tied.weights.subarray(emb.offset, emb.offset + emb.size) },
  ]);
  assert.deepEqual(loadModelDir(dir).weights, tied.weights);

  const untied = micro();
  const udir = join(tmp(), 'untied');
  saveModelDir(udir, untied);
  const noHead = untied.layout.tensors
    .filter((t) => t.name !== 'lm_head.weight')
    .map((t) => ({ name: t.name, shape: t.shape, data: untied.weights.subarray(t.offset, t.offset + t.size) }));
  writeSafetensors(join(udir, 'model.safetensors'), noHead);
  assert.throws(() => loadModelDir(udir), /model\.safetensors: field "lm_head\.weight": missing tensor/);
});

test('checkpoint: bad directories give one-line errors naming file and field', () => {
  const m = micro();
  const base = tmp();
  assert.throws(() => loadModelDir(join(base, 'nope')), /nope: model directory not found/);
  const dir = join(base, 'm');
  saveModelDir(dir, m);

  // Shape mismatch vs the config.
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 48 }));
  assert.throws(
    () => loadModelDir(dir),
    /model\.safetensors: field "model\.layers\.0\.mlp\.gate_proj\.weight": shape \[64,32\] does not match the config's \[48,32\]/,
  );
  // Unexpected tensor (q/k norms in a llama config).
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, architectures: ['LlamaForCausalLM'], model_type: 'llama' }));
  assert.throws(() => loadModelDir(dir), /field "model\.layers\.0\.self_attn\.q_norm\.weight": unexpected tensor for a llama model/);
  // Unsupported config field, corrupt JSON.
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, hidden_act: 'gelu' }));
  assert.throws(() => loadModelDir(dir), /config\.json: field "hidden_act"/);
  writeFileSync(join(dir, 'config.json'), '{');
  assert.throws(() => loadModelDir(dir), /config\.json: not valid JSON/);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  // Truncated weights.
  const raw = readFileSync(join(dir, 'model.safetensors'));
  writeFileSync(join(dir, 'model.safetensors'), raw.subarray(0, raw.length - 100));
  assert.throws(() => loadModelDir(dir), /model\.safetensors: field "lm_head\.weight": data_offsets .* out of range/);
  rmSync(join(dir, 'model.safetensors'));
  assert.throws(() => loadModelDir(dir), /model\.safetensors: file not found/);

  // Shard listed in the index but missing; tensor listed but absent from its shard.
  const sdir = join(base, 's');
  saveModelDir(sdir, { ...m, maxShardBytes: 20_000 });
  const index = JSON.parse(readFileSync(join(sdir, 'model.safetensors.index.json'), 'utf8'));
  index.weight_map['model.norm.weight'] = 'model-00001-of-00009.safetensors';
  writeFileSync(join(sdir, 'model.safetensors.index.json'), JSON.stringify(index));
  assert.throws(() => loadModelDir(sdir), /model-00001-of-00009\.safetensors: file not found/);
  index.weight_map['model.norm.weight'] = 'model-00001-of-' + Object.values(index.weight_map as Record<string, string>)[0].slice(15);
  writeFileSync(join(sdir, 'model.safetensors.index.json'), JSON.stringify(index));
  assert.throws(
    () => loadModelDir(sdir),
    /field "model\.norm\.weight": tensor (listed in model\.safetensors\.index\.json is missing from the shard|also present here)/,
  );
  writeFileSync(join(sdir, 'model.safetensors.index.json'), '{"metadata":{}}');
  assert.throws(() => loadModelDir(sdir), /index\.json: field "weight_map": missing/);

  // Saving with a tokenizer dir that lacks tokenizer.json.
  const empty = tmp();
  mkdirSync(join(empty, 'x'));
  assert.throws(() => saveModelDir(join(base, 'out'), { ...m, tokenizerDir: join(empty, 'x') }), /tokenizer\.json: file not found/);
  assert.ok(existsSync(join(base, 'out', 'model.safetensors')));
});
