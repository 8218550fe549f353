/**
 * Example: bring your own tool and your own reward, and train a planner–worker agent with MATPO
 * through the public API. Runs on a CPU in a few seconds with a tiny random model; point `modelDir`
 * at a real Hugging Face model directory (Qwen2/Qwen3/Llama) for real work.
 *
 *   node --import tsx examples/custom-tool-and-reward.ts [workDir]
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import {
  EmbeddedPolicy,
  RolloutEngine,
  defineTool,
  generateWorld,
  saveWorld,
  worldSearchTools,
  parseConfig,
  trainRl,
  normalizeAnswer,
  rolloutOptions,
  type AnswerScorer,
  type Question,
  type SamplingPolicy,
} from '../src/index.ts';
import { trainWorldTokenizer, saveTokenizer } from '../src/envs/tokenizer-train.ts';
import { initModelDir } from '../src/model/init.ts';

export async function main(workDir = mkdtempSync(join(tmpdir(), 'matpo-example-'))) {
  // 1. An offline world (documents + multi-hop questions) and a model that speaks its tokenizer.
  const world = generateWorld({ seed: 7, entities: 60, questions: 60 });
  saveWorld(world, join(workDir, 'world'));
  saveTokenizer(
    trainWorldTokenizer(
      world.documents.map((d) => d.text),
      { vocabSize: 600 },
    ),
    join(workDir, 'tokenizer'),
  );
  const modelDir = join(workDir, 'model');
  await initModelDir(modelDir, { config: 'micro', tokenizerDir: join(workDir, 'tokenizer'), seed: 1 });

  // 2. Your own tool: a name, a description, a zod input schema and `execute`. Workers get it
  //    beside the world's search and open tools; errors and bad arguments go back to the model.
  const yearsBetween = defineTool({
    name: 'years_between',
    description: 'Number of years between two years, e.g. a founding year and today.',
    inputSchema: z.object({ from: z.number().int(), to: z.number().int() }),
    async execute({ from, to }) {
      return `${Math.abs(to - from)} years`;
    },
  });
  const tools = [...worldSearchTools(world).tools, yearsBetween];

  // 3. Your own reward: any function of (prediction, gold answers) in [0, 1]. Here, exact match
  //    after normalisation, with half credit when the gold answer appears inside the prediction.
  const scorer: AnswerScorer = (prediction, golds) => {
    const p = normalizeAnswer(prediction ?? '');
    if (golds.some((g) => normalizeAnswer(g) === p)) return 1;
    return golds.some((g) => p.length > 0 && p.includes(normalizeAnswer(g))) ? 0.5 : 0;
  };

  // 4. Train with MATPO: G planner rollouts per question, GRPO advantages, MATPO credit assignment.
  const config = parseConfig({
    model: { path: modelDir },
    rollout: {
      mode: 'matpo',
      groupSize: 2,
      questionsPerStep: 2,
      maxTurns: 2,
      maxNewTokens: 16,
      workerSummaryTokens: 16,
      maxSequenceTokens: 512,
    },
    rl: { estimator: 'grpo', credit: 'matpo' },
    optim: { learningRate: 1e-4 },
    run: { name: 'example', dir: workDir, steps: 2, evalEvery: 2, evalQuestions: 2, progress: false },
  });
  const questions: Question[] = world.questions.map((q) => ({ id: q.id, question: q.question, answers: q.answers }));
  const result = await trainRl(
    config,
    {
      loadPolicy: (dir) => EmbeddedPolicy.load(dir),
      makeRunner: (policy: SamplingPolicy) => {
        const engine = RolloutEngine.create(policy, tools, rolloutOptions(config));
        return async (request) => (await engine).run(request);
      },
      trainQuestions: questions.filter((_, i) => world.questions[i].split === 'train'),
      evalQuestions: questions.filter((_, i) => world.questions[i].split === 'test'),
      scorer,
    },
    { runDir: join(workDir, 'example'), resume: false },
  );
  console.log(`trained ${result.step} steps; run directory ${result.paths.root} (matpo view ${result.paths.root})`);
  return result;
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv[2]);
