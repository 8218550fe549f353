/**
 * `matpo serve`: load a model directory into the embedded engine and serve it over the
 * OpenAI-compatible API of `servePolicy` (/v1/completions with token ids, logprobs, echo and
 * streaming; /v1/chat/completions with tool calls in the model's own format, top_logprobs and
 * streaming; /v1/models; /health, /tokenize, /detokenize), bound to 127.0.0.1 unless --host says
 * otherwise. Runs until SIGINT/SIGTERM, then finishes requests in flight and exits.
 *
 * LoRA: `--lora DIR` (or `--lora NAME=DIR`, vLLM's --lora-modules form) serves the model with that
 * PEFT adapter applied, under NAME (default the adapter directory's name) as well as the model's
 * name; `POST /v1/load_lora_adapter {lora_name, lora_path}` loads another at run time. One adapter
 * is active at a time: loading one replaces the previous for every request, whichever served name
 * it uses (vLLM keeps several side by side; matpo does not).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ConfigError, FileFormatError, MatpoError } from '../../core/errors.ts';
import { intFlag, parseFlags, required, type Command } from '../command.ts';
import { servePolicy } from '../../policy/server.ts';
import { formatFor } from '../../agents/formats/index.ts';
import type { SamplingPolicy } from '../../core/policy.ts';

interface EmbeddedModule {
  EmbeddedPolicy: {
    load(dir: string, options?: Record<string, unknown>): Promise<SamplingPolicy & { loadAdapter(dir: string): Promise<unknown> }>;
  };
}

async function loadEmbedded(dir: string, threads: number | undefined, adapter: string | undefined) {
  // Imported on demand (computed path) so that the HTTP layer does not depend on the engine at load time.
  const modulePath = '../../policy/embedded.ts';
  let mod: EmbeddedModule;
  try {
    mod = (await import(modulePath)) as EmbeddedModule;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_MODULE_NOT_FOUND' && String(e.message).includes('embedded.ts')) {
      throw new MatpoError('unavailable', 'the embedded engine (src/policy/embedded.ts) is not available in this build');
    }
    throw err;
  }
  return mod.EmbeddedPolicy.load(dir, { ...(threads !== undefined ? { threads } : {}), ...(adapter !== undefined ? { adapter } : {}) });
}

/** max_position_embeddings of a model's config.json (undefined when absent; the engine reports a bad file itself). */
function contextLength(file: string): number | undefined {
  try {
    const value = (JSON.parse(readFileSync(file, 'utf8')) as { max_position_embeddings?: unknown }).max_position_embeddings;
    return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : undefined;
  } catch {
    return undefined;
  }
}

export const command: Command = {
  name: 'serve',
  summary:
    'Serve a model directory over an OpenAI-compatible HTTP API: /v1/completions (token ids, logprobs, echo), ' +
    '/v1/chat/completions (tool calls), streaming, /v1/models, /health, /tokenize, /detokenize.',
  usage:
    'serve --model DIR --port P [--host 127.0.0.1] [--api-key K] [--name NAME] [--threads N] [--max-tokens N] [--lora [NAME=]DIR]\n' +
    '      [--tinker [--tinker-dir D]]\n\n' +
    '  --api-key K     require "Authorization: Bearer K" (default: env MATPO_API_KEY, else no key)\n' +
    '  --name NAME     model id clients send and /v1/models lists (default: the directory name)\n' +
    '  --max-tokens N  refuse requests asking for more new tokens than N\n' +
    '  --lora [NAME=]DIR  apply a PEFT LoRA adapter, served as NAME too (POST /v1/load_lora_adapter loads another)\n' +
    '  --tinker        serve the Tinker training API (/api/v1: sessions, LoRA/full training clients, losses, sampling) instead\n' +
    '  --tinker-dir D  where --tinker writes checkpoints (default: <temp dir>/matpo-tinker)',
  async run(argv) {
    const { values } = parseFlags(argv, {
      model: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'api-key': { type: 'string' },
      name: { type: 'string' },
      threads: { type: 'string' },
      'max-tokens': { type: 'string' },
      lora: { type: 'string' },
      tinker: { type: 'boolean' },
      'tinker-dir': { type: 'string' },
    });
    const dir = resolve(required(values, 'model'));
    required(values, 'port');
    const port = intFlag(values, 'port', 0);
    if (port < 0 || port > 65535) throw new ConfigError({ path: '--port', message: `expected 0..65535, got ${port}` });
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new FileFormatError({ file: dir, message: 'model directory not found' });
    if (!existsSync(join(dir, 'config.json')))
      throw new FileFormatError({ file: join(dir, 'config.json'), message: 'file not found (not a model directory)' });
    const host = (values.host as string | undefined) ?? '127.0.0.1';
    const apiKey = (values['api-key'] as string | undefined) ?? process.env.MATPO_API_KEY ?? undefined;
    const modelName = (values.name as string | undefined) ?? basename(dir);
    const threads = values.threads === undefined ? undefined : intFlag(values, 'threads', 1);
    const maxTokens = values['max-tokens'] === undefined ? undefined : intFlag(values, 'max-tokens', 0);

    if (values.tinker) {
      if (values.lora !== undefined) {
        throw new ConfigError({ path: '--lora', message: 'does not apply with --tinker (Tinker clients ask for LoRA in create_model)' });
      }
      const { runTinkerServe } = await import('../../tinker/serve-command.ts');
      const tinkerDir = values['tinker-dir'] as string | undefined;
      const name = values.name as string | undefined;
      return runTinkerServe({ modelDir: dir, name, host, port, apiKey: apiKey || undefined, threads, tinkerDir });
    }
    if (values['tinker-dir'] !== undefined) throw new ConfigError({ path: '--tinker-dir', message: 'only applies with --tinker' });

    const loraFlag = values.lora as string | undefined;
    const eq = loraFlag?.indexOf('=') ?? -1;
    const loraDir = loraFlag === undefined ? undefined : resolve(eq > 0 ? loraFlag.slice(eq + 1) : loraFlag);
    const loraName = loraFlag === undefined ? undefined : eq > 0 ? loraFlag.slice(0, eq) : basename(loraDir!);
    if (loraDir !== undefined && !existsSync(join(loraDir, 'adapter_config.json'))) {
      const file = join(loraDir, 'adapter_config.json');
      throw new FileFormatError({ file, message: 'file not found (--lora needs a PEFT adapter directory)' });
    }

    const maxModelLen = contextLength(join(dir, 'config.json'));
    const policy = await loadEmbedded(dir, threads, loraDir);
    let server;
    try {
      const toolFormat = formatFor(await policy.tokenizer(), 'native');
      server = await servePolicy(policy, {
        host,
        port,
        apiKey: apiKey || undefined,
        modelName,
        maxTokensLimit: maxTokens,
        maxModelLen,
        toolFormat,
        loraNames: loraName !== undefined ? [loraName] : [],
        loadLoraAdapter: (path) => policy.loadAdapter(resolve(path)),
      });
    } catch (err) {
      await policy.close();
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL')
        throw new ConfigError({ path: '--port', message: `cannot listen on ${host}:${port}: ${e.code}` });
      throw err;
    }
    const routes = 'completions, chat/completions, models; /health, /tokenize, /detokenize';
    const withLora = loraName !== undefined ? ` with LoRA adapter "${loraName}"` : '';
    console.log(`matpo serve: "${modelName}"${withLora} at ${server.url}/v1 (${routes})${apiKey ? ', API key required' : ''}`);
    if (host !== '127.0.0.1' && host !== 'localhost' && host !== '::1' && !apiKey) {
      console.warn(`matpo serve: warning: listening on ${host} without an API key`);
    }
    await new Promise<void>((done) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        console.log('matpo serve: shutting down');
        void server
          .close()
          .then(() => policy.close())
          .then(done, done);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
  },
};
