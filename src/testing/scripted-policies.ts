/**
 * Policies for tests and benchmarks that write scripted text through the real tokenizer.
 *
 * - `ScriptedPolicy` replays assistant texts per role: step k of a role's script is the text of an
 *   agent's k-th turn in that role (k = earlier calls for the same sequence id), or a function of
 *   the hint and k. A step can end without the stop token (`stop: false`, finish reason `length`) or
 *   throw (`error`, a sampler failure). Texts longer than `maxNewTokens` are cut (finish `length`).
 *   Every call is recorded in `calls` for assertions.
 * - `InstantPolicy` answers instantly (token ids cached per text) with a fixed planner–worker
 *   behaviour: the planner delegates `subtasks` subtasks in its first turn and answers in its
 *   second; a worker makes `toolTurns` turns of `toolCalls` tool calls each, then states a finding,
 *   then writes its summary. It is for measuring the rollout engine's own overhead.
 *
 * Logprobs are deterministic and distinct per position: −0.01·(1 + i mod 7) for the i-th sampled
 * token, so tests can check they land where the tokens land.
 */
import type { ChatTokenizer } from '../core/chat.ts';
import type { SamplingPolicy, SampleHint, SampleParams, SampleResult } from '../core/policy.ts';
import type { Role } from '../core/records.ts';

export type ScriptStep = string | { text: string; stop?: boolean } | { error: string };
export type Script = readonly ScriptStep[] | ((hint: SampleHint, turn: number) => ScriptStep);

export function scriptedLogprob(i: number): number {
  return -0.01 * (1 + (i % 7));
}

/**
 * Turn index of an agent: earlier sample calls for the same sequence id (so dropped turns still
 * count), or the assistant messages so far when the hint has no sequence id.
 */
function turnCounter(): (hint: SampleHint) => number {
  const seen = new Map<string, number>();
  return (hint) => {
    if (hint.sequenceId === undefined) {
      let n = 0;
      for (const m of hint.messages) if (m.role === 'assistant') n++;
      return n;
    }
    const n = seen.get(hint.sequenceId) ?? 0;
    seen.set(hint.sequenceId, n + 1);
    return n;
  };
}

export class ScriptedPolicy implements SamplingPolicy {
  readonly name = 'scripted';
  readonly tokenExact = true;
  readonly calls: { role: Role; turn: number; promptTokens: number[]; params: SampleParams; result?: SampleResult }[] = [];
  private readonly stopId: number;
  private readonly turnOf = turnCounter();

  constructor(
    private readonly tok: ChatTokenizer,
    private readonly scripts: Partial<Record<Role, Script>>,
    private readonly options: { delayMs?: number } = {},
  ) {
    const stop = tok.tokenToId('<|im_end|>') ?? tok.stopTokenIds[0];
    if (stop === undefined) throw new Error('ScriptedPolicy needs a tokenizer with a stop token');
    this.stopId = stop;
  }

  async tokenizer(): Promise<ChatTokenizer> {
    return this.tok;
  }

  async sample(promptTokens: readonly number[], params: SampleParams): Promise<SampleResult> {
    const hint = params.hint;
    if (!hint) throw new Error('ScriptedPolicy needs params.hint');
    const turn = this.turnOf(hint);
    const record: (typeof this.calls)[number] = { role: hint.role, turn, promptTokens: promptTokens.slice(), params };
    this.calls.push(record);
    if (this.options.delayMs) await new Promise((r) => setTimeout(r, this.options.delayMs));
    const script = this.scripts[hint.role];
    if (!script) throw new Error(`no script for role ${hint.role}`);
    const step = typeof script === 'function' ? script(hint, turn) : script[turn];
    if (step === undefined) throw new Error(`the ${hint.role} script has no step ${turn}`);
    if (typeof step === 'object' && 'error' in step) throw new Error(step.error);
    const text = typeof step === 'string' ? step : step.text;
    const stop = typeof step === 'string' ? true : step.stop !== false;
    let tokens = this.tok.encode(text);
    if (stop) tokens.push(this.stopId);
    let finishReason: SampleResult['finishReason'] = stop ? 'stop_token' : 'length';
    if (tokens.length > params.maxNewTokens) {
      tokens = tokens.slice(0, params.maxNewTokens);
      finishReason = 'length';
    }
    record.result = { tokens, logprobs: tokens.map((_, i) => scriptedLogprob(i)), finishReason };
    return record.result;
  }

  async close(): Promise<void> {}
}

export interface InstantOptions {
  /** Delegate calls in the planner's first turn. Default 2. */
  subtasks?: number;
  /** Worker turns with tool calls before it states its finding. Default 2. */
  toolTurns?: number;
  /** Tool calls per such turn. Default 1. */
  toolCalls?: number;
  /** Name of the worker tool to call. Default `lookup`. */
  toolName?: string;
  /** Writes one tool call (the format under test). Default: Hermes `<tool_call>` JSON. */
  callText?: (name: string, args: Record<string, unknown>) => string;
}

export class InstantPolicy implements SamplingPolicy {
  readonly name = 'instant';
  readonly tokenExact = true;
  samples = 0;
  private readonly cache = new Map<string, number[]>();
  private readonly logprobs: number[] = [];
  private readonly stopId: number;
  private readonly o: Required<InstantOptions>;
  private readonly turnOf = turnCounter();

  constructor(
    private readonly tok: ChatTokenizer,
    options: InstantOptions = {},
  ) {
    this.o = {
      subtasks: options.subtasks ?? 2,
      toolTurns: options.toolTurns ?? 2,
      toolCalls: options.toolCalls ?? 1,
      toolName: options.toolName ?? 'lookup',
      callText: options.callText ?? ((name, args) => `<tool_call>\n${JSON.stringify({ name, arguments: args })}\n</tool_call>`),
    };
    const stop = tok.tokenToId('<|im_end|>') ?? tok.stopTokenIds[0];
    if (stop === undefined) throw new Error('InstantPolicy needs a tokenizer with a stop token');
    this.stopId = stop;
  }

  async tokenizer(): Promise<ChatTokenizer> {
    return this.tok;
  }

  /** The text of the next turn. */
  text(hint: SampleHint, turn: number): string {
    const o = this.o;
    if (hint.role === 'planner') {
      if (turn === 0)
        return Array.from({ length: o.subtasks }, (_, k) =>
          o.callText('delegate_subtask', { subtask: `Find the value of item ${k}.` }),
        ).join('\n');
      return 'The workers found every value. The answer is \\boxed{42}.';
    }
    const last = hint.messages[hint.messages.length - 1];
    if (hint.role === 'worker' && last?.role === 'user' && turn > 0) {
      return (
        'Conclusion: the value is 42.\nSupporting information: the lookup tool returned 42.\n' +
        'Observations: none.\nContribution to the main task: the value is 42.'
      );
    }
    if (turn < o.toolTurns)
      return Array.from({ length: o.toolCalls }, (_, k) => o.callText(o.toolName, { key: `item-${turn}-${k}` })).join('\n');
    return hint.role === 'single' ? 'The value is 42. \\boxed{42}' : 'The value is 42.';
  }

  async sample(_promptTokens: readonly number[], params: SampleParams): Promise<SampleResult> {
    if (!params.hint) throw new Error('InstantPolicy needs params.hint');
    this.samples++;
    const text = this.text(params.hint, this.turnOf(params.hint));
    let tokens = this.cache.get(text);
    if (!tokens) {
      tokens = [...this.tok.encode(text), this.stopId];
      this.cache.set(text, tokens);
    }
    while (this.logprobs.length < tokens.length) this.logprobs.push(scriptedLogprob(this.logprobs.length));
    if (tokens.length > params.maxNewTokens) {
      const cut = tokens.slice(0, params.maxNewTokens);
      return { tokens: cut, logprobs: this.logprobs.slice(0, cut.length), finishReason: 'length' };
    }
    return { tokens: tokens.slice(), logprobs: this.logprobs.slice(0, tokens.length), finishReason: 'stop_token' };
  }

  async close(): Promise<void> {}
}
