/**
 * Tool-call formats: how tools are presented to the model and how calls are read back from the
 * sampled text.
 *
 * - `hermes` (Qwen/Hermes, the native format of ChatML tool templates): the chat template lists
 *   the tools (its `tools` argument) and the model writes `<tool_call>{"name": .., "arguments": {..}}</tool_call>`.
 * - `mcp` (the MATPO reference model's MCP-style XML): the tool list and instructions go into the
 *   system prompt as text and the model writes
 *   `<use_mcp_tool><server_name>S</server_name><tool_name>T</tool_name><arguments>{json}</arguments></use_mcp_tool>`.
 *
 * Parsing never throws: every opened call block becomes a `ParsedCall`, with `error` set when the
 * block cannot be read (the error text is what the model gets back as the tool result). Arguments
 * that only parse after repair (missing closing braces, trailing text, trailing commas) are used,
 * but the call is marked `repaired` so the format score does not count it as well-formed.
 */
import type { ChatTokenizer, ToolSpec } from '../../core/chat.ts';
import { UnknownNameError } from '../../core/errors.ts';
import { parseLenientJson } from './lenient-json.ts';

export interface ParsedCall {
  /** Tool name as written ('' when it could not be read). */
  name: string;
  /** Parsed arguments, or null when they did not parse. */
  arguments: Record<string, unknown> | null;
  /** The raw call block, exactly as sampled. */
  raw: string;
  /** Why the block could not be read (returned to the model as the tool result). */
  error?: string;
  /** The arguments parsed only after repairing the JSON. */
  repaired?: boolean;
}

export interface ToolCallFormat {
  readonly name: 'hermes' | 'mcp';
  /** Pass tools to the chat template (true) or describe them in the system prompt (false). */
  readonly templateTools: boolean;
  /** Instructions and tool list to add to the system prompt ('' when the template lists the tools). */
  systemSection(tools: readonly ToolSpec[]): string;
  /** Every call block in a sampled text, in order. */
  parse(text: string): ParsedCall[];
  /** A call written in this format (for scripted policies and demonstrations). */
  callText(name: string, args: Record<string, unknown>): string;
}

function argsObject(value: unknown): { args: Record<string, unknown> | null; error?: string } {
  if (value === undefined || value === null) return { args: {} };
  if (typeof value === 'string') {
    const inner = parseLenientJson(value);
    if (inner.ok && inner.value && typeof inner.value === 'object' && !Array.isArray(inner.value))
      return { args: inner.value as Record<string, unknown> };
    return { args: null, error: 'the "arguments" field must be a JSON object' };
  }
  if (typeof value === 'object' && !Array.isArray(value)) return { args: value as Record<string, unknown> };
  return { args: null, error: 'the "arguments" field must be a JSON object' };
}

/** Blocks between `open` and `close`; an unclosed block runs to the next `open` or the end of the text. */
function blocks(text: string, open: string, close: string): { inner: string; raw: string }[] {
  const out: { inner: string; raw: string }[] = [];
  let at = text.indexOf(open);
  while (at >= 0) {
    const bodyStart = at + open.length;
    const closeAt = text.indexOf(close, bodyStart);
    const nextOpen = text.indexOf(open, bodyStart);
    let end: number;
    let innerEnd: number;
    if (closeAt >= 0 && (nextOpen < 0 || closeAt < nextOpen)) {
      innerEnd = closeAt;
      end = closeAt + close.length;
    } else {
      innerEnd = nextOpen >= 0 ? nextOpen : text.length;
      end = innerEnd;
    }
    out.push({ inner: text.slice(bodyStart, innerEnd), raw: text.slice(at, end) });
    at = nextOpen >= 0 && nextOpen >= end ? nextOpen : text.indexOf(open, end);
  }
  return out;
}

export const hermesFormat: ToolCallFormat = {
  name: 'hermes',
  templateTools: true,
  systemSection: () => '',
  callText: (name, args) => `<tool_call>\n${JSON.stringify({ name, arguments: args })}\n</tool_call>`,
  parse(text) {
    return blocks(text, '<tool_call>', '</tool_call>').map(({ inner, raw }): ParsedCall => {
      const parsed = parseLenientJson(inner);
      if (!parsed.ok)
        return {
          name: '',
          arguments: null,
          raw,
          error:
            `Error: the tool call is not valid JSON (${parsed.error}). ` +
            'Write <tool_call>{"name": ..., "arguments": {...}}</tool_call>.',
        };
      const obj = parsed.value as Record<string, unknown> | null;
      if (!obj || typeof obj !== 'object' || Array.isArray(obj) || typeof obj.name !== 'string' || obj.name === '') {
        return { name: '', arguments: null, raw, error: 'Error: the tool call needs a "name" string and an "arguments" object.' };
      }
      const { args, error } = argsObject(obj.arguments ?? obj.parameters);
      if (error) return { name: obj.name, arguments: null, raw, error: `Error: ${error}.` };
      return { name: obj.name, arguments: args, raw, repaired: parsed.repaired || undefined };
    });
  },
};

/**
 * Hermes calls for a chat template that cannot list tools itself: the same call syntax, with the
 * tool list and instructions written into the system prompt.
 */
export const hermesInPromptFormat: ToolCallFormat = {
  ...hermesFormat,
  templateTools: false,
  systemSection(tools) {
    if (tools.length === 0) return '';
    return [
      '# Tools',
      '',
      'You may call the functions below. Their signatures are listed inside <tools></tools>:',
      '<tools>',
      ...tools.map((t) => JSON.stringify(t)),
      '</tools>',
      '',
      'To call a function, write a JSON object with its name and arguments inside <tool_call></tool_call> tags:',
      '<tool_call>',
      '{"name": <function-name>, "arguments": <args-json-object>}',
      '</tool_call>',
    ].join('\n');
  },
};

/** True when the tokenizer's chat template writes a tool list given to it. */
export function templateListsTools(tokenizer: ChatTokenizer): boolean {
  const probe: ToolSpec = {
    type: 'function',
    function: { name: 'matpo_probe_tool', description: 'probe', parameters: { type: 'object' } },
  };
  try {
    return tokenizer
      .applyChatTemplate([{ role: 'user', content: 'x' }], { tools: [probe], addGenerationPrompt: true })
      .includes('matpo_probe_tool');
  } catch {
    return false;
  }
}

function tagText(inner: string, tag: string): string | null {
  const open = `<${tag}>`;
  const at = inner.indexOf(open);
  if (at < 0) return null;
  const close = inner.indexOf(`</${tag}>`, at + open.length);
  return inner.slice(at + open.length, close >= 0 ? close : inner.length).trim();
}

export function mcpFormat(serverName = 'tools'): ToolCallFormat {
  return {
    name: 'mcp',
    templateTools: false,
    callText: (name, args) =>
      `<use_mcp_tool>\n<server_name>${serverName}</server_name>\n<tool_name>${name}</tool_name>\n` +
      `<arguments>\n${JSON.stringify(args)}\n</arguments>\n</use_mcp_tool>`,
    systemSection(tools) {
      if (tools.length === 0) return '';
      const list = tools
        .map(
          (t) =>
            `### Tool name: ${t.function.name}\nDescription: ${t.function.description}\n` +
            `Input JSON schema: ${JSON.stringify(t.function.parameters)}`,
        )
        .join('\n\n');
      return [
        '# Tool use',
        '',
        'You can use the tools of the MCP server below. To call a tool, write exactly one block per call:',
        '<use_mcp_tool>',
        `<server_name>${serverName}</server_name>`,
        '<tool_name>the tool name</tool_name>',
        '<arguments>',
        '{"parameter": "value"}',
        '</arguments>',
        '</use_mcp_tool>',
        'The result comes back in the next message.',
        '',
        `## Server name: ${serverName}`,
        '',
        list,
      ].join('\n');
    },
    parse(text) {
      return blocks(text, '<use_mcp_tool>', '</use_mcp_tool>').map(({ inner, raw }): ParsedCall => {
        const name = tagText(inner, 'tool_name');
        if (!name) return { name: '', arguments: null, raw, error: 'Error: the tool call has no <tool_name>.' };
        const argText = tagText(inner, 'arguments');
        if (argText === null || argText === '') return { name, arguments: {}, raw };
        const parsed = parseLenientJson(argText);
        if (!parsed.ok)
          return { name, arguments: null, raw, error: `Error: the <arguments> of "${name}" are not valid JSON (${parsed.error}).` };
        const { args, error } = argsObject(parsed.value);
        if (error) return { name, arguments: null, raw, error: `Error: ${error}.` };
        const server = tagText(inner, 'server_name');
        if (server !== null && server !== serverName)
          return { name, arguments: args, raw, error: `Error: unknown server "${server}"; available: ${serverName}.` };
        return { name, arguments: args, raw, repaired: parsed.repaired || undefined };
      });
    },
  };
}

/** Format by name. */
export function toolCallFormat(name: string, serverName?: string): ToolCallFormat {
  if (name === 'hermes') return hermesFormat;
  if (name === 'mcp') return mcpFormat(serverName);
  throw new UnknownNameError({ kind: 'tool-call format', name, available: ['hermes', 'mcp'] });
}

/** The model family's native format: hermes when the chat template renders a tool list, else mcp. */
export function nativeFormat(tokenizer: ChatTokenizer): ToolCallFormat {
  return templateListsTools(tokenizer) ? hermesFormat : mcpFormat();
}

/** A format by name for a tokenizer: 'native', or hermes/mcp (hermes lists tools in the prompt when the template cannot). */
export function formatFor(tokenizer: ChatTokenizer, name: 'native' | 'hermes' | 'mcp', serverName?: string): ToolCallFormat {
  if (name === 'native') return nativeFormat(tokenizer);
  if (name === 'hermes') return templateListsTools(tokenizer) ? hermesFormat : hermesInPromptFormat;
  return toolCallFormat(name, serverName);
}

/** Remove reasoning (`<think>…</think>`, or everything up to a lone `</think>`) and every tool-call block, in both formats. */
export function stripReasoningAndCalls(text: string): string {
  let out = text;
  const lone = out.lastIndexOf('</think>');
  if (lone >= 0) out = out.slice(lone + '</think>'.length);
  out = out.replace(/<think>[\s\S]*?(<\/think>|$)/g, '');
  for (const [open, close] of [
    ['<tool_call>', '</tool_call>'],
    ['<use_mcp_tool>', '</use_mcp_tool>'],
  ]) {
    for (const b of blocks(out, open, close)) out = out.replace(b.raw, '');
  }
  return out.replace(/\n{3,}/g, '\n\n').trim();
}
