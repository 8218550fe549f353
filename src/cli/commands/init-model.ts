/**
 * `matpo init-model --config <config.json|preset> --tokenizer DIR --out DIR [--seed N] [--dtype f32|bf16|f16]`:
 * a randomly initialised model directory in Hugging Face layout (config.json, model.safetensors,
 * generation_config.json, tokenizer files). With a preset the vocabulary size is the tokenizer's;
 * eos/bos come from the tokenizer when the config does not set them.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { ConfigError, FileFormatError } from '../../core/errors.ts';
import { intFlag, parseFlags, required, type Command } from '../command.ts';
import { MODEL_PRESETS, parseModelConfig, type ModelConfig } from '../../model/config.ts';
import { initModelDir } from '../../model/init.ts';
import type { SafetensorsDtype } from '../../model/safetensors.ts';

const DTYPES: Record<string, SafetensorsDtype> = { f32: 'F32', float32: 'F32', bf16: 'BF16', bfloat16: 'BF16', f16: 'F16', float16: 'F16' };

export const command: Command = {
  name: 'init-model',
  summary: `Create a randomly initialised model directory (Hugging Face layout). Presets: ${Object.keys(MODEL_PRESETS).join(', ')}.`,
  usage: 'init-model --config <config.json|preset> --tokenizer DIR --out DIR [--seed N] [--dtype f32|bf16|f16]',
  async run(argv) {
    const { values } = parseFlags(argv, {
      config: { type: 'string' },
      tokenizer: { type: 'string' },
      out: { type: 'string' },
      seed: { type: 'string' },
      dtype: { type: 'string' },
    });
    const configArg = required(values, 'config');
    const tokDir = required(values, 'tokenizer');
    const out = required(values, 'out');
    const seed = intFlag(values, 'seed', 0);
    const dtypeArg = (values.dtype as string | undefined) ?? 'f32';
    const dtype = DTYPES[dtypeArg];
    if (!dtype) throw new ConfigError({ path: '--dtype', message: `expected f32, bf16 or f16, got "${dtypeArg}"` });
    if (!existsSync(tokDir) || !statSync(tokDir).isDirectory())
      throw new FileFormatError({ file: tokDir, message: 'tokenizer directory not found' });

    let config: string | ModelConfig = configArg;
    const isFile = configArg.endsWith('.json') || (existsSync(configArg) && statSync(configArg).isFile());
    if (isFile) {
      if (!existsSync(configArg)) throw new FileFormatError({ file: configArg, message: 'file not found' });
      let json: unknown;
      try {
        json = JSON.parse(readFileSync(configArg, 'utf8'));
      } catch (err) {
        throw new FileFormatError({ file: configArg, message: `not valid JSON (${(err as Error).message.split('\n')[0]})` });
      }
      config = parseModelConfig(json, configArg);
    }
    const { config: made, parameters } = await initModelDir(out, { config, tokenizerDir: tokDir, seed, dtype, configFile: configArg });
    const m = parameters / 1e6;
    console.log(
      `${out}: ${made.family}, ${m >= 1 ? m.toFixed(1) + 'M' : parameters.toLocaleString('en-US')} parameters, ` +
        `vocab ${made.vocabSize}, ${made.numLayers} layers, seed ${seed}, ${dtype}`,
    );
  },
};
