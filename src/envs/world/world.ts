/**
 * The offline research world: a seeded, deterministic generator of entities (countries, cities,
 * people, organisations, written works) with attributes and functional relations, one encyclopedic
 * document per entity, distractor documents (near-duplicate names with near-miss facts) and 1–4-hop
 * questions composed from relations, each with its gold answer and gold chain (one document lookup
 * per hop). Same options and seed → byte-identical world. `saveWorld`/`loadWorld` write and read it
 * as JSONL files plus `manifest.json` (counts, knobs, seed).
 */
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, FileFormatError } from '../../core/errors.ts';
import { Rng } from '../../util/rng.ts';
import {
  CITY_PREFIXES,
  COUNTRY_SUFFIXES,
  ENTITY_KINDS,
  FILLER_SENTENCES,
  FIRST_NAMES,
  GENERIC_QUESTIONS,
  INTRO_SENTENCES,
  ORG_SUFFIXES,
  RELATIONS,
  SYLLABLES,
  WORD_VALUES,
  WORK_ADJECTIVES,
  WORK_NOUNS,
  YEAR_RANGES,
  relationsOf,
  type EntityKind,
} from './vocab.ts';

export interface WorldOptions {
  seed: number;
  /** Number of entities (split over kinds in fixed proportions). */
  entities: number;
  /** Number of questions to generate (fewer when the world cannot supply that many distinct ones). */
  questions: number;
  /** Smallest and largest number of hops per question (1..4). */
  minHops: number;
  maxHops: number;
  /** Fraction of entities that get a distractor document (near-duplicate name, near-miss facts). */
  distractors: number;
  /** Search noise recorded for the tools: fraction of result slots replaced by irrelevant or misleading hits. */
  noise: number;
  /** Filler sentences per document: 'short' = 0, 'medium' = 3, 'long' = 10, or a number. */
  docLength: 'short' | 'medium' | 'long' | number;
  /** Fraction of questions in the test split (1 for a held-out world used only for evaluation). */
  testFraction: number;
}

export const DEFAULT_WORLD_OPTIONS: WorldOptions = {
  seed: 1,
  entities: 300,
  questions: 1500,
  minHops: 1,
  maxHops: 4,
  distractors: 0.2,
  noise: 0,
  docLength: 'short',
  testFraction: 0.2,
};

export interface Entity {
  id: string;
  kind: EntityKind;
  name: string;
  /** Relation name ("person.born_in") → the value as written (an entity name, a year, a word). */
  facts: Record<string, string>;
  /** For entity-valued relations: relation → the object's entity id. */
  links: Record<string, string>;
  /** The entity's document id. */
  docId: string;
}

export interface WorldDocument {
  id: string;
  title: string;
  text: string;
  /** The entity this document describes, or for a distractor the entity it imitates. */
  entityId: string;
  distractor: boolean;
}

export interface ChainStep {
  subject: string;
  subjectId: string;
  relation: string;
  object: string;
  /** Set when the object is an entity. */
  objectId?: string;
  /** The document that states this fact. */
  docId: string;
}

export interface WorldQuestion {
  id: string;
  question: string;
  answers: string[];
  hops: number;
  chain: ChainStep[];
  split: 'train' | 'test';
  metadata: { seed: number; hops: number; relations: string[] };
}

export interface WorldManifest {
  format: 'matpo-world';
  version: 1;
  seed: number;
  knobs: WorldOptions;
  counts: {
    entities: number;
    entitiesByKind: Record<string, number>;
    documents: number;
    distractorDocuments: number;
    questions: number;
    train: number;
    test: number;
    questionsByHops: Record<string, number>;
  };
  files: { entities: string; corpus: string; train: string; test: string };
}

export interface World {
  options: WorldOptions;
  entities: Entity[];
  documents: WorldDocument[];
  questions: WorldQuestion[];
  manifest: WorldManifest;
}

const KIND_SHARE: Record<EntityKind, number> = { country: 0.05, city: 0.2, person: 0.4, organisation: 0.15, work: 0.2 };

function fillerCount(docLength: WorldOptions['docLength']): number {
  if (docLength === 'short') return 0;
  if (docLength === 'medium') return 3;
  if (docLength === 'long') return 10;
  return docLength;
}

export function validateWorldOptions(partial: Partial<WorldOptions>): WorldOptions {
  const o: WorldOptions = { ...DEFAULT_WORLD_OPTIONS, ...partial };
  const bad = (path: string, message: string) => new ConfigError({ path, message });
  if (!Number.isInteger(o.seed)) throw bad('seed', `expected an integer, got ${o.seed}`);
  if (!Number.isInteger(o.entities) || o.entities < 40) throw bad('entities', `expected an integer ≥ 40, got ${o.entities}`);
  if (!Number.isInteger(o.questions) || o.questions < 1) throw bad('questions', `expected a positive integer, got ${o.questions}`);
  if (!Number.isInteger(o.minHops) || !Number.isInteger(o.maxHops) || o.minHops < 1 || o.maxHops > 4 || o.minHops > o.maxHops)
    throw bad('hops', `expected 1 ≤ min ≤ max ≤ 4, got ${o.minHops}-${o.maxHops}`);
  if (!(o.distractors >= 0 && o.distractors <= 1)) throw bad('distractors', `expected a fraction in [0, 1], got ${o.distractors}`);
  if (!(o.noise >= 0 && o.noise <= 1)) throw bad('noise', `expected a fraction in [0, 1], got ${o.noise}`);
  if (!(o.testFraction >= 0 && o.testFraction <= 1)) throw bad('testFraction', `expected a fraction in [0, 1], got ${o.testFraction}`);
  const f = o.docLength;
  if (!(f === 'short' || f === 'medium' || f === 'long' || (typeof f === 'number' && Number.isInteger(f) && f >= 0)))
    throw bad('docLength', `expected short, medium, long or a non-negative integer, got ${String(f)}`);
  return o;
}

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function stem(rng: Rng, min: number, max: number): string {
  const n = min + rng.int(max - min + 1);
  let s = '';
  for (let i = 0; i < n; i++) s += rng.pick(SYLLABLES);
  return cap(s);
}

function makeName(rng: Rng, kind: EntityKind): string {
  switch (kind) {
    case 'person':
      return `${rng.pick(FIRST_NAMES)} ${stem(rng, 2, 2)}`;
    case 'city':
      return `${rng.pick(CITY_PREFIXES)}${stem(rng, 2, 2)}`;
    case 'country':
      return `${stem(rng, 1, 2)}${rng.pick(COUNTRY_SUFFIXES)}`;
    case 'organisation':
      return `${stem(rng, 2, 2)} ${rng.pick(ORG_SUFFIXES)}`;
    case 'work':
      return `The ${rng.pick(WORK_ADJECTIVES)} ${rng.pick(WORK_NOUNS)}`;
  }
}

const SWAP_LISTS: readonly (readonly string[])[] = [FIRST_NAMES, ORG_SUFFIXES, WORK_ADJECTIVES, WORK_NOUNS];

/** A near-duplicate of `name`: one word swapped for a sibling, or a stem changed by a letter. */
function nearDuplicate(rng: Rng, name: string): string {
  const words = name.split(' ');
  const candidates = words.map((w, i) => i).filter((i) => words[i] !== 'The');
  const i = rng.pick(candidates);
  const w = words[i];
  const list = SWAP_LISTS.find((l) => l.includes(w));
  if (list && rng.next() < 0.5) {
    let v = w;
    while (v === w) v = rng.pick(list);
    words[i] = v;
  } else if (list) {
    words[i] = w + rng.pick(['s', 'e', 'a']);
  } else {
    const mode = rng.int(3);
    if (mode === 0) words[i] = w + rng.pick(['a', 'en', 'is', 'o']);
    else if (mode === 1) words[i] = w.slice(0, -1) + rng.pick(['a', 'e', 'i', 'o', 'u', 'y'].filter((c) => c !== w.slice(-1)));
    else words[i] = cap(rng.pick(SYLLABLES)) + w.slice(1).toLowerCase();
  }
  return words.join(' ');
}

function render(template: string, s: string, o: string): string {
  return template.replaceAll('{s}', s).replaceAll('{o}', o);
}

function randomValue(rng: Rng, relation: string): string {
  const years = YEAR_RANGES[relation];
  if (years) return String(years[0] + rng.int(years[1] - years[0] + 1));
  return rng.pick(WORD_VALUES[relation]);
}

/** A value of `relation` close to but different from `value` (another entity name, a nearby year, a sibling word). */
function nearMissValue(rng: Rng, relation: string, value: string, byKind: Record<EntityKind, Entity[]>): string {
  const def = RELATIONS[relation];
  for (let attempt = 0; attempt < 20; attempt++) {
    let v: string;
    if (typeof def.value === 'object') v = rng.pick(byKind[def.value.entity]).name;
    else if (def.value === 'year') v = String(Number(value) + (rng.next() < 0.5 ? -1 : 1) * (1 + rng.int(15)));
    else v = rng.pick(WORD_VALUES[relation]);
    if (v !== value) return v;
  }
  return value;
}

function documentText(rng: Rng, kind: EntityKind, name: string, facts: Record<string, string>, fillers: number, others: Entity[]): string {
  const factSentences = relationsOf(kind).map((r) => render(rng.pick(RELATIONS[r].facts), name, facts[r]));
  rng.shuffle(factSentences);
  const body = [...factSentences];
  for (let i = 0; i < fillers; i++) {
    const t = rng.pick(FILLER_SENTENCES);
    const other = rng.pick(others).name;
    body.splice(rng.int(body.length + 1), 0, cap(t.replaceAll('{s}', name).replaceAll('{e}', other)));
  }
  return [render(rng.pick(INTRO_SENTENCES[kind]), name, ''), ...body].join(' ');
}

/** Generate a world. Deterministic in `options` (including the seed). */
export function generateWorld(partial: Partial<WorldOptions> = {}): World {
  const options = validateWorldOptions(partial);
  const rng = new Rng(`world:${options.seed}`);
  const nameRng = rng.fork();
  const factRng = rng.fork();
  const docRng = rng.fork();
  const questionRng = rng.fork();

  // Entities and names (unique across entities and distractors).
  const used = new Set<string>();
  const uniqueName = (make: () => string): string => {
    for (let attempt = 0; attempt < 1000; attempt++) {
      const n = make();
      if (!used.has(n) && !n.includes('  ')) {
        used.add(n);
        return n;
      }
    }
    throw new ConfigError({ path: 'entities', message: 'ran out of distinct names; use fewer entities' });
  };
  const byKind = { person: [], city: [], country: [], organisation: [], work: [] } as Record<EntityKind, Entity[]>;
  const entities: Entity[] = [];
  for (const kind of ENTITY_KINDS) {
    const count = Math.max(kind === 'country' ? 3 : 4, Math.round(options.entities * KIND_SHARE[kind]));
    for (let i = 0; i < count; i++) {
      const e: Entity = { id: '', kind, name: uniqueName(() => makeName(nameRng, kind)), facts: {}, links: {}, docId: '' };
      byKind[kind].push(e);
      entities.push(e);
    }
  }
  entities.forEach((e, i) => (e.id = `e${i}`));

  // Facts. Cities belong to countries; each country's capital is one of its cities.
  const link = (e: Entity, relation: string, target: Entity) => {
    e.facts[relation] = target.name;
    e.links[relation] = target.id;
  };
  const citiesOf = new Map<Entity, Entity[]>();
  byKind.city.forEach((c, i) => {
    const country = i < byKind.country.length ? byKind.country[i] : factRng.pick(byKind.country);
    link(c, 'city.country', country);
    citiesOf.set(country, [...(citiesOf.get(country) ?? []), c]);
  });
  for (const e of entities) {
    for (const r of relationsOf(e.kind)) {
      if (e.facts[r] !== undefined) continue;
      const def = RELATIONS[r];
      if (r === 'country.capital') link(e, r, factRng.pick(citiesOf.get(e)!));
      else if (typeof def.value === 'object') {
        const pool = byKind[def.value.entity].filter((x) => x !== e);
        link(e, r, factRng.pick(pool));
      } else e.facts[r] = randomValue(factRng, r);
    }
  }

  // Documents: one per entity, plus distractors. Ids are shuffled so they carry no information.
  const fillers = fillerCount(options.docLength);
  const docs: WorldDocument[] = [];
  for (const e of entities) {
    docs.push({
      id: '',
      title: e.name,
      text: documentText(docRng, e.kind, e.name, e.facts, fillers, entities),
      entityId: e.id,
      distractor: false,
    });
  }
  const distractorCount = Math.round(options.distractors * entities.length);
  const imitated = docRng.shuffle([...entities]).slice(0, distractorCount);
  for (const e of imitated) {
    const name = uniqueName(() => nearDuplicate(docRng, e.name));
    const facts: Record<string, string> = {};
    for (const r of relationsOf(e.kind)) facts[r] = nearMissValue(docRng, r, e.facts[r], byKind);
    docs.push({
      id: '',
      title: name,
      text: documentText(docRng, e.kind, name, facts, fillers, entities),
      entityId: e.id,
      distractor: true,
    });
  }
  const order = docRng.shuffle(docs.map((_, i) => i));
  order.forEach((docIndex, k) => (docs[docIndex].id = `d${k + 1}`));
  entities.forEach((e, i) => (e.docId = docs[i].id));
  const documents = [...docs].sort((a, b) => Number(a.id.slice(1)) - Number(b.id.slice(1)));

  // Questions: random walks over relations, one document per hop, answer never an entity already on the chain.
  const byId = new Map(entities.map((e) => [e.id, e]));
  const seen = new Set<string>();
  const questions: WorldQuestion[] = [];
  const hopChoices: number[] = [];
  for (let h = options.minHops; h <= options.maxHops; h++) hopChoices.push(h);
  let attempts = 0;
  while (questions.length < options.questions && attempts < options.questions * 50) {
    attempts++;
    const hops = hopChoices[questions.length % hopChoices.length];
    const start = questionRng.pick(entities);
    const chain: ChainStep[] = [];
    const visited = new Set([start.id]);
    let cur: Entity = start;
    let ok = true;
    for (let h = 0; h < hops; h++) {
      const last = h === hops - 1;
      const options_ = relationsOf(cur.kind).filter((r) => {
        const target = cur.links[r];
        if (target !== undefined) return !visited.has(target);
        return last; // attribute values end a chain
      });
      if (options_.length === 0) {
        ok = false;
        break;
      }
      const r = questionRng.pick(options_);
      const step: ChainStep = { subject: cur.name, subjectId: cur.id, relation: r, object: cur.facts[r], docId: cur.docId };
      if (cur.links[r] !== undefined) {
        step.objectId = cur.links[r];
        cur = byId.get(cur.links[r])!;
        visited.add(cur.id);
      }
      chain.push(step);
    }
    if (!ok) continue;
    // Compose the question from the inside out.
    let np = start.name;
    for (let h = 0; h < hops - 1; h++) np = RELATIONS[chain[h].relation].np.replace('{x}', np);
    const outer = RELATIONS[chain[hops - 1].relation];
    const forms = [...outer.questions, ...GENERIC_QUESTIONS.map((g) => g.replace('{np}', outer.np))];
    const question = cap(questionRng.pick(forms).replace('{x}', np));
    if (seen.has(question)) continue;
    seen.add(question);
    questions.push({
      id: `w${options.seed}-q${questions.length}`,
      question,
      answers: [chain[hops - 1].object],
      hops,
      chain,
      split: 'train',
      metadata: { seed: options.seed, hops, relations: chain.map((c) => c.relation) },
    });
  }
  const testCount = Math.round(options.testFraction * questions.length);
  for (const i of questionRng.shuffle(questions.map((_, k) => k)).slice(0, testCount)) questions[i].split = 'test';

  return { options, entities, documents, questions, manifest: buildManifest(options, entities, documents, questions) };
}

function buildManifest(options: WorldOptions, entities: Entity[], documents: WorldDocument[], questions: WorldQuestion[]): WorldManifest {
  const entitiesByKind: Record<string, number> = {};
  for (const e of entities) entitiesByKind[e.kind] = (entitiesByKind[e.kind] ?? 0) + 1;
  const questionsByHops: Record<string, number> = {};
  for (const q of questions) questionsByHops[q.hops] = (questionsByHops[q.hops] ?? 0) + 1;
  const train = questions.filter((q) => q.split === 'train').length;
  return {
    format: 'matpo-world',
    version: 1,
    seed: options.seed,
    knobs: options,
    counts: {
      entities: entities.length,
      entitiesByKind,
      documents: documents.length,
      distractorDocuments: documents.filter((d) => d.distractor).length,
      questions: questions.length,
      train,
      test: questions.length - train,
      questionsByHops,
    },
    files: { entities: 'entities.jsonl', corpus: 'corpus.jsonl', train: 'train.jsonl', test: 'test.jsonl' },
  };
}

function jsonl(rows: readonly unknown[]): string {
  return rows.map((r) => JSON.stringify(r)).join('\n') + (rows.length ? '\n' : '');
}

/** Write a world as JSONL files plus manifest.json. */
export function saveWorld(world: World, dir: string): void {
  mkdirSync(dir, { recursive: true });
  const f = world.manifest.files;
  writeFileSync(join(dir, f.entities), jsonl(world.entities));
  writeFileSync(join(dir, f.corpus), jsonl(world.documents));
  writeFileSync(join(dir, f.train), jsonl(world.questions.filter((q) => q.split === 'train')));
  writeFileSync(join(dir, f.test), jsonl(world.questions.filter((q) => q.split === 'test')));
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(world.manifest, null, 2) + '\n');
}

/** Read JSONL rows; a line that is not a JSON object is a FileFormatError naming file and line. */
export function readJsonl<T>(file: string, check?: (row: Record<string, unknown>, line: number) => void): T[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new FileFormatError({ file, message: `cannot read: ${(err as Error).message}`, cause: err });
  }
  const rows: T[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (err) {
      throw new FileFormatError({ file, line: i + 1, message: `invalid JSON: ${(err as Error).message}`, cause: err });
    }
    if (row === null || typeof row !== 'object' || Array.isArray(row))
      throw new FileFormatError({ file, line: i + 1, message: 'expected a JSON object' });
    check?.(row as Record<string, unknown>, i + 1);
    rows.push(row as T);
  }
  return rows;
}

function requireFields(file: string, fields: Record<string, 'string' | 'number' | 'object'>) {
  return (row: Record<string, unknown>, line: number) => {
    for (const [field, type] of Object.entries(fields)) {
      if (typeof row[field] !== type || row[field] === null)
        throw new FileFormatError({
          file,
          line,
          field,
          message: `expected ${type}, got ${row[field] === undefined ? 'nothing' : typeof row[field]}`,
        });
    }
  };
}

/** Read a world written by `saveWorld`. */
export function loadWorld(dir: string): World {
  const manifestFile = join(dir, 'manifest.json');
  if (!existsSync(manifestFile))
    throw new FileFormatError({ file: manifestFile, message: 'not found (is this a world directory written by `matpo world`?)' });
  let manifest: WorldManifest;
  try {
    manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as WorldManifest;
  } catch (err) {
    throw new FileFormatError({ file: manifestFile, message: `invalid JSON: ${(err as Error).message}`, cause: err });
  }
  if (manifest.format !== 'matpo-world')
    throw new FileFormatError({
      file: manifestFile,
      field: 'format',
      message: `expected "matpo-world", got ${JSON.stringify(manifest.format)}`,
    });
  const f = manifest.files;
  const entities = readJsonl<Entity>(
    join(dir, f.entities),
    requireFields(join(dir, f.entities), {
      id: 'string',
      kind: 'string',
      name: 'string',
      facts: 'object',
      links: 'object',
      docId: 'string',
    }),
  );
  const documents = readJsonl<WorldDocument>(
    join(dir, f.corpus),
    requireFields(join(dir, f.corpus), { id: 'string', title: 'string', text: 'string' }),
  );
  const qCheck = (file: string) =>
    requireFields(file, { id: 'string', question: 'string', answers: 'object', hops: 'number', chain: 'object' });
  const questions = [
    ...readJsonl<WorldQuestion>(join(dir, f.train), qCheck(join(dir, f.train))),
    ...readJsonl<WorldQuestion>(join(dir, f.test), qCheck(join(dir, f.test))),
  ];
  return { options: manifest.knobs, entities, documents, questions, manifest };
}

/** Summary numbers of a world (for the CLI and reports). */
export function worldStats(world: World): WorldManifest['counts'] & { wordsPerDocument: { mean: number; max: number } } {
  const words = world.documents.map((d) => d.text.split(/\s+/).length);
  return {
    ...world.manifest.counts,
    wordsPerDocument: { mean: words.reduce((a, b) => a + b, 0) / Math.max(1, words.length), max: Math.max(0, ...words) },
  };
}
