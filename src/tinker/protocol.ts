/**
 * Request bodies of the Tinker JSON protocol (SDK 0.21.0, see ../shared/TINKER.md §4), as zod
 * schemas. Top-level objects are loose (clients add `type` and future fields); nulls stand for
 * "absent", as the SDK sends them. Datums and their TensorData are validated by `datums.ts` /
 * `tensor-data.ts`, which name the exact element at fault.
 *
 * Training calls are split in two: `orderedCall` (model_id, seq_id) is checked when the request
 * arrives — a failure there is an HTTP 400 — while the rest of the body is checked when the call's
 * turn comes, so a bad body becomes a failed future and never leaves a hole in the seq_id order.
 */
import { z } from 'zod';
import { InvalidArgumentError } from '../core/errors.ts';

const opt = <T extends z.ZodType>(t: T) => t.nullish();
const int = () => z.number().int();
const metadata = z.record(z.string(), z.unknown());

export const createSessionBody = z.looseObject({
  tags: opt(z.array(z.string())),
  user_metadata: opt(metadata),
  sdk_version: opt(z.string()),
  project_id: opt(z.string()),
});

export const sessionBody = z.looseObject({ session_id: z.string().min(1) });

export const loraConfigBody = z.looseObject({
  rank: int().min(1).max(4096),
  seed: opt(int().min(0)),
  alpha: opt(z.number().positive()),
  train_unembed: opt(z.boolean()),
  train_mlp: opt(z.boolean()),
  train_attn: opt(z.boolean()),
});

export const createModelBody = z.looseObject({
  session_id: z.string().min(1),
  model_seq_id: int().min(0),
  base_model: z.string().min(1),
  user_metadata: opt(metadata),
  lora_config: opt(loraConfigBody),
});

export const modelIdBody = z.looseObject({ model_id: z.string().min(1) });

export const orderedCall = z.looseObject({ model_id: z.string().min(1), seq_id: int() });

const lossInput = z.looseObject({
  data: z.unknown(),
  loss_fn: z.string(),
  loss_fn_config: opt(z.record(z.string(), z.number())),
});
export const forwardBody = z.looseObject({ forward_input: lossInput });
export const forwardBackwardBody = z.looseObject({ forward_backward_input: lossInput });

export const optimStepBody = z.looseObject({
  adam_params: z.looseObject({
    learning_rate: z.number().min(0).default(1e-4),
    beta1: z.number().min(0).lt(1).default(0.9),
    beta2: z.number().min(0).lt(1).default(0.95),
    eps: z.number().positive().default(1e-12),
    weight_decay: z.number().min(0).default(0),
    grad_clip_norm: z.number().min(0).default(0),
  }),
});

export const saveWeightsBody = z.looseObject({
  path: z.string().min(1),
  overwrite: opt(z.boolean()),
  ttl_seconds: opt(int()),
});

export const saveForSamplerBody = z.looseObject({
  path: opt(z.string().min(1)),
  sampling_session_seq_id: opt(int().min(0)),
  ttl_seconds: opt(int()),
});

export const loadWeightsBody = z.looseObject({
  path: z.string().min(1),
  optimizer: opt(z.boolean()),
});

export const createSamplingSessionBody = z.looseObject({
  session_id: z.string().min(1),
  sampling_session_seq_id: int().min(0),
  base_model: opt(z.string().min(1)),
  model_path: opt(z.string().min(1)),
});

export const sampleBody = z.looseObject({
  sampling_session_id: opt(z.string().min(1)),
  base_model: opt(z.string().min(1)),
  model_path: opt(z.string().min(1)),
  seq_id: opt(int()),
  num_samples: opt(int().min(1).max(256)),
  prompt: z.unknown(),
  sampling_params: z.looseObject({
    max_tokens: opt(int().min(0)),
    seed: opt(int()),
    stop: opt(z.union([z.string(), z.array(z.string()), z.array(int().min(0))])),
    temperature: opt(z.number().min(0)),
    top_k: opt(int()),
    top_p: opt(z.number().gt(0).max(1)),
  }),
  prompt_logprobs: opt(z.boolean()),
  topk_prompt_logprobs: opt(int().min(0)),
});

export const retrieveFutureBody = z.looseObject({
  request_id: z.string().min(1),
  allow_metadata_only: opt(z.boolean()),
});

export const weightsInfoBody = z.looseObject({ tinker_path: z.string().min(1) });

/** Parse with `schema`; the first problem becomes an InvalidArgumentError naming the field path. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown, prefix = ''): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const path = [prefix, ...issue.path.map(String)].filter((s) => s !== '').join('.');
  throw new InvalidArgumentError(path || 'body', issue.message);
}
