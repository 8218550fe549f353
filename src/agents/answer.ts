/**
 * The final answer of an agent's text: the inside of the last `\boxed{...}` (nested braces allowed)
 * or `<answer>...</answer>`, whichever comes last. The rollout engine records it on the Rollout; the
 * scorers in rl/ compare it with the gold answers.
 */

/** The text inside the last `\boxed{...}` or `<answer>...</answer>` in `text`, or null. */
export function extractAnswer(text: string): string | null {
  let best: { at: number; value: string } | null = null;
  const boxRe = /\\boxed\s*\{/g;
  for (let m = boxRe.exec(text); m !== null; m = boxRe.exec(text)) {
    let depth = 1;
    let i = m.index + m[0].length;
    for (; i < text.length && depth > 0; i++) {
      if (text[i] === '{') depth++;
      else if (text[i] === '}') depth--;
    }
    if (depth === 0 && (best === null || m.index >= best.at)) best = { at: m.index, value: text.slice(m.index + m[0].length, i - 1) };
  }
  const tagRe = /<answer>([\s\S]*?)<\/answer>/g;
  for (let m = tagRe.exec(text); m !== null; m = tagRe.exec(text)) {
    if (best === null || m.index >= best.at) best = { at: m.index, value: m[1] };
  }
  return best === null ? null : best.value.trim();
}
