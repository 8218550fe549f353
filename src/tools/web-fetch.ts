/**
 * `web_fetch`: open a URL the model chose and return its text, one page of characters at a time.
 *
 * Safety, because the URL comes from the model: only http and https; unless `allowPrivateNetwork`
 * is set, every hop (the first URL and each redirect, followed by hand) must resolve only to public
 * addresses — IP literals are checked directly, hostnames through `guardedLookup`, which checks the
 * addresses actually connected to. Size (`maxBytes`, decompressed) and time (`timeoutMs`, whole
 * fetch including redirects) are limited. HTML is converted to text with html-to-text; text, JSON
 * and XML pass through; other content types are refused.
 */
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import zlib from 'node:zlib';
import { z } from 'zod';
import { convert } from 'html-to-text';
import { defineTool, type Tool } from './tool.ts';
import { guardedLookup, refusalReason, RefusedAddressError, type AddressPolicy } from './net-guard.ts';

export interface WebFetchOptions extends AddressPolicy {
  /** Whole-fetch time limit, redirects included. Default 20000. */
  timeoutMs?: number;
  /** Largest body accepted, after decompression. Default 5 MB. */
  maxBytes?: number;
  /** Characters returned per call (the model pages on with `offset`). Default 10000. */
  pageChars?: number;
  /** Default 5. */
  maxRedirects?: number;
  userAgent?: string;
}

export interface FetchedPage {
  url: string;
  status: number;
  contentType: string;
  title: string;
  text: string;
  /** The body was longer than maxBytes and was cut. */
  truncated: boolean;
}

const DEFAULTS = { timeoutMs: 20_000, maxBytes: 5 * 1024 * 1024, pageChars: 10_000, maxRedirects: 5, userAgent: 'matpo-web-fetch/0.1' };

export class WebFetchError extends Error {}

function checkScheme(url: URL): void {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new WebFetchError(`refused ${url.protocol.replace(/:$/, '')}: URL (only http and https are allowed)`);
  }
}

function checkLiteralHost(url: URL, policy: AddressPolicy): void {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) {
    const reason = refusalReason(host, policy);
    if (reason) throw new WebFetchError(`refused ${url.href}: ${reason}`);
  }
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  truncated: boolean;
}

function decoderFor(encoding: string | undefined): zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress | null {
  switch ((encoding ?? '').trim().toLowerCase()) {
    case 'gzip':
    case 'x-gzip':
      return zlib.createGunzip();
    case 'deflate':
      return zlib.createInflate();
    case 'br':
      return zlib.createBrotliDecompress();
    default:
      return null;
  }
}

function requestOnce(
  url: URL,
  options: Required<Omit<WebFetchOptions, keyof AddressPolicy>> & AddressPolicy,
  signal: AbortSignal,
  followBody: boolean,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(
      url,
      {
        method: 'GET',
        headers: {
          'user-agent': options.userAgent,
          accept: 'text/html,application/xhtml+xml,text/plain,application/json,application/xml;q=0.9,*/*;q=0.5',
          'accept-encoding': 'gzip, deflate, br',
        },
        lookup: options.allowPrivateNetwork ? undefined : (guardedLookup(options) as never),
        signal,
      },
      (res) => {
        const status = res.statusCode ?? 0;
        if (!followBody || (status >= 300 && status < 400)) {
          res.resume();
          resolve({ status, headers: res.headers, body: Buffer.alloc(0), truncated: false });
          return;
        }
        const decoder = decoderFor(res.headers['content-encoding'] as string | undefined);
        const stream: NodeJS.ReadableStream = decoder ? res.pipe(decoder) : res;
        const chunks: Buffer[] = [];
        let size = 0;
        let truncated = false;
        const finish = () =>
          resolve({ status, headers: res.headers, body: Buffer.concat(chunks).subarray(0, options.maxBytes), truncated });
        stream.on('data', (chunk: Buffer) => {
          if (truncated) return;
          chunks.push(chunk);
          size += chunk.length;
          if (size > options.maxBytes) {
            truncated = true;
            res.destroy();
            finish();
          }
        });
        stream.on('end', () => truncated || finish());
        stream.on('error', (err) => (truncated ? undefined : reject(new WebFetchError(`reading ${url.href}: ${err.message}`))));
        res.on('error', (err) => (truncated ? undefined : reject(new WebFetchError(`reading ${url.href}: ${err.message}`))));
      },
    );
    req.on('error', (err) => reject(err));
    req.end();
  });
}

function charsetOf(contentType: string): string {
  const m = /charset\s*=\s*"?([^";\s]+)/i.exec(contentType);
  return m ? m[1] : 'utf-8';
}

function decodeBody(body: Buffer, contentType: string): string {
  let label = charsetOf(contentType);
  if (contentType.includes('html') && !/charset/i.test(contentType)) {
    const meta = /<meta[^>]+charset\s*=\s*["']?([\w-]+)/i.exec(body.subarray(0, 2048).toString('latin1'));
    if (meta) label = meta[1];
  }
  try {
    return new TextDecoder(label).decode(body);
  } catch {
    return new TextDecoder('utf-8').decode(body);
  }
}

function decodeEntities(s: string): string {
  return convert(s, { wordwrap: false }).trim();
}

/** HTML to readable text: headings, lists and tables kept, scripts/styles/images dropped, links absolute. */
export function htmlToText(html: string, baseUrl: string): { title: string; text: string } {
  const titleMatch = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(html);
  const title = titleMatch ? decodeEntities(titleMatch[1]).replace(/\s+/g, ' ') : '';
  // html-to-text joins baseUrl and href as strings; resolve relative links properly first.
  const absolute = html.replace(/(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2/gi, (whole, pre: string, quote: string, href: string) => {
    try {
      return `${pre}${quote}${new URL(href.replace(/&amp;/g, '&'), baseUrl).href.replace(/&/g, '&amp;')}${quote}`;
    } catch {
      return whole;
    }
  });
  const text = convert(absolute, {
    wordwrap: false,
    selectors: [
      { selector: 'a', options: { hideLinkHrefIfSameAsText: true } },
      { selector: 'img', format: 'skip' },
      { selector: 'script', format: 'skip' },
      { selector: 'style', format: 'skip' },
      { selector: 'noscript', format: 'skip' },
      { selector: 'table', format: 'dataTable', options: { uppercaseHeaderCells: false } },
      { selector: 'h1', options: { uppercase: false } },
      { selector: 'h2', options: { uppercase: false } },
      { selector: 'h3', options: { uppercase: false } },
      { selector: 'h4', options: { uppercase: false } },
      { selector: 'h5', options: { uppercase: false } },
      { selector: 'h6', options: { uppercase: false } },
    ],
  });
  return { title, text: text.replace(/\n{3,}/g, '\n\n').trim() };
}

/** Fetch `url` under the safety rules and return its text. Throws WebFetchError (or a network error) on failure. */
export async function fetchPage(rawUrl: string, options: WebFetchOptions = {}, outerSignal?: AbortSignal): Promise<FetchedPage> {
  const o = { ...DEFAULTS, ...options };
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new WebFetchError(`not a valid URL: ${JSON.stringify(rawUrl)}`);
  }
  const signal = outerSignal ? AbortSignal.any([outerSignal, AbortSignal.timeout(o.timeoutMs)]) : AbortSignal.timeout(o.timeoutMs);
  try {
    for (let hop = 0; ; hop++) {
      checkScheme(url);
      if (!o.allowPrivateNetwork) checkLiteralHost(url, o);
      const res = await requestOnce(url, o, signal, true);
      if (res.status >= 300 && res.status < 400 && res.headers.location) {
        if (hop >= o.maxRedirects) throw new WebFetchError(`too many redirects (more than ${o.maxRedirects}) from ${rawUrl}`);
        let next: URL;
        try {
          next = new URL(res.headers.location, url);
        } catch {
          throw new WebFetchError(`bad redirect location ${JSON.stringify(res.headers.location)} from ${url.href}`);
        }
        url = next;
        continue;
      }
      if (res.status < 200 || res.status >= 300) throw new WebFetchError(`HTTP ${res.status} from ${url.href}`);
      const contentType = String(res.headers['content-type'] ?? 'text/html').toLowerCase();
      const textual = /^(text\/|application\/(json|xml|xhtml\+xml|ld\+json|rss\+xml|atom\+xml|javascript))|\+xml|\+json/.test(contentType);
      if (!textual) throw new WebFetchError(`unsupported content type "${contentType.split(';')[0]}" at ${url.href}`);
      const raw = decodeBody(res.body, contentType);
      const isHtml = contentType.includes('html');
      const { title, text } = isHtml ? htmlToText(raw, url.href) : { title: '', text: raw };
      return { url: url.href, status: res.status, contentType: contentType.split(';')[0].trim(), title, text, truncated: res.truncated };
    }
  } catch (err) {
    if (signal.aborted && !outerSignal?.aborted) throw new WebFetchError(`fetching ${rawUrl} timed out after ${o.timeoutMs} ms`);
    if (outerSignal?.aborted) throw new WebFetchError(`fetching ${rawUrl} was cancelled`);
    if (err instanceof WebFetchError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (err instanceof RefusedAddressError) throw new WebFetchError(`refused ${url.href}: ${e.message}`);
    throw new WebFetchError(`fetching ${url.href} failed: ${e.code ? `${e.code} ` : ''}${e.message}`);
  }
}

/** One page of `text` starting at `offset`, with a header saying where it is and how to read on. */
export function formatPage(page: FetchedPage, offset: number, pageChars: number): string {
  const total = page.text.length;
  if (offset > total) return `${page.url}: offset ${offset} is past the end (the text has ${total} characters)`;
  const end = Math.min(total, offset + pageChars);
  const head = [`URL: ${page.url}`];
  if (page.title) head.push(`Title: ${page.title}`);
  head.push(`Characters ${offset}-${end} of ${total}${page.truncated ? ' (page cut at the size limit)' : ''}`);
  const tail = end < total ? `\n[more: call web_fetch with offset=${end}]` : '';
  return `${head.join('\n')}\n\n${page.text.slice(offset, end)}${tail}`;
}

const inputSchema = z.object({
  url: z.string().describe('The http(s) URL to open.'),
  offset: z.number().int().min(0).optional().describe('Character offset to read from (for long pages). Default 0.'),
});

/** The `web_fetch` tool. */
export function createWebFetchTool(options: WebFetchOptions = {}): Tool<z.infer<typeof inputSchema>> {
  const pageChars = options.pageChars ?? DEFAULTS.pageChars;
  return defineTool({
    name: 'web_fetch',
    description: `Open a web page and return its text (${pageChars} characters per call; use offset to read further).`,
    inputSchema,
    async execute({ url, offset }, { signal }) {
      const page = await fetchPage(url, options, signal);
      return formatPage(page, offset ?? 0, pageChars);
    },
  });
}
