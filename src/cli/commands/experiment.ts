/**
 * `matpo experiment`: MATPO against single-agent GRPO on the same noisy world under a context limit,
 * over several seeds. Per seed, both modes get the same world, the same expert demonstrations
 * (the same questions, each in its mode's format), the same supervised epochs, the same RL steps,
 * questions per step, group size and per-turn token limits. Reports accuracy on unseen worlds (seeds
 * no training used) and same-world held-out accuracy (mean ± std over seeds), grounding of reports,
 * training reward curves, context-overflow rate, sampled tokens per question and wall time, as a
 * Markdown table (also written to <out>/results.md) ready for the README.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../core/errors.ts';
import { choiceFlag, intFlag, parseFlags, type Command } from '../command.ts';
import { finiteMean, mean, sampleStd } from '../../util/stats.ts';
import { meanCurve, rewardCurvesSvg } from '../../demo/curves.ts';
import {
  EXPERIMENT_DEFAULTS,
  EXPERIMENT_READING,
  QUICK,
  modePhases,
  table,
  worldPhase,
  type Mode,
  type EvalSummary,
  type PipelineSettings,
  type RunSummary,
} from '../../demo/pipeline.ts';

function meanStd(xs: number[]): string {
  const v = xs.filter(Number.isFinite);
  if (v.length === 0) return '—';
  const m = mean(v);
  const sd = v.length > 1 ? sampleStd(v) : 0;
  return `${(100 * m).toFixed(1)} ± ${(100 * sd).toFixed(1)}`;
}

function avg(xs: number[], d = 0): string {
  const m = finiteMean(xs);
  return Number.isFinite(m) ? m.toFixed(d) : '—';
}

export function experimentTable(results: Record<Mode, RunSummary[]>): string {
  const rows = [['', 'MATPO (planner–worker)', 'single-agent GRPO']];
  const both = (label: string, f: (rs: RunSummary[]) => string) => rows.push([label, f(results.matpo), f(results.single)]);
  const unseen = [...results.matpo, ...results.single].flatMap((r) => r.seeds?.unseen ?? []);
  const unseenSeeds = [...new Set(unseen)].join(', ');
  if (unseen.length) {
    both(`unseen-world accuracy untrained, % (seeds ${unseenSeeds})`, (rs) => meanStd(rs.map((r) => r.unseenUntrained?.accuracy ?? NaN)));
    both('unseen-world accuracy before RL, %', (rs) => meanStd(rs.map((r) => r.unseenBefore?.accuracy ?? NaN)));
    both('unseen-world accuracy after RL, %', (rs) => meanStd(rs.map((r) => r.unseenAfter?.accuracy ?? NaN)));
  }
  both('same-world held-out accuracy untrained, % (mean ± std)', (rs) => meanStd(rs.map((r) => r.untrained?.accuracy ?? NaN)));
  both('same-world held-out accuracy before RL, % (mean ± std)', (rs) => meanStd(rs.map((r) => r.before?.accuracy ?? NaN)));
  both('same-world held-out accuracy after RL, % (mean ± std)', (rs) => meanStd(rs.map((r) => r.after?.accuracy ?? NaN)));
  const grounding = (e: EvalSummary | null | undefined) => (e && e.grounding !== null ? e.grounding : NaN);
  both(
    'grounding of reports before → after RL, % (same-world)',
    (rs) => `${meanStd(rs.map((r) => grounding(r.before)))} → ${meanStd(rs.map((r) => grounding(r.after)))}`,
  );
  const beforeAfter = (f: (e: EvalSummary) => number) => (rs: RunSummary[]) =>
    `${meanStd(rs.map((r) => (r.before ? f(r.before) : NaN)))} → ${meanStd(rs.map((r) => (r.after ? f(r.after) : NaN)))}`;
  both(
    'context-overflow rate before → after RL, %',
    beforeAfter((e) => e.overflowRate),
  );
  both(
    'out of token budget before → after RL, %',
    beforeAfter((e) => e.budgetRate),
  );
  both('sampled tokens per question', (rs) => avg(rs.map((r) => r.after?.sampledTokens ?? NaN)));
  both('longest context per rollout, tokens', (rs) => avg(rs.map((r) => r.after?.longestContext ?? NaN)));
  both('workers per rollout', (rs) =>
    avg(
      rs.map((r) => r.after?.workersPerRollout ?? NaN),
      2,
    ),
  );
  both('wall time per seed, min (sft + rl)', (rs) =>
    avg(
      rs.map((r) => Object.values(r.phaseSeconds).reduce((a, b) => a + b, 0) / 60),
      1,
    ),
  );
  return table(rows);
}

/**
 * Held-out learning curves: greedy accuracy at every evaluation step, per mode, as the mean over
 * seeds, on the unseen worlds and on the training worlds' test splits. Empty with fewer than three
 * evaluations per run (before and after RL only is no curve).
 */
export function learningCurveLines(results: Record<Mode, RunSummary[]>, seeds: readonly number[]): string[] {
  if (!(['matpo', 'single'] as const).some((m) => results[m].some((r) => (r.learningCurve?.length ?? 0) > 2))) return [];
  const lines = [`held-out learning curves (greedy accuracy %, mean over ${seeds.length} seed${seeds.length > 1 ? 's' : ''}, by RL step):`];
  for (const mode of ['matpo', 'single'] as const) {
    const steps = evaluationSteps(results[mode]);
    const at = (pick: CurvePick) =>
      meanCurve(results[mode].map((r) => curveAt(r, steps, pick)))
        .map((m, i) => `${steps[i]}:${Number.isFinite(m) ? (100 * m).toFixed(1) : '—'}`)
        .join(' ');
    const name = mode === 'matpo' ? 'MATPO' : 'single-agent GRPO';
    lines.push(`  ${name}, unseen worlds:  ${at((p) => p.unseen ?? NaN)}`);
    lines.push(`  ${name}, same-world:     ${at((p) => p.sameWorld)}`);
  }
  return lines;
}

type CurvePick = (p: NonNullable<RunSummary['learningCurve']>[number]) => number;

/** Every step at which any of the runs evaluated, in order. */
function evaluationSteps(runs: readonly RunSummary[]): number[] {
  return [...new Set(runs.flatMap((r) => (r.learningCurve ?? []).map((p) => p.step)))].sort((a, b) => a - b);
}

/** One run's picked accuracy at each of `steps` (NaN where it did not evaluate). */
function curveAt(r: RunSummary, steps: readonly number[], pick: CurvePick): number[] {
  return steps.map((step) => {
    const p = r.learningCurve?.find((x) => x.step === step);
    return p ? pick(p) : NaN;
  });
}

export const command: Command = {
  name: 'experiment',
  summary: 'MATPO vs single-agent GRPO on the same noisy world with a context limit, over several seeds; prints a results table.',
  usage:
    'experiment [--out runs/experiment] [--seeds 1,2,3] [--steps N] [--threads N] [--recipe one-world|reading] [--quick] [--no-progress]\n\n' +
    "  --recipe reading  the demo's recipe (twelve training worlds, the reading curriculum, its RL phase) with the context\n" +
    '                    limits above and evaluations every 2 RL steps for learning curves on the unseen worlds\n' +
    '                    (out runs/experiment-reading); default one-world',
  async run(argv) {
    const { values } = parseFlags(argv, {
      out: { type: 'string' },
      seeds: { type: 'string' },
      steps: { type: 'string' },
      threads: { type: 'string' },
      quick: { type: 'boolean' },
      recipe: { type: 'string' },
      'no-progress': { type: 'boolean' },
    });
    const recipe = choiceFlag(values, 'recipe', { 'one-world': EXPERIMENT_DEFAULTS, reading: EXPERIMENT_READING });
    const base = values.quick ? QUICK : recipe.value;
    const seeds = (values.seeds ?? '1,2,3').split(',').map((x) => Number(x.trim()));
    if (seeds.some((x) => !Number.isInteger(x)))
      throw new ConfigError({ path: '--seeds', message: `expected comma-separated integers, got "${values.seeds}"` });
    const out =
      values.out ?? join('runs', values.quick ? 'experiment-quick' : recipe.name === 'reading' ? 'experiment-reading' : 'experiment');
    const threads = intFlag(values, 'threads', 0) || undefined;
    const results: Record<Mode, RunSummary[]> = { matpo: [], single: [] };
    for (const seed of seeds) {
      const s: PipelineSettings = structuredClone(base);
      s.seed = seed;
      s.rl.steps = intFlag(values, 'steps', base.rl.steps);
      const dir = join(out, `seed-${seed}`);
      await worldPhase(dir, s, 'both', `seed ${seed}`);
      for (const mode of ['matpo', 'single'] as const) {
        results[mode].push(await modePhases(dir, s, mode, { progress: !values['no-progress'], threads, label: `seed ${seed} ${mode}` }));
      }
    }
    const curves = (['matpo', 'single'] as const).flatMap((m) =>
      results[m].map((r, i) => `${m} seed ${seeds[i]} reward by step: ${r.rewardCurve.map((x) => x.toFixed(2)).join(' ')}`),
    );
    const learning = learningCurveLines(results, seeds);
    const report = [
      `# MATPO vs single-agent GRPO (${seeds.length} seed${seeds.length > 1 ? 's' : ''}: ${seeds.join(', ')})`,
      '',
      experimentTable(results),
      '',
      ...curves,
      '',
      `![training reward by step](reward-curves.svg)`,
      ...(learning.length ? ['', ...learning, '', `![unseen-world accuracy by RL step](unseen-curves.svg)`] : []),
      '',
      `command: npx matpo experiment${argv.length ? ` ${argv.join(' ')}` : ''}`,
      `dashboard: npx matpo view ${[...results.matpo, ...results.single].map((r) => r.runDir).join(' ')}`,
    ].join('\n');
    writeFileSync(
      join(out, 'reward-curves.svg'),
      rewardCurvesSvg(
        [
          { label: 'MATPO', color: '#1f6fb4', runs: results.matpo.map((r) => r.rewardCurve) },
          { label: 'single-agent GRPO', color: '#d0452b', runs: results.single.map((r) => r.rewardCurve) },
        ],
        { title: `Training reward by step (${seeds.length} seed${seeds.length > 1 ? 's' : ''})` },
      ),
    );
    if (learning.length) {
      // every evaluation step of any run, and each run's accuracy there (a gap where it has none)
      const steps = evaluationSteps([...results.matpo, ...results.single]);
      const at = (r: RunSummary) => curveAt(r, steps, (p) => p.unseen ?? NaN);
      writeFileSync(
        join(out, 'unseen-curves.svg'),
        rewardCurvesSvg(
          [
            { label: 'MATPO', color: '#1f6fb4', runs: results.matpo.map(at) },
            { label: 'single-agent GRPO', color: '#d0452b', runs: results.single.map(at) },
          ],
          {
            title: `Unseen-world accuracy by RL step (${seeds.length} seed${seeds.length > 1 ? 's' : ''})`,
            yLabel: 'unseen-world accuracy (greedy)',
            steps,
          },
        ),
      );
    }
    writeFileSync(join(out, 'results.md'), report + '\n');
    writeFileSync(join(out, 'results.json'), JSON.stringify(results, null, 2) + '\n');
    console.log(`\n${report}`);
  },
};
