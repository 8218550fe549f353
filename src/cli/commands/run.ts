/**
 * `matpo run`: planner–worker (or single-agent) rollouts of a model over a world split or a QA
 * dataset, scored; prints accuracy and format scores and writes the rollouts as JSONL.
 *
 * The model is an embedded model directory (`--model DIR`) or an OpenAI-compatible server
 * (`--endpoint URL`, with `--served NAME` and `--tokenizer DIR` for its tokenizer). Worker tools:
 * the world's search and open (`--world`), a built search index (`--index DIR`), and/or web search
 * and fetch (`--web`, key in SERPER_API_KEY).
 */
import { ConfigError } from '../../core/errors.ts';
import { intFlag, numFlag, parseFlags, type Command } from '../command.ts';
import type { SamplingPolicy } from '../../core/policy.ts';
import type { Tool } from '../../tools/tool.ts';
import type { Rollout } from '../../core/records.ts';
import { DEFAULT_LIMITS, RolloutEngine, runRollouts, writeRolloutsJsonl } from '../../agents/rollout.ts';
import type { Question } from '../../core/question.ts';
import { loadPrompts } from '../../agents/prompts.ts';

export const USAGE =
  'run (--model DIR | --endpoint URL [--served NAME] [--tokenizer DIR] [--api-key KEY]) (--world DIR [--split test] | --data FILE [--preset NAME])\n' +
  '    [--mode matpo|single] [--group 1] [--questions 0] [--concurrency 8] [--temperature 1] [--seed 1]\n' +
  '    [--max-turns 20] [--max-new-tokens 1024] [--summary-tokens 1024] [--max-context 32768] [--overflow drop-middle|stop]\n' +
  '    [--max-workers 8] [--tool-timeout-ms 30000] [--tool-chars 20000] [--max-rollout-tokens N] [--format native|hermes|mcp] [--worker-result user|tool]\n' +
  '    [--index DIR] [--web] [--prompts DIR] [--scorer exact_match] [--out rollouts.jsonl]';

function oneOf<T extends string>(values: Record<string, unknown>, flag: string, allowed: readonly T[], fallback: T): T {
  const v = values[flag];
  if (v === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(String(v))) throw new ConfigError({ path: `--${flag}`, message: `expected one of ${allowed.join(', ')}, got "${String(v)}"` });
  return v as T;
}

async function openPolicy(values: Record<string, unknown>): Promise<SamplingPolicy> {
  if (values.model && values.endpoint) throw new ConfigError({ path: '--model', message: 'give --model or --endpoint, not both' });
  if (typeof values.model === 'string') {
    const { EmbeddedPolicy } = (await import('../../policy/embedded.ts')) as { EmbeddedPolicy: { load(dir: string, o?: object): Promise<SamplingPolicy> } };
    return EmbeddedPolicy.load(values.model);
  }
  if (typeof values.endpoint === 'string') {
    const { OpenAIPolicy } = (await import('../../policy/openai.ts')) as { OpenAIPolicy: new (o: object) => SamplingPolicy };
    return new OpenAIPolicy({
      baseUrl: values.endpoint,
      model: (values.served as string | undefined) ?? 'default',
      apiKey: (values['api-key'] as string | undefined) ?? process.env.OPENAI_API_KEY,
      tokenizerDir: values.tokenizer as string | undefined,
    });
  }
  throw new ConfigError({ path: '--model', message: 'give --model DIR (embedded) or --endpoint URL (OpenAI-compatible server)' });
}

interface Loaded {
  questions: Question[];
  tools: Tool[];
}

async function loadQuestionsAndTools(values: Record<string, unknown>): Promise<Loaded> {
  const tools: Tool[] = [];
  let questions: Question[];
  if (values.world && values.data) throw new ConfigError({ path: '--world', message: 'give --world or --data, not both' });
  if (typeof values.world === 'string') {
    const { loadWorld } = await import('../../envs/world/world.ts');
    const { worldSearchTools } = await import('../../envs/world-tools.ts');
    const world = loadWorld(values.world);
    const split = (values.split as string | undefined) ?? 'test';
    if (split !== 'train' && split !== 'test') throw new ConfigError({ path: '--split', message: `a world has splits "train" and "test", not "${split}"` });
    questions = world.questions.filter((q) => q.split === split).map((q) => ({ id: q.id, question: q.question, answers: q.answers }));
    tools.push(...worldSearchTools(world).tools);
  } else if (typeof values.data === 'string') {
    const { loadQaDataset } = await import('../../envs/datasets.ts');
    const rows = await loadQaDataset(values.data, values.preset ? { preset: values.preset as string } : {});
    questions = rows.map((r) => ({ id: r.id, question: r.question, answers: r.answers }));
  } else {
    throw new ConfigError({ path: '--world', message: 'give --world DIR or --data FILE' });
  }
  if (typeof values.index === 'string') {
    const { SearchIndex } = await import('../../tools/search/search-index.ts');
    const { createSearchTools } = await import('../../tools/search/tools.ts');
    if (tools.some((t) => t.name === 'search')) throw new ConfigError({ path: '--index', message: 'the world already provides search tools' });
    tools.push(...createSearchTools(SearchIndex.load(values.index)));
  }
  if (values.web) {
    const { createWebSearchTool } = await import('../../tools/web-search.ts');
    const { createWebFetchTool } = await import('../../tools/web-fetch.ts');
    tools.push(createWebSearchTool() as Tool, createWebFetchTool() as Tool);
  }
  return { questions, tools };
}

export const command: Command = {
  name: 'run',
  summary: 'Run planner–worker (or single-agent) rollouts of a model over questions, score them and write them as JSONL.',
  usage: USAGE,
  async run(argv) {
    const { values } = parseFlags(argv, {
      model: { type: 'string' }, endpoint: { type: 'string' }, served: { type: 'string' }, tokenizer: { type: 'string' }, 'api-key': { type: 'string' },
      world: { type: 'string' }, split: { type: 'string' }, data: { type: 'string' }, preset: { type: 'string' },
      mode: { type: 'string' }, group: { type: 'string' }, questions: { type: 'string' }, concurrency: { type: 'string' },
      temperature: { type: 'string' }, seed: { type: 'string' },
      'max-turns': { type: 'string' }, 'max-new-tokens': { type: 'string' }, 'summary-tokens': { type: 'string' }, 'max-context': { type: 'string' },
      overflow: { type: 'string' }, 'max-workers': { type: 'string' }, 'tool-timeout-ms': { type: 'string' }, 'tool-chars': { type: 'string' },
      'max-rollout-tokens': { type: 'string' }, format: { type: 'string' }, 'worker-result': { type: 'string' },
      index: { type: 'string' }, web: { type: 'boolean' }, prompts: { type: 'string' }, scorer: { type: 'string' }, out: { type: 'string' },
    });
    const mode = oneOf(values, 'mode', ['matpo', 'single'] as const, 'matpo');
    const group = intFlag(values, 'group', 1);
    const maxQuestions = intFlag(values, 'questions', 0);
    const concurrency = intFlag(values, 'concurrency', 8);
    const temperature = numFlag(values, 'temperature', 1);
    const seed = intFlag(values, 'seed', 1);
    const limits = {
      maxTurns: intFlag(values, 'max-turns', DEFAULT_LIMITS.maxTurns),
      maxNewTokens: intFlag(values, 'max-new-tokens', DEFAULT_LIMITS.maxNewTokens),
      summaryMaxNewTokens: intFlag(values, 'summary-tokens', DEFAULT_LIMITS.summaryMaxNewTokens),
      maxContextTokens: intFlag(values, 'max-context', DEFAULT_LIMITS.maxContextTokens),
      overflow: oneOf(values, 'overflow', ['drop-middle', 'stop'] as const, DEFAULT_LIMITS.overflow),
      maxWorkers: intFlag(values, 'max-workers', DEFAULT_LIMITS.maxWorkers),
      toolTimeoutMs: intFlag(values, 'tool-timeout-ms', DEFAULT_LIMITS.toolTimeoutMs),
      toolMaxChars: intFlag(values, 'tool-chars', DEFAULT_LIMITS.toolMaxChars),
      maxRolloutTokens: values['max-rollout-tokens'] === undefined ? null : intFlag(values, 'max-rollout-tokens', 0),
    };
    const format = oneOf(values, 'format', ['native', 'hermes', 'mcp'] as const, 'native');
    const workerResultRole = oneOf(values, 'worker-result', ['user', 'tool'] as const, 'user');
    const { scorers } = await import('../../rl/scoring.ts');
    const scorer = scorers.get((values.scorer as string | undefined) ?? 'exact_match');
    const prompts = loadPrompts({ dir: values.prompts as string | undefined });

    const loaded = await loadQuestionsAndTools(values);
    const questions = maxQuestions > 0 ? loaded.questions.slice(0, maxQuestions) : loaded.questions;
    if (questions.length === 0) throw new ConfigError({ path: '--questions', message: 'no questions to run' });
    if (mode === 'matpo' && loaded.tools.length === 0) process.stderr.write('matpo run: warning: the workers have no tools (give --world, --index or --web)\n');

    const policy = await openPolicy(values);
    try {
      const engine = await RolloutEngine.create(policy, loaded.tools, { limits, format, workerResultRole, prompts, temperature });
      const total = questions.length * group;
      let done = 0;
      const t0 = performance.now();
      const tty = process.stderr.isTTY;
      const rollouts: Rollout[] = await runRollouts(engine, questions, {
        mode, group, concurrency, seed, temperature,
        onRollout: () => {
          done++;
          if (tty) process.stderr.write(`\rrollouts ${done}/${total}`);
        },
      });
      if (tty) process.stderr.write('\n');
      const seconds = (performance.now() - t0) / 1000;

      let accuracy = 0;
      let fmtRoot = 0;
      let fmtWorkers = 0;
      let withWorkers = 0;
      let workers = 0;
      const outcomes = new Map<string, number>();
      for (const r of rollouts) {
        const score = (await scorer({ prediction: r.answer, answers: r.goldAnswers, question: r.question })).score;
        accuracy += score;
        fmtRoot += r.root.formatScore;
        if (r.workers.length > 0) {
          fmtWorkers += r.workers.reduce((a, w) => a + w.formatScore, 0) / r.workers.length;
          withWorkers++;
        }
        workers += r.workers.length;
        outcomes.set(r.outcome, (outcomes.get(r.outcome) ?? 0) + 1);
        r.reward = { accuracy: score, formatPlanner: r.root.formatScore, formatWorkers: r.workers.length ? r.workers.reduce((a, w) => a + w.formatScore, 0) / r.workers.length : 1, total: score };
      }
      const n = rollouts.length;
      if (values.out) writeRolloutsJsonl(values.out, rollouts);
      console.log(`${mode} run of ${policy.name}: ${questions.length} questions × G=${group} = ${n} rollouts in ${seconds.toFixed(1)} s (${engine.format.name} tool-call format)`);
      console.log(`accuracy ${(100 * accuracy / n).toFixed(2)}% (${values.scorer ?? 'exact_match'})`);
      console.log(`format score ${mode === 'matpo' ? 'planner' : 'agent'} ${(fmtRoot / n).toFixed(3)}${mode === 'matpo' ? `, workers ${withWorkers ? (fmtWorkers / withWorkers).toFixed(3) : 'n/a'}, workers per rollout ${(workers / n).toFixed(2)}` : ''}`);
      console.log(`outcomes ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}`);
      if (values.out) console.log(`rollouts: ${values.out}`);
      return outcomes.get('failed') === n ? 1 : 0;
    } finally {
      await policy.close();
    }
  },
};
