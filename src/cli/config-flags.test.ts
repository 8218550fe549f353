// CLI flags are overrides of config keys: with only a model and data, `matpo eval` / `matpo run`
// resolve to the schema's defaults (one context limit, the one `matpo train` uses).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../core/errors.ts';
import { parseConfig, rolloutOptions } from '../train/config.ts';
import { configFlagsHelp, DATA_FLAGS, EVAL_FLAGS, MODEL_FLAGS, resolveConfig, ROLLOUT_FLAGS } from './config-flags.ts';

const FLAGS = [...MODEL_FLAGS, ...DATA_FLAGS, ...ROLLOUT_FLAGS, ...EVAL_FLAGS];

test('model and data only: every other value is the schema default', () => {
  const config = resolveConfig({ model: '/m', world: '/w' }, FLAGS);
  const defaults = parseConfig({});
  assert.deepEqual(config, { ...defaults, model: { ...defaults.model, path: '/m' }, data: { ...defaults.data, world: '/w' } });
  assert.equal(rolloutOptions(config).limits.maxSequenceTokens, defaults.rollout.maxSequenceTokens);
  assert.equal(defaults.rollout.maxSequenceTokens, 4096);
});

test('flags set their keys, imply others, and errors name the flag typed', () => {
  const c = resolveConfig(
    { endpoint: 'http://127.0.0.1:1', 'max-context': '2048', web: true, 'no-progress': true, set: ['rollout.maxTurns=3'] },
    FLAGS,
  );
  assert.equal(c.model.kind, 'endpoint');
  assert.equal(c.rollout.maxSequenceTokens, 2048);
  assert.equal(c.rollout.maxTurns, 3);
  assert.equal(c.tools.web, true);
  assert.equal(c.run.progress, false);
  assert.throws(
    () => resolveConfig({ 'max-context': 'lots' }, FLAGS),
    (e: unknown) => e instanceof ConfigError && e.path === '--max-context',
  );
  assert.throws(
    () => resolveConfig({ set: ['rollout.maxTurns=x'] }, FLAGS),
    (e: unknown) => e instanceof ConfigError && e.path === 'rollout.maxTurns',
  );
});

test('--help lists each flag with the key it sets', () => {
  const help = configFlagsHelp(FLAGS);
  assert.match(help, /--max-context V\s+rollout\.maxSequenceTokens/);
  assert.match(help, /--web\s+tools\.web=true/);
});
