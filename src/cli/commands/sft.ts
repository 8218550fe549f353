/**
 * `matpo sft`: supervised warm-start of a model directory on chat transcripts (JSONL lines
 * `{messages, tools?}`, e.g. from the offline expert), training assistant tokens (and, at a lower
 * weight, the context); reports the held-out loss and writes the trained model (Hugging Face layout)
 * to sft.out, plus `sft-metrics.jsonl` there (one line per optimizer step and one per epoch).
 * Settings are the run configuration's `sft:` section; flags are overrides of its keys.
 * `--lora-rank N` (model.loraRank) freezes the model and trains a LoRA adapter (alpha --lora-alpha,
 * default 32; attention and MLP, plus lm_head with --lora-unembed, which vLLM does not serve);
 * sft.out then receives the adapter in the PEFT layout.
 */
import { parseFlags, type Command } from '../command.ts';
import { configFlagOptions, configFlagsHelp, resolveConfig, type ConfigFlag } from '../config-flags.ts';
import { runSft } from '../../train/run-config.ts';

const FLAGS: ConfigFlag[] = [
  { flag: 'model', key: 'model.path' },
  { flag: 'threads', key: 'model.threads' },
  { flag: 'lora-rank', key: 'model.loraRank' },
  { flag: 'lora-alpha', key: 'model.loraAlpha' },
  { flag: 'lora-unembed', key: 'model.loraUnembed', boolean: true },
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
  { flag: 'target-loss', key: 'sft.targetHeldOutLoss' },
  { flag: 'max-cycles', key: 'sft.maxCycles' },
  { flag: 'seed', key: 'run.seed' },
  { flag: 'no-progress', key: 'run.progress', boolean: true, value: 'false' },
];

export const command: Command = {
  name: 'sft',
  summary: 'Supervised warm-start on chat transcripts (assistant tokens; optionally the context at a lower weight), with a held-out loss.',
  usage:
    'sft --model DIR --data transcripts.jsonl --out DIR [--config run.yaml] [--set sft.key=value ...] [flags below]\n\n' +
    `${configFlagsHelp(FLAGS)}`,
  async run(argv) {
    const { values } = parseFlags(argv, configFlagOptions(FLAGS));
    await runSft(resolveConfig(values, FLAGS));
  },
};
