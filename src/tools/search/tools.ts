/**
 * The agent tools over a local search index: `search` ({query, top_k?}) returns ranked snippets as
 * compact text, `open` ({id, offset?}) returns a page of a document with a note of how much remains.
 * Bad ids come back as readable error text (the tool runner turns throws into tool results too).
 */
import { z } from 'zod';
import { defineTool, type Tool } from '../tool.ts';
import { formatHits, formatPage, type SearchIndex, type SearchOptions } from './search-index.ts';

export interface SearchToolOptions extends SearchOptions {
  /** Hits returned when the model gives no top_k. */
  defaultTopK?: number;
  /** Largest top_k honoured. */
  maxTopK?: number;
  /** Characters per page returned by `open`. */
  pageChars?: number;
}

export function createSearchTools(index: SearchIndex, options: SearchToolOptions = {}): Tool[] {
  const defaultTopK = options.defaultTopK ?? 5;
  const maxTopK = options.maxTopK ?? 10;
  const pageChars = options.pageChars ?? 2000;
  const search = defineTool({
    name: 'search',
    description: 'Search the documents. Returns ranked results as [id] title: snippet.',
    inputSchema: z.object({
      query: z.string().min(1).describe('search terms'),
      top_k: z.number().int().min(1).optional().describe(`number of results (default ${defaultTopK})`),
    }),
    async execute({ query, top_k }) {
      const hits = index.search(query, Math.min(top_k ?? defaultTopK, maxTopK), options);
      return formatHits(query, hits);
    },
  });
  const open = defineTool({
    name: 'open',
    description: 'Read a document by id. Long documents come in pages; pass offset to read on.',
    inputSchema: z.object({
      id: z.string().min(1).describe('a document id from the search results'),
      offset: z.number().int().min(0).optional().describe('character offset to start at (default 0)'),
    }),
    async execute({ id, offset }) {
      if (!index.has(id)) return `Error: no document with id "${id}". Use an id from the search results.`;
      return formatPage(index.open(id, offset ?? 0, pageChars));
    },
  });
  return [search, open];
}
