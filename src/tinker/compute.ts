/**
 * Tinker's `forward` and `forward_backward` on an `EmbeddedPolicy`.
 *
 * The datums become engine sequences (`datums.ts`: one main sequence per datum, plus probes for
 * targets that are not the next input token). forward_backward hands the policy a `LossFn` that,
 * for every sequence of a micro-batch, reads the target logprobs ℓ sourced from it, evaluates the
 * built-in loss element by element (`losses.ts`) and returns ∂L/∂ℓ at those positions (0 elsewhere);
 * the policy backpropagates it and ADDS the gradient to what is already accumulated, so successive
 * calls (and the SDK's chunks of one call) accumulate until optim_step. `forward` runs the same loss
 * without any gradient.
 *
 * Result: ForwardBackwardOutput with, per datum, `logprobs` (ℓ, target_tokens' shape, float32) and
 * `elementwise_loss`, and the metric `loss:sum` (the summed loss of this call).
 */
import type { LossFn } from '../core/policy.ts';
import type { Datum } from '../core/records.ts';
import type { EmbeddedPolicy } from '../policy/embedded.ts';
import { gatherLogprobs, planSequences, type ParsedDatum } from './datums.ts';
import { datumLoss, elementLoss, type LossName } from './losses.ts';
import { encodeFloat32, type WireTensor } from './tensor-data.ts';

export interface ForwardBackwardOutput {
  loss_fn_output_type: string;
  loss_fn_outputs: Record<string, WireTensor>[];
  metrics: Record<string, number>;
}

export interface ComputeOptions {
  maxProbeTokens: number;
  microBatchTokens?: number;
}

function output(
  datums: readonly ParsedDatum[],
  logprobs: Float64Array[],
  elementwise: Float64Array[],
  loss: number,
): ForwardBackwardOutput {
  return {
    loss_fn_output_type: 'TensorData',
    loss_fn_outputs: datums.map((d, i) => ({
      logprobs: encodeFloat32(logprobs[i], d.inputs.target_tokens.shape),
      elementwise_loss: encodeFloat32(elementwise[i], d.inputs.target_tokens.shape),
    })),
    metrics: { 'loss:sum': loss },
  };
}

/** Forward only: the loss and the target logprobs, no gradient. */
export async function tinkerForward(
  policy: EmbeddedPolicy,
  datums: readonly ParsedDatum[],
  loss: LossName,
  config: Record<string, number>,
  options: ComputeOptions,
): Promise<ForwardBackwardOutput> {
  const plan = planSequences(datums, options.maxProbeTokens);
  const f = await policy.forward(
    plan.sequences.map((tokens) => ({ tokens })),
    { microBatchTokens: options.microBatchTokens },
  );
  const lps = gatherLogprobs(plan, f.logprobs);
  let total = 0;
  const elementwise = datums.map((d, i) => {
    const r = datumLoss(loss, config, d.inputs, lps[i]);
    total += r.loss;
    return r.elementwise;
  });
  return output(datums, lps, elementwise, total);
}

/** Forward + backward: the loss's gradient is added to the policy's accumulated gradient. */
export async function tinkerForwardBackward(
  policy: EmbeddedPolicy,
  datums: readonly ParsedDatum[],
  loss: LossName,
  config: Record<string, number>,
  options: ComputeOptions,
): Promise<ForwardBackwardOutput> {
  const plan = planSequences(datums, options.maxProbeTokens);
  // which (datum, element) pairs each engine sequence supplies
  const bySeq: { datum: number; element: number; pos: number }[][] = plan.sequences.map(() => []);
  plan.sources.forEach((src, i) => {
    for (let e = 0; e < src.length / 2; e++) bySeq[src[2 * e]].push({ datum: i, element: e, pos: src[2 * e + 1] });
  });
  const engineDatums: Datum[] = plan.sequences.map((tokens, j) => ({
    tokens,
    mask: [],
    advantages: [],
    oldLogprobs: [],
    questionId: '',
    rolloutId: '',
    sequenceId: String(j),
    role: 'single',
  }));
  const seqIndex = new Map<Datum, number>(engineDatums.map((d, j) => [d, j]));
  const logprobs = datums.map((d) => new Float64Array(d.inputs.target_tokens.data.length));
  const elementwise = datums.map((d) => new Float64Array(d.inputs.target_tokens.data.length));
  const lossFn: LossFn = (batch, fwd) => {
    let sum = 0;
    const dLogprobs = batch.map((d, m) => {
      const g = new Float32Array(d.tokens.length);
      for (const { datum, element, pos } of bySeq[seqIndex.get(d)!]) {
        const l = fwd.logprobs[m][pos];
        const r = elementLoss(loss, config, datums[datum].inputs, element, l);
        logprobs[datum][element] = l;
        elementwise[datum][element] = r.term;
        g[pos] += r.grad;
        sum += r.term;
      }
      return g;
    });
    return { loss: sum, dLogprobs, metrics: {} };
  };
  const r = await policy.forwardBackward(engineDatums, lossFn, { microBatchTokens: options.microBatchTokens });
  return output(datums, logprobs, elementwise, r.loss);
}
