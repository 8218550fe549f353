/**
 * QA dataset loaders: JSONL, JSON (an array, or an object holding one), CSV, TSV and Parquet
 * (hyparquet, pure JS) files mapped to `{id, question, answers, metadata}` records through a field
 * mapping, with presets for the benchmarks used in this line of work.
 *
 * A mapping names, for each output field, one or more source fields:
 * - question: alternatives, the first present one is used;
 * - answers: every listed field that is present contributes (a string, a list of strings, or a
 *   string holding a JSON/Python list), so MuSiQue's `answer` + `answer_aliases` become one list;
 * - id: alternatives; when none is present the row number is the id;
 * - metadata: fields copied as they are (when present).
 * Field names may be dotted paths into nested objects. A row that does not parse is a
 * FileFormatError naming file and line; a missing field names the field and the mapping in use.
 *
 * GAIA is read from a path the user gives (its card asks not to reshare it); nothing is copied.
 */
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse as parseCsv } from 'csv-parse/sync';
import { parquetReadObjects } from 'hyparquet';
import { ConfigError, FileFormatError, UnknownNameError } from '../core/errors.ts';

export interface QaRecord {
  id: string;
  question: string;
  answers: string[];
  metadata: Record<string, unknown>;
}

export interface FieldMapping {
  question: string[];
  answers: string[];
  id?: string[];
  metadata?: string[];
}

export type QaFormat = 'jsonl' | 'json' | 'csv' | 'tsv' | 'parquet';

export interface QaPreset {
  description: string;
  mapping: FieldMapping;
}

export const QA_PRESETS: Record<string, QaPreset> = {
  frames: {
    description: 'FRAMES (Krishna et al., 2024): the original TSV (Prompt, Answer) or the redistributed JSONL (problem, answer)',
    mapping: {
      question: ['problem', 'Prompt'],
      answers: ['answer', 'Answer'],
      id: ['id'],
      metadata: ['reasoning_type', 'reasoning_types', 'wiki_links'],
    },
  },
  simpleqa: {
    description: 'SimpleQA (OpenAI simple-evals): problem, answer, metadata',
    mapping: { question: ['problem'], answers: ['answer'], id: ['id'], metadata: ['metadata'] },
  },
  gaia: {
    description: 'GAIA validation metadata (task_id, Question, Final answer, Level, file_name); local path only',
    mapping: { question: ['Question'], answers: ['Final answer'], id: ['task_id'], metadata: ['Level', 'file_name', 'file_path'] },
  },
  webwalkerqa: {
    description: 'WebWalkerQA: Question, Answer, Root_Url, Info (needs a network to answer)',
    mapping: {
      question: ['Question', 'question'],
      answers: ['Answer', 'answer'],
      id: ['id'],
      metadata: ['Root_Url', 'root_url', 'Info', 'info'],
    },
  },
  musique: {
    description: 'MuSiQue: question, answer + answer_aliases, answerable, question_decomposition',
    mapping: {
      question: ['question'],
      answers: ['answer', 'answer_aliases', 'golden_answers'],
      id: ['id'],
      metadata: ['answerable', 'question_decomposition'],
    },
  },
  hotpotqa: {
    description: 'HotpotQA: _id, question, answer, type, level, supporting_facts',
    mapping: {
      question: ['question'],
      answers: ['answer', 'golden_answers'],
      id: ['_id', 'id'],
      metadata: ['type', 'level', 'supporting_facts'],
    },
  },
  '2wikimultihopqa': {
    description: '2WikiMultihopQA: _id, question, answer, type, evidences, supporting_facts',
    mapping: {
      question: ['question'],
      answers: ['answer', 'golden_answers'],
      id: ['_id', 'id'],
      metadata: ['type', 'evidences', 'supporting_facts'],
    },
  },
  bamboogle: {
    description: 'Bamboogle: Question, Answer (or FlashRAG question, golden_answers)',
    mapping: { question: ['Question', 'question'], answers: ['Answer', 'golden_answers'], id: ['id'] },
  },
  nq: {
    description: 'Natural Questions in the FlashRAG layout: id, question, golden_answers',
    mapping: { question: ['question'], answers: ['golden_answers'], id: ['id'] },
  },
};

/** The mapping used with neither a preset nor a mapping: the common field names of the presets. */
export const DEFAULT_MAPPING: FieldMapping = {
  question: ['question', 'Question', 'problem', 'Prompt'],
  answers: ['answer', 'Answer', 'answers', 'golden_answers', 'Final answer'],
  id: ['id', '_id', 'task_id'],
};

export interface LoadQaOptions {
  /** A preset name (see QA_PRESETS) or an explicit mapping. */
  preset?: string;
  mapping?: FieldMapping;
  /** Defaults to the file extension (.jsonl/.json/.csv/.tsv/.parquet). */
  format?: QaFormat;
  limit?: number;
}

export function presetMapping(name: string): FieldMapping {
  const p = QA_PRESETS[name.toLowerCase()];
  if (!p) throw new UnknownNameError({ kind: 'dataset preset', name, available: Object.keys(QA_PRESETS) });
  return p.mapping;
}

export function describeMapping(m: FieldMapping): string {
  const alt = (xs?: string[]) => (xs && xs.length ? xs.join('|') : '(row number)');
  return `question ← ${alt(m.question)}, answers ← ${m.answers.join('+')}, id ← ${alt(m.id)}`;
}

function formatOf(file: string): QaFormat {
  const ext = extname(file).toLowerCase().slice(1);
  if (ext === 'jsonl' || ext === 'ndjson') return 'jsonl';
  if (ext === 'json' || ext === 'csv' || ext === 'tsv' || ext === 'parquet') return ext;
  throw new FileFormatError({
    file,
    message: `cannot tell the format from the extension ".${ext}"; pass a format (jsonl, json, csv, tsv, parquet)`,
  });
}

interface RawRow {
  row: Record<string, unknown>;
  /** 1-based line for line-oriented files; row index (0-based) otherwise. */
  line?: number;
  index: number;
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new FileFormatError({ file, message: `cannot read: ${(err as Error).message}`, cause: err });
  }
}

function isObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

async function readRows(file: string, format: QaFormat): Promise<RawRow[]> {
  if (format === 'jsonl') {
    const rows: RawRow[] = [];
    readText(file)
      .split('\n')
      .forEach((l, i) => {
        if (l.trim() === '') return;
        let row: unknown;
        try {
          row = JSON.parse(l);
        } catch (err) {
          throw new FileFormatError({ file, line: i + 1, message: `invalid JSON: ${(err as Error).message}`, cause: err });
        }
        if (!isObject(row)) throw new FileFormatError({ file, line: i + 1, message: 'expected a JSON object' });
        rows.push({ row, line: i + 1, index: rows.length });
      });
    return rows;
  }
  if (format === 'json') {
    let data: unknown;
    try {
      data = JSON.parse(readText(file));
    } catch (err) {
      throw new FileFormatError({ file, message: `invalid JSON: ${(err as Error).message}`, cause: err });
    }
    if (isObject(data)) {
      const arrays = Object.values(data).filter(Array.isArray);
      if (arrays.length !== 1)
        throw new FileFormatError({ file, message: 'expected a JSON array of rows, or an object holding exactly one array' });
      data = arrays[0];
    }
    if (!Array.isArray(data)) throw new FileFormatError({ file, message: 'expected a JSON array of rows' });
    return data.map((row, index) => {
      if (!isObject(row)) throw new FileFormatError({ file, message: `row ${index}: expected an object` });
      return { row, index };
    });
  }
  if (format === 'csv' || format === 'tsv') {
    let records: { record: Record<string, string>; info: { lines: number } }[];
    try {
      records = parseCsv(readText(file), {
        columns: true,
        delimiter: format === 'tsv' ? '\t' : ',',
        info: true,
        bom: true,
        skip_empty_lines: true,
        relax_quotes: true,
      }) as typeof records;
    } catch (err) {
      const e = err as Error & { lines?: number };
      throw new FileFormatError({ file, line: e.lines, message: e.message.replace(/^[A-Za-z_]+: /, ''), cause: err });
    }
    return records.map((r, index) => ({ row: r.record, line: r.info.lines, index }));
  }
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (err) {
    throw new FileFormatError({ file, message: `cannot read: ${(err as Error).message}`, cause: err });
  }
  let rows: Record<string, unknown>[];
  try {
    const arrayBuffer = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
    rows = (await parquetReadObjects({ file: arrayBuffer })) as Record<string, unknown>[];
  } catch (err) {
    throw new FileFormatError({ file, message: `not a readable Parquet file: ${(err as Error).message}`, cause: err });
  }
  return rows.map((row, index) => ({ row, index }));
}

function getPath(row: Record<string, unknown>, path: string): unknown {
  if (path in row) return row[path];
  let cur: unknown = row;
  for (const part of path.split('.')) {
    if (!isObject(cur) || !(part in cur)) return undefined;
    cur = cur[part];
  }
  return cur;
}

/** A string, a list of strings, or a string holding a JSON or Python list of strings. */
function answerList(value: unknown): string[] | null {
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return [String(value)];
  if (Array.isArray(value)) return value.every((v) => typeof v === 'string' || typeof v === 'number') ? value.map(String) : null;
  if (typeof value !== 'string') return null;
  const t = value.trim();
  if (t.startsWith('[') && t.endsWith(']')) {
    for (const attempt of [t, t.replace(/'/g, '"')]) {
      try {
        const parsed = JSON.parse(attempt);
        if (Array.isArray(parsed) && parsed.every((v) => typeof v === 'string')) return parsed;
      } catch {
        // not a list after all: keep the string
      }
    }
  }
  return [value];
}

function toRecord(file: string, raw: RawRow, m: FieldMapping): QaRecord {
  const where = { file, line: raw.line };
  const at = raw.line === undefined ? `row ${raw.index}: ` : '';
  const present = (paths: string[]) => paths.find((p) => getPath(raw.row, p) !== undefined && getPath(raw.row, p) !== null);
  const qField = present(m.question);
  if (qField === undefined)
    throw new FileFormatError({ ...where, field: m.question.join('|'), message: `${at}missing (mapping: ${describeMapping(m)})` });
  const question = getPath(raw.row, qField);
  if (typeof question !== 'string' || question.trim() === '')
    throw new FileFormatError({ ...where, field: qField, message: `${at}expected a non-empty string` });
  const answers: string[] = [];
  let anyAnswer = false;
  for (const f of m.answers) {
    const v = getPath(raw.row, f);
    if (v === undefined || v === null) continue;
    anyAnswer = true;
    const list = answerList(v);
    if (list === null) throw new FileFormatError({ ...where, field: f, message: `${at}expected a string or a list of strings` });
    for (const a of list) if (!answers.includes(a)) answers.push(a);
  }
  if (!anyAnswer)
    throw new FileFormatError({ ...where, field: m.answers.join('+'), message: `${at}missing (mapping: ${describeMapping(m)})` });
  const idField = m.id ? present(m.id) : undefined;
  const id = idField === undefined ? String(raw.index) : String(getPath(raw.row, idField));
  const metadata: Record<string, unknown> = {};
  for (const f of m.metadata ?? []) {
    const v = getPath(raw.row, f);
    if (v !== undefined) metadata[f] = typeof v === 'bigint' ? Number(v) : v;
  }
  return { id, question, answers, metadata };
}

/** Load a QA file into records. */
export async function loadQaDataset(file: string, options: LoadQaOptions = {}): Promise<QaRecord[]> {
  if (options.preset && options.mapping) throw new ConfigError({ path: 'dataset', message: 'give either a preset or a mapping, not both' });
  const mapping = options.mapping ?? (options.preset ? presetMapping(options.preset) : DEFAULT_MAPPING);
  if (mapping.question.length === 0 || mapping.answers.length === 0)
    throw new ConfigError({ path: 'dataset.mapping', message: 'question and answers need at least one field each' });
  const rows = await readRows(file, options.format ?? formatOf(file));
  const limited = options.limit !== undefined ? rows.slice(0, options.limit) : rows;
  return limited.map((r) => toRecord(file, r, mapping));
}
