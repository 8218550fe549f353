import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadModelDir } from '../../model/checkpoint.ts';
import { readMetrics, runPaths } from '../../train/run-dir.ts';

const bin = join(import.meta.dirname, '../../../bin/matpo.js');

test('matpo demo --quick runs every phase through the real CLI, writes a run the dashboard reads, and resumes instead of redoing', () => {
  const out = mkdtempSync(join(tmpdir(), 'matpo-demo-'));
  try {
    const r = spawnSync(process.execPath, [bin, 'demo', '--quick', '--out', out, '--no-progress'], { encoding: 'utf8', timeout: 240_000 });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    for (const phase of ['world', 'init-model', 'copy', 'reading', 'sft', 'train']) assert.match(r.stdout, new RegExp(`== demo: ${phase}`));
    assert.match(r.stdout, /held-out accuracy/);
    assert.match(r.stdout, /npx matpo view /);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
    assert.equal(summary.steps, 2);
    assert.ok(
      summary.untrained && summary.before && summary.after,
      'evaluations of the untrained, warm-started and trained model were recorded',
    );
    assert.equal(summary.untrained.accuracy, 0);
    assert.match(r.stdout, /\| same-world held-out accuracy \(seed 1\) .*\|.*\|.*\|/);
    // the headline row: worlds no training used, with their seeds (recorded in the world set and the summary)
    assert.match(r.stdout, /\n\| unseen-world accuracy \(seeds 199, 198\) +\| [\d.]+% ± [\d.]+% +\|/);
    assert.deepEqual(summary.seeds, { train: [1], unseen: [199, 198], reading: [15000] });
    assert.ok(existsSync(join(out, 'reading', 'model-read', 'model.safetensors')));
    // the copy drills missed their held-out target after 4 steps and ran a second cycle of 4
    assert.match(r.stderr, /held-out loss [\d.]+ is above the target 0\.000001: another cycle of 4 steps \(2\/2\)/);
    assert.match(r.stdout, /8 steps in 2 cycles/);
    const copySteps = readFileSync(join(out, 'reading', 'model-copy', 'sft-metrics.jsonl'), 'utf8')
      .trim()
      .split('\n');
    assert.equal(JSON.parse(copySteps.at(-1)!).step, 8);
    assert.deepEqual(JSON.parse(readFileSync(join(out, 'world', 'world-set.json'), 'utf8')).unseenSeeds, [199, 198]);
    assert.ok(summary.unseenUntrained && summary.unseenBefore && summary.unseenAfter, 'unseen-world evaluations were recorded');
    assert.match(r.stdout, /\| answered without a tool call +\| [\d.]+% +\| [\d.]+% +\| [\d.]+% +\|/);
    assert.ok(summary.after.noToolRate >= 0 && summary.after.noToolRate <= 1);
    assert.ok(existsSync(join(out, 'matpo', 'run', 'metrics.jsonl')));
    // Held-out evaluations inside the run use the demo's evaluation temperature (greedy), like the untrained one.
    assert.match(readFileSync(join(out, 'matpo', 'run', 'config.yaml'), 'utf8'), /evalTemperature: 0\n/);
    assert.ok(existsSync(join(out, 'matpo', 'run', 'rollouts', 'step-000002.jsonl')));
    assert.ok(existsSync(join(out, 'matpo', 'model-sft', 'model.safetensors')));
    // The two RL steps trained: some group's rewards differed, and the final weights are not the warm-started ones.
    const warm = loadModelDir(join(out, 'matpo', 'model-sft')).weights;
    const final = loadModelDir(join(out, 'matpo', 'run', 'checkpoints', 'step-000002')).weights;
    let changed = 0;
    for (let i = 0; i < warm.length; i++) if (warm[i] !== final[i]) changed++;
    assert.ok(changed > warm.length / 10, `${changed} of ${warm.length} weights changed`);
    const steps = readMetrics(runPaths(join(out, 'matpo', 'run'))).filter((m) => typeof m['train/grad_norm'] === 'number');
    assert.ok(
      steps.some((m) => Number(m['train/grad_norm']) > 0),
      JSON.stringify(steps),
    );
    assert.ok(summary.weightChange > 0);
    assert.match(r.stdout, /RL moved the weights by \d\.\d\de-\d+ of their norm/);
    assert.match(r.stdout, /--quick is a smoke run/);
    assert.ok(
      summary.rewardCurve.some((x: number) => x > 0),
      'the format term makes the training reward non-zero',
    );
    // A second run finds every phase done and only prints the summary again.
    const again = spawnSync(process.execPath, [bin, 'demo', '--quick', '--out', out, '--no-progress'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /demo: world already done/);
    assert.match(again.stdout, /demo: train already done/);
    assert.match(again.stdout, /held-out accuracy/);
    // Other settings in the same directory would build on this run's phases: refused, naming the difference.
    const other = spawnSync(process.execPath, [bin, 'demo', '--quick', '--out', out, '--steps', '3', '--no-progress'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.notEqual(other.status, 0);
    assert.match(other.stderr, /holds a run made with other settings .*rl\.steps: 2 there, 3 now.*another --out/);
    const recipe = spawnSync(process.execPath, [bin, 'demo', '--recipe', 'longer', '--out', out], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(recipe.status, 0);
    assert.match(recipe.stderr, /--recipe.*expected default, long, one-world; got "longer"/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('matpo experiment --quick runs both modes on one world per seed and writes the results table', () => {
  const out = mkdtempSync(join(tmpdir(), 'matpo-experiment-'));
  try {
    const r = spawnSync(process.execPath, [bin, 'experiment', '--quick', '--seeds', '3', '--out', out, '--no-progress'], {
      encoding: 'utf8',
      timeout: 300_000,
    });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const md = readFileSync(join(out, 'results.md'), 'utf8');
    assert.match(md, /MATPO \(planner–worker\)\s*\|\s*single-agent GRPO/);
    assert.match(md, /held-out accuracy after RL/);
    assert.match(md, /unseen-world accuracy untrained, % \(seeds 399, 398\)/);
    assert.match(md, /unseen-world accuracy after RL/);
    assert.match(md, /grounding of reports before → after RL/);
    assert.match(md, /context-overflow rate/);
    assert.match(md, /out of token budget/);
    assert.match(md, /command: npx matpo experiment --quick --seeds 3 --out \S+ --no-progress/);
    assert.match(md, /\]\(reward-curves\.svg\)/);
    assert.match(readFileSync(join(out, 'reward-curves.svg'), 'utf8'), /<polyline points=/);
    // evaluations at every step (QUICK evaluates each of its 2 steps): learning curves per mode
    assert.match(md, /held-out learning curves .*\n {2}MATPO, unseen worlds: +0:[\d.]+ 1:[\d.]+ 2:[\d.]+\n/);
    assert.match(md, /single-agent GRPO, same-world: +0:[\d.]+ 1:[\d.]+ 2:[\d.]+/);
    assert.match(readFileSync(join(out, 'unseen-curves.svg'), 'utf8'), /<polyline points=/);
    // one reading curriculum serves both modes
    assert.ok(existsSync(join(out, 'seed-3', 'reading', 'model-read', 'model.safetensors')));
    assert.ok(!existsSync(join(out, 'seed-3', 'single', 'model-read')));
    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    assert.equal(results.matpo.length, 1);
    assert.equal(results.single.length, 1);
    assert.equal(results.single[0].after.workersPerRollout, 0, 'single agents never spawn workers');
    // both modes trained on the same world
    assert.ok(
      existsSync(join(out, 'seed-3', 'world', 'demos-matpo.jsonl')) && existsSync(join(out, 'seed-3', 'world', 'demos-single.jsonl')),
    );
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
