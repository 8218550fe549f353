/**
 * `matpo world`: generate an offline research world (and optionally held-out worlds from other
 * seeds) and write it as JSONL files plus manifest.json.
 */
import { parseConfig, rolloutOptions } from '../../train/config.ts';
import { join } from 'node:path';
import { ConfigError } from '../../core/errors.ts';
import { intFlag, numFlag, parseFlags, required, type Command } from '../command.ts';
import { trainTokenizerForWorld } from '../../envs/world-tokenizer.ts';
import { saveTokenizer } from '../../envs/tokenizer-train.ts';
import { runExpert } from '../../envs/expert-runs.ts';
import { DEFAULT_WORLD_OPTIONS, generateWorld, saveWorld, worldStats, type WorldOptions } from '../../envs/world/world.ts';

function parseHops(v: unknown): [number, number] {
  if (v === undefined) return [DEFAULT_WORLD_OPTIONS.minHops, DEFAULT_WORLD_OPTIONS.maxHops];
  const m = /^(\d)(?:-(\d))?$/.exec(String(v));
  if (!m) throw new ConfigError({ path: '--hops', message: `expected N or MIN-MAX (1..4), got "${String(v)}"` });
  return [Number(m[1]), Number(m[2] ?? m[1])];
}

function parseDocLength(v: unknown): WorldOptions['docLength'] {
  if (v === undefined) return DEFAULT_WORLD_OPTIONS.docLength;
  const s = String(v);
  if (s === 'short' || s === 'medium' || s === 'long') return s;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) throw new ConfigError({ path: '--doc-length', message: `expected short, medium, long or a number of filler sentences, got "${s}"` });
  return n;
}

function fraction(values: Record<string, unknown>, flag: string): number {
  const v = numFlag(values, flag, 0);
  if (!(v >= 0 && v <= 1)) throw new ConfigError({ path: `--${flag}`, message: `expected a fraction in [0, 1], got ${v}` });
  return v;
}

export const command: Command = {
  name: 'world',
  summary: 'Generate an offline research world: entities, one document per entity plus distractors, multi-hop questions with gold chains, train/test splits.',
  usage:
    'world --seed N --out DIR [--entities 300] [--questions 1500] [--hops 1-4] [--distractors 0.2] [--noise 0] ' +
    '[--doc-length short|medium|long|N] [--test-fraction 0.2] [--heldout K] [--vocab-size 2048]\n' +
    '      [--demos matpo|single|both] [--demo-error-rate 0] [--demo-guess-rate 0] [--demo-guess-max-hops N] [--demo-questions N]\n\n' +
    '  --vocab-size N  train a byte-level BPE tokenizer on the world into DIR/tokenizer/ (0: skip)\n' +
    '  --demos MODE    run the scripted expert on the train split and write SFT transcripts to DIR/demos-<mode>.jsonl\n' +
    '  --demo-guess-rate G  the expert planner (or single agent) answers a fraction G of questions from memory, wrongly, without a tool\n' +
    '  --demo-guess-max-hops N  ... only questions of at most N hops\n' +
    '  --heldout K   also write K held-out worlds (seeds N+1000, N+2000, ...; every question in the test split) under DIR/heldout-<seed>/',
  async run(argv) {
    const { values } = parseFlags(argv, {
      seed: { type: 'string' }, out: { type: 'string' }, entities: { type: 'string' }, questions: { type: 'string' },
      hops: { type: 'string' }, distractors: { type: 'string' }, noise: { type: 'string' }, 'doc-length': { type: 'string' },
      'test-fraction': { type: 'string' }, heldout: { type: 'string' }, 'vocab-size': { type: 'string' },
      demos: { type: 'string' }, 'demo-error-rate': { type: 'string' }, 'demo-guess-rate': { type: 'string' }, 'demo-guess-max-hops': { type: 'string' }, 'demo-questions': { type: 'string' },
    });
    const out = required(values, 'out');
    const [minHops, maxHops] = parseHops(values.hops);
    const options: Partial<WorldOptions> = {
      seed: intFlag(values, 'seed', DEFAULT_WORLD_OPTIONS.seed),
      entities: intFlag(values, 'entities', DEFAULT_WORLD_OPTIONS.entities),
      questions: intFlag(values, 'questions', DEFAULT_WORLD_OPTIONS.questions),
      minHops, maxHops,
      distractors: numFlag(values, 'distractors', DEFAULT_WORLD_OPTIONS.distractors),
      noise: numFlag(values, 'noise', DEFAULT_WORLD_OPTIONS.noise),
      docLength: parseDocLength(values['doc-length']),
      testFraction: numFlag(values, 'test-fraction', DEFAULT_WORLD_OPTIONS.testFraction),
    };
    const heldout = intFlag(values, 'heldout', 0);
    const demos = values.demos === undefined || values.demos === 'none' ? [] : values.demos === 'both' ? ['matpo', 'single'] as const : [values.demos];
    for (const d of demos) if (d !== 'matpo' && d !== 'single') throw new ConfigError({ path: '--demos', message: `expected matpo, single, both or none, got "${d}"` });
    const vocabSize = intFlag(values, 'vocab-size', 2048);
    if (demos.length > 0 && vocabSize <= 0) throw new ConfigError({ path: '--demos', message: 'needs the world tokenizer (--vocab-size > 0)' });
    const errorRate = fraction(values, 'demo-error-rate');
    const guessRate = fraction(values, 'demo-guess-rate');
    const guessMaxHops = intFlag(values, 'demo-guess-max-hops', maxHops);
    const start = performance.now();
    const world = generateWorld(options);
    saveWorld(world, out);
    const s = worldStats(world);
    console.log(`world seed ${world.options.seed} → ${out} (${(performance.now() - start).toFixed(0)} ms)`);
    console.log(`  entities ${s.entities} (${Object.entries(s.entitiesByKind).map(([k, v]) => `${k} ${v}`).join(', ')})`);
    console.log(`  documents ${s.documents} (${s.distractorDocuments} distractors), words per document mean ${s.wordsPerDocument.mean.toFixed(1)}, max ${s.wordsPerDocument.max}`);
    console.log(`  questions ${s.questions} (train ${s.train}, test ${s.test}); by hops: ${Object.entries(s.questionsByHops).map(([k, v]) => `${k}-hop ${v}`).join(', ')}`);
    if (vocabSize > 0) {
      const t = performance.now();
      const { trained, tokenizer, tokensPerDocument } = trainTokenizerForWorld(world, vocabSize);
      saveTokenizer(trained, join(out, 'tokenizer'));
      console.log(`  tokenizer: byte-level BPE, vocab ${trained.vocabSize} (${trained.merges} merges) → ${join(out, 'tokenizer')} (${(performance.now() - t).toFixed(0)} ms)`);
      console.log(`  tokens per document mean ${tokensPerDocument.mean.toFixed(1)}, max ${tokensPerDocument.max}`);
      const train = world.questions.filter((q) => q.split === 'train');
      const questions = train.slice(0, intFlag(values, 'demo-questions', train.length));
      for (const mode of demos as ('matpo' | 'single')[]) {
        const t0 = performance.now();
        const file = join(out, `demos-${mode}.jsonl`);
        const r = await runExpert({ world, tokenizer, mode, questions, errorRate, guessRate, guessMaxHops, seed: world.options.seed, transcripts: file, rollout: rolloutOptions(parseConfig({})) });
        const roles = mode === 'matpo' ? `planner ${r.longestRoot}, worker ${r.longestWorker}` : `single ${r.longestRoot}`;
        const scope = guessMaxHops < maxHops ? ` on questions of at most ${guessMaxHops} hop${guessMaxHops === 1 ? '' : 's'}` : '';
        const rates = guessRate > 0 ? `error rate ${errorRate}, guess rate ${guessRate}${scope}` : `error rate ${errorRate}`;
        const guessed = guessRate > 0 ? `, answered from memory ${(100 * r.guessed).toFixed(1)}%` : '';
        console.log(`  expert ${mode} (${rates}): success ${(100 * r.success).toFixed(1)}%${guessed} on ${questions.length} questions; longest sequence in tokens: ${roles}; ${r.transcriptLines} transcripts → ${file} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
      }
    }
    for (let k = 1; k <= heldout; k++) {
      const seed = world.options.seed + 1000 * k;
      const held = generateWorld({ ...options, seed, testFraction: 1 });
      const dir = join(out, `heldout-${seed}`);
      saveWorld(held, dir);
      console.log(`  held-out world seed ${seed} → ${dir} (${held.questions.length} questions)`);
    }
  },
};
