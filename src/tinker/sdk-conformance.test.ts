// The official Tinker Python SDK (0.21.0, run offline by ../shared/conformance/tinker-sdk-check)
// against `matpo serve --tinker` started as a real process over a tiny model: create a LoRA
// training client, forward_backward with cross_entropy, optim_step, save sampler weights, sample.
// The kit needs the local wheel store /opt/pypi/files; without it (or without the kit) the test is
// skipped and says why.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { presetConfig } from '../model/config.ts';
import { buildLayout, initParams } from '../model/params.ts';
import { saveModelDir } from '../model/checkpoint.ts';
import { createTestTokenizer } from '../model/tokenizer.ts';
import { command } from '../cli/commands/serve.ts';
import { MatpoError } from '../core/errors.ts';

const BIN = fileURLToPath(new URL('../../bin/matpo.js', import.meta.url));
const KIT = process.env.TINKER_SDK_CHECK ?? fileURLToPath(new URL('../../../shared/conformance/tinker-sdk-check', import.meta.url));
const WHEELS = process.env.TINKER_SDK_WHEELS ?? '/opt/pypi/files';
const skip = !existsSync(WHEELS)
  ? `no local wheel store at ${WHEELS} (the SDK's Python dependencies)`
  : !existsSync(KIT)
    ? `no conformance kit at ${KIT}`
    : false;

test('serve --tinker: --tinker-dir without --tinker, and --lora with it, are refused naming the flag', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-tinker-cli-'));
  try {
    await createTestTokenizer(dir);
    const cfg = presetConfig('micro', { vocabSize: 422 });
    const layout = buildLayout(cfg);
    saveModelDir(dir, { config: cfg, layout, weights: new Float32Array(layout.total) });
    await assert.rejects(
      command.run(['--model', dir, '--port', '0', '--tinker-dir', dir]),
      (e: unknown) => e instanceof MatpoError && e.message === '--tinker-dir: only applies with --tinker',
    );
    await assert.rejects(
      command.run(['--model', dir, '--port', '0', '--tinker', '--lora', dir]),
      (e: unknown) =>
        e instanceof MatpoError && e.message === '--lora: does not apply with --tinker (Tinker clients ask for LoRA in create_model)',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the Tinker SDK 0.21.0 conformance kit passes against `matpo serve --tinker`', { skip }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'matpo-tinker-sdk-'));
  const modelDir = join(root, 'model');
  const tok = await createTestTokenizer(modelDir);
  const cfg = presetConfig('micro', { vocabSize: tok.vocabSize });
  const layout = buildLayout(cfg);
  const w = new Float32Array(layout.total);
  initParams(w, layout, { ...cfg, initializerRange: 0.3 }, 5);
  saveModelDir(modelDir, { config: cfg, layout, weights: w });
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--tinker', '--model', modelDir, '--port', '0', '--threads', '1', '--tinker-dir', join(root, 'ckpt')],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        const m = /at (http:\/\/127\.0\.0\.1:\d+) \(Tinker API/.exec(out);
        if (m) resolve(m[1]);
      });
      child.once('exit', (code) => reject(new Error(`server exited (${code}): ${stderr}`)));
    });
    const r = spawnSync(KIT, [url], { encoding: 'utf8', timeout: 280_000, env: { ...process.env, TINKER_SDK_WHEELS: WHEELS } });
    const lines = (r.stdout ?? '').trim().split('\n');
    const last = lines[lines.length - 1] ?? '';
    assert.match(last, /^RESULT: PASS - tinker SDK 0\.21\.0: 9\/9 checks passed/, `${r.stdout}\n${r.stderr}\nserver stderr: ${stderr}`);
    assert.equal(r.status, 0);
  } finally {
    child.kill('SIGTERM');
    if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
    rmSync(root, { recursive: true, force: true });
  }
});
