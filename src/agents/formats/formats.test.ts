import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestTokenizer } from '../../model/tokenizer.ts';
import { UnknownNameError } from '../../core/errors.ts';
import { formatFor, hermesFormat, hermesInPromptFormat, mcpFormat, nativeFormat, stripReasoningAndCalls, toolCallFormat } from './index.ts';
import { parseLenientJson } from './lenient-json.ts';

test('lenient JSON: exact, missing braces, trailing text, trailing commas, open strings, hopeless', () => {
  assert.deepEqual(parseLenientJson('{"a": 1}'), { ok: true, value: { a: 1 }, repaired: false });
  assert.deepEqual(parseLenientJson('{"a": {"b": [1, 2'), { ok: true, value: { a: { b: [1, 2] } }, repaired: true });
  assert.deepEqual(parseLenientJson('{"name": "x", "arguments": {"q": "y"}} and then I said more {'), {
    ok: true,
    value: { name: 'x', arguments: { q: 'y' } },
    repaired: true,
  });
  assert.deepEqual(parseLenientJson('{"a": [1, 2,], }'), { ok: true, value: { a: [1, 2] }, repaired: true });
  assert.deepEqual(parseLenientJson('{"q": "cut in the mid'), { ok: true, value: { q: 'cut in the mid' }, repaired: true });
  assert.deepEqual(parseLenientJson('{"q": "brace } in string"'), { ok: true, value: { q: 'brace } in string' }, repaired: true });
  assert.equal(parseLenientJson('no json here').ok, false);
  assert.equal(parseLenientJson('{"a": ]').ok, false);
  assert.equal(parseLenientJson('{"a" 1}').ok, false);
});

test('hermes: several calls, unclosed last call, broken JSON, missing name, string arguments', () => {
  const text = [
    'Let me look.',
    '<tool_call>\n{"name": "search", "arguments": {"query": "a"}}\n</tool_call>',
    '<tool_call>{"name": "open", "arguments": "{\\"id\\": \\"d1\\"}"}</tool_call>',
    '<tool_call>{"arguments": {}}</tool_call>',
    '<tool_call>not json</tool_call>',
    'trailing words',
    '<tool_call>{"name": "search", "arguments": {"query": "b"',
  ].join('\n');
  const calls = hermesFormat.parse(text);
  assert.equal(calls.length, 5);
  assert.deepEqual(calls[0], {
    name: 'search',
    arguments: { query: 'a' },
    raw: '<tool_call>\n{"name": "search", "arguments": {"query": "a"}}\n</tool_call>',
    repaired: undefined,
  });
  assert.deepEqual(calls[1].arguments, { id: 'd1' });
  assert.equal(calls[1].error, undefined);
  assert.match(calls[2].error!, /needs a "name"/);
  assert.match(calls[3].error!, /not valid JSON/);
  assert.deepEqual(calls[4].arguments, { query: 'b' });
  assert.equal(calls[4].repaired, true);
  assert.equal(calls[4].raw, '<tool_call>{"name": "search", "arguments": {"query": "b"');
  assert.deepEqual(hermesFormat.parse('no calls at all'), []);
  // callText round-trips
  assert.deepEqual(hermesFormat.parse(hermesFormat.callText('x', { a: [1] }))[0].arguments, { a: [1] });
});

test('mcp: blocks with server/tool/arguments, missing closers, wrong server, missing tool name; system section lists tools', () => {
  const f = mcpFormat('tools');
  const ok = f.callText('search', { query: 'who' });
  assert.equal(
    ok,
    '<use_mcp_tool>\n<server_name>tools</server_name>\n<tool_name>search</tool_name>\n' +
      '<arguments>\n{"query":"who"}\n</arguments>\n</use_mcp_tool>',
  );
  const text =
    `${ok}\n<use_mcp_tool><server_name>other</server_name><tool_name>open</tool_name>` +
    '<arguments>{"id": "d"}</arguments></use_mcp_tool>\n' +
    '<use_mcp_tool><arguments>{}</arguments></use_mcp_tool>\n' +
    '<use_mcp_tool><server_name>tools</server_name><tool_name>open</tool_name><arguments>{"id": "d2"';
  const calls = f.parse(text);
  assert.equal(calls.length, 4);
  assert.deepEqual(calls[0], { name: 'search', arguments: { query: 'who' }, raw: ok, repaired: undefined });
  assert.match(calls[1].error!, /unknown server "other"/);
  assert.match(calls[2].error!, /no <tool_name>/);
  assert.deepEqual(calls[3].arguments, { id: 'd2' });
  assert.equal(calls[3].repaired, true);
  const section = f.systemSection([
    { type: 'function', function: { name: 'search', description: 'Search.', parameters: { type: 'object' } } },
  ]);
  assert.ok(section.includes('## Server name: tools') && section.includes('### Tool name: search') && section.includes('<use_mcp_tool>'));
  assert.equal(f.systemSection([]), '');
  assert.equal(f.templateTools, false);
});

test('format lookup and the native default', async () => {
  assert.equal(toolCallFormat('hermes'), hermesFormat);
  assert.equal(toolCallFormat('mcp').name, 'mcp');
  assert.throws(() => toolCallFormat('xml'), UnknownNameError);
  const dir = mkdtempSync(join(tmpdir(), 'matpo-fmt-'));
  assert.equal(nativeFormat(await createTestTokenizer(dir)).name, 'hermes');
  const plain = await createTestTokenizer(mkdtempSync(join(tmpdir(), 'matpo-fmt-')), {
    chatTemplate: '{% for m in messages %}{{ m.content }}{% endfor %}',
  });
  assert.equal(nativeFormat(plain).name, 'mcp');
  // Hermes with a template that cannot list tools: the list goes into the system prompt.
  assert.equal(formatFor(plain, 'hermes'), hermesInPromptFormat);
  assert.equal(formatFor(await createTestTokenizer(mkdtempSync(join(tmpdir(), 'matpo-fmt-'))), 'hermes'), hermesFormat);
  const section = hermesInPromptFormat.systemSection([
    { type: 'function', function: { name: 'search', description: 'Search.', parameters: { type: 'object' } } },
  ]);
  assert.ok(section.includes('<tools>\n{"type":"function","function":{"name":"search"') && section.includes('<tool_call>'));
  assert.equal(hermesInPromptFormat.parse(hermesInPromptFormat.callText('s', { q: 1 }))[0].arguments?.q, 1);
});

test('stripReasoningAndCalls removes think blocks and call blocks of both formats', () => {
  assert.equal(stripReasoningAndCalls('<think>hmm</think>\nConclusion: X.'), 'Conclusion: X.');
  assert.equal(stripReasoningAndCalls('reasoning without an opening tag</think>Answer'), 'Answer');
  assert.equal(
    stripReasoningAndCalls('A <tool_call>{"name": "s"}</tool_call> B <use_mcp_tool><tool_name>s</tool_name></use_mcp_tool>\n\n\n\nC'),
    'A  B \n\nC',
  );
  assert.equal(stripReasoningAndCalls('Report <tool_call>{"name": "s", "argu'), 'Report');
});
