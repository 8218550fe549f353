/**
 * `matpo generate --model DIR --prompt TEXT [--system TEXT] [--max-new-tokens N] [--temperature T]
 * [--top-p P] [--top-k K] [--seed N]`: one chat reply from a model directory. The prompt is rendered
 * with the model's chat template (generation prompt added), and the reply is streamed to stdout as
 * tokens are sampled; a one-line summary (tokens, finish reason, speed) goes to stderr.
 */
import { ConfigError } from '../../core/errors.ts';
import { intFlag, numFlag, parseFlags, required, type Command } from '../command.ts';
import { loadModelDir } from '../../model/checkpoint.ts';
import { loadTokenizer } from '../../model/tokenizer.ts';
import { Sampler } from '../../model/sampler.ts';
import { getKernels, referenceKernels } from '../../engine/index.ts';
import type { ChatMessage } from '../../core/chat.ts';

export const command: Command = {
  name: 'generate',
  summary: 'Generate a chat reply with a model directory (chat template applied, tokens streamed to stdout).',
  usage:
    'generate --model DIR --prompt TEXT [--system TEXT] [--max-new-tokens 256] [--temperature 1] [--top-p 1] [--top-k 0] ' +
    '[--seed N] [--threads N] [--kernels native|reference]',
  async run(argv) {
    const { values } = parseFlags(argv, {
      model: { type: 'string' },
      prompt: { type: 'string' },
      system: { type: 'string' },
      'max-new-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      'top-k': { type: 'string' },
      seed: { type: 'string' },
      threads: { type: 'string' },
      kernels: { type: 'string' },
    });
    const dir = required(values, 'model');
    const prompt = required(values, 'prompt');
    const maxNewTokens = intFlag(values, 'max-new-tokens', 256);
    if (maxNewTokens < 1) throw new ConfigError({ path: '--max-new-tokens', message: `must be at least 1, got ${maxNewTokens}` });
    const temperature = numFlag(values, 'temperature', 1);
    if (temperature < 0) throw new ConfigError({ path: '--temperature', message: `must be ≥ 0, got ${temperature}` });
    const topP = numFlag(values, 'top-p', 1);
    if (!(topP > 0 && topP <= 1)) throw new ConfigError({ path: '--top-p', message: `must be in (0, 1], got ${topP}` });
    const topK = intFlag(values, 'top-k', 0);
    if (topK < 0) throw new ConfigError({ path: '--top-k', message: `must be ≥ 0, got ${topK}` });
    const seed = values.seed === undefined ? undefined : intFlag(values, 'seed', 0);
    const kernelsArg = values.kernels as string | undefined;
    if (kernelsArg !== undefined && kernelsArg !== 'native' && kernelsArg !== 'reference') {
      throw new ConfigError({ path: '--kernels', message: `expected "native" or "reference", got "${kernelsArg}"` });
    }

    const model = loadModelDir(dir);
    const tok = await loadTokenizer(dir);
    const messages: ChatMessage[] = [];
    if (values.system !== undefined) messages.push({ role: 'system', content: values.system as string });
    messages.push({ role: 'user', content: prompt });
    const promptTokens = tok.encode(tok.applyChatTemplate(messages, { addGenerationPrompt: true }));

    const kernels = kernelsArg === 'reference' ? referenceKernels : getKernels();
    if (kernelsArg === 'native' && kernels.name !== 'native')
      throw new ConfigError({ path: '--kernels', message: 'the native kernels are not available (run "npm run build:native")' });
    if (values.threads !== undefined) kernels.setThreads(intFlag(values, 'threads', 1));
    const decode = (ids: readonly number[]) => tok.decode(ids, { skipSpecialTokens: true });
    const sampler = new Sampler(model.config, model.weights, kernels, { decode, prefixCache: false });

    // Stream: re-decode the reply so far and print what is new (held back while it ends in a partial character).
    const generated: number[] = [];
    let printed = 0;
    const flush = (final: boolean) => {
      const text = decode(generated);
      const ready = final ? text.length : text.endsWith('\uFFFD') ? text.lastIndexOf('\uFFFD') : text.length;
      if (ready > printed) {
        process.stdout.write(text.slice(printed, ready));
        printed = ready;
      }
    };
    const t0 = performance.now();
    const result = await sampler.generate(
      promptTokens,
      { maxNewTokens, temperature, topP, topK, seed, stopTokenIds: tok.stopTokenIds },
      {
        onToken: (t) => {
          generated.push(t);
          flush(false);
        },
      },
    );
    flush(true);
    process.stdout.write('\n');
    sampler.close();
    const secs = (performance.now() - t0) / 1000;
    process.stderr.write(
      `[${result.tokens.length} tokens, ${result.finishReason}, ${(result.tokens.length / secs).toFixed(1)} tokens/s, ` +
        `prompt ${promptTokens.length} tokens]\n`,
    );
  },
};
