import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { applyOverride, configHelp, configToYaml, loadConfig, parseConfig } from './config.ts';
import { ConfigError } from '../core/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'matpo-cfg-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

test('defaults are the MATPO reference settings', () => {
  const c = parseConfig({});
  assert.equal(c.rollout.groupSize, 8);
  assert.equal(c.rl.estimator, 'grpo');
  assert.equal(c.rl.credit, 'matpo');
  assert.deepEqual([c.rl.loss.clipLow, c.rl.loss.clipHigh, c.rl.loss.dualClip, c.rl.loss.aggregation], [0.2, 0.2, 3, 'token-mean']);
  assert.deepEqual([c.rl.reward.accuracy, c.rl.reward.formatScale, c.rl.reward.formatPlanner, c.rl.reward.formatWorkers], [0.9, 0.5, 0.1, 0.1]);
  assert.equal(c.optim.learningRate, 1e-5);
});

test('errors name the field path and the file', () => {
  const bad = (text: string, re: RegExp) => {
    const p = file(`c${Math.random()}.yaml`, text);
    assert.throws(() => loadConfig(p), (e: unknown) => e instanceof ConfigError && re.test(e.message) && e.message.startsWith(p));
  };
  bad('rl:\n  loss:\n    clipLow: high\n', /rl\.loss\.clipLow: .*expected number/);
  bad('rl:\n  los: {}\n', /rl\.los: unknown key/);
  bad('optim:\n  learningRate: -1\n', /optim\.learningRate: Too small/);
  bad('zz: 1\n', /zz: unknown key/);
  bad('run:\n  steps: 1.5\n', /run\.steps: .*int/);
  bad('rollout:\n  mode: multi\n', /rollout\.mode: /);
  bad('rl:\n  estimator: ppo\n', /rl\.estimator: unknown advantage estimator "ppo"; available: dr-grpo, grpo, rloo/);
  bad('rl:\n  loss:\n    aggregation: mean\n', /rl\.loss\.aggregation: unknown loss aggregation mode/);
  bad('rl:\n  credit: x\n', /rl\.credit: unknown credit assignment "x"; available: agent-wise, matpo, per-role-groups/);
  bad('a: [1,\n', /invalid YAML/);
  bad('- 1\n', /expected a mapping/);
  assert.throws(() => loadConfig(join(dir, 'missing.yaml')), /missing\.yaml: cannot read/);
});

test('--set overrides parse YAML scalars and name bad paths', () => {
  const p = file('ok.yaml', 'rl:\n  estimator: rloo\nrun:\n  name: base\n');
  const c = loadConfig(p, ['rl.loss.clipHigh=0.28', 'run.name=exp1', 'rl.loss.dualClip=null', 'data.shuffle=false', 'rollout.mode=single']);
  assert.equal(c.rl.estimator, 'rloo');
  assert.equal(c.rl.loss.clipHigh, 0.28);
  assert.equal(c.rl.loss.dualClip, null);
  assert.equal(c.data.shuffle, false);
  assert.equal(c.run.name, 'exp1');
  assert.throws(() => loadConfig(p, ['rl.loss.clipHihg=0.3']), /rl\.loss\.clipHihg: unknown key/);
  assert.throws(() => loadConfig(p, ['novalue']), /--set: expected key.path=value/);
  assert.throws(() => applyOverride({ run: 3 }, 'run.name=x'), /run: is not a section/);
});

test('the resolved config round-trips through YAML and every field has help text', () => {
  const c = parseConfig({ run: { name: 'x' } });
  assert.deepEqual(parseConfig(YAML.parse(configToYaml(c))), c);
  const help = configHelp();
  for (const key of ['model.path', 'rl.reward.noWorkerFormat', 'rl.loss.aggregation', 'optim.microBatchTokens', 'run.checkpointEvery'])
    assert.match(help, new RegExp(`^${key.replace(/\./g, '\\.')}\\s`, 'm'));
  assert.ok(help.split('\n').every((l) => l.trim().split(/\s{2,}|\s(?=")/).length >= 2 && !/\s$/.test(l)), 'every field has help');
});

test('example configs in configs/ are valid', () => {
  const root = join(import.meta.dirname, '..', '..', 'configs');
  const files = readdirSync(root).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 2);
  for (const f of files) loadConfig(join(root, f));
});
