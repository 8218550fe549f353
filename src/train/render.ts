/**
 * Chat transcripts → training tokens with an assistant-only mask, through the model's chat
 * template. The conversation is cut at message boundaries found by rendering prefixes: the text an
 * assistant message adds after the generation prompt (its content and end-of-turn marker) is
 * trainable, everything else (system, user, tool messages, role headers) is not. Each segment is
 * encoded on its own, which is also how the sampler sees it (generation starts right after the
 * generation prompt). Templates that rewrite earlier turns (e.g. dropping old reasoning) are not
 * prefix-stable and are refused with a clear error.
 *
 * This is the training side's own adapter over the ChatTokenizer contract; the agents layer's
 * renderer produces the same masks for rollouts.
 */
import { InvalidArgumentError } from '../errors.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../policy/types.ts';

export interface Rendered {
  tokens: number[];
  mask: number[];
}

export function renderForTraining(tokenizer: ChatTokenizer, messages: readonly ChatMessage[], tools?: readonly ToolSpec[]): Rendered {
  const tokens: number[] = [];
  const mask: number[] = [];
  let done = ''; // text already turned into tokens
  const push = (text: string, trainable: boolean) => {
    if (!text) return;
    const ids = tokenizer.encode(text);
    tokens.push(...ids);
    for (let i = 0; i < ids.length; i++) mask.push(trainable ? 1 : 0);
    done += text;
  };
  messages.forEach((m, k) => {
    if (m.role !== 'assistant') return;
    const before = tokenizer.applyChatTemplate(messages.slice(0, k), { tools, addGenerationPrompt: true });
    const after = tokenizer.applyChatTemplate(messages.slice(0, k + 1), { tools, addGenerationPrompt: false });
    if (!before.startsWith(done) || !after.startsWith(before))
      throw new InvalidArgumentError('messages', `the chat template is not prefix-stable at message ${k} (it rewrites earlier turns); cannot mask assistant tokens`);
    push(before.slice(done.length), false);
    push(after.slice(before.length), true);
  });
  const full = tokenizer.applyChatTemplate(messages, { tools, addGenerationPrompt: false });
  if (!full.startsWith(done)) throw new InvalidArgumentError('messages', 'the chat template is not prefix-stable at the end of the conversation');
  push(full.slice(done.length), false);
  if (tokens.length > 0 && mask[0] === 1) {
    // nothing predicts the first token: prepend BOS when there is one, else leave it untrained
    if (tokenizer.bosTokenId !== null) {
      tokens.unshift(tokenizer.bosTokenId);
      mask.unshift(0);
    } else mask[0] = 0;
  }
  return { tokens, mask };
}
