import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { FileFormatError } from '../core/errors.ts';
import { CHATML_TOOLS_TEMPLATE } from './chat-template.ts';
import { createFastBpe } from './tokenizer-bpe.ts';
import { TEST_SPECIAL_TOKENS, createTestTokenizer, loadTokenizer, testTokenizerFiles } from './tokenizer.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'matpo-tok-'));

test('test tokenizer: encode/decode round-trips any text, special tokens are single ids', async () => {
  const tok = await createTestTokenizer(tmp());
  const texts = [
    '',
    'Hello world',
    '  two  spaces\n\n\ttab',
    'ünïcödé 😀 中文',
    'a<|im_end|>b<tool_call>{"x": 1}</tool_call>\n',
    '\\boxed{42}',
  ];
  for (const t of texts) assert.equal(tok.decode(tok.encode(t)), t);
  for (const s of TEST_SPECIAL_TOKENS) {
    const ids = tok.encode(s);
    assert.equal(ids.length, 1, s);
    assert.equal(tok.idToToken(ids[0]), s);
    assert.equal(tok.tokenToId(s), ids[0]);
  }
  // merges were learned: common words take fewer tokens than bytes
  assert.ok(tok.encode(' the answer is').length < ' the answer is'.length);
  // skipSpecialTokens drops ChatML markers but keeps tag tokens as text
  assert.equal(
    tok.decode(tok.encode('<|im_start|>user\nhi<tool_call>x</tool_call><|im_end|>'), { skipSpecialTokens: true }),
    'user\nhi<tool_call>x</tool_call>',
  );
  const imEnd = tok.tokenToId('<|im_end|>')!;
  assert.deepEqual(tok.stopTokenIds, [imEnd]);
  assert.equal(tok.eosTokenId, imEnd);
  assert.equal(tok.bosTokenId, null);
  assert.equal(tok.vocabSize, imEnd + 7);
});

test('chat template: ChatML with tools section, tool messages merged into one user turn', async () => {
  const tok = await createTestTokenizer(tmp());
  const plain = tok.applyChatTemplate(
    [
      { role: 'system', content: 'S' },
      { role: 'user', content: 'Q' },
      { role: 'assistant', content: 'A' },
      { role: 'tool', content: 'R1' },
      { role: 'tool', content: 'R2' },
    ],
    { addGenerationPrompt: true },
  );
  assert.equal(
    plain,
    '<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n' +
      '<|im_start|>user\n<tool_response>\nR1\n</tool_response>\n<tool_response>\nR2\n</tool_response><|im_end|>\n<|im_start|>assistant\n',
  );
  const withTools = tok.applyChatTemplate(
    [
      { role: 'system', content: 'S' },
      { role: 'user', content: 'Q' },
    ],
    {
      tools: [{ type: 'function', function: { name: 'f', description: 'd', parameters: { type: 'object' } } }],
    },
  );
  assert.ok(withTools.startsWith('<|im_start|>system\nS\n\n# Tools\n'));
  assert.ok(
    withTools.includes(
      '<tools>\n{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}\n</tools>',
    ),
  );
  assert.ok(withTools.endsWith('</tool_call><|im_end|>\n<|im_start|>user\nQ<|im_end|>\n'));
});

test('loadTokenizer: template from a list of named templates, from chat_template.jinja, eos ids from generation_config.json', async () => {
  const dir = tmp();
  const { tokenizerJson, tokenizerConfig } = testTokenizerFiles({ chatTemplate: null });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({
      ...tokenizerConfig,
      chat_template: [
        { name: 'tool_use', template: 'TOOLS' },
        { name: 'default', template: '{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}{{ eos_token }}' },
      ],
    }),
  );
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [7, 8] }));
  let tok = await loadTokenizer(dir);
  assert.equal(
    tok.applyChatTemplate([
      { role: 'user', content: 'a' },
      { role: 'user', content: 'b' },
    ]),
    '[a][b]<|im_end|>',
  );
  const imEnd = tok.tokenToId('<|im_end|>')!;
  assert.deepEqual(
    [...tok.stopTokenIds].sort((a, b) => a - b),
    [7, 8, imEnd],
  );
  assert.equal(tok.eosTokenId, imEnd);

  writeFileSync(join(dir, 'chat_template.jinja'), '{% for m in messages %}<{{ m.role }}>{% endfor %}');
  tok = await loadTokenizer(dir);
  assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'a' }]), '<user>');
});

test('loadTokenizer: missing files, bad JSON and a missing template give one-line errors naming the file and field', async () => {
  const empty = tmp();
  await assert.rejects(
    loadTokenizer(empty),
    (e: unknown) => e instanceof FileFormatError && e.message === `${join(empty, 'tokenizer.json')}: file not found`,
  );

  const bad = tmp();
  writeFileSync(join(bad, 'tokenizer.json'), '{"model": ');
  await assert.rejects(
    loadTokenizer(bad),
    (e: unknown) => e instanceof FileFormatError && e.message.startsWith(`${join(bad, 'tokenizer.json')}: invalid JSON`),
  );

  const noTemplate = tmp();
  const tok = await createTestTokenizer(noTemplate, { chatTemplate: null });
  assert.equal(tok.decode(tok.encode('still encodes')), 'still encodes');
  assert.throws(
    () => tok.applyChatTemplate([{ role: 'user', content: 'x' }]),
    (e: unknown) =>
      e instanceof FileFormatError &&
      e.message === `${join(noTemplate, 'tokenizer_config.json')}: field "chat_template": the tokenizer has no chat template` &&
      !e.message.includes('\n'),
  );

  const broken = tmp();
  await createTestTokenizer(broken, { chatTemplate: '{% for m in messages %}' });
  const tok2 = await loadTokenizer(broken);
  assert.throws(
    () => tok2.applyChatTemplate([]),
    (e: unknown) => e instanceof FileFormatError && e.field === 'chat_template',
  );
});

test('the exported template is what the test tokenizer writes', async () => {
  const dir = tmp();
  await createTestTokenizer(dir);
  const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
  assert.equal(config.chat_template, CHATML_TOOLS_TEMPLATE);
  mkdirSync(join(dir, 'sub'));
});

test(
  'piece-wise cached encoding equals the library encoding the whole text ' + '(byte-level and Qwen2-style split pre-tokenizers)',
  async () => {
    const qwenSplit = {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: {
            Regex:
              "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" +
              '\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+',
          },
          behavior: 'Isolated',
          invert: false,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    };
    for (const preTokenizer of [null, qwenSplit]) {
      const dir = tmp();
      {
        // The fast byte-level BPE applies to both shapes and agrees with the library on its own.
        const { tokenizerJson, tokenizerConfig } = testTokenizerFiles();
        if (preTokenizer) tokenizerJson.pre_tokenizer = preTokenizer;
        const lib = new Tokenizer(tokenizerJson, tokenizerConfig);
        const fast = createFastBpe(tokenizerJson, lib);
        assert.ok(fast, 'fast path available');
        const alphabet = [
          'a',
          'b',
          'the',
          ' ',
          '  ',
          '\n',
          '\r\n',
          '\t',
          '1',
          '23',
          '456',
          '.',
          ',',
          '!?',
          "'s",
          "'LL",
          'É',
          'é',
          'e\u0301',
          '中',
          '😀',
          'ß',
          '-',
          '_',
          '{',
          '"',
          'x'.repeat(300),
        ];
        let seed = 11;
        const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
        for (let k = 0; k < 400; k++) {
          let text = '';
          for (let j = 1 + rand(30); j > 0; j--) text += alphabet[rand(alphabet.length)];
          assert.deepEqual(fast.encode(text), lib.encode(text, { add_special_tokens: false }).ids, JSON.stringify(text));
        }
      }
      const { tokenizerJson, tokenizerConfig } = testTokenizerFiles();
      if (preTokenizer) tokenizerJson.pre_tokenizer = preTokenizer;
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
      writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
      const tok = await loadTokenizer(dir);
      const reference = new Tokenizer(tokenizerJson, tokenizerConfig);
      const pieces = [
        '<|im_start|>',
        '<|im_end|>',
        '\n',
        ' ',
        'user',
        'The answer',
        ' is 42.',
        '<tool_call>',
        '{"a": [1, 2]}',
        '</tool_call>',
        'ünï',
        '😀',
        '  \t',
        "it's",
        'x',
      ];
      let seed = 7;
      const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
      for (let k = 0; k < 300; k++) {
        let text = '';
        const n = 1 + rand(12);
        for (let j = 0; j < n; j++) text += pieces[rand(pieces.length)];
        // Twice: the second time the pieces come from the cache.
        assert.deepEqual(tok.encode(text), reference.encode(text, { add_special_tokens: false }).ids, JSON.stringify(text));
        assert.deepEqual(tok.encode(text), reference.encode(text, { add_special_tokens: false }).ids, JSON.stringify(text));
      }
    }
  },
);
