/**
 * `matpo sft`: supervised warm-start of a model directory on chat transcripts (JSONL lines
 * `{messages, tools?}`, e.g. from the offline expert), training only assistant tokens; reports the
 * held-out loss and writes the trained model (Hugging Face layout) to --out, plus
 * `sft-metrics.jsonl` there (one line per optimizer step and one per epoch).
 */
import { appendFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../core/errors.ts';
import { intFlag, numFlag, parseFlags, required, type Command } from '../command.ts';
import { readTranscripts, trainSft } from '../../train/sft.ts';
import { renderConversation } from '../../agents/renderer.ts';
import { loadEmbeddedPolicy } from '../../train/wiring.ts';

function modelMaxPositions(dir: string): number {
  try {
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { max_position_embeddings?: number };
    return Number.isInteger(cfg.max_position_embeddings) ? cfg.max_position_embeddings! : 0;
  } catch {
    return 0; // the policy's own load reports a bad model directory
  }
}

export const command: Command = {
  name: 'sft',
  summary: 'Supervised warm-start on chat transcripts (assistant tokens; optionally the context at a lower weight), with a held-out loss.',
  usage:
    'sft --model DIR --data transcripts.jsonl --out DIR [--epochs 2] [--lr 1e-4] [--schedule cosine|linear|constant] [--warmup 0.03] [--other-token-weight 0] [--batch-tokens 8192] [--micro-batch-tokens 4096]\n' +
    '    [--eval-fraction 0.1] [--seed 1] [--max-grad-norm 1] [--max-tokens N (default: the model\'s context)] [--threads 0] [--no-progress]',
  async run(argv) {
    const { values } = parseFlags(argv, {
      model: { type: 'string' }, data: { type: 'string' }, out: { type: 'string' }, epochs: { type: 'string' }, lr: { type: 'string' }, schedule: { type: 'string' }, warmup: { type: 'string' }, 'other-token-weight': { type: 'string' },
      'batch-tokens': { type: 'string' }, 'micro-batch-tokens': { type: 'string' }, 'eval-fraction': { type: 'string' }, seed: { type: 'string' },
      'max-grad-norm': { type: 'string' }, 'max-tokens': { type: 'string' }, threads: { type: 'string' }, 'no-progress': { type: 'boolean' },
    });
    const model = required(values, 'model');
    const data = required(values, 'data');
    const out = required(values, 'out');
    const evalFraction = numFlag(values, 'eval-fraction', 0.1);
    if (evalFraction < 0 || evalFraction >= 1) throw new ConfigError({ path: '--eval-fraction', message: `expected a fraction in [0, 1), got ${evalFraction}` });
    const epochs = intFlag(values, 'epochs', 2);
    if (epochs < 1) throw new ConfigError({ path: '--epochs', message: 'must be at least 1' });
    const schedule = (values.schedule as string | undefined) ?? 'cosine';
    if (schedule !== 'cosine' && schedule !== 'linear' && schedule !== 'constant') throw new ConfigError({ path: '--schedule', message: `expected cosine, linear or constant, got "${schedule}"` });
    const warmupFraction = numFlag(values, 'warmup', 0.03);
    if (!(warmupFraction >= 0 && warmupFraction < 1)) throw new ConfigError({ path: '--warmup', message: `expected a fraction of the steps in [0, 1), got ${warmupFraction}` });
    const otherTokenWeight = numFlag(values, 'other-token-weight', 0);
    if (!(otherTokenWeight >= 0)) throw new ConfigError({ path: '--other-token-weight', message: `expected a weight ≥ 0, got ${otherTokenWeight}` });
    const transcripts = readTranscripts(data);
    // transcripts longer than the model's context are dropped (default: max_position_embeddings)
    const maxTokens = intFlag(values, 'max-tokens', modelMaxPositions(model));
    const policy = await loadEmbeddedPolicy(model, intFlag(values, 'threads', 0));
    try {
    const tokenizer = await policy.tokenizer();
    mkdirSync(out, { recursive: true });
    const metricsFile = join(out, 'sft-metrics.jsonl');
    rmSync(metricsFile, { force: true });
    const t0 = performance.now();
    const result = await trainSft(policy, tokenizer, transcripts, renderConversation, {
      epochs,
      learningRate: numFlag(values, 'lr', 1e-4),
      schedule,
      warmupFraction,
      otherTokenWeight,
      batchTokens: intFlag(values, 'batch-tokens', 8192),
      microBatchTokens: intFlag(values, 'micro-batch-tokens', 4096),
      evalFraction,
      seed: intFlag(values, 'seed', 1),
      maxGradNorm: numFlag(values, 'max-grad-norm', 1),
      maxTokens,
      progress: !values['no-progress'],
      onStep: (m) => appendFileSync(metricsFile, JSON.stringify({ step: m.step, time: new Date().toISOString(), 'sft/loss': m.loss, 'sft/lr': m.learningRate, 'train/grad_norm': m.gradNorm, 'sft/tokens': m.tokens, 'sft/epoch': m.epoch }) + '\n'),
    });
    await policy.save(out); // the model layer writes each file atomically
    appendFileSync(metricsFile, JSON.stringify({ step: result.steps, time: new Date().toISOString(), 'sft/held_out_loss_before': result.heldOutLoss[0] ?? null, 'sft/held_out_loss_after': result.heldOutLoss[result.heldOutLoss.length - 1] ?? null }) + '\n');
    const s = (performance.now() - t0) / 1000;
    console.log(`sft: ${result.trainExamples} training / ${result.heldOutExamples} held-out transcripts, ${result.steps} steps (${result.skipped} skipped), ${s.toFixed(1)} s`);
    if (result.heldOutLoss.length) console.log(`held-out loss per assistant token: ${result.heldOutLoss.map((x) => x.toFixed(4)).join(' → ')}`);
    console.log(`model written to ${out}`);
    } finally {
      await policy.close();
    }
  },
};
