// `matpo serve`: bad flags and directories are one-line errors (one run as a real process, to see
// the exit code and the printed line; the rest call the command in-process).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { command } from './serve.ts';
import { MatpoError } from '../../errors.ts';

const BIN = fileURLToPath(new URL('../../../bin/matpo.js', import.meta.url));

test('serve: missing or bad flags and directories fail with one line naming the problem', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-serve-'));
  try {
    const r = spawnSync(process.execPath, [BIN, 'serve', '--port', '8000'], { encoding: 'utf8', timeout: 60_000 });
    assert.deepEqual({ code: r.status, stderr: r.stderr.trim(), stdout: r.stdout.trim() }, { code: 1, stderr: 'matpo serve: --model: is required', stdout: '' });
    const fails = async (args: string[], message: string | RegExp) =>
      assert.rejects(command.run(args), (e: unknown) => e instanceof MatpoError && (typeof message === 'string' ? e.message === message : message.test(e.message)));
    await fails(['--model', dir], '--port: is required');
    await fails(['--model', dir, '--port', 'eighty'], '--port: expected an integer, got "eighty"');
    await fails(['--model', dir, '--port', '70000'], '--port: expected 0..65535, got 70000');
    await fails(['--model', join(dir, 'nope'), '--port', '0'], `${join(dir, 'nope')}: model directory not found`);
    await fails(['--model', dir, '--port', '0'], `${join(dir, 'config.json')}: file not found (not a model directory)`);
    await fails(['--model', dir, '--port', '0', '--bogus'], /--bogus/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
