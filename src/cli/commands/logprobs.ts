/**
 * `matpo logprobs --model DIR --input FILE`: per-token logprobs of token sequences under a model.
 * FILE has one JSON object per line, `{"tokens":[ids...]}`; stdout gets one line per input,
 * `{"logprobs":[...]}`, with log p(tokens[t] | tokens[<t]) for t = 1..n−1 (exactly n−1 numbers).
 * Runs on the embedded engine (worker thread); inputs are processed in batches by token budget.
 */
import { readFileSync } from 'node:fs';
import { FileFormatError, InvalidArgumentError } from '../../core/errors.ts';
import { intFlag, parseFlags, required, type Command } from '../command.ts';
import { EmbeddedPolicy } from '../../policy/embedded.ts';

export const command: Command = {
  name: 'logprobs',
  summary:
    'Per-token logprobs of token sequences: FILE has one {"tokens":[...]} per line; ' +
    'prints one {"logprobs":[...]} (n−1 numbers) per line.',
  usage: 'logprobs --model DIR --input FILE [--batch-tokens 8192] [--threads N] [--kernels native|reference]',
  async run(argv) {
    const { values } = parseFlags(argv, {
      model: { type: 'string' },
      input: { type: 'string' },
      'batch-tokens': { type: 'string' },
      threads: { type: 'string' },
      kernels: { type: 'string' },
    });
    const dir = required(values, 'model');
    const file = required(values, 'input');
    const budget = intFlag(values, 'batch-tokens', 8192);
    const kernels = values.kernels as string | undefined;
    if (kernels !== undefined && kernels !== 'native' && kernels !== 'reference') {
      throw new InvalidArgumentError('--kernels', `expected "native" or "reference", got "${kernels}"`);
    }
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new FileFormatError({ file, message: `cannot read: ${(err as Error).message}` });
    }
    const seqs: number[][] = [];
    const lines: number[] = [];
    text.split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch (err) {
        throw new FileFormatError({ file, line: i + 1, message: `not valid JSON (${(err as Error).message})` });
      }
      const tokens = (obj as { tokens?: unknown })?.tokens;
      if (!Array.isArray(tokens) || tokens.length === 0)
        throw new FileFormatError({ file, line: i + 1, field: 'tokens', message: 'expected a non-empty array of token ids' });
      tokens.forEach((t, j) => {
        if (!Number.isInteger(t) || (t as number) < 0)
          throw new FileFormatError({
            file,
            line: i + 1,
            field: `tokens[${j}]`,
            message: `expected a non-negative integer, got ${JSON.stringify(t)}`,
          });
      });
      seqs.push(tokens as number[]);
      lines.push(i + 1);
    });
    const policy = await EmbeddedPolicy.load(dir, {
      threads: values.threads !== undefined ? intFlag(values, 'threads', 1) : undefined,
      kernels: kernels as 'native' | 'reference' | undefined,
    });
    try {
      const V = policy.info.vocabSize;
      seqs.forEach((s, k) =>
        s.forEach((t, j) => {
          if (t >= V)
            throw new FileFormatError({
              file,
              line: lines[k],
              field: `tokens[${j}]`,
              message: `token id ${t} is out of range [0, ${V}) for this model`,
            });
        }),
      );
      // batches of whole inputs under the token budget, streamed to stdout in order
      let i = 0;
      while (i < seqs.length) {
        let n = 0;
        const start = i;
        while (i < seqs.length && (i === start || n + seqs[i].length <= budget)) n += seqs[i++].length;
        const out = await policy.forward(
          seqs.slice(start, i).map((tokens) => ({ tokens })),
          { microBatchTokens: budget },
        );
        const chunk = out.logprobs.map((lp) => JSON.stringify({ logprobs: Array.from(lp.subarray(1)) })).join('\n') + '\n';
        if (!process.stdout.write(chunk)) await new Promise((r) => process.stdout.once('drain', r));
      }
    } finally {
      await policy.close();
    }
  },
};
