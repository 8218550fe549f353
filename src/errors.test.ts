import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from './core/registry.ts';
import { UnknownNameError, FileFormatError, ConfigError } from './core/errors.ts';

test('registry: unknown names list the valid ones; duplicates throw', () => {
  const r = new Registry<number>('loss');
  r.register('ppo', 1);
  r.register('gspo', 2);
  assert.equal(r.get('ppo'), 1);
  assert.throws(
    () => r.get('nope'),
    (e: unknown) => e instanceof UnknownNameError && /unknown loss "nope"; available: gspo, ppo/.test(e.message),
  );
  assert.throws(() => r.register('ppo', 3), /already registered/);
});

test('errors name the file, line and field', () => {
  assert.equal(
    new FileFormatError({ file: 'q.jsonl', line: 7, field: 'answer', message: 'missing' }).message,
    'q.jsonl:7: field "answer": missing',
  );
  assert.equal(new ConfigError({ path: 'rl.loss.clipLow', message: 'expected a number' }).message, 'rl.loss.clipLow: expected a number');
});
