/**
 * Local search benchmark: build time, save/load time and median query latency of the BM25 index
 * on a corpus (default: the 2WikiMultihopQA paragraphs in ../shared/data). Queries are built from
 * the corpus itself: each is a title plus two words from its paragraph.
 *
 *   node --import tsx bench/search.ts [corpus.json] [--queries 500]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SearchIndex, loadCorpus } from '../src/tools/search/search-index.ts';
import { Rng } from '../src/util/rng.ts';

const args = process.argv.slice(2);
const qi = args.indexOf('--queries');
const nQueries = qi >= 0 ? Number(args[qi + 1]) : 500;
const file =
  args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--queries') ??
  resolve(dirname(fileURLToPath(import.meta.url)), '../../shared/data/2wiki_corpus.json');

const docs = loadCorpus(file);
const times: number[] = [];
let index!: SearchIndex;
for (let r = 0; r < 3; r++) {
  index = SearchIndex.build(docs);
  times.push(index.buildMs);
}
const dir = mkdtempSync(join(tmpdir(), 'bench-search-'));
let t = performance.now();
index.save(dir);
const saveMs = performance.now() - t;
t = performance.now();
const loaded = SearchIndex.load(dir);
const loadMs = performance.now() - t;
rmSync(dir, { recursive: true, force: true });

const rng = new Rng(1);
const queries: string[] = [];
for (let i = 0; i < nQueries; i++) {
  const d = rng.pick(docs);
  const words = d.text.split(/\s+/).filter((w) => w.length > 4);
  queries.push(`${d.title} ${rng.pick(words) ?? ''} ${rng.pick(words) ?? ''}`.trim());
}
for (const q of queries.slice(0, 20)) loaded.search(q, 5); // warm-up
const lat: number[] = [];
let top1 = 0;
for (const q of queries) {
  const s = performance.now();
  const hits = loaded.search(q, 5);
  lat.push(performance.now() - s);
  if (hits[0] && q.startsWith(hits[0].title)) top1++;
}
lat.sort((a, b) => a - b);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`corpus ${file}: ${docs.length} documents`);
console.log(`build (median of 3): ${median(times).toFixed(0)} ms; save ${saveMs.toFixed(0)} ms; load ${loadMs.toFixed(0)} ms`);
console.log(
  `query latency over ${lat.length} queries (top 5): median ${median(lat).toFixed(2)} ms, ` +
    `p90 ${lat[Math.floor(lat.length * 0.9)].toFixed(2)} ms`,
);
console.log(`sanity: a document with the query's title ranked first in ${((100 * top1) / lat.length).toFixed(0)}% of queries`);
