/**
 * The one door to compute. Everything above this layer (agents, rl, train) talks to a model only
 * through `Policy`; everything below (engine, model, HTTP clients) is hidden behind it.
 *
 * Implementations: `EmbeddedPolicy` (our engine, off the main thread) and `OpenAIPolicy` (any
 * OpenAI-compatible server: vLLM, SGLang, llama.cpp). Test policies live next to their tests.
 */

/** A chat message as the chat template sees it. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  /** Name of the tool whose result this is (role 'tool'). */
  name?: string;
}

/** A tool as the chat template sees it (OpenAI function format). */
export interface ToolSpec {
  type: 'function';
  function: { name: string; description: string; parameters: Record<string, unknown> };
}

/**
 * A tokenizer with the model's chat template. Backed by `tokenizer.json` + `tokenizer_config.json`
 * (@huggingface/tokenizers and @huggingface/jinja).
 */
export interface ChatTokenizer {
  readonly vocabSize: number;
  /** Token ids that end an assistant turn (eos and e.g. <|im_end|>). */
  readonly stopTokenIds: readonly number[];
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  /** Encode plain text; special-token strings in `text` are recognised as special tokens. */
  encode(text: string): number[];
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
  /** Render messages with the chat template (Jinja) to text. */
  applyChatTemplate(messages: readonly ChatMessage[], options?: { tools?: readonly ToolSpec[]; addGenerationPrompt?: boolean }): string;
}

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
  /** log π(token | prefix) under the sampling distribution's underlying model (temperature-1 logits unless stated by the policy), one per token. */
  logprobs: number[];
  finishReason: FinishReason;
}

/**
 * What the trainer sees for one sequence. Arrays are aligned with `tokens`:
 * mask[t] = 1 when tokens[t] was sampled by the policy in this role (trainable), else 0;
 * advantages[t] and oldLogprobs[t] are meaningful where mask[t] = 1 (0 elsewhere).
 */
export interface Datum {
  tokens: number[];
  mask: number[];
  advantages: number[];
  oldLogprobs: number[];
  /** Logprobs under a frozen reference policy, when a KL term is used. */
  refLogprobs?: number[];
  questionId: string;
  /** The planner rollout this sequence belongs to (the unit of MATPO's sequence-level aggregation). */
  rolloutId: string;
  sequenceId: string;
  role: Role;
}

export type Role = 'planner' | 'worker' | 'single';

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

export interface Policy {
  readonly name: string;
  /** True when sample() returns exact token ids and logprobs (usable for training). */
  readonly tokenExact: boolean;
  tokenizer(): Promise<ChatTokenizer>;
  sample(promptTokens: readonly number[], params: SampleParams): Promise<SampleResult>;
  /** Forward only: logprobs (and entropies) of the given sequences under the current weights. */
  forward?(datums: readonly Pick<Datum, 'tokens'>[]): Promise<ForwardOutput>;
  /** Forward, loss, backward; gradients accumulate until optimStep. */
  forwardBackward?(datums: readonly Datum[], loss: LossFn, options?: { microBatchTokens?: number }): Promise<ForwardBackwardResult>;
  optimStep?(params: OptimParams): Promise<OptimResult>;
  /** Write a Hugging Face model directory (weights, config, tokenizer). */
  save?(dir: string): Promise<void>;
  /** Optimizer moments and step counter, for exact resume (written beside a checkpoint). */
  saveOptimizerState?(dir: string): Promise<void>;
  loadOptimizerState?(dir: string): Promise<void>;
  close(): Promise<void>;
}
