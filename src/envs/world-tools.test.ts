import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateWorld } from './world/world.ts';
import { worldSearchTools, worldToolSpecs } from './world-tools.ts';
import { executeTool } from '../tools/execute.ts';

test('world tools apply the world noise knob, seeded by the world', async () => {
  const clean = worldSearchTools(generateWorld({ seed: 5, entities: 100, questions: 10 }));
  const noisyWorld = generateWorld({ seed: 5, entities: 100, questions: 10, noise: 0.4 });
  const noisy = worldSearchTools(noisyWorld);
  const again = worldSearchTools(noisyWorld);
  const opts = { timeoutMs: 1000, maxChars: 20000 };
  let differ = 0;
  for (const e of noisyWorld.entities.slice(0, 20)) {
    const a = await executeTool(clean.tools[0], { query: e.name }, opts);
    const b = await executeTool(noisy.tools[0], { query: e.name }, opts);
    const c = await executeTool(again.tools[0], { query: e.name }, opts);
    assert.equal(b.text, c.text);
    if (a.text !== b.text) differ++;
  }
  assert.ok(differ >= 10, `noisy results differ for ${differ} of 20 queries`);
  const specs = worldToolSpecs(noisy.tools);
  assert.deepEqual(
    specs.planner.map((s) => s.function.name),
    ['delegate_subtask'],
  );
  assert.deepEqual(
    specs.worker.map((s) => s.function.name),
    ['search', 'open'],
  );
  assert.deepEqual(specs.single, specs.worker);
});
