/**
 * `matpo world`: generate an offline research world (and optionally held-out worlds from other
 * seeds) and write it as JSONL files plus manifest.json.
 */
import { parseConfig, rolloutOptions } from '../../train/config.ts';
import { ConfigError } from '../../core/errors.ts';
import { intFlag, numFlag, parseFlags, required, type Command } from '../command.ts';
import { DEFAULT_WORLD_OPTIONS, type WorldOptions } from '../../envs/world/world.ts';
import { writeWorldDir, writeWorldSetDir } from '../../envs/world-dir.ts';
import { parseSeeds } from '../../envs/world-set.ts';
import type { Mode } from '../../core/records.ts';

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
  if (!Number.isInteger(n) || n < 0)
    throw new ConfigError({ path: '--doc-length', message: `expected short, medium, long or a number of filler sentences, got "${s}"` });
  return n;
}

function fraction(values: Record<string, unknown>, flag: string): number {
  const v = numFlag(values, flag, 0);
  if (!(v >= 0 && v <= 1)) throw new ConfigError({ path: `--${flag}`, message: `expected a fraction in [0, 1], got ${v}` });
  return v;
}

export const command: Command = {
  name: 'world',
  summary:
    'Generate an offline research world: entities, one document per entity plus distractors, ' +
    'multi-hop questions with gold chains, train/test splits.',
  usage:
    'world --seed N --out DIR [--entities 300] [--questions 1500] [--hops 1-4] [--distractors 0.2] [--noise 0] ' +
    '[--doc-length short|medium|long|N] [--test-fraction 0.2] [--heldout K] [--vocab-size 2048]\n' +
    '      [--demos matpo|single|both] [--demo-error-rate 0] [--demo-guess-rate 0] [--demo-guess-max-hops N] [--demo-questions N]\n\n' +
    '  --vocab-size N  train a byte-level BPE tokenizer on the world into DIR/tokenizer/ (0: skip)\n' +
    '  --demos MODE    run the scripted expert on the train split and write SFT transcripts to DIR/demos-<mode>.jsonl\n' +
    '  --demo-guess-rate G  the expert planner (or single agent) answers a fraction G of questions from memory, wrongly, without a tool\n' +
    '  --demo-guess-max-hops N  ... only questions of at most N hops\n' +
    '  --seeds LIST    a world set instead: one world per seed (e.g. 11-16), one tokenizer trained across them, and the\n' +
    "                  expert's transcripts from every one (--demo-questions per world) in one file; see src/envs/world-set.ts\n" +
    '  --unseen-seeds LIST  with --seeds: evaluation-only worlds from these seeds, never used for the tokenizer or training\n' +
    '  --reading N     with --seeds: also write up to N reading exercises per training world to DIR/reading.jsonl\n' +
    '                  (cloze questions answered by copying from a page or search results; src/envs/reading-data.ts)\n' +
    '  --reading-seeds LIST  with --seeds: reading worlds from these seeds, for DIR/copy.jsonl (copy drills) and\n' +
    '                  DIR/sessions.jsonl (several questions per page or result list); no questions or demonstrations\n' +
    '  --heldout K   also write K held-out worlds (seeds N+1000, N+2000, ...; every question in the test split) under DIR/heldout-<seed>/',
  async run(argv) {
    const { values } = parseFlags(argv, {
      seed: { type: 'string' },
      out: { type: 'string' },
      entities: { type: 'string' },
      questions: { type: 'string' },
      hops: { type: 'string' },
      distractors: { type: 'string' },
      noise: { type: 'string' },
      'doc-length': { type: 'string' },
      'test-fraction': { type: 'string' },
      heldout: { type: 'string' },
      'vocab-size': { type: 'string' },
      seeds: { type: 'string' },
      'unseen-seeds': { type: 'string' },
      reading: { type: 'string' },
      'reading-seeds': { type: 'string' },
      demos: { type: 'string' },
      'demo-error-rate': { type: 'string' },
      'demo-guess-rate': { type: 'string' },
      'demo-guess-max-hops': { type: 'string' },
      'demo-questions': { type: 'string' },
    });
    const out = required(values, 'out');
    const [minHops, maxHops] = parseHops(values.hops);
    const options: Partial<WorldOptions> = {
      seed: intFlag(values, 'seed', DEFAULT_WORLD_OPTIONS.seed),
      entities: intFlag(values, 'entities', DEFAULT_WORLD_OPTIONS.entities),
      questions: intFlag(values, 'questions', DEFAULT_WORLD_OPTIONS.questions),
      minHops,
      maxHops,
      distractors: numFlag(values, 'distractors', DEFAULT_WORLD_OPTIONS.distractors),
      noise: numFlag(values, 'noise', DEFAULT_WORLD_OPTIONS.noise),
      docLength: parseDocLength(values['doc-length']),
      testFraction: numFlag(values, 'test-fraction', DEFAULT_WORLD_OPTIONS.testFraction),
    };
    const heldout = intFlag(values, 'heldout', 0);
    const demos =
      values.demos === undefined || values.demos === 'none'
        ? []
        : values.demos === 'both'
          ? (['matpo', 'single'] as const)
          : [values.demos];
    for (const d of demos)
      if (d !== 'matpo' && d !== 'single')
        throw new ConfigError({ path: '--demos', message: `expected matpo, single, both or none, got "${d}"` });
    const vocabSize = intFlag(values, 'vocab-size', 2048);
    if (demos.length > 0 && vocabSize <= 0)
      throw new ConfigError({ path: '--demos', message: 'needs the world tokenizer (--vocab-size > 0)' });
    const errorRate = fraction(values, 'demo-error-rate');
    const guessRate = fraction(values, 'demo-guess-rate');
    const guessMaxHops = intFlag(values, 'demo-guess-max-hops', maxHops);
    if (values.seeds !== undefined) {
      if (heldout > 0) throw new ConfigError({ path: '--heldout', message: 'use --unseen-seeds with --seeds' });
      if (values.seed !== undefined)
        throw new ConfigError({ path: '--seed', message: 'give either --seed (one world) or --seeds (a world set)' });
      const { seed: _seed, ...knobs } = options;
      const trainSeeds = parseSeeds(values.seeds, '--seeds');
      const unseenSeeds = values['unseen-seeds'] === undefined ? [] : parseSeeds(values['unseen-seeds'], '--unseen-seeds');
      const readingSeeds = values['reading-seeds'] === undefined ? [] : parseSeeds(values['reading-seeds'], '--reading-seeds');
      const clash = readingSeeds.find((x) => trainSeeds.includes(x) || unseenSeeds.includes(x));
      if (clash !== undefined)
        throw new ConfigError({ path: '--reading-seeds', message: `seed ${clash} is also in --seeds or --unseen-seeds` });
      await writeWorldSetDir(
        {
          out,
          options: knobs,
          vocabSize,
          demos: demos as Mode[],
          demoErrorRate: errorRate,
          demoGuessRate: guessRate,
          demoGuessMaxHops: guessMaxHops,
          trainSeeds,
          unseenSeeds,
          reading: intFlag(values, 'reading', 0),
          readingSeeds,
          ...(values['demo-questions'] !== undefined ? { demoQuestions: intFlag(values, 'demo-questions', 0) } : {}),
        },
        rolloutOptions(parseConfig({})),
      );
      return;
    }
    await writeWorldDir(
      {
        out,
        options,
        vocabSize,
        demos: demos as Mode[],
        demoErrorRate: errorRate,
        demoGuessRate: guessRate,
        demoGuessMaxHops: guessMaxHops,
        heldout,
        ...(values['demo-questions'] !== undefined ? { demoQuestions: intFlag(values, 'demo-questions', 0) } : {}),
      },
      rolloutOptions(parseConfig({})),
    );
  },
};
