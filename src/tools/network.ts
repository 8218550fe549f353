/**
 * The networked tools from one config block: web_search, web_fetch and the tools of any MCP
 * servers. `networkToolsConfig` is the zod schema (for embedding in a run config); `createNetworkTools`
 * validates a plain object against it (errors name the field path) and connects.
 *
 *   web_search: { baseUrl?, apiKeyEnv? = SERPER_API_KEY, numResults?, gl?, hl?, timeoutMs? }  (or true)
 *   web_fetch:  { allowPrivateNetwork? = false, allowedAddresses?, pageChars?, maxBytes?, timeoutMs?, maxRedirects? }  (or true)
 *   mcp:        [{ name, command, args?, env?, cwd? } | { name, url, headers? }]
 *   mcpPrefix:  prefix MCP tool names with "<server>__" (default false)
 *
 * Local search/open over an index come from `src/tools/search/`; callers add those themselves.
 */
import { z } from 'zod';
import { ConfigError } from '../core/errors.ts';
import type { Tool } from './tool.ts';
import { createWebSearchTool } from './web-search.ts';
import { createWebFetchTool } from './web-fetch.ts';
import { connectMcpServers, type McpClient, type McpServerConfig } from './mcp.ts';

const webSearchConfig = z.strictObject({
  baseUrl: z.string().optional(),
  apiKeyEnv: z.string().default('SERPER_API_KEY'),
  numResults: z.number().int().min(1).max(100).optional(),
  gl: z.string().optional(),
  hl: z.string().optional(),
  timeoutMs: z.number().int().positive().optional(),
});

const webFetchConfig = z.strictObject({
  allowPrivateNetwork: z.boolean().default(false),
  allowedAddresses: z.array(z.string()).optional(),
  pageChars: z.number().int().positive().optional(),
  maxBytes: z.number().int().positive().optional(),
  timeoutMs: z.number().int().positive().optional(),
  maxRedirects: z.number().int().min(0).optional(),
});

const mcpServer = z.union([
  z.strictObject({
    name: z.string().min(1),
    command: z.string().min(1),
    args: z.array(z.string()).optional(),
    env: z.record(z.string(), z.string()).optional(),
    cwd: z.string().optional(),
  }),
  z.strictObject({ name: z.string().min(1), url: z.string().min(1), headers: z.record(z.string(), z.string()).optional() }),
]);

export const networkToolsConfig = z.strictObject({
  web_search: z.union([z.literal(true), webSearchConfig]).optional(),
  web_fetch: z.union([z.literal(true), webFetchConfig]).optional(),
  mcp: z.array(mcpServer).default([]),
  mcpPrefix: z.boolean().default(false),
  /** Limit for one MCP request. */
  mcpTimeoutMs: z.number().int().positive().optional(),
});

export type NetworkToolsConfig = z.input<typeof networkToolsConfig>;

export interface NetworkTools {
  tools: Tool[];
  clients: McpClient[];
  close(): Promise<void>;
}

/** Validate `config` (errors name `${path}.<field>`), create the web tools and connect the MCP servers. */
export async function createNetworkTools(config: unknown, path = 'tools'): Promise<NetworkTools> {
  const parsed = networkToolsConfig.safeParse(config ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigError({ path: [path, ...issue.path.map(String)].join('.'), message: issue.message });
  }
  const c = parsed.data;
  const tools: Tool[] = [];
  if (c.web_search) {
    const o = c.web_search === true ? webSearchConfig.parse({}) : c.web_search;
    const apiKey = process.env[o.apiKeyEnv];
    if (!apiKey)
      throw new ConfigError({
        path: `${path}.web_search.apiKeyEnv`,
        message: `environment variable ${o.apiKeyEnv} is not set (web_search needs a Serper API key)`,
      });
    tools.push(createWebSearchTool({ apiKey, baseUrl: o.baseUrl, numResults: o.numResults, gl: o.gl, hl: o.hl, timeoutMs: o.timeoutMs }));
  }
  if (c.web_fetch) tools.push(createWebFetchTool(c.web_fetch === true ? {} : c.web_fetch));
  if (c.mcp.length === 0) return { tools, clients: [], close: async () => {} };
  const mcp = await connectMcpServers(c.mcp as McpServerConfig[], { prefixWithServerName: c.mcpPrefix, requestTimeoutMs: c.mcpTimeoutMs });
  const clash = mcp.tools.find((t) => tools.some((b) => b.name === t.name));
  if (clash) {
    await mcp.close();
    throw new ConfigError({
      path: `${path}.mcp`,
      message: `tool "${clash.name}" of server "${clash.serverName}" clashes with a built-in tool; set mcpPrefix: true`,
    });
  }
  tools.push(...mcp.tools);
  const { clients, close } = mcp;
  return { tools, clients, close };
}
