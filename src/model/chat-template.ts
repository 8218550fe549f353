/**
 * Chat templates: the Jinja source that turns messages (+ tool specs) into the model's prompt text,
 * compiled once with @huggingface/jinja.
 *
 * `CHATML_TOOLS_TEMPLATE` is the project's ChatML template with a tools section, Qwen2.5-like in
 * shape (our wording): an optional system turn that also carries the tool list inside `<tools>`,
 * then `<|im_start|>{role}\n{content}<|im_end|>\n` per message, consecutive `tool` messages merged
 * into one user turn as `<tool_response>` blocks, and `<|im_start|>assistant\n` as the generation
 * prompt. Tool calls are written by the assistant inside its content (`<tool_call>{json}</tool_call>`),
 * so messages need no `tool_calls` field. The test tokenizer and the world tokenizer use this shape.
 */
import { Template } from '@huggingface/jinja';
import type { ChatMessage, ToolSpec } from '../core/chat.ts';

export const CHATML_TOOLS_TEMPLATE = [
  '{%- if tools %}',
  "{{- '<|im_start|>system\\n' }}",
  "{%- if messages | length > 0 and messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}",
  "{{- '# Tools\\n\\nYou may call the functions below. Their signatures are listed inside <tools></tools>:\\n<tools>' }}",
  "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}",
  "{{- '\\n</tools>\\n\\nTo call a function, write a JSON object with its name and arguments inside <tool_call></tool_call> tags:" +
    '\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n\' }}',
  "{%- elif messages | length > 0 and messages[0].role == 'system' %}",
  "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}",
  '{%- endif %}',
  '{%- for message in messages %}',
  "{%- if message.role == 'system' and loop.first %}",
  "{%- elif message.role == 'tool' %}",
  "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}",
  "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}",
  "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}",
  '{%- else %}',
  "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
  '{%- endif %}',
  '{%- endfor %}',
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
].join('\n');

/** The special tokens a tokenizer needs for CHATML_TOOLS_TEMPLATE (turn markers, tool calls and results, reasoning). */
export const CHATML_SPECIAL_TOKENS = [
  '<|endoftext|>',
  '<|im_start|>',
  '<|im_end|>',
  '<tool_call>',
  '</tool_call>',
  '<tool_response>',
  '</tool_response>',
  '<think>',
  '</think>',
] as const;

export interface RenderOptions {
  tools?: readonly ToolSpec[];
  addGenerationPrompt?: boolean;
}

export type ChatTemplateFn = (messages: readonly ChatMessage[], options?: RenderOptions) => string;

/**
 * Compile a Jinja chat template. `extra` goes into the render context (bos_token, eos_token, …).
 * Throws the Jinja parse error (the caller wraps it with the file name).
 */
export function compileChatTemplate(source: string, extra: Record<string, unknown> = {}): ChatTemplateFn {
  const template = new Template(source);
  return (messages, options = {}) =>
    template.render({
      ...extra,
      messages: messages.map((m) => ({ ...m })),
      tools: options.tools && options.tools.length > 0 ? options.tools : undefined,
      add_generation_prompt: options.addGenerationPrompt ?? false,
    });
}
