/**
 * Supervised warm-start on chat transcripts (e.g. the offline expert's demonstrations): each JSONL
 * line `{messages, tools?}` is rendered with the chat template to tokens with an assistant-only
 * mask, a seeded fraction is held out, and the policy is trained to minimise the mean negative
 * log-likelihood of the assistant tokens (batches bounded by a token budget, one optimizer step per
 * batch, micro-batches inside the policy). The held-out loss (mean NLL per assistant token) is
 * reported before training and after every epoch; with a held-out target, training goes on in
 * further cycles of the scheduled steps while the loss stays above it.
 */
import { readFileSync } from 'node:fs';
import { ConfigError, FileFormatError } from '../core/errors.ts';
import { makeNllLoss } from '../rl/losses.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';
import type { Datum } from '../core/records.ts';
import type { TrainablePolicy } from '../core/policy.ts';
import { Rng } from '../util/rng.ts';
import { Progress } from './progress.ts';

export interface Transcript {
  messages: ChatMessage[];
  tools?: ToolSpec[];
}

const ROLES = new Set(['system', 'user', 'assistant', 'tool']);

/** Read `{messages, tools?}` lines; a bad line is an error naming the file, line and field. */
export function readTranscripts(file: string): Transcript[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new FileFormatError({ file, message: `cannot read: ${(err as Error).message}` });
  }
  const out: Transcript[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let row: Record<string, unknown>;
    try {
      row = JSON.parse(line);
    } catch (err) {
      throw new FileFormatError({ file, line: i + 1, message: `invalid JSON: ${(err as Error).message}` });
    }
    if (!Array.isArray(row.messages) || row.messages.length === 0)
      throw new FileFormatError({ file, line: i + 1, field: 'messages', message: 'expected a non-empty array of messages' });
    row.messages.forEach((m: unknown, k: number) => {
      const msg = m as Record<string, unknown>;
      if (typeof msg !== 'object' || msg === null || !ROLES.has(msg.role as string) || typeof msg.content !== 'string')
        throw new FileFormatError({
          file,
          line: i + 1,
          field: `messages[${k}]`,
          message: 'expected {role: system|user|assistant|tool, content: string}',
        });
    });
    if (row.tools !== undefined && !Array.isArray(row.tools))
      throw new FileFormatError({ file, line: i + 1, field: 'tools', message: 'expected an array of tool specs' });
    out.push({ messages: row.messages as ChatMessage[], tools: row.tools as ToolSpec[] | undefined });
  });
  if (out.length === 0) throw new FileFormatError({ file, message: 'no transcripts' });
  return out;
}

export type LrSchedule = 'constant' | 'linear' | 'cosine';

export interface SftOptions {
  epochs: number;
  /** Peak learning rate. */
  learningRate: number;
  /** Decay after warm-up: linearly to a thousandth of the peak, along a half cosine to a tenth, or none. Default cosine. */
  schedule?: LrSchedule;
  /** Fraction of all steps spent warming up linearly from zero (default 0.03). */
  warmupFraction?: number;
  /** Token budget of one optimizer batch. */
  batchTokens: number;
  microBatchTokens: number;
  evalFraction: number;
  seed: number;
  maxGradNorm: number;
  /**
   * Weight of the loss on tokens that are not the assistant's (system, user, tool output), relative
   * to the assistant's 1; default 0. Those tokens cost the same forward and backward either way, and
   * they carry what a small model from scratch learns slowest from the assistant's alone: copying
   * names and values that appeared earlier in the context.
   */
  otherTokenWeight?: number;
  /** Drop examples longer than this (tokens); 0 = keep all. */
  maxTokens: number;
  /** Stop after this many optimizer steps (the schedule is fitted to them); 0 or absent = all epochs. */
  maxSteps?: number;
  /**
   * Train on while the held-out loss stays above this (0 or absent = off): when a cycle of the
   * scheduled steps (`maxSteps`, or all epochs) ends above it, another cycle of as many steps runs
   * on the next batches, warm-up and decay again (a warm restart), up to `maxCycles` cycles in all.
   * The held-out transcripts stay the same, so they stay held out.
   */
  targetHeldOutLoss?: number;
  /** Most cycles with `targetHeldOutLoss` (default 1). */
  maxCycles?: number;
  progress: boolean;
  log?: (line: string) => void;
  /** Called after each optimizer step with its metrics. */
  onStep?: (m: { step: number; epoch: number; loss: number; gradNorm: number; tokens: number; learningRate: number }) => void;
}

export interface SftResult {
  trainExamples: number;
  heldOutExamples: number;
  steps: number;
  skipped: number;
  /** Cycles of the schedule that ran (more than 1 only with `targetHeldOutLoss`). */
  cycles: number;
  /** Held-out mean NLL per assistant token: before training, then after each epoch (or the part of one a cycle ends in). */
  heldOutLoss: number[];
  /** Mean training loss of each epoch. */
  trainLoss: number[];
}

/** A transcript rendered for training: tokens and the assistant-only mask. */
export interface Rendered {
  tokens: number[];
  mask: number[];
}

function toDatum(r: Rendered, i: number): Datum {
  return {
    tokens: r.tokens,
    mask: r.mask,
    advantages: r.mask.map(() => 0),
    oldLogprobs: r.mask.map(() => 0),
    questionId: `sft-${i}`,
    rolloutId: `sft-${i}`,
    sequenceId: `sft-${i}`,
    role: 'single',
  };
}

/** Mean NLL per trainable token of `datums` under the policy (forward only). */
export async function heldOutNll(policy: TrainablePolicy, datums: readonly Datum[], microBatchTokens: number): Promise<number> {
  if (!policy.forward) throw new Error(`policy ${policy.name} has no forward()`);
  let nll = 0;
  let n = 0;
  // forward in chunks of about microBatchTokens
  for (let i = 0; i < datums.length;) {
    let j = i;
    let t = 0;
    while (j < datums.length && (j === i || t + datums[j].tokens.length <= microBatchTokens)) t += datums[j++].tokens.length;
    const chunk = datums.slice(i, j);
    const out = await policy.forward(chunk);
    chunk.forEach((d, b) =>
      d.mask.forEach((m, k) => {
        if (m) {
          nll -= out.logprobs[b][k];
          n++;
        }
      }),
    );
    i = j;
  }
  return n ? nll / n : NaN;
}

/**
 * Learning rate at optimizer step `step` (1-based) of `total`: linear warm-up over the first
 * `warmup` steps, then constant, linear decay to a thousandth of the peak, or a half cosine down to a tenth.
 */
export function scheduledLr(peak: number, step: number, total: number, warmup: number, schedule: LrSchedule): number {
  if (warmup > 0 && step <= warmup) return (peak * step) / warmup;
  if (schedule === 'constant' || total - warmup <= 1) return peak;
  // the first step after warm-up runs at the peak, the last at the floor
  const progress = Math.min(1, (step - warmup - 1) / (total - warmup - 1));
  if (schedule === 'linear') return peak * (1 - progress) + peak * 1e-3 * progress;
  return peak * (0.1 + 0.45 * (1 + Math.cos(Math.PI * progress)));
}

/** Batches of consecutive datums with at most `budget` tokens each (a longer one alone). */
function batches(datums: readonly Datum[], budget: number): Datum[][] {
  const out: Datum[][] = [];
  let cur: Datum[] = [];
  let n = 0;
  for (const d of datums) {
    if (cur.length && n + d.tokens.length > budget) {
      out.push(cur);
      cur = [];
      n = 0;
    }
    cur.push(d);
    n += d.tokens.length;
  }
  if (cur.length) out.push(cur);
  return out;
}

export async function trainSft(
  policy: TrainablePolicy,
  tokenizer: ChatTokenizer,
  transcripts: readonly Transcript[],
  render: (tokenizer: ChatTokenizer, messages: readonly ChatMessage[], tools?: readonly ToolSpec[]) => Rendered,
  o: SftOptions,
): Promise<SftResult> {
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  let all = transcripts.map((t, i) => toDatum(render(tokenizer, t.messages, t.tools), i)).filter((d) => d.mask.some((m) => m));
  if (o.maxTokens > 0) all = all.filter((d) => d.tokens.length <= o.maxTokens);
  if (all.length === 0)
    throw new FileFormatError({ file: 'transcripts', message: 'no transcript has assistant tokens (within the length limit)' });
  const rng = new Rng(`${o.seed}/sft`);
  rng.shuffle(all);
  const nEval = o.evalFraction > 0 && all.length >= 2 ? Math.min(all.length - 1, Math.max(1, Math.round(all.length * o.evalFraction))) : 0;
  const heldOut = all.slice(0, nEval);
  const target = o.targetHeldOutLoss ?? 0;
  if (target > 0 && !heldOut.length)
    throw new ConfigError({ path: 'sft.targetHeldOutLoss', message: 'needs held-out transcripts (sft.evalFraction > 0)' });
  const train = all.slice(nEval);
  const result: SftResult = {
    trainExamples: train.length,
    heldOutExamples: heldOut.length,
    steps: 0,
    skipped: 0,
    cycles: 0,
    heldOutLoss: [],
    trainLoss: [],
  };
  const progress = new Progress(o.progress, log);
  if (heldOut.length) {
    result.heldOutLoss.push(await heldOutNll(policy, heldOut, o.microBatchTokens));
    log(`sft: ${train.length} training / ${heldOut.length} held-out transcripts; held-out loss ${result.heldOutLoss[0].toFixed(4)}`);
  }
  // every epoch's order and batches up front, so the schedule knows the exact number of steps
  const steps = Array.from({ length: o.epochs }, (_, e) => {
    const order = train.slice();
    rng.shuffle(order);
    return batches(order, o.batchTokens).map((batch) => ({ batch, epoch: e + 1 }));
  }).flat();
  // a step limit shortens the schedule too, so the learning rate still decays to its floor
  const cycleSteps = o.maxSteps && o.maxSteps > 0 ? Math.min(steps.length, o.maxSteps) : steps.length;
  const maxCycles = target > 0 ? Math.max(1, o.maxCycles ?? 1) : 1;
  const schedule = o.schedule ?? 'cosine';
  for (let start = 0; ;) {
    result.cycles++;
    const end = Math.min(steps.length, start + cycleSteps);
    const warmup = Math.round((end - start) * (o.warmupFraction ?? 0.03));
    // the cycle in runs of one epoch (or the part of one this cycle covers), each reported when it ends
    for (let i = start; i < end;) {
      const epoch = steps[i].epoch;
      let j = i;
      while (j < end && steps[j].epoch === epoch) j++;
      const bar = progress.bar(`epoch ${epoch}`, j - i);
      const losses: number[] = [];
      for (let k = i; k < j; k++) {
        const batch = steps[k].batch;
        const fb = await policy.forwardBackward(batch, makeNllLoss(batch, { otherTokenWeight: o.otherTokenWeight }), {
          microBatchTokens: o.microBatchTokens,
        });
        const lr = scheduledLr(o.learningRate, k - start + 1, end - start, warmup, schedule);
        const opt = await policy.optimStep({ learningRate: lr, maxGradNorm: o.maxGradNorm });
        result.steps++;
        if (!Number.isFinite(fb.loss) || !opt.applied) {
          result.skipped++;
          log(`sft: step ${result.steps} skipped (non-finite loss or gradient)`);
        } else losses.push(fb.loss);
        o.onStep?.({ step: result.steps, epoch, loss: fb.loss, gradNorm: opt.gradNorm, tokens: fb.tokens, learningRate: lr });
        bar.update(k - i + 1, { loss: fb.loss.toFixed(4) });
      }
      bar.stop();
      const tl = losses.reduce((a, b) => a + b, 0) / Math.max(1, losses.length);
      result.trainLoss.push(tl);
      let line = `sft: epoch ${epoch}/${o.epochs} train loss ${tl.toFixed(4)}`;
      if (heldOut.length) {
        const h = await heldOutNll(policy, heldOut, o.microBatchTokens);
        result.heldOutLoss.push(h);
        line += `, held-out loss ${h.toFixed(4)}`;
      }
      log(line);
      i = j;
    }
    start = end;
    const last = result.heldOutLoss[result.heldOutLoss.length - 1];
    if (!(target > 0) || last <= target) break;
    if (result.cycles >= maxCycles || start >= steps.length) {
      log(
        `sft: held-out loss ${last.toFixed(4)} is still above the target ${target} after ${result.cycles} cycle(s) of ${cycleSteps} steps`,
      );
      break;
    }
    log(
      `sft: held-out loss ${last.toFixed(4)} is above the target ${target}: another cycle of ${cycleSteps} steps (${result.cycles + 1}/${maxCycles})`,
    );
  }
  progress.stop();
  return result;
}
