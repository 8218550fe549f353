import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseModelConfig, toHFConfig, presetConfig } from './config.ts';
import { buildLayout, countParams, viewsOf, initParams } from './params.ts';

test('config: a Qwen3 config round-trips through toHFConfig', () => {
  const cfg = presetConfig('bench-28m');
  const again = parseModelConfig(toHFConfig(cfg));
  assert.deepEqual(again, cfg);
});

test('config: unsupported fields are named', () => {
  const base = toHFConfig(presetConfig('micro'));
  assert.throws(
    () => parseModelConfig({ ...base, architectures: ['GPT2LMHeadModel'] }, 'm/config.json'),
    /m\/config.json: field "architectures": unsupported architecture "GPT2LMHeadModel"/,
  );
  assert.throws(() => parseModelConfig({ ...base, hidden_act: 'gelu' }), /field "hidden_act"/);
  assert.throws(() => parseModelConfig({ ...base, num_key_value_heads: 3 }), /field "num_key_value_heads"/);
  assert.throws(() => parseModelConfig({ ...base, vocab_size: -1 }), /field "vocab_size": expected a positive integer/);
  assert.throws(() => parseModelConfig({ ...base, rope_scaling: { rope_type: 'llama3' } }), /field "rope_scaling"/);
});

test('params: bench-28m layout has HF names and the expected size', () => {
  const cfg = presetConfig('bench-28m');
  const layout = buildLayout(cfg);
  // embed 8192*512 + 8 layers * (2*512 + 512*512 + 2*256*512 + 512*512 + 2*64 + 3*1408*512) + 512
  const perLayer = 2 * 512 + 512 * 512 + 2 * 256 * 512 + 512 * 512 + 2 * 64 + 3 * 1408 * 512;
  assert.equal(countParams(cfg), 8192 * 512 + 8 * perLayer + 512);
  assert.ok(layout.byName.has('model.layers.7.self_attn.k_norm.weight'));
  assert.ok(!layout.byName.has('lm_head.weight'));
  const buf = new Float32Array(layout.total);
  initParams(buf, layout, cfg, 1);
  const views = viewsOf(buf, layout, cfg);
  assert.equal(views.lmHead, views.embed);
  assert.equal(views.layers[0].inputNorm[0], 1);
  assert.equal(views.layers[3].kProj.length, 256 * 512);
});
