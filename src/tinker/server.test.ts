// `serveTinker` over real HTTP on 127.0.0.1 with a tiny random model on disk and the real engine
// (worker threads): next-token alignment against the in-process engine, each loss's `loss:sum`
// against its formula on the returned logprobs, one cross_entropy step raising the target logprob,
// accumulation across forward_backward calls, seq_id ordering of out-of-order submissions and
// de-duplication of repeats, long-poll try_again and seq gaps, save/load round trips and checkpoint
// listings, sampling sessions (snapshot semantics, stop tokens, prompt logprobs), and errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getKernels } from '../engine/index.ts';
import { presetConfig } from '../model/config.ts';
import { buildLayout, initParams } from '../model/params.ts';
import { loadModelDir, saveModelDir } from '../model/checkpoint.ts';
import { Engine } from '../model/engine.ts';
import { createTestTokenizer } from '../model/tokenizer.ts';
import { serveTinker, type TinkerServer } from './server.ts';

let root: string;
let modelDir: string;
let server: TinkerServer;
let sessionId: string;
let nextModel = 0;
let nextSampler = 0;

type Json = Record<string, any>;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'matpo-tinker-'));
  modelDir = join(root, 'model');
  const tok = await createTestTokenizer(modelDir);
  const cfg = presetConfig('micro', { vocabSize: tok.vocabSize });
  const layout = buildLayout(cfg);
  const w = new Float32Array(layout.total);
  initParams(w, layout, { ...cfg, initializerRange: 0.3 }, 11);
  saveModelDir(modelDir, { config: cfg, layout, weights: w });
  server = await serveTinker({ modelDir, dir: join(root, 'tinker'), port: 0, threads: 1, maxModels: 32 });
  sessionId = (await post(server, 'create_session', { tags: [], user_metadata: {}, sdk_version: 'test', type: 'create_session' })).json
    .session_id;
});

after(async () => {
  await server?.close();
  rmSync(root, { recursive: true, force: true });
});

async function http(
  s: TinkerServer,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${s.url}/api/v1/${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}
const post = (s: TinkerServer, path: string, body: unknown, headers?: Record<string, string>) => http(s, 'POST', path, body, headers);

/** Poll retrieve_future until the outcome arrives (try_again → poll again). */
async function outcome(s: TinkerServer, requestId: string): Promise<Json> {
  for (;;) {
    const r = await post(s, 'retrieve_future', { request_id: requestId, allow_metadata_only: false });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    if (r.json.type !== 'try_again') return r.json;
  }
}

/** POST a future endpoint and wait for its result; fails the test on an `error` result unless `allowError`. */
async function call(path: string, body: unknown, allowError = false): Promise<Json> {
  const r = await post(server, path, body);
  assert.equal(r.status, 200, `${path}: ${JSON.stringify(r.json)}`);
  const out = await outcome(server, r.json.request_id);
  if (!allowError) assert.equal(out.error, undefined, `${path}: ${out.error}`);
  return out;
}

class Client {
  seq = 0;
  constructor(readonly id: string) {}
  static async create(lora: Json | null = { rank: 4, seed: 0, train_unembed: true, train_mlp: true, train_attn: true }): Promise<Client> {
    const r = await call('create_model', {
      session_id: sessionId,
      model_seq_id: nextModel++,
      base_model: modelDir,
      lora_config: lora,
      type: 'create_model',
    });
    return new Client(r.model_id);
  }
  body(extra: Json): Json {
    return { model_id: this.id, seq_id: ++this.seq, ...extra };
  }
  forward(data: Json[], loss = 'cross_entropy', config?: Json) {
    return call('forward', this.body({ forward_input: { data, loss_fn: loss, loss_fn_config: config ?? null } }));
  }
  forwardBackward(data: Json[], loss = 'cross_entropy', config?: Json) {
    return call('forward_backward', this.body({ forward_backward_input: { data, loss_fn: loss, loss_fn_config: config ?? null } }));
  }
  optimStep(lr = 1e-2) {
    return call(
      'optim_step',
      this.body({ adam_params: { learning_rate: lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0 }, type: 'optim_step' }),
    );
  }
}

const ints = (data: number[]) => ({ data, dtype: 'int64', shape: [data.length] });
const floats = (data: number[]) => ({ data, dtype: 'float32', shape: [data.length] });
const input = (tokens: number[]) => ({ chunks: [{ type: 'encoded_text', tokens }] });
/** A next-token datum over `seq`: input seq[:-1], targets seq[1:]. */
function ceDatum(seq: number[], weights?: number[]): Json {
  return {
    model_input: input(seq.slice(0, -1)),
    loss_fn_inputs: { target_tokens: ints(seq.slice(1)), weights: floats(weights ?? seq.slice(1).map(() => 1)) },
  };
}
const lps = (out: Json, i = 0): number[] => out.loss_fn_outputs[i].logprobs.data;
const near = (a: readonly number[], b: ArrayLike<number>, tol = 1e-5, what = '') => {
  assert.equal(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tol, `${what}[${i}]: ${a[i]} vs ${b[i]}`);
};

const SEQ = [11, 12, 13, 14, 15, 16, 30, 31];

// next-token targets give the engine's log π(seq[t+1] | seq[≤t]); other targets equal the engine on the prefix
test('forward: target logprobs equal the engine for shifted and other targets', async () => {
  const c = await Client.create(null);
  const engine = Engine.load(modelDir, getKernels());
  const ref = engine.forward([SEQ]).logprobs[0];
  const out = await c.forward([ceDatum(SEQ, [0, 0, 1, 1, 1, 1, 1])]);
  assert.equal(out.loss_fn_output_type, 'TensorData');
  assert.deepEqual(Object.keys(out.loss_fn_outputs[0]).sort(), ['elementwise_loss', 'logprobs']);
  assert.deepEqual(out.loss_fn_outputs[0].logprobs.shape, [7]);
  near(lps(out), Array.from(ref.subarray(1)), 1e-5, 'logprobs');
  const expect = -lps(out)
    .slice(2)
    .reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(out.metrics['loss:sum'] - expect) < 1e-4, `${out.metrics['loss:sum']} vs ${expect}`);
  // targets that are not the shifted input: position 2 predicts 40 instead of 14
  const odd = await c.forward([{ model_input: input([11, 12, 13, 14]), loss_fn_inputs: { target_tokens: ints([12, 13, 40, 15]) } }]);
  const probe = engine.forward([[11, 12, 13, 40]]).logprobs[0][3];
  near(lps(odd), [ref[1], ref[2], probe, engine.forward([[11, 12, 13, 14, 15]]).logprobs[0][4]], 1e-5, 'probe logprobs');
});

test('every loss: loss:sum and elementwise_loss follow the formula on the returned logprobs (summed, not normalised)', async () => {
  const c = await Client.create();
  const N = SEQ.length - 1;
  const q = Array.from({ length: N }, (_, i) => -5.5 + 0.3 * i);
  const A = Array.from({ length: N }, (_, i) => (i % 3) - 1 + 0.25 * i);
  const rlDatum = {
    model_input: input(SEQ.slice(0, -1)),
    loss_fn_inputs: { target_tokens: ints(SEQ.slice(1)), logprobs: floats(q), advantages: floats(A) },
  };
  const ell = lps(await c.forward([ceDatum(SEQ)]));
  const clip = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));
  const qf = q.map(Math.fround);
  const Af = A.map(Math.fround);
  const terms: Record<string, (l: number, i: number) => number> = {
    importance_sampling: (l, i) => -Math.exp(l - qf[i]) * Af[i],
    ppo: (l, i) => -Math.min(Math.exp(l - qf[i]) * Af[i], clip(Math.exp(l - qf[i]), 0.9, 1.1) * Af[i]),
    cispo: (l, i) => -clip(Math.exp(l - qf[i]), 0, 4) * l * Af[i],
    dro: (l, i) => -(l * Af[i] - 0.5 * 0.5 * (l - qf[i]) ** 2),
  };
  const configs: Record<string, Json> = { ppo: { clip_low_threshold: 0.9, clip_high_threshold: 1.1 }, dro: { beta: 0.5 } };
  for (const [name, term] of Object.entries(terms)) {
    const out = await c.forward([rlDatum, rlDatum], name, configs[name]);
    const per = ell.map(term);
    const expect = 2 * per.reduce((a, b) => a + b, 0);
    assert.ok(
      Math.abs(out.metrics['loss:sum'] - expect) < 1e-4 * Math.max(1, Math.abs(expect)),
      `${name}: ${out.metrics['loss:sum']} vs ${expect}`,
    );
    near(out.loss_fn_outputs[1].elementwise_loss.data, per, 1e-4, `${name} elementwise`);
    near(lps(out, 1), ell, 1e-6, `${name} logprobs`);
  }
});

test('forward_backward + optim_step: one cross_entropy step raises the target logprobs; forward alone changes nothing', async () => {
  const c = await Client.create();
  const before = lps(await c.forward([ceDatum(SEQ)]));
  const again = lps(await c.forward([ceDatum(SEQ)]));
  near(again, before, 0, 'forward is pure');
  const fb = await c.forwardBackward([ceDatum(SEQ)]);
  near(lps(fb), before, 1e-6, 'forward_backward logprobs');
  const step = await c.optimStep(1e-2);
  assert.ok(step.metrics['grad_norm:mean'] > 0);
  const after = lps(await c.forward([ceDatum(SEQ)]));
  const sum = (x: number[]) => x.reduce((a, b) => a + b, 0);
  assert.ok(sum(after) > sum(before) + 0.1, `Σℓ ${sum(before)} → ${sum(after)}`);
});

test('gradients accumulate: two forward_backward calls then optim_step give the weights of one call with both datums', async () => {
  const a = await Client.create();
  const b = await Client.create();
  const d1 = ceDatum(SEQ, [0, 1, 1, 1, 0.5, 1, 1]);
  const d2 = {
    model_input: input([20, 21, 22, 23]),
    loss_fn_inputs: { target_tokens: ints([21, 22, 23, 24]), logprobs: floats([-6, -6, -6, -6]), advantages: floats([1, -0.5, 2, 1]) },
  };
  const d2ce = {
    model_input: d2.model_input,
    loss_fn_inputs: { target_tokens: d2.loss_fn_inputs.target_tokens, weights: floats([1, -0.5, 2, 1]) },
  };
  const a1 = await a.forwardBackward([d1]);
  const a2 = await a.forwardBackward([d2ce]);
  const both = await b.forwardBackward([d1, d2ce]);
  assert.ok(Math.abs(a1.metrics['loss:sum'] + a2.metrics['loss:sum'] - both.metrics['loss:sum']) < 1e-4);
  const sa = await a.optimStep(5e-3);
  const sb = await b.optimStep(5e-3);
  assert.ok(Math.abs(sa.metrics['grad_norm:mean'] - sb.metrics['grad_norm:mean']) < 1e-4 * sb.metrics['grad_norm:mean']);
  const fa = await a.forward([d1, d2ce]);
  const fbb = await b.forward([d1, d2ce]);
  near(lps(fa), lps(fbb), 1e-5, 'datum 0 after step');
  near(lps(fa, 1), lps(fbb, 1), 1e-5, 'datum 1 after step');
  const fresh = await Client.create();
  const f0 = lps(await fresh.forward([d1]));
  assert.ok(Math.abs(f0[3] - lps(fa)[3]) > 1e-3, 'the step changed the weights');
});

// a repeat with the same body is the same future; another body under the same seq_id is refused
test('seq_id: requests submitted out of order run in seq_id order; repeats are de-duplicated', async () => {
  const inOrder = await Client.create();
  await inOrder.forwardBackward([ceDatum(SEQ)]);
  await inOrder.optimStep(1e-2);
  const expected = lps(await inOrder.forward([ceDatum(SEQ)]));

  const c = await Client.create();
  const fb = { model_id: c.id, seq_id: 1, forward_backward_input: { data: [ceDatum(SEQ)], loss_fn: 'cross_entropy' } };
  const step = { model_id: c.id, seq_id: 2, adam_params: { learning_rate: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0 } };
  const fwd = { model_id: c.id, seq_id: 3, forward_input: { data: [ceDatum(SEQ)], loss_fn: 'cross_entropy' } };
  const r3 = await post(server, 'forward', fwd);
  const r2 = await post(server, 'optim_step', step);
  await new Promise((r) => setTimeout(r, 100));
  const r1 = await post(server, 'forward_backward', fb);
  const again = await post(server, 'forward_backward', fb);
  assert.equal(again.json.request_id, r1.json.request_id);
  const other = await post(server, 'forward_backward', {
    ...fb,
    forward_backward_input: { data: [ceDatum([1, 2, 3])], loss_fn: 'cross_entropy' },
  });
  assert.equal(other.status, 400);
  assert.match(other.json.detail, /^seq_id: seq_id 1 of model .* was already used for a different request body$/);
  const [o3, o2, o1] = [
    await outcome(server, r3.json.request_id),
    await outcome(server, r2.json.request_id),
    await outcome(server, r1.json.request_id),
  ];
  assert.equal(o1.error, undefined);
  assert.equal(o2.type, 'optim_step');
  near(lps(o3), expected, 1e-6, 'forward after fb + step, run in seq order');
});

// a seq_id that never arrives fails the requests behind it, naming it; silent sessions lose their clients
test('retrieve_future long-polls, then answers try_again; seq gaps time out; idle clients are reclaimed', async () => {
  const s = await serveTinker({
    modelDir,
    dir: join(root, 'tinker-gap'),
    port: 0,
    threads: 1,
    longPollMs: 150,
    gapTimeoutMs: 600,
    sessionTimeoutMs: 700,
  });
  try {
    const sid = (await post(s, 'create_session', {})).json.session_id;
    const cm = await post(s, 'create_model', { session_id: sid, model_seq_id: 0, base_model: modelDir, lora_config: { rank: 2 } });
    const modelId = (await outcome(s, cm.json.request_id)).model_id;
    const r = await post(s, 'forward', { model_id: modelId, seq_id: 2, forward_input: { data: [ceDatum(SEQ)], loss_fn: 'cross_entropy' } });
    const t0 = Date.now();
    const first = await post(s, 'retrieve_future', { request_id: r.json.request_id, allow_metadata_only: true });
    assert.ok(Date.now() - t0 >= 140, `held before try_again: ${Date.now() - t0} ms, ${JSON.stringify(first.json)}`);
    assert.deepEqual(first.json, { type: 'try_again', request_id: r.json.request_id, queue_state: 'active' });
    const out = await outcome(s, r.json.request_id);
    assert.equal(out.category, 'user');
    assert.match(out.error, /^seq_id 1 of model .* never arrived within 1 s; seq_id 2 waited behind it and did not run$/);
    // the queue moved on: seq 3 runs
    const r3 = await post(s, 'forward', {
      model_id: modelId,
      seq_id: 3,
      forward_input: { data: [ceDatum(SEQ)], loss_fn: 'cross_entropy' },
    });
    assert.equal(lps(await outcome(s, r3.json.request_id)).length, SEQ.length - 1);
    // a session that sends heartbeats keeps its client; one that stops loses it after sessionTimeoutMs
    await post(s, 'session_heartbeat', { session_id: sid });
    const late = await post(s, 'forward', {
      model_id: modelId,
      seq_id: 1,
      forward_input: { data: [ceDatum(SEQ)], loss_fn: 'cross_entropy' },
    });
    assert.equal(late.status, 400);
    assert.match(late.json.detail, /^seq_id: 1 of model .* comes too late: the queue is at 4$/);
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 250));
      assert.equal((await post(s, 'session_heartbeat', { session_id: sid })).status, 200);
    }
    assert.equal((await post(s, 'get_info', { model_id: modelId })).status, 200, 'kept alive by heartbeats');
    await new Promise((r) => setTimeout(r, 2500));
    const gone = await post(s, 'get_info', { model_id: modelId });
    assert.deepEqual([gone.status, gone.json.detail], [404, `model_id: unknown or unloaded model "${modelId}"`]);
  } finally {
    await s.close();
  }
});

// also: a new client from the saved state, checkpoint listing and deletion, weights_info, get_info
test('save_weights / load_weights round trip, optimizer state included', async () => {
  const c = await Client.create({ rank: 4, seed: 3, train_unembed: false, train_mlp: true, train_attn: true });
  await c.forwardBackward([ceDatum(SEQ)]);
  await c.optimStep(1e-2);
  const saved = await call('save_weights', c.body({ path: 'step1', overwrite: false, type: 'save_weights' }));
  assert.equal(saved.path, `tinker://${c.id}/weights/step1`);
  const f1 = lps(await c.forward([ceDatum(SEQ)]));
  // continue: one more step from the saved state, remembered to compare after the reload
  await c.forwardBackward([ceDatum(SEQ)]);
  await c.optimStep(1e-2);
  const f2 = lps(await c.forward([ceDatum(SEQ)]));
  assert.ok(Math.abs(f2[0] - f1[0]) > 1e-4);
  await call('load_weights', c.body({ path: saved.path, optimizer: true, type: 'load_weights' }));
  near(lps(await c.forward([ceDatum(SEQ)])), f1, 1e-6, 'weights reloaded');
  await c.forwardBackward([ceDatum(SEQ)]);
  await c.optimStep(1e-2);
  near(lps(await c.forward([ceDatum(SEQ)])), f2, 1e-5, 'the same step again: optimizer state restored');

  const dup = await call('save_weights', c.body({ path: 'step1', overwrite: false }), true);
  assert.deepEqual(dup, { error: `path: checkpoint ${saved.path} already exists (pass overwrite to replace it)`, category: 'user' });
  const info = await post(server, 'weights_info', { tinker_path: saved.path });
  assert.deepEqual(info.json, {
    base_model: modelDir,
    is_lora: true,
    lora_rank: 4,
    train_unembed: false,
    train_mlp: true,
    train_attn: true,
  });
  const gi = await post(server, 'get_info', { model_id: c.id, type: 'get_info' });
  assert.equal(gi.json.model_id, c.id);
  assert.equal(gi.json.lora_rank, 4);
  assert.equal(gi.json.model_data.model_name, modelDir);

  const fromState = await Client.create({ rank: 4, seed: 0, train_unembed: false, train_mlp: true, train_attn: true });
  await call('load_weights', fromState.body({ path: saved.path, optimizer: false }));
  near(lps(await fromState.forward([ceDatum(SEQ)])), f1, 1e-6, 'a new client loaded from the state');
  const wrongRank = await Client.create({ rank: 8 });
  const bad = await call('load_weights', wrongRank.body({ path: saved.path, optimizer: false }), true);
  assert.equal(bad.error, `path: ${saved.path} has LoRA rank 4, this model has 8`);
  const otherModules = await Client.create({ rank: 4, train_unembed: true });
  const bad2 = await call('load_weights', otherModules.body({ path: saved.path, optimizer: false }), true);
  assert.equal(
    bad2.error,
    `path: ${saved.path} adapts other modules (attn true, mlp true, unembed false) than this model (attn true, mlp true, unembed true)`,
  );

  await call('save_weights_for_sampler', c.body({ path: 'eval', type: 'save_weights_for_sampler' }));
  const list = await http(server, 'GET', `training_runs/${c.id}/checkpoints`);
  assert.deepEqual(
    list.json.checkpoints.map((k: Json) => [k.checkpoint_id, k.checkpoint_type, k.tinker_path]),
    [
      ['weights/step1', 'training', saved.path],
      ['sampler_weights/eval', 'sampler', `tinker://${c.id}/sampler_weights/eval`],
    ],
  );
  assert.ok(list.json.checkpoints.every((k: Json) => k.size_bytes > 0 && !Number.isNaN(Date.parse(k.time))));
  const run = await http(server, 'GET', `training_runs/${c.id}`);
  assert.equal(run.json.training_run_id, c.id);
  assert.equal(run.json.is_lora, true);
  const del = await http(server, 'DELETE', `training_runs/${c.id}/checkpoints/sampler_weights/eval`);
  assert.equal(del.status, 204);
  assert.equal((await http(server, 'GET', `training_runs/${c.id}/checkpoints`)).json.checkpoints.length, 1);
});

// also: sampled logprobs, stop tokens, prompt logprobs, base-model sessions, released ephemeral sessions
test('sampling: an ephemeral sampler keeps its snapshot after the client trains on', async () => {
  const c = await Client.create();
  await c.forwardBackward([ceDatum(SEQ)]);
  await c.optimStep(2e-2);
  const samplerSeq = nextSampler++;
  const snap = await call('save_weights_for_sampler', c.body({ sampling_session_seq_id: samplerSeq, type: 'save_weights_for_sampler' }));
  const sid = snap.sampling_session_id;
  assert.equal(typeof sid, 'string');
  const prompt = [1, 2, 3, 11];
  const ask = (extra: Json = {}, seq = 0) =>
    call('asample', {
      sampling_session_id: sid,
      seq_id: seq,
      num_samples: 2,
      prompt: input(prompt),
      prompt_logprobs: true,
      type: 'sample',
      sampling_params: { max_tokens: 6, seed: 5, temperature: 1, top_k: -1, top_p: 1, ...extra },
    });
  const s1 = await ask();
  assert.equal(s1.type, 'sample');
  assert.equal(s1.sequences.length, 2);
  for (const sq of s1.sequences) {
    assert.equal(sq.tokens.length, sq.logprobs.length);
    assert.ok(sq.stop_reason === 'length' || sq.stop_reason === 'stop');
    // the sampled logprobs are the training client's (same weights) logprobs of those tokens
    const seq = [...prompt, ...sq.tokens];
    near(lps(await c.forward([ceDatum(seq)])).slice(prompt.length - 1), sq.logprobs, 1e-4, 'sampled logprobs');
  }
  assert.equal(s1.prompt_logprobs[0], null);
  near(s1.prompt_logprobs.slice(1), lps(await c.forward([ceDatum(prompt)])), 1e-5, 'prompt logprobs');
  // the same seq_id and body is the same future
  assert.deepEqual(await ask(), s1);

  // train on: the sampler still samples the snapshot (same seed → same tokens), now from disk
  await c.forwardBackward([ceDatum([1, 2, 3, 11, 40, 41, 42, 43])]);
  await c.optimStep(5e-2);
  const s2 = await ask({}, 1);
  // (from disk a LoRA client's snapshot is the merged model: the same function, rounded differently)
  assert.deepEqual(
    s2.sequences.map((q: Json) => q.tokens),
    s1.sequences.map((q: Json) => q.tokens),
  );
  s2.sequences.forEach((q: Json, i: number) => near(q.logprobs, s1.sequences[i].logprobs, 1e-4, 'snapshot logprobs'));
  // a stop token id ends the sequence with stop_reason "stop", the stop token included
  const first = s1.sequences[0].tokens[0];
  const s3 = await ask({ stop: [first], seed: 5 }, 2);
  assert.deepEqual(s3.sequences[0].tokens, [first]);
  assert.equal(s3.sequences[0].stop_reason, 'stop');
  // a base-model session samples other weights; GET samplers/{id} describes sessions
  const base = await post(server, 'create_sampling_session', {
    session_id: sessionId,
    sampling_session_seq_id: nextSampler++,
    base_model: modelDir,
    type: 'create_sampling_session',
  });
  const b = await call('asample', {
    sampling_session_id: base.json.sampling_session_id,
    num_samples: 1,
    prompt: input(prompt),
    sampling_params: { max_tokens: 6, seed: 5 },
  });
  assert.notDeepEqual(b.sequences[0].logprobs, s1.sequences[0].logprobs);
  const desc = await http(server, 'GET', `samplers/${encodeURIComponent(base.json.sampling_session_id)}`);
  assert.deepEqual(desc.json, { sampler_id: base.json.sampling_session_id, base_model: modelDir });
  // the client keeps its last 4 ephemeral samplers: after 4 more, the first one is released
  for (let i = 0; i < 4; i++) await call('save_weights_for_sampler', c.body({ sampling_session_seq_id: nextSampler++ }));
  const gone = await call('asample', { sampling_session_id: sid, prompt: input(prompt), sampling_params: { max_tokens: 2 } }, true);
  assert.equal(gone.category, 'user');
  assert.match(
    gone.error,
    /^sampling_session_id: the weights of sampling session .* were released \(each training client keeps its last 4 ephemeral samplers\)/,
  );
});

// failed futures are {error, category} and leave no hole in the seq order
test('errors: bad requests are 4xx {detail} naming the field; bad bodies fail their future', async () => {
  const c = await Client.create();
  const badLoss = await call('forward_backward', c.body({ forward_backward_input: { data: [ceDatum(SEQ)], loss_fn: 'ppo2' } }), true);
  assert.deepEqual(badLoss, {
    error: 'forward_backward_input.loss_fn: unknown loss "ppo2"; available: cross_entropy, importance_sampling, ppo, cispo, dro',
    category: 'user',
  });
  const badShape = await call(
    'forward',
    c.body({
      forward_input: {
        data: [{ model_input: input([1, 2, 3]), loss_fn_inputs: { target_tokens: ints([2, 3]) } }],
        loss_fn: 'cross_entropy',
      },
    }),
    true,
  );
  assert.deepEqual(badShape, {
    error: 'forward_input.data[0].loss_fn_inputs.target_tokens: first dimension 2 must equal the model input length 3',
    category: 'user',
  });
  assert.equal(lps(await c.forward([ceDatum(SEQ)])).length, SEQ.length - 1, 'the next seq_id still runs');
  const negative = await call('optim_step', c.body({ adam_params: { learning_rate: -1 } }), true);
  assert.deepEqual(negative, { error: 'adam_params.learning_rate: Too small: expected number to be >=0', category: 'user' });

  const cases: [string, string, unknown, number, string | RegExp][] = [
    ['POST', 'forward', { model_id: 'nope', seq_id: 1, forward_input: {} }, 404, 'model_id: unknown or unloaded model "nope"'],
    ['POST', 'forward', { model_id: c.id, forward_input: {} }, 400, 'seq_id: Invalid input: expected number, received undefined'],
    ['POST', 'forward', '{not json', 400, 'request body is not valid JSON'],
    [
      'POST',
      'create_model',
      { session_id: 'nope', model_seq_id: 0, base_model: modelDir },
      404,
      'session_id: unknown session "nope" (create one with create_session)',
    ],
    [
      'POST',
      'create_model',
      { session_id: sessionId, model_seq_id: 999, base_model: 'Qwen/Qwen3-8B' },
      400,
      `base_model: unknown base model "Qwen/Qwen3-8B"; this server serves "${modelDir}"`,
    ],
    ['POST', 'retrieve_future', { request_id: 'r-1' }, 404, 'request_id: unknown request id "r-1" (never issued, or expired)'],
    [
      'POST',
      'asample',
      { sampling_session_id: 'nope', prompt: input([1]), sampling_params: {} },
      404,
      'sampling_session_id: unknown sampling session "nope"',
    ],
    ['POST', 'weights_info', { tinker_path: 'tinker://x/weights' }, 400, /^tinker_path: expected tinker:\/\/<model_id>\/weights\/<name>/],
    ['GET', 'training_runs/nope/checkpoints', undefined, 404, 'training run "nope" not found'],
    ['GET', 'no_such_endpoint', undefined, 404, 'no route GET /api/v1/no_such_endpoint'],
  ];
  for (const [method, path, body, status, detail] of cases) {
    const r = await http(server, method, path, body);
    assert.equal(r.status, status, `${path}: ${JSON.stringify(r.json)}`);
    if (typeof detail === 'string') assert.equal(r.json.detail, detail);
    else assert.match(r.json.detail, detail);
  }
  // unload_model: the client is gone afterwards
  const u = await call('unload_model', { model_id: c.id, type: 'unload_model' });
  assert.deepEqual(u, { type: 'unload_model', model_id: c.id });
  assert.equal((await post(server, 'forward', c.body({ forward_input: { data: [ceDatum(SEQ)], loss_fn: 'cross_entropy' } }))).status, 404);
  const sampleErr = await call(
    'asample',
    { base_model: modelDir, prompt: input([1, 2]), sampling_params: { max_tokens: 2, stop: [5000] } },
    true,
  );
  assert.deepEqual(sampleErr, { error: 'sampling_params.stop[0]: token id 5000 is outside the vocabulary [0, 422)', category: 'user' });
});

// with an API key, X-API-Key or a Bearer token must carry it
test('client/config answers explicit false flags; capabilities list the model; the API key is checked', async () => {
  const cfg = await post(server, 'client/config', { sdk_version: '0.21.0' });
  assert.equal(cfg.json.pjwt_auth_enabled, false);
  assert.equal(cfg.json.proto_write_fwdbwd, false);
  assert.equal(cfg.json.use_pyqwest_transport, false);
  const caps = await http(server, 'GET', 'get_server_capabilities');
  assert.deepEqual(caps.json, { supported_models: [{ model_name: modelDir, max_context_length: 1024 }] });
  assert.deepEqual((await post(server, 'telemetry', { events: [] })).json, { status: 'accepted' });
  assert.equal((await post(server, 'session_heartbeat', { session_id: sessionId, type: 'session_heartbeat' })).status, 200);
  const s = await serveTinker({ modelDir, dir: join(root, 'tinker-key'), port: 0, threads: 1, apiKey: 'tml-secret' });
  try {
    const none = await post(s, 'create_session', {});
    assert.deepEqual([none.status, none.json.detail], [401, 'missing or wrong API key (send X-API-Key)']);
    assert.equal((await post(s, 'create_session', {}, { 'X-API-Key': 'tml-wrong' })).status, 401);
    assert.equal((await post(s, 'create_session', {}, { 'X-API-Key': 'tml-secret' })).status, 200);
    assert.equal((await post(s, 'create_session', {}, { Authorization: 'Bearer tml-secret' })).status, 200);
  } finally {
    await s.close();
  }
});

// LoRA clients train only their adapters: the training state is a PEFT adapter, and the merged
// sampler weights differ from the base only in the adapted modules; a full client changes the rest too.
test('LoRA clients train adapters only (PEFT training state, merged sampler weights); full clients train every weight', async () => {
  const base = loadModelDir(modelDir);
  const changed = (dir: string) => {
    const m = loadModelDir(dir);
    return m.layout.tensors
      .filter((t) => t.name.endsWith('.weight'))
      .filter((t) => {
        const a = m.weights.subarray(t.offset, t.offset + t.size);
        const b = base.weights.subarray(t.offset, t.offset + t.size);
        return a.some((v, i) => v !== b[i]);
      })
      .map((t) => t.name.replace(/^model\.layers\.\d+\./, '').replace(/\.weight$/, ''));
  };
  const train = async (c: Client, name: string) => {
    await c.forwardBackward([ceDatum(SEQ)]);
    await c.optimStep(1e-2);
    await call('save_weights', c.body({ path: name, overwrite: true }));
    await call('save_weights_for_sampler', c.body({ path: name }));
  };
  const lora = await Client.create({ rank: 4, seed: 1, train_attn: true, train_mlp: false, train_unembed: false });
  await train(lora, 'lora');
  const state = join(root, 'tinker', 'runs', lora.id, 'weights', 'lora');
  const adapterConfig = JSON.parse(readFileSync(join(state, 'adapter_config.json'), 'utf8'));
  assert.equal(adapterConfig.r, 4);
  assert.equal(adapterConfig.lora_alpha, 32);
  assert.deepEqual([...adapterConfig.target_modules].sort(), ['k_proj', 'o_proj', 'q_proj', 'v_proj']);
  assert.ok(existsSync(join(state, 'adapter_model.safetensors')) && !existsSync(join(state, 'model.safetensors')));
  const loraChanged = new Set(changed(join(root, 'tinker', 'runs', lora.id, 'sampler_weights', 'lora')));
  assert.deepEqual([...loraChanged].sort(), ['self_attn.k_proj', 'self_attn.o_proj', 'self_attn.q_proj', 'self_attn.v_proj']);

  const full = await Client.create(null);
  await train(full, 'full');
  const fullChanged = new Set(changed(join(root, 'tinker', 'runs', full.id, 'sampler_weights', 'full')));
  for (const name of ['mlp.down_proj', 'model.embed_tokens', 'self_attn.q_proj']) assert.ok(fullChanged.has(name), name);
});
