import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import {
  CHAT_TEMPLATE,
  SPECIAL_TOKENS,
  createChatTokenizer,
  loadChatTokenizer,
  saveTokenizer,
  trainWorldTokenizer,
} from './tokenizer-train.ts';
import { generateWorld } from './world/world.ts';
import { Rng } from '../util/rng.ts';

test('hand-computed merges on a tiny corpus', () => {
  // Pre-tokens: "ab" ×1, " ab" ×2, " cd" ×1. Pairs: (a,b)=3, (Ġ,a)=2, (Ġ,c)=1, (c,d)=1 → merge "a b";
  // then (Ġ,ab)=2 → merge "Ġ ab"; everything else is below min frequency 2.
  const t = trainWorldTokenizer(['ab ab ab cd'], { vocabSize: 1000 });
  const model = t.tokenizerJson.model as { merges: string[]; vocab: Record<string, number> };
  assert.deepEqual(model.merges, ['a b', 'Ġ ab']);
  assert.equal(model.vocab['ab'], 256);
  assert.equal(model.vocab['Ġab'], 257);
  const tok = createChatTokenizer(t.tokenizerJson, t.tokenizerConfig);
  assert.deepEqual(
    tok.encode(' ab ab').map((i) => tok.idToToken(i)),
    ['Ġab', 'Ġab'],
  );
  assert.deepEqual(
    tok.encode('abc').map((i) => tok.idToToken(i)),
    ['ab', 'c'],
  );
  assert.equal(t.vocabSize, 258 + SPECIAL_TOKENS.length);
});

test('world tokenizer: deterministic, vocab size respected, any text round-trips', () => {
  const w = generateWorld({ seed: 2, entities: 120, questions: 100 });
  const texts = [...w.documents.map((d) => d.text), ...w.questions.map((q) => q.question)];
  const a = trainWorldTokenizer(texts, { vocabSize: 600 });
  const b = trainWorldTokenizer(texts, { vocabSize: 600 });
  assert.deepEqual(a.tokenizerJson, b.tokenizerJson);
  assert.equal(a.vocabSize, 600);
  const tok = createChatTokenizer(a.tokenizerJson, a.tokenizerConfig);
  assert.equal(tok.vocabSize, 600);
  // World text compresses well below one token per character.
  const doc = w.documents[0].text;
  assert.ok(tok.encode(doc).length < doc.length / 2.5, `${tok.encode(doc).length} tokens for ${doc.length} chars`);
  const rng = new Rng(5);
  const alphabet = ['a', 'Z', ' ', '\n', '\t', 'é', '日本', '🙂', '{', '"', "'s", '1', '<', '|', 'Ġ', '\u0000', '\r\n'];
  for (let i = 0; i < 200; i++) {
    let s = '';
    for (let j = rng.int(30); j > 0; j--) s += rng.pick(alphabet);
    assert.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
  }
});

test('special tokens are single ids; im_end is eos and stop; skipSpecialTokens drops only the ChatML markers', () => {
  const t = trainWorldTokenizer(['hello world'], { vocabSize: 300 });
  const tok = createChatTokenizer(t.tokenizerJson, t.tokenizerConfig);
  for (const s of SPECIAL_TOKENS) assert.deepEqual(tok.encode(s), [tok.tokenToId(s)]);
  assert.equal(tok.eosTokenId, tok.tokenToId('<|im_end|>'));
  assert.deepEqual(tok.stopTokenIds, [tok.tokenToId('<|im_end|>')]);
  assert.equal(tok.bosTokenId, null);
  const ids = tok.encode('<|im_start|>assistant\n<tool_call>\n{}\n</tool_call><|im_end|>');
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'assistant\n<tool_call>\n{}\n</tool_call>');
});

test('chat template renders with @huggingface/jinja like a Qwen2.5 template', () => {
  const t = trainWorldTokenizer(['x'], { vocabSize: 300 });
  const tok = createChatTokenizer(t.tokenizerJson, t.tokenizerConfig);
  const tools = [
    {
      type: 'function' as const,
      function: { name: 'search', description: 'Search.', parameters: { type: 'object', properties: { query: { type: 'string' } } } },
    },
  ];
  const text = tok.applyChatTemplate(
    [
      { role: 'system', content: 'S' },
      { role: 'user', content: 'Q' },
      { role: 'assistant', content: 'call' },
      { role: 'tool', content: 'R1' },
      { role: 'tool', content: 'R2' },
      { role: 'assistant', content: 'done' },
    ],
    { tools, addGenerationPrompt: true },
  );
  assert.equal(
    text,
    '<|im_start|>system\nS\n\n# Tools\n\nYou may call the functions below. Their signatures are listed inside <tools></tools>:\n<tools>\n' +
      '{"type": "function", "function": {"name": "search", "description": "Search.", ' +
      '"parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}\n</tools>\n\n' +
      'To call a function, write a JSON object with its name and arguments inside <tool_call></tool_call> tags:\n' +
      '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' +
      '<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\ncall<|im_end|>\n' +
      '<|im_start|>user\n<tool_response>\nR1\n</tool_response>\n<tool_response>\nR2\n</tool_response><|im_end|>\n' +
      '<|im_start|>assistant\ndone<|im_end|>\n<|im_start|>assistant\n',
  );
  assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'hi' }]), '<|im_start|>user\nhi<|im_end|>\n');
  assert.equal(
    tok.applyChatTemplate(
      [
        { role: 'system', content: 'S' },
        { role: 'user', content: 'hi' },
      ],
      { addGenerationPrompt: true },
    ),
    '<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n',
  );
  // The raw template also renders directly with jinja (as other HF tooling would use it).
  assert.equal(
    new Template(CHAT_TEMPLATE).render({ messages: [{ role: 'user', content: 'hi' }], add_generation_prompt: true }),
    '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n',
  );
});

test('save and load a tokenizer directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tok-'));
  try {
    const t = trainWorldTokenizer(['The capital of Velmia is Kelda.'], { vocabSize: 300 });
    saveTokenizer(t, dir);
    const tok = loadChatTokenizer(dir);
    const s = 'The capital of Velmia is Port Kelda.';
    assert.deepEqual(tok.encode(s), createChatTokenizer(t.tokenizerJson, t.tokenizerConfig).encode(s));
    assert.throws(() => loadChatTokenizer(join(dir, 'missing')), /tokenizer\.json/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a world tokenizer covers the conversation around the documents and loads with the model tokenizer loader', async () => {
  const { trainTokenizerForWorld } = await import('./world-tokenizer.ts');
  const { toolCallText } = await import('./expert.ts');
  const { loadTokenizer } = await import('../model/tokenizer.ts');
  const w = generateWorld({ seed: 4, entities: 100, questions: 60 });
  const { trained, tokenizer, tokensPerDocument } = trainTokenizerForWorld(w, 1200);
  assert.ok(tokensPerDocument.mean > 10 && tokensPerDocument.mean < 80, `${tokensPerDocument.mean}`);
  const call = toolCallText('search', { query: w.entities[0].name });
  assert.ok(tokenizer.encode(call).length <= 20, `${tokenizer.encode(call).length} tokens for ${call}`);
  const dir = mkdtempSync(join(tmpdir(), 'tok-'));
  try {
    saveTokenizer(trained, dir);
    const other = await loadTokenizer(dir);
    const messages = [
      { role: 'system' as const, content: 'S' },
      { role: 'user' as const, content: w.questions[0].question },
      { role: 'assistant' as const, content: call },
      { role: 'tool' as const, content: w.documents[0].text },
    ];
    const text = tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
    assert.equal(other.applyChatTemplate(messages, { addGenerationPrompt: true }), text);
    assert.deepEqual(other.encode(text), tokenizer.encode(text));
    assert.deepEqual(other.stopTokenIds, tokenizer.stopTokenIds);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
