/**
 * The layer rule (.dependency-cruiser.cjs) holds on the real tree, and it fails, naming the rule
 * and the edge, on a planted upward import (model → train) in a scratch copy of the layout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const depcruise = join(repo, 'node_modules', '.bin', 'depcruise');

function cruise(cwd: string) {
  return spawnSync(depcruise, ['src', '--config', '.dependency-cruiser.cjs', '--output-type', 'err'], { cwd, encoding: 'utf8' });
}

test('the source tree keeps the layer rule', () => {
  const r = cruise(repo);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('a planted upward import fails the layer rule, and a downward one passes', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-layers-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  copyFileSync(join(repo, '.dependency-cruiser.cjs'), join(dir, '.dependency-cruiser.cjs'));
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { allowImportingTsExtensions: true, noEmit: true, module: 'nodenext' } }),
  );
  const write = (file: string, text: string) => {
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    writeFileSync(join(dir, file), text);
  };
  write('src/core/records.ts', 'export type Role = "planner";\n');
  write('src/train/loop.ts', 'import type { Role } from "../core/records.ts";\nexport const role: Role = "planner";\n');
  write('src/model/engine.ts', 'import type { Role } from "../core/records.ts";\nexport const r: Role = "planner";\n');
  const clean = cruise(dir);
  assert.equal(clean.status, 0, clean.stdout + clean.stderr);

  write('src/model/engine.ts', 'import { role } from "../train/loop.ts";\nexport const r = role;\n');
  const planted = cruise(dir);
  assert.notEqual(planted.status, 0);
  assert.match(planted.stdout, /layer-model: src\/model\/engine\.ts → src\/train\/loop\.ts/);

  write('src/model/engine.ts', 'export const r = 1;\n');
  write('src/model/uses-fake.ts', 'import { fake } from "../testing/fake.ts";\nexport const f = fake;\n');
  write('src/testing/fake.ts', 'export const fake = 1;\n');
  const fake = cruise(dir);
  assert.notEqual(fake.status, 0);
  assert.match(fake.stdout, /no-testing-in-production: src\/model\/uses-fake\.ts → src\/testing\/fake\.ts/);
});
