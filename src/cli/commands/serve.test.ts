// `matpo serve`: bad flags and directories are one-line errors (one run as a real process, to see
// the exit code and the printed line; the rest call the command in-process); and a real server
// process over a random-weight model directory, sampled token-exactly through OpenAIPolicy and
// driven by the official openai client (streaming, echo scoring, top logprobs against the training forward).
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
import OpenAI from 'openai';

const BIN = fileURLToPath(new URL('../../../bin/matpo.js', import.meta.url));

test('serve: missing or bad flags and directories fail with one line naming the problem', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-serve-'));
  try {
    const r = spawnSync(process.execPath, [BIN, 'serve', '--port', '8000'], { encoding: 'utf8', timeout: 60_000 });
    assert.deepEqual(
      { code: r.status, stderr: r.stderr.trim(), stdout: r.stdout.trim() },
      { code: 1, stderr: 'matpo serve: --model: is required', stdout: '' },
    );
    const fails = async (args: string[], message: string | RegExp) =>
      assert.rejects(
        command.run(args),
        (e: unknown) => e instanceof MatpoError && (typeof message === 'string' ? e.message === message : message.test(e.message)),
      );
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
  const child = spawn(process.execPath, [BIN, 'serve', '--model', dir, '--port', '0', '--threads', '1', '--api-key', 'k'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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
    const prompt = tok.encode(
      tok.applyChatTemplate([{ role: 'user', content: 'In which year was it founded?' }], { addGenerationPrompt: true }),
    );
    for (const params of [
      { maxNewTokens: 12, seed: 3 },
      { maxNewTokens: 12, temperature: 0 },
      { maxNewTokens: 12, seed: 5, topK: 10, topP: 0.9 },
    ]) {
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

    // The official client against the real model: streamed and whole replies agree, echo scores the
    // prompt as the training forward does, top alternatives are the model's own.
    const sdk = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'k', maxRetries: 0 });
    const question = [{ role: 'user' as const, content: 'In which year was it founded?' }];
    const chatBody = { model: basename(dir), messages: question, max_tokens: 12, seed: 7 };
    const whole = await sdk.chat.completions.create(chatBody);
    const streamed = await sdk.chat.completions.stream({ ...chatBody, stream_options: { include_usage: true } }).finalChatCompletion();
    assert.equal(streamed.choices[0].message.content, whole.choices[0].message.content);
    assert.equal(streamed.choices[0].finish_reason, whole.choices[0].finish_reason);
    assert.deepEqual(streamed.usage, whole.usage);
    const text = 'The archive was founded in 1984.';
    const scoring = { model: basename(dir), prompt: text, max_tokens: 0, echo: true, logprobs: 3 };
    const scored = (await sdk.completions.create(scoring)).choices[0];
    const ids = tok.encode(text);
    const [reference] = (await local.forward([{ tokens: ids }])).logprobs;
    assert.equal(scored.text, text);
    assert.equal(scored.logprobs!.token_logprobs![0], null);
    for (let t = 1; t < ids.length; t++) {
      assert.ok(Math.abs(scored.logprobs!.token_logprobs![t]! - reference[t]) < 1e-4, `prompt logprob ${t}`);
      // (a JSON object: keys such as "1" come first whatever the order sent, so sort the values)
      const top = Object.values(scored.logprobs!.top_logprobs![t]!).sort((a, b) => b - a);
      assert.ok(top.length >= 3 && top[0] >= top[1] && top[1] >= top[2] && top[0] >= reference[t] - 1e-4, `top at ${t}`);
    }
    // The likeliest alternative at a position, checked through the training forward with that token in place.
    const withTop = { ...chatBody, max_tokens: 4, logprobs: true, top_logprobs: 2, return_token_ids: true };
    const chat = await sdk.chat.completions.create(withTop as never);
    const chatChoice = (chat as OpenAI.ChatCompletion).choices[0] as OpenAI.ChatCompletion.Choice & { token_ids: number[] };
    const chatPrompt = tok.encode(tok.applyChatTemplate(chatBody.messages, { addGenerationPrompt: true }));
    let checked = 0;
    for (const [t, entry] of chatChoice.logprobs!.content!.entries()) {
      const best = tok.encode(entry.top_logprobs[0].token);
      if (best.length !== 1) continue;
      checked++;
      const seq = [...chatPrompt, ...chatChoice.token_ids.slice(0, t), best[0]];
      const [lp] = (await local.forward([{ tokens: seq }])).logprobs;
      assert.ok(Math.abs(lp[seq.length - 1] - entry.top_logprobs[0].logprob) < 1e-4, `top-1 at ${t}`);
      assert.ok(entry.top_logprobs[0].logprob >= entry.logprob - 1e-4);
    }
    assert.ok(checked > 0, 'no top-1 alternative re-encodes to one token');
    // Greedy: the sampled token heads its top list, with exactly the logprob the sampler gave it.
    const greedy = await sdk.chat.completions.create({ ...chatBody, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2 });
    for (const entry of greedy.choices[0].logprobs!.content!) {
      assert.equal(entry.top_logprobs[0].token, entry.token);
      assert.equal(entry.top_logprobs[0].logprob, entry.logprob);
    }
    assert.equal((await fetch(`${url}/health`)).status, 200);
    const tokenizeRequest = { method: 'POST', headers: { authorization: 'Bearer k' }, body: JSON.stringify({ prompt: text }) };
    const tokenized = await (await fetch(`${url}/tokenize`, tokenizeRequest)).json();
    assert.deepEqual(tokenized, { tokens: ids, count: ids.length, max_model_len: cfg.maxPositionEmbeddings });
    // Prompts longer than the context fail naming the request's field, for sampling and for scoring.
    const tooLong = Array.from({ length: cfg.maxPositionEmbeddings + 1 }, (_, i) => ids[i % ids.length]);
    for (const body of [{ max_tokens: 2 }, { max_tokens: 0, echo: true, logprobs: 2 }]) {
      const failed = sdk.completions.create({ model: basename(dir), prompt: tooLong, ...body });
      await assert.rejects(
        failed,
        (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'prompt' && /prompt: .*context limit 1024/.test(e.message),
        JSON.stringify(body),
      );
    }
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    assert.equal(code, 0, stderr);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await local.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
