/**
 * Forgiving JSON object parsing for tool-call arguments written by a model: takes the first JSON
 * object in the text, ignores text after it, closes a string and brackets the model left open
 * (generation cut off, or a missing final brace) and drops trailing commas. Returns the value or an
 * error message; never throws.
 */

export type LenientResult = { ok: true; value: unknown; repaired: boolean } | { ok: false; error: string };

export function parseLenientJson(text: string): LenientResult {
  const trimmed = text.trim();
  try {
    return { ok: true, value: JSON.parse(trimmed), repaired: false };
  } catch {
    // repaired below
  }
  const start = trimmed.indexOf('{');
  if (start < 0) return { ok: false, error: 'no JSON object found' };
  const closers: string[] = [];
  let inString = false;
  let escaped = false;
  let end = trimmed.length;
  for (let i = start; i < trimmed.length; i++) {
    const c = trimmed[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (c === '\\') escaped = true;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{') closers.push('}');
    else if (c === '[') closers.push(']');
    else if (c === '}' || c === ']') {
      if (closers.pop() !== c) return { ok: false, error: `unbalanced "${c}" at character ${i}` };
      if (closers.length === 0) {
        end = i + 1;
        break;
      }
    }
  }
  let candidate = trimmed.slice(start, end);
  if (closers.length > 0 || inString) {
    if (escaped) candidate = candidate.slice(0, -1);
    if (inString) candidate += '"';
    candidate = candidate.replace(/[\s,:]+$/, '');
    candidate += closers.reverse().join('');
  }
  candidate = candidate.replace(/,(\s*[}\]])/g, '$1');
  try {
    return { ok: true, value: JSON.parse(candidate), repaired: true };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}
