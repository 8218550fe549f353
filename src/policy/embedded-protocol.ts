/**
 * Messages between `EmbeddedPolicy` (main thread) and its engine worker (`embedded-worker.ts`).
 * Every request carries an id; the worker answers each with exactly one reply of the same id.
 * Sequences travel packed (one Int32Array of tokens + lengths) and results likewise, so big arrays
 * move as transferables instead of being copied element by element.
 */
import type { LoraConfig } from '../model/lora.ts';
import type { OptimParams, OptimResult, SampleResult } from '../core/policy.ts';

export interface InitOptions {
  dir: string;
  kernels?: 'native' | 'reference';
  threads?: number;
  seed?: number;
  /** Train a fresh LoRA adapter on the frozen model. */
  lora?: LoraConfig;
  /** Load this PEFT adapter directory on the frozen model. */
  adapter?: string;
}

/** Sampling parameters without what cannot cross a thread (signal, hint). */
export interface WireSampleParams {
  maxNewTokens: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  stopTokenIds?: number[];
  stopStrings?: string[];
  seed?: number;
}

export type Request =
  | { id: number; op: 'init'; options: InitOptions }
  | { id: number; op: 'forward'; tokens: Int32Array; lengths: Int32Array; microBatchTokens: number }
  | { id: number; op: 'forwardMicro'; tokens: Int32Array; lengths: Int32Array; firstIndex: number }
  | { id: number; op: 'backwardMicro'; dLogprobs: Float32Array; dEntropies: Float32Array | null }
  | { id: number; op: 'optimStep'; params: OptimParams }
  | { id: number; op: 'zeroGrads' }
  | { id: number; op: 'save'; dir: string }
  | { id: number; op: 'saveAdapter'; dir: string }
  | { id: number; op: 'saveMerged'; dir: string }
  | { id: number; op: 'loadAdapter'; dir: string }
  | { id: number; op: 'saveOptimizerState'; dir: string }
  | { id: number; op: 'loadOptimizerState'; dir: string }
  | { id: number; op: 'sample'; prompt: Int32Array; params: WireSampleParams; stream?: boolean }
  | { id: number; op: 'topLogprobs'; tokens: Int32Array; k: number }
  | { id: number; op: 'abort'; target: number }
  | { id: number; op: 'close' };

export interface InitResult {
  vocabSize: number;
  kernels: string;
  isa: string;
  threads: number;
  params: number;
  /** The adapter's config when LoRA is on (then `params` counts the adapter's trainable parameters). */
  lora: LoraConfig | null;
}

/** Packed per-token outputs: logprobs and entropies of all sequences laid end to end. */
export interface PackedForward {
  logprobs: Float32Array;
  entropies: Float32Array;
  tokens: number;
}

/**
 * Per position t = 1 … n−1 of a scored sequence: the logprob of tokens[t] and the k likeliest tokens
 * of the distribution that predicted it (ids and logprobs, k per position, likeliest first).
 */
export interface PackedTop {
  logprobs: Float64Array;
  topIds: Int32Array;
  topLogprobs: Float64Array;
  k: number;
}

export type ReplyPayload = InitResult | PackedForward | OptimResult | SampleResult | PackedTop | LoraConfig | null;

export type Reply =
  | { id: number; ok: true; result: ReplyPayload }
  /** A token of a streamed sample (before the sample's final reply). */
  | { id: number; token: number; logprob: number }
  | { id: number; ok: false; error: { name: string; code?: string; message: string; argument?: string; file?: string } };

/** Pack sequences of token ids into one Int32Array plus lengths. */
export function packTokens(seqs: readonly (readonly number[] | ArrayLike<number>)[]): { tokens: Int32Array; lengths: Int32Array } {
  let n = 0;
  for (const s of seqs) n += s.length;
  const tokens = new Int32Array(n);
  const lengths = new Int32Array(seqs.length);
  let o = 0;
  seqs.forEach((s, i) => {
    for (let j = 0; j < s.length; j++) tokens[o + j] = s[j];
    lengths[i] = s.length;
    o += s.length;
  });
  return { tokens, lengths };
}

/** Split a packed buffer back into per-sequence views (no copy). */
export function unpack<A extends Float32Array | Int32Array>(buf: A, lengths: ArrayLike<number>): A[] {
  const out: A[] = [];
  let o = 0;
  for (let i = 0; i < lengths.length; i++) {
    out.push(buf.subarray(o, o + lengths[i]) as A);
    o += lengths[i];
  }
  return out;
}
