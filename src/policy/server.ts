/**
 * `servePolicy`: any `SamplingPolicy` behind an OpenAI-compatible HTTP API (node:http), so vLLM-style
 * clients — including our own `OpenAIPolicy` — can sample from it.
 *
 *   POST /v1/completions       prompt as text, token ids, or a batch of either; n; logprobs;
 *                              vLLM's `return_tokens_as_token_ids` ("token_id:N" tokens) and
 *                              `return_token_ids` (choices[i].token_ids, prompt_token_ids);
 *                              stop (strings), stop_token_ids, ignore_eos, seed, top_p, top_k
 *   POST /v1/chat/completions  messages (+ tools) rendered with the policy tokenizer's chat template
 *   GET  /v1/models            the served model (and LoRA adapter names, with `parent`)
 *   POST /v1/load_lora_adapter {lora_name, lora_path} (vLLM's route) when `loadLoraAdapter` is given:
 *                              the policy takes the adapter, and lora_name becomes a served name
 *
 * Sampled stop tokens are part of the returned ids and logprobs (as vLLM does); `text` leaves them
 * out. `top_logprobs` is null: the SamplingPolicy interface gives the sampled token's logprob only.
 * Requests run concurrently (an embedded policy batches them). With `apiKey`, requests need
 * `Authorization: Bearer <key>` (401 otherwise). Errors are JSON in OpenAI's shape
 * `{ error: { message, type, param, code } }`. A client that disconnects aborts its sampling.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { InvalidArgumentError } from '../core/errors.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';
import type { SamplingPolicy, SampleParams, SampleResult } from '../core/policy.ts';

export interface ServeOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** 0 picks a free port. */
  port: number;
  apiKey?: string;
  /** The model id clients send and /v1/models lists. */
  modelName: string;
  /** Largest request body accepted. Default 32 MB. */
  maxBodyBytes?: number;
  /** Upper bound on max_tokens. Default none. */
  maxTokensLimit?: number;
  /** Names of LoRA adapters served besides modelName (requests may name them). */
  loraNames?: string[];
  /** Load a PEFT adapter directory into the policy (enables POST /v1/load_lora_adapter). */
  loadLoraAdapter?: (path: string) => Promise<unknown>;
}

export interface PolicyServer {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Stop accepting connections, let requests in flight finish (aborting them after graceMs), close. */
  close(options?: { graceMs?: number }): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

const tokenIds = z.array(z.number().int().min(0));
const samplingFields = {
  model: z.string().optional(),
  temperature: z.number().min(0).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  top_k: z.number().int().optional(),
  seed: z.number().int().optional(),
  stop: z.union([z.string(), z.array(z.string())]).nullable().optional(),
  stop_token_ids: tokenIds.nullable().optional(),
  ignore_eos: z.boolean().optional(),
  n: z.number().int().min(1).max(64).optional(),
  stream: z.boolean().optional(),
  return_tokens_as_token_ids: z.boolean().optional(),
  return_token_ids: z.boolean().optional(),
};

const completionRequest = z.looseObject({
  ...samplingFields,
  prompt: z.union([z.string(), tokenIds, z.array(z.string()), z.array(tokenIds)]),
  max_tokens: z.number().int().min(1).optional(),
  logprobs: z.number().int().min(0).nullable().optional(),
  echo: z.boolean().optional(),
});

const contentPart = z.looseObject({ type: z.string(), text: z.string().optional() });
const chatRequest = z.looseObject({
  ...samplingFields,
  messages: z
    .array(
      z.looseObject({
        role: z.enum(['system', 'user', 'assistant', 'tool']),
        content: z.union([z.string(), z.array(contentPart)]).nullable().optional(),
        name: z.string().optional(),
      }),
    )
    .min(1),
  tools: z.array(z.looseObject({ type: z.literal('function'), function: z.looseObject({ name: z.string(), description: z.string().optional(), parameters: z.record(z.string(), z.unknown()).optional() }) })).optional(),
  max_tokens: z.number().int().min(1).optional(),
  max_completion_tokens: z.number().int().min(1).optional(),
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.number().int().min(0).nullable().optional(),
});

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (!r.success) {
    const issue = r.error.issues[0];
    const param = issue.path.map(String).join('.') || null;
    throw new HttpError(400, `${param ? `${param}: ` : ''}${issue.message}`, 'invalid_request_error', param);
  }
  return r.data;
}

function finishReasonText(r: SampleResult['finishReason']): string {
  return r === 'stop_token' || r === 'stop_string' ? 'stop' : r;
}

async function readBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpError(413, `request body larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'request body is not valid JSON');
  }
}

function send(res: http.ServerResponse, status: number, body: unknown, close = false): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...(close ? { connection: 'close' } : {}) });
  res.end(text);
}

function sendError(res: http.ServerResponse, err: HttpError): void {
  send(res, err.status, { error: { message: err.message, type: err.type, param: err.param, code: err.code ?? err.status } });
}

/** Serve `policy` over HTTP until `close()` is called. */
export async function servePolicy(policy: SamplingPolicy, options: ServeOptions): Promise<PolicyServer> {
  const host = options.host ?? '127.0.0.1';
  const maxBody = options.maxBodyBytes ?? 32 * 1024 * 1024;
  const tokenizer: ChatTokenizer = await policy.tokenizer();
  const created = Math.floor(Date.now() / 1000);
  const inflight = new Set<AbortController>();
  const loraNames = new Set(options.loraNames ?? []);

  function checkModel(model: string | undefined): void {
    // "default" is accepted too, as SGLang does, for clients that do not know the served name.
    if (model !== undefined && model !== options.modelName && model !== 'default' && !loraNames.has(model)) {
      throw new HttpError(404, `The model \`${model}\` does not exist; this server serves "${options.modelName}".`, 'invalid_request_error', 'model', 'model_not_found');
    }
  }

  function checkIds(ids: readonly number[], param: string): void {
    if (ids.length === 0) throw new HttpError(400, `${param}: the prompt is empty`, 'invalid_request_error', param);
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] >= tokenizer.vocabSize) throw new HttpError(400, `${param}[${i}]: token id ${ids[i]} is outside the vocabulary (size ${tokenizer.vocabSize})`, 'invalid_request_error', param);
    }
  }

  function baseParams(body: z.infer<typeof completionRequest> | z.infer<typeof chatRequest>, maxTokens: number, signal: AbortSignal): SampleParams {
    if (body.stream) throw new HttpError(400, 'stream: streaming is not supported by this server', 'invalid_request_error', 'stream');
    if (options.maxTokensLimit && maxTokens > options.maxTokensLimit) throw new HttpError(400, `max_tokens: at most ${options.maxTokensLimit}`, 'invalid_request_error', 'max_tokens');
    const extraStops = body.stop_token_ids ?? [];
    const stopTokenIds = [...new Set([...(body.ignore_eos ? [] : tokenizer.stopTokenIds), ...extraStops])];
    const stopStrings = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
    const params: SampleParams = { maxNewTokens: maxTokens, temperature: body.temperature ?? 1, stopTokenIds, signal };
    if (stopStrings.length) params.stopStrings = stopStrings;
    if (body.top_p !== undefined) params.topP = body.top_p;
    if (body.top_k !== undefined && body.top_k > 0) params.topK = body.top_k;
    if (body.seed !== undefined) params.seed = body.seed;
    return params;
  }

  /** n samples for one prompt; seeds seed, seed+1, … so that n > 1 gives different samples reproducibly. */
  function sampleN(prompt: readonly number[], params: SampleParams, n: number): Promise<SampleResult[]> {
    return Promise.all(Array.from({ length: n }, (_, j) => policy.sample(prompt, params.seed === undefined ? params : { ...params, seed: params.seed + j })));
  }

  /** vLLM's stop_reason: the stop token id, the stop string that matched, or null. */
  function stopReason(r: SampleResult, stopStrings: readonly string[] | undefined): number | string | null {
    if (r.finishReason === 'stop_token') return r.tokens[r.tokens.length - 1];
    if (r.finishReason === 'stop_string') {
      const text = tokenizer.decode(r.tokens, { skipSpecialTokens: false });
      return stopStrings?.find((s) => text.includes(s)) ?? null;
    }
    return null;
  }

  /** Text of sampled tokens without a trailing stop token. */
  function visibleText(r: SampleResult): string {
    const ids = r.finishReason === 'stop_token' ? r.tokens.slice(0, -1) : r.tokens;
    return tokenizer.decode(ids, { skipSpecialTokens: false });
  }

  async function completions(body: unknown, signal: AbortSignal): Promise<unknown> {
    const req = parseBody(completionRequest, body);
    checkModel(req.model);
    if (req.echo) throw new HttpError(400, 'echo: not supported', 'invalid_request_error', 'echo');
    const params = baseParams(req, req.max_tokens ?? 16, signal);
    const raw = req.prompt;
    const prompts: number[][] =
      typeof raw === 'string'
        ? [tokenizer.encode(raw)]
        : raw.length > 0 && Array.isArray(raw[0])
          ? (raw as number[][]).map((p) => [...p])
          : raw.length > 0 && typeof raw[0] === 'string'
            ? (raw as string[]).map((p) => tokenizer.encode(p))
            : [raw as number[]];
    prompts.forEach((p, i) => checkIds(p, prompts.length > 1 ? `prompt[${i}]` : 'prompt'));
    const n = req.n ?? 1;
    const results = await Promise.all(prompts.map((p) => sampleN(p, params, n)));
    const wantLogprobs = req.logprobs != null;
    const asIds = req.return_tokens_as_token_ids === true;
    let completionTokens = 0;
    const choices = results.flatMap((group, pi) =>
      group.map((r, j) => {
        completionTokens += r.tokens.length;
        const choice: Record<string, unknown> = {
          index: pi * n + j,
          text: visibleText(r),
          logprobs: null,
          finish_reason: finishReasonText(r.finishReason),
          stop_reason: stopReason(r, params.stopStrings),
        };
        if (wantLogprobs) {
          const tokens = r.tokens.map((id) => (asIds ? `token_id:${id}` : tokenizer.decode([id], { skipSpecialTokens: false })));
          const textOffset: number[] = [];
          let offset = 0;
          for (const t of r.tokens) {
            textOffset.push(offset);
            offset += tokenizer.decode([t], { skipSpecialTokens: false }).length;
          }
          choice.logprobs = { tokens, token_logprobs: r.logprobs, top_logprobs: null, text_offset: textOffset };
        }
        if (req.return_token_ids) {
          choice.token_ids = r.tokens;
          choice.prompt_token_ids = prompts[pi];
        }
        return choice;
      }),
    );
    const promptTokens = prompts.reduce((a, p) => a + p.length, 0) * n;
    return {
      id: `cmpl-${randomUUID()}`,
      object: 'text_completion',
      created: Math.floor(Date.now() / 1000),
      model: options.modelName,
      choices,
      usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
    };
  }

  async function chat(body: unknown, signal: AbortSignal): Promise<unknown> {
    const req = parseBody(chatRequest, body);
    checkModel(req.model);
    const messages: ChatMessage[] = req.messages.map((m) => ({
      role: m.role,
      content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text ?? '').join(''),
      ...(m.name ? { name: m.name } : {}),
    }));
    const tools = req.tools?.map((t): ToolSpec => ({ type: 'function', function: { name: t.function.name, description: t.function.description ?? '', parameters: t.function.parameters ?? {} } }));
    let promptText: string;
    try {
      promptText = tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true, ...(tools ? { tools } : {}) });
    } catch (err) {
      throw new HttpError(400, `messages: the chat template failed: ${(err as Error).message}`, 'invalid_request_error', 'messages');
    }
    const prompt = tokenizer.encode(promptText);
    checkIds(prompt, 'messages');
    const params = baseParams(req, req.max_completion_tokens ?? req.max_tokens ?? 512, signal);
    const n = req.n ?? 1;
    const results = await sampleN(prompt, params, n);
    const asIds = req.return_tokens_as_token_ids === true;
    let completionTokens = 0;
    const choices = results.map((r, i) => {
      completionTokens += r.tokens.length;
      const ids = r.finishReason === 'stop_token' ? r.tokens.slice(0, -1) : r.tokens;
      const choice: Record<string, unknown> = {
        index: i,
        message: { role: 'assistant', content: tokenizer.decode(ids, { skipSpecialTokens: true }) },
        logprobs: null,
        finish_reason: finishReasonText(r.finishReason),
      };
      if (req.logprobs) {
        choice.logprobs = {
          content: r.tokens.map((id, t) => {
            const text = tokenizer.decode([id], { skipSpecialTokens: false });
            return { token: asIds ? `token_id:${id}` : text, logprob: r.logprobs[t], bytes: [...Buffer.from(text, 'utf8')], top_logprobs: [] };
          }),
        };
      }
      if (req.return_token_ids) choice.token_ids = r.tokens;
      return choice;
    });
    return {
      id: `chatcmpl-${randomUUID()}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: options.modelName,
      choices,
      usage: { prompt_tokens: prompt.length * n, completion_tokens: completionTokens, total_tokens: prompt.length * n + completionTokens },
    };
  }

  let closing: Promise<void> | null = null;
  const server = http.createServer(async (req, res) => {
    const controller = new AbortController();
    inflight.add(controller);
    // The client went away before we answered: stop sampling for it.
    res.on('close', () => {
      if (!res.writableFinished) controller.abort(new Error('client disconnected'));
      inflight.delete(controller);
      // While closing, drop keep-alive connections as soon as their last response is out.
      if (closing) setImmediate(() => server.closeIdleConnections());
    });
    try {
      if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
        throw new HttpError(401, 'missing or invalid API key (send Authorization: Bearer <key>)', 'authentication_error', null, 'invalid_api_key');
      }
      const path = new URL(req.url ?? '/', 'http://x').pathname.replace(/\/+$/, '');
      const route = `${req.method} ${path}`;
      switch (route) {
        case 'GET /v1/models':
          return send(res, 200, { object: 'list', data: [{ id: options.modelName, object: 'model', created, owned_by: 'matpo' },
            ...[...loraNames].map((id) => ({ id, object: 'model', created, owned_by: 'matpo', parent: options.modelName }))],
          }, closing !== null);
        case 'POST /v1/load_lora_adapter': {
          if (!options.loadLoraAdapter) {
            throw new HttpError(404, 'this server does not load LoRA adapters', 'invalid_request_error', null, 'not_found');
          }
          const body = parseBody(z.object({ lora_name: z.string().min(1), lora_path: z.string().min(1) }), await readBody(req, maxBody));
          try {
            await options.loadLoraAdapter(body.lora_path);
          } catch (err) {
            throw new HttpError(400, `lora_path: ${(err as Error).message}`, 'invalid_request_error', 'lora_path');
          }
          loraNames.add(body.lora_name);
          res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
          res.end(`Success: LoRA adapter '${body.lora_name}' added successfully.`);
          return;
        }
        case 'POST /v1/completions':
          return send(res, 200, await completions(await readBody(req, maxBody), controller.signal), closing !== null);
        case 'POST /v1/chat/completions':
          return send(res, 200, await chat(await readBody(req, maxBody), controller.signal), closing !== null);
        default:
          if (['/v1/models', '/v1/completions', '/v1/chat/completions'].includes(path)) throw new HttpError(405, `method ${req.method} not allowed on ${path}`);
          throw new HttpError(404, `no route ${req.method} ${path}`, 'invalid_request_error', null, 'not_found');
      }
    } catch (err) {
      if (err instanceof HttpError) return sendError(res, err);
      if (controller.signal.aborted) return; // nobody to answer
      if (err instanceof InvalidArgumentError) return sendError(res, new HttpError(400, err.message, 'invalid_request_error', err.argument));
      return sendError(res, new HttpError(500, `sampling failed: ${(err as Error).message}`, 'server_error'));
    }
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}`,
    host,
    port,
    close({ graceMs = 10_000 } = {}) {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        const deadline = setTimeout(() => {
          for (const c of inflight) c.abort(new Error('server closing'));
          server.closeAllConnections();
        }, graceMs);
        deadline.unref();
      });
      return closing;
    },
  };
}
