/**
 * `matpo sft`: supervised warm-start of a model directory on chat transcripts (JSONL lines
 * `{messages, tools?}`, e.g. from the offline expert), training assistant tokens (and, at a lower
 * weight, the context); reports the held-out loss and writes the trained model (Hugging Face layout)
 * to sft.out, plus `sft-metrics.jsonl` there (one line per optimizer step and one per epoch).
 * Settings are the run configuration's `sft:` section; flags are overrides of its keys.
 */
import { appendFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../core/errors.ts';
import { parseFlags, type Command } from '../command.ts';
import { configFlagOptions, configFlagsHelp, resolveConfig, type ConfigFlag } from '../config-flags.ts';
import type { TrainConfig } from '../../train/config.ts';
import { readTranscripts, trainSft } from '../../train/sft.ts';
import { renderConversation } from '../../agents/renderer.ts';
import { loadEmbeddedPolicy } from '../../train/wiring.ts';

const FLAGS: ConfigFlag[] = [
  { flag: 'model', key: 'model.path' },
  { flag: 'threads', key: 'model.threads' },
  { flag: 'data', key: 'sft.data' },
  { flag: 'out', key: 'sft.out' },
  { flag: 'epochs', key: 'sft.epochs' },
  { flag: 'lr', key: 'sft.learningRate' },
  { flag: 'schedule', key: 'sft.schedule' },
  { flag: 'warmup', key: 'sft.warmupFraction' },
  { flag: 'other-token-weight', key: 'sft.otherTokenWeight' },
  { flag: 'batch-tokens', key: 'sft.batchTokens' },
  { flag: 'micro-batch-tokens', key: 'sft.microBatchTokens' },
  { flag: 'eval-fraction', key: 'sft.evalFraction' },
  { flag: 'max-grad-norm', key: 'sft.maxGradNorm' },
  { flag: 'max-tokens', key: 'sft.maxTokens' },
  { flag: 'max-steps', key: 'sft.maxSteps' },
  { flag: 'seed', key: 'run.seed' },
  { flag: 'no-progress', key: 'run.progress', boolean: true, value: 'false' },
];

function modelMaxPositions(dir: string): number {
  try {
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { max_position_embeddings?: number };
    return Number.isInteger(cfg.max_position_embeddings) ? cfg.max_position_embeddings! : 0;
  } catch {
    return 0; // the policy's own load reports a bad model directory
  }
}

/** Warm-start `config.model.path` on `config.sft.data`, writing the model to `config.sft.out`. */
export async function runSft(config: TrainConfig, log?: (line: string) => void): Promise<void> {
  const o = config.sft;
  if (!config.model.path) throw new ConfigError({ path: '--model', message: 'is required (a model directory)' });
  if (!o.data) throw new ConfigError({ path: '--data', message: 'is required (chat transcripts, JSONL)' });
  if (!o.out) throw new ConfigError({ path: '--out', message: 'is required (where the trained model is written)' });
  const transcripts = readTranscripts(o.data);
  const policy = await loadEmbeddedPolicy(config.model.path, config.model.threads);
  try {
    const tokenizer = await policy.tokenizer();
    mkdirSync(o.out, { recursive: true });
    const metricsFile = join(o.out, 'sft-metrics.jsonl');
    rmSync(metricsFile, { force: true });
    const t0 = performance.now();
    const result = await trainSft(policy, tokenizer, transcripts, renderConversation, {
      epochs: o.epochs,
      learningRate: o.learningRate,
      schedule: o.schedule,
      warmupFraction: o.warmupFraction,
      otherTokenWeight: o.otherTokenWeight,
      batchTokens: o.batchTokens,
      microBatchTokens: o.microBatchTokens,
      evalFraction: o.evalFraction,
      seed: config.run.seed,
      maxGradNorm: o.maxGradNorm,
      // transcripts longer than the model's context are dropped
      maxTokens: o.maxTokens > 0 ? o.maxTokens : modelMaxPositions(config.model.path),
      maxSteps: o.maxSteps,
      progress: config.run.progress,
      ...(log ? { log } : {}),
      onStep: (m) =>
        appendFileSync(
          metricsFile,
          JSON.stringify({ step: m.step, time: new Date().toISOString(), 'sft/loss': m.loss, 'sft/lr': m.learningRate, 'train/grad_norm': m.gradNorm, 'sft/tokens': m.tokens, 'sft/epoch': m.epoch }) + '\n',
        ),
    });
    await policy.save(o.out); // the model layer writes each file atomically
    const last = result.heldOutLoss[result.heldOutLoss.length - 1];
    appendFileSync(metricsFile, JSON.stringify({ step: result.steps, time: new Date().toISOString(), 'sft/held_out_loss_before': result.heldOutLoss[0] ?? null, 'sft/held_out_loss_after': last ?? null }) + '\n');
    const s = (performance.now() - t0) / 1000;
    const print = log ?? console.log;
    print(`sft: ${result.trainExamples} training / ${result.heldOutExamples} held-out transcripts, ${result.steps} steps (${result.skipped} skipped), ${s.toFixed(1)} s`);
    if (result.heldOutLoss.length) print(`held-out loss per assistant token: ${result.heldOutLoss.map((x) => x.toFixed(4)).join(' → ')}`);
    print(`model written to ${o.out}`);
  } finally {
    await policy.close();
  }
}

export const command: Command = {
  name: 'sft',
  summary: 'Supervised warm-start on chat transcripts (assistant tokens; optionally the context at a lower weight), with a held-out loss.',
  usage: `sft --model DIR --data transcripts.jsonl --out DIR [--config run.yaml] [--set sft.key=value ...] [flags below]\n\n${configFlagsHelp(FLAGS)}`,
  async run(argv) {
    const { values } = parseFlags(argv, configFlagOptions(FLAGS));
    await runSft(resolveConfig(values, FLAGS));
  },
};
