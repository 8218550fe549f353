/**
 * The RL loop (MATPO, or single-agent GRPO with rollout.mode = single). One training step:
 *
 *   questionsPerStep questions from the (seeded, per-epoch shuffled) training split
 *   → G rollouts each through the rollout runner (seeds drawn from the saved "sample" RNG stream)
 *   → rewards (rl/rewards) [→ DAPO refill: more questions until questionsPerStep groups have unequal
 *     rewards, at most rl.refillRounds extra rounds] → advantages + credit assignment (rl/credit) → datums (rl/datums)
 *   → [optional: old logprobs recomputed by the trainer; KL reference logprobs]
 *   → for each PPO epoch and mini-batch: policy.forwardBackward(datums, loss built over the whole
 *     mini-batch, { microBatchTokens }) → policy.optimStep
 *   → metrics by role → rollouts file → periodic evaluation → periodic checkpoint.
 *
 * Resume: the newest complete checkpoint restores weights, optimizer state, step, data position
 * (epoch, cursor; each epoch's order is a pure function of seed and epoch) and the sampling RNG
 * state, so the continued run draws exactly what the uninterrupted one would have drawn.
 * A stop request (SIGINT) finishes the step in flight, checkpoints and returns. A step whose loss or
 * gradient is not finite is skipped (no update) and logged as an event.
 */
import { groundingStats } from '../rl/grounding.ts';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Rollout } from '../core/records.ts';
import { ConfigError, MatpoError } from '../core/errors.ts';
import { filterZeroVarianceGroups } from '../rl/advantages.ts';
import { creditRegistry, groupByQuestion } from '../rl/credit.ts';
import { buildDatums } from '../rl/datums.ts';
import { makePolicyLoss } from '../rl/losses.ts';
import { scoreRollout, type AnswerScorer } from '../rl/rewards.ts';
import type { Datum } from '../core/records.ts';
import type { SamplingPolicy, TrainablePolicy } from '../core/policy.ts';
import { Rng } from '../util/rng.ts';
import { findLatestCheckpoint, listCheckpoints, OPTIMIZER_DIR, saveCheckpoint, type TrainerState } from './checkpoint.ts';
import { configToYaml, evalTemperature, lossConfig, rewardWeights, type TrainConfig } from './config.ts';
import { evaluate, mapLimit } from './evaluate.ts';
import { mean } from '../util/stats.ts';
import { Progress } from './progress.ts';
import {
  appendMetrics,
  ensureRunDir,
  runPaths,
  stepName,
  truncateRunAfter,
  writeFileAtomic,
  writeStepRecords,
  type MetricValue,
  type RunPaths,
} from './run-dir.ts';
import type { PolicyLoader } from '../core/policy.ts';
import type { Question, RolloutRunner } from '../core/question.ts';

export interface RlDeps {
  loadPolicy: PolicyLoader;
  makeRunner: (policy: SamplingPolicy) => RolloutRunner;
  trainQuestions: readonly Question[];
  evalQuestions: readonly Question[];
  /**
   * Questions of worlds no training used (a world set's unseen worlds), evaluated at every
   * evaluation next to evalQuestions (same number of questions): metrics `unseen/*`, records under
   * <run>/eval-unseen/.
   */
  unseenQuestions?: readonly Question[];
  scorer: AnswerScorer;
  log?: (line: string) => void;
}

export interface RlRunOptions {
  /** The run directory (runs/<name>). */
  runDir: string;
  resume: boolean;
  /** Set `requested` (e.g. from a SIGINT handler) to stop after the step in flight. */
  stop?: { requested: boolean };
}

export interface RlRunResult {
  step: number;
  stopped: boolean;
  evals: { step: number; accuracy: number; stderr: number }[];
  paths: RunPaths;
  /** The resumed run had already reached run.steps: nothing was loaded, run or written. */
  alreadyFinished?: boolean;
}

/** The training split as a stream: epoch e visits the questions in the order perm(seed, e). */
export class QuestionStream {
  private cache: { epoch: number; order: number[] } | null = null;
  constructor(
    private readonly questions: readonly Question[],
    private readonly seed: number,
    private readonly shuffle: boolean,
  ) {
    if (questions.length === 0) throw new ConfigError({ path: 'data', message: 'the training split has no questions' });
  }
  order(epoch: number): number[] {
    if (this.cache?.epoch !== epoch) {
      const order = this.questions.map((_, i) => i);
      if (this.shuffle) new Rng(`${this.seed}/data/${epoch}`).shuffle(order);
      this.cache = { epoch, order };
    }
    return this.cache.order;
  }
  /** Take n questions, advancing state.epoch / state.cursor. */
  take(state: Pick<TrainerState, 'epoch' | 'cursor'>, n: number): Question[] {
    const out: Question[] = [];
    while (out.length < n) {
      const order = this.order(state.epoch);
      if (state.cursor >= order.length) {
        state.epoch++;
        state.cursor = 0;
        continue;
      }
      out.push(this.questions[order[state.cursor++]]);
    }
    return out;
  }
  /**
   * Take up to n questions whose ids are not in `exclude`, passing over excluded ones (they count as
   * drawn), and looking at no more than one epoch's worth of questions: fewer when the split runs out.
   */
  takeNew(state: Pick<TrainerState, 'epoch' | 'cursor'>, n: number, exclude: ReadonlySet<string>): Question[] {
    const out: Question[] = [];
    for (let looked = 0; out.length < n && looked < this.questions.length; looked++) {
      const [q] = this.take(state, 1);
      if (!exclude.has(q.id) && !out.some((o) => o.id === q.id)) out.push(q);
    }
    return out;
  }
}

const sumMask = (m: readonly number[]) => m.reduce((a, b) => a + (b ? 1 : 0), 0);

/** Per-role rollout statistics: reward, accuracy, format, tokens, turns, workers per rollout. */
export function rolloutMetrics(rollouts: readonly Rollout[]): Record<string, number> {
  const m: Record<string, number> = {};
  if (rollouts.length === 0) return m;
  const root = rollouts[0].root.role;
  m[`${root}/reward`] = mean(rollouts.map((r) => r.reward?.total ?? NaN));
  m[`${root}/accuracy`] = mean(rollouts.map((r) => r.reward?.accuracy ?? NaN));
  m[`${root}/format`] = mean(rollouts.map((r) => r.root.formatScore));
  m[`${root}/tokens`] = mean(rollouts.map((r) => r.root.tokens.length));
  m[`${root}/trainable_tokens`] = mean(rollouts.map((r) => sumMask(r.root.mask)));
  m[`${root}/turns`] = mean(rollouts.map((r) => r.root.turns.length));
  m[`${root}/answered`] = mean(rollouts.map((r) => (r.answer !== null ? 1 : 0)));
  m[`${root}/advantage_abs`] = mean(rollouts.filter((r) => r.advantage !== undefined).map((r) => Math.abs(r.advantage!)));
  m[`${root}/sequences`] = rollouts.length;
  if (rollouts.some((r) => r.mode === 'matpo')) {
    const workers = rollouts.flatMap((r) => r.workers);
    m['planner/workers_per_rollout'] = workers.length / rollouts.length;
    m['planner/format_workers'] = mean(rollouts.map((r) => r.reward?.formatWorkers ?? NaN));
    m['worker/sequences'] = workers.length;
    if (workers.length) {
      // workers are not judged: a worker's reward is its parent rollout's (what credit assignment uses)
      m['worker/reward'] = mean(rollouts.flatMap((r) => r.workers.map(() => r.reward?.total ?? NaN)));
      m['worker/format'] = mean(workers.map((w) => w.formatScore));
      m['worker/tokens'] = mean(workers.map((w) => w.tokens.length));
      m['worker/trainable_tokens'] = mean(workers.map((w) => sumMask(w.mask)));
      m['worker/turns'] = mean(workers.map((w) => w.turns.length));
    }
  }
  return m;
}

/** Turn the loss's additive sums into per-role rates: clip fraction, ratio mean/std, entropy, KL. */
export function lossMetrics(sums: Record<string, number>): Record<string, number> {
  const m: Record<string, number> = {};
  for (const prefix of ['', 'planner/', 'worker/', 'single/']) {
    const n = sums[`${prefix}tokens`];
    if (!n) continue;
    const out = prefix === '' ? 'train/' : prefix;
    const ratio = sums[`${prefix}ratio_sum`] / n;
    m[`${out}clip_fraction`] = sums[`${prefix}clipped`] / n;
    m[`${out}dual_clip_fraction`] = sums[`${prefix}dual_clipped`] / n;
    m[`${out}ratio_mean`] = ratio;
    m[`${out}ratio_std`] = Math.sqrt(Math.max(0, sums[`${prefix}ratio_sq_sum`] / n - ratio * ratio));
    m[`${out}entropy`] = sums[`${prefix}entropy_sum`] / n;
    m[`${out}approx_kl`] = sums[`${prefix}approx_kl_sum`] / n;
    m[`${out}kl_ref`] = sums[`${prefix}kl_ref_sum`] / n;
  }
  return m;
}

/** Split kept rollouts' datums into `n` mini-batches of whole rollouts (a unit never straddles two). */
export function miniBatches(datums: readonly Datum[], n: number): Datum[][] {
  const byRollout: Datum[][] = [];
  for (const d of datums) {
    const last = byRollout[byRollout.length - 1];
    if (last && last[0].rolloutId === d.rolloutId) last.push(d);
    else byRollout.push([d]);
  }
  const k = Math.min(n, byRollout.length);
  const out: Datum[][] = [];
  for (let i = 0; i < k; i++)
    out.push(byRollout.slice(Math.floor((i * byRollout.length) / k), Math.floor(((i + 1) * byRollout.length) / k)).flat());
  return out.filter((b) => b.length > 0);
}

export async function trainRl(config: TrainConfig, deps: RlDeps, options: RlRunOptions): Promise<RlRunResult> {
  // Nothing is written until the policy (and reference policy, optimizer state) loaded: a run that
  // fails to start leaves its directory as it was (a new run's directory is removed again).
  const paths = runPaths(options.runDir);
  const existed = existsSync(paths.root);
  const ck = options.resume ? findLatestCheckpoint(paths) : null;
  if (!options.resume && (listCheckpoints(paths).length > 0 || existsSync(paths.metrics)))
    throw new MatpoError(
      'run-exists',
      `${paths.root} already holds a run; resume it with --resume ${paths.root} or choose another run.name`,
    );
  if (ck && ck.state.step >= config.run.steps) return { step: ck.state.step, stopped: false, evals: [], paths, alreadyFinished: true };
  const progress = new Progress(config.run.progress, deps.log);
  const log = (line: string) => progress.log(line);

  let policy: TrainablePolicy | null = null;
  let refPolicy: TrainablePolicy | null = null;
  let started = false;
  try {
    policy = await deps.loadPolicy(ck ? ck.dir : config.model.path);
    if (ck && existsSync(join(ck.dir, OPTIMIZER_DIR))) await policy.loadOptimizerState(join(ck.dir, OPTIMIZER_DIR));
    refPolicy = config.rl.loss.klCoef > 0 ? await deps.loadPolicy(config.model.path) : null;
    const state: TrainerState = ck
      ? structuredClone(ck.state)
      : { step: 0, epoch: 0, cursor: 0, rng: { sample: new Rng(`${config.run.seed}/sample`).getState() }, seed: config.run.seed };
    started = true;
    ensureRunDir(options.runDir);
    writeFileAtomic(paths.config, configToYaml(config));
    if (options.resume) {
      truncateRunAfter(paths, state.step);
      log(ck ? `resuming ${paths.root} from ${stepName(state.step)}` : `no complete checkpoint in ${paths.root}; starting from step 0`);
    }
    const sampleRng = new Rng(0);
    sampleRng.setState(state.rng.sample);
    const stream = new QuestionStream(
      config.data.maxQuestions > 0 ? deps.trainQuestions.slice(0, config.data.maxQuestions) : deps.trainQuestions,
      config.run.seed,
      config.data.shuffle,
    );
    const runner = deps.makeRunner(policy);
    const weights = rewardWeights(config);
    const lossCfg = lossConfig(config);
    creditRegistry.get(config.rl.credit);
    const evals: RlRunResult['evals'] = [];
    const G = config.rollout.groupSize;
    const mode = config.rollout.mode;

    // One held-out set at one step, with the same sampling seeds at every evaluation (common random
    // numbers for before/after): records under `dir`, metrics renamed from eval/ to `prefix`/.
    const evalSet = async (
      step: number,
      set: { questions: readonly Question[]; name: string; dir: string; prefix: string; where: string },
    ) => {
      const t0 = performance.now();
      const qs = config.run.evalQuestions > 0 ? set.questions.slice(0, config.run.evalQuestions) : set.questions;
      const bar = progress.bar(set.name, qs.length * config.run.evalRepeats);
      const r = await evaluate({
        runner,
        questions: qs,
        repeats: config.run.evalRepeats,
        mode,
        seed: `${config.run.seed}/${set.name.replace(' ', '-')}`,
        temperature: evalTemperature(config),
        scorer: deps.scorer,
        weights,
        concurrency: config.rollout.concurrency,
        onRollout: (d) => bar.update(d),
      });
      bar.stop();
      mkdirSync(set.dir, { recursive: true });
      writeStepRecords(set.dir, step, r.rollouts);
      const s = (performance.now() - t0) / 1000;
      const renamed = Object.entries(r.metrics).map(([k, v]) => [k.replace(/^eval\//, `${set.prefix}/`), v]);
      appendMetrics(paths, step, { ...Object.fromEntries(renamed), [`time/${set.name.replace(' ', '_')}_s`]: s });
      log(
        `eval @ step ${step}${set.where}: accuracy ${r.accuracy.toFixed(3)} ± ${r.stderr.toFixed(3)} ` +
          `over ${r.questions} questions (${s.toFixed(1)} s)`,
      );
      return { r, s };
    };
    const runEval = async (step: number): Promise<number> => {
      if (config.run.evalEvery <= 0 || deps.evalQuestions.length === 0) return 0;
      const held = await evalSet(step, { questions: deps.evalQuestions, name: 'eval', dir: paths.eval, prefix: 'eval', where: '' });
      evals.push({ step, accuracy: held.r.accuracy, stderr: held.r.stderr });
      const unseen = deps.unseenQuestions ?? [];
      if (unseen.length === 0) return held.s;
      const dir = join(paths.root, 'eval-unseen');
      const u = await evalSet(step, { questions: unseen, name: 'eval unseen', dir, prefix: 'unseen', where: ' on unseen worlds' });
      return held.s + u.s;
    };

    if (state.step === 0 && !existsSync(join(paths.eval, `${stepName(0)}.jsonl`))) await runEval(0);

    const stepsBar = progress.bar('steps', config.run.steps, state.step);
    let stopped = false;
    let lastCheckpoint = ck ? state.step : -1;
    while (state.step < config.run.steps) {
      if (options.stop?.requested) {
        stopped = true;
        break;
      }
      const step = state.step + 1;
      const tStep = performance.now();
      const metrics: Record<string, MetricValue> = {};

      // 1. rollouts, scored as they arrive. DAPO dynamic sampling with refill: while fewer than
      // questionsPerStep groups have unequal rewards, draw as many new questions as groups are
      // missing, for at most rl.refillRounds extra rounds (without refill the batch shrinks). A refill
      // question is one not yet rolled out in this step: a group is the rollouts of one question id.
      const rbar = progress.bar('rollouts', config.rollout.questionsPerStep * G);
      let done = 0;
      let t0 = performance.now();
      let scoreS = 0;
      let questionIndex = 0;
      let total = 0;
      const generate = async (questions: readonly Question[]): Promise<Rollout[]> => {
        const jobs = questions.flatMap((q) => {
          const qi = questionIndex++;
          return Array.from({ length: G }, (_, g) => ({ q, g, id: `${stepName(step)}/q${qi}/${g}`, seed: sampleRng.nextU32() }));
        });
        total += jobs.length;
        rbar.setTotal(total);
        const out = await mapLimit(jobs, config.rollout.concurrency, async (j) => {
          const { temperature } = config.rollout;
          const r = await runner({ question: j.q, index: j.g, rolloutId: j.id, mode, seed: j.seed, temperature });
          rbar.update(++done);
          return r;
        });
        const ts = performance.now();
        await mapLimit(out, config.rollout.concurrency, (r) => scoreRollout(r, deps.scorer, weights, mode));
        scoreS += (performance.now() - ts) / 1000;
        return out;
      };
      const rollouts = await generate(stream.take(state, config.rollout.questionsPerStep));
      let rounds = 0;
      if (config.rl.dropZeroVarianceGroups && config.rl.refillRounds > 0) {
        const keptGroups = () => filterZeroVarianceGroups(groupByQuestion(rollouts).map((g) => g.map((r) => r.reward!.total))).kept.length;
        let kept = keptGroups();
        while (kept < config.rollout.questionsPerStep && rounds < config.rl.refillRounds) {
          const fresh = stream.takeNew(state, config.rollout.questionsPerStep - kept, new Set(rollouts.map((r) => r.questionId)));
          if (fresh.length === 0) break;
          rounds++;
          rollouts.push(...(await generate(fresh)));
          kept = keptGroups();
        }
        metrics['train/refill_rounds'] = rounds;
        if (kept < config.rollout.questionsPerStep)
          appendMetrics(paths, step, {
            event: 'refill_short',
            reason:
              `${kept} of ${config.rollout.questionsPerStep} groups with unequal rewards after ${rounds} ` +
              'refill rounds (rl.refillRounds)',
          });
      }
      rbar.stop();
      metrics['time/rollout_s'] = (performance.now() - t0) / 1000 - scoreS;

      // 2. advantages, datums
      t0 = performance.now();
      const credit = creditRegistry.get(config.rl.credit)(rollouts, {
        estimator: config.rl.estimator,
        eps: config.rl.eps,
        dropZeroVarianceGroups: config.rl.dropZeroVarianceGroups,
      });
      for (const r of rollouts) {
        if (credit.rolloutAdvantages.has(r.id)) r.advantage = credit.rolloutAdvantages.get(r.id);
        for (const s of [r.root, ...r.workers]) if (credit.sequenceAdvantages.has(s.id)) s.advantage = credit.sequenceAdvantages.get(s.id);
      }
      const { datums } = buildDatums(rollouts, credit);
      const grounding = groundingStats(rollouts);
      if (grounding.claiming > 0) metrics['train/grounding'] = grounding.rate;
      metrics['train/grounding_reports'] = grounding.claiming;
      metrics['train/groups'] = credit.metrics.groups;
      metrics['train/groups_kept'] = credit.metrics.groups_kept;
      metrics['train/datums'] = datums.length;
      metrics['time/reward_s'] = (performance.now() - t0) / 1000 + scoreS;

      // 3. optional trainer-side old logprobs (gap logged) and KL reference logprobs
      t0 = performance.now();
      if (datums.length && config.rl.recomputeOldLogprobs) {
        if (!policy.forward) throw new MatpoError('unsupported', `policy ${policy.name} cannot recompute logprobs (no forward)`);
        const fwd = await policy.forward(datums);
        let gap = 0;
        let gapMax = 0;
        let n = 0;
        datums.forEach((d, i) => {
          for (let t = 0; t < d.tokens.length; t++) {
            if (!d.mask[t]) continue;
            const g = Math.abs(fwd.logprobs[i][t] - d.oldLogprobs[t]);
            gap += g;
            gapMax = Math.max(gapMax, g);
            n++;
            d.oldLogprobs[t] = fwd.logprobs[i][t];
          }
        });
        metrics['train/old_logprob_gap'] = n ? gap / n : 0;
        metrics['train/old_logprob_gap_max'] = gapMax;
      }
      if (datums.length && refPolicy) {
        if (!refPolicy.forward)
          throw new MatpoError('unsupported', `policy ${refPolicy.name} cannot score reference logprobs (no forward)`);
        const ref = await refPolicy.forward(datums);
        datums.forEach((d, i) => (d.refLogprobs = Array.from(ref.logprobs[i])));
      }

      // 4. update
      const sums: Record<string, number> = {};
      const losses: number[] = [];
      const gradNorms: number[] = [];
      let skipped = 0;
      let tokens = 0;
      let micro = 0;
      if (datums.length === 0) {
        appendMetrics(paths, step, { event: 'no_update', reason: 'no datums (every group was filtered out)' });
      } else {
        for (let e = 0; e < config.optim.epochs; e++)
          for (const mb of miniBatches(datums, config.optim.miniBatches)) {
            const fb = await policy.forwardBackward(mb, makePolicyLoss(lossCfg, mb), { microBatchTokens: config.optim.microBatchTokens });
            const opt = await policy.optimStep({
              learningRate: config.optim.learningRate,
              beta1: config.optim.beta1,
              beta2: config.optim.beta2,
              eps: config.optim.eps,
              weightDecay: config.optim.weightDecay,
              maxGradNorm: config.optim.maxGradNorm,
            });
            for (const [k, v] of Object.entries(fb.metrics)) sums[k] = (sums[k] ?? 0) + v;
            tokens += fb.tokens;
            micro += fb.microBatches;
            if (!Number.isFinite(fb.loss) || !opt.applied) {
              skipped++;
              const reason = !Number.isFinite(fb.loss) ? `non-finite loss (${fb.loss})` : `non-finite gradient norm (${opt.gradNorm})`;
              appendMetrics(paths, step, { event: 'skipped', reason });
              log(`step ${step}: update skipped: ${reason}`);
            } else {
              losses.push(fb.loss);
              gradNorms.push(opt.gradNorm);
            }
          }
      }
      metrics['time/train_s'] = (performance.now() - t0) / 1000;
      Object.assign(metrics, rolloutMetrics(rollouts), lossMetrics(sums));
      metrics['train/loss'] = mean(losses);
      metrics['train/grad_norm'] = mean(gradNorms);
      metrics['train/lr'] = config.optim.learningRate;
      metrics['train/skipped'] = skipped;
      metrics['train/tokens'] = tokens;
      metrics['train/micro_batches'] = micro;
      metrics['train/epoch'] = state.epoch;

      if (config.run.saveRollouts) writeStepRecords(paths.rollouts, step, rollouts);
      state.step = step;
      state.rng.sample = sampleRng.getState();
      metrics['time/step_s'] = (performance.now() - tStep) / 1000;
      appendMetrics(paths, step, metrics);
      const root = mode === 'single' ? 'single' : 'planner';
      stepsBar.update(step, { reward: Number(metrics[`${root}/reward`]).toFixed(3) });
      if (!config.run.progress) {
        // A step whose groups were all dropped (equal rewards) makes no update and has no loss.
        const loss = metrics['train/datums'] === 0 ? 'no update (every group dropped)' : `loss ${Number(metrics['train/loss']).toFixed(4)}`;
        log(
          `step ${step}/${config.run.steps}: reward ${Number(metrics[`${root}/reward`]).toFixed(3)} ` +
            `accuracy ${Number(metrics[`${root}/accuracy`]).toFixed(3)} ${loss} (${Number(metrics['time/step_s']).toFixed(2)} s)`,
        );
      }

      if (config.run.evalEvery > 0 && (step % config.run.evalEvery === 0 || step === config.run.steps)) await runEval(step);
      if (step % config.run.checkpointEvery === 0 || step === config.run.steps || options.stop?.requested) {
        const tc = performance.now();
        await saveCheckpoint(paths, policy, state, config.run.keepCheckpoints);
        lastCheckpoint = step;
        appendMetrics(paths, step, { event: 'checkpoint', 'time/checkpoint_s': (performance.now() - tc) / 1000 });
      }
    }
    if (stopped && lastCheckpoint !== state.step && state.step > 0) await saveCheckpoint(paths, policy, state, config.run.keepCheckpoints);
    stepsBar.stop();
    return { step: state.step, stopped, evals, paths };
  } catch (err) {
    if (!started && !existed) rmSync(paths.root, { recursive: true, force: true });
    throw err;
  } finally {
    progress.stop();
    await policy?.close();
    await refPolicy?.close();
  }
}
