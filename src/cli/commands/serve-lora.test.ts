// `matpo serve --model BASE --lora NAME=DIR` as a real process: /v1/models lists the adapter with its
// parent, samples through OpenAIPolicy equal base + adapter in-process (and differ from the base),
// POST /v1/load_lora_adapter (vLLM's shape) swaps in another adapter, a bad path is a 400 naming
// lora_path, and a --lora directory that is not an adapter is a one-line error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getKernels } from '../../engine/index.ts';
import { MatpoError } from '../../core/errors.ts';
import { presetConfig } from '../../model/config.ts';
import { buildLayout, initParams } from '../../model/params.ts';
import { saveModelDir } from '../../model/checkpoint.ts';
import { Engine } from '../../model/engine.ts';
import { createTestTokenizer } from '../../model/tokenizer.ts';
import { EmbeddedPolicy } from '../../policy/embedded.ts';
import { OpenAIPolicy } from '../../policy/openai.ts';
import { Rng } from '../../util/rng.ts';
import { command } from './serve.ts';

const BIN = fileURLToPath(new URL('../../../bin/matpo.js', import.meta.url));

/** An adapter with random A and B (a fresh one would equal the base). */
function writeAdapter(base: string, out: string, seed: number): void {
  const e = Engine.load(base, getKernels());
  e.enableLora({ rank: 4, alpha: 32, trainAttn: true, trainMlp: true, trainUnembed: false, seed });
  const rng = new Rng(seed);
  for (let i = 0; i < e.lora!.total; i++) e.lora!.params[i] = (rng.next() - 0.5) * 0.4;
  e.saveAdapter(out);
}

test('serve --lora: the adapter is served by name; /v1/load_lora_adapter swaps in another', async () => {
  const root = mkdtempSync(join(tmpdir(), 'matpo-serve-lora-'));
  const dir = join(root, 'base');
  const tok = await createTestTokenizer(dir);
  const cfg = presetConfig('micro', { vocabSize: tok.vocabSize });
  const layout = buildLayout(cfg);
  const weights = new Float32Array(layout.total);
  initParams(weights, layout, { ...cfg, initializerRange: 0.3 }, 7);
  saveModelDir(dir, { config: cfg, layout, weights });
  writeAdapter(dir, join(root, 'a1'), 1);
  writeAdapter(dir, join(root, 'a2'), 2);
  await assert.rejects(
    command.run(['--model', dir, '--port', '0', '--lora', dir]),
    (e: unknown) =>
      e instanceof MatpoError &&
      e.message === `${join(dir, 'adapter_config.json')}: file not found (--lora needs a PEFT adapter directory)`,
  );

  const args = ['serve', '--model', dir, '--port', '0', '--threads', '1', '--lora', `mine=${join(root, 'a1')}`];
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const locals: EmbeddedPolicy[] = [];
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        const m = /with LoRA adapter "mine" at (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(out);
        if (m) resolve(m[1]);
      });
      child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
    });
    const models = await (await fetch(`${url}/v1/models`)).json();
    const listed = models.data.map((m: { id: string; parent?: string }) => [m.id, m.parent ?? null]);
    assert.deepEqual(listed, [
      [basename(dir), null],
      ['mine', basename(dir)],
    ]);

    const base = await EmbeddedPolicy.load(dir, { threads: 1 });
    const a1 = await EmbeddedPolicy.load(dir, { threads: 1, adapter: join(root, 'a1') });
    const a2 = await EmbeddedPolicy.load(dir, { threads: 1, adapter: join(root, 'a2') });
    locals.push(base, a1, a2);
    const client = new OpenAIPolicy({ baseUrl: url, model: 'mine', tokenizerDir: dir, retries: 0 });
    const prompt = tok.encode(tok.applyChatTemplate([{ role: 'user', content: 'Who founded it?' }], { addGenerationPrompt: true }));
    const params = { maxNewTokens: 12, seed: 4 };
    const same = async (want: EmbeddedPolicy) => {
      const got = await client.sample(prompt, params);
      const direct = await want.sample(prompt, params);
      assert.deepEqual(got.tokens, direct.tokens);
      got.logprobs.forEach((x, i) => assert.ok(Math.abs(x - direct.logprobs[i]) < 1e-5, `logprob ${i}: ${x} vs ${direct.logprobs[i]}`));
      return got;
    };
    const s1 = await same(a1);
    const sBase = await base.sample(prompt, params);
    assert.notDeepEqual(s1.logprobs, sBase.logprobs, 'the adapter must change the model');

    const load = (body: unknown) =>
      fetch(`${url}/v1/load_lora_adapter`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const bad = await load({ lora_name: 'other', lora_path: join(root, 'nope') });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.param, 'lora_path');
    const missing = await load({ lora_name: 'other' });
    assert.equal(missing.status, 400);
    await same(a1); // a failed load leaves the adapter in place
    const ok = await load({ lora_name: 'second', lora_path: join(root, 'a2') });
    assert.equal(ok.status, 200);
    assert.equal(await ok.text(), "Success: LoRA adapter 'second' added successfully.");
    const client2 = new OpenAIPolicy({ baseUrl: url, model: 'second', tokenizerDir: dir, retries: 0 });
    const got = await client2.sample(prompt, params);
    assert.deepEqual(got.tokens, (await a2.sample(prompt, params)).tokens);
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    assert.equal(code, 0, stderr);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    for (const p of locals) await p.close();
    rmSync(root, { recursive: true, force: true });
  }
});
