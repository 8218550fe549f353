import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { defineTool } from './tool.ts';
import { cutText, executeTool, toToolSpec } from './execute.ts';

const add = defineTool({
  name: 'add',
  description: 'Add two numbers.',
  inputSchema: z.object({ a: z.number(), b: z.number(), note: z.string().optional() }),
  async execute({ a, b }) {
    return String(a + b);
  },
});

const opts = { timeoutMs: 1000, maxChars: 1000 };

test('valid arguments run the tool', async () => {
  const r = await executeTool(add, { a: 2, b: 3 }, opts);
  assert.equal(r.ok, true);
  assert.equal(r.valid, true);
  assert.equal(r.text, '5');
  assert.ok(r.ms >= 0);
});

test('schema violation names the bad field and does not run the tool', async () => {
  let ran = false;
  const tool = defineTool({
    name: 'search',
    description: 'd',
    inputSchema: z.object({ query: z.string(), filters: z.object({ year: z.number() }) }),
    async execute() {
      ran = true;
      return 'x';
    },
  });
  const r = await executeTool(tool, { query: 7, filters: { year: 'old' } }, opts);
  assert.equal(ran, false);
  assert.equal(r.ok, false);
  assert.equal(r.valid, false);
  assert.match(r.text, /invalid arguments for tool "search"/);
  assert.match(r.text, /- query: .*expected string/i);
  assert.match(r.text, /- filters\.year: .*expected number/i);

  const missing = await executeTool(add, { a: 1 }, opts);
  assert.equal(missing.valid, false);
  assert.match(missing.text, /- b: /);

  const encoded = await executeTool(add, '{"a": 1, "b": 2}', opts);
  assert.deepEqual([encoded.ok, encoded.text], [true, '3']);
  const brokenJson = await executeTool(add, '{"a": 1, "b": ', opts);
  assert.equal(brokenJson.valid, false);
  const nullArgs = await executeTool(add, null, opts);
  assert.equal(nullArgs.valid, false);
  const notObject = await executeTool(add, 'a=1', opts);
  assert.equal(notObject.valid, false);
  assert.match(notObject.text, /\(arguments\)/);
});

test('a thrown error becomes the tool result', async () => {
  const tool = defineTool({
    name: 'boom',
    description: 'd',
    inputSchema: z.object({}),
    async execute() {
      throw new Error('disk on fire');
    },
  });
  const r = await executeTool(tool, {}, opts);
  assert.deepEqual([r.ok, r.valid], [false, true]);
  assert.equal(r.text, 'Error: disk on fire');
  const sync = defineTool({
    name: 'sync',
    description: 'd',
    inputSchema: z.object({}),
    execute(): Promise<string> {
      throw new TypeError('synchronous throw');
    },
  });
  const s = await executeTool(sync, undefined, opts);
  assert.equal(s.text, 'Error: synchronous throw');
});

test('timeout aborts the tool signal and returns even if the tool ignores it', async () => {
  let sawAbort = false;
  const polite = defineTool({
    name: 'slow',
    description: 'd',
    inputSchema: z.object({}),
    execute(_input, { signal }) {
      return new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => resolve('late'), 5000);
        signal.addEventListener('abort', () => {
          sawAbort = true;
          clearTimeout(t);
          reject(signal.reason);
        });
      });
    },
  });
  const r = await executeTool(polite, {}, { timeoutMs: 50, maxChars: 100 });
  assert.equal(r.ok, false);
  assert.equal(r.valid, true);
  assert.match(r.text, /timed out after 50 ms/);
  assert.equal(sawAbort, true);

  let stubborn: NodeJS.Timeout | undefined;
  const rude = defineTool({
    name: 'rude',
    description: 'd',
    inputSchema: z.object({}),
    execute() {
      return new Promise<string>((resolve) => {
        stubborn = setTimeout(() => resolve('late'), 2000);
      });
    },
  });
  const t0 = performance.now();
  const r2 = await executeTool(rude, {}, { timeoutMs: 50, maxChars: 100 });
  clearTimeout(stubborn);
  assert.ok(performance.now() - t0 < 1500);
  assert.match(r2.text, /"rude" timed out/);
});

test('outer signal cancels the call', async () => {
  const tool = defineTool({
    name: 'wait',
    description: 'd',
    inputSchema: z.object({}),
    execute(_i, { signal }) {
      return new Promise<string>((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
    },
  });
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 20);
  const r = await executeTool(tool, {}, { timeoutMs: 5000, maxChars: 100, signal: ac.signal });
  assert.equal(r.ok, false);
  assert.match(r.text, /cancelled/);
  const pre = await executeTool(tool, {}, { timeoutMs: 5000, maxChars: 100, signal: AbortSignal.abort() });
  assert.match(pre.text, /cancelled before it ran/);
});

test('long output is cut with a note counting the cut characters', async () => {
  const tool = defineTool({
    name: 'long',
    description: 'd',
    inputSchema: z.object({ n: z.number().int() }),
    async execute({ n }) {
      return 'x'.repeat(n);
    },
  });
  const r = await executeTool(tool, { n: 250 }, { timeoutMs: 1000, maxChars: 100 });
  assert.equal(r.ok, true);
  assert.equal(r.text, `${'x'.repeat(100)}\n[... 150 characters cut]`);
  const exact = await executeTool(tool, { n: 100 }, { timeoutMs: 1000, maxChars: 100 });
  assert.equal(exact.text, 'x'.repeat(100));
  assert.equal(cutText('abc', 0), '\n[... 3 characters cut]');
});

test('non-string output is an error, not garbage', async () => {
  const tool = { name: 'bad', description: 'd', inputSchema: z.object({}), execute: async () => 42 as unknown as string };
  const r = await executeTool(tool, {}, opts);
  assert.equal(r.ok, false);
  assert.match(r.text, /returned number, not text/);
});

test('toToolSpec gives the OpenAI function format with a JSON schema', () => {
  const tool = defineTool({
    name: 'search',
    description: 'Search the corpus.',
    inputSchema: z.object({
      query: z.string().describe('what to look for'),
      k: z.number().int().min(1).default(5),
      page: z.number().int().max(40).optional(),
    }),
    async execute() {
      return '';
    },
  });
  const spec = toToolSpec(tool);
  assert.equal(spec.type, 'function');
  assert.equal(spec.function.name, 'search');
  assert.equal(spec.function.description, 'Search the corpus.');
  const p = spec.function.parameters as any;
  assert.equal(p.$schema, undefined);
  assert.equal(p.type, 'object');
  assert.deepEqual(p.required, ['query']);
  assert.equal(p.properties.query.type, 'string');
  assert.equal(p.properties.query.description, 'what to look for');
  assert.equal(p.properties.k.type, 'integer');
  assert.equal(p.properties.k.default, 5);
  // The author's bounds stay; zod's implicit safe-integer bounds do not.
  assert.equal(p.properties.k.minimum, 1);
  assert.equal(p.properties.k.maximum, undefined);
  assert.equal(p.properties.page.maximum, 40);
  assert.equal(p.properties.page.minimum, undefined);
});
