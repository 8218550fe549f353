/**
 * `matpo view [RUN_DIR ...] [--port P] [--host H] [--tokenizer DIR]`: serve the run dashboard for
 * one or more run directories (overlaid in the charts) and print its URL. Binds to 127.0.0.1 unless
 * --host is given. With no RUN_DIR, every directory under ./runs that has a metrics.jsonl is shown.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../../core/errors.ts';
import { intFlag, parseFlags, type Command } from '../command.ts';
import { startViewServer } from '../../ui/server.ts';

async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

async function defaultRuns(): Promise<string[]> {
  let names: string[];
  try {
    names = (await readdir('runs')).sort();
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const n of names) {
    try {
      if ((await stat(join('runs', n, 'metrics.jsonl'))).isFile()) out.push(join('runs', n));
    } catch {
      // not a run
    }
  }
  return out;
}

export const command: Command = {
  name: 'view',
  summary:
    'Serve the run dashboard: live metric charts (several runs overlaid) and a rollout browser.\n\n' +
    '  RUN_DIR          run directories (default: every runs/* with a metrics.jsonl)\n' +
    '  --port P         port (default 8787; 0 picks a free one)\n' +
    '  --host H         address to bind (default 127.0.0.1)\n' +
    '  --tokenizer DIR  directory with tokenizer.json for the token view (default: found from the run)',
  usage: 'view [RUN_DIR ...] [--port P] [--host H] [--tokenizer DIR]',
  async run(argv) {
    const { values, positionals } = parseFlags(
      argv,
      { port: { type: 'string' }, host: { type: 'string' }, tokenizer: { type: 'string' } },
      true,
    );
    const port = intFlag(values, 'port', 8787);
    if (port < 0 || port > 65535) throw new ConfigError({ path: '--port', message: `expected 0..65535, got ${port}` });
    const dirs = positionals.length ? positionals : await defaultRuns();
    if (dirs.length === 0) throw new ConfigError({ path: 'RUN_DIR', message: 'no run directories given and none found under ./runs' });
    for (const d of dirs) if (!(await isDir(d))) throw new ConfigError({ path: 'RUN_DIR', message: `"${d}" is not a directory` });
    if (values.tokenizer !== undefined && !(await isDir(values.tokenizer)))
      throw new ConfigError({ path: '--tokenizer', message: `"${values.tokenizer}" is not a directory` });
    let server;
    try {
      server = await startViewServer({ runDirs: dirs, host: values.host, port, tokenizerDir: values.tokenizer });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE')
        throw new ConfigError({ path: '--port', message: `port ${port} is already in use (try --port 0 for a free one)` });
      if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND')
        throw new ConfigError({ path: '--host', message: `cannot bind to "${values.host}"` });
      throw err;
    }
    console.log(`matpo view: ${server.runs.map((r) => r.name).join(', ')}`);
    console.log(`matpo view: serving ${server.url}  (Ctrl-C to stop)`);
    await new Promise<void>((ok) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        void server.close().then(ok);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
  },
};
