/**
 * `matpo index`: build a persistent BM25 index over a corpus (JSON array or JSONL of
 * `{id?, title, text}`, or a world directory) and report build time; `--query` runs a search
 * against the built index.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../core/errors.ts';
import { intFlag, parseFlags, required, type Command } from '../command.ts';
import { SearchIndex, loadCorpus, formatHits } from '../../tools/search/search-index.ts';

export const command: Command = {
  name: 'index',
  summary: 'Build a BM25 search index over a corpus (JSON or JSONL of {id?, title, text}, or a world directory).',
  usage: 'index <corpus.jsonl|corpus.json|world-dir> --out DIR [--query TEXT] [--top-k 5]',
  async run(argv) {
    const { values, positionals } = parseFlags(
      argv,
      { out: { type: 'string' }, query: { type: 'string' }, 'top-k': { type: 'string' } },
      true,
    );
    if (positionals.length !== 1) throw new ConfigError({ path: 'corpus', message: 'expected exactly one corpus file or world directory' });
    let file = positionals[0];
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'corpus.jsonl');
    const out = required(values, 'out');
    const t0 = performance.now();
    const docs = loadCorpus(file);
    const t1 = performance.now();
    const index = SearchIndex.build(docs);
    index.save(out, file);
    const t2 = performance.now();
    console.log(`indexed ${docs.length} documents from ${file} → ${out}`);
    console.log(`  read ${(t1 - t0).toFixed(0)} ms, build ${index.buildMs.toFixed(0)} ms, build+save ${(t2 - t1).toFixed(0)} ms`);
    if (typeof values.query === 'string') console.log(formatHits(values.query, index.search(values.query, intFlag(values, 'top-k', 5))));
  },
};
