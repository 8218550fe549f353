/**
 * Local document search: a persistent BM25+ index (minisearch) over a corpus of `{id?, title, text}`
 * records, ranked snippets for a query, and `open` that pages a document by character offset.
 *
 * Search noise: with `noise` = p, at each of the k result positions a noisy hit is inserted with
 * probability p — irrelevant (a random document) or misleading (a lower-ranked document that shares
 * a title word with the query) — pushing the real hits down; the list is then cut back to k. Draws
 * come from an RNG seeded by (noiseSeed, query), so the same query always gets the same noisy
 * results. A noisy hit shows the score of the hit it was inserted before, so scores do not give it
 * away. The best real hit survives unless every position draws noise.
 *
 * On disk (`save(dir)`): `index.json` (minisearch JSON), `docs.jsonl` (the documents, for `open`),
 * `meta.json` (counts, build time, source).
 */
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import MiniSearch from 'minisearch';
import { FileFormatError, InvalidArgumentError } from '../../core/errors.ts';
import { Rng } from '../../util/rng.ts';

export interface CorpusDocument {
  id: string;
  title: string;
  text: string;
}

export interface SearchHit {
  id: string;
  title: string;
  snippet: string;
  score: number;
  /** True when this hit was mixed in by search noise. */
  noise?: boolean;
}

export interface OpenedPage {
  id: string;
  title: string;
  /** The page of text starting at `offset`. */
  text: string;
  offset: number;
  /** Offset just past this page. */
  end: number;
  total: number;
  remaining: number;
}

export interface SearchOptions {
  /** Fraction of result slots replaced by irrelevant or misleading hits. */
  noise?: number;
  noiseSeed?: number;
  /** Characters per snippet. */
  snippetChars?: number;
}

const MINISEARCH_OPTIONS = {
  fields: ['title', 'text'],
  idField: 'key',
  searchOptions: { boost: { title: 2 } },
};

/** Read a corpus: a JSON array or JSONL of `{id?, title, text}`. Missing ids become the row number. */
export function loadCorpus(file: string): CorpusDocument[] {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (err) {
    throw new FileFormatError({ file, message: `cannot read: ${(err as Error).message}`, cause: err });
  }
  const rows: { row: unknown; line?: number }[] = [];
  const trimmed = raw.trimStart();
  if (trimmed.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      throw new FileFormatError({ file, message: `invalid JSON: ${(err as Error).message}`, cause: err });
    }
    (parsed as unknown[]).forEach((row) => rows.push({ row }));
  } else {
    raw.split('\n').forEach((l, i) => {
      if (l.trim() === '') return;
      try {
        rows.push({ row: JSON.parse(l), line: i + 1 });
      } catch (err) {
        throw new FileFormatError({ file, line: i + 1, message: `invalid JSON: ${(err as Error).message}`, cause: err });
      }
    });
  }
  const seen = new Set<string>();
  return rows.map(({ row, line }, i) => {
    const r = row as Record<string, unknown>;
    const where = { file, line: line ?? undefined };
    const at = line === undefined ? ` (record ${i})` : '';
    if (r === null || typeof r !== 'object') throw new FileFormatError({ ...where, message: `expected an object${at}` });
    for (const field of ['title', 'text']) {
      if (typeof r[field] !== 'string') throw new FileFormatError({ ...where, field, message: `expected a string${at}` });
    }
    const id = r.id === undefined || r.id === null ? String(i) : String(r.id);
    if (seen.has(id)) throw new FileFormatError({ ...where, field: 'id', message: `duplicate id "${id}"${at}` });
    seen.add(id);
    return { id, title: r.title as string, text: r.text as string };
  });
}

export class SearchIndex {
  private readonly byId: Map<string, CorpusDocument>;
  private constructor(
    private readonly mini: MiniSearch,
    readonly documents: readonly CorpusDocument[],
    readonly buildMs: number,
  ) {
    this.byId = new Map(documents.map((d) => [d.id, d]));
  }

  static build(documents: readonly CorpusDocument[]): SearchIndex {
    const start = performance.now();
    const mini = new MiniSearch(MINISEARCH_OPTIONS);
    mini.addAll(documents.map((d, key) => ({ key, title: d.title, text: d.text })));
    return new SearchIndex(mini, documents, performance.now() - start);
  }

  static load(dir: string): SearchIndex {
    const indexFile = join(dir, 'index.json');
    const docsFile = join(dir, 'docs.jsonl');
    for (const f of [indexFile, docsFile]) {
      if (!existsSync(f)) throw new FileFormatError({ file: f, message: 'not found (build the index with `matpo index`)' });
    }
    const documents = loadCorpus(docsFile);
    let mini: MiniSearch;
    try {
      mini = MiniSearch.loadJSON(readFileSync(indexFile, 'utf8'), MINISEARCH_OPTIONS);
    } catch (err) {
      throw new FileFormatError({ file: indexFile, message: `cannot load index: ${(err as Error).message}`, cause: err });
    }
    if (mini.documentCount !== documents.length)
      throw new FileFormatError({
        file: indexFile,
        message: `index has ${mini.documentCount} documents but docs.jsonl has ${documents.length}`,
      });
    return new SearchIndex(mini, documents, 0);
  }

  save(dir: string, source?: string): void {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'index.json'), JSON.stringify(this.mini));
    writeFileSync(join(dir, 'docs.jsonl'), this.documents.map((d) => JSON.stringify(d)).join('\n') + '\n');
    writeFileSync(
      join(dir, 'meta.json'),
      JSON.stringify({ documents: this.documents.length, buildMs: Math.round(this.buildMs), source: source ?? null }, null, 2) + '\n',
    );
  }

  get size(): number {
    return this.documents.length;
  }

  /** Ranked hits for `query` (at most k). */
  search(query: string, k = 5, options: SearchOptions = {}): SearchHit[] {
    if (!Number.isInteger(k) || k < 1) throw new InvalidArgumentError('k', `expected a positive integer, got ${k}`);
    const snippetChars = options.snippetChars ?? 160;
    const results = this.mini.search(query);
    const hits: SearchHit[] = results.slice(0, k).map((r) => {
      const d = this.documents[r.id as number];
      return { id: d.id, title: d.title, snippet: snippet(d.text, r.terms, snippetChars), score: r.score };
    });
    const noise = options.noise ?? 0;
    if (noise > 0 && this.documents.length > 0) {
      const rng = new Rng(`${options.noiseSeed ?? 0}:${query}`);
      const used = new Set(hits.map((h) => h.id));
      const queryWords = new Set(
        query
          .toLowerCase()
          .split(/\W+/)
          .filter((w) => w.length > 2),
      );
      const lowerRanked = results
        .slice(k)
        .map((r) => this.documents[r.id as number])
        .filter((d) =>
          d.title
            .toLowerCase()
            .split(/\W+/)
            .some((w) => queryWords.has(w)),
        );
      for (let slot = 0; slot < k; slot++) {
        if (rng.next() >= noise) continue;
        let doc: CorpusDocument | undefined;
        const misleading = lowerRanked.filter((d) => !used.has(d.id));
        if (misleading.length > 0 && rng.next() < 0.5) doc = rng.pick(misleading);
        for (let attempt = 0; doc === undefined && attempt < 10; attempt++) {
          const d = this.documents[rng.int(this.documents.length)];
          if (!used.has(d.id)) doc = d;
        }
        if (doc === undefined) continue;
        used.add(doc.id);
        const score = hits[slot]?.score ?? hits[hits.length - 1]?.score ?? 0;
        hits.splice(Math.min(slot, hits.length), 0, {
          id: doc.id,
          title: doc.title,
          snippet: snippet(doc.text, [], snippetChars),
          score,
          noise: true,
        });
      }
      hits.length = Math.min(hits.length, k);
    }
    return hits;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** A page of document `id` from character `offset`, at most `length` characters. */
  open(id: string, offset = 0, length = 2000): OpenedPage {
    const d = this.byId.get(id);
    if (d === undefined) throw new InvalidArgumentError('id', `no document with id "${id}"`);
    if (!Number.isInteger(offset) || offset < 0) throw new InvalidArgumentError('offset', `expected a non-negative integer, got ${offset}`);
    const total = d.text.length;
    const start = Math.min(offset, total);
    const end = Math.min(total, start + length);
    return { id: d.id, title: d.title, text: d.text.slice(start, end), offset: start, end, total, remaining: total - end };
  }
}

/** A window of the text around the first matched query term, cut at word boundaries. */
export function snippet(text: string, terms: readonly string[], chars: number): string {
  if (text.length <= chars) return text;
  const lower = text.toLowerCase();
  let pos = -1;
  for (const t of terms) {
    const p = lower.indexOf(t.toLowerCase());
    if (p >= 0 && (pos < 0 || p < pos)) pos = p;
  }
  let start = pos < 0 ? 0 : Math.max(0, pos - Math.floor(chars / 4));
  if (start > 0) {
    const space = text.indexOf(' ', start);
    start = space >= 0 && space < pos ? space + 1 : start;
  }
  let end = Math.min(text.length, start + chars);
  if (end < text.length) {
    const space = text.lastIndexOf(' ', end);
    if (space > start) end = space;
  }
  return `${start > 0 ? '…' : ''}${text.slice(start, end)}${end < text.length ? '…' : ''}`;
}

/** Search results as compact text for an agent. */
export function formatHits(query: string, hits: readonly SearchHit[]): string {
  if (hits.length === 0) return `No results for "${query}".`;
  return [`Results for "${query}":`, ...hits.map((h) => `[${h.id}] ${h.title}: ${h.snippet}`)].join('\n');
}

/** An opened page as compact text for an agent, with a note of how much remains. */
export function formatPage(page: OpenedPage): string {
  const note =
    page.remaining > 0
      ? `(characters ${page.offset}-${page.end} of ${page.total}; ${page.remaining} more, open with offset ${page.end})`
      : `(characters ${page.offset}-${page.end} of ${page.total}; end of document)`;
  return `Document ${page.id}: ${page.title}\n${page.text}\n${note}`;
}
