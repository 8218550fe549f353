/**
 * `servePolicy`: any `Policy` behind an OpenAI-compatible HTTP API (node:http) at vLLM's level for
 * the endpoints it has, so the official OpenAI clients, vLLM-style tooling and our own
 * `OpenAIPolicy` can drive it.
 *
 *   POST /v1/completions       prompt as text, token ids, or a batch of either; n; max_tokens (0 with
 *                              echo: scoring only); echo; logprobs: N (top-N alternatives); stop,
 *                              stop_token_ids, ignore_eos, include_stop_str_in_output, seed, top_p,
 *                              top_k; vLLM's return_tokens_as_token_ids ("token_id:N" tokens) and
 *                              return_token_ids (choices[i].token_ids, prompt_token_ids); stream
 *   POST /v1/chat/completions  messages (+ tools, tool_calls, tool messages) through the chat
 *                              template; replies with tool_calls (given `toolFormat`, see
 *                              server-tools.ts); tool_choice "none" turns tools off, any other
 *                              value is "auto" (no forced calls);
 *                              logprobs, top_logprobs; stream
 *   GET  /v1/models            the served model (and LoRA adapter names, with `parent`)
 *   POST /v1/load_lora_adapter {lora_name, lora_path} (vLLM's route) when `loadLoraAdapter` is given:
 *                              the policy takes the adapter, and lora_name becomes a served name
 *   GET  /health               200 when serving (no API key needed)
 *   POST /tokenize             {prompt | messages (+ tools, add_generation_prompt)} → {tokens, count, max_model_len}
 *   POST /detokenize           {tokens} → {prompt}
 *
 * Stop strings and the full sampled tokens. The returned `text` / `content` ends before a matched
 * stop string (finish_reason "stop", stop_reason the string), as vLLM and OpenAI do, and never shows
 * a stop token. Token ids and logprobs are never cut: `token_ids` (with return_token_ids) and
 * `logprobs` cover every sampled token, including those that spell the stop string and the final
 * stop token, so a training client reads the exact sampled sequence from them. With
 * `include_stop_str_in_output: true` the text keeps the stop string too. `OpenAIPolicy` sends both.
 *
 * Streaming (`stream: true`) sends OpenAI chunks as Server-Sent Events, ending with `data: [DONE]`;
 * `stream_options.include_usage` adds a last chunk with `usage` and no choices. Text that might
 * become a stop string or a tool-call block is held back until it is known not to be one, so the
 * concatenated deltas equal the non-streamed text; tool calls arrive as `delta.tool_calls` at the
 * end. A chunk per sampled token carries its logprobs (and token id with return_token_ids); with
 * top-N alternatives those chunks follow the end of sampling (they need a scoring pass over the
 * whole completion).
 *
 * Requests run concurrently (an embedded policy batches them). With `apiKey`, every route but
 * /health needs `Authorization: Bearer <key>` (401 otherwise). Errors are JSON in OpenAI's shape
 * `{ error: { message, type, param, code } }` naming the request's own field. A client that
 * disconnects aborts its sampling.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { InvalidArgumentError } from '../core/errors.ts';
import { badField, EventStream, HttpError, readBody, send, sendError } from './server-http.ts';
import {
  chatRequest,
  completionRequest,
  detokenizeRequest,
  parseBody,
  requestField,
  tokenizeChatRequest,
  tokenizePromptRequest,
  type ChatRequest,
  type CompletionRequest,
} from './server-requests.ts';
import { checkScoring, hasStreaming, scoreTokens, type PositionScore } from './server-scoring.ts';
import {
  callOpenTag,
  parseReply,
  renderMessages,
  templateRendersToolCalls,
  type ChatRendering,
  type ServedToolFormat,
} from './server-tools.ts';
import type { ChatTokenizer } from '../core/chat.ts';
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
  /** The model's context length, reported by /tokenize as max_model_len (null when not given). */
  maxModelLen?: number;
  /**
   * The model's tool-call format (`formatFor(tokenizer, 'native')` from agents/formats), to parse
   * replies into `tool_calls` and write history `tool_calls` as the model writes them. Without it,
   * chat replies are plain content (see server-tools.ts).
   */
  toolFormat?: ServedToolFormat;
}

export interface PolicyServer {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Stop accepting connections, let requests in flight finish (aborting them after graceMs), close. */
  close(options?: { graceMs?: number }): Promise<void>;
}

function finishReasonText(r: SampleResult['finishReason']): string {
  return r === 'stop_token' || r === 'stop_string' ? 'stop' : r;
}

/** Earliest match of any stop string in `text`: its index and the string, or null. */
function firstStop(text: string, stops: readonly string[]): { at: number; stop: string } | null {
  let best: { at: number; stop: string } | null = null;
  for (const s of stops) {
    const at = text.indexOf(s);
    if (at >= 0 && (best === null || at < best.at)) best = { at, stop: s };
  }
  return best;
}

/** How one choice's sampled tokens become visible text (shared by whole and streamed replies). */
interface TextRule {
  skipSpecial: boolean;
  stops: readonly string[];
  keepStop: boolean;
  /** Tool-call parsing is on: the text is trimmed and call blocks are held back. */
  toolOpen?: string;
}

/** One choice being produced: its tokens so far, and (streaming) what text was sent. */
interface ChoiceState {
  index: number;
  prompt: number[];
  tokens: number[];
  logprobs: number[];
  sent: string;
  result?: SampleResult;
}

/** Serve `policy` over HTTP until `close()` is called. */
export async function servePolicy(policy: SamplingPolicy, options: ServeOptions): Promise<PolicyServer> {
  const host = options.host ?? '127.0.0.1';
  const maxBody = options.maxBodyBytes ?? 32 * 1024 * 1024;
  const tokenizer: ChatTokenizer = await policy.tokenizer();
  const created = Math.floor(Date.now() / 1000);
  const inflight = new Set<AbortController>();
  const loraNames = new Set(options.loraNames ?? []);
  let rendersToolCalls: boolean | null = null;
  const nativeToolCalls = () => (rendersToolCalls ??= templateRendersToolCalls(tokenizer));
  const tokenText = (id: number, asIds: boolean) => (asIds ? `token_id:${id}` : tokenizer.decode([id], { skipSpecialTokens: false }));

  function checkModel(model: string | undefined): void {
    // "default" is accepted too, as SGLang does, for clients that do not know the served name.
    if (model !== undefined && model !== options.modelName && model !== 'default' && !loraNames.has(model)) {
      const message = `The model \`${model}\` does not exist; this server serves "${options.modelName}".`;
      throw new HttpError(404, message, 'invalid_request_error', 'model', 'model_not_found');
    }
  }

  function checkIds(ids: readonly number[], param: string): void {
    if (ids.length === 0) throw badField(param, 'the prompt is empty');
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] >= tokenizer.vocabSize) {
        const message = `${param}[${i}]: token id ${ids[i]} is outside the vocabulary (size ${tokenizer.vocabSize})`;
        throw new HttpError(400, message, 'invalid_request_error', param);
      }
    }
  }

  function baseParams(body: CompletionRequest | ChatRequest, maxTokens: number, maxField: string, signal: AbortSignal): SampleParams {
    if (options.maxTokensLimit && maxTokens > options.maxTokensLimit) throw badField(maxField, `at most ${options.maxTokensLimit}`);
    const extraStops = body.stop_token_ids ?? [];
    const stopTokenIds = [...new Set([...(body.ignore_eos ? [] : tokenizer.stopTokenIds), ...extraStops])];
    const stopStrings = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
    if (stopStrings.some((s) => s === '')) throw badField('stop', 'a stop string cannot be empty');
    const params: SampleParams = { maxNewTokens: maxTokens, temperature: body.temperature ?? 1, stopTokenIds, signal };
    if (stopStrings.length) params.stopStrings = stopStrings;
    if (body.top_p != null) params.topP = body.top_p;
    if (body.top_k != null && body.top_k > 0) params.topK = body.top_k;
    if (body.seed != null) params.seed = body.seed;
    return params;
  }

  /** Sample one choice, reporting tokens as they come (live for a streaming policy, else at the end). */
  async function sampleChoice(state: ChoiceState, params: SampleParams, onToken?: (s: ChoiceState) => void): Promise<SampleResult> {
    const push = (token: number, logprob: number) => {
      state.tokens.push(token);
      state.logprobs.push(logprob);
      onToken?.(state);
    };
    let result: SampleResult;
    if (onToken && hasStreaming(policy)) {
      result = await policy.sampleStreaming(state.prompt, params, push);
      if (state.tokens.length !== result.tokens.length) {
        state.tokens.length = 0;
        state.logprobs.length = 0;
        result.tokens.forEach((t, i) => push(t, result.logprobs[i]));
      }
    } else {
      result = await policy.sample(state.prompt, params);
      result.tokens.forEach((t, i) => push(t, result.logprobs[i]));
    }
    state.result = result;
    return result;
  }

  /** n choices per prompt; seeds seed, seed+1, … so that n > 1 gives different samples reproducibly. */
  function sampleAll(states: ChoiceState[], n: number, params: SampleParams, onToken?: (s: ChoiceState) => void): Promise<SampleResult[]> {
    const seeded = (s: ChoiceState) => (params.seed === undefined ? params : { ...params, seed: params.seed + (s.index % n) });
    return Promise.all(states.map((s) => sampleChoice(s, seeded(s), onToken)));
  }

  /** Sampled ids without a trailing stop token (the text never shows it). */
  function visibleIds(tokens: readonly number[], result: SampleResult | undefined, stopIds: readonly number[]): readonly number[] {
    const done = result !== undefined;
    const last = tokens[tokens.length - 1];
    const stopped = done ? result.finishReason === 'stop_token' : last !== undefined && stopIds.includes(last);
    return stopped ? tokens.slice(0, -1) : tokens;
  }

  /** The final text of a choice, and the stop string that cut it. */
  function finalText(rule: TextRule, ids: readonly number[]): { text: string; stop: string | null } {
    let text = tokenizer.decode(ids, { skipSpecialTokens: rule.skipSpecial });
    const hit = rule.stops.length ? firstStop(text, rule.stops) : null;
    if (hit) text = text.slice(0, rule.keepStop ? hit.at + hit.stop.length : hit.at);
    return { text, stop: hit?.stop ?? null };
  }

  /** The prefix of the text so far that is safe to stream (cannot still turn into a stop string or a call block). */
  function safeText(rule: TextRule, ids: readonly number[]): string {
    let text = tokenizer.decode(ids, { skipSpecialTokens: rule.skipSpecial });
    let end = text.length;
    while (end > 0 && text[end - 1] === '\uFFFD') end--; // an incomplete UTF-8 character
    const hit = rule.stops.length ? firstStop(text, rule.stops) : null;
    if (hit) end = Math.min(end, rule.keepStop ? hit.at + hit.stop.length : hit.at);
    else if (rule.stops.length) {
      const hold = Math.max(...rule.stops.map((s) => s.length)) - 1;
      end = Math.min(end, text.length - hold);
    }
    if (rule.toolOpen !== undefined) {
      const open = rule.toolOpen === '' ? 0 : text.indexOf(rule.toolOpen);
      if (open >= 0) end = Math.min(end, open);
      for (let k = Math.min(rule.toolOpen.length - 1, text.length); k > 0; k--) {
        if (text.endsWith(rule.toolOpen.slice(0, k))) {
          end = Math.min(end, text.length - k);
          break;
        }
      }
      text = text.slice(0, Math.max(0, end)).trimStart();
      return text.trimEnd();
    }
    return text.slice(0, Math.max(0, end));
  }

  function stopReason(r: SampleResult, stop: string | null): number | string | null {
    if (r.finishReason === 'stop_token') return r.tokens[r.tokens.length - 1];
    if (r.finishReason === 'stop_string') return stop;
    return null;
  }

  function usage(states: ChoiceState[]): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
    const p = states.reduce((a, s) => a + s.prompt.length, 0);
    const c = states.reduce((a, s) => a + s.tokens.length, 0);
    return { prompt_tokens: p, completion_tokens: c, total_tokens: p + c };
  }

  /** Completions' logprobs object for a run of tokens (`null` entries for the first prompt token). */
  function completionLogprobs(
    ids: readonly number[],
    lps: readonly (number | null)[],
    tops: readonly (PositionScore | null)[] | null,
    asIds: boolean,
    start: number,
  ) {
    const tokens = ids.map((id) => tokenText(id, asIds));
    const textOffset: number[] = [];
    let offset = start;
    for (const id of ids) {
      textOffset.push(offset);
      offset += tokenizer.decode([id], { skipSpecialTokens: false }).length;
    }
    const top = ids.map((id, t) => {
      const score = tops?.[t];
      if (tops === null) return { [tokens[t]]: lps[t] };
      if (!score) return null;
      const entry: Record<string, number> = {};
      // The sampled (or prompt) token keeps its own logprob, the one in token_logprobs.
      for (const x of score.top) entry[tokenText(x.id, asIds)] ??= x.id === id ? (lps[t] as number) : x.logprob;
      entry[tokens[t]] ??= lps[t] as number;
      return entry;
    });
    return { tokens, token_logprobs: lps, top_logprobs: top, text_offset: textOffset };
  }

  // ---------- /v1/completions ----------

  async function completions(body: unknown, signal: AbortSignal, res: http.ServerResponse, closeAfter: boolean): Promise<void> {
    const req = parseBody(completionRequest, body);
    checkModel(req.model);
    const maxTokens = req.max_tokens ?? 16;
    if (maxTokens === 0 && !req.echo) throw badField('max_tokens', 'must be at least 1 (0 is for scoring the prompt with echo: true)');
    const params = baseParams(req, maxTokens, 'max_tokens', signal);
    const raw = req.prompt;
    const batch = Array.isArray(raw) && raw.length > 0 && (Array.isArray(raw[0]) || typeof raw[0] === 'string');
    const texts: (string | null)[] =
      typeof raw === 'string' ? [raw] : batch ? (raw as unknown[]).map((p) => (typeof p === 'string' ? p : null)) : [null];
    const prompts: number[][] =
      typeof raw === 'string'
        ? [tokenizer.encode(raw)]
        : batch
          ? (raw as (string | number[])[]).map((p) => (typeof p === 'string' ? tokenizer.encode(p) : [...p]))
          : [[...(raw as number[])]];
    const promptField = (i: number) => (batch ? `prompt[${i}]` : 'prompt');
    prompts.forEach((p, i) => checkIds(p, promptField(i)));
    const n = req.n ?? 1;
    const wantLogprobs = req.logprobs != null;
    const topN = req.logprobs ?? 0;
    const asIds = req.return_tokens_as_token_ids === true;
    const rule: TextRule = { skipSpecial: false, stops: params.stopStrings ?? [], keepStop: req.include_stop_str_in_output === true };
    const states: ChoiceState[] = prompts.flatMap((p, pi) =>
      Array.from({ length: n }, (_, j) => ({ index: pi * n + j, prompt: p, tokens: [], logprobs: [], sent: '' })),
    );
    const promptScores = new Map<number, PositionScore[]>();
    const scorePrompt = async (pi: number) => {
      if (!req.echo || !wantLogprobs || promptScores.has(pi)) return;
      promptScores.set(pi, await scoreTokens(policy, prompts[pi], topN, 'logprobs', promptField(pi), signal));
    };
    const echoText = (pi: number) => texts[pi] ?? tokenizer.decode(prompts[pi], { skipSpecialTokens: false });
    const echoLogprobs = (pi: number) => {
      const scores = promptScores.get(pi)!;
      return completionLogprobs(prompts[pi], [null, ...scores.map((s) => s.logprob)], [null, ...scores], asIds, 0);
    };
    /** Top-N of the sampled positions, from one scoring pass over prompt + completion. */
    const sampledTops = async (s: ChoiceState): Promise<PositionScore[] | null> => {
      if (!wantLogprobs || topN === 0 || s.tokens.length === 0) return null;
      const scores = await scoreTokens(policy, [...s.prompt, ...s.tokens], topN, 'logprobs', promptField(Math.floor(s.index / n)), signal);
      return scores.slice(s.prompt.length - 1);
    };
    const sampleParams = maxTokens === 0 ? null : params;
    const id = `cmpl-${randomUUID()}`;
    const head = { id, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: options.modelName };
    // Scoring requests fail before anything is sent.
    for (let pi = 0; pi < prompts.length; pi++) await scorePrompt(pi);
    if (wantLogprobs && topN > 0) checkScoring(policy, topN, 'logprobs');

    if (!req.stream) {
      if (sampleParams) await sampleAll(states, n, sampleParams);
      const choices = [];
      for (const s of states) {
        const r = s.result ?? { tokens: [], logprobs: [], finishReason: 'length' as const };
        const pi = Math.floor(s.index / n);
        const { text, stop } = finalText(rule, visibleIds(r.tokens, r, params.stopTokenIds ?? []));
        const prefix = req.echo ? echoText(pi) : '';
        const choice: Record<string, unknown> = {
          index: s.index,
          text: prefix + text,
          logprobs: null,
          finish_reason: finishReasonText(r.finishReason),
          stop_reason: stopReason(r, stop),
        };
        if (wantLogprobs) {
          const tops = await sampledTops(s);
          const own = completionLogprobs(r.tokens, r.logprobs, tops ?? (topN === 0 ? null : []), asIds, prefix.length);
          if (req.echo) {
            const e = echoLogprobs(pi);
            choice.logprobs = {
              tokens: [...e.tokens, ...own.tokens],
              token_logprobs: [...e.token_logprobs, ...own.token_logprobs],
              top_logprobs: [...e.top_logprobs, ...own.top_logprobs],
              text_offset: [...e.text_offset, ...own.text_offset],
            };
          } else choice.logprobs = own;
        }
        if (req.return_token_ids) {
          choice.token_ids = r.tokens;
          choice.prompt_token_ids = prompts[pi];
        }
        choices.push(choice);
      }
      return send(res, 200, { ...head, choices, usage: usage(states) }, closeAfter);
    }

    const stream = new EventStream(res, closeAfter);
    const chunk = (s: ChoiceState, text: string, extra: Record<string, unknown> = {}) =>
      stream.event({ ...head, choices: [{ index: s.index, text, logprobs: null, finish_reason: null, ...extra }] });
    const lengths = new Map<number, number>(); // tokens already reported per choice
    const offsets = new Map<number, number>(); // text offset of the next token per choice
    const emitTokens = (s: ChoiceState, tops: PositionScore[] | null, upTo: number) => {
      const done = lengths.get(s.index) ?? 0;
      for (let t = done; t < upTo; t++) {
        const ids = s.tokens.slice(0, t + 1);
        const safe = safeText(rule, visibleIds(ids, t + 1 === s.tokens.length ? s.result : undefined, params.stopTokenIds ?? []));
        const delta = safe.length > s.sent.length && safe.startsWith(s.sent) ? safe.slice(s.sent.length) : '';
        s.sent += delta;
        const extra: Record<string, unknown> = {};
        if (wantLogprobs) {
          const own = tops ? [tops[t]] : topN === 0 ? null : [];
          const lp = completionLogprobs([s.tokens[t]], [s.logprobs[t]], own, asIds, offsets.get(s.index) ?? 0);
          offsets.set(s.index, (offsets.get(s.index) ?? 0) + tokenizer.decode([s.tokens[t]], { skipSpecialTokens: false }).length);
          extra.logprobs = lp;
        }
        if (req.return_token_ids) extra.token_ids = [s.tokens[t]];
        if (delta || wantLogprobs || req.return_token_ids) chunk(s, delta, extra);
      }
      lengths.set(s.index, upTo);
    };
    for (const s of states) {
      const pi = Math.floor(s.index / n);
      if (!req.echo) continue;
      const prefix = echoText(pi);
      offsets.set(s.index, prefix.length);
      chunk(s, prefix, {
        ...(wantLogprobs ? { logprobs: echoLogprobs(pi) } : {}),
        ...(req.return_token_ids ? { prompt_token_ids: prompts[pi] } : {}),
      });
    }
    const live = wantLogprobs && topN > 0 ? undefined : (s: ChoiceState) => emitTokens(s, null, s.tokens.length);
    if (sampleParams) await sampleAll(states, n, sampleParams, live);
    for (const s of states) {
      const r = s.result ?? { tokens: [], logprobs: [], finishReason: 'length' as const };
      emitTokens(s, await sampledTops(s), r.tokens.length);
      const { text, stop } = finalText(rule, visibleIds(r.tokens, r, params.stopTokenIds ?? []));
      const rest = text.startsWith(s.sent) ? text.slice(s.sent.length) : '';
      chunk(s, rest, { finish_reason: finishReasonText(r.finishReason), stop_reason: stopReason(r, stop) });
    }
    if (req.stream_options?.include_usage) stream.event({ ...head, choices: [], usage: usage(states) });
    stream.done();
  }

  // ---------- /v1/chat/completions ----------

  function renderChat(
    messages: ChatRequest['messages'],
    requestTools: ChatRequest['tools'],
    addGenerationPrompt: boolean,
  ): { prompt: number[]; rendering: ChatRendering } {
    const rendering = renderMessages(tokenizer, options.toolFormat, nativeToolCalls(), messages, requestTools);
    let text: string;
    try {
      const toolsArg = rendering.templateTools ? { tools: rendering.templateTools } : {};
      text = tokenizer.applyChatTemplate(rendering.messages, { addGenerationPrompt, ...toolsArg });
    } catch (err) {
      throw badField('messages', `the chat template failed: ${(err as Error).message}`);
    }
    return { prompt: tokenizer.encode(text), rendering };
  }

  async function chat(body: unknown, signal: AbortSignal, res: http.ServerResponse, closeAfter: boolean): Promise<void> {
    const req = parseBody(chatRequest, body);
    checkModel(req.model);
    const useTools = (req.tools?.length ?? 0) > 0 && req.tool_choice !== 'none' && options.toolFormat !== undefined;
    const { prompt, rendering } = renderChat(req.messages, req.tool_choice === 'none' ? undefined : req.tools, true);
    checkIds(prompt, 'messages');
    const maxField = req.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
    const params = baseParams(req, req.max_completion_tokens ?? req.max_tokens ?? 512, maxField, signal);
    // Real policies ignore the hint; scripted ones read the conversation from it.
    params.hint = { role: 'single', messages: rendering.messages };
    const n = req.n ?? 1;
    const asIds = req.return_tokens_as_token_ids === true;
    const topN = req.top_logprobs ?? 0;
    if (topN > 0 && !req.logprobs) throw badField('top_logprobs', 'needs logprobs: true');
    const rule: TextRule = {
      skipSpecial: useTools ? false : (req.skip_special_tokens ?? true),
      stops: params.stopStrings ?? [],
      keepStop: req.include_stop_str_in_output === true,
      ...(useTools ? { toolOpen: callOpenTag(options.toolFormat!) } : {}),
    };
    const states: ChoiceState[] = Array.from({ length: n }, (_, i) => ({ index: i, prompt, tokens: [], logprobs: [], sent: '' }));
    const stopIds = params.stopTokenIds ?? [];
    if (topN > 0) checkScoring(policy, topN, 'top_logprobs');
    const tops = async (s: ChoiceState): Promise<PositionScore[] | null> => {
      if (topN === 0 || s.tokens.length === 0) return null;
      return (await scoreTokens(policy, [...s.prompt, ...s.tokens], topN, 'top_logprobs', 'messages', signal)).slice(s.prompt.length - 1);
    };
    const logprobEntries = (s: ChoiceState, from: number, to: number, scores: PositionScore[] | null) =>
      s.tokens.slice(from, to).map((id, k) => {
        const t = from + k;
        const text = tokenizer.decode([id], { skipSpecialTokens: false });
        const alt = (scores?.[t]?.top ?? []).map((x) => {
          const xt = tokenizer.decode([x.id], { skipSpecialTokens: false });
          const logprob = x.id === id ? s.logprobs[t] : x.logprob; // the sampled token keeps the sampler's logprob
          return { token: asIds ? `token_id:${x.id}` : xt, logprob, bytes: [...Buffer.from(xt, 'utf8')] };
        });
        return { token: asIds ? `token_id:${id}` : text, logprob: s.logprobs[t], bytes: [...Buffer.from(text, 'utf8')], top_logprobs: alt };
      });
    const reply = (s: ChoiceState) => {
      const r = s.result!;
      const { text, stop } = finalText(rule, visibleIds(r.tokens, r, stopIds));
      const parsed = useTools ? parseReply(options.toolFormat!, text) : { content: text, toolCalls: [] };
      const finish = parsed.toolCalls.length > 0 && r.finishReason !== 'length' ? 'tool_calls' : finishReasonText(r.finishReason);
      return { parsed, finish, stop };
    };
    const id = `chatcmpl-${randomUUID()}`;
    const head = { id, object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: options.modelName };

    if (!req.stream) {
      await sampleAll(states, n, params);
      const choices = [];
      for (const s of states) {
        const { parsed, finish, stop } = reply(s);
        const message: Record<string, unknown> = { role: 'assistant', content: parsed.content };
        if (parsed.toolCalls.length) message.tool_calls = parsed.toolCalls;
        const choice: Record<string, unknown> = {
          index: s.index,
          message,
          logprobs: null,
          finish_reason: finish,
          stop_reason: stopReason(s.result!, stop),
        };
        if (req.logprobs) choice.logprobs = { content: logprobEntries(s, 0, s.tokens.length, await tops(s)) };
        if (req.return_token_ids) choice.token_ids = s.result!.tokens;
        choices.push(choice);
      }
      const promptIds = req.return_token_ids ? { prompt_token_ids: prompt } : {};
      return send(res, 200, { ...head, choices, usage: usage(states), ...promptIds }, closeAfter);
    }

    const stream = new EventStream(res, closeAfter);
    const chunkHead = { ...head, object: 'chat.completion.chunk' };
    const chunk = (s: ChoiceState, delta: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
      stream.event({ ...chunkHead, choices: [{ index: s.index, delta, logprobs: null, finish_reason: null, ...extra }] });
    for (const s of states) chunk(s, { role: 'assistant', content: '' });
    const lengths = new Map<number, number>();
    const emitTokens = (s: ChoiceState, scores: PositionScore[] | null, upTo: number) => {
      for (let t = lengths.get(s.index) ?? 0; t < upTo; t++) {
        const safe = safeText(rule, visibleIds(s.tokens.slice(0, t + 1), t + 1 === s.tokens.length ? s.result : undefined, stopIds));
        const delta = safe.length > s.sent.length && safe.startsWith(s.sent) ? safe.slice(s.sent.length) : '';
        s.sent += delta;
        const extra: Record<string, unknown> = {};
        if (req.logprobs) extra.logprobs = { content: logprobEntries(s, t, t + 1, scores) };
        if (req.return_token_ids) extra.token_ids = [s.tokens[t]];
        if (delta || req.logprobs || req.return_token_ids) chunk(s, delta ? { content: delta } : {}, extra);
      }
      lengths.set(s.index, upTo);
    };
    const live = topN > 0 ? undefined : (s: ChoiceState) => emitTokens(s, null, s.tokens.length);
    await sampleAll(states, n, params, live);
    for (const s of states) {
      emitTokens(s, await tops(s), s.tokens.length);
      const { parsed, finish, stop } = reply(s);
      const content = parsed.content ?? '';
      if (content.length > s.sent.length && content.startsWith(s.sent)) chunk(s, { content: content.slice(s.sent.length) });
      if (parsed.toolCalls.length) {
        chunk(s, { tool_calls: parsed.toolCalls.map((c, index) => ({ index, ...c })) });
      }
      chunk(s, {}, { finish_reason: finish, stop_reason: stopReason(s.result!, stop) });
    }
    if (req.stream_options?.include_usage) stream.event({ ...chunkHead, choices: [], usage: usage(states) });
    stream.done();
  }

  // ---------- /tokenize, /detokenize ----------

  function tokenize(body: unknown): unknown {
    let tokens: number[];
    if (body !== null && typeof body === 'object' && 'messages' in body) {
      const req = parseBody(tokenizeChatRequest, body);
      checkModel(req.model);
      tokens = renderChat(req.messages, req.tools, req.add_generation_prompt ?? true).prompt;
    } else {
      const req = parseBody(tokenizePromptRequest, body);
      checkModel(req.model);
      tokens = tokenizer.encode(req.prompt);
    }
    return { tokens, count: tokens.length, max_model_len: options.maxModelLen ?? null };
  }

  function detokenize(body: unknown): unknown {
    const req = parseBody(detokenizeRequest, body);
    checkModel(req.model);
    req.tokens.forEach((t, i) => {
      if (t >= tokenizer.vocabSize) throw badField(`tokens[${i}]`, `token id ${t} is outside the vocabulary (size ${tokenizer.vocabSize})`);
    });
    return { prompt: tokenizer.decode(req.tokens, { skipSpecialTokens: false }) };
  }

  let closing: Promise<void> | null = null;
  const routes = ['/v1/models', '/v1/completions', '/v1/chat/completions', '/health', '/tokenize', '/detokenize', '/v1/load_lora_adapter'];
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
    const path = new URL(req.url ?? '/', 'http://x').pathname.replace(/\/+$/, '');
    const promptField = path === '/v1/chat/completions' ? 'messages' : 'prompt';
    try {
      const route = `${req.method} ${path}`;
      if (route === 'GET /health') {
        res.writeHead(200, { 'content-length': 0, ...(closing ? { connection: 'close' } : {}) });
        return void res.end();
      }
      if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
        const message = 'missing or invalid API key (send Authorization: Bearer <key>)';
        throw new HttpError(401, message, 'authentication_error', null, 'invalid_api_key');
      }
      switch (route) {
        case 'GET /v1/models': {
          const model = { id: options.modelName, object: 'model', created, owned_by: 'matpo', max_model_len: options.maxModelLen ?? null };
          const adapters = [...loraNames].map((id) => ({ ...model, id, parent: options.modelName }));
          return send(res, 200, { object: 'list', data: [model, ...adapters] }, closing !== null);
        }
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
          return await completions(await readBody(req, maxBody), controller.signal, res, closing !== null);
        case 'POST /v1/chat/completions':
          return await chat(await readBody(req, maxBody), controller.signal, res, closing !== null);
        case 'POST /tokenize':
          return send(res, 200, tokenize(await readBody(req, maxBody)), closing !== null);
        case 'POST /detokenize':
          return send(res, 200, detokenize(await readBody(req, maxBody)), closing !== null);
        default:
          if (routes.includes(path)) throw new HttpError(405, `method ${req.method} not allowed on ${path}`);
          throw new HttpError(404, `no route ${req.method} ${path}`, 'invalid_request_error', null, 'not_found');
      }
    } catch (err) {
      if (err instanceof HttpError) return sendError(res, err);
      if (controller.signal.aborted) return; // nobody to answer
      if (err instanceof InvalidArgumentError) {
        const field = requestField(err.argument, promptField);
        const detail = err.message.startsWith(`${err.argument}: `) ? err.message.slice(err.argument.length + 2) : err.message;
        return sendError(res, badField(field, detail));
      }
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
