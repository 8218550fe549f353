// `matpo train` / `matpo eval` / `matpo sft` as real processes: bad configs and flags are one-line
// errors naming the file and field path (or the flag), with exit code 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../../bin/matpo.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'matpo-train-cli-'));
const run = (args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });

function oneLineError(args: string[], re: RegExp) {
  const r = run(args);
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr.trim(), re);
}

test('train: config errors name the file and the field path', () => {
  const cfg = join(dir, 'bad.yaml');
  writeFileSync(cfg, 'rl:\n  loss:\n    clipLow: high\n');
  oneLineError(
    ['train', '--config', cfg],
    new RegExp(`^matpo train: ${cfg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: rl\\.loss\\.clipLow: `),
  );
  writeFileSync(cfg, 'run:\n  steps: 2\n');
  oneLineError(
    ['train', '--config', cfg, '--set', 'rl.credit=nope'],
    /rl\.credit: unknown credit assignment "nope"; available: agent-wise, matpo, per-role-groups/,
  );
  oneLineError(['train', '--config', cfg], /data: set data\.world .* or data\.dataset/);
  oneLineError(['train'], /--config: is required/);
  const model = mkdtempSync(join(dir, 'model-'));
  writeFileSync(join(model, 'config.json'), JSON.stringify({ max_position_embeddings: 1024 }));
  writeFileSync(cfg, `model:\n  path: ${model}\nrollout:\n  maxSequenceTokens: 4096\n`);
  oneLineError(['train', '--config', cfg], /rollout\.maxSequenceTokens: 4096 exceeds the model's context \(max_position_embeddings 1024/);
  oneLineError(['train', '--resume', join(dir, 'nothing')], /nothing\/config\.yaml: cannot read/);
});

test('eval and sft: flag errors name the flag', () => {
  oneLineError(['eval', '--model', dir, '--world', dir, '--mode', 'multi'], /^matpo eval: --mode: Invalid option/);
  oneLineError(['eval', '--model', dir, '--world', dir, '--repeats', '0'], /^matpo eval: --repeats: Too small/);
  oneLineError(['sft', '--model', dir, '--out', dir], /^matpo sft: --data: is required/);
  writeFileSync(join(dir, 't.jsonl'), '{"messages":[{"role":"user","content":"x"}]}\n');
  oneLineError(
    ['sft', '--model', dir, '--data', join(dir, 't.jsonl'), '--out', dir],
    /model\.path: .* is not a model directory \(no config\.json\)/,
  );
});
