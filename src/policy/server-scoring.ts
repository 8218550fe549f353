/**
 * What a policy can offer `servePolicy` beyond `SamplingPolicy.sample`, found by duck typing:
 *
 * - `TopLogprobsPolicy.topLogprobs(tokens, k)`: for each position t ≥ 1 of a sequence, log π(tokens[t]
 *   | tokens[<t]) and the k most likely tokens of that distribution (temperature 1, full vocabulary,
 *   the distribution the sampler's logprobs are taken from). It serves `echo` with prompt logprobs,
 *   completions `logprobs: N ≥ 1` and chat `top_logprobs: N ≥ 1`, for prompt and sampled positions
 *   alike (one pass over prompt + completion). Without it, a trainable policy's `forward` still
 *   gives the prompt logprobs for `logprobs: 0`; anything else is a 400 naming the field.
 * - `StreamingPolicy.sampleStreaming(prompt, params, onToken)`: `sample` that reports each token as
 *   it is drawn, so `stream: true` sends chunks while sampling. Other policies are streamed after
 *   their sample completes (same chunks, all at the end).
 *
 * Sampled tokens keep the sampler's own logprob (`token_logprobs`, exact for training, and the same
 * value where the token appears in its top-N list); the other entries come from the scoring pass,
 * which agrees with the sampler up to float rounding. The pass costs one prefill-like forward over
 * prompt + completion per choice, and only requests asking for top-N alternatives pay it.
 */
import { InvalidArgumentError } from '../core/errors.ts';
import { badField } from './server-http.ts';
import type { SamplingPolicy, SampleParams, SampleResult, TrainablePolicy } from '../core/policy.ts';

export interface TopEntry {
  id: number;
  logprob: number;
}

/** The distribution that predicted one token: that token's logprob and the k most likely tokens. */
export interface PositionScore {
  logprob: number;
  top: TopEntry[];
}

export interface TopLogprobsPolicy {
  /** One entry per position 1 … tokens.length − 1. */
  topLogprobs(tokens: readonly number[], k: number, signal?: AbortSignal): Promise<PositionScore[]>;
}

export type OnToken = (token: number, logprob: number) => void;

export interface StreamingPolicy {
  sampleStreaming(prompt: readonly number[], params: SampleParams, onToken: OnToken): Promise<SampleResult>;
}

export function hasTopLogprobs(p: SamplingPolicy): p is SamplingPolicy & TopLogprobsPolicy {
  return typeof (p as Partial<TopLogprobsPolicy>).topLogprobs === 'function';
}

function hasForward(p: SamplingPolicy): p is TrainablePolicy {
  return typeof (p as Partial<TrainablePolicy>).forward === 'function';
}

export function hasStreaming(p: SamplingPolicy): p is SamplingPolicy & StreamingPolicy {
  return typeof (p as Partial<StreamingPolicy>).sampleStreaming === 'function';
}

/** The k largest entries of a log-probability row (ties by lower id), for implementers. */
export function topOfRow(row: ArrayLike<number>, k: number, offset = 0, length = row.length - offset): TopEntry[] {
  const out: TopEntry[] = [];
  if (k <= 0) return out;
  for (let v = 0; v < length; v++) {
    const x = row[offset + v];
    if (out.length === k && x <= out[k - 1].logprob) continue;
    let at = out.length < k ? out.length : k - 1;
    if (out.length < k) out.push({ id: v, logprob: x });
    else out[at] = { id: v, logprob: x };
    while (at > 0 && out[at - 1].logprob < x) {
      [out[at - 1], out[at]] = [out[at], out[at - 1]];
      at--;
    }
  }
  return out;
}

/** Throws the 400 naming `field` when `policy` cannot score with `k` alternatives. */
export function checkScoring(policy: SamplingPolicy, k: number, field: string): void {
  if (hasTopLogprobs(policy) || (k === 0 && hasForward(policy))) return;
  throw badField(field, `the served policy (${policy.name}) cannot give ${k > 0 ? 'top alternatives' : 'prompt logprobs'}`);
}

/**
 * Score positions 1 … n−1 of `tokens` with `k` alternatives each. `field` names the request field
 * that asked (for the 400 when the policy cannot); `tokensField` the one whose tokens a bad
 * sequence (e.g. longer than the context) comes from.
 */
export async function scoreTokens(
  policy: SamplingPolicy,
  tokens: readonly number[],
  k: number,
  field: string,
  tokensField: string,
  signal?: AbortSignal,
): Promise<PositionScore[]> {
  if (tokens.length < 2) return [];
  checkScoring(policy, k, field);
  try {
    if (hasTopLogprobs(policy)) return await policy.topLogprobs(tokens, k, signal);
    const f = await (policy as TrainablePolicy).forward([{ tokens: [...tokens] }]);
    return Array.from(f.logprobs[0].subarray(1), (logprob) => ({ logprob, top: [] }));
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw badField(tokensField, err.message.slice(err.argument.length + 2));
    throw err;
  }
}
