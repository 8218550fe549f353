// servePolicy on 127.0.0.1 in front of the seeded bigram test policy, spoken to with plain fetch
// as any OpenAI-compatible client would.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { servePolicy, type PolicyServer } from './server.ts';
import { BigramPolicy, ByteTokenizer } from '../testing/openai-testkit.ts';
import type { SamplingPolicy, SampleParams, SampleResult } from '../core/policy.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestTokenizer } from '../model/tokenizer.ts';
import { OpenAIPolicy } from './openai.ts';
import { InvalidArgumentError } from '../core/errors.ts';

const tok = new ByteTokenizer();
const servers: PolicyServer[] = [];
after(async () => {
  for (const s of servers) await s.close({ graceMs: 100 });
});

async function serve(policy: SamplingPolicy = new BigramPolicy(), apiKey?: string): Promise<PolicyServer> {
  const s = await servePolicy(policy, { port: 0, modelName: 'tiny', apiKey });
  servers.push(s);
  return s;
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: r.status, json: await r.json() };
}

/** Records the prompts and params the server passes to the policy. */
class RecordingPolicy extends BigramPolicy {
  seen: { prompt: number[]; params: SampleParams }[] = [];
  override async sample(prompt: readonly number[], params: SampleParams): Promise<SampleResult> {
    this.seen.push({ prompt: [...prompt], params });
    return super.sample(prompt, params);
  }
}

test('/v1/models, routing errors and request validation in OpenAI error shape', async () => {
  const s = await serve();
  assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const models = await (await fetch(`${s.url}/v1/models`)).json();
  assert.equal(models.object, 'list');
  assert.deepEqual(
    models.data.map((m: any) => m.id),
    ['tiny'],
  );

  const nf = await fetch(`${s.url}/v1/embeddings`, { method: 'POST', body: '{}' });
  assert.equal(nf.status, 404);
  assert.match((await nf.json()).error.message, /no route POST \/v1\/embeddings/);
  assert.equal((await fetch(`${s.url}/v1/completions`)).status, 405);

  const badJson = await post(`${s.url}/v1/completions`, '{not json');
  assert.equal(badJson.status, 400);
  assert.deepEqual(Object.keys(badJson.json.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(badJson.json.error.type, 'invalid_request_error');

  const badField = await post(`${s.url}/v1/completions`, { prompt: [1, 2], max_tokens: 'ten' });
  assert.equal(badField.status, 400);
  assert.equal(badField.json.error.param, 'max_tokens');
  assert.match(badField.json.error.message, /^max_tokens: /);

  const noPrompt = await post(`${s.url}/v1/completions`, { max_tokens: 3 });
  assert.equal(noPrompt.json.error.param, 'prompt');
  assert.equal(noPrompt.json.error.message, 'prompt: is required');
  const empty = await post(`${s.url}/v1/completions`, { prompt: [], max_tokens: 3 });
  assert.match(empty.json.error.message, /prompt: the prompt is empty/);
  const oov = await post(`${s.url}/v1/completions`, { prompt: [5, 259], max_tokens: 3 });
  assert.match(oov.json.error.message, /prompt\[1\]: token id 259 is outside the vocabulary \(size 259\)/);
  const zero = await post(`${s.url}/v1/completions`, { prompt: [5], max_tokens: 0 });
  assert.equal(zero.status, 400);
  assert.equal(zero.json.error.param, 'max_tokens');
  const threeMessages = [
    { role: 'user', content: 'a' },
    { role: 'user', content: 'b' },
    { role: 'user', content: 7 },
  ];
  const badMessage = await post(`${s.url}/v1/chat/completions`, { messages: threeMessages });
  assert.equal(badMessage.json.error.param, 'messages[2].content');
  assert.match(badMessage.json.error.message, /^messages\[2\]\.content: /);
  assert.equal((await post(`${s.url}/v1/completions`, { model: 'default', prompt: [5], max_tokens: 2 })).status, 200);
  const model = await post(`${s.url}/v1/completions`, { model: 'gpt-x', prompt: [5] });
  assert.equal(model.status, 404);
  assert.equal(model.json.error.code, 'model_not_found');
});

test('completions: text prompt, token ids as "token_id:N", vLLM stop_reason, n and batches, usage', async () => {
  const policy = new RecordingPolicy();
  const s = await serve(policy);
  const text = await post(`${s.url}/v1/completions`, { model: 'tiny', prompt: 'hello', max_tokens: 12, seed: 3, logprobs: 1 });
  assert.equal(text.status, 200);
  assert.deepEqual(policy.seen[0].prompt, tok.encode('hello'));
  assert.deepEqual(policy.seen[0].params.stopTokenIds, [257, 258]);
  const direct = await new BigramPolicy().sample(tok.encode('hello'), { maxNewTokens: 12, seed: 3 });
  const c = text.json.choices[0];
  assert.deepEqual(c.logprobs.token_logprobs, direct.logprobs);
  assert.deepEqual(
    c.logprobs.tokens,
    direct.tokens.map((t) => tok.decode([t])),
  );
  assert.equal(c.text, tok.decode(direct.finishReason === 'stop_token' ? direct.tokens.slice(0, -1) : direct.tokens));
  assert.equal(c.finish_reason, direct.finishReason === 'length' ? 'length' : 'stop');
  assert.deepEqual(text.json.usage, { prompt_tokens: 5, completion_tokens: direct.tokens.length, total_tokens: 5 + direct.tokens.length });

  const ids = await post(`${s.url}/v1/completions`, {
    prompt: [104, 105],
    max_tokens: 50,
    seed: 8,
    logprobs: 0,
    return_tokens_as_token_ids: true,
    return_token_ids: true,
    stop_token_ids: [32],
    ignore_eos: true,
  });
  const ci = ids.json.choices[0];
  assert.deepEqual(policy.seen[1].params.stopTokenIds, [32]);
  assert.deepEqual(
    ci.logprobs.tokens,
    ci.token_ids.map((t: number) => `token_id:${t}`),
  );
  assert.deepEqual(ci.prompt_token_ids, [104, 105]);
  if (ci.finish_reason === 'stop') assert.equal(ci.stop_reason, 32);

  const many = await post(`${s.url}/v1/completions`, {
    prompt: [[104], [105, 106]],
    n: 3,
    max_tokens: 6,
    seed: 100,
    return_token_ids: true,
  });
  assert.deepEqual(
    many.json.choices.map((x: any) => x.index),
    [0, 1, 2, 3, 4, 5],
  );
  for (let k = 0; k < 6; k++) {
    const p = k < 3 ? [104] : [105, 106];
    const expected = await new BigramPolicy().sample(p, { maxNewTokens: 6, seed: 100 + (k % 3) });
    assert.deepEqual(many.json.choices[k].token_ids, expected.tokens);
  }
  assert.equal(many.json.choices[0].logprobs, null);
  assert.equal(many.json.usage.prompt_tokens, 3 * 3);
});

test('chat completions apply the chat template with tools, drop the stop token from content, give logprobs', async () => {
  const policy = new RecordingPolicy();
  const s = await serve(policy);
  const messages = [
    { role: 'system', content: 'be brief' },
    {
      role: 'user',
      content: [
        { type: 'text', text: 'hi ' },
        { type: 'text', text: 'there' },
      ],
    },
  ];
  const tools = [{ type: 'function', function: { name: 'lookup', description: 'd', parameters: { type: 'object' } } }];
  const r = await post(`${s.url}/v1/chat/completions`, { model: 'tiny', messages, tools, max_tokens: 200, seed: 9, logprobs: true });
  assert.equal(r.status, 200);
  assert.equal(r.json.object, 'chat.completion');
  const expectedPrompt = tok.encode(
    tok.applyChatTemplate(
      [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hi there' },
      ],
      { addGenerationPrompt: true, tools: tools as any },
    ),
  );
  assert.deepEqual(policy.seen[0].prompt, expectedPrompt);
  assert.match(tok.decode(expectedPrompt), /Tools: lookup/);
  const direct = await new BigramPolicy().sample(expectedPrompt, { maxNewTokens: 200, seed: 9 });
  assert.equal(direct.finishReason, 'stop_token');
  const choice = r.json.choices[0];
  assert.equal(choice.message.role, 'assistant');
  assert.equal(choice.message.content, tok.decode(direct.tokens.slice(0, -1), { skipSpecialTokens: true }));
  assert.equal(choice.finish_reason, 'stop');
  assert.deepEqual(
    choice.logprobs.content.map((x: any) => x.logprob),
    direct.logprobs,
  );
  const bad = await post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'robot', content: 'x' }] });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.param, 'messages[0].role');
});

test('limits: max_tokens above the server limit and oversized bodies are refused', async () => {
  const s = await servePolicy(new BigramPolicy(), { port: 0, modelName: 'tiny', maxTokensLimit: 8, maxBodyBytes: 1000 });
  servers.push(s);
  const over = await post(`${s.url}/v1/completions`, { prompt: [1], max_tokens: 9 });
  assert.equal(over.status, 400);
  assert.match(over.json.error.message, /max_tokens: at most 8/);
  assert.equal((await post(`${s.url}/v1/completions`, { prompt: [1], max_tokens: 8 })).status, 200);
  const big = await post(`${s.url}/v1/completions`, { prompt: new Array(600).fill(1) });
  assert.equal(big.status, 413);
  assert.match(big.json.error.message, /larger than 1000 bytes/);
});

test('API key: 401 without or with a wrong key, 200 with it', async () => {
  const s = await serve(new BigramPolicy(), 'k1');
  const none = await post(`${s.url}/v1/completions`, { prompt: [1], max_tokens: 2 });
  assert.equal(none.status, 401);
  assert.equal(none.json.error.type, 'authentication_error');
  assert.equal((await post(`${s.url}/v1/completions`, { prompt: [1], max_tokens: 2 }, { authorization: 'Bearer k2' })).status, 401);
  assert.equal((await fetch(`${s.url}/v1/models`)).status, 401);
  assert.equal((await post(`${s.url}/v1/completions`, { prompt: [1], max_tokens: 2 }, { authorization: 'Bearer k1' })).status, 200);
});

test('concurrent requests reach the policy concurrently; a disconnected client aborts its sampling', async () => {
  const policy = new BigramPolicy({ delayMs: 300 });
  const s = await serve(policy);
  const t0 = performance.now();
  const rs = await Promise.all(
    Array.from({ length: 4 }, (_, i) => post(`${s.url}/v1/completions`, { prompt: [97 + i], max_tokens: 4, seed: i })),
  );
  const ms = performance.now() - t0;
  assert.ok(rs.every((r) => r.status === 200));
  assert.equal(policy.maxConcurrent, 4);
  assert.ok(ms < 4 * 300, `4 requests took ${ms.toFixed(0)} ms; they ran one after another`);

  let aborted = false;
  const watcher: SamplingPolicy = {
    ...policy,
    name: 'watcher',
    tokenExact: true,
    tokenizer: () => policy.tokenizer(),
    close: async () => {},
    sample: (p, params) =>
      new Promise((_resolve, reject) => {
        params.signal?.addEventListener('abort', () => {
          aborted = true;
          reject(params.signal!.reason);
        });
      }),
  };
  const s2 = await serve(watcher);
  const ac = new AbortController();
  const pending = fetch(`${s2.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: [1] }), signal: ac.signal });
  setTimeout(() => ac.abort(), 100);
  await assert.rejects(pending);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(aborted, true);
});

test('close is graceful: a request in flight completes, new connections are refused', async () => {
  const s = await servePolicy(new BigramPolicy({ delayMs: 300 }), { port: 0, modelName: 'tiny' });
  const inflight = post(`${s.url}/v1/completions`, { prompt: [97], max_tokens: 3, seed: 1 });
  await new Promise((r) => setTimeout(r, 100));
  const closed = s.close();
  const r = await inflight;
  assert.equal(r.status, 200);
  assert.equal(r.json.choices.length, 1);
  await closed;
  await assert.rejects(fetch(`${s.url}/v1/models`));
  await assert.rejects(servePolicy(new BigramPolicy(), { port: Number(new URL(servers[0].url).port), modelName: 'x' }), /EADDRINUSE/);
});

test('with the real model-directory tokenizer: Jinja chat template with tools, and a token-exact client round trip', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-serve-tok-'));
  try {
    const tokenizer = await createTestTokenizer(dir);
    const policy = new RecordingPolicy({ tokenizer });
    const s = await serve(policy);
    const messages = [
      { role: 'system', content: 'You are a worker.' },
      { role: 'user', content: 'Find the year.' },
    ];
    const tools = [
      {
        type: 'function',
        function: {
          name: 'search',
          description: 'Search the documents.',
          parameters: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] },
        },
      },
    ];
    const r = await post(`${s.url}/v1/chat/completions`, { messages, tools, max_tokens: 30, seed: 4 });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const expected = tokenizer.encode(tokenizer.applyChatTemplate(messages as any, { tools: tools as any, addGenerationPrompt: true }));
    assert.deepEqual(policy.seen[0].prompt, expected);
    assert.match(tokenizer.decode(expected), /Search the documents\./);

    const client = new OpenAIPolicy({ baseUrl: s.url, model: 'tiny', tokenizerDir: dir });
    const params = { maxNewTokens: 40, seed: 12, temperature: 0.9 };
    const viaHttp = await client.sample(expected, params);
    const local = await new BigramPolicy({ tokenizer }).sample(expected, params);
    assert.deepEqual(viaHttp, local);
    assert.deepEqual(policy.seen[1].params.stopTokenIds, [...tokenizer.stopTokenIds]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('errors raised below the server name the request field: promptTokens → prompt / messages, maxNewTokens → max_tokens', async () => {
  const base = new BigramPolicy();
  const failing = (argument: string): SamplingPolicy => ({
    name: 'failing',
    tokenExact: true,
    tokenizer: () => base.tokenizer(),
    close: async () => {},
    sample: async () => {
      throw new InvalidArgumentError(argument, 'too long for the model (context limit 256)');
    },
  });
  const s = await serve(failing('promptTokens'));
  const c = await post(`${s.url}/v1/completions`, { prompt: [1, 2], max_tokens: 3 });
  assert.equal(c.status, 400);
  assert.deepEqual([c.json.error.param, c.json.error.message], ['prompt', 'prompt: too long for the model (context limit 256)']);
  const ch = await post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'x' }] });
  assert.deepEqual([ch.json.error.param, ch.json.error.message], ['messages', 'messages: too long for the model (context limit 256)']);
  const m = await post(`${(await serve(failing('maxNewTokens'))).url}/v1/completions`, { prompt: [1], max_tokens: 3 });
  assert.equal(m.json.error.param, 'max_tokens');
  assert.doesNotMatch(JSON.stringify([c.json, ch.json, m.json]), /promptTokens|maxNewTokens/);
});
