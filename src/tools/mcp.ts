/**
 * Any MCP server's tools as matpo `Tool`s, through @modelcontextprotocol/sdk, over stdio (spawn
 * `command args` with extra `env`) or streamable HTTP (`url` with extra `headers`).
 *
 * Each remote tool becomes a Tool whose zod schema is built from the tool's JSON schema with zod 4's
 * `z.fromJSONSchema` (falling back to "any JSON object" for schemas it cannot express, e.g. remote
 * $refs or if/then/else; the server still validates). A call joins the text content of the result;
 * an `isError` result or a protocol error is thrown, so `executeTool` hands its message to the
 * model. When the connection is lost (the server process died), the next call reconnects first; a
 * call that fails because the connection closed under it, or because the HTTP server answers 404
 * for our session (it restarted or expired the session), is retried once on a fresh connection.
 */
import { z } from 'zod';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { ConfigError, EndpointError } from '../core/errors.ts';
import type { Tool } from './tool.ts';

export interface McpStdioConfig {
  /** The server's name (MATPO's `<server_name>`). */
  name: string;
  command: string;
  args?: string[];
  /** Added to a safe default environment (PATH, HOME, …). */
  env?: Record<string, string>;
  cwd?: string;
  /** Where the server's stderr goes. Default 'inherit'. */
  stderr?: 'inherit' | 'ignore' | 'pipe';
}

export interface McpHttpConfig {
  name: string;
  /** Streamable HTTP endpoint, e.g. http://127.0.0.1:3000/mcp */
  url: string;
  headers?: Record<string, string>;
}

export type McpServerConfig = McpStdioConfig | McpHttpConfig;

export interface McpOptions {
  /** Limit for one request (initialize, list, call) unless a signal ends it sooner. Default 60000. */
  requestTimeoutMs?: number;
  /** Prefix added to each tool's name (e.g. "search__") to keep several servers apart. Default none. */
  namePrefix?: string;
}

/** A Tool backed by an MCP server. `jsonSchema` is the server's own input schema (used for tool specs). */
export interface McpTool extends Tool<Record<string, unknown>> {
  serverName: string;
  remoteName: string;
  jsonSchema: Record<string, unknown>;
  /** True when the JSON schema could not be converted and any object is accepted locally. */
  permissiveSchema: boolean;
}

/** zod schema from a tool's JSON input schema; `permissive` when it fell back to any object. */
export function jsonSchemaToZod(schema: Record<string, unknown>): { schema: z.ZodType<Record<string, unknown>>; permissive: boolean } {
  try {
    const converted = z.fromJSONSchema(schema as Parameters<typeof z.fromJSONSchema>[0]);
    return { schema: converted as z.ZodType<Record<string, unknown>>, permissive: false };
  } catch {
    return { schema: z.record(z.string(), z.unknown()), permissive: true };
  }
}

interface ContentBlock {
  type: string;
  text?: string;
  mimeType?: string;
  uri?: string;
  name?: string;
  resource?: { uri?: string; text?: string; mimeType?: string };
}

/** The text the model sees for a tool result's content blocks. */
export function contentToText(content: readonly ContentBlock[] | undefined, structured?: unknown): string {
  const parts: string[] = [];
  for (const block of content ?? []) {
    switch (block.type) {
      case 'text':
        parts.push(block.text ?? '');
        break;
      case 'resource':
        parts.push(block.resource?.text ?? `[resource ${block.resource?.uri ?? ''} (${block.resource?.mimeType ?? 'binary'})]`);
        break;
      case 'resource_link':
        parts.push(`[resource link ${block.uri ?? ''}${block.name ? ` "${block.name}"` : ''}]`);
        break;
      default:
        parts.push(`[${block.type}${block.mimeType ? ` ${block.mimeType}` : ''} content omitted]`);
    }
  }
  if (parts.length === 0 && structured !== undefined) return JSON.stringify(structured);
  return parts.join('\n');
}

function isStdio(config: McpServerConfig): config is McpStdioConfig {
  return 'command' in config;
}

function describe(config: McpServerConfig): string {
  return isStdio(config) ? `mcp server "${config.name}" (${config.command})` : `mcp server "${config.name}" (${config.url})`;
}

/** One connection to one MCP server. */
export class McpClient {
  readonly name: string;
  private client: Client | null = null;
  private transport: Transport | null = null;
  private connecting: Promise<void> | null = null;
  private lost = false;
  private closed = false;
  private readonly timeoutMs: number;

  private constructor(
    readonly config: McpServerConfig,
    readonly options: McpOptions,
  ) {
    this.name = config.name;
    this.timeoutMs = options.requestTimeoutMs ?? 60_000;
  }

  /** Connect (spawn the process or open the HTTP session) and run the MCP handshake. */
  static async connect(config: McpServerConfig, options: McpOptions = {}): Promise<McpClient> {
    if (!config.name) throw new ConfigError({ path: 'mcp.name', message: 'an MCP server needs a name' });
    if (!isStdio(config) && !('url' in config && config.url)) {
      throw new ConfigError({ path: `mcp.${config.name}`, message: 'needs either "command" (stdio) or "url" (streamable HTTP)' });
    }
    const c = new McpClient(config, options);
    await c.open();
    return c;
  }

  /** The spawned server's process id (stdio), for diagnostics. */
  get pid(): number | null {
    return this.transport instanceof StdioClientTransport ? this.transport.pid : null;
  }

  private async open(): Promise<void> {
    const config = this.config;
    let transport: Transport;
    if (isStdio(config)) {
      transport = new StdioClientTransport({
        command: config.command,
        args: config.args,
        env: config.env,
        cwd: config.cwd,
        stderr: config.stderr ?? 'inherit',
      });
    } else {
      let url: URL;
      try {
        url = new URL(config.url);
      } catch {
        throw new ConfigError({ path: `mcp.${config.name}.url`, message: `not a valid URL: ${config.url}` });
      }
      transport = new StreamableHTTPClientTransport(url, { requestInit: { headers: config.headers ?? {} } });
    }
    const client = new Client({ name: 'matpo', version: '0.1.0' });
    client.onclose = () => {
      if (this.client === client) this.lost = true;
    };
    try {
      await client.connect(transport, { timeout: this.timeoutMs });
    } catch (err) {
      await client.close().catch(() => {});
      throw new EndpointError({
        url: isStdio(config) ? config.command : config.url,
        message: `cannot connect to ${describe(config)}: ${(err as Error).message}`,
        cause: err,
      });
    }
    this.client = client;
    this.transport = transport;
    this.lost = false;
  }

  /** Close the current connection (if any) and open a new one. */
  async reconnect(): Promise<void> {
    if (this.closed) throw new EndpointError({ url: this.name, message: `${describe(this.config)} was closed` });
    if (this.connecting) return this.connecting;
    this.connecting = (async () => {
      const old = this.client;
      const oldTransport = this.transport;
      this.client = null;
      this.transport = null;
      // End the old HTTP session on the server too (best effort: it may be gone already).
      if (oldTransport instanceof StreamableHTTPClientTransport && !this.lost) await oldTransport.terminateSession().catch(() => {});
      if (old) await old.close().catch(() => {});
      await this.open();
    })().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private async ready(): Promise<Client> {
    if (this.closed) throw new EndpointError({ url: this.name, message: `${describe(this.config)} was closed` });
    if (this.connecting) await this.connecting;
    if (this.lost || !this.client) await this.reconnect();
    return this.client!;
  }

  /** All the server's tools (every page), as matpo Tools. */
  async listTools(): Promise<McpTool[]> {
    const client = await this.ready();
    const tools: McpTool[] = [];
    let cursor: string | undefined;
    do {
      const page = await client.listTools(cursor ? { cursor } : undefined, { timeout: this.timeoutMs });
      for (const t of page.tools) {
        const jsonSchema = { ...(t.inputSchema as Record<string, unknown>) };
        const { schema, permissive } = jsonSchemaToZod(jsonSchema);
        const remoteName = t.name;
        tools.push({
          name: `${this.options.namePrefix ?? ''}${remoteName}`,
          description: t.description ?? t.title ?? remoteName,
          inputSchema: schema,
          jsonSchema,
          permissiveSchema: permissive,
          serverName: this.name,
          remoteName,
          execute: (input, context) => this.callTool(remoteName, input, context.signal),
        });
      }
      cursor = page.nextCursor;
    } while (cursor);
    return tools;
  }

  /** Call a tool by its name on the server; returns the joined text, throws on isError or protocol errors. */
  async callTool(name: string, args: Record<string, unknown>, signal?: AbortSignal): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      const client = await this.ready();
      try {
        const result = await client.callTool({ name, arguments: args }, undefined, { signal, timeout: this.timeoutMs });
        const text = contentToText(result.content as ContentBlock[] | undefined, result.structuredContent);
        if (result.isError) throw new Error(text || `tool "${name}" failed`);
        return text;
      } catch (err) {
        // The process died under us, or the HTTP server no longer knows our session (404, e.g. it restarted).
        const connectionClosed =
          (err instanceof McpError && err.code === ErrorCode.ConnectionClosed) || (err instanceof StreamableHTTPError && err.code === 404);
        if (connectionClosed && attempt === 0 && !signal?.aborted && !this.closed) {
          // Only the connection this call used is lost; another call may have replaced it already.
          if (this.client === client) this.lost = true;
          continue;
        }
        if (signal?.aborted) throw new Error(`call to ${name} on ${this.name} was cancelled`, { cause: err });
        if (err instanceof McpError) throw new Error(err.message.replace(/^MCP error -?\d+: /, ''), { cause: err });
        throw err;
      }
    }
  }

  /** Close the connection (terminates a spawned server, ends the HTTP session). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.connecting) await this.connecting.catch(() => {});
    const { client, transport } = this;
    this.client = null;
    this.transport = null;
    if (transport instanceof StreamableHTTPClientTransport) await transport.terminateSession().catch(() => {});
    if (client) await client.close().catch(() => {});
  }
}

/**
 * Connect to several servers and gather their tools; names must not collide (`prefixWithServerName`
 * names each tool "<server>__<tool>"; `namePrefix` puts one fixed prefix on all of them).
 */
export async function connectMcpServers(
  configs: readonly McpServerConfig[],
  options: McpOptions & { prefixWithServerName?: boolean } = {},
): Promise<{ clients: McpClient[]; tools: McpTool[]; close(): Promise<void> }> {
  const clients: McpClient[] = [];
  const close = async () => {
    await Promise.all(clients.map((c) => c.close()));
  };
  try {
    for (const config of configs) {
      const namePrefix = options.prefixWithServerName ? `${config.name}__` : options.namePrefix;
      clients.push(await McpClient.connect(config, { ...options, namePrefix }));
    }
    const tools: McpTool[] = [];
    const seen = new Map<string, string>();
    for (const c of clients) {
      for (const t of await c.listTools()) {
        const other = seen.get(t.name);
        if (other !== undefined)
          throw new ConfigError({
            path: `mcp.${c.name}`,
            message: `tool "${t.name}" is also offered by "${other}"; prefix the names (prefixWithServerName) to keep them apart`,
          });
        seen.set(t.name, c.name);
        tools.push(t);
      }
    }
    return { clients, tools, close };
  } catch (err) {
    await close();
    throw err;
  }
}
