/**
 * How a Tinker training client maps onto the embedded engine: one `EmbeddedPolicy` (its own worker
 * thread) per training client, created from the served base model directory.
 *
 *   LoRA client (`lora_config` given)   the base is frozen and only the adapters train (rank r, alpha,
 *                                       attention / MLP / unembedding groups as Tinker names them);
 *                                       training state = the PEFT adapter + its AdamW moments;
 *                                       sampler weights = a full model directory with the adapter merged.
 *   full client (no `lora_config`)      every weight trains; training state = the model directory + AdamW
 *                                       moments; sampler weights = the model directory.
 *
 * A directory holding `adapter_config.json` is an adapter on the served base; anything else is a full
 * model directory (`loadSamplerPolicy`).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { LoraConfig } from '../model/lora.ts';
import { EmbeddedPolicy } from '../policy/embedded.ts';

export type TinkerLoraConfig = LoraConfig;

export interface EngineOptions {
  threads?: number;
  kernels?: 'native' | 'reference';
}

/** A fresh training client on `baseDir`: LoRA adapters when `lora` is given, else full fine-tuning. */
export async function createTrainingPolicy(
  baseDir: string,
  lora: TinkerLoraConfig | null,
  options: EngineOptions,
): Promise<EmbeddedPolicy> {
  return EmbeddedPolicy.load(baseDir, { threads: options.threads, kernels: options.kernels, ...(lora ? { lora } : {}) });
}

/** Write the training state (adapter or weights, plus the optimizer moments) into `dir`. */
export async function saveTrainingState(policy: EmbeddedPolicy, dir: string): Promise<void> {
  if (policy.lora) await policy.saveAdapter(dir);
  else await policy.save(dir);
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
  const engine = { threads: options.threads, kernels: options.kernels };
  const policy = lora ? await EmbeddedPolicy.load(baseDir, { ...engine, adapter: stateDir }) : await EmbeddedPolicy.load(stateDir, engine);
  try {
    if (optimizer) await policy.loadOptimizerState(stateDir);
  } catch (err) {
    await policy.close();
    throw err;
  }
  return policy;
}

/** Write weights a sampler loads as a plain model directory (a LoRA client's adapter merged in). */
export async function saveSamplerWeights(policy: EmbeddedPolicy, dir: string): Promise<void> {
  if (policy.lora) await policy.saveMerged(dir);
  else await policy.save(dir);
}

/** The engine that samples from `dir`: a full model directory, or an adapter on the served base. */
export function loadSamplerPolicy(baseDir: string, dir: string, options: EngineOptions): Promise<EmbeddedPolicy> {
  const engine = { threads: options.threads, kernels: options.kernels };
  return existsSync(join(dir, 'adapter_config.json'))
    ? EmbeddedPolicy.load(baseDir, { ...engine, adapter: dir })
    : EmbeddedPolicy.load(dir, engine);
}
