/**
 * The records that cross layers (see docs/design.md): a Sequence is one agent's token stream, a
 * Rollout is one planner (or single-agent) sequence with the worker sequences it spawned, a group is
 * the G rollouts of one question, and a Datum is what the trainer sees of one sequence. Rollouts
 * serialise to JSON as they are (one rollout per JSONL line).
 */
import type { ChatMessage } from './chat.ts';

/** The part an agent sequence plays: MATPO's planner and workers, or the single-agent baseline. */
export type Role = 'planner' | 'worker' | 'single';

/** Planner–worker rollouts (MATPO) or one tool-using agent (the single-agent GRPO baseline). */
export type Mode = 'matpo' | 'single';

export interface ToolCallRecord {
  /** Tool name as the model wrote it (may be unknown). */
  name: string;
  /** Parsed arguments, or null when they did not parse. */
  arguments: unknown;
  /** The raw text of the call block, exactly as sampled. */
  raw: string;
  /** True when the block parsed and matched the tool's schema (counts toward the format score). */
  valid: boolean;
  /** Error message returned to the model instead of a result, if any. */
  error?: string;
  /** The result text given back to the model (after the character cut-off). */
  result?: string;
  /** For delegate calls: the id of the worker sequence spawned. */
  workerId?: string;
  ms?: number;
}

export interface TurnRecord {
  /** Index into Sequence.tokens where this turn's prompt part (mask 0) begins. */
  promptStart: number;
  /** Index where the sampled part (mask 1) begins; it ends at `end`. */
  sampleStart: number;
  end: number;
  /** Decoded text of the sampled part (for display only; never re-tokenized). */
  text: string;
  finishReason: string;
  toolCalls: ToolCallRecord[];
  ms: number;
}

export type SequenceOutcome =
  | 'answered' // planner/single produced a final answer; worker produced its summary
  | 'no_answer' // stopped without an answer
  | 'turn_limit'
  | 'context_overflow'
  | 'token_budget' // the rollout's sampled-token budget ran out
  | 'failed'; // sampler or internal error (see `error`)

export interface Sequence {
  id: string;
  parentId: string | null;
  role: Role;
  tokens: number[];
  /** 1 only on tokens this policy sampled in this role. */
  mask: number[];
  /** Sampler logprob for sampled tokens, 0 elsewhere. */
  logprobs: number[];
  turns: TurnRecord[];
  /** The conversation as messages (for display and SFT export). */
  messages: ChatMessage[];
  outcome: SequenceOutcome;
  error?: string;
  /** Fraction of tool-call blocks that parsed and matched their schema (1 when there were none). */
  formatScore: number;
  /** Turns dropped by the drop-middle overflow policy. */
  droppedTurns?: number;
  /** The scalar advantage this sequence was trained with (filled in by the trainer; workers get their credit-assigned value). */
  advantage?: number;
}

export interface RewardParts {
  accuracy: number;
  formatPlanner: number;
  formatWorkers: number;
  total: number;
  [extra: string]: number;
}

export interface Rollout {
  id: string;
  questionId: string;
  /** Index of this rollout within its group (0..G-1). */
  index: number;
  mode: Mode;
  question: string;
  goldAnswers: string[];
  /** The planner sequence (mode 'matpo') or the single agent's sequence (mode 'single'). */
  root: Sequence;
  workers: Sequence[];
  answer: string | null;
  reward?: RewardParts;
  advantage?: number;
  outcome: SequenceOutcome;
  error?: string;
  timings: { totalMs: number; sampleMs: number; toolMs: number };
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
