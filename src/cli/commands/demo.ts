/**
 * `matpo demo`: the whole method on a CPU in one command — an offline world, a tiny model
 * warm-started on expert planner–worker demonstrations, MATPO training, and held-out accuracy
 * before and after (see src/demo/pipeline.ts). Re-running continues an interrupted demo.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { choiceFlag, intFlag, parseFlags, type Command } from '../command.ts';
import {
  DEMO_DEFAULTS,
  LONG,
  ONE_WORLD,
  QUICK,
  formatRunSummary,
  modePhases,
  worldPhase,
  type PipelineSettings,
} from '../../demo/pipeline.ts';

export const command: Command = {
  name: 'demo',
  summary:
    'Generate an offline research world, warm-start a tiny model on expert planner–worker demonstrations, train it with MATPO, ' +
    'and compare held-out accuracy before and after. Re-running continues an interrupted demo.',
  usage:
    'demo [--out runs/demo] [--seed 1] [--steps N] [--threads N] [--quick] [--recipe default|long|one-world] [--no-progress]\n\n' +
    '  --recipe long       twice the training worlds, warm-start steps and MATPO steps (about 30 minutes; out runs/demo-long)\n' +
    '  --recipe one-world  the earlier demo: one training world and a planted guessing habit (it memorises; see docs/results.md;\n' +
    '                      out runs/demo-one-world)',
  async run(argv) {
    const { values } = parseFlags(argv, {
      out: { type: 'string' },
      seed: { type: 'string' },
      steps: { type: 'string' },
      threads: { type: 'string' },
      quick: { type: 'boolean' },
      'no-progress': { type: 'boolean' },
      recipe: { type: 'string' },
    });
    const recipe = choiceFlag(values, 'recipe', { default: DEMO_DEFAULTS, long: LONG, 'one-world': ONE_WORLD });
    const base = values.quick ? QUICK : recipe.value;
    const s: PipelineSettings = structuredClone(base);
    s.seed = intFlag(values, 'seed', base.seed);
    s.rl.steps = intFlag(values, 'steps', base.rl.steps);
    const threads = intFlag(values, 'threads', 0) || undefined;
    const out = values.out ?? join('runs', values.quick ? 'demo-quick' : recipe.name === 'default' ? 'demo' : `demo-${recipe.name}`);
    const worldSeconds = await worldPhase(out, s, 'matpo', 'demo');
    const summary = await modePhases(out, s, 'matpo', { progress: !values['no-progress'], threads, label: 'demo' });
    writeFileSync(join(out, 'summary.json'), JSON.stringify({ ...summary, worldSeconds, settings: s }, null, 2) + '\n');
    console.log(`\n== demo: summary\n${formatRunSummary(summary, worldSeconds, s)}`);
    if (values.quick) {
      console.log(
        '\n--quick is a smoke run: it checks that every phase runs and that the RL steps update the weights. Its mini model,\n' +
          'warm-started for one epoch on 40 demonstrations, cannot answer yet, so accuracy stays at 0 and the reward is the\n' +
          'format term alone. To see MATPO learn the task, run the full demo: npx matpo demo (about 20 minutes on two cores).',
      );
    }
  },
};
