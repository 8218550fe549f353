/**
 * Running one tool call for an agent: validate the model's arguments against the tool's zod schema,
 * run `execute` under a per-call timeout and the caller's abort signal, turn any failure into text
 * the model can read, and cut long output to a character budget with a visible note.
 *
 * `executeTool` never throws for anything the tool or the model did wrong; the rollout records the
 * outcome (`ok`, `valid`) and feeds `text` back as the tool result. `toToolSpec` renders a tool in
 * the OpenAI function format the chat template expects.
 */
import { z } from 'zod';
import type { Tool } from './tool.ts';
import type { ToolSpec } from '../core/chat.ts';

export interface ExecuteOptions {
  /** Per-call time limit in milliseconds (the tool's signal is aborted when it passes). */
  timeoutMs: number;
  /** Output longer than this many characters is cut, with a note saying how much was cut. */
  maxChars: number;
  /** Aborts the call from outside (the rollout was cancelled). */
  signal?: AbortSignal;
}

export interface ExecuteResult {
  /** The tool ran and returned normally. */
  ok: boolean;
  /** The arguments passed the tool's schema (false only for schema violations). */
  valid: boolean;
  /** The text the model sees as the tool result (output, or an error message). */
  text: string;
  /** Wall time of the call in milliseconds. */
  ms: number;
}

/** Cut `text` to `maxChars` characters, appending "[... N characters cut]" when anything was removed. */
export function cutText(text: string, maxChars: number): string {
  if (maxChars < 0 || text.length <= maxChars) return text;
  return `${text.slice(0, maxChars)}\n[... ${text.length - maxChars} characters cut]`;
}

function describePath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(arguments)';
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out;
}

/** One line per schema issue, each naming the field: `query: expected string, received number`. */
export function formatSchemaError(toolName: string, error: z.ZodError): string {
  const lines = error.issues.map((issue) => `- ${describePath(issue.path)}: ${issue.message}`);
  return `Error: invalid arguments for tool "${toolName}":\n${lines.join('\n')}`;
}

function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/**
 * Missing arguments are `{}`; arguments given as a JSON-encoded object string (the OpenAI function-call
 * convention, `"arguments": "{\"query\": \"x\"}"`) are decoded. Anything else is validated as is.
 */
export function normaliseArguments(raw: unknown): unknown {
  if (raw === undefined) return {};
  if (typeof raw === 'string' && /^\s*\{/.test(raw)) {
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      return raw;
    }
  }
  return raw;
}

/** Validate, run with a timeout, catch, cut. Never throws. */
export async function executeTool(tool: Tool, rawArguments: unknown, options: ExecuteOptions): Promise<ExecuteResult> {
  const start = performance.now();
  const done = (ok: boolean, valid: boolean, text: string): ExecuteResult => ({
    ok,
    valid,
    text: cutText(text, options.maxChars),
    ms: performance.now() - start,
  });

  const parsed = tool.inputSchema.safeParse(normaliseArguments(rawArguments));
  if (!parsed.success) return done(false, false, formatSchemaError(tool.name, parsed.error));

  if (options.signal?.aborted) return done(false, true, `Error: tool "${tool.name}" was cancelled before it ran`);

  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let onOuterAbort: (() => void) | undefined;
  // The tool's own promise races against the timeout and the outer signal, so a tool that ignores
  // its signal still cannot hold the rollout beyond the limit.
  const stopped = new Promise<{ kind: 'timeout' | 'cancelled' }>((resolve) => {
    timer = setTimeout(() => {
      controller.abort(new Error(`timed out after ${options.timeoutMs} ms`));
      resolve({ kind: 'timeout' });
    }, options.timeoutMs);
    if (options.signal) {
      onOuterAbort = () => {
        controller.abort(new Error('cancelled'));
        resolve({ kind: 'cancelled' });
      };
      options.signal.addEventListener('abort', onOuterAbort, { once: true });
    }
  });
  try {
    const run = Promise.resolve()
      .then(() => tool.execute(parsed.data, { signal: controller.signal }))
      .then(
        (output) => ({ kind: 'output' as const, output }),
        (error: unknown) => ({ kind: 'error' as const, error }),
      );
    const outcome = await Promise.race([run, stopped]);
    switch (outcome.kind) {
      case 'output':
        if (typeof outcome.output !== 'string') {
          return done(false, true, `Error: tool "${tool.name}" returned ${typeof outcome.output}, not text`);
        }
        return done(true, true, outcome.output);
      case 'error':
        return done(false, true, `Error: ${errorMessage(outcome.error)}`);
      case 'timeout':
        return done(false, true, `Error: tool "${tool.name}" timed out after ${options.timeoutMs} ms`);
      default:
        return done(false, true, `Error: tool "${tool.name}" was cancelled`);
    }
  } finally {
    clearTimeout(timer);
    if (onOuterAbort) options.signal?.removeEventListener('abort', onOuterAbort);
  }
}

/**
 * The tool in OpenAI function format; `parameters` is the JSON schema of the input (as the model
 * writes it). A tool that carries its own `jsonSchema` (MCP tools: the server's schema) uses it as is.
 */
export function toToolSpec(tool: Tool & { jsonSchema?: Record<string, unknown> }): ToolSpec {
  if (tool.jsonSchema) {
    const { $schema: _ignored, ...parameters } = tool.jsonSchema;
    return { type: 'function', function: { name: tool.name, description: tool.description, parameters } };
  }
  const schema = z.toJSONSchema(tool.inputSchema, {
    io: 'input',
    unrepresentable: 'any',
    // `z.number().int()` carries the safe-integer range as bounds; they say nothing to a model and
    // cost it tokens in every prompt, so only bounds the tool's author set are kept.
    override: ({ jsonSchema: js }) => {
      if (js.maximum === Number.MAX_SAFE_INTEGER) delete js.maximum;
      if (js.minimum === Number.MIN_SAFE_INTEGER) delete js.minimum;
    },
  }) as Record<string, unknown>;
  delete schema.$schema;
  return { type: 'function', function: { name: tool.name, description: tool.description, parameters: schema } };
}
