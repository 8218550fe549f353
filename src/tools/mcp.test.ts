// MCP tools against a real MCP server process (test/fixtures/mcp/server.ts, built on the SDK),
// reached over stdio (the client spawns it) and over streamable HTTP on 127.0.0.1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { McpClient, connectMcpServers, contentToText, jsonSchemaToZod, type McpTool } from './mcp.ts';
import { executeTool, toToolSpec } from './execute.ts';
import { ConfigError, EndpointError } from '../core/errors.ts';

const SERVER = fileURLToPath(new URL('../../test/fixtures/mcp/server.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');
const stdioConfig = {
  name: 'fixture',
  command: process.execPath,
  args: ['--import', TSX, SERVER, '--stdio'],
  env: { FIXTURE_GREETING: 'hello from env' },
  stderr: 'ignore' as const,
};
const run = { timeoutMs: 10_000, maxChars: 10_000 };

let httpServer: ChildProcess;
let httpUrl = '';
const TOKEN = 'fixture-token';

before(async () => {
  httpServer = spawn(process.execPath, ['--import', TSX, SERVER, '--http', '--port', '0', '--token', TOKEN], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  httpServer.stdout!.setEncoding('utf8');
  httpUrl = await new Promise<string>((resolve, reject) => {
    httpServer.stdout!.on('data', (d: string) => {
      out += d;
      const m = /listening (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    httpServer.once('exit', (code) => reject(new Error(`fixture server exited with ${code}`)));
  });
});

after(async () => {
  if (httpServer.exitCode === null) {
    httpServer.kill('SIGTERM');
    await once(httpServer, 'exit');
  }
});

function byName(tools: McpTool[], name: string): McpTool {
  const t = tools.find((x) => x.name === name);
  assert.ok(t, `tool ${name} listed`);
  return t;
}

async function exercise(client: McpClient) {
  const tools = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(), ['describe_bridge', 'fail', 'forget_sessions', 'greeting', 'lookup', 'sleep']);
  const lookup = byName(tools, 'lookup');
  assert.equal(lookup.serverName, 'fixture');
  assert.equal(lookup.permissiveSchema, false);

  const ok = await executeTool(lookup, { key: 'orsova' }, run);
  assert.deepEqual(ok, { ...ok, ok: true, valid: true, text: 'orsova: built 1891\nlength 412 m over the Danube' });

  const missing = await executeTool(lookup, { key: 'atlantis' }, run);
  assert.equal(missing.ok, false);
  assert.equal(missing.text, 'Error: no bridge "atlantis"');

  const bad = await executeTool(lookup, { key: 5 }, run);
  assert.equal(bad.valid, false);
  assert.match(bad.text, /- key: /);

  const fail = await executeTool(byName(tools, 'fail'), {}, run);
  assert.equal(fail.ok, false);
  assert.match(fail.text, /the fixture tool failed on purpose/);

  const describe = byName(tools, 'describe_bridge');
  const d = await executeTool(describe, { river: 'Danube', fields: ['year', 'length'] }, run);
  assert.equal(d.text, 'orsova year=1891 length=412');
  const dBad = await executeTool(describe, { river: 'Thames', fields: [], limit: 9 }, run);
  assert.equal(dBad.valid, false);
  assert.match(dBad.text, /- river: /);
  assert.match(dBad.text, /- fields: /);
  assert.match(dBad.text, /- limit: /);

  const t0 = performance.now();
  const slow = await executeTool(byName(tools, 'sleep'), { ms: 5000 }, { timeoutMs: 150, maxChars: 1000 });
  assert.equal(slow.ok, false);
  assert.match(slow.text, /timed out after 150 ms/);
  assert.ok(performance.now() - t0 < 3000);
  // The connection is still usable after a cancelled call.
  const quick = await executeTool(byName(tools, 'sleep'), { ms: 10 }, run);
  assert.equal(quick.text, 'slept 10');
  return tools;
}

test('stdio: list, call, isError results, schema violations, failures, timeout, env', async () => {
  const client = await McpClient.connect(stdioConfig);
  try {
    const tools = await exercise(client);
    const g = await executeTool(byName(tools, 'greeting'), {}, run);
    assert.equal(g.text, 'hello from env');
    const spec = toToolSpec(byName(tools, 'describe_bridge'));
    const params = spec.function.parameters as any;
    assert.equal(params.$schema, undefined);
    assert.deepEqual(params.properties.river.enum, ['Danube', 'Tweed', 'Loire']);
    assert.deepEqual(params.required.sort(), ['fields', 'river']);
  } finally {
    await client.close();
  }
});

test('stdio: a dead server process is reconnected on the next call; close ends the process', async () => {
  const client = await McpClient.connect(stdioConfig);
  try {
    const [lookup] = (await client.listTools()).filter((t) => t.name === 'lookup');
    const pid = client.pid!;
    assert.ok(pid > 0);
    process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    // Several calls meet the dead connection at once: one reconnect serves them all.
    const rs = await Promise.all(['kelso', 'orsova', 'varenne'].map((key) => executeTool(lookup, { key }, run)));
    assert.deepEqual(
      rs.map((r) => r.text.split(':')[0]),
      ['kelso', 'orsova', 'varenne'],
    );
    assert.equal(rs[0].text, 'kelso: built 1803\nlength 150 m over the Tweed');
    assert.notEqual(client.pid, pid);
    const newPid = client.pid!;
    await client.close();
    await new Promise((r) => setTimeout(r, 300));
    assert.throws(() => process.kill(newPid, 0), /ESRCH/);
    const after = await executeTool(lookup, { key: 'kelso' }, run);
    assert.match(after.text, /was closed/);
  } finally {
    await client.close();
  }
});

test('streamable HTTP: same tools and behaviour; bearer header passed; wrong token fails to connect', async () => {
  const client = await McpClient.connect({ name: 'fixture', url: httpUrl, headers: { Authorization: `Bearer ${TOKEN}` } });
  try {
    const tools = await exercise(client);
    const g = await executeTool(byName(tools, 'greeting'), {}, run);
    assert.equal(g.text, '(unset)'); // the HTTP server was started without FIXTURE_GREETING
    await client.reconnect();
    const again = await executeTool(byName(tools, 'lookup'), { key: 'varenne' }, run);
    assert.equal(again.text, 'varenne: built 1934\nlength 260 m over the Loire');
    // The server drops its sessions (as after a restart): the next call gets 404, opens a new session and succeeds.
    assert.equal((await executeTool(byName(tools, 'forget_sessions'), {}, run)).text, 'forgot 1 sessions');
    const afterRestart = await executeTool(byName(tools, 'lookup'), { key: 'kelso' }, run);
    assert.equal(afterRestart.text, 'kelso: built 1803\nlength 150 m over the Tweed');
  } finally {
    await client.close();
  }
  await assert.rejects(
    McpClient.connect({ name: 'fixture', url: httpUrl, headers: { Authorization: 'Bearer wrong' } }),
    (e: unknown) => e instanceof EndpointError && /cannot connect to mcp server "fixture"/.test(e.message),
  );
});

test('several servers: name collisions need a prefix', async () => {
  const httpConfig = { name: 'remote', url: httpUrl, headers: { Authorization: `Bearer ${TOKEN}` } };
  await assert.rejects(
    connectMcpServers([{ ...httpConfig, name: 'first' }, httpConfig]),
    (e: unknown) => e instanceof ConfigError && /also offered by "first"; prefix the names/.test(e.message),
  );
  const both = await connectMcpServers([httpConfig], { namePrefix: 'local__' });
  try {
    assert.ok(both.tools.some((t) => t.name === 'local__lookup' && t.remoteName === 'lookup'));
    const r = await executeTool(byName(both.tools, 'local__lookup'), { key: 'orsova' }, run);
    assert.match(r.text, /1891/);
  } finally {
    await both.close();
  }
  await assert.rejects(McpClient.connect({ name: 'x', command: '/nonexistent/mcp-server' }), /cannot connect to mcp server "x"/);
  await assert.rejects(McpClient.connect({ name: 'x', url: 'not a url' }), /not a valid URL/);
});

test('JSON schema conversion and content joining', () => {
  const { schema, permissive } = jsonSchemaToZod({
    type: 'object',
    properties: { q: { type: 'string' }, n: { type: 'integer', minimum: 1 }, tags: { type: 'array', items: { type: 'string' } } },
    required: ['q'],
  });
  assert.equal(permissive, false);
  assert.equal(schema.safeParse({ q: 'a', n: 2, tags: ['x'] }).success, true);
  assert.equal(schema.safeParse({ q: 'a', n: 0 }).success, false);
  assert.equal(schema.safeParse({ n: 1 }).success, false);
  assert.equal(schema.safeParse({ q: 'a', n: 1.5 }).success, false);
  const odd = jsonSchemaToZod({ type: 'object', properties: { x: { $ref: 'https://elsewhere/x.json' } } });
  assert.equal(odd.permissive, true);
  assert.equal(odd.schema.safeParse({ x: 1 }).success, true);
  assert.equal(odd.schema.safeParse('str').success, false);
  assert.equal(
    contentToText([
      { type: 'text', text: 'a' },
      { type: 'image', mimeType: 'image/png' },
      { type: 'resource', resource: { uri: 'file:///x', text: 'inner' } },
      { type: 'resource_link', uri: 'file:///y', name: 'y' },
    ]),
    'a\n[image image/png content omitted]\ninner\n[resource link file:///y "y"]',
  );
  assert.equal(contentToText([], { answer: 42 }), '{"answer":42}');
});
