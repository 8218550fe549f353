/**
 * `web_search`: Google results through a Serper-compatible API (`POST {baseUrl}/search` with JSON
 * `{ q, num, gl?, hl? }` and header `X-API-KEY`; key from `SERPER_API_KEY` unless given), formatted as
 * compact numbered text for the model. As in the MATPO reference, results on Hugging Face dataset
 * and space pages are dropped, because benchmark answers are published there.
 */
import { z } from 'zod';
import { ConfigError, EndpointError } from '../core/errors.ts';
import { defineTool, type Tool } from './tool.ts';

export interface WebSearchOptions {
  /** Default: env SERPER_API_KEY. */
  apiKey?: string;
  /** Default: env SERPER_BASE_URL, else https://google.serper.dev */
  baseUrl?: string;
  /** Results requested per query. Default 10. */
  numResults?: number;
  /** Country and language codes passed through (Serper `gl`, `hl`). */
  gl?: string;
  hl?: string;
  timeoutMs?: number;
}

interface SerperOrganic {
  title?: string;
  link?: string;
  snippet?: string;
  date?: string;
}

interface SerperResponse {
  answerBox?: { title?: string; answer?: string; snippet?: string; link?: string };
  knowledgeGraph?: { title?: string; type?: string; description?: string; attributes?: Record<string, string> };
  organic?: SerperOrganic[];
}

/** True for huggingface.co (or hf.co) dataset and space pages. */
export function isAnswerLeakUrl(link: string): boolean {
  let url: URL;
  try {
    url = new URL(link);
  } catch {
    return false;
  }
  const host = url.hostname.toLowerCase();
  const hf = host === 'huggingface.co' || host.endsWith('.huggingface.co') || host === 'hf.co' || host.endsWith('.hf.co');
  if (hf && /^\/(datasets|spaces)(\/|$)/i.test(url.pathname)) return true;
  return host.endsWith('.hf.space'); // spaces served on their own domain
}

/** Compact numbered text from a Serper response (leaky results removed). */
export function formatSearchResults(query: string, data: SerperResponse): string {
  const lines: string[] = [];
  const box = data.answerBox;
  if (box && (box.answer || box.snippet) && !(box.link && isAnswerLeakUrl(box.link))) {
    lines.push(`Answer box: ${[box.title, box.answer ?? box.snippet].filter(Boolean).join(' — ')}${box.link ? ` (${box.link})` : ''}`);
  }
  const kg = data.knowledgeGraph;
  if (kg?.title) {
    const attrs = Object.entries(kg.attributes ?? {}).map(([k, v]) => `${k}: ${v}`);
    lines.push(`Knowledge graph: ${[kg.title, kg.type, kg.description, ...attrs].filter(Boolean).join('; ')}`);
  }
  const organic = (data.organic ?? []).filter((r) => r.link && !isAnswerLeakUrl(r.link));
  organic.forEach((r, i) => {
    lines.push(
      `${i + 1}. ${r.title ?? '(no title)'}\n   ${r.link}${r.date ? `\n   ${r.date}` : ''}` +
        `${r.snippet ? `\n   ${r.snippet.replace(/\s+/g, ' ')}` : ''}`,
    );
  });
  if (lines.length === 0) return `No results for "${query}".`;
  return `Search results for "${query}":\n${lines.join('\n')}`;
}

const inputSchema = z.object({
  query: z.string().min(1).describe('The search query.'),
  num: z.number().int().min(1).max(20).optional().describe('How many results (1-20).'),
});

/** The `web_search` tool. Throws ConfigError at creation when no API key is available. */
export function createWebSearchTool(options: WebSearchOptions = {}): Tool<z.infer<typeof inputSchema>> {
  const apiKey = options.apiKey ?? process.env.SERPER_API_KEY;
  if (!apiKey)
    throw new ConfigError({ path: 'tools.web_search.apiKey', message: 'web_search needs a Serper API key (set SERPER_API_KEY)' });
  const baseUrl = (options.baseUrl ?? process.env.SERPER_BASE_URL ?? 'https://google.serper.dev').replace(/\/+$/, '');
  const endpoint = `${baseUrl}/search`;
  return defineTool({
    name: 'web_search',
    description: 'Search the web (Google). Returns titles, URLs and snippets.',
    inputSchema,
    async execute({ query, num }, { signal }) {
      const body: Record<string, unknown> = { q: query, num: num ?? options.numResults ?? 10 };
      if (options.gl) body.gl = options.gl;
      if (options.hl) body.hl = options.hl;
      const signals = [signal];
      if (options.timeoutMs) signals.push(AbortSignal.timeout(options.timeoutMs));
      let res: Response;
      try {
        res = await fetch(endpoint, {
          method: 'POST',
          headers: { 'X-API-KEY': apiKey, 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.any(signals),
        });
      } catch (err) {
        throw new EndpointError({ url: endpoint, message: `search request failed: ${(err as Error).message}`, cause: err });
      }
      const text = await res.text();
      if (!res.ok) throw new EndpointError({ url: endpoint, status: res.status, message: text.slice(0, 300) || res.statusText });
      let data: SerperResponse;
      try {
        data = JSON.parse(text) as SerperResponse;
      } catch {
        throw new EndpointError({ url: endpoint, status: res.status, message: 'response is not JSON' });
      }
      return formatSearchResults(query, data);
    },
  });
}
