/**
 * Request bodies `servePolicy` accepts, as zod schemas in the OpenAI / vLLM field names, and the
 * translation of any failure into a 400 naming the request's own field: `messages[2].content`,
 * never a schema path (`messages.2.content`) or an internal name (`promptTokens`).
 *
 * Unknown fields are accepted and ignored (clients send many optional fields; vLLM does the same).
 */
import { z } from 'zod';
import { HttpError } from './server-http.ts';

const tokenIds = z.array(z.number().int().min(0));

const samplingFields = {
  model: z.string().optional(),
  temperature: z.number().min(0).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  top_k: z.number().int().nullable().optional(),
  seed: z.number().int().nullable().optional(),
  stop: z
    .union([z.string(), z.array(z.string())])
    .nullable()
    .optional(),
  stop_token_ids: tokenIds.nullable().optional(),
  ignore_eos: z.boolean().optional(),
  n: z.number().int().min(1).max(64).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullable().optional() }).nullable().optional(),
  return_tokens_as_token_ids: z.boolean().optional(),
  return_token_ids: z.boolean().optional(),
  include_stop_str_in_output: z.boolean().optional(),
};

export const completionRequest = z.looseObject({
  ...samplingFields,
  prompt: z.union([z.string(), tokenIds, z.array(z.string()), z.array(tokenIds)]),
  max_tokens: z.number().int().min(0).nullable().optional(),
  logprobs: z.number().int().min(0).max(20).nullable().optional(),
  echo: z.boolean().nullable().optional(),
});
export type CompletionRequest = z.infer<typeof completionRequest>;

const contentPart = z.looseObject({ type: z.string(), text: z.string().optional() });
const content = z
  .union([z.string(), z.array(contentPart)])
  .nullable()
  .optional();

export const toolCallSchema = z.looseObject({
  id: z.string().optional(),
  type: z.literal('function').optional(),
  function: z.looseObject({ name: z.string().min(1), arguments: z.union([z.string(), z.record(z.string(), z.unknown())]).optional() }),
});
export type RequestToolCall = z.infer<typeof toolCallSchema>;

export const chatMessageSchema = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content,
  name: z.string().optional(),
  tool_calls: z.array(toolCallSchema).nullable().optional(),
  tool_call_id: z.string().optional(),
});
export type RequestChatMessage = z.infer<typeof chatMessageSchema>;

const toolSchema = z.looseObject({
  type: z.literal('function'),
  function: z.looseObject({
    name: z.string().min(1),
    description: z.string().optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
  }),
});

export const chatRequest = z.looseObject({
  ...samplingFields,
  messages: z.array(chatMessageSchema).min(1),
  tools: z.array(toolSchema).nullable().optional(),
  tool_choice: z
    .union([z.enum(['none', 'auto', 'required']), z.looseObject({ type: z.literal('function') })])
    .nullable()
    .optional(),
  max_tokens: z.number().int().min(1).nullable().optional(),
  max_completion_tokens: z.number().int().min(1).nullable().optional(),
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.number().int().min(0).max(20).nullable().optional(),
  skip_special_tokens: z.boolean().optional(),
});
export type ChatRequest = z.infer<typeof chatRequest>;

/** vLLM's /tokenize takes either a prompt or messages (told apart by the presence of `messages`). */
export const tokenizePromptRequest = z.looseObject({
  model: z.string().optional(),
  prompt: z.string(),
  add_special_tokens: z.boolean().optional(),
});
export const tokenizeChatRequest = z.looseObject({
  model: z.string().optional(),
  messages: z.array(chatMessageSchema).min(1),
  add_generation_prompt: z.boolean().optional(),
  add_special_tokens: z.boolean().optional(),
  tools: z.array(toolSchema).nullable().optional(),
});

export const detokenizeRequest = z.looseObject({ model: z.string().optional(), tokens: tokenIds });

/** `messages.2.content` → `messages[2].content`. */
export function fieldName(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out;
}

export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'the request body must be a JSON object');
  const r = schema.safeParse(body);
  if (!r.success) {
    let issue = r.error.issues[0];
    // A union that failed as a whole: report the branch that got furthest.
    if (issue.code === 'invalid_union' && 'errors' in issue) {
      const branches = (issue as unknown as { errors: z.core.$ZodIssue[][] }).errors.flat();
      const deepest = branches.sort((a, b) => b.path.length - a.path.length)[0];
      if (deepest && deepest.path.length > 0) issue = { ...deepest, path: [...issue.path, ...deepest.path] };
    }
    const param = fieldName(issue.path) || null;
    let value: unknown = body;
    for (const key of issue.path)
      value = value === null || typeof value !== 'object' ? undefined : (value as Record<PropertyKey, unknown>)[key];
    const message = value === undefined && issue.path.length > 0 ? 'is required' : issue.message;
    throw new HttpError(400, `${param ? `${param}: ` : ''}${message}`, 'invalid_request_error', param);
  }
  return r.data;
}

/**
 * The request field behind an internal argument name of the Policy/sampler layer, so that an
 * error raised below the server still names what the client sent.
 */
export function requestField(argument: string, promptField: string): string {
  const m = /^(promptTokens|maxNewTokens|temperature|topP|topK|stopStrings|stopTokenIds|seed)(.*)$/.exec(argument);
  if (!m) return argument;
  const names: Record<string, string> = {
    promptTokens: promptField,
    maxNewTokens: 'max_tokens',
    temperature: 'temperature',
    topP: 'top_p',
    topK: 'top_k',
    stopStrings: 'stop',
    stopTokenIds: 'stop_token_ids',
    seed: 'seed',
  };
  return names[m[1]] + (m[1] === 'promptTokens' && promptField !== 'prompt' ? '' : m[2]);
}
