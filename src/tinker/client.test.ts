/**
 * TinkerClient's protocol behaviours against a small scripted HTTP server on 127.0.0.1.
 *
 * Why scripted: these are the answers a real service gives only under load or failure — try_again
 * after a long poll, 408/5xx/429 sequences, dropped connections, `{error, category}` results,
 * futures completing out of order — which `matpo serve --tinker` cannot be made to produce on
 * demand. The server here speaks the same JSON (TINKER.md §2–4) over real HTTP, and each test
 * scripts the one behaviour it checks. End-to-end runs against the real server are in
 * policy-e2e.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { EndpointError } from '../core/errors.ts';
import type { Datum } from '../core/records.ts';
import { TinkerClient, chunkDatums, mergeMetrics, type WireDatum } from './client.ts';
import { TinkerPolicy, toWireDatum } from './policy.ts';

interface Seen {
  path: string;
  body: Record<string, unknown>;
  raw: string;
  headers: http.IncomingHttpHeaders;
}
type Answer = { status?: number; body?: unknown; headers?: Record<string, string> } | 'destroy';
type Handler = (req: Seen, all: Seen[]) => Answer | Promise<Answer>;

async function scripted(handler: Handler): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      const path = (req.url ?? '').replace(/^\/api\/v1\//, '');
      const s: Seen = { path, raw, body: raw ? (JSON.parse(raw) as Record<string, unknown>) : {}, headers: req.headers };
      seen.push(s);
      void Promise.resolve(handler(s, seen)).then((a) => {
        if (a === 'destroy') return req.socket.destroy();
        res.writeHead(a.status ?? 200, { 'content-type': 'application/json', ...a.headers });
        res.end(a.body === undefined ? '' : JSON.stringify(a.body));
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Answers the session calls; `rest` handles everything else. */
function withSession(rest: Handler): Handler {
  return (req, all) => {
    if (req.path === 'client/config') return { status: 404, body: { detail: 'no such route' } };
    if (req.path === 'create_session') return { body: { session_id: 'sess-1', type: 'create_session' } };
    if (req.path === 'session_heartbeat') return { body: { type: 'session_heartbeat' } };
    if (req.path === 'create_model') return { body: { request_id: 'cm', model_id: 'm1' } };
    if (req.path === 'retrieve_future' && req.body.request_id === 'cm') return { body: { model_id: 'm1', type: 'create_model' } };
    return rest(req, all);
  };
}

const fast = { backoffMs: 5, maxBackoffMs: 20, pollBackoffMs: 5, maxPollBackoffMs: 20, retryBudgetMs: 5000, log: () => {} };

test('session: client/config 404 tolerated, X-API-Key from TINKER_API_KEY, Accept JSON, heartbeats, none after close', async () => {
  const srv = await scripted(withSession(() => ({ status: 500 })));
  const saved = process.env.TINKER_API_KEY;
  process.env.TINKER_API_KEY = 'tml-from-env';
  try {
    const c = await TinkerClient.connect({ baseUrl: `${srv.url}/api/v1/`, heartbeatMs: 30, ...fast });
    assert.equal(c.sessionId, 'sess-1');
    await new Promise((r) => setTimeout(r, 130));
    await c.close(); // lets a heartbeat in flight finish
    const beats = srv.seen.filter((s) => s.path === 'session_heartbeat').length;
    assert.ok(beats >= 2, `expected ≥ 2 heartbeats, saw ${beats}`);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(srv.seen.filter((s) => s.path === 'session_heartbeat').length, beats, 'no heartbeat after close');
    for (const s of srv.seen) {
      assert.equal(s.headers['x-api-key'], 'tml-from-env');
      assert.equal(s.headers.accept, 'application/json');
    }
    assert.deepEqual(
      srv.seen.slice(0, 2).map((s) => s.path),
      ['client/config', 'create_session'],
    );
    assert.equal(srv.seen[1].body.type, 'create_session');
    assert.equal(srv.seen.find((s) => s.path === 'session_heartbeat')!.body.session_id, 'sess-1');
  } finally {
    if (saved === undefined) delete process.env.TINKER_API_KEY;
    else process.env.TINKER_API_KEY = saved;
    await srv.close();
  }
});

test('create_model sends the LoRA config (rank, seed, train_*) or none for full training', async () => {
  const srv = await scripted(withSession(() => ({ status: 500 })));
  try {
    const c = await TinkerClient.connect({ baseUrl: srv.url, apiKey: 'k', ...fast });
    const m = await c.createModel('base', { rank: 4, seed: 7, trainAttn: true, trainMlp: false, trainUnembed: true });
    await c.createModel('base', null);
    await c.close();
    assert.equal(m.modelId, 'm1');
    const bodies = srv.seen.filter((s) => s.path === 'create_model').map((s) => s.body);
    assert.deepEqual(bodies[0].lora_config, { rank: 4, seed: 7, train_unembed: true, train_mlp: false, train_attn: true });
    assert.equal(bodies[0].model_seq_id, 0);
    assert.equal(bodies[1].lora_config, undefined);
    assert.equal(bodies[1].model_seq_id, 1);
    assert.equal(bodies[0].session_id, 'sess-1');
  } finally {
    await srv.close();
  }
});

test('retrieve_future: try_again, 408 and 503 re-poll at once, 429 and a dropped connection back off, then the result', async () => {
  const script: Answer[] = [
    { body: { type: 'try_again', request_id: 'r1', queue_state: 'active' } },
    { status: 408, body: { queue_state: 'active' } },
    { status: 503, body: { detail: 'busy' } },
    { status: 429, body: { detail: 'slow down' } },
    'destroy',
    { body: { metrics: { 'grad_norm:mean': 1.5 } } },
  ];
  const srv = await scripted(
    withSession((req) => {
      if (req.path === 'optim_step') return { body: { request_id: 'r1' } };
      if (req.path === 'retrieve_future') return script.shift()!;
      return { status: 500 };
    }),
  );
  try {
    const c = await TinkerClient.connect({ baseUrl: srv.url, ...fast });
    const m = await c.createModel('base', null);
    const metrics = await m.optimStep({ learning_rate: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0, grad_clip_norm: 1 });
    await c.close();
    assert.deepEqual(metrics, { 'grad_norm:mean': 1.5 });
    const polls = srv.seen.filter((s) => s.path === 'retrieve_future' && s.body.request_id === 'r1');
    assert.equal(polls.length, 6);
    assert.deepEqual(
      polls.map((p) => p.headers['x-tinker-request-iteration']),
      ['0', '1', '2', '3', '4', '5'],
    );
    assert.ok(polls.every((p) => p.headers['x-tinker-request-type'] === 'OptimStep'));
    const opt = srv.seen.find((s) => s.path === 'optim_step')!.body;
    assert.equal(opt.seq_id, 1);
    assert.deepEqual(opt.adam_params, { learning_rate: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0, grad_clip_norm: 1 });
  } finally {
    await srv.close();
  }
});

test('an {error, category} result stops polling with an EndpointError naming the request type; other 4xx are fatal', async () => {
  const srv = await scripted(
    withSession((req) => {
      if (req.path === 'forward_backward') return { body: { request_id: 'bad' } };
      if (req.path === 'forward') return { status: 422, body: { detail: 'forward_input.loss_fn: unknown loss' } };
      if (req.path === 'retrieve_future') return { body: { error: 'data[0].loss_fn_inputs.weights: expected 3 values', category: 'user' } };
      return { status: 500 };
    }),
  );
  try {
    const c = await TinkerClient.connect({ baseUrl: srv.url, ...fast });
    const m = await c.createModel('base', null);
    const d = toWireDatum([1, 2, 3, 4], { weights: [0, 1, 1, 1] });
    await assert.rejects(m.forwardBackward([d], 'cross_entropy'), (e: Error) => {
      assert.ok(e instanceof EndpointError);
      assert.match(
        e.message,
        /ForwardBackward \(request bad\): failed \(user error\): data\[0\]\.loss_fn_inputs\.weights: expected 3 values/,
      );
      return true;
    });
    await assert.rejects(m.forward([d]), /HTTP 422: forward \(Forward\): forward_input\.loss_fn: unknown loss/);
    await c.close();
    assert.equal(srv.seen.filter((s) => s.path === 'retrieve_future' && s.body.request_id === 'bad').length, 1);
    assert.equal(srv.seen.filter((s) => s.path === 'forward').length, 1, 'a 422 is not retried');
  } finally {
    await srv.close();
  }
});

test('initial POSTs are retried on 503/429/dropped connections with the same seq_id and a byte-identical body', async () => {
  let fails = 0;
  const srv = await scripted(
    withSession((req) => {
      if (req.path === 'forward_backward') {
        fails++;
        if (fails === 1) return { status: 503, body: { detail: 'restarting' } };
        if (fails === 2) return 'destroy';
        if (fails === 3) return { status: 429, headers: { 'retry-after-ms': '10' } };
        return { body: { request_id: 'fb' } };
      }
      if (req.path === 'retrieve_future')
        return { body: { loss_fn_outputs: [{ logprobs: { data: [-1, -2, -3], dtype: 'float32' } }], metrics: { 'loss:sum': 2 } } };
      return { status: 500 };
    }),
  );
  try {
    const c = await TinkerClient.connect({ baseUrl: srv.url, ...fast });
    const m = await c.createModel('base', null);
    const out = await m.forwardBackward([toWireDatum([5, 6, 7, 8], { weights: [0, 0.5, 0.25, 1] })], 'cross_entropy');
    await c.close();
    assert.deepEqual(out.metrics, { 'loss:sum': 2 });
    const posts = srv.seen.filter((s) => s.path === 'forward_backward');
    assert.equal(posts.length, 4);
    assert.ok(
      posts.every((p) => p.raw === posts[0].raw),
      'identical bodies',
    );
    assert.equal(posts[0].body.seq_id, 1);
    const input = (posts[0].body.forward_backward_input as { data: WireDatum[] }).data[0];
    assert.deepEqual(input.model_input.chunks[0].tokens, [5, 6, 7]);
    assert.deepEqual(input.loss_fn_inputs.target_tokens, { data: [6, 7, 8], dtype: 'int64', shape: [3] });
    assert.deepEqual(input.loss_fn_inputs.weights, { data: [0.5, 0.25, 1], dtype: 'float32', shape: [3] });
  } finally {
    await srv.close();
  }
});

test('chunking: ≤ 1024 datums and ≤ 5,000,000 estimated bytes per chunk', () => {
  const small = Array.from({ length: 2500 }, (_, i) => toWireDatum([i, i + 1, i + 2], { weights: [0, 1, 1] }));
  assert.deepEqual(
    chunkDatums(small).map((c) => c.length),
    [1024, 1024, 452],
  );
  // 100,001 tokens: 100,000 inputs + 100,000 targets + 100,000 weights → 3,000,000 estimated bytes each
  const big = Array.from({ length: 5 }, () =>
    toWireDatum(
      Array.from({ length: 100_001 }, (_, t) => t % 7),
      { weights: new Float32Array(100_001) },
    ),
  );
  assert.deepEqual(
    chunkDatums(big).map((c) => c.length),
    [1, 1, 1, 1, 1],
  );
  const mid = Array.from({ length: 5 }, () =>
    toWireDatum(
      Array.from({ length: 50_001 }, () => 1),
      { weights: new Float32Array(50_001) },
    ),
  );
  assert.deepEqual(
    chunkDatums(mid).map((c) => c.length),
    [3, 2],
  ); // 1,500,000 bytes each: three fit in 5,000,000
});

test('mergeMetrics: sums add, means weight by datum count, min/max', () => {
  const m = mergeMetrics([
    { metrics: { 'loss:sum': 1, 'acc:mean': 0.5, 'lo:min': 3, 'hi:max': 1 }, datums: 2 },
    { metrics: { 'loss:sum': 2, 'acc:mean': 1, 'lo:min': 1, 'hi:max': 4 }, datums: 6 },
  ]);
  assert.deepEqual(m, { 'loss:sum': 3, 'acc:mean': (0.5 * 2 + 6) / 8, 'lo:min': 1, 'hi:max': 4 });
});

test('chunked forward_backward: seq_ids in order, outputs in datum order when futures complete out of order', async () => {
  let next = 0;
  const pending = new Map<string, () => void>();
  const srv = await scripted(
    withSession(async (req) => {
      if (req.path === 'forward_backward' || req.path === 'optim_step') return { body: { request_id: `q${next++}` } };
      if (req.path === 'retrieve_future') {
        const id = String(req.body.request_id);
        const post = srv.seen.filter((s) => s.path === 'forward_backward')[Number(id.slice(1))];
        if (!post) return { body: { metrics: {} } }; // the optim_step
        // the last chunk completes first, the first chunk last
        const order = Number(id.slice(1));
        await new Promise<void>((r) => {
          pending.set(id, r);
          if (pending.size === 3) for (const k of ['q2', 'q1', 'q0']) setTimeout(pending.get(k)!, 10 * (2 - Number(k.slice(1)) + 1));
        });
        const data = (post.body.forward_backward_input as { data: WireDatum[] }).data;
        return {
          body: {
            loss_fn_outputs: data.map((d) => ({ logprobs: { data: d.model_input.chunks[0].tokens.map((t) => -t), dtype: 'float32' } })),
            metrics: { 'loss:sum': order + 1 },
          },
        };
      }
      return { status: 500 };
    }),
  );
  try {
    const c = await TinkerClient.connect({ baseUrl: srv.url, ...fast, maxChunkDatums: 4 });
    const m = await c.createModel('base', null);
    const datums = Array.from({ length: 10 }, (_, i) => toWireDatum([i, 0], { weights: [0, 1] }));
    const [out] = await Promise.all([
      m.forwardBackward(datums, 'cross_entropy'),
      m.optimStep({ learning_rate: 1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0, grad_clip_norm: 0 }),
    ]);
    await c.close();
    assert.deepEqual(
      out.loss_fn_outputs.map((o) => o.logprobs.data[0]),
      [0, -1, -2, -3, -4, -5, -6, -7, -8, -9].map((x) => x || 0),
    );
    assert.deepEqual(out.metrics, { 'loss:sum': 6 });
    const posts = srv.seen.filter((s) => s.path === 'forward_backward' || s.path === 'optim_step');
    assert.deepEqual(
      posts.map((p) => [p.path, p.body.seq_id]),
      [
        ['forward_backward', 1],
        ['forward_backward', 2],
        ['forward_backward', 3],
        ['optim_step', 4],
      ],
    );
  } finally {
    await srv.close();
  }
});

test('TinkerPolicy custom loss: forward with zero weights, then cross_entropy with weights = −dL/dlogprob on targets', async () => {
  // the service's logprobs: target j of datum i gets −(i + 1)·(j + 1)/10
  const srv = await scripted(
    withSession((req) => {
      if (req.path === 'forward' || req.path === 'forward_backward')
        return { body: { request_id: `${req.path}:${req.raw.length}:${req.body.seq_id}` } };
      if (req.path === 'retrieve_future') {
        const post = srv.seen.find((s) => `${s.path}:${s.raw.length}:${s.body.seq_id}` === req.body.request_id)!;
        const input = (post.body.forward_input ?? post.body.forward_backward_input) as { data: WireDatum[] };
        return {
          body: {
            loss_fn_outputs: input.data.map((d, i) => ({
              logprobs: { data: d.loss_fn_inputs.target_tokens.data.map((_, j) => (-(i + 1) * (j + 1)) / 10), dtype: 'float32' },
            })),
            metrics: { 'loss:sum': 0 },
          },
        };
      }
      return { status: 500 };
    }),
  );
  try {
    const policy = await TinkerPolicy.open({
      baseUrl: srv.url,
      baseModel: 'base',
      lora: { rank: 2, trainAttn: true, trainMlp: true, trainUnembed: true },
      ...fast,
    });
    const datum = (tokens: number[], mask: number[]): Datum => ({
      tokens,
      mask,
      advantages: tokens.map(() => 1),
      oldLogprobs: tokens.map(() => 0),
      questionId: 'q',
      rolloutId: 'r',
      sequenceId: String(tokens[0]),
      role: 'planner',
    });
    const datums = [datum([10, 11, 12, 13], [0, 0, 1, 1]), datum([20, 21, 22], [0, 1, 1])];
    let seen: number[][] = [];
    // C = Σ_t c_t·logprob_t with c_t = 2·t (trainable tokens only) → dC/dlogprob_t = 2·t
    const res = await policy.forwardBackward(datums, (ds, fwd) => {
      seen = fwd.logprobs.map((l) => Array.from(l));
      const dLogprobs = ds.map((d) => Float32Array.from(d.tokens, (_, t) => (d.mask[t] ? 2 * t : 0)));
      const loss = ds.reduce((s, d, i) => s + d.tokens.reduce((a, _, t) => a + dLogprobs[i][t] * fwd.logprobs[i][t], 0), 0);
      return { loss, dLogprobs, metrics: { tokens: 4 } };
    });
    await policy.close();
    assert.deepEqual(
      seen.map((r) => r.map((x) => Math.round(x * 10) / 10)),
      [
        [0, -0.1, -0.2, -0.3],
        [0, -0.2, -0.4],
      ],
    );
    assert.ok(Math.abs(res.loss - (4 * -0.2 + 6 * -0.3 + 2 * -0.2 + 4 * -0.4)) < 1e-6);
    const fwdPost = srv.seen.find((s) => s.path === 'forward')!;
    const fbPost = srv.seen.find((s) => s.path === 'forward_backward')!;
    assert.equal(fwdPost.body.seq_id, 1);
    assert.equal(fbPost.body.seq_id, 2);
    const fwdData = fwdPost.body.forward_input as { data: WireDatum[]; loss_fn: string };
    assert.equal(fwdData.loss_fn, 'cross_entropy');
    assert.deepEqual(fwdData.data[0].loss_fn_inputs.weights.data, [0, 0, 0]);
    const fb = fbPost.body.forward_backward_input as { data: WireDatum[]; loss_fn: string };
    assert.equal(fb.loss_fn, 'cross_entropy');
    assert.deepEqual(
      fb.data.map((d) => d.loss_fn_inputs.weights.data),
      [
        [0, -4, -6],
        [-2, -4],
      ],
    );
    assert.deepEqual(
      fb.data.map((d) => d.model_input.chunks[0].tokens),
      [
        [10, 11, 12],
        [20, 21],
      ],
    );
    // close() frees the model (one attempt: this server answers 500 and close still succeeds)
    assert.deepEqual(
      srv.seen.filter((s) => s.path === 'unload_model').map((s) => s.body),
      [{ model_id: 'm1', type: 'unload_model' }],
    );
  } finally {
    await srv.close();
  }
});

test('a service that never answers gives a clear error once the retry budget is spent', async () => {
  const srv = await scripted(
    withSession((req) => (req.path === 'optim_step' ? { body: { request_id: 'x' } } : { status: 502, body: { detail: 'bad gateway' } })),
  );
  try {
    const c = await TinkerClient.connect({ baseUrl: srv.url, ...fast, retryBudgetMs: 100 });
    const m = await c.createModel('base', null);
    await assert.rejects(
      m.optimStep({ learning_rate: 1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0, grad_clip_norm: 0 }),
      /OptimStep \(request x\): gave up after \d+ s of HTTP 502 answers \(bad gateway\)/,
    );
    await c.close();
  } finally {
    await srv.close();
  }
});
