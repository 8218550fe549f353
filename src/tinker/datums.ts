/**
 * From Tinker datums to the engine's sequences, and back.
 *
 * A Tinker datum has a model input x[0..N) and per-position targets: position t predicts
 * `target_tokens[t]` (shape [N], or [N, K] for top-K distillation), so the target logprob is
 *     ℓ_t(k) = log p(target[t, k] | x[0..t]).
 * The engine's forward over a sequence s gives log p(s[u] | s[<u]) at every u ≥ 1 (0 at u = 0). So
 * with the MAIN sequence s = x ++ [target[N−1, 0]] (length N + 1), ℓ_t = logprob_s[t + 1] exactly for
 * every element whose target is the next token of s — for the usual next-token alignment
 * (input = seq[:-1], targets = seq[1:]) that is every element, and one forward of N + 1 tokens gives
 * all of them. Any other element (a target that is not x[t+1]) is computed exactly by a PROBE
 * sequence x[0..t] ++ [target[t, k]] whose last logprob is ℓ_t(k); probes are batched with the main
 * sequences, and their total size is bounded by a token budget (past it the request is refused naming
 * `target_tokens`). Gradients flow the same way: ∂L/∂ℓ goes to the position the logprob came from.
 *
 * `parseDatums` validates a ForwardBackwardInput's data for a given loss: encoded_text chunks only,
 * token ids inside the vocabulary, every input tensor's first dimension equal to the input length N,
 * integer targets, the loss's required inputs present and no unknown ones, and the same shape for all
 * per-token inputs.
 */
import { InvalidArgumentError } from '../core/errors.ts';
import { LOSS_SPECS, type LossInputs, type LossName } from './losses.ts';
import { decodeTensor, type DenseTensor } from './tensor-data.ts';

export interface ParsedDatum {
  input: number[];
  inputs: LossInputs;
}

/** Where each target element's logprob comes from: engine sequence `seq`, position `pos`. */
export interface SequencePlan {
  sequences: number[][];
  /** Per datum, per target element (row-major): [sequence index, position]. */
  sources: Int32Array[];
  probeTokens: number;
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** The tokens of a ModelInput (`{chunks: [{type: "encoded_text", tokens}]}`); images are refused. */
export function modelInputTokens(raw: unknown, field: string, vocabSize: number): number[] {
  if (!isObject(raw) || !Array.isArray(raw.chunks)) throw new InvalidArgumentError(field, 'expected a ModelInput {chunks: [...]}');
  const out: number[] = [];
  raw.chunks.forEach((c: unknown, i: number) => {
    const f = `${field}.chunks[${i}]`;
    if (!isObject(c)) throw new InvalidArgumentError(f, 'expected a chunk object');
    const type = c.type ?? 'encoded_text';
    if (type !== 'encoded_text')
      throw new InvalidArgumentError(`${f}.type`, `"${String(type)}" chunks are not supported by this server (text models only)`);
    if (!Array.isArray(c.tokens)) throw new InvalidArgumentError(`${f}.tokens`, 'expected an array of token ids');
    c.tokens.forEach((t: unknown, j: number) => {
      if (!(typeof t === 'number' && Number.isInteger(t) && t >= 0 && t < vocabSize)) {
        throw new InvalidArgumentError(`${f}.tokens[${j}]`, `token id ${JSON.stringify(t)} is outside the vocabulary [0, ${vocabSize})`);
      }
      out.push(t);
    });
  });
  return out;
}

/** Validate the datums of a forward / forward_backward call for `loss`. */
export function parseDatums(raw: unknown, loss: LossName, vocabSize: number, field = 'data'): ParsedDatum[] {
  if (!Array.isArray(raw) || raw.length === 0) throw new InvalidArgumentError(field, 'expected a non-empty array of datums');
  const spec = LOSS_SPECS[loss];
  const allowed = new Set([...spec.required, ...spec.optional]);
  return raw.map((d: unknown, i: number) => {
    const f = `${field}[${i}]`;
    if (!isObject(d)) throw new InvalidArgumentError(f, 'expected a Datum {model_input, loss_fn_inputs}');
    const input = modelInputTokens(d.model_input, `${f}.model_input`, vocabSize);
    if (input.length === 0) throw new InvalidArgumentError(`${f}.model_input`, 'is empty');
    const N = input.length;
    const li = d.loss_fn_inputs;
    if (!isObject(li)) throw new InvalidArgumentError(`${f}.loss_fn_inputs`, 'expected an object of TensorData');
    for (const k of Object.keys(li)) {
      if (!allowed.has(k))
        throw new InvalidArgumentError(`${f}.loss_fn_inputs.${k}`, `not an input of ${loss} (it takes ${[...allowed].join(', ')})`);
    }
    for (const k of spec.required)
      if (li[k] === undefined || li[k] === null) throw new InvalidArgumentError(`${f}.loss_fn_inputs.${k}`, `is required by ${loss}`);
    const tensors: Record<string, DenseTensor> = {};
    for (const [k, v] of Object.entries(li)) {
      if (v === null || v === undefined) continue;
      const t = decodeTensor(v, `${f}.loss_fn_inputs.${k}`);
      if (t.shape[0] !== N)
        throw new InvalidArgumentError(`${f}.loss_fn_inputs.${k}`, `first dimension ${t.shape[0]} must equal the model input length ${N}`);
      tensors[k] = t;
    }
    const target = tensors.target_tokens;
    const tf = `${f}.loss_fn_inputs.target_tokens`;
    if (target.shape.length > 2) throw new InvalidArgumentError(tf, `expected shape [N] or [N, K], got [${target.shape.join(', ')}]`);
    if (target.shape.length === 2 && loss !== 'cross_entropy')
      throw new InvalidArgumentError(tf, `${loss} takes 1-D targets [N]; [N, K] targets are for cross_entropy`);
    target.data.forEach((t, j) => {
      if (!(Number.isInteger(t) && t >= 0 && t < vocabSize))
        throw new InvalidArgumentError(`${tf}.data[${j}]`, `token id ${t} is outside the vocabulary [0, ${vocabSize})`);
    });
    for (const [k, t] of Object.entries(tensors)) {
      if (k === 'target_tokens') continue;
      if (t.shape.join(',') !== target.shape.join(',')) {
        throw new InvalidArgumentError(
          `${f}.loss_fn_inputs.${k}`,
          `shape [${t.shape.join(', ')}] differs from target_tokens [${target.shape.join(', ')}]`,
        );
      }
    }
    return { input, inputs: tensors as unknown as LossInputs };
  });
}

/** Build the engine sequences (main + probes) for the datums; refuse past `maxProbeTokens` extra tokens. */
export function planSequences(datums: readonly ParsedDatum[], maxProbeTokens: number, field = 'data'): SequencePlan {
  const sequences: number[][] = [];
  const sources: Int32Array[] = [];
  let probeTokens = 0;
  datums.forEach((d, i) => {
    const x = d.input;
    const N = x.length;
    const target = d.inputs.target_tokens;
    const K = target.shape.length === 2 ? target.shape[1] : 1;
    const main = sequences.length;
    sequences.push([...x, target.data[(N - 1) * K]]);
    const src = new Int32Array(2 * N * K);
    const probes = new Map<string, number>();
    for (let t = 0; t < N; t++) {
      for (let k = 0; k < K; k++) {
        const e = t * K + k;
        const tok = target.data[e];
        const next = t < N - 1 ? x[t + 1] : sequences[main][N];
        if (tok === next) {
          src[2 * e] = main;
          src[2 * e + 1] = t + 1;
          continue;
        }
        const key = `${t}:${tok}`;
        let s = probes.get(key);
        if (s === undefined) {
          probeTokens += t + 2;
          if (probeTokens > maxProbeTokens) {
            throw new InvalidArgumentError(
              `${field}[${i}].loss_fn_inputs.target_tokens`,
              `targets that are not the next input token need ${probeTokens}+ extra tokens of forward (limit ${maxProbeTokens}); ` +
                'align them as model_input = seq[:-1], target_tokens = seq[1:]',
            );
          }
          s = sequences.length;
          sequences.push([...x.slice(0, t + 1), tok]);
          probes.set(key, s);
        }
        src[2 * e] = s;
        src[2 * e + 1] = t + 1;
      }
    }
    sources.push(src);
  });
  return { sequences, sources, probeTokens };
}

/** Gather each datum's target logprobs from the per-sequence engine logprobs. */
export function gatherLogprobs(plan: SequencePlan, seqLogprobs: readonly ArrayLike<number>[]): Float64Array[] {
  return plan.sources.map((src) => {
    const out = new Float64Array(src.length / 2);
    for (let e = 0; e < out.length; e++) out[e] = seqLogprobs[src[2 * e]][src[2 * e + 1]];
    return out;
  });
}

/** Scatter each datum's ∂L/∂ℓ onto per-sequence gradient arrays (zeros elsewhere). */
export function scatterGradients(plan: SequencePlan, dLogprobs: readonly ArrayLike<number>[]): Float32Array[] {
  const out = plan.sequences.map((s) => new Float32Array(s.length));
  plan.sources.forEach((src, i) => {
    const g = dLogprobs[i];
    for (let e = 0; e < g.length; e++) out[src[2 * e]][src[2 * e + 1]] += g[e];
  });
  return out;
}
