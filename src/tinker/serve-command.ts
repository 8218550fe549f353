/**
 * `matpo serve --tinker`: the part of `matpo serve` that starts the Tinker-protocol server
 * (`server.ts`) instead of the OpenAI-compatible one. Checkpoints go to `--tinker-dir`, by default
 * `<os temp dir>/matpo-tinker` (printed at start). Runs until SIGINT/SIGTERM.
 */
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ConfigError } from '../core/errors.ts';
import { serveTinker } from './server.ts';

export interface TinkerServeFlags {
  modelDir: string;
  /** --name; default: the model directory's absolute path (what clients pass as base_model). */
  name?: string;
  host: string;
  port: number;
  apiKey?: string;
  threads?: number;
  tinkerDir?: string;
}

export async function runTinkerServe(flags: TinkerServeFlags): Promise<void> {
  const dir = resolve(flags.tinkerDir ?? join(tmpdir(), 'matpo-tinker'));
  let server;
  try {
    server = await serveTinker({
      modelDir: flags.modelDir,
      modelName: flags.name,
      dir,
      host: flags.host,
      port: flags.port,
      apiKey: flags.apiKey,
      threads: flags.threads,
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') {
      throw new ConfigError({ path: '--port', message: `cannot listen on ${flags.host}:${flags.port}: ${e.code}` });
    }
    throw err;
  }
  console.log(
    `matpo serve --tinker: "${server.modelName}" at ${server.url} (Tinker API under /api/v1), checkpoints in ${dir}` +
      `${flags.apiKey ? ', API key required' : ''}`,
  );
  if (flags.host !== '127.0.0.1' && flags.host !== 'localhost' && flags.host !== '::1' && !flags.apiKey) {
    console.warn(`matpo serve --tinker: warning: listening on ${flags.host} without an API key`);
  }
  await new Promise<void>((done) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      console.log('matpo serve --tinker: shutting down');
      void server.close().then(done, done);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
