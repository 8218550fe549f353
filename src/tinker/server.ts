/**
 * `serveTinker`: the embedded engine behind the Tinker JSON protocol (SDK 0.21.0; see
 * ../shared/TINKER.md), on node:http, loopback by default. All paths live under `/api/v1`.
 *
 *   direct   client/config (explicit false flags: no JWT, no protobuf, no pyqwest, no gRPC),
 *            create_session, session_heartbeat, telemetry, get_server_capabilities, healthz,
 *            get_info, create_sampling_session, weights_info, retrieve_future,
 *            GET samplers/{id}, GET training_runs, GET training_runs/{id},
 *            GET training_runs/{id}/checkpoints, DELETE training_runs/{id}/checkpoints/{kind}/{name}
 *   futures  create_model, forward, forward_backward, optim_step, save_weights,
 *            save_weights_for_sampler, load_weights, asample, unload_model → `{request_id, model_id?}`
 *
 * Training clients: one `EmbeddedPolicy` (worker thread) each; their calls run strictly in seq_id
 * order through a `SeqQueue`; repeats of (model_id, seq_id) with the same body are the same future.
 * Gradients of forward_backward calls accumulate in the engine until optim_step (AdamW with the
 * client's AdamParams; `grad_clip_norm` > 0 clips the global norm). Losses: `losses.ts`.
 *
 * Sampling sessions: from the base model, a `tinker://…` checkpoint, or the ephemeral snapshot that
 * save_weights_for_sampler takes of a training client. A snapshot is always written to disk; while
 * its training client's weights are still the snapshotted ones, samples run on that client's own
 * engine (no reload), and an optim_step / load_weights first marks the weights as changing, waits
 * for those samples, then changes them — later samples load the snapshot from disk instead. Each
 * training client keeps its last `maxEphemeralSamplers` (4) ephemeral snapshots; older sessions are
 * released (sampling them is a user error that says so), which bounds the disk an RL loop uses.
 *
 * A training client whose session stops heart-beating (the SDK beats every 10 s) and that gets no
 * request for `sessionTimeoutMs` (15 min) is unloaded, so abandoned clients do not hold engines.
 *
 * retrieve_future holds the request until the outcome exists or `longPollMs` (25 s, under the SDK's
 * 45 s timeout) pass, then answers `{type: "try_again"}`. Failed futures are 200
 * `{error, category}` (category "user" for bad input, "server" otherwise); malformed requests are
 * 4xx `{detail}` naming the field. With `apiKey`, every request needs `X-API-Key: <key>` (or
 * `Authorization: Bearer <key>`). Checkpoints live under `dir` (see checkpoints.ts).
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join, resolve as resolvePath } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { z } from 'zod';
import { InvalidArgumentError, MatpoError } from '../core/errors.ts';
import { loadModelConfig } from '../model/checkpoint.ts';
import type { ModelConfig } from '../model/config.ts';
import type { EmbeddedPolicy } from '../policy/embedded.ts';
import type { SampleParams } from '../core/policy.ts';
import { CheckpointStore, checkName, parseTinkerPath, tinkerPath, type CheckpointMeta } from './checkpoints.ts';
import { tinkerForward, tinkerForwardBackward } from './compute.ts';
import { modelInputTokens, parseDatums } from './datums.ts';
import { Dedup, FutureStore, SeqQueue, bodyHash } from './futures.ts';
import { resolveLossConfig, type LossName } from './losses.ts';
import {
  createModelBody,
  createSamplingSessionBody,
  createSessionBody,
  forwardBackwardBody,
  forwardBody,
  loadWeightsBody,
  modelIdBody,
  optimStepBody,
  orderedCall,
  parseBody,
  retrieveFutureBody,
  sampleBody,
  saveForSamplerBody,
  saveWeightsBody,
  sessionBody,
  weightsInfoBody,
} from './protocol.ts';
import { SamplerPool } from './sampler-pool.ts';
import {
  createTrainingPolicy,
  loadTrainingState,
  saveSamplerWeights,
  saveTrainingState,
  type EngineOptions,
  type TinkerLoraConfig,
} from './training-policy.ts';

export interface TinkerServeOptions {
  /** The served base model directory. */
  modelDir: string;
  /** The name clients pass as base_model (the absolute directory path is accepted too). Default: the directory path. */
  modelName?: string;
  /** Where checkpoints and run records are written. */
  dir: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** 0 picks a free port. */
  port: number;
  apiKey?: string;
  threads?: number;
  kernels?: 'native' | 'reference';
  /** How long retrieve_future holds a request before answering try_again. Default 25 000 ms. */
  longPollMs?: number;
  /** How long a missing seq_id may hold up the requests behind it. Default 120 000 ms. */
  gapTimeoutMs?: number;
  /** Extra forward tokens allowed per call for targets that are not the next input token. Default 65 536. */
  maxProbeTokens?: number;
  /** Training clients loaded at once. Default 8. */
  maxModels?: number;
  /** Largest request body. Default 256 MB. */
  maxBodyBytes?: number;
  /** Ephemeral sampler snapshots kept on disk per training client; older sessions are released. Default 4. */
  maxEphemeralSamplers?: number;
  /** A training client whose session sent no heartbeat and that got no request for this long is unloaded. Default 15 min. */
  sessionTimeoutMs?: number;
}

export interface TinkerServer {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly modelName: string;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface Session {
  id: string;
  created: number;
  lastSeen: number;
  tags: string[];
}

interface TrainingModel {
  id: string;
  sessionId: string;
  baseModel: string;
  lora: TinkerLoraConfig | null;
  ready: Promise<EmbeddedPolicy>;
  queue: SeqQueue;
  /** Increases when the weights are about to change (optim_step, load_weights). */
  version: number;
  samplesInFlight: Set<Promise<unknown>>;
  /** Ephemeral sampling sessions of this client, oldest first (their snapshots are on disk). */
  ephemeral: SamplingSession[];
  /** create_model has not finished yet. */
  creating: boolean;
  lastRequest: number;
  userMetadata: Record<string, unknown> | null;
  closed: boolean;
}

interface SamplingSession {
  id: string;
  baseModel: string;
  modelPath: string | null;
  weightsDir: string;
  /** The training client whose weights this snapshot holds, while they are unchanged. */
  source: { model: TrainingModel; version: number } | null;
  /** Set when an ephemeral snapshot was deleted to bound disk use. */
  released: boolean;
}

const now = () => Date.now();

/** Start the Tinker server. */
export async function serveTinker(options: TinkerServeOptions): Promise<TinkerServer> {
  const host = options.host ?? '127.0.0.1';
  const baseDir = resolvePath(options.modelDir);
  const modelName = options.modelName ?? baseDir;
  const cfg: ModelConfig = loadModelConfig(baseDir);
  const vocab = cfg.vocabSize;
  const maxContext = cfg.maxPositionEmbeddings;
  const longPollMs = options.longPollMs ?? 25_000;
  const maxBody = options.maxBodyBytes ?? 256 * 1024 * 1024;
  const maxModels = options.maxModels ?? 8;
  const maxEphemeral = Math.max(1, options.maxEphemeralSamplers ?? 4);
  const sessionTimeoutMs = options.sessionTimeoutMs ?? 15 * 60_000;
  const engine: EngineOptions = { threads: options.threads, kernels: options.kernels };
  const computeOptions = { maxProbeTokens: options.maxProbeTokens ?? 65_536 };
  const store = new CheckpointStore(resolvePath(options.dir));
  const futures = new FutureStore();
  const sessions = new Map<string, Session>();
  const models = new Map<string, TrainingModel>();
  const samplingSessions = new Map<string, SamplingSession>();
  const createModelDedup = new Dedup<{ request_id: string; model_id: string }>();
  const samplingDedup = new Dedup<string>();
  const sampleDedup = new Dedup<string>();
  const samplers = new SamplerPool(baseDir, engine);
  // sampling stops at the model's end-of-sequence token(s) as well as where the client asks
  const eosIds = new Set<number>(cfg.eosTokenId === null ? [] : Array.isArray(cfg.eosTokenId) ? cfg.eosTokenId : [cfg.eosTokenId]);
  if (existsSync(join(baseDir, 'tokenizer.json'))) {
    try {
      const { loadTokenizer } = await import('../model/tokenizer.ts');
      const eos = (await loadTokenizer(baseDir)).eosTokenId;
      if (eos !== null) eosIds.add(eos);
    } catch {
      // no tokenizer: only the config's ids
    }
  }

  function checkBaseModel(name: string, field: string): void {
    if (name !== modelName && resolvePath(name) !== baseDir) {
      throw new InvalidArgumentError(field, `unknown base model "${name}"; this server serves "${modelName}"`);
    }
  }

  function session(id: string): Session {
    const s = sessions.get(id);
    if (!s) throw new HttpError(404, `session_id: unknown session "${id}" (create one with create_session)`);
    return s;
  }

  function model(id: string): TrainingModel {
    const m = models.get(id);
    if (!m) throw new HttpError(404, `model_id: unknown or unloaded model "${id}"`);
    return m;
  }

  /** Mark the model's weights as changing and wait for samples running on them. */
  async function weightsWillChange(m: TrainingModel): Promise<void> {
    m.version++;
    await Promise.allSettled([...m.samplesInFlight]);
  }

  /** Drop a training client: later calls get 404, queued ones fail with `reason`, its engine closes. */
  async function unload(m: TrainingModel, reason: string): Promise<void> {
    models.delete(m.id);
    m.closed = true;
    m.queue.close(reason);
    await weightsWillChange(m);
    await (await m.ready.catch(() => null))?.close();
  }

  /** Unload training clients whose session stopped heart-beating and that have had no request for `sessionTimeoutMs`. */
  function reclaimIdle(): void {
    const t = now();
    for (const m of [...models.values()]) {
      const alive = Math.max(sessions.get(m.sessionId)?.lastSeen ?? 0, m.lastRequest);
      if (!m.creating && t - alive > sessionTimeoutMs && m.queue.idle() && m.samplesInFlight.size === 0) {
        void unload(m, `model ${m.id} was unloaded: its session sent no heartbeat for ${Math.round(sessionTimeoutMs / 1000)} s`);
      }
    }
  }
  const reclaimTimer = setInterval(reclaimIdle, Math.max(10, Math.min(60_000, sessionTimeoutMs / 2)));
  reclaimTimer.unref();

  function loraFields(lora: TinkerLoraConfig | null) {
    return lora
      ? { is_lora: true, lora_rank: lora.rank, train_unembed: lora.trainUnembed, train_mlp: lora.trainMlp, train_attn: lora.trainAttn }
      : { is_lora: false };
  }

  // ---- training calls (ordered per model) ----

  function ordered(body: unknown, kind: string, run: (m: TrainingModel, policy: EmbeddedPolicy) => Promise<unknown>) {
    const call = parseBody(orderedCall, body);
    const m = model(call.model_id);
    m.lastRequest = now();
    const requestId = m.queue.submit(call.seq_id, bodyHash(body), kind, async () => {
      const policy = await m.ready;
      m.lastRequest = now();
      try {
        return await run(m, policy);
      } finally {
        m.lastRequest = now();
      }
    });
    return { request_id: requestId, model_id: m.id };
  }

  function lossCall(body: unknown, key: 'forward_input' | 'forward_backward_input') {
    const input =
      key === 'forward_input' ? parseBody(forwardBody, body).forward_input : parseBody(forwardBackwardBody, body).forward_backward_input;
    const config = resolveLossConfig(input.loss_fn, input.loss_fn_config, `${key}.`);
    const loss = input.loss_fn as LossName;
    const datums = parseDatums(input.data, loss, vocab, `${key}.data`);
    datums.forEach((d, i) => {
      if (d.input.length + 1 > maxContext) {
        throw new InvalidArgumentError(
          `${key}.data[${i}].model_input`,
          `${d.input.length} tokens exceed the model's context (${maxContext - 1} + 1 target)`,
        );
      }
    });
    return { loss, config, datums };
  }

  const handlers: Record<string, (body: unknown) => unknown | Promise<unknown>> = {
    'POST client/config': () => ({
      pjwt_auth_enabled: false,
      proto_write_fwdbwd: false,
      use_pyqwest_transport: false,
      enable_grpc_retrieve_future: false,
      parallel_fwdbwd_chunks: true,
    }),
    'GET healthz': () => ({ status: 'ok' }),
    'GET get_server_capabilities': () => ({ supported_models: [{ model_name: modelName, max_context_length: maxContext }] }),
    'POST telemetry': () => ({ status: 'accepted' }),
    'POST create_session': (body) => {
      const b = parseBody(createSessionBody, body);
      const id = randomUUID();
      sessions.set(id, { id, created: now(), lastSeen: now(), tags: b.tags ?? [] });
      return { type: 'create_session', session_id: id };
    },
    'POST session_heartbeat': (body) => {
      session(parseBody(sessionBody, body).session_id).lastSeen = now();
      return { type: 'session_heartbeat' };
    },
    'POST create_model': (body) => {
      const b = parseBody(createModelBody, body);
      session(b.session_id);
      checkBaseModel(b.base_model, 'base_model');
      const key = `model_seq_id ${b.model_seq_id} of session ${b.session_id}`;
      const hash = bodyHash(body);
      const earlier = createModelDedup.check(key, hash, 'model_seq_id');
      if (earlier) return earlier;
      if (models.size >= maxModels) throw new HttpError(429, `too many training clients loaded (${maxModels}); unload one first`);
      const id = `${b.session_id}:train:${b.model_seq_id}`;
      const lc = b.lora_config;
      const lora: TinkerLoraConfig | null = lc
        ? {
            rank: lc.rank,
            alpha: lc.alpha ?? 32,
            trainAttn: lc.train_attn ?? true,
            trainMlp: lc.train_mlp ?? true,
            trainUnembed: lc.train_unembed ?? true,
            seed: lc.seed ?? 0,
          }
        : null;
      const ready = createTrainingPolicy(baseDir, lora, engine);
      const m: TrainingModel = {
        id,
        sessionId: b.session_id,
        baseModel: modelName,
        lora,
        ready,
        queue: new SeqQueue(futures, id, options.gapTimeoutMs),
        version: 0,
        samplesInFlight: new Set(),
        ephemeral: [],
        creating: true,
        lastRequest: now(),
        userMetadata: b.user_metadata ?? null,
        closed: false,
      };
      models.set(id, m);
      const requestId = futures.create('create_model', id);
      futures.settle(
        requestId,
        ready.then(
          () => {
            m.lastRequest = now();
            m.creating = false;
            store.writeRun({ model_id: id, base_model: modelName, lora, created: new Date().toISOString(), user_metadata: m.userMetadata });
            return { type: 'create_model', model_id: id };
          },
          (err) => {
            models.delete(id);
            m.closed = true;
            throw err;
          },
        ),
      );
      const answer = { request_id: requestId, model_id: id };
      createModelDedup.remember(key, hash, answer);
      return answer;
    },
    'POST get_info': (body) => {
      const m = model(parseBody(modelIdBody, body).model_id);
      return {
        type: 'get_info',
        model_id: m.id,
        model_name: m.baseModel,
        model_data: { arch: cfg.family, model_name: m.baseModel, tokenizer_id: m.baseModel },
        ...(m.lora ? { is_lora: true, lora_rank: m.lora.rank } : { is_lora: false }),
      };
    },
    'POST unload_model': (body) => {
      const m = model(parseBody(modelIdBody, body).model_id);
      const requestId = futures.create('unload_model', m.id);
      futures.settle(
        requestId,
        unload(m, `model ${m.id} was unloaded`).then(() => ({ type: 'unload_model', model_id: m.id })),
      );
      return { request_id: requestId, model_id: m.id };
    },
    'POST forward': (body) =>
      ordered(body, 'forward', async (_m, policy) => {
        const { loss, config, datums } = lossCall(body, 'forward_input');
        return tinkerForward(policy, datums, loss, config, computeOptions);
      }),
    'POST forward_backward': (body) =>
      ordered(body, 'forward_backward', async (_m, policy) => {
        const { loss, config, datums } = lossCall(body, 'forward_backward_input');
        return tinkerForwardBackward(policy, datums, loss, config, computeOptions);
      }),
    'POST optim_step': (body) =>
      ordered(body, 'optim_step', async (m, policy) => {
        const a = parseBody(optimStepBody, body).adam_params;
        await weightsWillChange(m);
        const r = await policy.optimStep({
          learningRate: a.learning_rate,
          beta1: a.beta1,
          beta2: a.beta2,
          eps: a.eps,
          weightDecay: a.weight_decay,
          maxGradNorm: a.grad_clip_norm > 0 ? a.grad_clip_norm : undefined,
        });
        if (!r.applied) {
          throw new MatpoError(
            'non-finite-gradient',
            `optim_step: the accumulated gradient is not finite (norm ${r.gradNorm}); the step was skipped and the gradient cleared`,
          );
        }
        return { type: 'optim_step', metrics: { 'grad_norm:mean': r.gradNorm, 'optim_step:max': r.step } };
      }),
    'POST save_weights': (body) =>
      ordered(body, 'save_weights', async (m, policy) => {
        const b = parseBody(saveWeightsBody, body);
        checkName(b.path, 'path');
        const path = tinkerPath(m.id, 'weights', b.path);
        const meta: CheckpointMeta = {
          checkpoint_id: `weights/${b.path}`,
          checkpoint_type: 'training',
          time: new Date().toISOString(),
          tinker_path: path,
          model_id: m.id,
          base_model: m.baseModel,
          lora: m.lora,
        };
        await store.write(store.dir(m.id, 'weights', b.path), meta, b.overwrite ?? false, 'path', (tmp) => saveTrainingState(policy, tmp));
        return { type: 'save_weights', path };
      }),
    'POST save_weights_for_sampler': (body) =>
      ordered(body, 'save_weights_for_sampler', async (m, policy) => {
        const b = parseBody(saveForSamplerBody, body);
        if (!b.path && (b.sampling_session_seq_id === null || b.sampling_session_seq_id === undefined)) {
          throw new InvalidArgumentError('path', 'give a checkpoint name (path) or a sampling_session_seq_id for an ephemeral sampler');
        }
        let dir: string;
        let path: string | null = null;
        if (b.path) {
          checkName(b.path, 'path');
          path = tinkerPath(m.id, 'sampler_weights', b.path);
          dir = store.dir(m.id, 'sampler_weights', b.path);
          const meta: CheckpointMeta = {
            checkpoint_id: `sampler_weights/${b.path}`,
            checkpoint_type: 'sampler',
            time: new Date().toISOString(),
            tinker_path: path,
            model_id: m.id,
            base_model: m.baseModel,
            lora: m.lora,
          };
          await store.write(dir, meta, true, 'path', (tmp) => saveSamplerWeights(policy, tmp));
        }
        if (b.sampling_session_seq_id === null || b.sampling_session_seq_id === undefined)
          return { type: 'save_weights_for_sampler', path };
        const sid = `${m.sessionId}:sample:${b.sampling_session_seq_id}`;
        if (!b.path) {
          dir = store.ephemeralDir(m.id, sid);
          await store.write(dir, null, true, 'sampling_session_seq_id', (tmp) => saveSamplerWeights(policy, tmp));
        }
        const ss: SamplingSession = {
          id: sid,
          baseModel: m.baseModel,
          modelPath: path,
          weightsDir: dir!,
          source: { model: m, version: m.version },
          released: false,
        };
        samplingSessions.set(sid, ss);
        if (!b.path) {
          m.ephemeral.push(ss);
          while (m.ephemeral.length > maxEphemeral) {
            const old = m.ephemeral.shift()!;
            old.released = true;
            rmSync(old.weightsDir, { recursive: true, force: true });
          }
        }
        return { type: 'save_weights_for_sampler', sampling_session_id: sid, ...(path ? { path } : {}) };
      }),
    'POST load_weights': (body) =>
      ordered(body, 'load_weights', async (m, policy) => {
        const b = parseBody(loadWeightsBody, body);
        const p = parseTinkerPath(b.path, 'path');
        if (p.kind !== 'weights')
          throw new InvalidArgumentError('path', `load_weights needs a training checkpoint (tinker://…/weights/<name>), got ${b.path}`);
        const { dir, meta } = store.resolve(b.path, 'path');
        if (meta.base_model !== m.baseModel)
          throw new InvalidArgumentError('path', `${b.path} was trained from "${meta.base_model}", this model is "${m.baseModel}"`);
        if ((meta.lora?.rank ?? null) !== (m.lora?.rank ?? null)) {
          throw new InvalidArgumentError(
            'path',
            `${b.path} has LoRA rank ${meta.lora?.rank ?? 'none'}, this model has ${m.lora?.rank ?? 'none'}`,
          );
        }
        const groups = (l: TinkerLoraConfig | null) => (l ? `attn ${l.trainAttn}, mlp ${l.trainMlp}, unembed ${l.trainUnembed}` : 'none');
        if (groups(meta.lora) !== groups(m.lora)) {
          throw new InvalidArgumentError(
            'path',
            `${b.path} adapts other modules (${groups(meta.lora)}) than this model (${groups(m.lora)})`,
          );
        }
        await weightsWillChange(m);
        const fresh = await loadTrainingState(baseDir, dir, m.lora, b.optimizer ?? false, engine);
        m.ready = Promise.resolve(fresh);
        await policy.close();
        return { type: 'load_weights', path: b.path };
      }),
    'POST create_sampling_session': (body) => {
      const b = parseBody(createSamplingSessionBody, body);
      session(b.session_id);
      if (!b.base_model === !b.model_path) throw new InvalidArgumentError('model_path', 'give exactly one of base_model and model_path');
      const key = `sampling_session_seq_id ${b.sampling_session_seq_id} of session ${b.session_id}`;
      const hash = bodyHash(body);
      const earlier = samplingDedup.check(key, hash, 'sampling_session_seq_id');
      if (earlier) return { type: 'create_sampling_session', sampling_session_id: earlier };
      const id = `${b.session_id}:sample:${b.sampling_session_seq_id}`;
      samplingSessions.set(id, samplingTarget(b.base_model ?? null, b.model_path ?? null, id));
      samplingDedup.remember(key, hash, id);
      return { type: 'create_sampling_session', sampling_session_id: id };
    },
    'POST asample': (body) => {
      const b = parseBody(sampleBody, body);
      let s: SamplingSession;
      if (b.sampling_session_id) {
        const found = samplingSessions.get(b.sampling_session_id);
        if (!found) throw new HttpError(404, `sampling_session_id: unknown sampling session "${b.sampling_session_id}"`);
        s = found;
      } else if (b.base_model || b.model_path) {
        s = samplingTarget(b.base_model ?? null, b.model_path ?? null, b.model_path ?? modelName);
      } else {
        throw new InvalidArgumentError('sampling_session_id', 'give a sampling_session_id (or base_model / model_path)');
      }
      const hash = bodyHash(body);
      const key = b.seq_id === null || b.seq_id === undefined ? null : `seq_id ${b.seq_id} of sampler ${s.id}`;
      if (key) {
        const earlier = sampleDedup.check(key, hash, 'seq_id');
        if (earlier) return { request_id: earlier };
      }
      const requestId = futures.create('sample');
      if (key) sampleDedup.remember(key, hash, requestId);
      futures.settle(requestId, sample(s, b));
      return { request_id: requestId };
    },
    'POST retrieve_future': async (body) => {
      const b = parseBody(retrieveFutureBody, body);
      if (!futures.has(b.request_id))
        throw new HttpError(404, `request_id: unknown request id "${b.request_id}" (never issued, or expired)`);
      const r = await futures.wait(b.request_id, longPollMs);
      if (!r) return { type: 'try_again', request_id: b.request_id, queue_state: 'active' };
      return r.outcome;
    },
    'POST weights_info': (body) => {
      const b = parseBody(weightsInfoBody, body);
      const { meta } = store.resolve(b.tinker_path, 'tinker_path');
      return { base_model: meta.base_model, ...loraFields(meta.lora) };
    },
    'GET training_runs': () => {
      const runs = store.runIds().map((id) => runInfo(id));
      return { training_runs: runs, cursor: { offset: 0, limit: runs.length, total_count: runs.length } };
    },
  };

  function samplingTarget(base: string | null, path: string | null, id: string): SamplingSession {
    if (base) {
      checkBaseModel(base, 'base_model');
      return { id, baseModel: modelName, modelPath: null, weightsDir: baseDir, source: null, released: false };
    }
    const { dir, meta } = store.resolve(path!, 'model_path');
    return { id, baseModel: meta.base_model, modelPath: path, weightsDir: dir, source: null, released: false };
  }

  async function sample(s: SamplingSession, b: z.infer<typeof sampleBody>): Promise<unknown> {
    if (s.released) {
      throw new InvalidArgumentError(
        'sampling_session_id',
        `the weights of sampling session ${s.id} were released (each training client keeps its last ` +
          `${maxEphemeral} ephemeral samplers); save_weights_for_sampler again, or save named sampler weights to keep them`,
      );
    }
    const prompt = modelInputTokens(b.prompt, 'prompt', vocab);
    if (prompt.length === 0) throw new InvalidArgumentError('prompt', 'is empty');
    if (prompt.length >= maxContext)
      throw new InvalidArgumentError('prompt', `${prompt.length} tokens leave no room to sample (context ${maxContext})`);
    if (b.topk_prompt_logprobs)
      throw new InvalidArgumentError(
        'topk_prompt_logprobs',
        'top-k prompt logprobs are not supported by this server (use prompt_logprobs)',
      );
    const sp = b.sampling_params;
    const params: SampleParams = { maxNewTokens: sp.max_tokens ?? maxContext - prompt.length, temperature: sp.temperature ?? 1 };
    if (sp.top_k !== null && sp.top_k !== undefined && sp.top_k > 0) params.topK = sp.top_k;
    if (sp.top_p !== null && sp.top_p !== undefined && sp.top_p < 1) params.topP = sp.top_p;
    const stop = sp.stop === null || sp.stop === undefined ? [] : Array.isArray(sp.stop) ? sp.stop : [sp.stop];
    const stopIds: number[] = [...eosIds];
    const stopStrings: string[] = [];
    stop.forEach((x, i) => {
      if (typeof x === 'number') {
        if (x >= vocab)
          throw new InvalidArgumentError(`sampling_params.stop[${i}]`, `token id ${x} is outside the vocabulary [0, ${vocab})`);
        stopIds.push(x);
      } else if (x.length > 0) {
        stopStrings.push(x);
      }
    });
    params.stopTokenIds = stopIds;
    if (stopStrings.length > 0) params.stopStrings = stopStrings;
    const n = b.num_samples ?? 1;
    const seed = sp.seed ?? null;
    const run = async (policy: EmbeddedPolicy) => {
      const [results, promptLps] = await Promise.all([
        Promise.all(
          Array.from({ length: n }, (_, j) => policy.sample(prompt, seed === null ? params : { ...params, seed: (seed + j) >>> 0 })),
        ),
        b.prompt_logprobs ? policy.forward([{ tokens: prompt }]).then((f) => f.logprobs[0]) : Promise.resolve(null),
      ]);
      return {
        type: 'sample',
        sequences: results.map((r) => {
          if (r.finishReason === 'abort') throw new MatpoError('engine', 'sampling was aborted (the engine is shutting down)');
          return { tokens: r.tokens, logprobs: r.logprobs, stop_reason: r.finishReason === 'length' ? 'length' : 'stop' };
        }),
        ...(promptLps ? { prompt_logprobs: [null, ...Array.from(promptLps.subarray(1))] } : {}),
      };
    };
    const src = s.source;
    if (src && !src.model.closed && src.model.version === src.version) {
      // the training client still holds exactly the snapshotted weights: sample on its engine
      const work = src.model.ready.then(run);
      src.model.samplesInFlight.add(work);
      try {
        return await work;
      } finally {
        src.model.samplesInFlight.delete(work);
      }
    }
    return samplers.with(s.weightsDir, run);
  }

  function runInfo(id: string) {
    const run = store.readRun(id);
    const m = models.get(id);
    if (!run && !m) throw new HttpError(404, `training run "${id}" not found`);
    const lora = m?.lora ?? run?.lora ?? null;
    return {
      training_run_id: id,
      base_model: m?.baseModel ?? run!.base_model,
      model_owner: 'local',
      is_lora: lora !== null,
      ...(lora ? { lora_rank: lora.rank } : {}),
      corrupted: false,
      last_request_time: new Date(m?.lastRequest ?? Date.parse(run!.created)).toISOString(),
      user_metadata: m?.userMetadata ?? run?.user_metadata ?? null,
    };
  }

  /** Routes with a path parameter. */
  function dynamicRoute(method: string, parts: string[]): unknown | undefined {
    if (method === 'GET' && parts.length === 2 && parts[0] === 'samplers') {
      const s = samplingSessions.get(parts[1]);
      if (!s) throw new HttpError(404, `sampler "${parts[1]}" not found`);
      return { sampler_id: s.id, base_model: s.baseModel, ...(s.modelPath ? { model_path: s.modelPath } : {}) };
    }
    if (parts[0] !== 'training_runs' || parts.length < 2) return undefined;
    const id = parts[1];
    if (method === 'GET' && parts.length === 2) return runInfo(id);
    if (method === 'GET' && parts.length === 3 && parts[2] === 'checkpoints') {
      runInfo(id);
      const list = store.list(id).map((c) => ({
        checkpoint_id: c.checkpoint_id,
        checkpoint_type: c.checkpoint_type,
        time: c.time,
        tinker_path: c.tinker_path,
        size_bytes: c.size_bytes,
        public: false,
      }));
      return { checkpoints: list, cursor: { offset: 0, limit: list.length, total_count: list.length } };
    }
    if (method === 'DELETE' && parts[2] === 'checkpoints' && (parts.length === 4 || parts.length === 5)) {
      const rest = parts.slice(3).join('/');
      const m = /^(weights|sampler_weights)\/([^/]+)$/.exec(rest);
      if (!m) throw new HttpError(400, `checkpoint id: expected weights/<name> or sampler_weights/<name>, got "${rest}"`);
      if (!store.delete(id, m[1] as 'weights' | 'sampler_weights', m[2]))
        throw new HttpError(404, `checkpoint ${tinkerPath(id, m[1] as 'weights', m[2])} not found`);
      return null;
    }
    return undefined;
  }

  function authorised(req: http.IncomingMessage): boolean {
    if (!options.apiKey) return true;
    const key = req.headers['x-api-key'];
    if (key === options.apiKey) return true;
    const auth = req.headers.authorization;
    return auth === `Bearer ${options.apiKey}`;
  }

  async function readBody(req: http.IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > maxBody) throw new HttpError(413, `request body larger than ${maxBody} bytes`);
      chunks.push(chunk as Buffer);
    }
    if (size === 0) return {};
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new HttpError(400, 'request body is not valid JSON');
    }
  }

  function send(res: http.ServerResponse, status: number, body: unknown): void {
    if (res.headersSent || res.destroyed) return;
    if (body === null) {
      res.writeHead(204);
      res.end();
      return;
    }
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const method = req.method ?? 'GET';
      if (url.pathname === '/healthz') return send(res, 200, { status: 'ok' });
      if (!url.pathname.startsWith('/api/v1/'))
        throw new HttpError(404, `no route ${method} ${url.pathname} (the API lives under /api/v1)`);
      if (!authorised(req)) throw new HttpError(401, 'missing or wrong API key (send X-API-Key)');
      const parts = url.pathname
        .slice('/api/v1/'.length)
        .split('/')
        .filter((p) => p !== '')
        .map(decodeURIComponent);
      const body = method === 'POST' || method === 'PUT' ? await readBody(req) : {};
      const handler = handlers[`${method} ${parts.join('/')}`];
      let result: unknown;
      if (handler) {
        result = await handler(body);
      } else {
        result = dynamicRoute(method, parts);
        if (result === undefined) throw new HttpError(404, `no route ${method} ${url.pathname}`);
      }
      send(res, 200, result);
    } catch (err) {
      if (err instanceof HttpError) return send(res, err.status, { detail: err.message });
      if (err instanceof MatpoError) return send(res, 400, { detail: err.message });
      console.error(`matpo serve --tinker: ${req.method} ${req.url}: ${(err as Error)?.stack ?? String(err)}`);
      send(res, 500, { detail: `internal error: ${(err as Error)?.message ?? String(err)}` });
    }
  }

  const server = http.createServer((req, res) => void handle(req, res));
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0;
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${urlHost}:${port}`,
    host,
    port,
    modelName,
    async close() {
      clearInterval(reclaimTimer);
      await new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      });
      for (const m of models.values()) {
        m.closed = true;
        m.queue.close('the server is shutting down');
      }
      await Promise.all([...models.values()].map(async (m) => (await m.ready.catch(() => null))?.close()));
      models.clear();
      await samplers.close();
    },
  };
}
