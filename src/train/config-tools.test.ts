/**
 * One YAML file trains and evaluates on a real task from the command line: a QA dataset file
 * (FRAMES from ../shared/data), the workers' tools from the local BM25 index over the 2Wiki corpus
 * (built by `matpo index`) plus a real MCP server process (stdio), and the exact-match scorer;
 * `matpo train` runs two RL steps of a tiny model, and `matpo eval` evaluates with the same file.
 * Both tool sources reach the model: the prompts list the tools of both.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildWorldModel } from '../testing/world-model.ts';
import type { Rollout } from '../core/records.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'matpo.js');
const SHARED = join(ROOT, '..', 'shared', 'data');
const MCP_SERVER = join(ROOT, 'test', 'fixtures', 'mcp', 'server.ts');

test(
  'matpo train and matpo eval from one YAML: dataset + BM25 index + MCP server + exact match',
  { skip: !existsSync(join(SHARED, '2wiki_corpus.json')) && 'needs ../shared/data (the 2Wiki corpus and FRAMES)' },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'matpo-config-tools-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const { modelDir } = await buildWorldModel(join(dir, 'w'), { expertQuestions: 0 });
    const run = (args: string[]) => {
      const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 300_000, cwd: dir });
      assert.equal(r.status, 0, `matpo ${args[0]}: ${r.stderr}`);
      return r.stdout;
    };
    const index = join(dir, 'idx');
    assert.match(run(['index', join(SHARED, '2wiki_corpus.json'), '--out', index]), /indexed 6119 documents/);

    const yaml = join(dir, 'task.yaml');
    writeFileSync(
      yaml,
      [
        `model: { path: ${modelDir}, threads: 1 }`,
        `data: { dataset: ${join(SHARED, 'frames_824.jsonl')}, maxQuestions: 40 }`,
        'tools:',
        `  index: ${index}`,
        '  mcp:',
        `    - { name: bridges, command: ${process.execPath}, args: [--import, tsx, ${MCP_SERVER}, --stdio], cwd: ${ROOT} }`,
        'rollout: { mode: matpo, groupSize: 2, questionsPerStep: 2, maxTurns: 2, maxNewTokens: 24, ' +
          'workerSummaryTokens: 16, maxSequenceTokens: 1024, concurrency: 4 }',
        'rl: { reward: { scorer: exact_match } }',
        'optim: { learningRate: 1.0e-3 }',
        `run: { name: frames, dir: ${join(dir, 'runs')}, steps: 2, evalEvery: 0, evalQuestions: 2, checkpointEvery: 2, progress: false }`,
      ].join('\n') + '\n',
    );
    const out = run(['train', '--config', yaml]);
    assert.match(out, /finished at step 2/);
    const runDir = join(dir, 'runs', 'frames');
    const steps = readdirSync(join(runDir, 'rollouts')).sort();
    assert.deepEqual(steps, ['step-000001.jsonl', 'step-000002.jsonl']);
    const rollouts = readFileSync(join(runDir, 'rollouts', steps[0]), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Rollout);
    assert.equal(rollouts.length, 4);
    const resolved = readFileSync(join(runDir, 'config.yaml'), 'utf8');
    assert.match(resolved, /index: .*idx/);
    assert.match(resolved, /name: bridges/);

    const evalOut = run(['eval', '--config', yaml, '--questions', '2']);
    assert.match(evalOut, /^matpo eval of embedded:.*: 2 questions × G=1 = 2 rollouts/m);
    assert.match(evalOut, /^accuracy \d+\.\d\d% \(exact_match\)/m);

    // The agent that holds the tools (here a single agent, so every rollout shows it) is offered the
    // index's search and the MCP server's tools together (the MCP format lists them in the system text).
    const records = join(dir, 'single.jsonl');
    run(['eval', '--config', yaml, '--mode', 'single', '--format', 'mcp', '--questions', '1', '--out', records]);
    const single = JSON.parse(readFileSync(records, 'utf8').trim().split('\n')[0]) as Rollout;
    const system = single.root.messages[0].content;
    for (const tool of ['search', 'open', 'lookup', 'describe_bridge']) assert.match(system, new RegExp(`### Tool name: ${tool}\n`), tool);
  },
);
