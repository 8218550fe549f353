import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestTokenizer } from '../model/tokenizer.ts';
import { CHATML_TOOLS_TEMPLATE } from '../model/chat-template.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';
import { Trajectory, renderConversation } from './renderer.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'matpo-render-'));
const tokP = createTestTokenizer(tmp());

const TOOLS: ToolSpec[] = [
  {
    type: 'function',
    function: { name: 'lookup', description: 'Look up a key.', parameters: { type: 'object', properties: { key: { type: 'string' } } } },
  },
];

function sample(tok: ChatTokenizer, text: string, stop = true) {
  const tokens = tok.encode(text);
  if (stop) tokens.push(tok.tokenToId('<|im_end|>')!);
  return { tokens, logprobs: tokens.map((_, i) => -(i + 1) / 100), finishReason: stop ? ('stop_token' as const) : ('length' as const) };
}

test('trajectory: sampled tokens kept as sampled, prompt deltas from the template, decode equals the full rendering', async () => {
  const tok = await tokP;
  const t = new Trajectory(tok, TOOLS);
  const head: ChatMessage[] = [
    { role: 'system', content: 'You help.' },
    { role: 'user', content: 'What is the value?' },
  ];
  t.start(head);
  const firstPrompt = tok.encode(tok.applyChatTemplate(head, { tools: TOOLS, addGenerationPrompt: true }));
  assert.deepEqual(t.tokens, firstPrompt);

  // A non-canonical tokenization: every byte of "call " as its own token, then the canonical rest.
  const bytes = [...'call '].map((c) => tok.encode(c)[0]);
  const rest = tok.encode('<tool_call>\n{"name": "lookup", "arguments": {"key": "a"}}\n</tool_call>');
  const imEnd = tok.tokenToId('<|im_end|>')!;
  const s1 = [...bytes, ...rest, imEnd];
  assert.notDeepEqual(tok.encode('call '), bytes, 'the byte split must differ from the canonical encoding');
  const turn = t.appendSample({ tokens: s1, logprobs: s1.map((_, i) => -i), finishReason: 'stop_token' });
  assert.equal(turn.sampleStart, firstPrompt.length);
  assert.equal(turn.end, firstPrompt.length + s1.length);
  assert.equal(turn.content, 'call <tool_call>\n{"name": "lookup", "arguments": {"key": "a"}}\n</tool_call>');
  assert.equal(turn.stopText, '<|im_end|>');

  t.appendMessages([{ role: 'tool', name: 'lookup', content: 'a is 42' }]);
  const s2 = sample(tok, 'It is 42.');
  t.appendSample(s2);

  // The sampled tokens are exactly where they were put, with their logprobs and mask 1.
  assert.deepEqual(t.tokens.slice(turn.sampleStart, turn.end), s1);
  assert.deepEqual(
    t.logprobs.slice(turn.sampleStart, turn.end),
    s1.map((_, i) => -i),
  );
  const trainable = t.tokens.filter((_, i) => t.mask[i] === 1);
  assert.deepEqual(trainable, [...s1, ...s2.tokens]);
  assert.ok(t.logprobs.every((lp, i) => (t.mask[i] === 1 ? lp !== 0 || i === turn.sampleStart : lp === 0)));

  // The delta between the turns is exactly the template's text after the sampled <|im_end|>.
  const delta = tok.decode(t.tokens.slice(turn.end, t.tokens.length - s2.tokens.length));
  assert.equal(delta, '\n<|im_start|>user\n<tool_response>\na is 42\n</tool_response><|im_end|>\n<|im_start|>assistant\n');

  // Everything decodes to the full rendering (minus the template's newline after the last turn).
  const full = tok.applyChatTemplate(t.messages, { tools: TOOLS });
  assert.equal(tok.decode(t.tokens) + '\n', full);
});

test('trajectory: a turn cut by the length limit gets the template closing in the next prompt (mask 0)', async () => {
  const tok = await tokP;
  const t = new Trajectory(tok, undefined);
  t.start([{ role: 'user', content: 'Q' }]);
  const s = sample(tok, 'I was cut', false);
  const turn = t.appendSample(s);
  assert.equal(turn.stopText, '');
  t.appendMessages([{ role: 'user', content: 'go on' }]);
  assert.equal(tok.decode(t.tokens.slice(turn.end)), '<|im_end|>\n<|im_start|>user\ngo on<|im_end|>\n<|im_start|>assistant\n');
  assert.ok(t.mask.slice(turn.end).every((m) => m === 0));
});

test('trajectory: messages added in two steps give the same tokens as in one step', async () => {
  const tok = await tokP;
  const build = (steps: ChatMessage[][]) => {
    const t = new Trajectory(tok, TOOLS);
    t.start([
      { role: 'system', content: 'S' },
      { role: 'user', content: 'Q' },
    ]);
    t.appendSample(sample(tok, '<tool_call>{"name": "lookup", "arguments": {}}</tool_call>'));
    for (const s of steps) t.appendMessages(s);
    return t;
  };
  const a = build([[{ role: 'tool', content: 'r1' }], [{ role: 'user', content: 'summarise' }]]);
  const b = build([
    [
      { role: 'tool', content: 'r1' },
      { role: 'user', content: 'summarise' },
    ],
  ]);
  assert.deepEqual(a.tokens, b.tokens);
  assert.deepEqual(a.mask, b.mask);
  assert.equal(tok.decode(a.tokens), tok.applyChatTemplate(a.messages, { tools: TOOLS, addGenerationPrompt: true }));
});

test('trajectory: a template that looks back over the whole history falls back to full renders and stays exact', async () => {
  const tok = await createTestTokenizer(tmp(), {
    chatTemplate:
      "{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}" +
      "{%- if m.role == 'tool' %}{{ '[' + loop.index|string + '] ' }}{%- endif %}" +
      "{{ m.content + '<|im_end|>\\n' }}{%- endfor %}" +
      "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}",
  });
  const t = new Trajectory(tok, undefined);
  t.start([
    { role: 'system', content: 'S' },
    { role: 'user', content: 'Q' },
  ]);
  for (let k = 0; k < 20; k++) {
    t.appendSample(sample(tok, `turn ${k}`));
    t.appendMessages([{ role: 'tool', content: `result ${k}` }]);
  }
  assert.equal(tok.decode(t.tokens), tok.applyChatTemplate(t.messages, { addGenerationPrompt: true }));
  assert.ok(tok.decode(t.tokens).includes('<|im_start|>tool\n[42] result 19<|im_end|>'));
});

test('trajectory: dropMiddle keeps system, first user and the trailing results; dropped turns leave the sequence', async () => {
  const tok = await tokP;
  const t = new Trajectory(tok, undefined);
  t.start([
    { role: 'system', content: 'S' },
    { role: 'user', content: 'Q' },
  ]);
  t.appendSample(sample(tok, 'a'));
  t.appendMessages([{ role: 'tool', content: 'r1' }]);
  t.appendSample(sample(tok, 'b'));
  t.appendMessages([
    { role: 'tool', content: 'r2' },
    { role: 'tool', content: 'r3' },
  ]);
  const dropped = t.dropMiddle();
  assert.equal(dropped, 2);
  assert.deepEqual(
    t.messages.map((m) => m.content),
    ['S', 'Q', 'r2', 'r3'],
  );
  assert.ok(t.mask.every((m) => m === 0));
  assert.equal(tok.decode(t.tokens), tok.applyChatTemplate(t.messages, { addGenerationPrompt: true }));
  // It keeps working after the drop.
  t.appendMessages([{ role: 'user', content: 'final' }]);
  t.appendSample(sample(tok, 'c'));
  assert.equal(tok.decode(t.tokens) + '\n', tok.applyChatTemplate(t.messages));
});

test('renderConversation: mask 1 exactly on assistant content and its <|im_end|>', async () => {
  const tok = await tokP;
  const messages: ChatMessage[] = [
    { role: 'system', content: 'S' },
    { role: 'user', content: 'Q?' },
    { role: 'assistant', content: '<tool_call>\n{"name": "lookup", "arguments": {"key": "k"}}\n</tool_call>' },
    { role: 'tool', content: 'k = 1' },
    { role: 'assistant', content: 'So \\boxed{1}.' },
  ];
  const { tokens, mask } = renderConversation(tok, messages, TOOLS);
  assert.equal(tokens.length, mask.length);
  assert.equal(tok.decode(tokens) + '\n', tok.applyChatTemplate(messages, { tools: TOOLS }));
  // For this tokenizer, encoding the pieces equals encoding the whole text (pieces split at special tokens).
  assert.deepEqual(tokens, tok.encode(tok.applyChatTemplate(messages, { tools: TOOLS }).slice(0, -1)));
  const imEnd = tok.tokenToId('<|im_end|>')!;
  const expected = [...tok.encode(messages[2].content), imEnd, ...tok.encode(messages[4].content), imEnd];
  assert.deepEqual(
    tokens.filter((_, i) => mask[i] === 1),
    expected,
  );
  // The trainable runs are contiguous and end on <|im_end|>.
  const runs: number[][] = [];
  mask.forEach((m, i) => {
    if (m === 1 && (i === 0 || mask[i - 1] === 0)) runs.push([]);
    if (m === 1) runs[runs.length - 1].push(tokens[i]);
  });
  assert.equal(runs.length, 2);
  assert.ok(runs.every((r) => r[r.length - 1] === imEnd));
  assert.throws(() => renderConversation(tok, [{ role: 'user', content: 'x' }]), /at least one assistant/);
});

test('trajectory: many turns past the checks (cached delta skeletons) stay exact; a template that trims contents falls back', async () => {
  const run = (tok: ChatTokenizer, turns: number) => {
    const t = new Trajectory(tok, TOOLS);
    t.start([
      { role: 'system', content: 'S' },
      { role: 'user', content: 'Q' },
    ]);
    for (let k = 0; k < turns; k++) {
      t.appendSample(sample(tok, `<tool_call>{"name": "lookup", "arguments": {"key": "${k}"}}</tool_call>`, k % 5 !== 3));
      const long = (n: number) => `  result ${k}.${n}: ${'lorem ipsum '.repeat(5 + ((k * 7 + n) % 11))}\n`;
      const added: ChatMessage[] =
        k % 4 === 0
          ? [
              { role: 'tool', content: long(0) },
              { role: 'tool', content: 'short' },
              { role: 'tool', content: long(2) },
            ]
          : [{ role: 'tool', content: long(0) }];
      if (k % 6 === 5) added.push({ role: 'user', content: `Please summarise ${'now '.repeat(k)}` });
      t.appendMessages(added);
    }
    assert.equal(tok.decode(t.tokens), tok.applyChatTemplate(t.messages, { tools: TOOLS, addGenerationPrompt: true }));
    return t;
  };
  // Turns that stopped without <|im_end|> get it in the next prompt, so decode equals the rendering.
  run(await createTestTokenizer(tmp()), 40);
  const trimming = CHATML_TOOLS_TEMPLATE.replace(
    "'\\n<tool_response>\\n' + message.content + '\\n</tool_response>'",
    "'\\n<tool_response>\\n' + message.content|trim + '\\n</tool_response>'",
  );
  assert.notEqual(trimming, CHATML_TOOLS_TEMPLATE);
  const t = run(await createTestTokenizer(tmp(), { chatTemplate: trimming }), 40);
  assert.ok(!t.tokenizer.decode(t.tokens).includes('<tool_response>\n  result'), 'the trimming template was used');
});

test(
  'trajectory: a template that strips reasoning from assistant turns (Qwen3-like) ' +
    'keeps the sampled tokens and closes turns from the template',
  async () => {
    const template = CHATML_TOOLS_TEMPLATE.replace(
      "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
      "{%- if message.role == 'assistant' and '</think>' in message.content %}" +
        "{{- '<|im_start|>assistant\\n' + message.content.split('</think>')[-1].lstrip('\\n') + '<|im_end|>\\n' }}" +
        "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}",
    );
    assert.notEqual(template, CHATML_TOOLS_TEMPLATE);
    const tok = await createTestTokenizer(tmp(), { chatTemplate: template });
    assert.equal(
      tok.applyChatTemplate([{ role: 'assistant', content: '<think>hmm</think>\nyes' }]),
      '<|im_start|>assistant\nyes<|im_end|>\n',
    );
    const t = new Trajectory(tok, undefined);
    t.start([{ role: 'user', content: 'Q' }]);
    const s1 = sample(tok, '<think>let me see</think>\n<tool_call>{"name": "lookup", "arguments": {}}</tool_call>');
    const turn = t.appendSample(s1);
    t.appendMessages([{ role: 'tool', content: 'r' }]);
    assert.deepEqual(t.tokens.slice(turn.sampleStart, turn.end), s1.tokens, 'the reasoning the model sampled stays in the sequence');
    assert.equal(
      tok.decode(t.tokens.slice(turn.end)),
      '\n<|im_start|>user\n<tool_response>\nr\n</tool_response><|im_end|>\n<|im_start|>assistant\n',
    );
  },
);
