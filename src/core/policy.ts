/**
 * The one door to compute. Everything above the policy layer (agents, rl, train) talks to a model
 * only through these two contracts; everything below (engine, model, HTTP clients) is hidden behind
 * them. They mirror Tinker's own client split:
 *
 * - `SamplingPolicy`: a tokenizer and `sample(prompt tokens) → tokens + logprobs`. Rollouts, the
 *   judge, evaluation and the OpenAI-compatible server need nothing more. Implementations: the
 *   embedded engine, any OpenAI-compatible server (vLLM, SGLang, llama.cpp), the scripted expert.
 * - `TrainablePolicy`: a sampling policy that also computes logprobs (`forward`), accumulates
 *   gradients of a loss written in TypeScript (`forwardBackward`), applies AdamW (`optimStep`) and
 *   saves weights and optimizer state. The training loops take one of these, so they call no
 *   optional methods.
 */
import type { ChatMessage, ChatTokenizer } from './chat.ts';
import type { Datum, Role } from './records.ts';

export interface SampleParams {
  maxNewTokens: number;
  /** 0 means greedy. Default 1. */
  temperature?: number;
  topP?: number;
  topK?: number;
  stopTokenIds?: readonly number[];
  stopStrings?: readonly string[];
  /** Same seed, same prompt, same weights → same tokens. */
  seed?: number;
  signal?: AbortSignal;
  /**
   * What the caller knows about this call. Real policies ignore it; scripted policies (the offline
   * expert, test policies) use it to decide what to write without parsing the prompt.
   */
  hint?: SampleHint;
}

export interface SampleHint {
  role: Role;
  /** The conversation so far, as messages (the prompt tokens are its rendering). */
  messages: readonly ChatMessage[];
  questionId?: string;
  sequenceId?: string;
}

export type FinishReason = 'stop_token' | 'stop_string' | 'length' | 'abort';

export interface SampleResult {
  /** The sampled tokens, exactly as sampled (a stop token, when hit, is included as the last token). */
  tokens: number[];
  /**
   * log π(token | prefix) under the sampling distribution's underlying model (temperature-1 logits unless
   * stated by the policy), one per token.
   */
  logprobs: number[];
  finishReason: FinishReason;
}

/**
 * Per-datum arrays produced by the forward pass: logprobs[t] = log π(tokens[t] | tokens[<t]) for t ≥ 1,
 * and 0 at t = 0; entropies[t] likewise (entropy of the distribution that predicted tokens[t]).
 */
export interface ForwardOutput {
  logprobs: Float32Array[];
  entropies: Float32Array[];
}

/**
 * A loss in plain TypeScript over the forward outputs of one micro-batch. It returns the loss value,
 * d(loss)/d(logprob) per token (and optionally per entropy), and metrics. The policy splits a batch
 * into micro-batches by token budget and calls the loss once per micro-batch, summing losses and
 * gradients: a loss must therefore be normalised by batch-level constants it closes over (e.g. the
 * total trainable-token count of the whole mini-batch), never by micro-batch statistics.
 */
export type LossFn = (datums: readonly Datum[], forward: ForwardOutput) => LossOutput;

export interface LossOutput {
  loss: number;
  dLogprobs: Float32Array[];
  dEntropies?: Float32Array[];
  /** Additive metrics (sums); the caller divides as it needs. */
  metrics: Record<string, number>;
}

export interface ForwardBackwardResult {
  loss: number;
  metrics: Record<string, number>;
  tokens: number;
  microBatches: number;
}

export interface OptimParams {
  learningRate: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Clip the global gradient norm to this value (no clipping when absent or 0). */
  maxGradNorm?: number;
}

export interface OptimResult {
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** false when the gradient was not finite and the step was skipped (gradients are zeroed either way). */
  applied: boolean;
  step: number;
}

export interface SamplingPolicy {
  readonly name: string;
  /** True when sample() returns exact token ids and logprobs (usable for training). */
  readonly tokenExact: boolean;
  tokenizer(): Promise<ChatTokenizer>;
  sample(promptTokens: readonly number[], params: SampleParams): Promise<SampleResult>;
  close(): Promise<void>;
}

export interface TrainablePolicy extends SamplingPolicy {
  /** Forward only: logprobs (and entropies) of the given sequences under the current weights. */
  forward(datums: readonly Pick<Datum, 'tokens'>[], options?: { microBatchTokens?: number }): Promise<ForwardOutput>;
  /** Forward, loss, backward; gradients accumulate until optimStep. */
  forwardBackward(datums: readonly Datum[], loss: LossFn, options?: { microBatchTokens?: number }): Promise<ForwardBackwardResult>;
  /** One AdamW step over the accumulated gradients, which are then zeroed. */
  optimStep(params: OptimParams): Promise<OptimResult>;
  /** Write a Hugging Face model directory (weights, config, tokenizer, chat template): complete on its own. */
  save(dir: string): Promise<void>;
  /** Optimizer moments and step counter, for exact resume (written beside a checkpoint). */
  saveOptimizerState(dir: string): Promise<void>;
  loadOptimizerState(dir: string): Promise<void>;
}

/** True when a sampling policy can also be trained. */
export function isTrainable(policy: SamplingPolicy): policy is TrainablePolicy {
  const p = policy as Partial<TrainablePolicy>;
  return (
    typeof p.forward === 'function' &&
    typeof p.forwardBackward === 'function' &&
    typeof p.optimStep === 'function' &&
    typeof p.save === 'function'
  );
}

/** Opens a model directory as a trainable policy. */
export type PolicyLoader = (modelDir: string) => Promise<TrainablePolicy>;
