/**
 * `TinkerClient`: the HTTP side of the Tinker JSON protocol (SDK 0.21.0 era; ../shared/TINKER.md),
 * for hosted Tinker, a self-hosted Tinker-compatible server (SkyRL) or `matpo serve --tinker`.
 *
 *   session    POST client/config (an answer of `{}` or a 404 is fine), create_session, then
 *              session_heartbeat every 10 s on an unref'd timer (one at a time; close() stops the
 *              timer and lets a heartbeat in flight finish, for at most 2 s).
 *   requests   every call carries `X-API-Key` (option or env TINKER_API_KEY), `Accept:
 *              application/json`. An initial POST is retried on 408, 409, 429, 5xx and network errors
 *              with backoff base·2ⁿ (±25 % jitter, capped, `retry-after(-ms)` honoured) for at most
 *              `retryBudgetMs`; the body is byte-identical on every attempt. Other 4xx fail at once.
 *   futures    a future endpoint answers `{request_id}`; `retrieve_future` is then long-polled:
 *              `try_again`, 408 and 5xx → poll again at once; 429 and network errors → backoff
 *              1, 2, 4 … 30 s; 400 → three more polls, then fail; a body with a top-level `error`
 *              → EndpointError naming the request type and the error's category. Consecutive
 *              failures (not try_again/408, which mean "still working") are bounded by the same budget.
 *   seq_id     each training model numbers its calls 1, 2, 3 … in the order they are made; POSTs are
 *              sent in that order (one at a time, so the server never waits on a gap), results are
 *              awaited concurrently. A retry resends the same seq_id with the same body.
 *   chunking   forward / forward_backward data are cut into chunks of ≤ 1024 datums and ≤ 5,000,000
 *              estimated bytes (10 bytes per token and per tensor element), each its own seq_id;
 *              outputs are concatenated in order, metrics merged by their `name:reduction` suffix.
 *   sampling   asample with `X-Tinker-Sampling-Backpressure: 1`: a 429 means "back off and resend the
 *              same request"; sampling seq_ids count from 0 per client; a 410 (promise lost) resends once.
 */
import { EndpointError, InvalidArgumentError, MatpoError } from '../core/errors.ts';

export const MAX_CHUNK_DATUMS = 1024;
export const MAX_CHUNK_BYTES = 5_000_000;

export interface WireTensor {
  data: number[];
  dtype: 'int64' | 'float32';
  shape?: number[];
}

export interface WireDatum {
  model_input: { chunks: { type: 'encoded_text'; tokens: number[] }[] };
  loss_fn_inputs: Record<string, WireTensor>;
}

export type TinkerLossName = 'cross_entropy' | 'importance_sampling' | 'ppo' | 'cispo' | 'dro';

export interface ForwardBackwardOutput {
  loss_fn_output_type?: string;
  loss_fn_outputs: Record<string, WireTensor>[];
  metrics: Record<string, number>;
}

export interface LoraSpec {
  rank: number;
  /** Sent only when it is not 32 (the value hosted Tinker uses; its SDK sends none). */
  alpha?: number;
  seed?: number;
  trainAttn: boolean;
  trainMlp: boolean;
  trainUnembed: boolean;
}

export interface AdamParams {
  learning_rate: number;
  beta1: number;
  beta2: number;
  eps: number;
  weight_decay: number;
  grad_clip_norm: number;
}

export interface SamplingParamsWire {
  max_tokens: number;
  seed?: number;
  stop?: string[] | number[];
  temperature: number;
  top_k: number;
  top_p: number;
}

export interface SampledSequence {
  tokens: number[];
  logprobs: number[] | null;
  stop_reason: string;
}

export interface TinkerClientOptions {
  /** Service root, e.g. http://127.0.0.1:8000 (the API lives under /api/v1; a trailing /api/v1 is accepted). */
  baseUrl: string;
  /** Sent as X-API-Key; default: env TINKER_API_KEY. */
  apiKey?: string;
  heartbeatMs?: number;
  /** First backoff delay of the initial-POST retries (doubles, capped at maxBackoffMs). Default 500 ms. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** First backoff of a retrieve_future poll after 429 / network error (1, 2, 4 … s). Default 1000 ms. */
  pollBackoffMs?: number;
  maxPollBackoffMs?: number;
  /** Time spent retrying one request (consecutive failures) before giving up. Default 5 min. */
  retryBudgetMs?: number;
  /** Per-HTTP-request time limit (a long poll is held ≤ 30 s by servers). Default 45 s. */
  requestTimeoutMs?: number;
  /** Chunk limits of forward / forward_backward (defaults: the SDK's 1024 datums, 5,000,000 bytes). */
  maxChunkDatums?: number;
  maxChunkBytes?: number;
  tags?: string[];
  log?: (line: string) => void;
}

/** Request types named in X-Tinker-Request-Type and in errors. */
export type RequestType =
  'CreateModel' | 'Forward' | 'ForwardBackward' | 'OptimStep' | 'SaveWeights' | 'SaveWeightsForSampler' | 'LoadWeights' | 'Sample';

const SDK_VERSION = '0.21.0';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const jitter = (ms: number) => ms * (0.75 + Math.random() * 0.5);

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** The server's own message from an error body ({detail}, {error}, {message} or text). */
function serverMessage(text: string): string {
  try {
    const j = JSON.parse(text) as unknown;
    if (isObject(j)) {
      const m = j.detail ?? j.error ?? j.message;
      if (typeof m === 'string') return m;
      if (m !== undefined) return JSON.stringify(m).slice(0, 300);
    }
  } catch {
    // not JSON
  }
  return text.slice(0, 300) || '(empty body)';
}

function retryAfterMs(res: Response): number | null {
  const ms = Number(res.headers.get('retry-after-ms'));
  if (Number.isFinite(ms) && ms > 0) return ms;
  const s = Number(res.headers.get('retry-after'));
  if (Number.isFinite(s) && s > 0) return s * 1000;
  return null;
}

function networkCode(err: unknown): string {
  const e = err as { name?: string; cause?: { code?: string }; message?: string };
  if (e.name === 'TimeoutError') return 'timeout';
  return e.cause?.code ?? e.message ?? String(err);
}

/** Estimated wire size of a datum: 10 bytes per model-input token and per tensor element (the SDK's estimate). */
export function estimateDatumBytes(d: WireDatum): number {
  let n = 0;
  for (const c of d.model_input.chunks) n += c.tokens.length;
  for (const t of Object.values(d.loss_fn_inputs)) n += t.data.length;
  return 10 * n;
}

/** Cut datums into chunks of ≤ maxDatums datums and ≤ maxBytes estimated bytes (a single larger datum is its own chunk). */
export function chunkDatums(datums: readonly WireDatum[], maxDatums = MAX_CHUNK_DATUMS, maxBytes = MAX_CHUNK_BYTES): WireDatum[][] {
  const chunks: WireDatum[][] = [];
  let cur: WireDatum[] = [];
  let bytes = 0;
  for (const d of datums) {
    const b = estimateDatumBytes(d);
    if (cur.length > 0 && (cur.length >= maxDatums || bytes + b > maxBytes)) {
      chunks.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(d);
    bytes += b;
  }
  if (cur.length > 0) chunks.push(cur);
  return chunks;
}

/**
 * Merge chunk metrics by reduction suffix (`name:sum`, `:mean` weighted by datum count, `:min`, `:max`);
 * keys with other reductions are kept from the first chunk that has them.
 */
export function mergeMetrics(parts: readonly { metrics: Record<string, number>; datums: number }[]): Record<string, number> {
  const out: Record<string, number> = {};
  const weight: Record<string, number> = {};
  for (const p of parts) {
    for (const [k, v] of Object.entries(p.metrics)) {
      const red = k.slice(k.lastIndexOf(':') + 1);
      if (!(k in out)) {
        out[k] = red === 'mean' ? v * p.datums : v;
        weight[k] = p.datums;
        continue;
      }
      if (red === 'sum') out[k] += v;
      else if (red === 'mean') {
        out[k] += v * p.datums;
        weight[k] += p.datums;
      } else if (red === 'min') out[k] = Math.min(out[k], v);
      else if (red === 'max') out[k] = Math.max(out[k], v);
    }
  }
  for (const k of Object.keys(out)) if (k.endsWith(':mean')) out[k] = weight[k] > 0 ? out[k] / weight[k] : out[k];
  return out;
}

interface PostOptions {
  /** Retry the POST on retryable failures (false: one attempt). */
  retry?: boolean;
  headers?: Record<string, string>;
  /** 404 is an answer (returns null) instead of an error. */
  allow404?: boolean;
  what: string;
}

export class TinkerClient {
  readonly root: string;
  sessionId = '';
  /** HTTP requests sent (every attempt and poll), for diagnostics and the benchmark. */
  requestsSent = 0;
  bytesSent = 0;
  private readonly options: TinkerClientOptions;
  private readonly apiKey: string | undefined;
  private heartbeat: NodeJS.Timeout | null = null;
  private lastHeartbeatOk = Date.now();
  private heartbeatWarned = false;
  /** The heartbeat in flight, if any (close() lets it finish, for at most 2 s). */
  private heartbeatInFlight: Promise<void> | null = null;
  private modelSeq = 0;
  private samplingSessionSeq = 0;
  private closed = false;

  private constructor(options: TinkerClientOptions) {
    let url: URL;
    try {
      url = new URL(options.baseUrl);
    } catch {
      throw new InvalidArgumentError('model.baseUrl', `not a valid URL: ${JSON.stringify(options.baseUrl)}`);
    }
    this.root = `${url.origin}${url.pathname.replace(/\/+$/, '').replace(/\/api\/v1$/, '')}/api/v1`;
    this.options = options;
    this.apiKey = options.apiKey || process.env.TINKER_API_KEY || undefined;
  }

  /** Client config, session and heartbeat. */
  static async connect(options: TinkerClientOptions): Promise<TinkerClient> {
    const c = new TinkerClient(options);
    await c.post('client/config', { sdk_version: SDK_VERSION }, { allow404: true, what: 'client/config' });
    const s = await c.post(
      'create_session',
      { tags: options.tags ?? ['matpo'], user_metadata: {}, sdk_version: SDK_VERSION, type: 'create_session' },
      { what: 'create_session' },
    );
    if (!isObject(s) || typeof s.session_id !== 'string')
      throw new EndpointError({ url: `${c.root}/create_session`, message: 'answer has no session_id' });
    c.sessionId = s.session_id;
    c.startHeartbeat();
    return c;
  }

  private log(line: string): void {
    (this.options.log ?? ((l: string) => process.stderr.write(`${l}\n`)))(line);
  }

  private startHeartbeat(): void {
    const every = this.options.heartbeatMs ?? 10_000;
    this.heartbeat = setInterval(() => {
      if (this.heartbeatInFlight) return;
      this.heartbeatInFlight = this.post(
        'session_heartbeat',
        { session_id: this.sessionId, type: 'session_heartbeat' },
        { retry: false, what: 'session_heartbeat' },
      )
        .then(
          () => {
            this.lastHeartbeatOk = Date.now();
            this.heartbeatWarned = false;
          },
          (err: unknown) => {
            if (!this.heartbeatWarned && Date.now() - this.lastHeartbeatOk > 12 * every) {
              this.heartbeatWarned = true;
              this.log(
                `tinker: no successful session heartbeat for ${((Date.now() - this.lastHeartbeatOk) / 1000).toFixed(0)} s: ` +
                  (err as Error).message,
              );
            }
          },
        )
        .finally(() => (this.heartbeatInFlight = null));
    }, every);
    this.heartbeat.unref();
  }

  private headers(extra?: Record<string, string>): Record<string, string> {
    return {
      'content-type': 'application/json',
      accept: 'application/json',
      'user-agent': 'matpo-tinker-client',
      ...(this.apiKey ? { 'x-api-key': this.apiKey } : {}),
      ...extra,
    };
  }

  private backoff(attempt: number, base: number, max: number): number {
    return jitter(Math.min(max, base * 2 ** attempt));
  }

  /**
   * POST a JSON body to a direct endpoint (or the initial POST of a future); retries retryable
   * failures with the same body. Returns the parsed JSON answer (null for an allowed 404).
   */
  async post(path: string, body: unknown, opts: PostOptions): Promise<unknown> {
    const url = `${this.root}/${path}`;
    const text = JSON.stringify(body);
    const budget = this.options.retryBudgetMs ?? 300_000;
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new MatpoError('closed', `tinker: client closed during ${opts.what}`);
      let res: Response;
      try {
        this.requestsSent++;
        this.bytesSent += text.length;
        res = await fetch(url, {
          method: 'POST',
          headers: this.headers(opts.headers),
          body: text,
          signal: AbortSignal.timeout(this.options.requestTimeoutMs ?? 45_000),
        });
      } catch (err) {
        const code = networkCode(err);
        if (opts.retry === false || Date.now() - started > budget) {
          throw new EndpointError({
            url,
            message: `${opts.what}: cannot reach the service (${code}) after ${attempt + 1} attempt(s)`,
            cause: err,
          });
        }
        await sleep(this.backoff(attempt, this.options.backoffMs ?? 500, this.options.maxBackoffMs ?? 10_000));
        continue;
      }
      const answer = await res.text();
      if (res.ok) {
        if (answer.trim() === '') return {};
        try {
          return JSON.parse(answer) as unknown;
        } catch {
          throw new EndpointError({ url, status: res.status, message: `${opts.what}: answer is not JSON: ${answer.slice(0, 200)}` });
        }
      }
      if (res.status === 404 && opts.allow404) return null;
      const should = res.headers.get('x-should-retry');
      const retryable =
        should === 'true' || (should !== 'false' && (res.status === 408 || res.status === 409 || res.status === 429 || res.status >= 500));
      if (!retryable || opts.retry === false || Date.now() - started > budget) {
        const msg = serverMessage(answer);
        const hint =
          res.status === 404 && /unknown/i.test(msg)
            ? ' (the service does not know it: did it restart? continue from the last checkpoint with --resume)'
            : '';
        throw new EndpointError({ url, status: res.status, message: `${opts.what}: ${msg}${hint}` });
      }
      await sleep(retryAfterMs(res) ?? this.backoff(attempt, this.options.backoffMs ?? 500, this.options.maxBackoffMs ?? 10_000));
    }
  }

  /** Long-poll retrieve_future until the result, a terminal error, or the failure budget runs out. */
  async retrieve(requestId: string, type: RequestType): Promise<Record<string, unknown>> {
    const url = `${this.root}/retrieve_future`;
    const budget = this.options.retryBudgetMs ?? 300_000;
    let failingSince: number | null = null;
    let badRequests = 0;
    let backoffs = 0;
    for (let iteration = 0; ; iteration++) {
      if (this.closed) throw new MatpoError('closed', `tinker: client closed while waiting for ${type}`);
      const text = JSON.stringify({ request_id: requestId, allow_metadata_only: false });
      const headers = this.headers({ 'x-tinker-request-iteration': String(iteration), 'x-tinker-request-type': type });
      const fail = (message: string, status?: number, cause?: unknown): never => {
        throw new EndpointError({ url, status, message: `${type} (request ${requestId}): ${message}`, cause });
      };
      const failing = (what: string): void => {
        failingSince ??= Date.now();
        if (Date.now() - failingSince > budget) fail(`gave up after ${((Date.now() - failingSince) / 1000).toFixed(0)} s of ${what}`);
      };
      let res: Response;
      try {
        this.requestsSent++;
        this.bytesSent += text.length;
        res = await fetch(url, {
          method: 'POST',
          headers,
          body: text,
          signal: AbortSignal.timeout(this.options.requestTimeoutMs ?? 45_000),
        });
      } catch (err) {
        failing(`network errors (${networkCode(err)})`);
        await sleep(this.backoff(backoffs++, this.options.pollBackoffMs ?? 1000, this.options.maxPollBackoffMs ?? 30_000));
        continue;
      }
      const answer = await res.text();
      if (res.status === 408) {
        failingSince = null;
        continue;
      }
      if (res.status >= 500) {
        failing(`HTTP ${res.status} answers (${serverMessage(answer)})`);
        continue;
      }
      if (res.status === 429) {
        failing('HTTP 429 answers');
        await sleep(
          retryAfterMs(res) ?? this.backoff(backoffs++, this.options.pollBackoffMs ?? 1000, this.options.maxPollBackoffMs ?? 30_000),
        );
        continue;
      }
      if (res.status === 400 && ++badRequests <= 3) continue;
      if (res.status === 410) fail(`the service lost this request (HTTP 410: ${serverMessage(answer)})`, 410);
      if (!res.ok) fail(serverMessage(answer), res.status);
      let body: unknown;
      try {
        body = JSON.parse(answer);
      } catch {
        fail(`answer is not JSON: ${answer.slice(0, 200)}`, res.status);
      }
      if (!isObject(body)) return fail('answer is not a JSON object', res.status);
      failingSince = null;
      backoffs = 0;
      if (body.type === 'try_again') continue;
      if (body.status === 'complete_metadata') continue;
      if ('error' in body) {
        const category = typeof body.category === 'string' ? body.category : 'unknown';
        fail(`failed (${category} error): ${typeof body.error === 'string' ? body.error : JSON.stringify(body.error)}`);
      }
      return body;
    }
  }

  /** POST a future endpoint and return its request id. */
  async submit(path: string, body: unknown, type: RequestType, headers?: Record<string, string>): Promise<string> {
    const r = await this.post(path, body, { what: `${path} (${type})`, headers });
    if (!isObject(r) || typeof r.request_id !== 'string')
      throw new EndpointError({
        url: `${this.root}/${path}`,
        message: `${type}: answer has no request_id: ${JSON.stringify(r).slice(0, 200)}`,
      });
    return r.request_id;
  }

  async createModel(baseModel: string, lora: LoraSpec | null, userMetadata: Record<string, string> = {}): Promise<TinkerModel> {
    const body: Record<string, unknown> = {
      session_id: this.sessionId,
      model_seq_id: this.modelSeq++,
      base_model: baseModel,
      user_metadata: userMetadata,
      type: 'create_model',
    };
    if (lora) {
      body.lora_config = {
        rank: lora.rank,
        ...(lora.alpha !== undefined && lora.alpha !== 32 ? { alpha: lora.alpha } : {}),
        ...(lora.seed !== undefined ? { seed: lora.seed } : {}),
        train_unembed: lora.trainUnembed,
        train_mlp: lora.trainMlp,
        train_attn: lora.trainAttn,
      };
    }
    const id = await this.submit('create_model', body, 'CreateModel');
    const r = await this.retrieve(id, 'CreateModel');
    if (typeof r.model_id !== 'string')
      throw new EndpointError({
        url: `${this.root}/create_model`,
        message: `CreateModel: result has no model_id: ${JSON.stringify(r).slice(0, 200)}`,
      });
    return new TinkerModel(this, r.model_id);
  }

  get chunkLimits(): { datums: number; bytes: number } {
    return { datums: this.options.maxChunkDatums ?? MAX_CHUNK_DATUMS, bytes: this.options.maxChunkBytes ?? MAX_CHUNK_BYTES };
  }

  nextSamplingSessionSeq(): number {
    return this.samplingSessionSeq++;
  }

  /** A sampling session on a base model or a `tinker://…` sampler path. */
  async createSamplingSession(source: { baseModel: string } | { modelPath: string }): Promise<string> {
    const body = {
      session_id: this.sessionId,
      sampling_session_seq_id: this.nextSamplingSessionSeq(),
      ...('baseModel' in source ? { base_model: source.baseModel } : { model_path: source.modelPath }),
      type: 'create_sampling_session',
    };
    const r = await this.post('create_sampling_session', body, { what: 'create_sampling_session' });
    if (!isObject(r) || typeof r.sampling_session_id !== 'string')
      throw new EndpointError({ url: `${this.root}/create_sampling_session`, message: 'answer has no sampling_session_id' });
    return r.sampling_session_id;
  }

  /** One asample call (num_samples 1). 429 → back off and resend the same request; 410 → resend once. */
  async sample(samplingSessionId: string, seqId: number, prompt: readonly number[], params: SamplingParamsWire): Promise<SampledSequence> {
    const body = {
      sampling_session_id: samplingSessionId,
      seq_id: seqId,
      num_samples: 1,
      prompt: { chunks: [{ type: 'encoded_text', tokens: [...prompt] }] },
      sampling_params: params,
      prompt_logprobs: false,
      topk_prompt_logprobs: 0,
      type: 'sample',
    };
    for (let lost = 0; ; lost++) {
      const id = await this.submit('asample', body, 'Sample', { 'x-tinker-sampling-backpressure': '1' });
      let r: Record<string, unknown>;
      try {
        r = await this.retrieve(id, 'Sample');
      } catch (err) {
        if (err instanceof EndpointError && err.status === 410 && lost === 0) continue;
        throw err;
      }
      const seqs = r.sequences;
      if (!Array.isArray(seqs) || seqs.length < 1 || !isObject(seqs[0]) || !Array.isArray(seqs[0].tokens))
        throw new EndpointError({
          url: `${this.root}/asample`,
          message: `Sample: result has no sequences[0].tokens: ${JSON.stringify(r).slice(0, 200)}`,
        });
      const s = seqs[0];
      return {
        tokens: s.tokens as number[],
        logprobs: Array.isArray(s.logprobs) ? (s.logprobs as number[]) : null,
        stop_reason: String(s.stop_reason ?? ''),
      };
    }
  }

  async close(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    if (this.heartbeatInFlight) await Promise.race([this.heartbeatInFlight, new Promise((r) => setTimeout(r, 2000).unref())]);
    this.closed = true;
  }
}

/** One training client (model) of a session: seq_id-ordered calls. */
export class TinkerModel {
  readonly client: TinkerClient;
  readonly modelId: string;
  private seq = 0;
  /** Submissions run one after another, in seq_id order. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(client: TinkerClient, modelId: string) {
    this.client = client;
    this.modelId = modelId;
  }

  /** The seq_id the next call will take (for tests and diagnostics). */
  get nextSeqId(): number {
    return this.seq + 1;
  }

  /** Take the next seq_id and POST after every earlier call's POST; resolves with the request id. */
  private enqueue(path: string, type: RequestType, build: (seqId: number) => Record<string, unknown>): Promise<string> {
    const seqId = ++this.seq;
    const body = build(seqId);
    const p = this.chain.then(() => this.client.submit(path, body, type));
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async call(path: string, type: RequestType, build: (seqId: number) => Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.client.retrieve(await this.enqueue(path, type, build), type);
  }

  private async lossCall(
    kind: 'forward' | 'forward_backward',
    datums: readonly WireDatum[],
    lossFn: TinkerLossName,
    config?: Record<string, number>,
  ): Promise<ForwardBackwardOutput> {
    const type: RequestType = kind === 'forward' ? 'Forward' : 'ForwardBackward';
    const field = kind === 'forward' ? 'forward_input' : 'forward_backward_input';
    const chunks = chunkDatums(datums, this.client.chunkLimits.datums, this.client.chunkLimits.bytes);
    const ids = chunks.map((data) =>
      this.enqueue(kind, type, (seqId) => ({
        [field]: { data, loss_fn: lossFn, ...(config ? { loss_fn_config: config } : {}) },
        model_id: this.modelId,
        seq_id: seqId,
      })),
    );
    const results = await Promise.all(ids.map(async (id) => this.client.retrieve(await id, type)));
    const outputs: Record<string, WireTensor>[] = [];
    results.forEach((r, i) => {
      const outs = r.loss_fn_outputs;
      if (!Array.isArray(outs) || outs.length !== chunks[i].length)
        throw new EndpointError({
          url: `${this.client.root}/${kind}`,
          message: `${type}: expected ${chunks[i].length} loss_fn_outputs, got ${Array.isArray(outs) ? outs.length : 'none'}`,
        });
      outputs.push(...(outs as Record<string, WireTensor>[]));
    });
    return {
      loss_fn_output_type: typeof results[0]?.loss_fn_output_type === 'string' ? results[0].loss_fn_output_type : undefined,
      loss_fn_outputs: outputs,
      metrics: mergeMetrics(
        results.map((r, i) => ({ metrics: isObject(r.metrics) ? (r.metrics as Record<string, number>) : {}, datums: chunks[i].length })),
      ),
    };
  }

  forward(
    datums: readonly WireDatum[],
    lossFn: TinkerLossName = 'cross_entropy',
    config?: Record<string, number>,
  ): Promise<ForwardBackwardOutput> {
    return this.lossCall('forward', datums, lossFn, config);
  }

  forwardBackward(datums: readonly WireDatum[], lossFn: TinkerLossName, config?: Record<string, number>): Promise<ForwardBackwardOutput> {
    return this.lossCall('forward_backward', datums, lossFn, config);
  }

  async optimStep(adam: AdamParams): Promise<Record<string, number>> {
    const r = await this.call('optim_step', 'OptimStep', (seqId) => ({
      adam_params: adam,
      model_id: this.modelId,
      seq_id: seqId,
      type: 'optim_step',
    }));
    return isObject(r.metrics) ? (r.metrics as Record<string, number>) : {};
  }

  /** Full training state (weights + optimizer) → `tinker://…/weights/<name>`. */
  async saveWeights(name: string): Promise<string> {
    const r = await this.call('save_weights', 'SaveWeights', (seqId) => ({
      model_id: this.modelId,
      path: name,
      seq_id: seqId,
      overwrite: true,
      type: 'save_weights',
    }));
    if (typeof r.path !== 'string')
      throw new EndpointError({ url: `${this.client.root}/save_weights`, message: 'SaveWeights: result has no path' });
    return r.path;
  }

  /** Ephemeral sampler weights of the current state → a sampling session id. */
  async samplerSession(): Promise<string> {
    const samplingSeq = this.client.nextSamplingSessionSeq();
    const r = await this.call('save_weights_for_sampler', 'SaveWeightsForSampler', (seqId) => ({
      model_id: this.modelId,
      seq_id: seqId,
      sampling_session_seq_id: samplingSeq,
      type: 'save_weights_for_sampler',
    }));
    if (typeof r.sampling_session_id === 'string') return r.sampling_session_id;
    if (typeof r.path === 'string') return this.client.createSamplingSession({ modelPath: r.path });
    throw new EndpointError({
      url: `${this.client.root}/save_weights_for_sampler`,
      message: 'SaveWeightsForSampler: result has neither sampling_session_id nor path',
    });
  }

  /** Ask the service to free this model (one attempt; the outcome is not awaited). */
  async unload(): Promise<void> {
    await this.client.post('unload_model', { model_id: this.modelId, type: 'unload_model' }, { retry: false, what: 'unload_model' });
  }

  async loadWeights(path: string, optimizer: boolean): Promise<void> {
    await this.call('load_weights', 'LoadWeights', (seqId) => ({
      model_id: this.modelId,
      path,
      optimizer,
      seq_id: seqId,
      type: 'load_weights',
    }));
  }
}
