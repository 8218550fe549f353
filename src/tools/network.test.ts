// The networked tools built from a config block: validation errors name the field; MCP servers
// (the real fixture server over stdio) and web_fetch come up together and close cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { createNetworkTools } from './network.ts';
import { executeTool } from './execute.ts';
import { ConfigError } from '../core/errors.ts';

const SERVER = fileURLToPath(new URL('../../test/fixtures/mcp/server.ts', import.meta.url));

test('config errors name the field path', async () => {
  const bad = async (config: unknown, message: RegExp) =>
    assert.rejects(createNetworkTools(config, 'run.tools'), (e: unknown) => e instanceof ConfigError && message.test(e.message));
  await bad({ web_fetch: { allowPrivateNetwork: 'yes' } }, /^run\.tools\.web_fetch/);
  await bad({ mcp: [{ name: 'x' }] }, /^run\.tools\.mcp\.0/);
  await bad({ webfetch: true }, /^run\.tools: .*webfetch/);
  await bad(
    { web_search: { apiKeyEnv: 'MATPO_TEST_NO_SUCH_KEY' } },
    /run\.tools\.web_search\.apiKeyEnv: environment variable MATPO_TEST_NO_SUCH_KEY is not set/,
  );
  const none = await createNetworkTools(undefined);
  assert.deepEqual(none.tools, []);
  await none.close();
});

test('web_fetch and a stdio MCP server from one config, prefixed names, clean close', async () => {
  const net = await createNetworkTools({
    web_fetch: { pageChars: 500 },
    mcp: [{ name: 'fixture', command: process.execPath, args: ['--import', import.meta.resolve('tsx'), SERVER, '--stdio'] }],
    mcpPrefix: true,
  });
  try {
    assert.deepEqual(net.tools.map((t) => t.name).sort(), [
      'fixture__describe_bridge',
      'fixture__fail',
      'fixture__forget_sessions',
      'fixture__greeting',
      'fixture__lookup',
      'fixture__sleep',
      'web_fetch',
    ]);
    const lookup = net.tools.find((t) => t.name === 'fixture__lookup')!;
    const r = await executeTool(lookup, { key: 'orsova' }, { timeoutMs: 10_000, maxChars: 1000 });
    assert.equal(r.text, 'orsova: built 1891\nlength 412 m over the Danube');
    const fetch = net.tools.find((t) => t.name === 'web_fetch')!;
    const refused = await executeTool(fetch, { url: 'http://127.0.0.1:1/' }, { timeoutMs: 5000, maxChars: 1000 });
    assert.match(refused.text, /refused .*loopback/); // allowPrivateNetwork defaults to false
  } finally {
    await net.close();
  }
  assert.equal(net.clients[0].pid, null);
});
