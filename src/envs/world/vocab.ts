/**
 * The closed vocabulary of the offline research world: name syllables, attribute values, the
 * relations between entity kinds, and the sentence templates used for documents, questions and
 * subtasks. Everything a world can say is built from these lists, so a small model trained on one
 * world reads any other world (another seed) with the same words.
 *
 * A template uses `{s}` for the subject (the document's entity) and `{o}` for the object (the
 * value). `factRegex` turns the fact templates back into patterns, which is how the scripted expert
 * reads a fact out of a document it opened.
 */

export type EntityKind = 'person' | 'city' | 'country' | 'organisation' | 'work';

export const ENTITY_KINDS: readonly EntityKind[] = ['country', 'city', 'person', 'organisation', 'work'];

/** What a relation's value looks like: another entity of a kind, a year, or a lowercase word. */
export type ValueType = { entity: EntityKind } | 'year' | 'word' | 'name';

export interface RelationDef {
  /** Kind of the subject entity. */
  subject: EntityKind;
  value: ValueType;
  /** Noun phrase for "the R of X" (with `{x}`). */
  np: string;
  /** Question forms when this relation is the outermost one (`{x}` is the inner noun phrase or name). */
  questions: string[];
  /** Sentences stating the fact in a document. */
  facts: string[];
}

/** Relation names are unique per subject kind; `founded_year` exists for cities and organisations. */
export const RELATIONS: Record<string, RelationDef> = {
  'person.born_in': {
    subject: 'person',
    value: { entity: 'city' },
    np: 'the birthplace of {x}',
    questions: ['Where was {x} born?', 'In which city was {x} born?', 'What is the birthplace of {x}?'],
    facts: ['{s} was born in {o}.', '{s} was born in the city of {o}.', 'The birthplace of {s} is {o}.'],
  },
  'person.works_for': {
    subject: 'person',
    value: { entity: 'organisation' },
    np: 'the employer of {x}',
    questions: ['Which organisation does {x} work for?', 'Who is the employer of {x}?', 'What is the employer of {x}?'],
    facts: ['{s} works for {o}.', '{s} is employed by {o}.', 'The employer of {s} is {o}.'],
  },
  'person.mentor': {
    subject: 'person',
    value: { entity: 'person' },
    np: 'the mentor of {x}',
    questions: ['Who was the mentor of {x}?', 'Under whom did {x} study?'],
    facts: ['{s} studied under {o}.', 'The mentor of {s} was {o}.', '{s} was a student of {o}.'],
  },
  'person.birth_year': {
    subject: 'person',
    value: 'year',
    np: 'the birth year of {x}',
    questions: ['In what year was {x} born?', 'What is the birth year of {x}?'],
    facts: ['{s} was born in the year {o}.', 'The birth year of {s} is {o}.'],
  },
  'person.occupation': {
    subject: 'person',
    value: 'word',
    np: 'the occupation of {x}',
    questions: ['What is the occupation of {x}?', 'What does {x} do for a living?'],
    facts: ['{s} is a {o}.', '{s} works as a {o}.', 'By profession {s} is a {o}.'],
  },
  'city.country': {
    subject: 'city',
    value: { entity: 'country' },
    np: 'the country of {x}',
    questions: ['In which country is {x}?', 'What is the country of {x}?', 'Which country is {x} in?'],
    facts: ['{s} is a city in {o}.', '{s} lies in {o}.', '{s} is located in the country of {o}.'],
  },
  'city.founded_year': {
    subject: 'city',
    value: 'year',
    np: 'the founding year of {x}',
    questions: ['In what year was {x} founded?', 'What is the founding year of {x}?'],
    facts: ['{s} was founded in {o}.', 'The founding year of {s} is {o}.'],
  },
  'country.capital': {
    subject: 'country',
    value: { entity: 'city' },
    np: 'the capital of {x}',
    questions: ['What is the capital of {x}?', 'Which city is the capital of {x}?'],
    facts: ['The capital of {s} is {o}.', '{o} is the capital of {s}.'],
  },
  'country.language': {
    subject: 'country',
    value: 'name',
    np: 'the language of {x}',
    questions: ['What language is spoken in {x}?', 'What is the language of {x}?'],
    facts: ['People in {s} speak {o}.', 'The language of {s} is {o}.'],
  },
  'organisation.founder': {
    subject: 'organisation',
    value: { entity: 'person' },
    np: 'the founder of {x}',
    questions: ['Who founded {x}?', 'Who is the founder of {x}?'],
    facts: ['{s} was founded by {o}.', '{o} founded {s}.', 'The founder of {s} is {o}.'],
  },
  'organisation.headquarters': {
    subject: 'organisation',
    value: { entity: 'city' },
    np: 'the headquarters of {x}',
    questions: ['Where is {x} based?', 'In which city are the headquarters of {x}?', 'What is the headquarters of {x}?'],
    facts: ['{s} is based in {o}.', '{s} has its headquarters in {o}.', 'The headquarters of {s} is {o}.'],
  },
  'organisation.founded_year': {
    subject: 'organisation',
    value: 'year',
    np: 'the founding year of {x}',
    questions: ['In what year was {x} founded?', 'What is the founding year of {x}?'],
    facts: ['{s} was founded in {o}.', 'The founding year of {s} is {o}.'],
  },
  'organisation.field': {
    subject: 'organisation',
    value: 'word',
    np: 'the field of {x}',
    questions: ['What is the field of {x}?', 'In which field does {x} work?'],
    facts: ['{s} works in the field of {o}.', 'The field of {s} is {o}.'],
  },
  'work.author': {
    subject: 'work',
    value: { entity: 'person' },
    np: 'the author of {x}',
    questions: ['Who wrote {x}?', 'Who is the author of {x}?'],
    facts: ['{s} was written by {o}.', '{o} wrote {s}.', 'The author of {s} is {o}.'],
  },
  'work.year': {
    subject: 'work',
    value: 'year',
    np: 'the publication year of {x}',
    questions: ['In what year was {x} published?', 'What is the publication year of {x}?'],
    facts: ['{s} was published in {o}.', 'The publication year of {s} is {o}.'],
  },
  'work.genre': {
    subject: 'work',
    value: 'word',
    np: 'the genre of {x}',
    questions: ['What is the genre of {x}?', 'What kind of work is {x}?'],
    facts: ['{s} is a {o}.', 'The genre of {s} is {o}.'],
  },
};

export function relationsOf(kind: EntityKind): string[] {
  return Object.keys(RELATIONS).filter((r) => RELATIONS[r].subject === kind);
}

/** Word lists for `word`/`name` valued relations. */
export const WORD_VALUES: Record<string, readonly string[]> = {
  'person.occupation': [
    'painter',
    'sailor',
    'merchant',
    'physician',
    'teacher',
    'poet',
    'banker',
    'lawyer',
    'builder',
    'singer',
    'farmer',
    'judge',
  ],
  'organisation.field': ['medicine', 'shipbuilding', 'astronomy', 'banking', 'printing', 'mining', 'music', 'law', 'farming', 'trade'],
  'work.genre': ['novel', 'poem', 'play', 'history', 'travel book', 'song cycle'],
  'country.language': [
    'Aldic',
    'Benoran',
    'Corvish',
    'Dunmeric',
    'Eskaran',
    'Feltic',
    'Gorvan',
    'Halmish',
    'Irvenic',
    'Jostic',
    'Kelvaran',
    'Lorish',
  ],
};

export const YEAR_RANGES: Record<string, [number, number]> = {
  'person.birth_year': [1700, 1990],
  'city.founded_year': [900, 1800],
  'organisation.founded_year': [1600, 1990],
  'work.year': [1750, 2010],
};

/** Name parts. Person names are "First Last"; places and organisations are built from syllables. */
export const SYLLABLES: readonly string[] = [
  'al',
  'bor',
  'cen',
  'dar',
  'el',
  'fen',
  'gal',
  'har',
  'ir',
  'jor',
  'kel',
  'lun',
  'mar',
  'nor',
  'or',
  'pel',
  'quin',
  'ros',
  'sel',
  'tor',
  'ul',
  'var',
  'wen',
  'yor',
  'zan',
  'mir',
  'tal',
  'ven',
  'dor',
  'ka',
];
export const FIRST_NAMES: readonly string[] = [
  'Ada',
  'Bram',
  'Cora',
  'Dane',
  'Eli',
  'Fara',
  'Gil',
  'Hana',
  'Ivo',
  'Jana',
  'Kai',
  'Lena',
  'Milo',
  'Nia',
  'Oren',
  'Pia',
  'Rafe',
  'Sana',
  'Teo',
  'Una',
  'Vera',
  'Wim',
  'Yara',
  'Zeno',
];
export const ORG_SUFFIXES: readonly string[] = ['Institute', 'Company', 'Guild', 'Society', 'Bank', 'Academy', 'Press', 'Works'];
export const CITY_PREFIXES: readonly string[] = ['', '', '', 'Port ', 'New ', 'Old '];
export const COUNTRY_SUFFIXES: readonly string[] = ['ia', 'land', 'ora', 'istan', 'mark'];
export const WORK_ADJECTIVES: readonly string[] = [
  'Silent',
  'Golden',
  'Last',
  'Broken',
  'Hidden',
  'Northern',
  'Red',
  'Quiet',
  'Long',
  'Distant',
  'Bright',
  'Lost',
];
export const WORK_NOUNS: readonly string[] = [
  'River',
  'Garden',
  'Winter',
  'Harbour',
  'Tower',
  'Road',
  'Song',
  'Mountain',
  'Letter',
  'Bridge',
  'Island',
  'Lamp',
];

/** Sentences that carry no relation fact, for longer documents. `{s}` is the subject, `{e}` another entity. */
export const FILLER_SENTENCES: readonly string[] = [
  'Little is known about the early history of {s}.',
  '{s} is often mentioned in old records.',
  'Many visitors have written about {s}.',
  'Some sources describe {s} in great detail.',
  'Historians still debate several details about {s}.',
  '{s} appears in several later accounts.',
  '{s} is sometimes confused with {e}.',
  'A short note about {s} can be found in the archives of {e}.',
  'Later writers compared {s} with {e}.',
  'The records about {s} were collected much later.',
];

/** Opening sentence of a document, per kind. */
export const INTRO_SENTENCES: Record<EntityKind, readonly string[]> = {
  person: ['This article is about {s}.', '{s} appears in this record as a person.'],
  city: ['This article is about the city of {s}.', '{s} appears in this record as a city.'],
  country: ['This article is about the country of {s}.', '{s} appears in this record as a country.'],
  organisation: ['This article is about the organisation {s}.', '{s} appears in this record as an organisation.'],
  work: ['This article is about the work {s}.', '{s} appears in this record as a written work.'],
};

/** Ways the planner phrases a subtask for one hop (`{np}` is "the founder of X"). */
export const SUBTASK_TEMPLATES: readonly string[] = ['Find {np}.', 'Look up {np}.'];

/** Ways a question wraps an inner noun phrase, besides the relation's own forms. */
export const GENERIC_QUESTIONS: readonly string[] = ['What is {np}?'];

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The pattern a value of this type matches in a sentence. */
function valuePattern(value: ValueType): string {
  if (value === 'year') return '(\\d{1,4})';
  if (value === 'word') return '([a-z][a-z ]*?)';
  return '([A-Z][A-Za-z ]*?)'; // an entity name or a capitalised word
}

/**
 * Regexes that match one whole sentence stating `relation`, capturing subject and object in the
 * named groups `s` and `o`.
 */
export function factRegexes(relation: string): RegExp[] {
  const def = RELATIONS[relation];
  // Templates with more fixed words first, so "By profession {s} is a {o}." wins over "{s} is a {o}.".
  const templates = [...def.facts].sort((a, b) => b.replace(/\{[so]\}/g, '').length - a.replace(/\{[so]\}/g, '').length);
  return templates.map((t) => {
    const parts = t.split(/(\{s\}|\{o\})/);
    const src = parts
      .map((p) => (p === '{s}' ? '(?<s>[A-Z][A-Za-z ]*?)' : p === '{o}' ? valuePattern(def.value).replace('(', '(?<o>') : escapeRegex(p)))
      .join('');
    return new RegExp(`^${src}$`);
  });
}

/** Split a document into sentences (names never contain a full stop). */
export function splitSentences(text: string): string[] {
  return text
    .split(/(?<=\.)\s+/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** Every (subject, object) pair stated for `relation` in `text`. */
export function extractFacts(text: string, relation: string): { subject: string; object: string }[] {
  const regexes = factRegexes(relation);
  const out: { subject: string; object: string }[] = [];
  for (const sentence of splitSentences(text)) {
    for (const re of regexes) {
      const m = re.exec(sentence);
      if (m?.groups) {
        out.push({ subject: m.groups.s, object: m.groups.o });
        break;
      }
    }
  }
  return out;
}
