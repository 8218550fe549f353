/**
 * Create a randomly initialised model directory (Hugging Face layout) for a preset or a config,
 * with the vocabulary, eos and bos taken from the tokenizer it will be used with.
 */
import { buildLayout, initParams } from './params.ts';
import { presetConfig, type ModelConfig } from './config.ts';
import { saveModelDir } from './checkpoint.ts';
import { loadTokenizer } from './tokenizer.ts';
import { FileFormatError } from '../core/errors.ts';

export interface InitModelOptions {
  /** A preset name (see MODEL_PRESETS) or a full config. */
  config: string | ModelConfig;
  tokenizerDir: string;
  seed?: number;
  dtype?: 'F32' | 'BF16' | 'F16';
  /** Label for errors about a config given as a file. */
  configFile?: string;
}

export async function initModelDir(out: string, options: InitModelOptions): Promise<{ config: ModelConfig; parameters: number }> {
  const tok = await loadTokenizer(options.tokenizerDir);
  let config = typeof options.config === 'string' ? presetConfig(options.config, { vocabSize: tok.vocabSize }) : options.config;
  if (config.vocabSize < tok.vocabSize) {
    throw new FileFormatError({
      file: options.configFile ?? 'config',
      field: 'vocab_size',
      message: `${config.vocabSize} is smaller than the tokenizer's ${tok.vocabSize} tokens`,
    });
  }
  if (config.eosTokenId === null) config = { ...config, eosTokenId: tok.stopTokenIds.length > 1 ? [...tok.stopTokenIds] : tok.eosTokenId };
  if (config.bosTokenId === null) config = { ...config, bosTokenId: tok.bosTokenId };
  const layout = buildLayout(config);
  const weights = new Float32Array(layout.total);
  initParams(weights, layout, config, options.seed ?? 0);
  saveModelDir(out, { config, layout, weights, tokenizerDir: options.tokenizerDir, dtype: options.dtype ?? 'F32' });
  return { config, parameters: layout.total };
}
