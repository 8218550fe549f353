/**
 * The engine side of `EmbeddedPolicy`: runs in a worker_threads Worker, owns the `Engine` (weights,
 * gradients, optimizer) and the continuous-batching sampler, and answers the requests of
 * `embedded-protocol.ts`. Training requests run synchronously when they arrive; sampling runs as a
 * loop of decode steps that yields to the event loop between steps, so new sample requests join the
 * running batch and training requests interleave with decoding.
 */
import { parentPort } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadTokenizer } from '../model/tokenizer.ts';
import type { Kernels } from '../engine/kernels.ts';
import { InvalidArgumentError, MatpoError } from '../core/errors.ts';
import { Engine } from '../model/engine.ts';
import type { PackedTop, Reply, ReplyPayload, Request, InitOptions, InitResult } from './embedded-protocol.ts';
import { topOfRow } from './server-scoring.ts';
import { unpack } from './embedded-protocol.ts';
import type { Sampler } from '../model/sampler.ts';

if (!parentPort) throw new Error('embedded-worker.ts must run in a worker thread');
const port = parentPort;

let engine: Engine | null = null;
let sampler: Sampler | null = null;
let baseSeed = 0;
let seedCounter = 0;
/** Abort controllers of running sample requests, by request id. */
const sampling = new Map<number, AbortController>();

function reply(id: number, result: ReplyPayload, transfer: ArrayBuffer[] = []): void {
  const msg: Reply = { id, ok: true, result };
  port.postMessage(msg, transfer);
}

function replyError(id: number, err: unknown): void {
  const e = err as Error & { code?: string; argument?: string; file?: string };
  const msg: Reply = {
    id,
    ok: false,
    error: {
      name: e?.name ?? 'Error',
      code: err instanceof MatpoError ? err.code : undefined,
      message: err instanceof MatpoError ? e.message : `${e?.message ?? String(err)}${e?.stack ? `\n${e.stack}` : ''}`,
      argument: e?.argument,
      file: e?.file,
    },
  };
  port.postMessage(msg);
}

async function loadKernels(which: InitOptions['kernels']): Promise<Kernels> {
  if (which === 'reference') return (await import('../engine/reference.ts')).referenceKernels;
  if (which === 'native') return (await import('../engine/native.ts')).loadNativeKernels();
  return (await import('../engine/index.ts')).getKernels();
}

function need(): Engine {
  if (!engine) throw new MatpoError('state', 'the engine is not initialised');
  return engine;
}

/**
 * One forward pass over `tokens` in a KV slot of its own (the sampler's decoder, between its steps):
 * per position t ≥ 1, log softmax of the logits at t−1 (in float64, as the sampler computes its
 * logprobs), the logprob of tokens[t] and the k largest entries.
 */
function scoreTop(decoder: Sampler['decoder'], tokens: Int32Array, k: number): PackedTop {
  const n = tokens.length;
  const limit = decoder.maxPositions();
  if (n > limit) throw new InvalidArgumentError('tokens', `${n} tokens exceed the context limit ${limit}`);
  const V = decoder.cfg.vocabSize;
  const kk = Math.min(k, V);
  const rows = Math.max(0, n - 1);
  const out: PackedTop = {
    logprobs: new Float64Array(rows),
    topIds: new Int32Array(rows * kk),
    topLogprobs: new Float64Array(rows * kk),
    k: kk,
  };
  if (n < 2) return out;
  const slot = decoder.allocSlot();
  if (slot < 0) throw new MatpoError('busy', 'the KV cache is full; retry when fewer requests run');
  try {
    const [logits] = decoder.forward([{ slot, tokens: tokens.subarray(0, n - 1), startPos: 0, allLogits: true }]);
    for (let t = 0; t < n - 1; t++) {
      const o = t * V;
      let mx = -Infinity;
      for (let v = 0; v < V; v++) if (logits[o + v] > mx) mx = logits[o + v];
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(logits[o + v] - mx);
      const lse = mx + Math.log(sum);
      out.logprobs[t] = logits[o + tokens[t + 1]] - lse;
      topOfRow(logits, kk, o, V).forEach((e, j) => {
        out.topIds[t * kk + j] = e.id;
        out.topLogprobs[t * kk + j] = e.logprob - lse;
      });
    }
  } finally {
    decoder.freeSlot(slot);
  }
  return out;
}

async function handle(req: Request): Promise<void> {
  switch (req.op) {
    case 'init': {
      const kernels = await loadKernels(req.options.kernels);
      if (req.options.threads !== undefined) kernels.setThreads(req.options.threads);
      engine = Engine.load(req.options.dir, kernels);
      if (req.options.adapter !== undefined) engine.loadAdapter(req.options.adapter);
      else if (req.options.lora) engine.enableLora(req.options.lora);
      baseSeed = req.options.seed ?? 0;
      // the tokenizer is only needed for stop strings; a model directory without one still samples
      let decode: ((ids: readonly number[]) => string) | undefined;
      if (existsSync(join(req.options.dir, 'tokenizer.json'))) {
        try {
          const tok = await loadTokenizer(req.options.dir);
          decode = (ids) => tok.decode([...ids]);
        } catch {
          decode = undefined;
        }
      }
      sampler = engine.sampler({ decode });
      const r: InitResult = {
        vocabSize: engine.cfg.vocabSize,
        kernels: kernels.name,
        isa: kernels.isa,
        threads: kernels.threads(),
        params: engine.lora ? engine.lora.total : engine.layout.total,
        lora: engine.lora ? engine.lora.config() : null,
      };
      reply(req.id, r);
      return;
    }
    case 'forward': {
      const e = need();
      const seqs = unpack(req.tokens, req.lengths);
      const out = e.forward(seqs, req.microBatchTokens);
      const lp = new Float32Array(req.tokens.length);
      const ent = new Float32Array(req.tokens.length);
      let o = 0;
      out.logprobs.forEach((l, i) => {
        lp.set(l, o);
        ent.set(out.entropies[i], o);
        o += l.length;
      });
      reply(req.id, { logprobs: lp, entropies: ent, tokens: req.tokens.length }, [lp.buffer, ent.buffer]);
      return;
    }
    case 'forwardMicro': {
      const e = need();
      const seqs = unpack(req.tokens, req.lengths);
      const f = e.forwardMicro(seqs, req.firstIndex);
      const lp = new Float32Array(req.tokens.length);
      const ent = new Float32Array(req.tokens.length);
      let o = 0;
      f.logprobs.forEach((l, i) => {
        lp.set(l, o);
        ent.set(f.entropies[i], o);
        o += l.length;
      });
      reply(req.id, { logprobs: lp, entropies: ent, tokens: f.tokens }, [lp.buffer, ent.buffer]);
      return;
    }
    case 'backwardMicro': {
      need().backwardPacked(req.dLogprobs, req.dEntropies);
      reply(req.id, null);
      return;
    }
    case 'optimStep': {
      const r = need().optimStep(req.params);
      reply(req.id, r);
      return;
    }
    case 'zeroGrads':
      need().zeroGrads();
      reply(req.id, null);
      return;
    case 'save':
      need().save(req.dir);
      reply(req.id, null);
      return;
    case 'saveAdapter':
      need().saveAdapter(req.dir);
      reply(req.id, null);
      return;
    case 'saveMerged':
      need().saveMerged(req.dir);
      reply(req.id, null);
      return;
    case 'loadAdapter':
      reply(req.id, need().loadAdapter(req.dir).config());
      return;
    case 'saveOptimizerState':
      need().saveOptimizerState(req.dir);
      reply(req.id, null);
      return;
    case 'loadOptimizerState':
      need().loadOptimizerState(req.dir);
      reply(req.id, null);
      return;
    case 'sample': {
      need();
      const ac = new AbortController();
      sampling.set(req.id, ac);
      const seed = req.params.seed ?? (baseSeed * 1000003 + seedCounter++) >>> 0;
      const stream = (token: number, logprob: number) => port.postMessage({ id: req.id, token, logprob } satisfies Reply);
      const onToken = req.stream ? stream : undefined;
      sampler!
        .generate(Array.from(req.prompt), { ...req.params, seed, signal: ac.signal }, { onToken })
        .then(
          (result) => reply(req.id, result),
          (err) => replyError(req.id, err),
        )
        .finally(() => sampling.delete(req.id));
      return;
    }
    case 'topLogprobs': {
      need();
      const r = scoreTop(sampler!.decoder, req.tokens, req.k);
      reply(req.id, r, [r.logprobs.buffer, r.topIds.buffer, r.topLogprobs.buffer] as ArrayBuffer[]);
      return;
    }
    case 'abort':
      sampling.get(req.target)?.abort();
      reply(req.id, null);
      return;
    case 'close':
      sampler?.close();
      reply(req.id, null);
      port.close();
      return;
  }
}

port.on('message', (req: Request) => {
  handle(req).catch((err) => replyError(req.id, err));
});
