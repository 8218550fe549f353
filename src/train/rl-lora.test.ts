// The RL loop with LoRA (model.loraRank): the embedded engine trains an adapter on the frozen model;
// checkpoints hold the PEFT adapter plus optimizer and trainer state; resuming loads the base with the
// checkpoint's adapter and reproduces the uninterrupted run's adapter bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from './config.ts';
import { runTraining } from './run-config.ts';
import { runPaths } from './run-dir.ts';
import { configLora } from './wiring.ts';
import { buildWorldModel } from '../testing/world-model.ts';
import { EmbeddedPolicy } from '../policy/embedded.ts';

let dir: string;
let worldDir: string;
let modelDir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'matpo-rl-lora-'));
  ({ worldDir, modelDir } = await buildWorldModel(dir, { entities: 60, questions: 60, vocab: 600, expertQuestions: 0 }));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function config(name: string, steps: number) {
  return parseConfig({
    model: { path: modelDir, threads: 1, loraRank: 4, loraAlpha: 16, loraUnembed: true },
    data: { world: worldDir },
    rollout: {
      mode: 'matpo',
      groupSize: 2,
      questionsPerStep: 1,
      maxTurns: 2,
      maxNewTokens: 12,
      workerSummaryTokens: 12,
      maxSequenceTokens: 1000,
      concurrency: 2,
    },
    rl: { loss: { entropyCoef: 0.01 } },
    optim: { learningRate: 1e-2, microBatchTokens: 512 },
    run: { name, dir, steps, evalEvery: 0, evalQuestions: 2, checkpointEvery: 1, keepCheckpoints: 0, progress: false, seed: 4 },
  });
}

test('MATPO steps with a LoRA adapter: PEFT checkpoints, frozen base, resume reproduces the adapter', { timeout: 300_000 }, async () => {
  const a = config('a', 2);
  assert.deepEqual(configLora(a)?.config, { rank: 4, alpha: 16, trainAttn: true, trainMlp: true, trainUnembed: true, seed: 4 });
  const ra = await runTraining(a, { runDir: join(dir, 'a'), resume: false });
  assert.equal(ra.step, 2);
  const p = runPaths(join(dir, 'a'));
  const ck = join(p.checkpoints, 'step-000002');
  assert.deepEqual(readdirSync(ck).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'optimizer', 'trainer_state.json']);
  assert.equal(JSON.parse(readFileSync(join(ck, 'adapter_config.json'), 'utf8')).r, 4);
  // the adapter moved: base + adapter differs from the base
  const base = await EmbeddedPolicy.load(modelDir, { threads: 1 });
  const tuned = await EmbeddedPolicy.load(modelDir, { threads: 1, adapter: ck });
  try {
    const seq = [{ tokens: [1, 50, 99, 120, 7, 300] }];
    const lb = (await base.forward(seq)).logprobs[0];
    const lt = (await tuned.forward(seq)).logprobs[0];
    assert.ok(
      lb.some((x, i) => Math.abs(x - lt[i]) > 1e-6),
      'the trained adapter must change the model',
    );
  } finally {
    await base.close();
    await tuned.close();
  }

  const b1 = config('b', 1);
  await runTraining(b1, { runDir: join(dir, 'b'), resume: false });
  const b2 = config('b', 2);
  await runTraining(b2, { runDir: join(dir, 'b'), resume: true });
  const bytes = (run: string, f: string) => readFileSync(join(dir, run, 'checkpoints', 'step-000002', f));
  assert.ok(bytes('b', 'adapter_model.safetensors').equals(bytes('a', 'adapter_model.safetensors')), 'adapter differs after resume');
  assert.ok(existsSync(join(dir, 'b', 'checkpoints', 'step-000002', 'optimizer', 'optimizer.bin')));
});
