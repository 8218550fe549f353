/**
 * `OpenAIPolicy`: sampling through any OpenAI-compatible inference server (vLLM, SGLang, llama.cpp,
 * `matpo serve`).
 *
 * Mode 'completions' (token-exact, the default) POSTs `{baseUrl}/v1/completions` with the prompt as
 * token ids and asks for the sampled ids and their logprobs back. What is sent, and why:
 *   prompt: number[]                      token ids (vLLM, SGLang and OpenAI accept a list of ints)
 *   max_tokens, temperature, top_p, seed  OpenAI fields; top_k, stop_token_ids are vLLM/SGLang extras
 *   stop                                  stop strings
 *   stop_token_ids                        the caller's stop ids, else the tokenizer's (which include
 *                                         EOS). Servers also stop at their own EOS ids whatever we
 *                                         send (ignore_eos is never sent: in SGLang it would disable
 *                                         stop_token_ids too), so a caller's list without EOS still
 *                                         ends at EOS — reported as 'stop_token'.
 *   logprobs: 1                           per-token logprob of the sampled token (+1 alternative)
 *   return_tokens_as_token_ids: true      vLLM: logprobs.tokens come back as "token_id:123"
 *   return_token_ids: true                SGLang (and vLLM ≥ 0.10.2): choices[0].token_ids = sampled ids
 *   skip_special_tokens: false            keep special tokens in the text (ids are used anyway)
 *   include_stop_str_in_output: true      vLLM: do not trim a matched stop string
 *   no_stop_trim: true                    SGLang: do not trim the matched stop token/string
 * Sampled ids are read from `choices[0].token_ids` when present, else parsed from "token_id:N"
 * strings in `logprobs.tokens`; logprobs from `logprobs.token_logprobs`. The two must align, and a
 * stop token the server reports (`stop_reason` in vLLM, `matched_stop` in SGLang) must be the last
 * id, or the call fails rather than record tokens that were not sampled. vLLM's logprobs are those
 * of the raw (temperature-1) model distribution by default (`--logprobs-mode raw_logprobs`).
 *
 * Mode 'chat' (fallback for servers without token ids) POSTs `/v1/chat/completions` with the
 * conversation from `params.hint.messages` and re-tokenizes the reply locally, so it is NOT
 * token-exact (`tokenExact = false`); `assertTokenExact` refuses such a policy for training.
 *
 * Retries with exponential backoff (and jitter) on connection errors, per-attempt timeouts, 5xx and
 * 429; any other 4xx fails at once with the server's own message as an `EndpointError`.
 */
import { ConfigError, EndpointError, InvalidArgumentError } from '../core/errors.ts';
import type { ChatMessage, ChatTokenizer } from '../core/chat.ts';
import type { FinishReason, SamplingPolicy, SampleParams, SampleResult } from '../core/policy.ts';
import { LocalTokenizer } from './local-tokenizer.ts';

export interface OpenAIPolicyOptions {
  /** Server root, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted too). */
  baseUrl: string;
  /** The `model` field sent with every request. */
  model: string;
  /** Sent as `Authorization: Bearer …`. */
  apiKey?: string;
  /** Hugging Face model directory with tokenizer.json / tokenizer_config.json. */
  tokenizerDir?: string;
  /** A tokenizer object instead of a directory. */
  tokenizer?: ChatTokenizer;
  mode?: 'completions' | 'chat';
  /** Per-attempt request time limit. Default 300000 ms. */
  timeoutMs?: number;
  /** Retries after the first attempt. Default 4. */
  retries?: number;
  /** First backoff delay; doubles each retry (with ±25% jitter), capped at maxBackoffMs. Default 500. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

/** Throws when `policy` cannot be trained on (its tokens and logprobs are not exactly as sampled). */
export function assertTokenExact(policy: SamplingPolicy): void {
  if (!policy.tokenExact) {
    throw new ConfigError({
      path: 'policy',
      message:
        `policy "${policy.name}" is not token-exact (chat-completions fallback: the reply is re-tokenized locally, ` +
        'so tokens and logprobs may differ from what was sampled); ' +
        "training needs a server that returns token ids (vLLM, SGLang, matpo serve) in 'completions' mode",
    });
  }
}

/** The model ids an OpenAI-compatible server lists at GET /v1/models (to pick `model` when not given). */
export async function listModels(baseUrl: string, options: { apiKey?: string; timeoutMs?: number } = {}): Promise<string[]> {
  const url = `${baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '')}/v1/models`;
  let res: Response;
  try {
    res = await fetch(url, {
      headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
      signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    throw new EndpointError({ url, message: `cannot reach the server: ${cause?.code ?? (err as Error).message}`, cause: err });
  }
  const text = await res.text();
  if (!res.ok) throw new EndpointError({ url, status: res.status, message: serverMessage(text) });
  try {
    const body = JSON.parse(text) as { data?: { id?: unknown }[] };
    return (body.data ?? []).map((m) => m.id).filter((id): id is string => typeof id === 'string');
  } catch {
    throw new EndpointError({ url, status: res.status, message: 'response is not JSON' });
  }
}

/** Parse vLLM's "token_id:123" token strings. Returns null when a token is not in that form. */
export function parseTokenIdStrings(tokens: readonly string[]): number[] | null {
  const ids: number[] = [];
  for (const t of tokens) {
    const m = /^token_id:(\d+)$/.exec(t);
    if (!m) return null;
    ids.push(Number(m[1]));
  }
  return ids;
}

class RetryableError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

function serverMessage(text: string): string {
  try {
    const body = JSON.parse(text) as { error?: { message?: string } | string; message?: string; detail?: unknown };
    if (typeof body.error === 'object' && body.error?.message) return body.error.message;
    if (typeof body.error === 'string') return body.error;
    if (body.message) return body.message;
    if (body.detail !== undefined) return typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
  } catch {
    // not JSON
  }
  return text.slice(0, 500) || '(empty response)';
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

interface CompletionChoice {
  text?: string;
  finish_reason?: string | null;
  stop_reason?: number | string | null;
  matched_stop?: number | string | null;
  token_ids?: number[] | null;
  logprobs?: { tokens?: string[]; token_logprobs?: (number | null)[] } | null;
}

interface ChatChoice {
  message?: { content?: string | null };
  finish_reason?: string | null;
  logprobs?: { content?: { token: string; logprob: number }[] | null } | null;
}

export class OpenAIPolicy implements SamplingPolicy {
  readonly name: string;
  readonly tokenExact: boolean;
  readonly mode: 'completions' | 'chat';
  private readonly root: string;
  private readonly options: OpenAIPolicyOptions;
  private readonly localTokenizer: LocalTokenizer;
  private readonly inflight = new Set<AbortController>();
  private closed = false;
  /** Requests sent (attempts, including retries), for diagnostics. */
  requestsSent = 0;

  constructor(options: OpenAIPolicyOptions) {
    if (!options.baseUrl) throw new ConfigError({ path: 'policy.baseUrl', message: 'is required' });
    if (!options.model) throw new ConfigError({ path: 'policy.model', message: 'is required' });
    try {
      new URL(options.baseUrl);
    } catch {
      throw new ConfigError({ path: 'policy.baseUrl', message: `not a valid URL: ${options.baseUrl}` });
    }
    this.options = options;
    this.mode = options.mode ?? 'completions';
    this.tokenExact = this.mode === 'completions';
    this.root = options.baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '');
    this.name = `openai:${options.model}@${this.root}${this.mode === 'chat' ? ' (chat)' : ''}`;
    this.localTokenizer = new LocalTokenizer(
      options.tokenizerDir,
      { path: 'policy.tokenizerDir', message: "an OpenAI-compatible policy needs the model's tokenizer directory (tokenizerDir)" },
      options.tokenizer,
    );
  }

  tokenizer(): Promise<ChatTokenizer> {
    return this.localTokenizer.get();
  }

  async sample(promptTokens: readonly number[], params: SampleParams): Promise<SampleResult> {
    if (!Number.isInteger(params.maxNewTokens) || params.maxNewTokens < 1)
      throw new InvalidArgumentError('maxNewTokens', `must be a positive integer, got ${params.maxNewTokens}`);
    return this.mode === 'completions' ? this.sampleCompletions(promptTokens, params) : this.sampleChat(promptTokens, params);
  }

  private samplingFields(params: SampleParams): Record<string, unknown> {
    const body: Record<string, unknown> = {
      model: this.options.model,
      max_tokens: params.maxNewTokens,
      temperature: params.temperature ?? 1,
      n: 1,
      stream: false,
    };
    if (params.topP !== undefined) body.top_p = params.topP;
    if (params.topK !== undefined && params.topK > 0) body.top_k = params.topK;
    if (params.seed !== undefined) body.seed = params.seed;
    if (params.stopStrings?.length) body.stop = [...params.stopStrings];
    return body;
  }

  private async sampleCompletions(promptTokens: readonly number[], params: SampleParams): Promise<SampleResult> {
    const url = `${this.root}/v1/completions`;
    const tokenizer = this.options.tokenizer || this.options.tokenizerDir ? await this.tokenizer() : null;
    const stopIds = params.stopTokenIds ?? tokenizer?.stopTokenIds ?? [];
    const body = {
      ...this.samplingFields(params),
      prompt: [...promptTokens],
      logprobs: 1,
      stop_token_ids: [...stopIds],
      return_tokens_as_token_ids: true,
      return_token_ids: true,
      skip_special_tokens: false,
      include_stop_str_in_output: true,
      no_stop_trim: true,
    };
    const response = (await this.post(url, body, params.signal)) as { choices?: CompletionChoice[] };
    const choice = response.choices?.[0];
    if (!choice) throw new EndpointError({ url, message: 'response has no choices' });
    const lp = choice.logprobs;
    let tokens: number[] | null = Array.isArray(choice.token_ids) ? choice.token_ids : null;
    if (!tokens && lp?.tokens) tokens = parseTokenIdStrings(lp.tokens);
    if (!tokens) {
      throw new EndpointError({
        url,
        message:
          'the server did not return sampled token ids (vLLM needs return_tokens_as_token_ids, SGLang return_token_ids); ' +
          "use mode 'chat' for servers without token ids (not usable for training)",
      });
    }
    const logprobs = lp?.token_logprobs;
    if (!logprobs) throw new EndpointError({ url, message: 'the server returned no logprobs (logprobs.token_logprobs)' });
    if (logprobs.length !== tokens.length) {
      throw new EndpointError({ url, message: `the server returned ${tokens.length} token ids but ${logprobs.length} logprobs` });
    }
    if (logprobs.some((x) => typeof x !== 'number' || Number.isNaN(x)))
      throw new EndpointError({ url, message: 'the server returned a missing or non-numeric logprob' });
    const matched = choice.stop_reason ?? choice.matched_stop ?? null;
    const last = tokens[tokens.length - 1];
    if (typeof matched === 'number' && last !== matched) {
      throw new EndpointError({
        url,
        message:
          `the server reports stop token ${matched} but did not return it as the last sampled token (it was trimmed); ` +
          'token-exact sampling needs it',
      });
    }
    const finishReason = this.finishReason(choice.finish_reason, matched, last, stopIds, tokenizer);
    return { tokens, logprobs: logprobs as number[], finishReason };
  }

  private finishReason(
    reason: string | null | undefined,
    matched: number | string | null,
    last: number | undefined,
    stopIds: readonly number[],
    tokenizer: ChatTokenizer | null,
  ): FinishReason {
    if (reason === 'length') return 'length';
    if (reason === 'abort') return 'abort';
    if (typeof matched === 'string') return 'stop_string';
    if (typeof matched === 'number') return 'stop_token';
    if (last !== undefined && (stopIds.includes(last) || last === tokenizer?.eosTokenId)) return 'stop_token';
    return reason === 'stop' ? 'stop_string' : 'length';
  }

  private async sampleChat(_promptTokens: readonly number[], params: SampleParams): Promise<SampleResult> {
    const url = `${this.root}/v1/chat/completions`;
    const messages = params.hint?.messages;
    if (!messages?.length) {
      throw new InvalidArgumentError(
        'hint.messages',
        'chat mode sends the conversation, not token ids; the caller must pass params.hint.messages',
      );
    }
    const tokenizer = await this.tokenizer();
    const body = {
      ...this.samplingFields(params),
      // OpenAI-style servers want a tool_call_id on tool messages; tool results go as user turns, as in MATPO.
      messages: messages.map((m: ChatMessage) => ({ role: m.role === 'tool' ? 'user' : m.role, content: m.content })),
      logprobs: true,
    };
    const response = (await this.post(url, body, params.signal)) as { choices?: ChatChoice[] };
    const choice = response.choices?.[0];
    if (!choice) throw new EndpointError({ url, message: 'response has no choices' });
    const content = choice.message?.content ?? '';
    const tokens = tokenizer.encode(content);
    const served = choice.logprobs?.content;
    const logprobs = served && served.length === tokens.length ? served.map((x) => x.logprob) : new Array<number>(tokens.length).fill(0);
    let finishReason: FinishReason = choice.finish_reason === 'length' ? 'length' : 'stop_string';
    if (choice.finish_reason === 'stop') {
      const stop = (params.stopTokenIds ?? tokenizer.stopTokenIds)[0];
      if (stop !== undefined) {
        tokens.push(stop);
        logprobs.push(0);
        finishReason = 'stop_token';
      }
    }
    return { tokens, logprobs, finishReason };
  }

  /** POST JSON with retries; returns the parsed body of a 2xx response. */
  private async post(url: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
    const retries = this.options.retries ?? 4;
    const timeoutMs = this.options.timeoutMs ?? 300_000;
    const base = this.options.backoffMs ?? 500;
    const cap = this.options.maxBackoffMs ?? 30_000;
    const payload = JSON.stringify(body);
    let lastError: RetryableError | null = null;
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (this.closed) throw new EndpointError({ url, message: 'the policy was closed' });
      if (attempt > 0) {
        const delay = Math.min(cap, base * 2 ** (attempt - 1)) * (0.75 + 0.5 * Math.random());
        await sleep(delay, signal);
      }
      try {
        return await this.attempt(url, payload, timeoutMs, signal);
      } catch (err) {
        if (err instanceof RetryableError) {
          lastError = err;
          continue;
        }
        throw err;
      }
    }
    throw new EndpointError({
      url,
      status: lastError?.status,
      message: `${lastError?.message ?? 'failed'} (after ${retries + 1} attempts)`,
    });
  }

  private async attempt(url: string, payload: string, timeoutMs: number, signal?: AbortSignal): Promise<unknown> {
    if (signal?.aborted) throw signal.reason;
    const controller = new AbortController();
    this.inflight.add(controller);
    const timer = setTimeout(() => controller.abort(new RetryableError(`no response within ${timeoutMs} ms`)), timeoutMs);
    const onAbort = () => controller.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.options.apiKey) headers.authorization = `Bearer ${this.options.apiKey}`;
    this.requestsSent++;
    try {
      let res: Response;
      let text: string;
      try {
        res = await fetch(url, { method: 'POST', headers, body: payload, signal: controller.signal });
        text = await res.text();
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (this.closed) throw new EndpointError({ url, message: 'the policy was closed' });
        if (controller.signal.reason instanceof RetryableError) throw controller.signal.reason;
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        throw new RetryableError(`connection failed: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
      }
      if (res.status >= 500 || res.status === 429) throw new RetryableError(serverMessage(text), res.status);
      if (!res.ok) throw new EndpointError({ url, status: res.status, message: serverMessage(text) });
      try {
        return JSON.parse(text);
      } catch {
        throw new EndpointError({ url, status: res.status, message: `response is not JSON: ${text.slice(0, 200)}` });
      }
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      this.inflight.delete(controller);
    }
  }

  /** Abort requests still in flight. */
  async close(): Promise<void> {
    this.closed = true;
    for (const c of this.inflight) c.abort(new Error('policy closed'));
    this.inflight.clear();
  }
}
