// model.kind tinker: what a Tinker-compatible service cannot do is refused at config time, with a
// one-line ConfigError naming the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../core/errors.ts';
import { parseConfig } from './config.ts';

const model = { kind: 'tinker', baseUrl: 'http://127.0.0.1:8000', path: '/models/tiny' };

function refused(raw: unknown, path: string, pattern: RegExp): void {
  assert.throws(
    () => parseConfig(raw),
    (e: Error) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.path, path);
      assert.match(e.message, pattern);
      assert.equal(e.message.split('\n').length, 1);
      return true;
    },
  );
}

test('a valid tinker model section parses with its defaults', () => {
  const c = parseConfig({ model: { ...model, loraRank: 8 } });
  assert.equal(c.model.kind, 'tinker');
  assert.equal(c.model.loraRank, 8);
  assert.equal(c.model.loraUnembed, false);
  assert.equal(c.model.tinkerLoss, 'custom');
  assert.equal(parseConfig({ model: { ...model, tinkerLoss: 'ppo' }, rl: { loss: { dualClip: null } } }).model.tinkerLoss, 'ppo');
});

test('missing service settings name their field', () => {
  refused({ model: { kind: 'tinker', path: '/m' } }, 'model.baseUrl', /is required when model.kind is tinker/);
  refused({ model: { kind: 'tinker', baseUrl: 'not a url', path: '/m' } }, 'model.baseUrl', /not a valid URL/);
  refused({ model: { kind: 'tinker', baseUrl: 'http://h:1' } }, 'model.baseModel', /is required/);
  refused({ model: { kind: 'tinker', baseUrl: 'http://h:1', baseModel: 'Qwen/Qwen3-8B' } }, 'model.tokenizerDir', /serves no tokenizer/);
});

test('the entropy bonus is refused: the service returns no entropies', () => {
  refused({ model, rl: { loss: { entropyCoef: 0.01 } } }, 'rl.loss.entropyCoef', /no per-token entropies/);
  assert.equal(parseConfig({ model: { ...model, kind: 'embedded' }, rl: { loss: { entropyCoef: 0.01 } } }).rl.loss.entropyCoef, 0.01);
});

test('one-pass ppo only for PPO without dual clip or KL, with both clip ranges > 0', () => {
  const m = { ...model, tinkerLoss: 'ppo' };
  refused({ model: m }, 'rl.loss.dualClip', /must be null with model.tinkerLoss ppo/);
  refused({ model: m, rl: { loss: { dualClip: null, klCoef: 0.1 } } }, 'rl.loss.klCoef', /must be 0/);
  refused({ model: m, rl: { loss: { dualClip: null, name: 'gspo' } } }, 'rl.loss.name', /must be ppo, not gspo/);
  refused({ model: m, rl: { loss: { dualClip: null, clipLow: 0 } } }, 'rl.loss.clipLow', /must be > 0/);
  // the custom path takes all of these
  assert.equal(parseConfig({ model, rl: { loss: { name: 'gspo', klCoef: 0.1 } } }).rl.loss.name, 'gspo');
});
