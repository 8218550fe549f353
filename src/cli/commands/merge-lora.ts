/**
 * `matpo merge-lora --model BASE --lora ADAPTER_DIR --out DIR [--dtype f32|bf16|f16]`: a full Hugging
 * Face model directory with the PEFT adapter merged in, W' = W + (lora_alpha / r)·B·A per adapted
 * module (PEFT's merge_and_unload), plus the base's tokenizer files. A tied model whose lm_head is
 * adapted is written untied. Runs in-process on the engine's kernels.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, FileFormatError } from '../../core/errors.ts';
import { parseFlags, required, type Command } from '../command.ts';
import type { SafetensorsDtype } from '../../model/safetensors.ts';

const DTYPES: Record<string, SafetensorsDtype> = { f32: 'F32', float32: 'F32', bf16: 'BF16', bfloat16: 'BF16', f16: 'F16', float16: 'F16' };

export const command: Command = {
  name: 'merge-lora',
  summary: 'Merge a PEFT LoRA adapter into its base model: a full Hugging Face model directory.',
  usage: 'merge-lora --model BASE --lora ADAPTER_DIR --out DIR [--dtype f32|bf16|f16]',
  async run(argv) {
    const { values } = parseFlags(argv, {
      model: { type: 'string' },
      lora: { type: 'string' },
      out: { type: 'string' },
      dtype: { type: 'string' },
    });
    const model = required(values, 'model');
    const lora = required(values, 'lora');
    const out = required(values, 'out');
    const dtypeArg = (values.dtype as string | undefined) ?? 'f32';
    const dtype = DTYPES[dtypeArg];
    if (!dtype) throw new ConfigError({ path: '--dtype', message: `expected f32, bf16 or f16, got "${dtypeArg}"` });
    if (!existsSync(join(lora, 'adapter_config.json'))) {
      const file = join(lora, 'adapter_config.json');
      throw new FileFormatError({ file, message: 'file not found (--lora needs a PEFT adapter directory)' });
    }
    const { getKernels } = await import('../../engine/index.ts');
    const { Engine } = await import('../../model/engine.ts');
    const engine = Engine.load(model, getKernels());
    const adapter = engine.loadAdapter(lora);
    engine.saveMerged(out, { dtype });
    console.log(`${out}: ${model} + LoRA r=${adapter.rank}, alpha=${adapter.alpha} on ${adapter.targets.join(', ')}, merged (${dtype})`);
  },
};
