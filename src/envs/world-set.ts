/**
 * A world set: many research worlds generated with the same knobs from different seeds, for
 * training that cannot be memorised (no fact is worth remembering when every world has its own
 * entities, so only reading the tool output pays), plus *unseen* worlds from seeds that no
 * training uses, for evaluation.
 *
 * Layout of a world-set directory (written by `matpo world --seeds ...`):
 *
 *   world-set.json        {format: "matpo-world-set", version: 1, knobs, trainSeeds, unseenSeeds}
 *   seed-<s>/             one ordinary world directory per training seed (train and test splits)
 *   unseen-<s>/           one world directory per unseen seed (every question in its test split)
 *   tokenizer/            one tokenizer trained across the training worlds only (never the unseen ones)
 *   demos-<mode>.jsonl    expert transcripts from every training world
 *
 * A question's id starts with its world's seed (`w<seed>-q<n>`, see world.ts), which is how a
 * rollout finds the tools of the world its question came from (`worldOfQuestion`).
 *
 * Splits of a set: `train` = the train splits of the training worlds, `test` = their test splits
 * (same-world held-out: other questions about the same entities), `unseen` = the unseen worlds'
 * questions. Each list interleaves the worlds round-robin, so any prefix spans all of them.
 */
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, FileFormatError } from '../core/errors.ts';
import { generateWorld, loadWorld, saveWorld, type World, type WorldOptions, type WorldQuestion } from './world/world.ts';

export interface WorldSetManifest {
  format: 'matpo-world-set';
  version: 1;
  knobs: Omit<WorldOptions, 'seed'>;
  trainSeeds: number[];
  unseenSeeds: number[];
  /** Seeds of the worlds that supplied copy drills and reading sessions (never questions). */
  readingSeeds?: number[];
}

export interface WorldSet {
  manifest: WorldSetManifest;
  train: World[];
  unseen: World[];
}

export const WORLD_SET_FILE = 'world-set.json';

/** Parse "11-16", "11,12,20" or "11-13,20" into distinct seeds (order kept). */
export function parseSeeds(text: string, flag: string): number[] {
  const seeds: number[] = [];
  for (const part of text
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new ConfigError({ path: flag, message: `expected seeds like 11-16 or 11,12,20, got "${text}"` });
    const [a, b] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (b < a) throw new ConfigError({ path: flag, message: `range ${part} runs backwards` });
    for (let s = a; s <= b; s++) if (!seeds.includes(s)) seeds.push(s);
  }
  if (seeds.length === 0) throw new ConfigError({ path: flag, message: 'no seeds given' });
  return seeds;
}

/** Generate the training and unseen worlds of a set. Unseen seeds must differ from training seeds. */
export function generateWorldSet(knobs: Partial<WorldOptions>, trainSeeds: readonly number[], unseenSeeds: readonly number[]): WorldSet {
  const overlap = unseenSeeds.filter((s) => trainSeeds.includes(s));
  if (overlap.length) throw new ConfigError({ path: '--unseen-seeds', message: `seed ${overlap.join(', ')} is also a training seed` });
  const train = trainSeeds.map((seed) => generateWorld({ ...knobs, seed }));
  const unseen = unseenSeeds.map((seed) => generateWorld({ ...knobs, seed, testFraction: 1 }));
  const { seed: _seed, ...rest } = train[0]?.options ?? generateWorld({ ...knobs, questions: 1 }).options;
  return {
    manifest: { format: 'matpo-world-set', version: 1, knobs: rest, trainSeeds: [...trainSeeds], unseenSeeds: [...unseenSeeds] },
    train,
    unseen,
  };
}

/** Worlds generated from `seeds` with a world's knobs, every question in the test split (evaluation only). */
export function unseenWorlds(knobs: WorldOptions, seeds: readonly number[]): World[] {
  return seeds.map((seed) => generateWorld({ ...knobs, seed, testFraction: 1 }));
}

export function saveWorldSet(set: WorldSet, dir: string): void {
  mkdirSync(dir, { recursive: true });
  for (const w of set.train) saveWorld(w, join(dir, `seed-${w.options.seed}`));
  for (const w of set.unseen) saveWorld(w, join(dir, `unseen-${w.options.seed}`));
  writeFileSync(join(dir, WORLD_SET_FILE), JSON.stringify(set.manifest, null, 2) + '\n');
}

export function isWorldSet(dir: string): boolean {
  return existsSync(join(dir, WORLD_SET_FILE));
}

export function readWorldSetManifest(dir: string): WorldSetManifest {
  const file = join(dir, WORLD_SET_FILE);
  let m: WorldSetManifest;
  try {
    m = JSON.parse(readFileSync(file, 'utf8')) as WorldSetManifest;
  } catch (err) {
    throw new FileFormatError({ file, message: `cannot read: ${(err as Error).message}`, cause: err });
  }
  if (m.format !== 'matpo-world-set')
    throw new FileFormatError({ file, field: 'format', message: `expected "matpo-world-set", got ${JSON.stringify(m.format)}` });
  for (const field of ['trainSeeds', 'unseenSeeds'] as const) {
    if (!Array.isArray(m[field]) || !m[field].every(Number.isInteger))
      throw new FileFormatError({ file, field, message: 'expected a list of integer seeds' });
  }
  return m;
}

export function loadWorldSet(dir: string): WorldSet {
  const manifest = readWorldSetManifest(dir);
  return {
    manifest,
    train: manifest.trainSeeds.map((s) => loadWorld(join(dir, `seed-${s}`))),
    unseen: manifest.unseenSeeds.map((s) => loadWorld(join(dir, `unseen-${s}`))),
  };
}

/** Round-robin over lists: a0 b0 c0 a1 b1 c1 ... (shorter lists simply run out). */
export function interleave<T>(lists: readonly (readonly T[])[]): T[] {
  const out: T[] = [];
  const longest = Math.max(0, ...lists.map((l) => l.length));
  for (let i = 0; i < longest; i++) for (const l of lists) if (i < l.length) out.push(l[i]);
  return out;
}

export type WorldSetSplit = 'train' | 'test' | 'unseen';

export function worldSetQuestions(set: WorldSet, split: WorldSetSplit): WorldQuestion[] {
  if (split === 'unseen') return interleave(set.unseen.map((w) => w.questions));
  return interleave(set.train.map((w) => w.questions.filter((q) => q.split === split)));
}

/** The seed in a world question id (`w<seed>-q<n>`), or null for another id. */
export function questionSeed(id: string): number | null {
  const m = /^w(\d+)-q\d+$/.exec(id);
  return m ? Number(m[1]) : null;
}

/** The world (by seed) a question id belongs to; a clear error when none of `worlds` has it. */
export function worldOfQuestion<T>(bySeed: ReadonlyMap<number, T>, id: string): T {
  const seed = questionSeed(id);
  const world = seed === null ? undefined : bySeed.get(seed);
  if (world === undefined)
    throw new ConfigError({
      path: 'data.world',
      message: `question ${id} belongs to no loaded world (seeds ${[...bySeed.keys()].join(', ')})`,
    });
  return world;
}
