// `matpo serve`: bad flags and directories are one-line errors (one run as a real process, to see
// the exit code and the printed line; the rest call the command in-process); and a real server
// process over a random-weight model directory, sampled token-exactly through OpenAIPolicy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { presetConfig } from '../../model/config.ts';
import { buildLayout, initParams } from '../../model/params.ts';
import { saveModelDir } from '../../model/checkpoint.ts';
import { createTestTokenizer } from '../../model/tokenizer.ts';
import { EmbeddedPolicy } from '../../policy/embedded.ts';
import { OpenAIPolicy, assertTokenExact } from '../../policy/openai.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { command } from './serve.ts';
import { MatpoError } from '../../core/errors.ts';

const BIN = fileURLToPath(new URL('../../../bin/matpo.js', import.meta.url));

test('serve: missing or bad flags and directories fail with one line naming the problem', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-serve-'));
  try {
    const r = spawnSync(process.execPath, [BIN, 'serve', '--port', '8000'], { encoding: 'utf8', timeout: 60_000 });
    assert.deepEqual({ code: r.status, stderr: r.stderr.trim(), stdout: r.stdout.trim() }, { code: 1, stderr: 'matpo serve: --model: is required', stdout: '' });
    const fails = async (args: string[], message: string | RegExp) =>
      assert.rejects(command.run(args), (e: unknown) => e instanceof MatpoError && (typeof message === 'string' ? e.message === message : message.test(e.message)));
    await fails(['--model', dir], '--port: is required');
    await fails(['--model', dir, '--port', 'eighty'], '--port: expected an integer, got "eighty"');
    await fails(['--model', dir, '--port', '70000'], '--port: expected 0..65535, got 70000');
    await fails(['--model', join(dir, 'nope'), '--port', '0'], `${join(dir, 'nope')}: model directory not found`);
    await fails(['--model', dir, '--port', '0'], `${join(dir, 'config.json')}: file not found (not a model directory)`);
    await fails(['--model', dir, '--port', '0', '--bogus'], /--bogus/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve: a model directory served on 127.0.0.1; OpenAIPolicy samples from it token-exactly; SIGTERM stops it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-serve-model-'));
  const tok = await createTestTokenizer(dir);
  const cfg = presetConfig('micro', { vocabSize: tok.vocabSize });
  const layout = buildLayout(cfg);
  const weights = new Float32Array(layout.total);
  initParams(weights, layout, { ...cfg, initializerRange: 0.3 }, 7);
  saveModelDir(dir, { config: cfg, layout, weights });
  const child = spawn(process.execPath, [BIN, 'serve', '--model', dir, '--port', '0', '--threads', '1', '--api-key', 'k'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const local = await EmbeddedPolicy.load(dir, { threads: 1 });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        const m = /at (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(out);
        if (m) resolve(m[1]);
      });
      child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
    });
    const client = new OpenAIPolicy({ baseUrl: url, model: basename(dir), apiKey: 'k', tokenizerDir: dir, retries: 0 });
    assertTokenExact(client);
    const prompt = tok.encode(tok.applyChatTemplate([{ role: 'user', content: 'In which year was it founded?' }], { addGenerationPrompt: true }));
    for (const params of [{ maxNewTokens: 12, seed: 3 }, { maxNewTokens: 12, temperature: 0 }, { maxNewTokens: 12, seed: 5, topK: 10, topP: 0.9 }]) {
      const viaHttp = await client.sample(prompt, params);
      const direct = await local.sample(prompt, params);
      assert.deepEqual(viaHttp.tokens, direct.tokens, JSON.stringify(params));
      assert.equal(viaHttp.finishReason, direct.finishReason);
      viaHttp.logprobs.forEach((x, i) => assert.ok(Math.abs(x - direct.logprobs[i]) < 1e-5, `logprob ${i}: ${x} vs ${direct.logprobs[i]}`));
    }
    // Concurrent requests are batched by the embedded engine; each still equals its own sequential sample.
    const seeds = [21, 22, 23];
    const together = await Promise.all(seeds.map((seed) => client.sample(prompt, { maxNewTokens: 10, seed })));
    for (const [i, seed] of seeds.entries()) {
      const alone = await local.sample(prompt, { maxNewTokens: 10, seed });
      assert.deepEqual(together[i].tokens, alone.tokens, `seed ${seed}`);
      together[i].logprobs.forEach((x, t) => assert.ok(Math.abs(x - alone.logprobs[t]) < 1e-4, `seed ${seed} logprob ${t}`));
    }
    const models = await (await fetch(`${url}/v1/models`, { headers: { authorization: 'Bearer k' } })).json();
    assert.equal(models.data[0].id, basename(dir));
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    assert.equal(code, 0, stderr);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await local.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
