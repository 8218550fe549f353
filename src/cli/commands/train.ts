/**
 * `matpo train`: reinforcement learning with MATPO (rollout.mode: matpo) or single-agent GRPO
 * (rollout.mode: single) from a YAML config (see `matpo train --help-config` for every field).
 * The run directory is <run.dir>/<run.name>; `--resume runs/NAME` continues from its newest
 * complete checkpoint with the same data order and random streams. Ctrl-C finishes the step in
 * flight, writes a checkpoint and exits; a second Ctrl-C exits at once.
 */
import { join } from 'node:path';
import { ConfigError } from '../../core/errors.ts';
import { parseFlags, type Command } from '../command.ts';
import { configHelp, loadConfig } from '../../train/config.ts';
import { runPaths } from '../../train/run-dir.ts';
import { runTraining } from '../../train/run-config.ts';

export const command: Command = {
  name: 'train',
  summary: 'Reinforcement learning with MATPO or single-agent GRPO; resumable runs under runs/<name>/.',
  usage: 'train --config run.yaml [--set key.path=value ...] | --resume runs/NAME [--set ...] | --help-config',
  async run(argv) {
    const { values } = parseFlags(argv, { config: { type: 'string' }, set: { type: 'string', multiple: true }, resume: { type: 'string' }, 'help-config': { type: 'boolean' } });
    if (values['help-config']) {
      console.log(configHelp());
      return;
    }
    const sets = (values.set as string[] | undefined) ?? [];
    let runDir: string;
    let config;
    if (values.resume) {
      if (values.config) throw new ConfigError({ path: '--config', message: 'cannot be combined with --resume (the run directory holds its config; use --set to change fields)' });
      config = loadConfig(runPaths(values.resume).config, sets);
      runDir = values.resume;
    } else {
      if (!values.config) throw new ConfigError({ path: '--config', message: 'is required (or --resume runs/NAME)' });
      config = loadConfig(values.config, sets);
      runDir = join(config.run.dir, config.run.name);
    }
    const stop = { requested: false };
    const onSigint = () => {
      if (stop.requested) process.exit(130);
      stop.requested = true;
      process.stderr.write('\nstopping after the step in flight (Ctrl-C again to abort now)\n');
    };
    process.on('SIGINT', onSigint);
    const t0 = performance.now();
    try {
      const result = await runTraining(config, { runDir, resume: Boolean(values.resume), stop });
      const evals = result.evals.map((e) => `step ${e.step}: ${e.accuracy.toFixed(3)} ± ${e.stderr.toFixed(3)}`).join(', ');
      console.log(`${result.stopped ? 'stopped' : 'finished'} at step ${result.step} in ${((performance.now() - t0) / 1000).toFixed(1)} s; run directory ${runDir}`);
      if (evals) console.log(`held-out accuracy: ${evals}`);
    } finally {
      process.off('SIGINT', onSigint);
    }
  },
};
