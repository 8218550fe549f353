import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { applyOverride, configHelp, configToYaml, loadConfig, lossConfig, parseConfig } from './config.ts';
import { ConfigError } from '../core/errors.ts';
import type { Datum } from '../core/records.ts';
import { estimatorRegistry, filterZeroVarianceGroups } from '../rl/advantages.ts';
import { creditRegistry } from '../rl/credit.ts';
import { aggregationWeights, computePolicyLoss } from '../rl/losses.ts';
import { testRollout } from '../testing/rollouts.ts';

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
  assert.deepEqual(
    [c.rl.reward.accuracy, c.rl.reward.formatScale, c.rl.reward.formatPlanner, c.rl.reward.formatWorkers],
    [0.9, 0.5, 0.1, 0.1],
  );
  assert.equal(c.optim.learningRate, 1e-5);
});

test('errors name the field path and the file', () => {
  const bad = (text: string, re: RegExp) => {
    const p = file(`c${Math.random()}.yaml`, text);
    assert.throws(
      () => loadConfig(p),
      (e: unknown) => e instanceof ConfigError && re.test(e.message) && e.message.startsWith(p),
    );
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
  const [fields, presets] = configHelp().split('\n\n');
  const keys = ['model.path', 'rl.preset', 'rl.refillRounds', 'rl.reward.noWorkerFormat', 'rl.loss.aggregation', 'optim.microBatchTokens'];
  for (const key of [...keys, 'run.checkpointEvery']) assert.match(fields, new RegExp(`^${key.replace(/\./g, '\\.')}\\s`, 'm'));
  const described = (text: string) => text.split('\n').every((l) => l.trim().split(/\s{2,}|\s(?=")/).length >= 2 && !/\s$/.test(l));
  assert.ok(described(fields), 'every field has help');
  // the presets follow the fields: every one with its paper and what it sets
  assert.ok(described(presets));
  assert.match(fields, /^rl\.loss\.dualClip .*gspo ignores it$/m);
  assert.match(presets, /^ {2}gspo +GSPO \(Zheng et al\. 2025, arXiv 2507\.18071\) +rl\.loss\.name=gspo, /m);
  assert.match(presets, /^ {2}gspo .*, rl\.loss\.aggregation=seq-mean-token-mean, rl\.loss\.unit=sequence$/m);
  assert.match(presets, /^ {2}dapo +DAPO .*rl\.dropZeroVarianceGroups=true, rl\.refillRounds=9, /m);
  assert.match(presets, /^ {2}dapo .*, rl\.loss\.clipHigh=0\.28, rl\.loss\.dualClip=null$/m);
  assert.match(presets, /^ {2}dr-grpo .*rl\.loss\.normTokens=min\(rollout\.maxSequenceTokens, rollout\.maxRolloutTokens\)$/m);
  assert.match(presets, /MATPO variant of GSPO/);
});

test('example configs in configs/ are valid', () => {
  const root = join(import.meta.dirname, '..', '..', 'configs');
  const files = readdirSync(root).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 2);
  for (const f of files) loadConfig(join(root, f));
});

// ---------------------------------------------------------------------------------------------
// Method presets: expansion, explicit fields winning, refused combinations

const quiet = { warn: () => {} };
const parseWarn = (raw: unknown) => {
  const warnings: string[] = [];
  return { config: parseConfig(raw, undefined, { warn: (m) => warnings.push(m) }), warnings };
};

test('presets expand into their fields; explicit fields win and are reported as a variant; the resolved config shows the values', () => {
  const gspo = parseWarn({ rl: { preset: 'gspo' } });
  assert.deepEqual(gspo.warnings, []);
  const l = gspo.config.rl.loss;
  assert.deepEqual(
    [l.name, l.clipLow, l.clipHigh, l.dualClip, l.aggregation, l.unit, l.klCoef],
    ['gspo', 3e-4, 4e-4, null, 'seq-mean-token-mean', 'sequence', 0],
  );
  const saved = YAML.parse(configToYaml(gspo.config));
  assert.equal(saved.rl.preset, 'gspo');
  assert.equal(saved.rl.loss.aggregation, 'seq-mean-token-mean');
  assert.deepEqual(parseWarn(saved), { config: gspo.config, warnings: [] }, 'the saved config re-loads to itself, silently');

  const variant = parseWarn({ rl: { preset: 'gspo', loss: { unit: 'rollout' } } });
  assert.equal(variant.config.rl.loss.unit, 'rollout');
  assert.equal(variant.config.rl.loss.aggregation, 'seq-mean-token-mean');
  assert.deepEqual(variant.warnings, [
    'rl.loss.unit: "rollout" instead of the gspo preset\'s "sequence" makes a variant of GSPO, ' +
      'not GSPO as its paper (Zheng et al. 2025, arXiv 2507.18071) defines it',
  ]);
  // --set overrides are explicit fields too
  const p = file('dapo.yaml', 'rl:\n  preset: dapo\n');
  const warnings: string[] = [];
  const dapo = loadConfig(p, ['rl.loss.dualClip=3'], { warn: (m) => warnings.push(m) });
  const { dropZeroVarianceGroups, refillRounds, loss } = dapo.rl;
  assert.deepEqual([dropZeroVarianceGroups, refillRounds, loss.clipHigh, loss.dualClip], [true, 9, 0.28, 3]);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /^rl\.loss\.dualClip: 3 instead of the dapo preset's null makes a variant of DAPO/);

  assert.equal(parseConfig({ rl: { preset: 'dr-mas' } }).rl.credit, 'agent-wise');
  // matpo (the default) is the base of variants: its fields change silently, except a GSPO ratio
  // under MATPO's weights, which is named for what it is
  assert.deepEqual(parseWarn({ rl: { loss: { clipHigh: 0.28 } } }).warnings, []);
  const gspoRatio = parseWarn({ rl: { loss: { name: 'gspo' } } }).warnings.join();
  assert.match(gspoRatio, /^rl\.loss\.name: gspo with aggregation token-mean, unit rollout is a MATPO variant of GSPO/);
});

test("dr-grpo's constant L is the longest generation of one sequence; an explicit normTokens wins", () => {
  assert.equal(parseConfig({ rl: { preset: 'dr-grpo' } }).rl.loss.normTokens, 4096);
  assert.equal(parseConfig({ rl: { preset: 'dr-grpo' }, rollout: { maxSequenceTokens: 2048 } }).rl.loss.normTokens, 2048);
  assert.equal(parseConfig({ rl: { preset: 'dr-grpo' }, rollout: { maxRolloutTokens: 300 } }).rl.loss.normTokens, 300);
  const w = parseWarn({ rl: { preset: 'dr-grpo', loss: { normTokens: null } } });
  assert.equal(w.config.rl.loss.normTokens, null);
  assert.match(w.warnings.join(), /^rl\.loss\.normTokens: null instead of the dr-grpo preset's 4096 makes a variant of Dr\. GRPO/);
  // re-loading the saved config keeps L (no longer derived, now explicit) without a warning
  const c = parseConfig({ rl: { preset: 'dr-grpo' }, rollout: { maxSequenceTokens: 512 } });
  assert.deepEqual(parseWarn(YAML.parse(configToYaml(c))), { config: c, warnings: [] });
});

test('refused combinations: one line naming the field', () => {
  const refuse = (raw: unknown, re: RegExp) =>
    assert.throws(
      () => parseConfig(raw, undefined, quiet),
      (e: unknown) => e instanceof ConfigError && re.test(e.message) && !e.message.includes('\n'),
    );
  refuse(
    { rl: { preset: 'dapo' }, rollout: { groupSize: 1 } },
    /^rl\.dropZeroVarianceGroups: needs rollout\.groupSize ≥ 2: a group of one always has zero reward variance/,
  );
  refuse(
    {
      rl: { dropZeroVarianceGroups: true },
      rollout: { groupSize: 1 },
    },
    /^rl\.dropZeroVarianceGroups: needs rollout\.groupSize ≥ 2/,
  );
  refuse({ rl: { refillRounds: 2 } }, /^rl\.refillRounds: refills the groups dropped by rl\.dropZeroVarianceGroups, which is false$/);
  refuse({ rl: { preset: 'ppo' } }, /^rl\.preset: unknown preset "ppo"; available: matpo, gspo, dapo, dr-grpo, dr-mas$/);
  // the single-rollout group is fine without the filter
  assert.equal(parseConfig({ rl: { preset: 'gspo' }, rollout: { groupSize: 1 } }).rollout.groupSize, 1);
});

// ---------------------------------------------------------------------------------------------
// Each preset reproduces its paper: hand-computed cases through the resolved config

const near = (a: number | undefined, b: number, tol = 1e-12) => assert.ok(a !== undefined && Math.abs(a - b) <= tol, `${a} vs ${b}`);

/** A datum of `n` trainable tokens (after one prompt token) with advantage A and old logprob 0. */
function seqDatum(id: string, n: number, A: number): Datum {
  const mask = [0, ...Array(n).fill(1)];
  return {
    tokens: mask.map((_, t) => t + 1),
    mask,
    advantages: mask.map((m) => m * A),
    oldLogprobs: mask.map(() => 0),
    questionId: 'q',
    rolloutId: id,
    sequenceId: id,
    role: 'single',
  };
}

function lossOf(config: ReturnType<typeof parseConfig>, datums: Datum[], logprobs: number[][]) {
  const lc = lossConfig(config);
  return computePolicyLoss(lc, aggregationWeights(datums, lc), datums, logprobs);
}

test('gspo preset = GSPO: every sequence weighs 1/2, its tokens share 1/len of it', () => {
  // sequences of 1 and 3 tokens, A = +1 and −1, all ratios 1 (s_i = 1):
  // loss = ½·(−1·1) + ½·(+1·1) = 0; d loss/d logπ_t = ½·(−A_i)·s_i/|y_i| → −1/2 and +1/6 each
  const d = [seqDatum('a', 1, 1), seqDatum('b', 3, -1)];
  const r = lossOf(parseConfig({ rl: { preset: 'gspo' } }), d, [
    [0, 0],
    [0, 0, 0, 0],
  ]);
  near(r.loss, 0);
  assert.deepEqual(Array.from(r.dLogprobs[0]), [0, -0.5]);
  for (const g of r.dLogprobs[1].slice(1)) near(g, 1 / 6, 1e-15);
  // the same ratio under MATPO's token-mean weighs each sequence by its length: −1/4 and +1/4
  const v = lossOf(parseConfig({ rl: { loss: { name: 'gspo' } } }, undefined, quiet), d, [
    [0, 0],
    [0, 0, 0, 0],
  ]);
  near(v.loss, 0.5);
  near(v.dLogprobs[0][1], -0.25);
  near(v.dLogprobs[1][1], 0.25);

  // GSPO's clip range 1 − 3e-4 .. 1 + 4e-4 on the sequence ratio: sequence a (A = +1) at s = 1.001 is
  // clipped (value −1.0004, no gradient); sequence b (A = −1) with Δ = 1e-4, 2e-4, 3e-4 has
  // s = exp(2e-4), inside: value +s, gradient ½·s/3 on each token
  const s = Math.exp(2e-4);
  const c = lossOf(parseConfig({ rl: { preset: 'gspo' } }), d, [
    [0, Math.log(1.001)],
    [0, 1e-4, 2e-4, 3e-4],
  ]);
  near(c.loss, 0.5 * -1.0004 + 0.5 * s);
  assert.equal(c.dLogprobs[0][1], 0);
  for (const g of c.dLogprobs[1].slice(1)) near(g, s / 6);
});

test('dapo preset = DAPO: token-mean over the batch, clip-higher 0.2 / 0.28, no dual clip', () => {
  // five tokens in the batch, w = 1/5 each. Sequence P (A = +1), ratios 1.25 and 1.3; sequence Q
  // (A = −1), ratios 0.75, 0.85, 4.
  //   1.25, A=+1: inside [0.8, 1.28] → −1.25, grad w·(−1)·1.25 = −0.25
  //   1.3,  A=+1: clipped at 1.28    → −1.28, grad 0
  //   0.75, A=−1: clipped at 0.8     →  0.8,  grad 0
  //   0.85, A=−1: inside             →  0.85, grad w·(+1)·0.85 = 0.17
  //   4,    A=−1: no dual clip       →  4,    grad w·4 = 0.8
  // loss = (−1.25 − 1.28 + 0.8 + 0.85 + 4)/5 = 0.624
  const d = [seqDatum('P', 2, 1), seqDatum('Q', 3, -1)];
  const lp = [
    [0, Math.log(1.25), Math.log(1.3)],
    [0, Math.log(0.75), Math.log(0.85), Math.log(4)],
  ];
  const r = lossOf(parseConfig({ rl: { preset: 'dapo' } }), d, lp);
  near(r.loss, 0.624);
  [-0.25, 0].forEach((g, i) => near(r.dLogprobs[0][i + 1], g));
  [0, 0.17, 0.8].forEach((g, i) => near(r.dLogprobs[1][i + 1], g));
  // MATPO's settings on the same batch: 1.25 and 1.3 clipped at 1.2, 4 dual-clipped at 3: (−1.2 − 1.2 + 0.8 + 0.85 + 3)/5
  near(lossOf(parseConfig({}), d, lp).loss, 0.45);
  // advantages: GRPO's, with the std, over groups that survive the filter
  const c = parseConfig({ rl: { preset: 'dapo' } });
  near(estimatorRegistry.get(c.rl.estimator)([1, 0, 0, 0]).advantagesG[0], 0.75 / (0.5 + 1e-6));
  assert.deepEqual(
    filterZeroVarianceGroups([
      [1, 1, 1],
      [0, 1, 0],
      [0, 0, 0],
    ]).kept,
    [1],
  );
});

test('dr-grpo preset = Dr. GRPO: no std, token sums over a constant L, mean over sequences', () => {
  const c = parseConfig({ rl: { preset: 'dr-grpo' }, rollout: { maxSequenceTokens: 8 } });
  // rewards [1, 0, 0, 0]: A = R − mean = [0.75, −0.25, −0.25, −0.25] (GRPO would give 1.5, −0.5, …)
  assert.deepEqual(estimatorRegistry.get(c.rl.estimator)([1, 0, 0, 0]).advantagesG, [0.75, -0.25, -0.25, -0.25]);
  // two sequences of 2 and 4 tokens, A = 0.75 and −0.25, ratios 1; w = 1/(U·L) = 1/(2·8) on every token:
  // loss = (2·(−0.75) + 4·0.25)/16 = −0.03125; gradients −A/16
  const d = [seqDatum('a', 2, 0.75), seqDatum('b', 4, -0.25)];
  const r = lossOf(c, d, [
    [0, 0, 0],
    [0, 0, 0, 0, 0],
  ]);
  near(r.loss, -0.03125);
  near(r.dLogprobs[0][1], -0.75 / 16);
  near(r.dLogprobs[1][1], 0.25 / 16);
  // L is a constant, not the batch's longest sequence: a third sequence of 6 tokens makes w = 1/(3·8)
  const d3 = [...d, seqDatum('c', 6, 0)];
  const w = aggregationWeights(d3, lossConfig(c));
  for (const id of ['a', 'b', 'c']) near(w.get(id), 1 / 24);
});

test('dr-mas preset = Dr. MAS: each role normalised with its own reward statistics per question', () => {
  // one question: r0 (reward 1) spawned one worker, r1 (reward 0) two workers.
  const rollouts = () => [
    testRollout({ id: 'r0', questionId: 'q', index: 0, rootMask: [0, 1], workerMasks: [[0, 1]], reward: 1 }),
    testRollout({
      id: 'r1',
      questionId: 'q',
      index: 1,
      rootMask: [0, 1],
      workerMasks: [
        [0, 1],
        [0, 1, 1],
      ],
      reward: 0,
    }),
  ];
  const credit = (raw: unknown) => {
    const c = parseConfig(raw);
    const options = { estimator: c.rl.estimator, eps: c.rl.eps, dropZeroVarianceGroups: c.rl.dropZeroVarianceGroups };
    return creditRegistry.get(c.rl.credit)(rollouts(), options);
  };
  const mas = credit({ rl: { preset: 'dr-mas' } }).sequenceAdvantages;
  // planners: R = [1, 0], mean ½, std √½ → ±½/(√½ + 1e-6)
  near(mas.get('r0/p'), 0.5 / (Math.SQRT1_2 + 1e-6));
  near(mas.get('r1/p'), -0.5 / (Math.SQRT1_2 + 1e-6));
  // workers carry their parent's reward: [1, 0, 0], mean ⅓, std √⅓ → (⅔, −⅓, −⅓)/(√⅓ + 1e-6)
  const s = Math.sqrt(1 / 3) + 1e-6;
  near(mas.get('r0/w0'), 2 / 3 / s);
  near(mas.get('r1/w0'), -1 / 3 / s);
  near(mas.get('r1/w1'), -1 / 3 / s);
  // MATPO instead gives each worker its planner's advantage
  const matpo = credit({}).sequenceAdvantages;
  assert.equal(matpo.get('r1/w1'), matpo.get('r1/p'));
});
