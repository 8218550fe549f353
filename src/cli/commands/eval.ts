/**
 * `matpo eval`: a model (embedded model directory or an OpenAI-compatible endpoint) on a world
 * split or a QA dataset, in planner–worker (matpo) or single-agent mode, each question repeated.
 * Prints accuracy (mean over all rollouts ± standard error over questions), format scores and
 * workers per rollout; --out writes the per-question records (scored Rollout records, JSONL).
 * Rollout settings (turn and token limits, reward weights) come from --config when given.
 */
import { writeFileSync } from 'node:fs';
import { ConfigError } from '../../core/errors.ts';
import { parseFlags, type Command } from '../command.ts';
import { evalTemperature, loadConfig } from '../../train/config.ts';
import { evaluate } from '../../train/evaluate.ts';
import { Progress } from '../../train/progress.ts';
import { rewardWeights } from '../../train/rl-loop.ts';
import { checkModelContext, datasetQuestions, openSamplingPolicy, rolloutRunnerFactory, worldQuestions } from '../../train/wiring.ts';
import { loadWorld } from '../../envs/world/world.ts';
import { registeredScorer } from '../../rl/rewards.ts';

export const command: Command = {
  name: 'eval',
  summary: 'Evaluate a model on a world split or a QA dataset (matpo or single-agent mode), with repeats and standard errors.',
  usage:
    'eval (--model DIR | --endpoint URL --served NAME [--tokenizer DIR]) (--world DIR [--split test] | --dataset FILE [--preset NAME])\n' +
    '     [--mode matpo|single] [--repeats 1] [--questions 0] [--temperature 1] [--seed 1] [--scorer exact_match]\n' +
    '     [--config run.yaml] [--set key.path=value ...] [--out records.jsonl] [--no-progress]',
  async run(argv) {
    const { values } = parseFlags(argv, {
      model: { type: 'string' }, endpoint: { type: 'string' }, served: { type: 'string' }, tokenizer: { type: 'string' },
      world: { type: 'string' }, split: { type: 'string' }, dataset: { type: 'string' }, preset: { type: 'string' },
      mode: { type: 'string' }, repeats: { type: 'string' }, questions: { type: 'string' }, temperature: { type: 'string' },
      seed: { type: 'string' }, scorer: { type: 'string' }, config: { type: 'string' }, set: { type: 'string', multiple: true },
      out: { type: 'string' }, 'no-progress': { type: 'boolean' },
    });
    // Flags are config overrides, so they are validated (and named) like config fields.
    const sets = [...((values.set as string[] | undefined) ?? [])];
    const flagOf = new Map<string, string>();
    const flag = (name: string, path: string) => {
      if (values[name as keyof typeof values] === undefined) return;
      sets.push(`${path}=${String(values[name as keyof typeof values])}`);
      flagOf.set(path, `--${name}`);
    };
    flag('model', 'model.path');
    flag('tokenizer', 'model.path');
    flag('endpoint', 'model.endpoint');
    flag('served', 'model.served');
    flag('mode', 'rollout.mode');
    flag('repeats', 'run.evalRepeats');
    flag('questions', 'run.evalQuestions');
    flag('temperature', 'run.evalTemperature');
    flag('seed', 'run.seed');
    flag('scorer', 'rl.reward.scorer');
    if (values.endpoint) sets.push('model.kind=endpoint');
    if (values['no-progress']) sets.push('run.progress=false');
    let config;
    try {
      config = loadConfig(values.config, sets);
    } catch (err) {
      // name the flag the user typed rather than the config field it sets
      if (err instanceof ConfigError && flagOf.has(err.path)) throw new ConfigError({ path: flagOf.get(err.path)!, message: err.message.slice(err.message.indexOf(`${err.path}: `) + err.path.length + 2) });
      throw err;
    }
    if (!values.world && !values.dataset && !config.data.world) throw new ConfigError({ path: '--world', message: 'give --world DIR or --dataset FILE' });
    const world = values.world || (!values.dataset && config.data.world) ? loadWorld(values.world ?? config.data.world) : null;
    let questions = world ? worldQuestions(world, values.split ?? config.data.evalSplit) : await datasetQuestions(values.dataset!, values.preset);
    if (config.run.evalQuestions > 0 && values.questions !== undefined) questions = questions.slice(0, config.run.evalQuestions);
    checkModelContext(config);
    const policy = await openSamplingPolicy(config.model);
    try {
    const runner = (await rolloutRunnerFactory(config, world))(policy);
    const progress = new Progress(config.run.progress);
    const bar = progress.bar('eval', questions.length * config.run.evalRepeats);
    const t0 = performance.now();
    const r = await evaluate({
      runner, questions, repeats: config.run.evalRepeats, mode: config.rollout.mode, seed: `${config.run.seed}/eval-cli`,
      temperature: evalTemperature(config), scorer: registeredScorer(config.rl.reward.scorer), weights: rewardWeights(config),
      concurrency: config.rollout.concurrency, onRollout: (d) => bar.update(d),
    });
    bar.stop();
    progress.stop();
    if (values.out) writeFileSync(values.out, r.rollouts.map((x) => JSON.stringify(x)).join('\n') + '\n');
    const s = (performance.now() - t0) / 1000;
    console.log(`${config.rollout.mode} eval of ${config.model.kind === 'endpoint' ? config.model.endpoint : config.model.path}: ${r.questions} questions × ${config.run.evalRepeats} repeats, ${s.toFixed(1)} s`);
    console.log(`accuracy ${(100 * r.accuracy).toFixed(2)}% ± ${(100 * r.stderr).toFixed(2)} (standard error over questions)`);
    console.log(`reward ${r.reward.toFixed(4)}, format ${config.rollout.mode === 'single' ? 'single agent' : 'planner'} ${r.formatPlanner.toFixed(3)}${Number.isFinite(r.formatWorkers) ? `, format workers ${r.formatWorkers.toFixed(3)}` : ''}, workers per rollout ${r.workersPerRollout.toFixed(2)}`);
    if (values.out) console.log(`per-question records: ${values.out}`);
    } finally {
      await policy.close();
    }
  },
};
