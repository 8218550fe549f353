/**
 * How a Tinker training client maps onto the embedded engine: one `EmbeddedPolicy` (its own worker
 * thread) per training client, created from the served base model directory.
 *
 * LoRA: a `lora_config` asks for adapters of rank r on the attention / MLP / unembedding groups.
 * `createTrainingPolicy` is the ONE place that decides how such a client is built; this build of the
 * engine has no adapters yet, so a LoRA client is trained as FULL fine-tuning of every weight (its
 * config is kept and reported by get_info / weights_info). Saved training state is a model directory
 * plus the AdamW moments; sampler weights are a model directory.
 */
import { EmbeddedPolicy } from '../policy/embedded.ts';

export interface TinkerLoraConfig {
  rank: number;
  alpha: number;
  trainAttn: boolean;
  trainMlp: boolean;
  trainUnembed: boolean;
  seed: number;
}

export interface EngineOptions {
  threads?: number;
  kernels?: 'native' | 'reference';
}

/** True when LoRA clients really train adapters (false: they are trained as full fine-tuning). */
export const LORA_TRAINS_ADAPTERS = false;

/** A fresh training client on `baseDir` (LoRA clients: see the file comment). */
export async function createTrainingPolicy(
  baseDir: string,
  lora: TinkerLoraConfig | null,
  options: EngineOptions,
): Promise<EmbeddedPolicy> {
  void lora;
  return EmbeddedPolicy.load(baseDir, { threads: options.threads, kernels: options.kernels });
}

/** Write the full training state (weights + optimizer) into `dir`. */
export async function saveTrainingState(policy: EmbeddedPolicy, dir: string): Promise<void> {
  await policy.save(dir);
  await policy.saveOptimizerState(dir);
}

/** A training client restored from a saved training state (optimizer moments too when `optimizer`). */
export async function loadTrainingState(
  baseDir: string,
  stateDir: string,
  lora: TinkerLoraConfig | null,
  optimizer: boolean,
  options: EngineOptions,
): Promise<EmbeddedPolicy> {
  void baseDir;
  void lora;
  const policy = await EmbeddedPolicy.load(stateDir, { threads: options.threads, kernels: options.kernels });
  try {
    if (optimizer) await policy.loadOptimizerState(stateDir);
  } catch (err) {
    await policy.close();
    throw err;
  }
  return policy;
}

/** Write weights a sampler can load as a plain model directory. */
export async function saveSamplerWeights(policy: EmbeddedPolicy, dir: string): Promise<void> {
  await policy.save(dir);
}
