/**
 * The dashboard's HTTP server (`matpo view`). It serves the page and its scripts from
 * `src/ui/static/`, uPlot from node_modules, and a small read-only JSON API over the given run
 * directories; nothing else on disk is reachable.
 *
 *   GET /                                     the page
 *   GET /static/<file>, /vendor/<file>        fixed lists of files (page code, uPlot)
 *   GET /api/runs                             runs: name, steps with rollouts / eval, tokenizer dir
 *   GET /api/runs/<run>/metrics?offset&line&ino  metrics.jsonl from a byte offset (readMetricsFrom)
 *   GET /api/runs/<run>/metrics/stream        the same as Server-Sent Events, tailing the file
 *   GET /api/runs/<run>/rollouts/<step>       questions → rollout summaries sorted by reward
 *   GET /api/runs/<run>/rollouts/<step>/<id>  one full Rollout record (+ token pieces if a tokenizer)
 *   GET /api/runs/<run>/eval/<step>[/<id>]    the same for the eval rollouts of a step
 *   GET /api/runs/<run>/config                config.yaml as text
 *   GET /files/<run>/<path…>                  a raw file under the run directory (resolveInside)
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import type { Rollout } from '../core/records.ts';
import { listSteps, readJsonl, readMetricsFrom, resolveInside, stepFile, summariseStep } from './run-files.ts';
import { findTokenizerDir, loadTokenDecoder } from './token-decoder.ts';

export interface ViewOptions {
  runDirs: string[];
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Directory with tokenizer.json to decode tokens with, for every run. */
  tokenizerDir?: string;
  /** How often a metrics stream checks the file for new lines (ms). */
  pollMs?: number;
}

export interface ViewServer {
  url: string;
  port: number;
  runs: RunEntry[];
  close(): Promise<void>;
}

interface RunEntry {
  name: string;
  dir: string;
}

const STATIC_DIR = join(dirname(fileURLToPath(import.meta.url)), 'static');
const UPLOT_DIR = join(dirname(createRequire(import.meta.url).resolve('uplot/package.json')), 'dist');

const STATIC_FILES: Record<string, string> = {
  'index.html': join(STATIC_DIR, 'index.html'),
  'app.js': join(STATIC_DIR, 'app.js'),
  'charts.js': join(STATIC_DIR, 'charts.js'),
  'rollouts.js': join(STATIC_DIR, 'rollouts.js'),
  'util.js': join(STATIC_DIR, 'util.js'),
  'style.css': join(STATIC_DIR, 'style.css'),
};
const VENDOR_FILES: Record<string, string> = {
  'uPlot.esm.js': join(UPLOT_DIR, 'uPlot.esm.js'),
  'uPlot.min.css': join(UPLOT_DIR, 'uPlot.min.css'),
};

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.jsonl': 'text/plain; charset=utf-8',
  '.yaml': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.png': 'image/png',
};

function isLoopbackName(name: string): boolean {
  return name === 'localhost' || name === '::1' || /^127\.\d+\.\d+\.\d+$/.test(name);
}

/** Host header names a loopback address (with or without a port). */
function isLoopbackHost(header: string | undefined): boolean {
  if (!header) return false;
  const m = /^(\[[^\]]+\]|[^:]+)(:\d+)?$/.exec(header.trim().toLowerCase());
  return m !== null && isLoopbackName(m[1].replace(/^\[|\]$/g, ''));
}

/** Run names for URLs: the directory's base name, made URL-safe and unique. */
export function runNames(dirs: string[]): RunEntry[] {
  const seen = new Map<string, number>();
  return dirs.map((d) => {
    const base = basename(resolve(d)).replace(/[^A-Za-z0-9._-]/g, '_') || 'run';
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    return { name: n === 1 ? base : `${base}-${n}`, dir: resolve(d) };
  });
}

function send(res: ServerResponse, status: number, body: string | Buffer, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.end(body);
}

function sendJson(res: ServerResponse, value: unknown, status = 200): void {
  send(res, status, JSON.stringify(value), TYPES['.json']);
}

async function sendFile(res: ServerResponse, file: string): Promise<void> {
  const st = await stat(file);
  res.writeHead(200, {
    'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
    'content-length': st.size,
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  await new Promise<void>((ok, fail) => {
    const s = createReadStream(file);
    s.on('error', fail);
    s.on('end', ok);
    s.pipe(res);
  });
}

export async function startViewServer(opts: ViewOptions): Promise<ViewServer> {
  const runs = runNames(opts.runDirs);
  const byName = new Map(runs.map((r) => [r.name, r]));
  const pollMs = opts.pollMs ?? 500;
  const streams = new Set<() => void>();
  const host = opts.host ?? '127.0.0.1';
  const loopbackOnly = isLoopbackName(host);

  async function runInfo(r: RunEntry) {
    const [rolloutSteps, evalSteps, tokenizer] = await Promise.all([
      listSteps(r.dir, 'rollouts'),
      listSteps(r.dir, 'eval'),
      findTokenizerDir(r.dir, opts.tokenizerDir),
    ]);
    return { name: r.name, dir: r.dir, rolloutSteps, evalSteps, tokenizer };
  }

  async function loadStep(r: RunEntry, kind: 'rollouts' | 'eval', step: number) {
    const file = stepFile(r.dir, kind, step);
    return readJsonl<Rollout>(file, `${kind}/${basename(file)}`);
  }

  function metricsStream(req: IncomingMessage, res: ServerResponse, r: RunEntry, url: URL): void {
    // Resume where the browser left off (EventSource sends Last-Event-ID on reconnect).
    const last = String(req.headers['last-event-id'] ?? '');
    const m = /^(\d+):(\d+):(\d+)$/.exec(last);
    let offset = m ? Number(m[1]) : Number(url.searchParams.get('offset') ?? 0) || 0;
    let line = m ? Number(m[2]) : Number(url.searchParams.get('line') ?? 0) || 0;
    let ino = m ? Number(m[3]) : 0;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write('retry: 1000\n\n');
    let busy = false;
    let first = true;
    let idle = 0;
    const tick = async () => {
      if (busy) return;
      busy = true;
      try {
        const chunk = await readMetricsFrom(join(r.dir, 'metrics.jsonl'), offset, line, ino);
        if (first || chunk.records.length || chunk.errors.length || chunk.reset) {
          res.write(`id: ${chunk.offset}:${chunk.line}:${chunk.ino}\ndata: ${JSON.stringify(chunk)}\n\n`);
          first = false;
          idle = 0;
        } else if (++idle * pollMs >= 15000) {
          res.write(': keep-alive\n\n');
          idle = 0;
        }
        offset = chunk.offset;
        line = chunk.line;
        ino = chunk.ino;
      } catch (err) {
        res.write(`event: failure\ndata: ${JSON.stringify({ message: (err as Error).message })}\n\n`);
      } finally {
        busy = false;
      }
    };
    const timer = setInterval(tick, pollMs);
    const stop = () => {
      clearInterval(timer);
      streams.delete(stop);
      res.end();
    };
    streams.add(stop);
    req.on('close', stop);
    void tick();
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'method not allowed\n');
    // On loopback, answer only requests addressed to loopback names: a web page elsewhere that
    // rebinds its own host name to 127.0.0.1 must not be able to read the runs.
    if (loopbackOnly && !isLoopbackHost(req.headers.host))
      return send(res, 403, 'this dashboard only answers requests addressed to localhost\n');
    const rawPath = (req.url ?? '/').split('?')[0];
    const url = new URL(req.url ?? '/', 'http://localhost');
    // Split the raw (undecoded, unnormalised) path so that `..` cannot be folded away before we check it.
    const segs = rawPath.split('/').slice(1);

    if (rawPath === '/' || rawPath === '/index.html') return sendFile(res, STATIC_FILES['index.html']);
    if (segs[0] === 'static' && segs.length === 2 && Object.hasOwn(STATIC_FILES, segs[1])) return sendFile(res, STATIC_FILES[segs[1]]);
    if (segs[0] === 'vendor' && segs.length === 2 && Object.hasOwn(VENDOR_FILES, segs[1])) return sendFile(res, VENDOR_FILES[segs[1]]);
    if (rawPath === '/favicon.ico') return send(res, 204, '');

    if (segs[0] === 'files') {
      const r = byName.get(segs[1] ?? '');
      if (!r) return send(res, 404, 'unknown run\n');
      const found = await resolveInside(r.dir, segs.slice(2));
      if (!found.ok) return send(res, found.status, `${found.reason}\n`);
      return sendFile(res, found.file);
    }

    if (segs[0] !== 'api') return send(res, 404, 'not found\n');
    if (segs[1] === 'runs' && segs.length === 2) return sendJson(res, await Promise.all(runs.map(runInfo)));
    if (segs[1] !== 'runs') return send(res, 404, 'not found\n');
    const r = byName.get(segs[2] ?? '');
    if (!r) return sendJson(res, { error: `unknown run "${segs[2]}"` }, 404);
    const rest = segs.slice(3);

    if (rest[0] === 'metrics' && rest.length === 1) {
      const offset = Number(url.searchParams.get('offset') ?? 0) || 0;
      const line = Number(url.searchParams.get('line') ?? 0) || 0;
      const ino = Number(url.searchParams.get('ino') ?? 0) || 0;
      return sendJson(res, await readMetricsFrom(join(r.dir, 'metrics.jsonl'), offset, line, ino));
    }
    if (rest[0] === 'metrics' && rest[1] === 'stream' && rest.length === 2) return metricsStream(req, res, r, url);
    if (rest[0] === 'config' && rest.length === 1) {
      try {
        return send(res, 200, await readFile(join(r.dir, 'config.yaml'), 'utf8'));
      } catch {
        return send(res, 404, 'no config.yaml\n');
      }
    }
    if ((rest[0] === 'rollouts' || rest[0] === 'eval') && rest.length >= 2 && rest.length <= 3) {
      if (!/^\d{1,9}$/.test(rest[1])) return sendJson(res, { error: 'bad step' }, 400);
      const step = Number(rest[1]);
      if (!(await listSteps(r.dir, rest[0])).includes(step)) return sendJson(res, { error: `no ${rest[0]} for step ${step}` }, 404);
      const { records, errors } = await loadStep(r, rest[0], step);
      if (rest.length === 2) {
        // Rollout records (what the trainer writes, also for eval) are grouped by question; any other
        // per-question records are returned as they are, for a table.
        const rollouts = records.length > 0 && records.every((x) => x && typeof x === 'object' && typeof (x as Rollout).root === 'object');
        return sendJson(
          res,
          rollouts || records.length === 0
            ? { step, errors, questions: summariseStep(records) }
            : { step, errors, questions: null, records },
        );
      }
      const id = decodeURIComponent(rest[2]);
      const rollout = records.find((x) => String(x.id) === id);
      if (!rollout) return sendJson(res, { error: `no rollout "${id}" at step ${step}` }, 404);
      let pieces: Record<string, string[]> | null = null;
      let tokenizer: string | null = null;
      let tokenizerError: string | null = null;
      const dir = await findTokenizerDir(r.dir, opts.tokenizerDir);
      if (dir) {
        try {
          const dec = await loadTokenDecoder(dir);
          pieces = {};
          for (const s of [rollout.root, ...(rollout.workers ?? [])]) if (s) pieces[s.id] = dec.pieces(s.tokens ?? []);
          tokenizer = dir;
        } catch (err) {
          tokenizerError = `${dir}: ${(err as Error).message}`;
        }
      }
      return sendJson(res, { rollout, pieces, tokenizer, tokenizerError });
    }
    return send(res, 404, 'not found\n');
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, `${(err as Error).message}\n`);
      else res.end();
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', fail);
      ok();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return {
    url: `http://${shownHost}:${port}/`,
    port,
    runs,
    close: () =>
      new Promise<void>((ok) => {
        for (const stop of [...streams]) stop();
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}
