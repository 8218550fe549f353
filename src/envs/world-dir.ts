/**
 * A world directory as `matpo world` writes it: the world (entities, documents, questions with gold
 * chains, splits), its byte-level BPE tokenizer, the scripted expert's demonstrations for the asked
 * modes, and held-out worlds (seeds N+1000, N+2000, …, every question in the test split).
 * `writeWorldSetDir` writes a world set instead (many training worlds, unseen worlds; world-set.ts).
 */
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Mode } from '../core/records.ts';
import { ConfigError } from '../core/errors.ts';
import type { RolloutOptions } from '../agents/rollout.ts';
import { trainTokenizerForWorld, trainTokenizerForWorlds } from './world-tokenizer.ts';
import { generateWorldSet, saveWorldSet } from './world-set.ts';
import { copyDrills, readingExercises, readingSessions } from './reading-data.ts';
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
  log(
    `  entities ${s.entities} (${Object.entries(s.entitiesByKind)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')})`,
  );
  log(
    `  documents ${s.documents} (${s.distractorDocuments} distractors), ` +
      `words per document mean ${s.wordsPerDocument.mean.toFixed(1)}, max ${s.wordsPerDocument.max}`,
  );
  log(
    `  questions ${s.questions} (train ${s.train}, test ${s.test}); by hops: ${Object.entries(s.questionsByHops)
      .map(([k, v]) => `${k}-hop ${v}`)
      .join(', ')}`,
  );
  if (vocabSize > 0) {
    const t = performance.now();
    const { trained, tokenizer, tokensPerDocument } = trainTokenizerForWorld(world, vocabSize);
    saveTokenizer(trained, join(out, 'tokenizer'));
    log(
      `  tokenizer: byte-level BPE, vocab ${trained.vocabSize} (${trained.merges} merges) → ` +
        `${join(out, 'tokenizer')} (${(performance.now() - t).toFixed(0)} ms)`,
    );
    log(`  tokens per document mean ${tokensPerDocument.mean.toFixed(1)}, max ${tokensPerDocument.max}`);
    const train = world.questions.filter((q) => q.split === 'train');
    const questions = train.slice(0, spec.demoQuestions ?? train.length);
    for (const mode of demos) {
      const t0 = performance.now();
      const file = join(out, `demos-${mode}.jsonl`);
      const r = await runExpert({
        world,
        tokenizer,
        mode,
        questions,
        errorRate,
        guessRate,
        guessMaxHops,
        seed: world.options.seed,
        transcripts: file,
        rollout,
      });
      const roles = mode === 'matpo' ? `planner ${r.longestRoot}, worker ${r.longestWorker}` : `single ${r.longestRoot}`;
      const scope = guessMaxHops < maxHops ? ` on questions of at most ${guessMaxHops} hop${guessMaxHops === 1 ? '' : 's'}` : '';
      const rates = guessRate > 0 ? `error rate ${errorRate}, guess rate ${guessRate}${scope}` : `error rate ${errorRate}`;
      const guessed = guessRate > 0 ? `, answered from memory ${(100 * r.guessed).toFixed(1)}%` : '';
      log(
        `  expert ${mode} (${rates}): success ${(100 * r.success).toFixed(1)}%${guessed} on ${questions.length} questions; ` +
          `longest sequence in tokens: ${roles}; ${r.transcriptLines} transcripts → ${file} ` +
          `(${((performance.now() - t0) / 1000).toFixed(1)} s)`,
      );
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

export interface WorldSetDirSpec extends Omit<WorldDirSpec, 'heldout' | 'options'> {
  options: Partial<Omit<WorldOptions, 'seed'>>;
  trainSeeds: readonly number[];
  unseenSeeds: readonly number[];
  /** Demonstrated train questions per world (the first N; default all). */
  demoQuestions?: number;
  /** Reading exercises per training world written to reading.jsonl (0: none). */
  reading?: number;
  /**
   * Seeds of reading worlds: generated with the same knobs, used only for copy drills (copy.jsonl)
   * and dense reading sessions (sessions.jsonl), never for questions, demonstrations or evaluation.
   */
  readingSeeds?: readonly number[];
}

/**
 * A world-set directory (src/envs/world-set.ts): one world per training seed and per unseen seed,
 * one tokenizer trained across the training worlds only, the expert's demonstrations of every
 * training world in one file per mode, and optionally reading exercises.
 */
export async function writeWorldSetDir(
  spec: WorldSetDirSpec,
  rollout: RolloutOptions,
  log: (line: string) => void = console.log,
): Promise<void> {
  const { out, vocabSize, demos } = spec;
  const maxHops = spec.options.maxHops ?? DEFAULT_WORLD_OPTIONS.maxHops;
  const guessMaxHops = spec.demoGuessMaxHops ?? maxHops;
  const t0 = performance.now();
  const set = generateWorldSet(spec.options, spec.trainSeeds, spec.unseenSeeds);
  const used = new Set([...spec.trainSeeds, ...spec.unseenSeeds]);
  const clash = (spec.readingSeeds ?? []).find((x) => used.has(x));
  if (clash !== undefined)
    throw new ConfigError({ path: 'readingSeeds', message: `seed ${clash} is also a training or unseen world's seed` });
  if (spec.readingSeeds?.length) set.manifest.readingSeeds = [...spec.readingSeeds];
  rmSync(out, { recursive: true, force: true });
  saveWorldSet(set, out);
  const q = (ws: typeof set.train, split?: string) =>
    ws.reduce((a, w) => a + w.questions.filter((x) => !split || x.split === split).length, 0);
  log(
    `world set → ${out} (${(performance.now() - t0).toFixed(0)} ms): training seeds ${spec.trainSeeds.join(', ')} ` +
      `(${q(set.train, 'train')} train / ${q(set.train, 'test')} test questions); ` +
      `unseen seeds ${spec.unseenSeeds.join(', ') || 'none'} (${q(set.unseen)} questions)`,
  );
  if (spec.reading && spec.reading > 0) {
    const rows = set.train.flatMap((w) => readingExercises(w, { limit: spec.reading }));
    writeFileSync(join(out, 'reading.jsonl'), rows.map((r) => JSON.stringify({ messages: r.messages })).join('\n') + '\n');
    log(
      `  reading exercises: ${rows.length} (${rows.filter((r) => r.kind === 'search').length} on search results) → ` +
        `${join(out, 'reading.jsonl')}`,
    );
  }
  if (spec.readingSeeds && spec.readingSeeds.length > 0) {
    const t = performance.now();
    const copy: string[] = [];
    const sessions: string[] = [];
    for (const seed of spec.readingSeeds) {
      const w = generateWorld({ ...DEFAULT_WORLD_OPTIONS, ...spec.options, seed });
      for (const messages of copyDrills(w)) copy.push(JSON.stringify({ messages }));
      for (const x of readingSessions(w)) sessions.push(JSON.stringify({ messages: x.messages }));
    }
    writeFileSync(join(out, 'copy.jsonl'), copy.join('\n') + '\n');
    writeFileSync(join(out, 'sessions.jsonl'), sessions.join('\n') + '\n');
    log(
      `  reading worlds ${spec.readingSeeds[0]}…${spec.readingSeeds[spec.readingSeeds.length - 1]}: ${copy.length} copy drills, ` +
        `${sessions.length} reading sessions → ${join(out, 'copy.jsonl')}, ${join(out, 'sessions.jsonl')} ` +
        `(${((performance.now() - t) / 1000).toFixed(1)} s)`,
    );
  }
  if (vocabSize <= 0) return;
  const t = performance.now();
  const { trained, tokenizer, tokensPerDocument } = trainTokenizerForWorlds(set.train, vocabSize);
  saveTokenizer(trained, join(out, 'tokenizer'));
  log(
    `  tokenizer across ${set.train.length} training worlds: vocab ${trained.vocabSize} → ` +
      `${join(out, 'tokenizer')} (${(performance.now() - t).toFixed(0)} ms); ` +
      `tokens per document mean ${tokensPerDocument.mean.toFixed(1)}, max ${tokensPerDocument.max}`,
  );
  for (const mode of demos) {
    const t1 = performance.now();
    const file = join(out, `demos-${mode}.jsonl`);
    rmSync(file, { force: true });
    let lines = 0;
    let success = 0;
    let n = 0;
    for (const world of set.train) {
      const train = world.questions.filter((x) => x.split === 'train');
      const questions = train.slice(0, spec.demoQuestions ?? train.length);
      const part = `${file}.part`;
      const r = await runExpert({
        world,
        tokenizer,
        mode,
        questions,
        errorRate: spec.demoErrorRate,
        guessRate: spec.demoGuessRate,
        guessMaxHops,
        seed: world.options.seed,
        transcripts: part,
        rollout,
      });
      appendFileSync(file, readFileSync(part));
      rmSync(part);
      lines += r.transcriptLines;
      success += r.success * questions.length;
      n += questions.length;
    }
    log(
      `  expert ${mode}: success ${((100 * success) / Math.max(1, n)).toFixed(1)}% on ${n} questions from ${set.train.length} worlds; ` +
        `${lines} transcripts → ${file} (${((performance.now() - t1) / 1000).toFixed(1)} s)`,
    );
  }
}
