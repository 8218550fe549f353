// Tool calls between OpenAI messages and the model's own formats: Hermes and MCP replies parsed into
// tool_calls, history tool_calls written back as the model writes them (or handed to a Jinja
// template that renders message.tool_calls itself), tools described in the system prompt for
// templates that cannot list them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatFor, hermesFormat, mcpFormat } from '../agents/formats/index.ts';
import { compileChatTemplate } from '../model/chat-template.ts';
import { ByteTokenizer } from '../testing/openai-testkit.ts';
import { callOpenTag, parseReply, renderMessages, templateRendersToolCalls } from './server-tools.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';

const tool = { type: 'function' as const, function: { name: 'lookup', description: 'Look a key up.', parameters: { type: 'object' } } };

/** ByteTokenizer with another chat template (compiled by the real Jinja engine). */
function withTemplate(source: string): ChatTokenizer {
  const base = new ByteTokenizer();
  const render = compileChatTemplate(source);
  return Object.assign(Object.create(base) as ByteTokenizer, {
    applyChatTemplate: (messages: readonly ChatMessage[], options?: { tools?: readonly ToolSpec[]; addGenerationPrompt?: boolean }) =>
      render(messages, options),
  });
}

test('Hermes replies: calls become tool_calls with JSON-string arguments; a malformed block leaves plain content', () => {
  const text = `I will look.\n${hermesFormat.callText('lookup', { key: 'a' })}\n${hermesFormat.callText('lookup', { key: 'b', n: 2 })}\n`;
  const r = parseReply(hermesFormat, text);
  assert.equal(r.content, 'I will look.');
  assert.deepEqual(
    r.toolCalls.map((c) => [c.type, c.function.name, JSON.parse(c.function.arguments)]),
    [
      ['function', 'lookup', { key: 'a' }],
      ['function', 'lookup', { key: 'b', n: 2 }],
    ],
  );
  assert.notEqual(r.toolCalls[0].id, r.toolCalls[1].id);
  assert.deepEqual(parseReply(hermesFormat, hermesFormat.callText('lookup', {})).content, null);
  const broken = 'Look: <tool_call>{"arguments": {}}</tool_call>';
  assert.deepEqual(parseReply(hermesFormat, broken), { content: broken, toolCalls: [] });
  assert.deepEqual(parseReply(hermesFormat, '  just text \n'), { content: 'just text', toolCalls: [] });
});

test('MCP format (template without a tool list): tools go into the system prompt, calls are MCP XML both ways', () => {
  const tok = withTemplate("{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}");
  const format = formatFor(tok, 'native');
  const nativeToolCalls = templateRendersToolCalls(tok);
  assert.equal(format.name, 'mcp');
  assert.equal(nativeToolCalls, false);
  assert.equal(callOpenTag(format), '<use_mcp_tool>');
  assert.equal(callOpenTag(hermesFormat), '<tool_call>');
  const r = renderMessages(
    tok,
    format,
    nativeToolCalls,
    [
      { role: 'system', content: 'Be exact.' },
      { role: 'user', content: 'Find a.' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'c1', type: 'function', function: { name: 'lookup', arguments: '{"key":"a"}' } }],
      },
      { role: 'tool', tool_call_id: 'c1', content: '42' },
    ],
    [tool],
  );
  assert.equal(r.templateTools, undefined);
  assert.equal(r.messages[0].content, `Be exact.\n\n${mcpFormat().systemSection([tool])}`);
  assert.equal(r.messages[2].content, mcpFormat().callText('lookup', { key: 'a' }));
  assert.deepEqual(r.messages[3], { role: 'tool', content: '42', tool_call_id: 'c1' });
  const reply = parseReply(format, `Checking.\n${mcpFormat().callText('lookup', { key: 'b' })}`);
  assert.equal(reply.content, 'Checking.');
  assert.deepEqual(JSON.parse(reply.toolCalls[0].function.arguments), { key: 'b' });
  // No system message: one is added for the tool section.
  const bare = renderMessages(tok, format, false, [{ role: 'user', content: 'x' }], [tool]);
  assert.deepEqual(bare.messages[0], { role: 'system', content: mcpFormat().systemSection([tool]) });
});

test('a template that renders message.tool_calls gets them as a field, arguments parsed to an object', () => {
  const source = [
    '{%- for m in messages %}{{ m.role }}:{{ m.content }}',
    '{%- if m.tool_calls %}{%- for c in m.tool_calls %}',
    '[call {{ c.function.name }} {{ c.function.arguments | tojson }}]',
    '{%- endfor %}{%- endif %}',
    '{%- if tools %}{%- for t in tools %}<{{ t.function.name }}>{%- endfor %}{%- endif %}',
    '\n{%- endfor %}',
  ].join('');
  const tok = withTemplate(source);
  assert.equal(templateRendersToolCalls(tok), true);
  assert.equal(templateRendersToolCalls(new ByteTokenizer()), false);
  const format = formatFor(tok, 'native');
  const nativeToolCalls = templateRendersToolCalls(tok);
  assert.equal(format.name, 'hermes');
  const r = renderMessages(
    tok,
    format,
    nativeToolCalls,
    [
      { role: 'user', content: 'x' },
      {
        role: 'assistant',
        content: '',
        tool_calls: [{ id: 'c9', type: 'function', function: { name: 'lookup', arguments: '{"key": "a"}' } }],
      },
    ],
    [tool],
  );
  const text = tok.applyChatTemplate(r.messages, { tools: r.templateTools });
  assert.match(text, /assistant:\[call lookup \{"key": ?"a"\}\]/);
  assert.deepEqual(r.messages[1].tool_calls, [{ id: 'c9', type: 'function', function: { name: 'lookup', arguments: { key: 'a' } } }]);
  assert.throws(
    () => renderMessages(tok, format, true, [{ role: 'user', content: 'x', tool_calls: [{ function: { name: 'lookup' } }] }], undefined),
    /messages\[0\]\.tool_calls: only assistant messages carry tool calls/,
  );
});
