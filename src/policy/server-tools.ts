/**
 * OpenAI function calling on top of the model's own tool-call format, handed in by the caller of
 * `servePolicy` (`matpo serve` passes `formatFor(tokenizer, 'native')` from agents/formats: Hermes
 * `<tool_call>{json}</tool_call>` for chat templates that list tools, MCP XML otherwise; this layer
 * only needs the `ServedToolFormat` shape). Without a format, tools still reach the template, but
 * replies are not parsed for calls and history `tool_calls` need a template that renders them.
 *
 * Requests → prompt:
 * - `tools` go to the chat template when it lists them; otherwise the format's system section
 *   (tool list + call syntax) is appended to the system message, as the project's agents do.
 * - An assistant message's `tool_calls` are rendered as the model would have written them. A chat
 *   template that renders `message.tool_calls` itself (probed once) gets them as that field, with
 *   `arguments` parsed to an object as Hugging Face templates expect; otherwise each call is written
 *   into the content with the format's `callText`.
 * - `tool` messages keep `tool_call_id` and reach the template as role `tool` (the ChatML template
 *   wraps them in `<tool_response>`). `developer` is a system message.
 *
 * Reply → message: the sampled text is parsed with the same format. When every call block reads
 * cleanly the reply carries `tool_calls` (`call_…` id, type function, name, arguments as a JSON
 * string) and `content` is the text without the blocks, trimmed (null when nothing is left),
 * finish reason `tool_calls`. A block that does not parse leaves the whole (trimmed) text as
 * content with no tool calls, as vLLM's parsers do.
 */
import { randomBytes } from 'node:crypto';
import { badField } from './server-http.ts';
import type { RequestChatMessage, RequestToolCall } from './server-requests.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';

/** A chat message with the OpenAI fields the Jinja template may read. */
export type TemplateMessage = ChatMessage & {
  tool_calls?: { id: string; type: 'function'; function: { name: string; arguments: Record<string, unknown> } }[];
  tool_call_id?: string;
};

/** What the server needs of a tool-call format (agents/formats' `ToolCallFormat` has this shape). */
export interface ServedToolFormat {
  /** Pass tools to the chat template (true) or describe them in the system prompt (false). */
  readonly templateTools: boolean;
  systemSection(tools: readonly ToolSpec[]): string;
  /** Every call block in a sampled text; `error` or null arguments when a block cannot be read. */
  parse(text: string): readonly { name: string; arguments: Record<string, unknown> | null; raw: string; error?: string }[];
  /** A call written as the model writes it. */
  callText(name: string, args: Record<string, unknown>): string;
}

export interface ReplyToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export function toolCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`;
}

/** True when the chat template writes `message.tool_calls` of an assistant message. */
export function templateRendersToolCalls(tokenizer: ChatTokenizer): boolean {
  const probe: TemplateMessage = {
    role: 'assistant',
    content: '',
    tool_calls: [{ id: 'call_probe', type: 'function', function: { name: 'matpo_probe_call', arguments: {} } }],
  };
  try {
    return tokenizer.applyChatTemplate([{ role: 'user', content: 'x' }, probe]).includes('matpo_probe_call');
  } catch {
    return false;
  }
}

function contentText(content: RequestChatMessage['content']): string {
  if (typeof content === 'string') return content;
  return (content ?? []).map((p) => p.text ?? '').join('');
}

function callArguments(call: RequestToolCall, field: string): Record<string, unknown> {
  const a = call.function.arguments;
  if (a === undefined || a === '') return {};
  if (typeof a !== 'string') return a;
  let parsed: unknown;
  try {
    parsed = JSON.parse(a);
  } catch {
    throw badField(`${field}.function.arguments`, 'is not valid JSON');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw badField(`${field}.function.arguments`, 'must be a JSON object');
  }
  return parsed as Record<string, unknown>;
}

export interface ChatRendering {
  messages: TemplateMessage[];
  /** Tools for the template's `tools` argument (undefined when the template cannot list them). */
  templateTools?: ToolSpec[];
  format?: ServedToolFormat;
}

/** The request's messages and tools as the chat template should see them. */
export function renderMessages(
  tokenizer: ChatTokenizer,
  format: ServedToolFormat | undefined,
  nativeToolCalls: boolean,
  requestMessages: readonly RequestChatMessage[],
  requestTools: readonly { function: { name: string; description?: string; parameters?: Record<string, unknown> } }[] | null | undefined,
): ChatRendering {
  const tools = requestTools?.map((t): ToolSpec => ({
    type: 'function',
    function: { name: t.function.name, description: t.function.description ?? '', parameters: t.function.parameters ?? {} },
  }));
  const messages = requestMessages.map((m, i): TemplateMessage => {
    const role = m.role === 'developer' ? 'system' : m.role;
    const out: TemplateMessage = { role, content: contentText(m.content) };
    if (m.name !== undefined) out.name = m.name;
    if (m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id;
    if (m.role === 'tool' && m.content == null) throw badField(`messages[${i}].content`, 'a tool message needs the tool result as content');
    if (m.tool_calls?.length) {
      if (m.role !== 'assistant') throw badField(`messages[${i}].tool_calls`, 'only assistant messages carry tool calls');
      const calls = m.tool_calls.map((c, j) => ({
        id: c.id ?? toolCallId(),
        type: 'function' as const,
        function: { name: c.function.name, arguments: callArguments(c, `messages[${i}].tool_calls[${j}]`) },
      }));
      if (nativeToolCalls) out.tool_calls = calls;
      else if (!format) throw badField(`messages[${i}].tool_calls`, 'this server has no tool-call format to write them in');
      else {
        const written = calls.map((c) => format.callText(c.function.name, c.function.arguments)).join('\n');
        out.content = out.content ? `${out.content}\n${written}` : written;
      }
    }
    return out;
  });
  if (!tools?.length) return { messages, format };
  if (!format || format.templateTools) return { messages, templateTools: tools, format };
  const section = format.systemSection(tools);
  if (messages[0]?.role === 'system') messages[0] = { ...messages[0], content: `${messages[0].content}\n\n${section}` };
  else messages.unshift({ role: 'system', content: section });
  return { messages, format };
}

/** Split a sampled reply into content and OpenAI tool calls (see the file comment). */
export function parseReply(format: ServedToolFormat, text: string): { content: string | null; toolCalls: ReplyToolCall[] } {
  const calls = format.parse(text);
  if (calls.length === 0 || calls.some((c) => c.error !== undefined || c.arguments === null)) {
    return { content: text.trim() || null, toolCalls: [] };
  }
  let rest = text;
  for (const c of calls) rest = rest.replace(c.raw, '');
  const content = rest.trim();
  return {
    content: content === '' ? null : content,
    toolCalls: calls.map((c) => ({
      id: toolCallId(),
      type: 'function',
      function: { name: c.name, arguments: JSON.stringify(c.arguments) },
    })),
  };
}

/**
 * The opening marker of a call block in `format` (the leading tag of a written call), from which on
 * streamed text is held back; '' (hold back everything) when a call does not start with a tag.
 */
export function callOpenTag(format: ServedToolFormat): string {
  return /^<[^<>\s]+>/.exec(format.callText('f', {}))?.[0] ?? '';
}
