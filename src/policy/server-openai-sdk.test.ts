// servePolicy on 127.0.0.1 driven by the official `openai` npm client, as a vLLM user's code would:
// a function-calling loop (scripted policy writing Hermes tool calls through the real test
// tokenizer and its Jinja template), streamed completions and chats assembled by the SDK, stop
// strings, echo with prompt logprobs and top-N alternatives checked against the bigram table
// itself, and the /health, /tokenize and /detokenize routes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { servePolicy, type PolicyServer } from './server.ts';
import { BigramPolicy, ByteTokenizer } from '../testing/openai-testkit.ts';
import { ScriptedPolicy, scriptedLogprob } from '../testing/scripted-policies.ts';
import { OpenAIPolicy } from './openai.ts';
import { createTestTokenizer } from '../model/tokenizer.ts';
import { formatFor, hermesFormat } from '../agents/formats/index.ts';
import type { ChatTokenizer } from '../core/chat.ts';
import type { SamplingPolicy } from '../core/policy.ts';

const servers: PolicyServer[] = [];
const dirs: string[] = [];
after(async () => {
  for (const s of servers) await s.close({ graceMs: 100 });
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function serve(policy: SamplingPolicy, maxModelLen?: number): Promise<{ server: PolicyServer; client: OpenAI }> {
  const toolFormat = formatFor(await policy.tokenizer(), 'native');
  const server = await servePolicy(policy, { port: 0, modelName: 'tiny', apiKey: 'k', maxModelLen, toolFormat });
  servers.push(server);
  return { server, client: new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'k', maxRetries: 0 }) };
}

async function testTokenizer(): Promise<ChatTokenizer> {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-sdk-'));
  dirs.push(dir);
  return createTestTokenizer(dir);
}

const weatherTool: OpenAI.ChatCompletionTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current temperature of a city.',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};
const callText = `Let me check.\n${hermesFormat.callText('get_weather', { city: 'Paris' })}`;

test('function calling: the model asks for a tool, the client runs it and sends the result back, the model answers', async () => {
  const tok = await testTokenizer();
  const policy = new ScriptedPolicy(tok, { single: [callText, 'It is 18 degrees in Paris.'] });
  const { client } = await serve(policy);
  const messages: OpenAI.ChatCompletionMessageParam[] = [
    { role: 'system', content: 'You answer weather questions.' },
    { role: 'user', content: 'How warm is it in Paris?' },
  ];
  const first = await client.chat.completions.create({ model: 'tiny', messages, tools: [weatherTool] });
  const choice = first.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.content, 'Let me check.');
  assert.equal(choice.message.tool_calls?.length, 1);
  const call = choice.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
  assert.equal(call.type, 'function');
  assert.match(call.id, /^call_[0-9a-f]{24}$/);
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
  // The prompt is the Jinja template's rendering with the tool list.
  const prompt0 = tok.encode(tok.applyChatTemplate([...messages] as never, { tools: [weatherTool as never], addGenerationPrompt: true }));
  assert.deepEqual(policy.calls[0].promptTokens, prompt0);

  // The client runs the tool and sends the assistant message back as it came, plus the result.
  const tools = { get_weather: (args: { city: string }) => (args.city === 'Paris' ? '18' : 'unknown') };
  messages.push(choice.message, { role: 'tool', tool_call_id: call.id, content: tools.get_weather(JSON.parse(call.function.arguments)) });
  const second = await client.chat.completions.create({ model: 'tiny', messages, tools: [weatherTool] });
  assert.equal(second.choices[0].finish_reason, 'stop');
  assert.equal(second.choices[0].message.content, 'It is 18 degrees in Paris.');
  assert.equal(second.choices[0].message.tool_calls, undefined);
  // The earlier call is rendered as the model wrote it, and the result as a <tool_response> turn.
  const expected = tok.encode(
    tok.applyChatTemplate(
      [messages[0] as never, messages[1] as never, { role: 'assistant', content: callText }, { role: 'tool', content: '18' }],
      { tools: [weatherTool as never], addGenerationPrompt: true },
    ),
  );
  assert.deepEqual(policy.calls[1].promptTokens, expected);
  assert.ok(
    tok
      .decode(expected)
      .includes(
        '<|im_start|>assistant\nLet me check.\n<tool_call>\n{"name":"get_weather","arguments":{"city":"Paris"}}\n</tool_call><|im_end|>\n' +
          '<|im_start|>user\n<tool_response>\n18\n</tool_response><|im_end|>',
      ),
  );

  // Same loop streamed: the SDK assembles content and tool-call deltas into the same message.
  const stream = client.chat.completions.stream({
    model: 'tiny',
    messages: messages.slice(0, 2),
    tools: [weatherTool],
    stream_options: { include_usage: true },
  });
  const deltas: string[] = [];
  stream.on('content', (d) => deltas.push(d));
  const final = await stream.finalChatCompletion();
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.equal(final.choices[0].message.content, 'Let me check.');
  assert.equal(deltas.join(''), 'Let me check.');
  const streamedCall = final.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
  assert.equal(streamedCall.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(streamedCall.function.arguments), { city: 'Paris' });
  const sampled = tok.encode(callText).length + 1;
  assert.deepEqual(final.usage, { prompt_tokens: prompt0.length, completion_tokens: sampled, total_tokens: prompt0.length + sampled });

  // Without tools in the request the text comes back as plain content.
  const plain = await client.chat.completions.create({ model: 'tiny', messages: messages.slice(0, 2) });
  assert.equal(plain.choices[0].finish_reason, 'stop');
  assert.equal(plain.choices[0].message.tool_calls, undefined);
  assert.match(plain.choices[0].message.content!, /get_weather/);

  // A bad tool call in the history names its field; a policy without scoring refuses top_logprobs by name.
  const bad = client.chat.completions.create({
    model: 'tiny',
    messages: [
      ...messages.slice(0, 2),
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{city' } }],
      },
    ],
  });
  const badParam = 'messages[2].tool_calls[0].function.arguments';
  await assert.rejects(bad, (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === badParam);
  const top = client.chat.completions.create({ model: 'tiny', messages: messages.slice(0, 2), logprobs: true, top_logprobs: 2 });
  await assert.rejects(
    top,
    (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'top_logprobs' && /cannot give top alternatives/.test(e.message),
  );
  const lp = await client.chat.completions.create({ model: 'tiny', messages: messages.slice(0, 2), logprobs: true });
  assert.deepEqual(
    lp.choices[0].logprobs!.content!.map((x) => x.logprob),
    Array.from({ length: sampled }, (_, i) => scriptedLogprob(i)),
  );
});

test('streamed completion: the SDK assembles the same text, token ids and logprobs as the whole reply, usage last', async () => {
  const { client } = await serve(new BigramPolicy());
  const body = { model: 'tiny', prompt: 'the cat', max_tokens: 40, seed: 11, logprobs: 0, return_token_ids: true } as const;
  const whole = await client.completions.create(body);
  const stream = await client.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
  let text = '';
  const ids: number[] = [];
  const lps: number[] = [];
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      ids.push(...((c as unknown as { token_ids?: number[] }).token_ids ?? []));
      lps.push(...((c.logprobs?.token_logprobs ?? []) as number[]));
      finish = c.finish_reason ?? finish;
    }
  }
  const w = whole.choices[0] as OpenAI.CompletionChoice & { token_ids: number[] };
  assert.ok(chunks > 3, `only ${chunks} chunks`);
  assert.equal(text, w.text);
  assert.deepEqual(ids, w.token_ids);
  assert.deepEqual(lps, w.logprobs!.token_logprobs);
  assert.equal(finish, w.finish_reason);
  assert.deepEqual(usage, whole.usage);
  const direct = await new BigramPolicy().sample(new ByteTokenizer().encode('the cat'), { maxNewTokens: 40, seed: 11 });
  assert.deepEqual(w.token_ids, direct.tokens);

  // n = 2 and a batch of two prompts: chunks interleave by index; each index assembles to its whole choice.
  const many = { model: 'tiny', prompt: ['the cat', 'a dog'], n: 2, max_tokens: 20, seed: 3 };
  const wholeMany = await client.completions.create(many);
  const texts = ['', '', '', ''];
  for await (const chunk of await client.completions.create({ ...many, stream: true }))
    for (const c of chunk.choices) texts[c.index] += c.text;
  assert.deepEqual(
    texts,
    wholeMany.choices.map((c) => c.text),
  );
  assert.notEqual(texts[0], texts[1]);
});

test('stop strings: text ends before the stop string (finish stop), token ids and logprobs stay exact for training', async () => {
  const tok = new ByteTokenizer();
  const { server, client } = await serve(new BigramPolicy());
  const prompt = tok.encode('once upon');
  // A seed whose first 12 sampled tokens are plain bytes, and a stop string from the middle of what
  // it samples anyway (the same draws up to the match).
  let seed = 0;
  let free = await new BigramPolicy().sample(prompt, { maxNewTokens: 60, seed, stopTokenIds: [] });
  while (free.tokens.slice(0, 12).some((t) => t >= 256)) {
    free = await new BigramPolicy().sample(prompt, { maxNewTokens: 60, seed: ++seed, stopTokenIds: [] });
  }
  const freeText = tok.decode(free.tokens);
  const stop = freeText.slice(8, 10);
  const cut = freeText.indexOf(stop);
  assert.ok(cut >= 0 && stop.length === 2, JSON.stringify(freeText));
  const direct = await new BigramPolicy().sample(prompt, { maxNewTokens: 60, seed, stopStrings: [stop], stopTokenIds: [] });
  assert.equal(direct.finishReason, 'stop_string');
  const body: OpenAI.CompletionCreateParamsNonStreaming = { model: 'tiny', prompt, max_tokens: 60, seed, stop, logprobs: 0 };
  Object.assign(body, { ignore_eos: true, return_token_ids: true });
  const r = (await client.completions.create(body)).choices[0] as OpenAI.CompletionChoice & { token_ids: number[]; stop_reason: unknown };
  assert.equal(r.text, freeText.slice(0, cut));
  assert.equal(r.finish_reason, 'stop');
  assert.equal(r.stop_reason, stop);
  assert.deepEqual(r.token_ids, direct.tokens);
  assert.ok(tok.decode(r.token_ids).endsWith(stop));
  assert.deepEqual(r.logprobs!.token_logprobs, direct.logprobs);
  const kept = (await client.completions.create(Object.assign({ ...body }, { include_stop_str_in_output: true }))).choices[0];
  assert.equal(kept.text, freeText.slice(0, cut + stop.length));
  // Streamed: the held-back stop string never shows.
  let streamed = '';
  for await (const c of await client.completions.create({ ...body, stream: true })) streamed += c.choices[0]?.text ?? '';
  assert.equal(streamed, freeText.slice(0, cut));
  // The project's own client stays token-exact through the cut.
  const viaPolicy = await new OpenAIPolicy({ baseUrl: server.url, model: 'tiny', apiKey: 'k', tokenizer: tok, retries: 0 }).sample(prompt, {
    maxNewTokens: 60,
    seed,
    stopStrings: [stop],
    stopTokenIds: [],
  });
  assert.deepEqual(viaPolicy, direct);
});

test('echo with max_tokens 0 scores the prompt; logprobs: N and top_logprobs give the true top-N of the distribution', async () => {
  const tok = new ByteTokenizer();
  const table = new BigramPolicy();
  const { client } = await serve(new BigramPolicy());
  const prompt = 'hello world';
  const ids = tok.encode(prompt);
  const top = (prev: number, k: number) => {
    const row = table.logprobRow(prev);
    return Array.from(row.keys())
      .sort((a, b) => row[b] - row[a] || a - b)
      .slice(0, k)
      .map((id) => ({ id, logprob: row[id] }));
  };
  const scored = (await client.completions.create({ model: 'tiny', prompt, max_tokens: 0, echo: true, logprobs: 2 })).choices[0];
  assert.equal(scored.text, prompt);
  assert.equal(scored.finish_reason, 'length');
  const lp = scored.logprobs!;
  assert.deepEqual(lp.tokens, [...prompt]);
  assert.equal(lp.token_logprobs![0], null);
  assert.equal(lp.top_logprobs![0], null);
  assert.deepEqual(
    lp.text_offset,
    [...prompt].map((_, i) => i),
  );
  for (let t = 1; t < ids.length; t++) {
    assert.equal(lp.token_logprobs![t], table.logprobRow(ids[t - 1])[ids[t]]);
    const expected: Record<string, number> = {};
    for (const x of top(ids[t - 1], 2)) expected[String.fromCharCode(x.id)] = x.logprob;
    expected[prompt[t]] ??= table.logprobRow(ids[t - 1])[ids[t]];
    assert.deepEqual(lp.top_logprobs![t], expected, `position ${t}`);
  }
  // Sum of the prompt's logprobs: the loglikelihood a scoring client computes.
  const ll = (lp.token_logprobs!.slice(1) as number[]).reduce((a, b) => a + b, 0);
  const reference = ids.slice(1).reduce((a, id, t) => a + table.logprobRow(ids[t])[id], 0);
  assert.ok(Math.abs(ll - reference) < 1e-12);

  // Echo and sampling together: the prompt's entries then the sampled ones.
  const both = (await client.completions.create({ model: 'tiny', prompt, max_tokens: 5, echo: true, logprobs: 1, seed: 2 })).choices[0];
  assert.ok(both.text.startsWith(prompt));
  assert.equal(both.logprobs!.tokens!.length, ids.length + 5);

  const chat = await client.chat.completions.create({
    model: 'tiny',
    messages: [{ role: 'user', content: 'hi' }],
    max_tokens: 8,
    seed: 4,
    logprobs: true,
    top_logprobs: 3,
  });
  const content = chat.choices[0].logprobs!.content!;
  const chatPrompt = tok.encode(tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }));
  const sampled = [chatPrompt[chatPrompt.length - 1], ...content.map((x) => tok.encode(x.token)[0] ?? tok.tokenToId(x.token)!)];
  content.forEach((entry, t) => {
    assert.equal(entry.logprob, table.logprobRow(sampled[t])[sampled[t + 1]]);
    assert.deepEqual(
      entry.top_logprobs.map((x) => x.logprob),
      top(sampled[t], 3).map((x) => x.logprob),
    );
    assert.ok(entry.top_logprobs[0].logprob >= entry.logprob);
  });
});

test('/health, /tokenize (prompt or messages) and /detokenize in vLLM shapes', async () => {
  const tok = await testTokenizer();
  const { server } = await serve(new BigramPolicy({ tokenizer: tok }), 4096);
  const health = await fetch(`${server.url}/health`);
  assert.equal(health.status, 200);
  assert.equal(await health.text(), '');
  const post = async (path: string, body: unknown, key = 'k') =>
    fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const t = await (await post('/tokenize', { model: 'tiny', prompt: 'Find the year.', add_special_tokens: true })).json();
  assert.deepEqual(t, { tokens: tok.encode('Find the year.'), count: tok.encode('Find the year.').length, max_model_len: 4096 });
  const messages = [{ role: 'user', content: 'Find the year.' }];
  const m = await (await post('/tokenize', { messages, tools: [weatherTool] })).json();
  const rendered = tok.applyChatTemplate(messages as never, { tools: [weatherTool as never], addGenerationPrompt: true });
  assert.deepEqual(m.tokens, tok.encode(rendered));
  const d = await (await post('/detokenize', { tokens: m.tokens })).json();
  assert.deepEqual(d, { prompt: rendered });
  const bad = await post('/detokenize', { tokens: [1, 2, 99999] });
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).error.param, 'tokens[2]');
  const noPrompt = await (await post('/tokenize', {})).json();
  assert.equal(noPrompt.error.param, 'prompt');
  assert.equal((await post('/tokenize', { prompt: 'x' }, 'wrong')).status, 401);
});
