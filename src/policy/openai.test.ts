// OpenAIPolicy against real HTTP servers on 127.0.0.1: our own `servePolicy` in front of a seeded
// bigram test policy (token-exact round trip, chat fallback, auth), flaky front servers (5xx and
// hangs, to check retries), and hand-written vLLM- and SGLang-shaped responses (to check parsing).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { OpenAIPolicy, assertTokenExact, listModels, parseTokenIdStrings } from './openai.ts';
import { servePolicy, type PolicyServer } from './server.ts';
import { BigramPolicy, ByteTokenizer } from '../testing/openai-testkit.ts';
import { ConfigError, EndpointError, InvalidArgumentError } from '../core/errors.ts';
import type { SampleParams } from '../core/policy.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestTokenizer } from '../model/tokenizer.ts';

const tok = new ByteTokenizer();
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function serve(policy = new BigramPolicy(), apiKey?: string): Promise<PolicyServer> {
  const server = await servePolicy(policy, { port: 0, modelName: 'tiny', apiKey });
  cleanups.push(() => server.close({ graceMs: 100 }));
  return server;
}

/** A raw server on 127.0.0.1 whose handler decides per request (by its 1-based count). */
async function rawServer(
  handler: (count: number, req: http.IncomingMessage, body: string, res: http.ServerResponse) => void,
): Promise<{ url: string; count: () => number }> {
  let count = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => handler(++count, req, body, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, count: () => count };
}

/** Forward a request to `target` and copy the answer back. */
async function forward(target: string, req: http.IncomingMessage, body: string, res: http.ServerResponse): Promise<void> {
  const r = await fetch(`${target}${req.url}`, {
    method: req.method,
    headers: { 'content-type': 'application/json', ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) },
    body: req.method === 'POST' ? body : undefined,
  });
  res.writeHead(r.status, { 'content-type': 'application/json' });
  res.end(await r.text());
}

const prompt = tok.encode(tok.applyChatTemplate([{ role: 'user', content: 'name a bridge' }], { addGenerationPrompt: true }));

test('token-exact round trip: ids and logprobs through HTTP equal the policy sampled directly', async () => {
  const direct = new BigramPolicy();
  const server = await serve(new BigramPolicy());
  const client = new OpenAIPolicy({ baseUrl: `${server.url}/v1/`, model: 'tiny', tokenizer: tok, backoffMs: 5 });
  assert.equal(client.tokenExact, true);
  assert.doesNotThrow(() => assertTokenExact(client));
  const cases: SampleParams[] = [
    { maxNewTokens: 40, seed: 1 },
    { maxNewTokens: 40, seed: 2, temperature: 0.7, topK: 20, topP: 0.9 },
    { maxNewTokens: 30, temperature: 0 },
    { maxNewTokens: 60, seed: 6, stopStrings: ['e', ' '] },
    { maxNewTokens: 60, seed: 7, stopTokenIds: [32] }, // stop at the first space (or an end token)
    { maxNewTokens: 3, seed: 5 },
  ];
  const reasons = new Set<string>();
  for (const params of cases) {
    const viaHttp = await client.sample(prompt, params);
    // Servers always stop at EOS too (vLLM, SGLang and ours alike): the union is the stop set.
    const stopTokenIds = params.stopTokenIds ? [...new Set([...params.stopTokenIds, ...tok.stopTokenIds])] : undefined;
    const local = await direct.sample(prompt, { ...params, stopTokenIds });
    assert.deepEqual(viaHttp, local, JSON.stringify(params));
    reasons.add(viaHttp.finishReason);
    // Independent check of the logprobs: the bigram table's temperature-1 log-softmax entries.
    let prev = prompt[prompt.length - 1];
    viaHttp.tokens.forEach((t, i) => {
      assert.equal(viaHttp.logprobs[i], direct.logprobRow(prev)[t]);
      prev = t;
    });
  }
  assert.deepEqual([...reasons].sort(), ['length', 'stop_string', 'stop_token']);
  const spaceStop = await client.sample(prompt, cases[4]);
  assert.equal(spaceStop.tokens.at(-1), 32);
  assert.equal(
    spaceStop.tokens.slice(0, -1).some((t) => t === 32 || t === 257 || t === 258),
    false,
  );
});

test('what is sent: token-id prompt, sampling fields and the vLLM and SGLang id switches', async () => {
  let sent: any;
  const server = await serve();
  const spy = await rawServer((_n, req, body, res) => {
    sent = JSON.parse(body);
    void forward(server.url, req, body, res);
  });
  const client = new OpenAIPolicy({ baseUrl: spy.url, model: 'tiny', tokenizer: tok });
  await client.sample([1, 2, 3], { maxNewTokens: 5, temperature: 0.5, topP: 0.8, topK: 7, seed: 11, stopStrings: ['x'] });
  assert.deepEqual(sent, {
    model: 'tiny',
    max_tokens: 5,
    temperature: 0.5,
    n: 1,
    stream: false,
    top_p: 0.8,
    top_k: 7,
    seed: 11,
    stop: ['x'],
    prompt: [1, 2, 3],
    logprobs: 1,
    stop_token_ids: [257, 258],
    return_tokens_as_token_ids: true,
    return_token_ids: true,
    skip_special_tokens: false,
    include_stop_str_in_output: true,
    no_stop_trim: true,
  });
});

test('parses vLLM-shaped (token_id strings, stop_reason) and SGLang-shaped (token_ids, matched_stop) responses', async () => {
  const vllm = await rawServer((_n, _req, _body, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        choices: [
          {
            index: 0,
            text: 'hi',
            finish_reason: 'stop',
            stop_reason: 257,
            logprobs: {
              tokens: ['token_id:104', 'token_id:105', 'token_id:257'],
              token_logprobs: [-0.5, -1.25, -0.125],
              top_logprobs: [{}, {}, {}],
              text_offset: [0, 1, 2],
            },
          },
        ],
      }),
    );
  });
  const v = await new OpenAIPolicy({ baseUrl: vllm.url, model: 'm', tokenizer: tok }).sample([1], { maxNewTokens: 8 });
  assert.deepEqual(v, { tokens: [104, 105, 257], logprobs: [-0.5, -1.25, -0.125], finishReason: 'stop_token' });

  const sglang = await rawServer((_n, _req, _body, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        choices: [
          {
            index: 0,
            text: 'ab',
            finish_reason: 'stop',
            matched_stop: 'b',
            token_ids: [97, 98],
            logprobs: { tokens: ['a', 'b'], token_logprobs: [-0.25, -2] },
          },
        ],
      }),
    );
  });
  const s = await new OpenAIPolicy({ baseUrl: sglang.url, model: 'm', tokenizer: tok }).sample([1], {
    maxNewTokens: 8,
    stopStrings: ['b'],
  });
  assert.deepEqual(s, { tokens: [97, 98], logprobs: [-0.25, -2], finishReason: 'stop_string' });

  const trimmed = await rawServer((_n, _req, _body, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        choices: [{ finish_reason: 'stop', stop_reason: 257, logprobs: { tokens: ['token_id:104'], token_logprobs: [-0.5] } }],
      }),
    );
  });
  await assert.rejects(
    new OpenAIPolicy({ baseUrl: trimmed.url, model: 'm', tokenizer: tok }).sample([1], { maxNewTokens: 8 }),
    /reports stop token 257 but did not return it/,
  );

  const noIds = await rawServer((_n, _req, _body, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ choices: [{ finish_reason: 'length', logprobs: { tokens: ['h', 'i'], token_logprobs: [-1, -1] } }] }));
  });
  await assert.rejects(
    new OpenAIPolicy({ baseUrl: noIds.url, model: 'm', tokenizer: tok }).sample([1], { maxNewTokens: 2 }),
    /did not return sampled token ids.*use mode 'chat'/,
  );
  assert.deepEqual(parseTokenIdStrings(['token_id:0', 'token_id:42']), [0, 42]);
  assert.equal(parseTokenIdStrings(['token_id:1', 'x']), null);
});

test('chat fallback: conversation sent as messages, reply re-tokenized, flagged not token-exact and refused for training', async () => {
  const server = await serve();
  const client = new OpenAIPolicy({ baseUrl: server.url, model: 'tiny', tokenizer: tok, mode: 'chat' });
  assert.equal(client.tokenExact, false);
  assert.throws(
    () => assertTokenExact(client),
    (e: unknown) => e instanceof ConfigError && /not token-exact/.test(e.message),
  );
  const messages = [{ role: 'user' as const, content: 'name a bridge' }];
  const r = await client.sample([], { maxNewTokens: 200, seed: 9, hint: { role: 'single', messages } });
  // The server rendered the same template, so here the text matches the direct sample.
  const local = await new BigramPolicy().sample(prompt, { maxNewTokens: 200, seed: 9 });
  assert.equal(tok.decode(r.tokens), tok.decode(local.tokens));
  assert.equal(local.finishReason, 'stop_token');
  assert.equal(r.finishReason, 'stop_token');
  assert.equal(r.tokens.at(-1), 257); // the turn end is appended locally: not necessarily the token sampled
  assert.deepEqual(r.logprobs.length, r.tokens.length);
  await assert.rejects(
    client.sample([1, 2], { maxNewTokens: 5 }),
    (e: unknown) => e instanceof InvalidArgumentError && /hint\.messages/.test(e.message),
  );
});

test('5xx is retried with backoff until the server answers; too many failures give an EndpointError', async () => {
  const server = await serve();
  const flaky = await rawServer((n, req, body, res) => {
    if (n <= 2) {
      res.writeHead(503, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ error: { message: 'warming up', type: 'server_error' } }));
    }
    void forward(server.url, req, body, res);
  });
  const client = new OpenAIPolicy({ baseUrl: flaky.url, model: 'tiny', tokenizer: tok, retries: 3, backoffMs: 10 });
  const r = await client.sample(prompt, { maxNewTokens: 10, seed: 1 });
  assert.deepEqual(r, await new BigramPolicy().sample(prompt, { maxNewTokens: 10, seed: 1 }));
  assert.equal(flaky.count(), 3);
  assert.equal(client.requestsSent, 3);

  const down = await rawServer((_n, _req, _body, res) => {
    res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { message: 'CUDA out of memory' } }));
  });
  const give = new OpenAIPolicy({ baseUrl: down.url, model: 'tiny', tokenizer: tok, retries: 2, backoffMs: 5 });
  await assert.rejects(
    give.sample(prompt, { maxNewTokens: 5 }),
    (e: unknown) => e instanceof EndpointError && e.status === 500 && /CUDA out of memory \(after 3 attempts\)/.test(e.message),
  );
  assert.equal(down.count(), 3);
});

test('a request that times out is retried; connection refused is retried then reported', async () => {
  const server = await serve();
  const hangs = await rawServer((n, req, body, res) => {
    if (n === 1) return; // never answers
    void forward(server.url, req, body, res);
  });
  const client = new OpenAIPolicy({ baseUrl: hangs.url, model: 'tiny', tokenizer: tok, timeoutMs: 200, retries: 2, backoffMs: 5 });
  const r = await client.sample(prompt, { maxNewTokens: 10, seed: 2 });
  assert.equal(r.tokens.length > 0, true);
  assert.equal(hangs.count(), 2);

  const closed = await rawServer(() => {});
  const port = new URL(closed.url).port;
  await cleanups.pop()!(); // close it: nothing listens on that port any more
  const refused = new OpenAIPolicy({ baseUrl: `http://127.0.0.1:${port}`, model: 'tiny', tokenizer: tok, retries: 2, backoffMs: 5 });
  await assert.rejects(refused.sample(prompt, { maxNewTokens: 5 }), /connection failed: ECONNREFUSED \(after 3 attempts\)/);
  assert.equal(refused.requestsSent, 3);
});

test('4xx fails at once with the server message: 401 without the API key, 400 for a bad token id', async () => {
  const server = await serve(new BigramPolicy(), 'sekret');
  const counter = await rawServer((_n, req, body, res) => void forward(server.url, req, body, res));
  const noKey = new OpenAIPolicy({ baseUrl: counter.url, model: 'tiny', tokenizer: tok, retries: 3, backoffMs: 5 });
  await assert.rejects(
    noKey.sample(prompt, { maxNewTokens: 5 }),
    (e: unknown) => e instanceof EndpointError && e.status === 401 && /invalid API key/.test(e.message),
  );
  assert.equal(counter.count(), 1);

  const withKey = new OpenAIPolicy({ baseUrl: counter.url, model: 'tiny', tokenizer: tok, apiKey: 'sekret', retries: 3, backoffMs: 5 });
  assert.equal((await withKey.sample(prompt, { maxNewTokens: 5, seed: 1 })).tokens.length > 0, true);
  assert.equal(counter.count(), 2);
  await assert.rejects(
    withKey.sample([1, 999, 2], { maxNewTokens: 5 }),
    (e: unknown) => e instanceof EndpointError && e.status === 400 && /prompt\[1\]: token id 999 is outside the vocabulary/.test(e.message),
  );
  assert.equal(counter.count(), 3);
  assert.deepEqual(await listModels(`${server.url}/v1`, { apiKey: 'sekret' }), ['tiny']);
  await assert.rejects(listModels(server.url), /HTTP 401: missing or invalid API key/);
  const wrongModel = new OpenAIPolicy({ baseUrl: counter.url, model: 'other', tokenizer: tok, apiKey: 'sekret', retries: 3 });
  await assert.rejects(wrongModel.sample(prompt, { maxNewTokens: 5 }), /HTTP 404: The model `other` does not exist/);
  assert.equal(counter.count(), 4);
});

test('an aborted sample stops at once; bad options are config errors', async () => {
  const server = await serve(new BigramPolicy({ delayMs: 2000 }));
  const client = new OpenAIPolicy({ baseUrl: server.url, model: 'tiny', tokenizer: tok });
  const ac = new AbortController();
  const t0 = performance.now();
  setTimeout(() => ac.abort(new Error('rollout cancelled')), 50);
  await assert.rejects(client.sample(prompt, { maxNewTokens: 5, signal: ac.signal }), /rollout cancelled/);
  assert.ok(performance.now() - t0 < 1500);
  const closing = client.sample(prompt, { maxNewTokens: 5 });
  setTimeout(() => void client.close(), 50);
  await assert.rejects(closing, /the policy was closed/);
  await assert.rejects(client.sample(prompt, { maxNewTokens: 5 }), /the policy was closed/);
  assert.throws(() => new OpenAIPolicy({ baseUrl: 'nope', model: 'm' }), /policy\.baseUrl: not a valid URL/);
  await assert.rejects(new OpenAIPolicy({ baseUrl: server.url, model: 'm', mode: 'chat' }).tokenizer(), /tokenizerDir/);
  await assert.rejects(client.sample(prompt, { maxNewTokens: 0 }), /maxNewTokens: must be a positive integer/);
});

test('tokenizerDir: the tokenizer of the model directory gives the stop ids sent to the server', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-openai-'));
  try {
    const reference = await createTestTokenizer(dir);
    let sent: any;
    const spy = await rawServer((_n, _req, body, res) => {
      sent = JSON.parse(body);
      res.writeHead(200, { 'content-type': 'application/json' });
      const stop = reference.stopTokenIds[0];
      res.end(
        JSON.stringify({
          choices: [
            {
              finish_reason: 'stop',
              stop_reason: stop,
              token_ids: [5, stop],
              logprobs: { tokens: ['a', 'b'], token_logprobs: [-1, -0.5] },
            },
          ],
        }),
      );
    });
    const client = new OpenAIPolicy({ baseUrl: spy.url, model: 'm', tokenizerDir: dir });
    const t = await client.tokenizer();
    assert.deepEqual(t.stopTokenIds, reference.stopTokenIds);
    const r = await client.sample(reference.encode('hello'), { maxNewTokens: 4 });
    assert.deepEqual(sent.prompt, reference.encode('hello'));
    assert.deepEqual(sent.stop_token_ids, [...reference.stopTokenIds]);
    assert.deepEqual(r, { tokens: [5, reference.stopTokenIds[0]], logprobs: [-1, -0.5], finishReason: 'stop_token' });
    await assert.rejects(new OpenAIPolicy({ baseUrl: spy.url, model: 'm', tokenizerDir: join(dir, 'missing') }).tokenizer(), /missing/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
