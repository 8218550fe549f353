/**
 * A world directory as `matpo world` writes it: the world (entities, documents, questions with gold
 * chains, splits), its byte-level BPE tokenizer, the scripted expert's demonstrations for the asked
 * modes, and held-out worlds (seeds N+1000, N+2000, …, every question in the test split).
 */
import { join } from 'node:path';
import type { Mode } from '../core/records.ts';
import type { RolloutOptions } from '../agents/rollout.ts';
import { trainTokenizerForWorld } from './world-tokenizer.ts';
import { saveTokenizer } from './tokenizer-train.ts';
import { runExpert } from './expert-runs.ts';
import { DEFAULT_WORLD_OPTIONS, generateWorld, saveWorld, worldStats, type WorldOptions } from './world/world.ts';

export interface WorldDirSpec {
  out: string;
  options: Partial<WorldOptions>;
  /** Tokenizer vocabulary (0: no tokenizer, and then no demonstrations). */
  vocabSize: number;
  demos: readonly Mode[];
  /** Train questions demonstrated (the first N; default all). */
  demoQuestions?: number;
  demoErrorRate: number;
  demoGuessRate: number;
  demoGuessMaxHops?: number;
  heldout: number;
}

export async function writeWorldDir(spec: WorldDirSpec, rollout: RolloutOptions, log: (line: string) => void = console.log): Promise<void> {
  const { out, options, vocabSize, demos, heldout } = spec;
  const errorRate = spec.demoErrorRate;
  const guessRate = spec.demoGuessRate;
  const maxHops = options.maxHops ?? DEFAULT_WORLD_OPTIONS.maxHops;
  const guessMaxHops = spec.demoGuessMaxHops ?? maxHops;
  const start = performance.now();
  const world = generateWorld(options);
  saveWorld(world, out);
  const s = worldStats(world);
  log(`world seed ${world.options.seed} → ${out} (${(performance.now() - start).toFixed(0)} ms)`);
  log(`  entities ${s.entities} (${Object.entries(s.entitiesByKind).map(([k, v]) => `${k} ${v}`).join(', ')})`);
  log(`  documents ${s.documents} (${s.distractorDocuments} distractors), words per document mean ${s.wordsPerDocument.mean.toFixed(1)}, max ${s.wordsPerDocument.max}`);
  log(`  questions ${s.questions} (train ${s.train}, test ${s.test}); by hops: ${Object.entries(s.questionsByHops).map(([k, v]) => `${k}-hop ${v}`).join(', ')}`);
  if (vocabSize > 0) {
    const t = performance.now();
    const { trained, tokenizer, tokensPerDocument } = trainTokenizerForWorld(world, vocabSize);
    saveTokenizer(trained, join(out, 'tokenizer'));
    log(`  tokenizer: byte-level BPE, vocab ${trained.vocabSize} (${trained.merges} merges) → ${join(out, 'tokenizer')} (${(performance.now() - t).toFixed(0)} ms)`);
    log(`  tokens per document mean ${tokensPerDocument.mean.toFixed(1)}, max ${tokensPerDocument.max}`);
    const train = world.questions.filter((q) => q.split === 'train');
    const questions = train.slice(0, spec.demoQuestions ?? train.length);
    for (const mode of demos) {
      const t0 = performance.now();
      const file = join(out, `demos-${mode}.jsonl`);
      const r = await runExpert({ world, tokenizer, mode, questions, errorRate, guessRate, guessMaxHops, seed: world.options.seed, transcripts: file, rollout });
      const roles = mode === 'matpo' ? `planner ${r.longestRoot}, worker ${r.longestWorker}` : `single ${r.longestRoot}`;
      const scope = guessMaxHops < maxHops ? ` on questions of at most ${guessMaxHops} hop${guessMaxHops === 1 ? '' : 's'}` : '';
      const rates = guessRate > 0 ? `error rate ${errorRate}, guess rate ${guessRate}${scope}` : `error rate ${errorRate}`;
      const guessed = guessRate > 0 ? `, answered from memory ${(100 * r.guessed).toFixed(1)}%` : '';
      log(`  expert ${mode} (${rates}): success ${(100 * r.success).toFixed(1)}%${guessed} on ${questions.length} questions; longest sequence in tokens: ${roles}; ${r.transcriptLines} transcripts → ${file} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    }
  }
  for (let k = 1; k <= heldout; k++) {
    const seed = world.options.seed + 1000 * k;
    const held = generateWorld({ ...options, seed, testFraction: 1 });
    const dir = join(out, `heldout-${seed}`);
    saveWorld(held, dir);
    log(`  held-out world seed ${seed} → ${dir} (${held.questions.length} questions)`);
  }
}
