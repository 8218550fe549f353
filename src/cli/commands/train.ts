/**
 * `matpo train`: reinforcement learning with MATPO (rollout.mode: matpo) or single-agent GRPO
 * (rollout.mode: single) from a YAML config (see `matpo train --help-config` for every field).
 * The run directory is <run.dir>/<run.name>; `--resume runs/NAME` continues from its newest
 * complete checkpoint with the same data order and random streams. Ctrl-C finishes the step in
 * flight, writes a checkpoint and exits; a second Ctrl-C exits at once.
 */
import { join } from 'node:path';
import { ConfigError } from '../../core/errors.ts';
import { intFlag, numFlag, parseFlags, type Command } from '../command.ts';
import { configHelp, loadConfig } from '../../train/config.ts';
import { runPaths } from '../../train/run-dir.ts';
import { runTraining } from '../../train/run-config.ts';

export const command: Command = {
  name: 'train',
  summary: 'Reinforcement learning with MATPO or single-agent GRPO; resumable runs under runs/<name>/.',
  usage:
    'train --config run.yaml [--set key.path=value ...] [--lora-rank N [--lora-alpha 32]] | ' +
    '--resume runs/NAME [--set ...] | --help-config\n' +
    '  --lora-rank N, --lora-alpha A  train a LoRA adapter (model.loraRank / model.loraAlpha; ' +
    'lm_head too with --set model.loraUnembed=true)',
  async run(argv) {
    const { values } = parseFlags(argv, {
      config: { type: 'string' },
      set: { type: 'string', multiple: true },
      resume: { type: 'string' },
      'help-config': { type: 'boolean' },
      'lora-rank': { type: 'string' },
      'lora-alpha': { type: 'string' },
    });
    if (values['help-config']) {
      console.log(configHelp());
      return;
    }
    const sets = [...((values.set as string[] | undefined) ?? [])];
    // --lora-rank / --lora-alpha are model.loraRank / model.loraAlpha (kept in the run's config.yaml for --resume)
    if (values['lora-rank'] !== undefined) sets.push(`model.loraRank=${intFlag(values, 'lora-rank', 0)}`);
    if (values['lora-alpha'] !== undefined) sets.push(`model.loraAlpha=${numFlag(values, 'lora-alpha', 32)}`);
    let runDir: string;
    let config;
    if (values.resume) {
      if (values.config)
        throw new ConfigError({
          path: '--config',
          message: 'cannot be combined with --resume (the run directory holds its config; use --set to change fields)',
        });
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
      if (result.alreadyFinished) {
        console.log(
          `${runDir} is already finished at step ${result.step} (run.steps ${config.run.steps}); nothing to do. ` +
            `To train further: matpo train --resume ${runDir} --set run.steps=N`,
        );
        return;
      }
      const evals = result.evals.map((e) => `step ${e.step}: ${e.accuracy.toFixed(3)} ± ${e.stderr.toFixed(3)}`).join(', ');
      console.log(
        `${result.stopped ? 'stopped' : 'finished'} at step ${result.step} in ${((performance.now() - t0) / 1000).toFixed(1)} s; ` +
          `run directory ${runDir}`,
      );
      if (evals) console.log(`held-out accuracy: ${evals}`);
    } finally {
      process.off('SIGINT', onSigint);
    }
  },
};
