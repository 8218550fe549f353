/**
 * Does a model copy from its context? Greedy answers to reading exercises (src/envs/reading-data.ts)
 * of worlds generated from the given seeds — use seeds no training used — scored two ways:
 *   value  the reply contains the exercise's value (case-insensitive);
 *   cited  the reply cites the exercise's document id as `Document <id>` (whole word).
 * Prints both rates with standard errors and a few replies. A model that memorised its training
 * worlds and does not read scores near 0 on both; copying from context shows as value ≫ 0.
 *
 *   node --import tsx scripts/reading-probe.ts --model DIR --seeds 1001,1002 [--n 50] [--entities 300]
 *     [--questions 150] [--hops 1-2] [--threads 1]
 */
import { parseArgs } from 'node:util';
import { EmbeddedPolicy } from '../src/policy/embedded.ts';
import { generateWorld } from '../src/envs/world/world.ts';
import { readingExercises } from '../src/envs/reading-data.ts';
import { parseSeeds, interleave } from '../src/envs/world-set.ts';
import { mean, standardError } from '../src/util/stats.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    seeds: { type: 'string' },
    n: { type: 'string' },
    entities: { type: 'string' },
    questions: { type: 'string' },
    hops: { type: 'string' },
    threads: { type: 'string' },
  },
});
if (!values.model || !values.seeds) throw new Error('usage: reading-probe --model DIR --seeds LIST [--n 50]');
const [minHops, maxHops] = (values.hops ?? '1-2').split('-').map(Number);
const worlds = parseSeeds(values.seeds, '--seeds').map((seed) =>
  generateWorld({
    seed,
    entities: Number(values.entities ?? 300),
    questions: Number(values.questions ?? 150),
    minHops,
    maxHops: maxHops ?? minHops,
    testFraction: 1,
  }),
);
const exercises = interleave(worlds.map((w) => readingExercises(w))).slice(0, Number(values.n ?? 50));
const policy = await EmbeddedPolicy.load(values.model, values.threads ? { threads: Number(values.threads) } : {});
const tok = await policy.tokenizer();
const t0 = performance.now();
const replies = await Promise.all(
  exercises.map(async (x) => {
    const prompt = tok.encode(tok.applyChatTemplate([x.messages[0]], { addGenerationPrompt: true }));
    const r = await policy.sample(prompt, { maxNewTokens: 64, temperature: 0, stopTokenIds: tok.stopTokenIds, seed: 1 });
    return tok.decode(r.tokens, { skipSpecialTokens: true });
  }),
);
await policy.close();
const value = exercises.map((x, i) => (replies[i].toLowerCase().includes(x.value.toLowerCase()) ? 1 : 0));
const cited = exercises.map((x, i) => (new RegExp(`Document ${x.docId}(?![0-9A-Za-z])`).test(replies[i]) ? 1 : 0));
const pct = (xs: number[]) => `${(100 * mean(xs)).toFixed(1)}% ± ${(100 * standardError(xs)).toFixed(1)}`;
console.log(
  `reading probe of ${values.model} on ${exercises.length} exercises from worlds ${values.seeds} ` +
    `(${((performance.now() - t0) / 1000).toFixed(0)} s)`,
);
console.log(`value copied ${pct(value)}, document cited ${pct(cited)}`);
for (let i = 0; i < 3 && i < exercises.length; i++)
  console.log(`  want "${exercises[i].value}" / ${exercises[i].docId}: ${JSON.stringify(replies[i].slice(0, 160))}`);
