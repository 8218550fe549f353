// `matpo serve` as a real process: bad flags and directories are one-line errors with exit code 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../../bin/matpo.js', import.meta.url));

function matpo(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'serve', ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stderr: r.stderr.trim(), stdout: r.stdout.trim() };
}

test('serve: missing or bad flags and directories fail with one line naming the problem', () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-serve-'));
  try {
    assert.deepEqual(matpo('--port', '8000'), { code: 1, stderr: 'matpo serve: --model: is required', stdout: '' });
    assert.equal(matpo('--model', dir, '--port', '70000').stderr, 'matpo serve: --port: expected 0..65535, got 70000');
    assert.equal(matpo('--model', dir, '--port', '0').stderr, `matpo serve: ${join(dir, 'config.json')}: file not found (not a model directory)`);
    const unknown = matpo('--model', dir, '--port', '0', '--bogus');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^matpo serve: .*--bogus/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
