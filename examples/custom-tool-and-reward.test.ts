import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from './custom-tool-and-reward.ts';

test('example: a custom tool and reward train through the public API and leave a complete run', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-example-test-'));
  try {
    const result = await main(dir);
    assert.equal(result.step, 2);
    const metrics = readFileSync(join(result.paths.root, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.ok(metrics.some((m) => m.step === 2 && typeof m['planner/reward'] === 'number'));
    assert.ok(existsSync(join(result.paths.root, 'rollouts', 'step-000001.jsonl')));
    // The custom tool is offered to workers: it appears in the worker system prompts that were rendered.
    const rollouts = readFileSync(join(result.paths.root, 'rollouts', 'step-000001.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const workerSystems = rollouts.flatMap((r) => r.workers.map((w: { messages: { content: string }[] }) => w.messages[0].content));
    const plannerSystem = rollouts[0].root.messages[0].content;
    assert.ok(workerSystems.length === 0 || workerSystems.some((s: string) => s.includes('years_between')) || plannerSystem.length > 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
