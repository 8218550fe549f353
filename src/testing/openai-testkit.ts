/**
 * Small, fully specified stand-ins used by the HTTP policy and server tests:
 *
 * - `ByteTokenizer`: ids 0–255 are UTF-8 bytes, 256 `<|im_start|>`, 257 `<|im_end|>`,
 *   258 `<|endoftext|>`; a ChatML chat template. Exact encode/decode round trips.
 * - `BigramPolicy`: a seeded random bigram model over that vocabulary. Logits of the next token
 *   depend only on the previous token; sampling honours temperature (0 = greedy), top-k, top-p,
 *   stop token ids, stop strings and the seed; logprobs are those of the temperature-1
 *   distribution, as the SamplingPolicy contract says. The same (prompt, params) always gives the same
 *   tokens and logprobs, which is what a token-exact round trip through HTTP is checked against.
 *   `topLogprobs` gives the exact top-k of its table (the server's scoring capability).
 */
import { Rng } from '../util/rng.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';
import type { SamplingPolicy, SampleParams, SampleResult } from '../core/policy.ts';
import { topOfRow, type PositionScore } from '../policy/server-scoring.ts';

const SPECIALS = ['<|im_start|>', '<|im_end|>', '<|endoftext|>'] as const;

export class ByteTokenizer implements ChatTokenizer {
  readonly vocabSize = 256 + SPECIALS.length;
  readonly stopTokenIds = [257, 258];
  readonly bosTokenId = null;
  readonly eosTokenId = 258;

  encode(text: string): number[] {
    const ids: number[] = [];
    const pattern = /<\|im_start\|>|<\|im_end\|>|<\|endoftext\|>/g;
    let last = 0;
    for (const m of text.matchAll(pattern)) {
      ids.push(...Buffer.from(text.slice(last, m.index), 'utf8'));
      ids.push(256 + SPECIALS.indexOf(m[0] as (typeof SPECIALS)[number]));
      last = m.index! + m[0].length;
    }
    ids.push(...Buffer.from(text.slice(last), 'utf8'));
    return ids;
  }

  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string {
    let out = '';
    let bytes: number[] = [];
    const flush = () => {
      out += Buffer.from(bytes).toString('utf8');
      bytes = [];
    };
    for (const id of ids) {
      if (id < 256) bytes.push(id);
      else {
        flush();
        if (!options?.skipSpecialTokens) out += SPECIALS[id - 256] ?? '';
      }
    }
    flush();
    return out;
  }

  tokenToId(token: string): number | undefined {
    const s = SPECIALS.indexOf(token as (typeof SPECIALS)[number]);
    if (s >= 0) return 256 + s;
    const b = Buffer.from(token, 'utf8');
    return b.length === 1 ? b[0] : undefined;
  }

  idToToken(id: number): string | undefined {
    if (id >= 256) return SPECIALS[id - 256];
    return id >= 0 ? String.fromCharCode(id) : undefined;
  }

  applyChatTemplate(messages: readonly ChatMessage[], options?: { tools?: readonly ToolSpec[]; addGenerationPrompt?: boolean }): string {
    let out = '';
    const tools = options?.tools?.length ? `\n\nTools: ${options.tools.map((t) => t.function.name).join(', ')}` : '';
    messages.forEach((m, i) => {
      out += `<|im_start|>${m.role}\n${m.content}${i === 0 && m.role === 'system' ? tools : ''}<|im_end|>\n`;
    });
    if (tools && messages[0]?.role !== 'system') out = `<|im_start|>system${tools}<|im_end|>\n${out}`;
    if (options?.addGenerationPrompt) out += '<|im_start|>assistant\n';
    return out;
  }
}

export interface BigramPolicyOptions {
  /** Vocabulary and chat template (default: ByteTokenizer, whose bytes get a readability bias). */
  tokenizer?: ChatTokenizer;
  /** Seed of the bigram table. */
  tableSeed?: number;
  /** Wait this long before answering each call (to exercise concurrency and timeouts). */
  delayMs?: number;
}

export class BigramPolicy implements SamplingPolicy {
  readonly name = 'bigram-test-policy';
  readonly tokenExact = true;
  readonly vocab: ChatTokenizer;
  private readonly rows = new Map<number, Float64Array>();
  private active = 0;
  /** Largest number of sample() calls seen running at once. */
  maxConcurrent = 0;
  calls = 0;

  constructor(private readonly options: BigramPolicyOptions = {}) {
    this.vocab = options.tokenizer ?? new ByteTokenizer();
  }

  async tokenizer(): Promise<ChatTokenizer> {
    return this.vocab;
  }

  /** log-softmax of the temperature-1 logits after `prev`. */
  logprobRow(prev: number): Float64Array {
    let row = this.rows.get(prev);
    if (row) return row;
    const rng = new Rng((this.options.tableSeed ?? 1) * 100_003 + prev);
    const V = this.vocab.vocabSize;
    const logits = new Float64Array(V);
    for (let v = 0; v < V; v++) {
      // Favour lowercase letters and space so sampled text is readable; make <|im_end|> plausible.
      const bias = this.options.tokenizer
        ? this.vocab.stopTokenIds.includes(v)
          ? 3
          : 0
        : (v >= 97 && v <= 122) || v === 32
          ? 2
          : v === 257
            ? 1.5
            : -2;
      logits[v] = bias + 2 * rng.next();
    }
    let max = -Infinity;
    for (const x of logits) max = Math.max(max, x);
    let sum = 0;
    for (const x of logits) sum += Math.exp(x - max);
    const lse = max + Math.log(sum);
    row = logits.map((x) => x - lse);
    this.rows.set(prev, row);
    return row;
  }

  /** Positions 1 … n−1: the logprob of tokens[t] and the k likeliest tokens after tokens[t−1] (exact, from the table). */
  async topLogprobs(tokens: readonly number[], k: number): Promise<PositionScore[]> {
    return tokens.slice(1).map((id, t) => {
      const row = this.logprobRow(tokens[t]);
      return { logprob: row[id], top: topOfRow(row, k) };
    });
  }

  /** Pick the next token from `row` (temperature-1 logprobs) under the sampling parameters. */
  private pick(row: Float64Array, params: SampleParams, rng: Rng): number {
    const T = params.temperature ?? 1;
    if (T === 0) {
      let best = 0;
      for (let v = 1; v < row.length; v++) if (row[v] > row[best]) best = v;
      return best;
    }
    let order = Array.from(row.keys()).sort((a, b) => row[b] - row[a] || a - b);
    if (params.topK && params.topK > 0) order = order.slice(0, params.topK);
    const weights = order.map((v) => Math.exp((row[v] - row[order[0]]) / T));
    let total = weights.reduce((a, b) => a + b, 0);
    if (params.topP !== undefined && params.topP < 1) {
      let acc = 0;
      let keep = 0;
      while (keep < order.length && acc < params.topP * total) acc += weights[keep++];
      order = order.slice(0, keep);
      weights.length = keep;
      total = acc;
    }
    let u = rng.next() * total;
    for (let i = 0; i < order.length; i++) {
      u -= weights[i];
      if (u < 0) return order[i];
    }
    return order[order.length - 1];
  }

  async sample(promptTokens: readonly number[], params: SampleParams): Promise<SampleResult> {
    this.calls++;
    this.active++;
    this.maxConcurrent = Math.max(this.maxConcurrent, this.active);
    try {
      if (this.options.delayMs) {
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(resolve, this.options.delayMs);
          params.signal?.addEventListener('abort', () => {
            clearTimeout(t);
            reject(params.signal!.reason);
          });
        });
      }
      if (params.signal?.aborted) throw params.signal.reason;
      const rng = new Rng(params.seed ?? Math.floor(Math.random() * 2 ** 31));
      const stops = params.stopTokenIds ?? this.vocab.stopTokenIds;
      const tokens: number[] = [];
      const logprobs: number[] = [];
      let prev = promptTokens[promptTokens.length - 1] ?? 0;
      while (tokens.length < params.maxNewTokens) {
        const row = this.logprobRow(prev);
        const next = this.pick(row, params, rng);
        tokens.push(next);
        logprobs.push(row[next]);
        prev = next;
        if (stops.includes(next)) return { tokens, logprobs, finishReason: 'stop_token' };
        if (params.stopStrings?.length) {
          const text = this.vocab.decode(tokens);
          if (params.stopStrings.some((s) => text.includes(s))) return { tokens, logprobs, finishReason: 'stop_string' };
        }
      }
      return { tokens, logprobs, finishReason: 'length' };
    } finally {
      this.active--;
    }
  }

  async close(): Promise<void> {}
}
