// web_fetch against a real HTTP server on 127.0.0.1 serving test/fixtures/web/, and web_search
// against a stand-in server on 127.0.0.1 that speaks the Serper API shape (the paid Serper API
// cannot be reached from the test machine, so the stand-in checks what we send and answers in
// Serper's response format).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { createWebFetchTool, fetchPage } from './web-fetch.ts';
import { createWebSearchTool, formatSearchResults, isAnswerLeakUrl } from './web-search.ts';
import { executeTool } from './execute.ts';
import { ConfigError } from '../core/errors.ts';
import { isPrivateAddress, refusalReason } from './net-guard.ts';

const FIXTURES = new URL('../../test/fixtures/web/', import.meta.url);
const TYPES: Record<string, string> = { html: 'text/html', txt: 'text/plain; charset=utf-8', json: 'application/json' };

let server: http.Server;
let base = '';
const pending = new Set<http.ServerResponse>();

before(async () => {
  server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    if (path === '/redirect') {
      res.writeHead(302, { location: url.searchParams.get('to') ?? '/' });
      return res.end();
    }
    if (path === '/loop') {
      res.writeHead(301, { location: '/loop' });
      return res.end();
    }
    if (path === '/slow') {
      pending.add(res); // never answers; closed in after()
      return;
    }
    if (path === '/big') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      return res.end('y'.repeat(300_000));
    }
    if (path === '/image.png') {
      res.writeHead(200, { 'content-type': 'image/png' });
      return res.end(Buffer.from([0x89, 0x50, 0x4e, 0x47]));
    }
    const gz = path.startsWith('/gzip/');
    const name = path.replace(/^\/(gzip\/)?/, '');
    if (!/^[\w.-]+$/.test(name)) {
      res.writeHead(404);
      return res.end('not found');
    }
    let body: Buffer;
    try {
      body = readFileSync(new URL(name, FIXTURES));
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' });
      return res.end('not found');
    }
    const ext = name.split('.').pop() ?? '';
    const headers: http.OutgoingHttpHeaders = { 'content-type': TYPES[ext] ?? 'application/octet-stream' };
    if (gz) {
      body = gzipSync(body);
      headers['content-encoding'] = 'gzip';
    }
    res.writeHead(200, headers);
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  for (const res of pending) res.destroy();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const local = { allowPrivateNetwork: true, timeoutMs: 3000 };

test('fetch converts HTML to text: title, headings, lists, tables, absolute links; scripts dropped', async () => {
  const page = await fetchPage(`${base}/article.html`, local);
  assert.equal(page.status, 200);
  assert.equal(page.title, 'The Orsova Bridge & its Builders');
  assert.match(page.text, /The Orsova Bridge was completed in 1891 by the engineer Ilona Varga\./);
  assert.match(page.text, /the about page \[http:\/\/127\.0\.0\.1:\d+\/about\.html\]/);
  assert.match(page.text, /\* Length: 412 m/);
  assert.match(page.text, /1887\s+Construction begins/);
  assert.doesNotMatch(page.text, /SHOULD-NOT-APPEAR|font-family|bridge\.png/);
});

test('fetch handles gzip, plain text, JSON and a declared latin-1 charset', async () => {
  const gz = await fetchPage(`${base}/gzip/article.html`, local);
  assert.match(gz.text, /Ilona Varga/);
  const txt = await fetchPage(`${base}/notes.txt`, local);
  assert.equal(txt.text.trim(), "Plain text notes: the bridge's chief mason was Tomas Reiter.");
  const json = await fetchPage(`${base}/data.json`, local);
  assert.deepEqual(JSON.parse(json.text), { bridge: 'Orsova', year: 1891 });
  const latin = await fetchPage(`${base}/latin1.html`, local);
  assert.equal(latin.title, 'Café');
  assert.match(latin.text, /Café crème near the bridge/);
});

test('the tool pages through long text by character offset', async () => {
  const tool = createWebFetchTool({ ...local, pageChars: 100 });
  const first = await executeTool(tool, { url: `${base}/article.html` }, { timeoutMs: 5000, maxChars: 10_000 });
  assert.equal(first.ok, true, first.text);
  const total = Number(/Characters 0-100 of (\d+)/.exec(first.text)?.[1]);
  assert.ok(total > 200);
  assert.match(first.text, /\[more: call web_fetch with offset=100\]/);
  const second = await executeTool(tool, { url: `${base}/article.html`, offset: 100 }, { timeoutMs: 5000, maxChars: 10_000 });
  assert.match(second.text, /Characters 100-200 of/);
  const whole = (await fetchPage(`${base}/article.html`, local)).text;
  const body = (r: string) =>
    r
      .split('\n\n')
      .slice(1)
      .join('\n\n')
      .replace(/\n\[more: .*\]$/, '');
  assert.equal(body(first.text) + body(second.text), whole.slice(0, 200));
  const past = await executeTool(tool, { url: `${base}/article.html`, offset: 1e6 }, { timeoutMs: 5000, maxChars: 10_000 });
  assert.match(past.text, /past the end/);
});

test(
  'without allowPrivateNetwork loopback and private addresses are refused ' + '(IP literals in any notation, localhost, IPv6, mapped IPv4)',
  async () => {
    const tool = createWebFetchTool({ timeoutMs: 3000 });
    for (const url of [
      `${base}/article.html`,
      `http://localhost:1/`,
      'http://[::1]:1/',
      'http://[::ffff:127.0.0.1]:1/',
      'http://169.254.169.254/latest/meta-data/',
      'http://10.0.0.1/',
      'http://2130706433/',
      'http://0x7f.0.0.1/',
      'http://0.0.0.0/',
      'http://[::]/',
      'http://[fd00::1]/',
    ]) {
      const r = await executeTool(tool, { url }, { timeoutMs: 5000, maxChars: 1000 });
      assert.equal(r.ok, false, url);
      assert.match(r.text, /refused .*loopback, private, link-local or reserved/, url);
    }
  },
);

test('non-http(s) schemes are refused', async () => {
  for (const url of ['file:///etc/passwd', 'ftp://example.com/x', 'data:text/plain,hi', 'javascript:alert(1)']) {
    await assert.rejects(fetchPage(url, local), /refused (file|ftp|data|javascript): URL \(only http and https/, url);
  }
  await assert.rejects(fetchPage('not a url', local), /not a valid URL/);
});

test('every redirect hop is re-checked: to loopback and to file: are refused', async () => {
  // The fixture server itself (127.0.0.1) is allowed by exact address; the redirect targets are not.
  const policy = { allowedAddresses: ['127.0.0.1'], timeoutMs: 3000 };
  const ok = await fetchPage(`${base}/redirect?to=/about.html`, policy);
  assert.match(ok.text, /facts about bridges/);
  assert.equal(ok.url, `${base}/about.html`);
  await assert.rejects(
    fetchPage(`${base}/redirect?to=${encodeURIComponent('http://127.0.0.2:9/secret')}`, policy),
    /refused http:\/\/127\.0\.0\.2:9\/secret: address 127\.0\.0\.2 is loopback/,
  );
  await assert.rejects(fetchPage(`${base}/redirect?to=${encodeURIComponent('http://[::1]:9/')}`, policy), /address ::1 is loopback/);
  await assert.rejects(fetchPage(`${base}/redirect?to=${encodeURIComponent('file:///etc/passwd')}`, local), /refused file: URL/);
  await assert.rejects(fetchPage(`${base}/loop`, { ...local, maxRedirects: 3 }), /too many redirects \(more than 3\)/);
});

test('size, time, status and content-type limits', async () => {
  const big = await fetchPage(`${base}/big`, { ...local, maxBytes: 10_000 });
  assert.equal(big.truncated, true);
  assert.equal(big.text.length, 10_000);
  const t0 = performance.now();
  await assert.rejects(fetchPage(`${base}/slow`, { ...local, timeoutMs: 200 }), /timed out after 200 ms/);
  assert.ok(performance.now() - t0 < 2000);
  await assert.rejects(fetchPage(`${base}/missing.html`, local), /HTTP 404/);
  await assert.rejects(fetchPage(`${base}/image.png`, local), /unsupported content type "image\/png"/);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 50);
  await assert.rejects(fetchPage(`${base}/slow`, { ...local, timeoutMs: 5000 }, ac.signal), /was cancelled/);
});

test('Hugging Face dataset and space URLs are recognised as answer leaks', () => {
  assert.equal(isAnswerLeakUrl('https://huggingface.co/datasets/gaia-benchmark/GAIA'), true);
  assert.equal(isAnswerLeakUrl('https://huggingface.co/spaces/x/y'), true);
  assert.equal(isAnswerLeakUrl('https://hf.co/datasets/a/b'), true);
  assert.equal(isAnswerLeakUrl('https://someone-app.hf.space/'), true);
  assert.equal(isAnswerLeakUrl('https://huggingface.co/Qwen/Qwen3-4B'), false);
  assert.equal(isAnswerLeakUrl('https://en.wikipedia.org/wiki/Datasets'), false);
  assert.equal(formatSearchResults('q', { organic: [] }), 'No results for "q".');
});

test('web_search (stand-in Serper server): request shape, key header, leak filter, formatting, errors', async () => {
  const seen: { headers: http.IncomingHttpHeaders; body: any; path: string }[] = [];
  const serper = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      const body = JSON.parse(data);
      seen.push({ headers: req.headers, body, path: req.url ?? '' });
      if (req.headers['x-api-key'] !== 'test-key') {
        res.writeHead(403, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ message: 'Unauthorized.', statusCode: 403 }));
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          searchParameters: { q: body.q, type: 'search', engine: 'google' },
          answerBox: { title: 'Orsova Bridge', answer: '1891' },
          organic: [
            {
              title: 'Orsova Bridge - Wikipedia',
              link: 'https://en.wikipedia.org/wiki/Orsova_Bridge',
              snippet: 'The Orsova Bridge was\n completed in 1891.',
              position: 1,
            },
            {
              title: 'bridges-qa dataset',
              link: 'https://huggingface.co/datasets/someone/bridges-qa',
              snippet: 'answer: 1891',
              position: 2,
            },
            {
              title: 'Bridge history',
              link: 'https://example.org/bridges',
              snippet: 'Iron bridges of Europe.',
              date: 'Mar 3, 2020',
              position: 3,
            },
          ],
        }),
      );
    });
  });
  await new Promise<void>((r) => serper.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(serper.address() as AddressInfo).port}`;
  try {
    const tool = createWebSearchTool({ apiKey: 'test-key', baseUrl: `${url}/`, gl: 'us' });
    const r = await executeTool(tool, { query: 'orsova bridge year', num: 5 }, { timeoutMs: 3000, maxChars: 5000 });
    assert.equal(r.ok, true, r.text);
    assert.equal(seen[0].path, '/search');
    assert.equal(seen[0].headers['x-api-key'], 'test-key');
    assert.deepEqual(seen[0].body, { q: 'orsova bridge year', num: 5, gl: 'us' });
    assert.equal(
      r.text,
      [
        'Search results for "orsova bridge year":',
        'Answer box: Orsova Bridge — 1891',
        '1. Orsova Bridge - Wikipedia',
        '   https://en.wikipedia.org/wiki/Orsova_Bridge',
        '   The Orsova Bridge was completed in 1891.',
        '2. Bridge history',
        '   https://example.org/bridges',
        '   Mar 3, 2020',
        '   Iron bridges of Europe.',
      ].join('\n'),
    );
    const bad = createWebSearchTool({ apiKey: 'wrong', baseUrl: url });
    const denied = await executeTool(bad, { query: 'x' }, { timeoutMs: 3000, maxChars: 5000 });
    assert.equal(denied.ok, false);
    assert.match(denied.text, /HTTP 403: .*Unauthorized/);
    const invalid = await executeTool(tool, { query: '' }, { timeoutMs: 3000, maxChars: 5000 });
    assert.equal(invalid.valid, false);
    assert.match(invalid.text, /- query: /);
  } finally {
    await new Promise((r) => serper.close(r));
  }
  const saved = process.env.SERPER_API_KEY;
  delete process.env.SERPER_API_KEY;
  try {
    assert.throws(
      () => createWebSearchTool(),
      (e: unknown) => e instanceof ConfigError && /SERPER_API_KEY/.test(e.message),
    );
  } finally {
    if (saved !== undefined) process.env.SERPER_API_KEY = saved;
  }
});

test('address classification (hand-labelled): private, loopback, link-local, reserved vs public', () => {
  const blocked = [
    '127.0.0.1',
    '127.255.0.9',
    '10.1.2.3',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '224.0.0.1',
    '255.255.255.255',
    '198.18.0.1',
    '::1',
    '::',
    'fe80::1',
    'fe80::1%eth0',
    'fd00::1',
    'fc00::',
    'ff02::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::ffff:10.0.0.1',
    '64:ff9b::a00:1',
    '::127.0.0.1',
    'not-an-ip',
  ];
  const allowed = [
    '8.8.8.8',
    '1.1.1.1',
    '172.15.0.1',
    '172.32.0.1',
    '100.63.255.255',
    '93.184.216.34',
    '2606:4700::1111',
    '2a00:1450:4001::200e',
    '::ffff:8.8.8.8',
    '64:ff9b::808:808',
  ];
  for (const a of blocked) assert.equal(isPrivateAddress(a), true, a);
  for (const a of allowed) assert.equal(isPrivateAddress(a), false, a);
  assert.equal(refusalReason('127.0.0.1', { allowPrivateNetwork: true }), null);
  assert.equal(refusalReason('127.0.0.1', { allowedAddresses: ['127.0.0.1'] }), null);
  assert.match(refusalReason('127.0.0.2', { allowedAddresses: ['127.0.0.1'] }) ?? '', /127\.0\.0\.2 is loopback/);
});
