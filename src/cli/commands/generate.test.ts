import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestTokenizer, loadTokenizer } from '../../model/tokenizer.ts';
import { loadModelDir } from '../../model/checkpoint.ts';
import { Sampler } from '../../model/sampler.ts';
import { referenceKernels } from '../../engine/reference.ts';

const bin = join(import.meta.dirname, '../../../bin/matpo.js');
const matpo = (...args: string[]) => {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, MATPO_KERNELS: 'reference' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};

test('cli: init-model writes a loadable HF directory; generate streams the seeded chat reply', async () => {
  const base = mkdtempSync(join(tmpdir(), 'matpo-cli-'));
  const tok = await createTestTokenizer(join(base, 'tok'));
  const out = join(base, 'model');
  const init = matpo('init-model', '--config', 'micro', '--tokenizer', join(base, 'tok'), '--out', out, '--seed', '5');
  assert.equal(init.code, 0, init.stderr);
  const model = loadModelDir(out);
  assert.equal(model.config.vocabSize, tok.vocabSize);
  assert.equal(model.config.eosTokenId, tok.eosTokenId);
  assert.equal(JSON.parse(readFileSync(join(out, 'generation_config.json'), 'utf8')).eos_token_id, tok.eosTokenId);
  const again = join(base, 'model2');
  assert.equal(matpo('init-model', '--config', 'micro', '--tokenizer', join(base, 'tok'), '--out', again, '--seed', '5').code, 0);
  assert.deepEqual(readFileSync(join(again, 'model.safetensors')), readFileSync(join(out, 'model.safetensors')));

  const args = [
    'generate',
    '--model',
    out,
    '--prompt',
    'Where was the author born?',
    '--system',
    'Be brief.',
    '--max-new-tokens',
    '12',
    '--seed',
    '9',
    '--kernels',
    'reference',
  ];
  const a = matpo(...args);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(matpo(...args).stdout, a.stdout);
  assert.match(a.stderr, /\[\d+ tokens, (length|stop_token), [\d.]+ tokens\/s, prompt \d+ tokens\]/);
  // Same reply computed in process: chat template + sampler with the same seed.
  const t = await loadTokenizer(out);
  const prompt = t.encode(
    t.applyChatTemplate(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Where was the author born?' },
      ],
      { addGenerationPrompt: true },
    ),
  );
  const s = new Sampler(model.config, model.weights, referenceKernels);
  const r = await s.generate(prompt, { maxNewTokens: 12, seed: 9, temperature: 1, stopTokenIds: t.stopTokenIds });
  assert.equal(a.stdout, t.decode(r.tokens, { skipSpecialTokens: true }) + '\n');
});

test('cli: bad model directories give a one-line error and exit code 1', async () => {
  const base = mkdtempSync(join(tmpdir(), 'matpo-cli-'));
  await createTestTokenizer(join(base, 'tok'));
  await createTestTokenizer(join(base, 'notpl'), { chatTemplate: null });
  const good = join(base, 'good');
  assert.equal(matpo('init-model', '--config', 'micro', '--tokenizer', join(base, 'tok'), '--out', good).code, 0);
  const cases: [string, () => string, RegExp][] = [
    ['missing dir', () => join(base, 'nope'), /nope: model directory not found/],
    [
      'no chat template',
      () => {
        const d = join(base, 'm-notpl');
        assert.equal(matpo('init-model', '--config', 'micro', '--tokenizer', join(base, 'notpl'), '--out', d).code, 0);
        return d;
      },
      /tokenizer_config\.json: field "chat_template": the tokenizer has no chat template/,
    ],
    [
      'corrupt weights',
      () => {
        const d = join(base, 'm-corrupt');
        cpSync(good, d, { recursive: true });
        const raw = readFileSync(join(d, 'model.safetensors'));
        writeFileSync(join(d, 'model.safetensors'), raw.subarray(0, 20));
        return d;
      },
      /model\.safetensors: truncated/,
    ],
    [
      'unsupported config',
      () => {
        const d = join(base, 'm-gelu');
        cpSync(good, d, { recursive: true });
        const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
        writeFileSync(join(d, 'config.json'), JSON.stringify({ ...cfg, hidden_act: 'gelu_new' }));
        return d;
      },
      /config\.json: field "hidden_act": unsupported activation/,
    ],
  ];
  for (const [name, setup, re] of cases) {
    const r = matpo('generate', '--model', setup(), '--prompt', 'hi', '--max-new-tokens', '2');
    assert.equal(r.code, 1, name);
    assert.match(r.stderr, re, name);
    assert.equal(r.stderr.trim().split('\n').length, 1, `${name}: ${r.stderr}`);
    assert.ok(r.stderr.startsWith('matpo generate: '), name);
  }
  const bad = matpo('init-model', '--config', 'huge', '--tokenizer', join(base, 'tok'), '--out', join(base, 'x'));
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^matpo init-model: unknown model preset "huge"; available: .*micro\n$/);
  const small = join(base, 'small.json');
  const cfg = JSON.parse(readFileSync(join(good, 'config.json'), 'utf8'));
  writeFileSync(small, JSON.stringify({ ...cfg, vocab_size: 100 }));
  const r2 = matpo('init-model', '--config', small, '--tokenizer', join(base, 'tok'), '--out', join(base, 'y'));
  assert.match(r2.stderr, /small\.json: field "vocab_size": 100 is smaller than the tokenizer's \d+ tokens/);
});
