/**
 * `matpo eval` and `matpo run`: a model (embedded model directory or an OpenAI-compatible endpoint)
 * on a world split or a QA dataset, in planner–worker (matpo) or single-agent mode, each question
 * repeated. Everything comes from one run configuration (`--config`, `--set`, and flags that are
 * overrides of its keys, listed by --help), built by the same builder as `matpo train`: the same
 * rollout limits, tools (world, BM25 index, web, MCP) and scorer (a rule or an LLM judge).
 *
 * Prints accuracy (mean over all rollouts ± standard error over questions), format scores, workers
 * per rollout and outcomes; --out writes the scored Rollout records (JSONL). `matpo run` is the same
 * with the per-rollout view in front (it exists for users who think of it as running rollouts).
 *
 * Unseen worlds: with a world set (`matpo world --seeds`) as the world, two evaluations are printed,
 * each labelled with its seeds: the training worlds' held-out split (same-world: new questions about
 * entities the training transcripts mention) and the set's unseen worlds (seeds no training used).
 * With a single world, `--unseen-seeds LIST` adds worlds generated from those seeds with the world's
 * knobs. --out names the first evaluation's records, the unseen worlds' go to `<name>.unseen.jsonl`.
 * Each evaluation also prints the grounding of its reports (src/rl/grounding.ts).
 */
import { parseFlags, type Command } from '../command.ts';
import {
  configFlagOptions,
  configFlagsHelp,
  DATA_FLAGS,
  EVAL_FLAGS,
  MODEL_FLAGS,
  resolveConfig,
  ROLLOUT_FLAGS,
  type ConfigFlag,
} from '../config-flags.ts';
import { runEvaluations } from '../../train/run-config.ts';
import { parseSeeds } from '../../envs/world-set.ts';

const FLAGS: ConfigFlag[] = [...MODEL_FLAGS, ...DATA_FLAGS, ...ROLLOUT_FLAGS, ...EVAL_FLAGS, { flag: 'group', key: 'run.evalRepeats' }];

function evalCommand(name: 'eval' | 'run'): Command {
  return {
    name,
    summary:
      name === 'eval'
        ? 'Evaluate a model on a world split or a QA dataset (matpo or single-agent mode), with repeats and standard errors.'
        : 'Run planner–worker (or single-agent) rollouts of a model over questions, score them and write them as JSONL.',
    usage:
      `${name} (--model DIR | --endpoint URL --served NAME [--tokenizer DIR]) ` +
      '(--world DIR [--split test] | --dataset FILE [--preset NAME])\n' +
      '     [--config run.yaml] [--set key=value ...] [--out rollouts.jsonl] [--unseen-seeds LIST] [flags below]\n\n' +
      `${configFlagsHelp(FLAGS)}\n` +
      '  --out FILE          the scored rollouts, one JSON record per line (unseen worlds: FILE with .unseen.jsonl)\n' +
      '  --unseen-seeds LIST with a single world: also evaluate worlds generated from these seeds with its knobs\n\n' +
      `  --questions 0 runs the whole split; --group is an alias of --repeats.`,
    async run(argv) {
      const { values } = parseFlags(argv, { ...configFlagOptions(FLAGS), out: { type: 'string' }, 'unseen-seeds': { type: 'string' } });
      const config = resolveConfig(values, FLAGS);
      const out = values.out as string | undefined;
      const unseen = values['unseen-seeds'] as string | undefined;
      const evals = await runEvaluations(config, {
        ...(out ? { out } : {}),
        ...(unseen !== undefined ? { unseenSeeds: parseSeeds(unseen, '--unseen-seeds') } : {}),
      });
      let allFailed = true;
      for (const e of evals) {
        const r = e.result;
        const mode = config.rollout.mode;
        const outcomes = new Map<string, number>();
        for (const x of r.rollouts) outcomes.set(x.outcome, (outcomes.get(x.outcome) ?? 0) + 1);
        if (outcomes.get('failed') !== r.rollouts.length) allFailed = false;
        const g = r.grounding;
        if (evals.length > 1 || e.kind !== 'dataset') console.log(e.label);
        console.log(
          `${mode} ${name} of ${r.policyName}: ${r.questions} questions × G=${config.run.evalRepeats} = ` +
            `${r.rollouts.length} rollouts in ${r.seconds.toFixed(1)} s`,
        );
        console.log(
          `accuracy ${(100 * r.accuracy).toFixed(2)}% (${config.rl.reward.scorer}) ± ${(100 * r.stderr).toFixed(2)} ` +
            '(standard error over questions)',
        );
        console.log(
          `format score ${mode === 'single' ? 'single agent' : 'planner'} ${r.formatPlanner.toFixed(3)}` +
            (mode === 'matpo'
              ? `, workers ${Number.isFinite(r.formatWorkers) ? r.formatWorkers.toFixed(3) : 'n/a'}, ` +
                `workers per rollout ${r.workersPerRollout.toFixed(2)}`
              : '') +
            `, reward ${r.reward.toFixed(4)}`,
        );
        console.log(
          `grounding ${g.claiming > 0 ? `${(100 * g.rate).toFixed(1)}%` : '—'} ` +
            `(${g.grounded} of ${g.claiming} reports with a claim cite only ids and values from their own tool output; ` +
            `${g.reports} reports)`,
        );
        console.log(`outcomes ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}`);
        if (e.out) console.log(`rollouts: ${e.out}`);
      }
      return allFailed ? 1 : 0;
    },
  };
}

export const command = evalCommand('eval');
export const runCommand = evalCommand('run');
